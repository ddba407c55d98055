"""Which failure a scenario asks for, decided once for every wire format; each wire format
renders it in its own error body (`_openai.openai_failure`, `_anthropic.anthropic_failure`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum

from ._reply import Ctx, Reply


class Failure(Enum):
    UNKNOWN_SCENARIO = "unknown_scenario"  # a typo in x-test-scenario: answered with a 400
    AUTH = "auth_error"
    BAD_REQUEST = "bad_request"
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    INTERNAL = "internal_error"


def _planned(ctx: Ctx) -> tuple[Failure, bool] | None:
    """The failure this request gets, and whether the client should retry it quickly (a
    ``*_once`` scenario fails the first attempt only)."""
    c = ctx.controls
    if c.unknown:
        return Failure.UNKNOWN_SCENARIO, False
    if c.has("auth_error"):
        return Failure.AUTH, False
    if c.has("bad_request"):
        return Failure.BAD_REQUEST, False
    first_attempt = c.retry_count == 0
    if c.has("rate_limit") or (c.has("rate_limit_once") and first_attempt):
        return Failure.RATE_LIMIT, not c.has("rate_limit")
    stream = bool(ctx.body.get("stream"))
    if (
        c.has("server_error")
        or (c.has("server_error_once") and first_attempt)
        or (c.has("stream_error") and not stream)
    ):
        return Failure.SERVER_ERROR, not c.has("server_error") and not c.has("stream_error")
    if c.has("internal_error"):
        return Failure.INTERNAL, False
    return None


def retry_headers(ctx: Ctx, reply: Reply, *, fast: bool) -> None:
    reply.headers["retry-after"] = str(max(0, math.ceil(ctx.controls.retry_after)))
    if fast:
        reply.headers["retry-after-ms"] = "10"
    elif ctx.azure:
        reply.headers["retry-after-ms"] = str(int(ctx.controls.retry_after * 1000))


def scenario_reply(ctx: Ctx, render: Callable[[Ctx, Failure], Reply]) -> Reply | None:
    """The error reply the request's scenario asks for, rendered by its wire format, with
    the retry headers of a rate limit or a quick-retry server error; ``None`` to answer."""
    planned = _planned(ctx)
    if planned is None:
        return None
    failure, fast = planned
    reply = render(ctx, failure)
    if failure is Failure.RATE_LIMIT or (failure is Failure.SERVER_ERROR and fast):
        retry_headers(ctx, reply, fast=fast)
    return reply
