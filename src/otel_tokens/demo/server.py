"""A local HTTP server that speaks the OpenAI, Azure OpenAI and Anthropic wire formats.

The real ``openai`` and ``anthropic`` client libraries can be pointed at it with ``base_url``, so
tests and the offline demo exercise the genuine SDK code paths (JSON parsing, SSE decoding, stream
helpers, raw responses, error mapping, retries) without network access. Standard library only; it
imports nothing from ``otel_tokens``.

Usage::

    with ProviderServer() as srv:
        client = openai.OpenAI(api_key="test", base_url=srv.openai_base_url)
        claude = anthropic.Anthropic(api_key="test", base_url=srv.anthropic_base_url)
        azure = openai.AzureOpenAI(api_key="test", azure_endpoint=srv.url, api_version="2024-10-21")
        ...
        srv.requests[-1].body  # what the SDK sent

    $ python -m otel_tokens.demo.server --port 8787 [--scenario cache] [--verbose]

Endpoints
---------
OpenAI (prefix ``/v1``; ``/openai/v1`` and no prefix work too):

* ``POST /v1/chat/completions`` -- JSON or SSE (``stream: true``). With
  ``stream_options.include_usage`` every chunk carries ``"usage": null`` and a last chunk has
  ``"choices": []`` and the usage; without it the stream carries no usage at all. Honours ``n``,
  ``max_tokens``/``max_completion_tokens``, ``reasoning_effort``, ``service_tier`` and tools (see
  ``tool_call``). Chunks carry ``obfuscation`` unless ``stream_options.include_obfuscation`` is
  false.
* ``POST /v1/responses`` -- JSON or typed SSE events: ``response.created``,
  ``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
  ``response.output_text.delta``..., ``response.output_text.done``, ``response.content_part.done``,
  ``response.output_item.done``, then ``response.completed`` carrying the usage
  (``response.incomplete`` when ``max_output_tokens`` cuts the answer short).
* ``POST /v1/embeddings`` -- float or base64 vectors; ``dimensions`` honoured.
* ``POST /v1/completions`` -- legacy text completions, JSON or SSE (``include_usage`` as for chat);
  the default ``max_tokens`` is 16 as on the real API.

Azure OpenAI: ``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` (also
``completions`` and ``embeddings``; ``api-version`` is required) and ``/openai/responses``. Azure
flavour: ``prompt_filter_results``/``content_filter_results``, a first stream chunk with
``"choices": []``, ``"model": ""`` and the prompt filter results, ``apim-request-id`` and
``x-ms-region`` headers, Azure's 429/401 error bodies. The served model comes from the
deployment name when it is a known model alias, else from the ``model`` in the body.

Anthropic: ``POST /v1/messages`` (JSON or SSE; the beta surface ``/v1/messages?beta=true`` with an
``anthropic-beta`` header is served the same way) and ``POST /v1/messages/count_tokens``. A stream
is ``message_start`` (usage with ``input_tokens``, ``cache_creation_input_tokens``,
``cache_read_input_tokens``, ``cache_creation.ephemeral_5m_input_tokens``/``..._1h_...`` and
``output_tokens: 1``), ``content_block_start``, ``ping``, ``content_block_delta``...,
``content_block_stop``, ``message_delta`` (cumulative usage: ``output_tokens`` and the input counts,
plus ``server_tool_use`` when relevant) and ``message_stop``. ``thinking`` of type ``enabled`` or
``adaptive`` adds a thinking block (``thinking_delta`` + ``signature_delta``), billed as output
tokens and reported in ``usage.output_tokens_details.thinking_tokens``.

``GET /health`` answers ``{"status": "ok"}``.

Usage numbers (deterministic)
-----------------------------
* Text counts ``ceil(len(text) / 4)`` tokens (:func:`estimate_tokens`). Chat prompts add 3 tokens
  plus 4 per message, Responses 3 plus 4 per input item, Anthropic 7 plus 3 per message; tools add
  their compact JSON; an image part is 85 tokens (OpenAI) or 1600 (Anthropic). Legacy completions
  and embeddings count the bare text (token arrays count their length). ``count_tokens`` returns
  the same total that ``messages.create`` reports (input + cache read + cache write).
* The reply is :data:`DEFAULT_REPLY` split on whitespace: each word is one output token and one
  stream delta, so streamed deltas add up exactly to the reported usage. Tool-call arguments and
  search queries are streamed in pieces that count one output token each.
* OpenAI reasoning models (served model starting ``o1``/``o3``/``o4``/``gpt-5``/``codex``, except
  ``*-chat-latest``) report reasoning tokens by effort: none/minimal 0, low 32, medium (default)
  64, high 192, xhigh 384; ``completion_tokens``/``output_tokens`` include them.
* The response ``model`` is the dated snapshot of the requested alias (:func:`served_model`), e.g.
  ``gpt-4o-mini`` -> ``gpt-4o-mini-2024-07-18``, ``claude-sonnet-4-5`` ->
  ``claude-sonnet-4-5-20250929``, ``gpt-3.5-turbo-instruct`` ->
  ``gpt-3.5-turbo-instruct:20230824-v2``, ``text-embedding-ada-002`` ->
  ``text-embedding-ada-002-v2``. Unknown names are served unchanged.
* ``service_tier`` echoes the request (``fast`` -> ``priority``; ``auto`` or absent -> ``default``).

Scenarios
---------
Chosen per request by the header ``x-test-scenario`` (comma separated, combinable), else by
``metadata.test_scenario`` in the body, else by the server default (``ProviderServer(scenario=...)``
or ``--scenario``). An unknown name is answered with a 400 so that typos show.

``ok``                 Normal answer (the default).
``cache``              Prompt caching. OpenAI: ``cached_tokens`` = half the prompt. Anthropic:
                       ``cache_read_input_tokens`` = half the prompt,
                       ``cache_creation_input_tokens`` = a quarter (all 5-minute unless
                       ``x-test-cache-write-1h``), the rest is ``input_tokens``.
``rate_limit``         429 with the provider's error JSON and ``retry-after`` (and the rate-limit
                       headers showing exhaustion).
``rate_limit_once``    429 on the first attempt only (``x-stainless-retry-count: 0``), success on a
                       retry; sends ``retry-after-ms: 10`` so SDK retries are quick.
``server_error``       OpenAI/Azure 500 ``server_error``; Anthropic 529 ``overloaded_error``.
``server_error_once``  As ``server_error``, on the first attempt only.
``internal_error``     500 everywhere (Anthropic ``api_error``).
``bad_request``        400 ``invalid_request_error``.
``auth_error``         401 (OpenAI ``invalid_api_key``, Anthropic ``authentication_error``).
``drop_mid_stream``    Streams: about half of the SSE events, then the connection is closed in the
                       middle of the chunked body (the client sees an incomplete read). JSON: half
                       the body, then the close. ``x-test-drop-after: N`` sets the events sent.
``stream_error``       Streams: about half of the events, then the provider's in-stream error
                       (OpenAI ``data: {"error": ...}``, Responses ``response.failed``, Anthropic
                       ``event: error`` with ``overloaded_error``). JSON: like ``server_error``.
``slow_stream``        Sleep between SSE events (``stream_delay``, default 50 ms).
``web_search``         Anthropic: ``server_tool_use``/``web_search_tool_result`` block pairs and
                       ``usage.server_tool_use.web_search_requests`` (default 2). Each search adds
                       750 input tokens, so the cumulative ``input_tokens`` of ``message_delta``
                       (and of the JSON answer) exceed those of ``message_start``, as on the real
                       API. Responses: ``web_search_call`` output items and their events.
``no_stream_usage``    OpenAI chat and legacy completions streams ignore
                       ``stream_options.include_usage`` (no usage chunk), as some
                       OpenAI-compatible servers do.
``tool_call``          When the request declares a function tool: call the first one with arguments
                       built from its JSON schema (``finish_reason: tool_calls``, ``stop_reason:
                       tool_use`` or a ``function_call`` item), streamed as argument deltas.

Control headers (with any scenario)
-----------------------------------
``x-test-cached-tokens: N``        OpenAI ``cached_tokens``; Anthropic ``cache_read_input_tokens``.
``x-test-cache-write-tokens: N``   Anthropic ``cache_creation_input_tokens``; OpenAI
                                   ``cache_write_tokens``.
``x-test-cache-write-1h: N``       Anthropic: N of the cache writes are 1-hour, the rest 5-minute.
``x-test-cache-write-12h: N``      OpenAI Responses: ``cache_write_tokens_details.ttl_12h_tokens``.
``x-test-reasoning-tokens: N``     Reasoning (OpenAI) or thinking (Anthropic) tokens, any model.
``x-test-output-tokens: N``        Reply length in words (the default sentence is cycled).
``x-test-reply: text``             The reply text (split on whitespace).
``x-test-served-model: name``      The model reported in the response.
``x-test-web-search-requests: N``  Searches for ``web_search``.
``x-test-stream-delay-ms: N``      Delay between SSE events, with or without ``slow_stream``.
``x-test-latency-ms: N``           Delay before answering.
``x-test-drop-after: N``           Events sent before ``drop_mid_stream``/``stream_error`` strike.
``x-test-retry-after: S``          ``retry-after`` seconds of 429 answers (default 1).

Cached and cache-write counts are parts of the prompt: when they exceed the estimate, the prompt
grows to hold them (OpenAI ``prompt_tokens`` >= cached + written; Anthropic ``input_tokens`` >= 1).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import random
import re
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "DEFAULT_REPLY",
    "SCENARIOS",
    "ProviderServer",
    "RecordedRequest",
    "estimate_tokens",
    "main",
    "served_model",
]

JSONDict = dict[str, Any]

DEFAULT_REPLY: Final = "Hello! This is a deterministic reply from the otel-tokens demo server."
DEFAULT_THINKING: Final = "Let me think about what the user is asking and answer it clearly."

SCENARIOS: Final = frozenset(
    {
        "ok",
        "cache",
        "rate_limit",
        "rate_limit_once",
        "server_error",
        "server_error_once",
        "internal_error",
        "bad_request",
        "auth_error",
        "drop_mid_stream",
        "stream_error",
        "slow_stream",
        "web_search",
        "tool_call",
        "no_stream_usage",
    }
)

OPENAI_IMAGE_TOKENS: Final = 85
ANTHROPIC_IMAGE_TOKENS: Final = 1600
SEARCH_RESULT_TOKENS: Final = 750
DEFAULT_SLOW_DELAY: Final = 0.05

_REASONING_BY_EFFORT: Final[Mapping[str, int]] = {
    "none": 0,
    "minimal": 0,
    "low": 32,
    "medium": 64,
    "high": 192,
    "xhigh": 384,
}

# Aliases and the dated snapshot the real APIs report for them.
_OPENAI_SNAPSHOTS: Final[Mapping[str, str]] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "chatgpt-4o-latest": "chatgpt-4o-latest",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-4-turbo": "gpt-4-turbo-2024-04-09",
    "gpt-4": "gpt-4-0613",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-instruct": "gpt-3.5-turbo-instruct:20230824-v2",
    "o1": "o1-2024-12-17",
    "o1-mini": "o1-mini-2024-09-12",
    "o1-preview": "o1-preview-2024-09-12",
    "o3": "o3-2025-04-16",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
    "gpt-5.1": "gpt-5.1-2025-11-13",
    "gpt-5.2": "gpt-5.2-2025-12-11",
    "gpt-5.2-pro": "gpt-5.2-pro-2025-12-11",
    "gpt-5.4-mini": "gpt-5.4-mini-2026-03-17",
    "gpt-5.4-nano": "gpt-5.4-nano-2026-03-17",
    "gpt-5.5": "gpt-5.5-2026-04-23",
    "text-embedding-ada-002": "text-embedding-ada-002-v2",
}

_ANTHROPIC_SNAPSHOTS: Final[Mapping[str, str]] = {
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-opus-4-5": "claude-opus-4-5-20251101",
    "claude-opus-4-1": "claude-opus-4-1-20250805",
    "claude-opus-4-0": "claude-opus-4-20250514",
    "claude-opus-4": "claude-opus-4-20250514",
    "claude-sonnet-4-0": "claude-sonnet-4-20250514",
    "claude-sonnet-4": "claude-sonnet-4-20250514",
    "claude-3-7-sonnet-latest": "claude-3-7-sonnet-20250219",
    "claude-3-5-sonnet-latest": "claude-3-5-sonnet-20241022",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
    "claude-3-opus-latest": "claude-3-opus-20240229",
    "claude-3-haiku": "claude-3-haiku-20240307",
}

_OPENAI_429_MESSAGE: Final = (
    "Rate limit reached for {model} in organization org-OtelTokensDemo on tokens per min (TPM): "
    "Limit 200000, Used 199950, Requested 1000. Please try again in 1s. Visit "
    "https://platform.openai.com/account/rate-limits to learn more."
)
_AZURE_429_MESSAGE: Final = (
    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {api_version} "
    "have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 1 "
    "second. Please go here: https://aka.ms/oai/quotaincrease if you would like to further "
    "increase the default rate limit."
)
_AZURE_401_MESSAGE: Final = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
    "valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
_ANTHROPIC_429_MESSAGE: Final = (
    "This request would exceed the rate limit for your organization "
    "(0b3d4b0e-7c1a-4f63-9d0e-0e1c2d3f4a5b) of 400,000 input tokens per minute. For details, "
    "refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for "
    "current usage. Please reduce the prompt length or the maximum tokens requested, or try again "
    "later."
)
_AZURE_FILTER_CATEGORIES: Final = ("hate", "self_harm", "sexual", "violence")
_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def estimate_tokens(text: str) -> int:
    """Deterministic token estimate of ``text``: one token per 4 characters, rounded up."""
    return (len(text) + 3) // 4


def served_model(requested: str, provider: str = "openai") -> str:
    """The model name the real API reports for ``requested`` (a dated snapshot of an alias).

    ``provider`` is ``"openai"``, ``"azure"`` or ``"anthropic"``. Names already dated, and unknown
    names, are returned unchanged.
    """
    name = requested.strip()
    if provider == "anthropic":
        return _ANTHROPIC_SNAPSHOTS.get(name, name)
    return _OPENAI_SNAPSHOTS.get(name, name)


def _is_openai_reasoning_model(model: str) -> bool:
    m = model.lower()
    if "chat-latest" in m or m.startswith("gpt-5-chat"):
        return False
    return re.match(r"^(o\d|gpt-5|codex)", m) is not None


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, for assertions in tests."""

    method: str
    path: str
    """The URL path, without the query string."""
    query: dict[str, str]
    headers: dict[str, str]
    """Request headers with lower-case names."""
    body: Any
    """The parsed JSON body, or ``None`` when there was none (or it was not JSON)."""
    provider: str
    """``"openai"``, ``"azure"``, ``"anthropic"`` or ``"unknown"``."""
    endpoint: str
    """E.g. ``"chat.completions"``, ``"responses"``, ``"embeddings"``, ``"completions"``,
    ``"messages"``, ``"messages.count_tokens"``, ``"health"`` or ``"unknown"``."""
    deployment: str | None = None
    """The Azure deployment from the path, if any."""
    raw_body: bytes = b""

    @property
    def scenario(self) -> str | None:
        """The ``x-test-scenario`` header, if sent."""
        return self.headers.get("x-test-scenario")


# -------------------------------------------------------------------------------------------------
# Identifiers


class _Ids:
    """Deterministic identifiers in the providers' formats (a counter hashed with a seed)."""

    def __init__(self, seed: str) -> None:
        self._seed = seed
        self._counter = 0
        self._lock = threading.Lock()

    def _digest(self, kind: str) -> bytes:
        with self._lock:
            self._counter += 1
            n = self._counter
        return hashlib.sha256(f"{self._seed}:{kind}:{n}".encode()).digest()

    def hex(self, kind: str, length: int) -> str:
        out = ""
        while len(out) < length:
            out += self._digest(kind).hex()
        return out[:length]

    def b62(self, kind: str, length: int) -> str:
        digest = self._digest(kind) + self._digest(kind)
        value = int.from_bytes(digest, "big")
        chars = []
        for _ in range(length):
            value, rem = divmod(value, 62)
            chars.append(_BASE62[rem])
        return "".join(chars)

    def uuid(self, kind: str) -> str:
        return str(uuid.UUID(bytes=self._digest(kind)[:16], version=4))

    # Provider formats
    def chatcmpl(self) -> str:
        return "chatcmpl-" + self.b62("chatcmpl", 29)

    def cmpl(self) -> str:
        return "cmpl-" + self.b62("cmpl", 29)

    def openai_item(self, prefix: str) -> str:
        return f"{prefix}_" + self.hex(prefix, 50)

    def call(self) -> str:
        return "call_" + self.b62("call", 24)

    def openai_request(self) -> str:
        return "req_" + self.hex("req", 32)

    def anthropic(self, prefix: str) -> str:
        return f"{prefix}_01" + self.b62(prefix, 22)

    def anthropic_request(self) -> str:
        return "req_011C" + self.b62("areq", 20)

    def fingerprint(self, model: str) -> str:
        return "fp_" + hashlib.sha256(model.encode()).hexdigest()[:10]


# -------------------------------------------------------------------------------------------------
# Per-request controls


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None or not value.strip():
        return None
    try:
        return max(0, int(value.strip()))
    except ValueError:
        return None


def _float_header(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


@dataclass(frozen=True)
class _Controls:
    scenarios: frozenset[str]
    unknown: tuple[str, ...]
    cached_tokens: int | None
    cache_write_tokens: int | None
    cache_write_long: int | None
    cache_write_12h: int | None
    reasoning_tokens: int | None
    output_tokens: int | None
    reply: str | None
    served_model: str | None
    web_search_requests: int
    stream_delay: float
    latency: float
    drop_after: int | None
    retry_after: float
    retry_count: int

    @classmethod
    def parse(
        cls, headers: Mapping[str, str], body: Any, default_scenarios: frozenset[str], delay: float
    ) -> _Controls:
        raw: str | None = headers.get("x-test-scenario")
        if raw is None and isinstance(body, dict):
            metadata = body.get("metadata")
            if isinstance(metadata, dict) and isinstance(metadata.get("test_scenario"), str):
                raw = metadata["test_scenario"]
        names: set[str]
        if raw is None:
            names = set(default_scenarios)
        else:
            names = {part.strip().lower() for part in raw.split(",") if part.strip()}
        unknown = tuple(sorted(n for n in names if n not in SCENARIOS))
        names -= set(unknown)
        names.discard("ok")
        stream_delay_ms = _float_header(headers, "x-test-stream-delay-ms")
        if stream_delay_ms is not None:
            stream_delay = stream_delay_ms / 1000.0
        elif "slow_stream" in names:
            stream_delay = delay
        else:
            stream_delay = 0.0
        latency_ms = _float_header(headers, "x-test-latency-ms")
        retry_after = _float_header(headers, "x-test-retry-after")
        searches = _int_header(headers, "x-test-web-search-requests")
        return cls(
            scenarios=frozenset(names),
            unknown=unknown,
            cached_tokens=_int_header(headers, "x-test-cached-tokens"),
            cache_write_tokens=_int_header(headers, "x-test-cache-write-tokens"),
            cache_write_long=_int_header(headers, "x-test-cache-write-1h"),
            cache_write_12h=_int_header(headers, "x-test-cache-write-12h"),
            reasoning_tokens=_int_header(headers, "x-test-reasoning-tokens"),
            output_tokens=_int_header(headers, "x-test-output-tokens"),
            reply=headers.get("x-test-reply"),
            served_model=(headers.get("x-test-served-model") or None),
            web_search_requests=2 if searches is None else searches,
            stream_delay=stream_delay,
            latency=(latency_ms or 0.0) / 1000.0,
            drop_after=_int_header(headers, "x-test-drop-after"),
            retry_after=1.0 if retry_after is None else retry_after,
            retry_count=_int_header(headers, "x-stainless-retry-count") or 0,
        )

    def has(self, name: str) -> bool:
        return name in self.scenarios

    def reply_pieces(self) -> list[str]:
        words = (DEFAULT_REPLY if self.reply is None else self.reply).split()
        if self.output_tokens is not None:
            base = words or DEFAULT_REPLY.split()
            words = [base[i % len(base)] for i in range(self.output_tokens)]
        return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _thinking_pieces(count: int) -> list[str]:
    base = DEFAULT_THINKING.split()
    return [base[i % len(base)] if i == 0 else " " + base[i % len(base)] for i in range(count)]


def _split_pieces(text: str, size: int = 6) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# -------------------------------------------------------------------------------------------------
# Prompt token estimates


def _part_tokens(part: Any, image_tokens: int) -> int:
    if isinstance(part, str):
        return estimate_tokens(part)
    if not isinstance(part, dict):
        return estimate_tokens(json.dumps(part, sort_keys=True))
    ptype = str(part.get("type", ""))
    if "image" in ptype:
        return image_tokens
    for key in ("text", "thinking", "refusal"):
        value = part.get(key)
        if isinstance(value, str):
            return estimate_tokens(value)
    if ptype in {"tool_use", "server_tool_use"}:
        return estimate_tokens(str(part.get("name", ""))) + estimate_tokens(
            json.dumps(part.get("input", {}), sort_keys=True, separators=(",", ":"))
        )
    if "content" in part:
        return _content_tokens(part["content"], image_tokens)
    return estimate_tokens(json.dumps(part, sort_keys=True, separators=(",", ":")))


def _content_tokens(content: Any, image_tokens: int) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return estimate_tokens(content)
    if isinstance(content, list):
        return sum(_part_tokens(p, image_tokens) for p in content)
    return _part_tokens(content, image_tokens)


def _tools_tokens(tools: Any) -> int:
    if not tools:
        return 0
    return estimate_tokens(json.dumps(tools, sort_keys=True, separators=(",", ":")))


def _chat_prompt_tokens(body: JSONDict) -> int:
    total = 3
    for message in body.get("messages") or []:
        total += 4
        if not isinstance(message, dict):
            total += estimate_tokens(str(message))
            continue
        total += _content_tokens(message.get("content"), OPENAI_IMAGE_TOKENS)
        if isinstance(message.get("name"), str):
            total += estimate_tokens(message["name"])
        for call in message.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, dict) else {}
            total += estimate_tokens(
                str(function.get("name", "")) + str(function.get("arguments", ""))
            )
    return total + _tools_tokens(body.get("tools"))


def _responses_prompt_tokens(body: JSONDict) -> int:
    total = 3
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        total += estimate_tokens(instructions)
    items = body.get("input")
    if isinstance(items, str):
        total += 4 + estimate_tokens(items)
    elif isinstance(items, list):
        for item in items:
            total += 4
            if isinstance(item, dict) and "content" in item:
                total += _content_tokens(item["content"], OPENAI_IMAGE_TOKENS)
            elif isinstance(item, dict) and "output" in item:
                output = item["output"]
                total += _content_tokens(output, OPENAI_IMAGE_TOKENS)
            elif isinstance(item, dict) and "arguments" in item:
                total += estimate_tokens(str(item.get("name", "")) + str(item["arguments"]))
            else:
                total += _part_tokens(item, OPENAI_IMAGE_TOKENS)
    return total + _tools_tokens(body.get("tools"))


def _anthropic_prompt_tokens(body: JSONDict) -> int:
    total = 7
    total += _content_tokens(body.get("system"), ANTHROPIC_IMAGE_TOKENS)
    for message in body.get("messages") or []:
        total += 3
        if isinstance(message, dict):
            total += _content_tokens(message.get("content"), ANTHROPIC_IMAGE_TOKENS)
        else:
            total += estimate_tokens(str(message))
    return total + _tools_tokens(body.get("tools"))


def _text_inputs(value: Any) -> list[Any]:
    """Normalise a ``prompt``/``input`` of completions or embeddings into a list of inputs."""
    if value is None:
        return [""]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [value]
        return list(value) or [""]
    return [str(value)]


def _input_tokens(item: Any) -> int:
    if isinstance(item, list):
        return len(item)
    return estimate_tokens(str(item))


# -------------------------------------------------------------------------------------------------
# Replies


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]
    body: Any = None
    events: list[tuple[str | None, str]] | None = None
    indent: int | None = None


@dataclass
class _Ctx:
    server: ProviderServer
    ids: _Ids
    body: JSONDict
    controls: _Controls
    provider: str
    endpoint: str
    deployment: str | None
    query: dict[str, str]
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def azure(self) -> bool:
        return self.provider == "azure"

    def model(self, default: str) -> str:
        if self.controls.served_model:
            return self.controls.served_model
        requested = self.body.get("model")
        provider = "anthropic" if self.provider == "anthropic" else "openai"
        if self.azure and self.deployment:
            mapped = served_model(self.deployment, provider)
            if mapped != self.deployment or not isinstance(requested, str):
                return mapped
        if isinstance(requested, str) and requested:
            return served_model(requested, provider)
        return default


def _dumps(obj: Any, indent: int | None = None) -> str:
    if indent is None:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(obj, indent=indent, ensure_ascii=False)


# ---- OpenAI helpers -----------------------------------------------------------------------------


def _openai_headers(
    ctx: _Ctx, *, prompt_tokens: int, output_tokens: int, stream: bool
) -> dict[str, str]:
    processing_ms = 80 + 7 * output_tokens + prompt_tokens // 50
    headers = {
        "content-type": "text/event-stream; charset=utf-8" if stream else "application/json",
        "x-request-id": ctx.ids.openai_request(),
        "openai-processing-ms": str(processing_ms),
        "x-envoy-upstream-service-time": str(processing_ms + 4),
    }
    if ctx.azure:
        headers.update(
            {
                "x-request-id": ctx.ids.uuid("azure-request"),
                "apim-request-id": ctx.ids.uuid("apim"),
                "x-ms-region": "East US",
                "x-ms-rai-invoked": "true",
                "azureml-model-session": "d085-20250101000000",
                "x-ms-deployment-name": ctx.deployment or "",
                "x-ratelimit-limit-requests": "1000",
                "x-ratelimit-limit-tokens": "1000000",
                "x-ratelimit-remaining-requests": "999",
                "x-ratelimit-remaining-tokens": str(
                    max(0, 1_000_000 - prompt_tokens - output_tokens)
                ),
            }
        )
        return headers
    headers.update(
        {
            "openai-organization": "user-oteltokensdemo",
            "openai-project": "proj_OtelTokensDemo000000000",
            "openai-version": "2020-10-01",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-limit-tokens": "10000000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-remaining-tokens": str(max(0, 10_000_000 - prompt_tokens - output_tokens)),
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-reset-tokens": "0s",
            "x-content-type-options": "nosniff",
        }
    )
    return headers


def _openai_service_tier(body: JSONDict) -> str:
    tier = body.get("service_tier")
    if tier in ("flex", "scale", "priority"):
        return str(tier)
    if tier == "fast":
        return "priority"
    return "default"


@dataclass(frozen=True)
class _PromptUsage:
    total: int
    cached: int
    written: int
    written_long: int


def _openai_prompt_usage(estimate: int, controls: _Controls) -> _PromptUsage:
    if controls.cached_tokens is not None:
        cached = controls.cached_tokens
    elif controls.has("cache"):
        cached = estimate // 2
    else:
        cached = 0
    written = controls.cache_write_tokens or 0
    written_long = controls.cache_write_12h or 0
    written = max(written, written_long)
    total = max(estimate, cached + written)
    return _PromptUsage(total=total, cached=cached, written=written, written_long=written_long)


def _openai_reasoning(ctx: _Ctx, model: str, effort: Any) -> int:
    if ctx.controls.reasoning_tokens is not None:
        return ctx.controls.reasoning_tokens
    if not _is_openai_reasoning_model(model):
        return 0
    if isinstance(effort, str) and effort in _REASONING_BY_EFFORT:
        return _REASONING_BY_EFFORT[effort]
    return _REASONING_BY_EFFORT["medium"]


def _sub(body: JSONDict, key: str) -> JSONDict:
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def _limit(body: JSONDict, *keys: str) -> int | None:
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


@dataclass
class _Output:
    """The generated output of one choice: reasoning tokens, visible pieces, and the finish."""

    reasoning: int
    pieces: list[str]
    truncated: bool

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _plan_output(reasoning: int, pieces: list[str], limit: int | None) -> _Output:
    if limit is None:
        return _Output(reasoning, pieces, False)
    limit = max(0, limit)
    if reasoning >= limit and (pieces or reasoning > limit):
        return _Output(limit, [], True)
    room = limit - reasoning
    if len(pieces) > room:
        return _Output(reasoning, pieces[:room], True)
    return _Output(reasoning, pieces, False)


def _schema_example(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "example"
    stype = schema.get("type")
    if isinstance(stype, list):
        stype = next((t for t in stype if t != "null"), "string")
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        return schema["enum"][0]
    if stype == "object" or "properties" in schema:
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        required = schema.get("required")
        keys = [k for k in props if not isinstance(required, list) or k in required] or list(props)
        return {k: _schema_example(props[k]) for k in keys[:6]}
    if stype == "array":
        return [_schema_example(schema.get("items"))]
    if stype == "integer":
        return 1
    if stype == "number":
        return 1.5
    if stype == "boolean":
        return True
    if stype == "null":
        return None
    return "example"


@dataclass(frozen=True)
class _ToolCall:
    name: str
    arguments: str

    @property
    def pieces(self) -> list[str]:
        return _split_pieces(self.arguments)


def _openai_function_tool(tools: Any, responses_api: bool) -> _ToolCall | None:
    if not isinstance(tools, list):
        return None
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            continue
        spec = tool if responses_api else tool.get("function")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            continue
        args = _schema_example(spec.get("parameters") or {"type": "object", "properties": {}})
        return _ToolCall(spec["name"], json.dumps(args, separators=(",", ":")))
    return None


def _azure_filter_results() -> JSONDict:
    return {cat: {"filtered": False, "severity": "safe"} for cat in _AZURE_FILTER_CATEGORIES}


def _obfuscation(ids: _Ids, used: int) -> str:
    return ids.b62("obf", max(2, 16 - used % 14))


def _chat_usage(prompt: _PromptUsage, completion: int, reasoning: int) -> JSONDict:
    prompt_details: JSONDict = {"cached_tokens": prompt.cached, "audio_tokens": 0}
    if prompt.written:
        prompt_details["cache_write_tokens"] = prompt.written
    return {
        "prompt_tokens": prompt.total,
        "completion_tokens": completion,
        "total_tokens": prompt.total + completion,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# ---- OpenAI chat completions --------------------------------------------------------------------


def _openai_chat(ctx: _Ctx) -> _Reply:
    body = ctx.body
    model = ctx.model("gpt-4o-mini-2024-07-18")
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    n = max(1, min(int(n or 1), 8))
    prompt = _openai_prompt_usage(_chat_prompt_tokens(body), ctx.controls)
    reasoning = _openai_reasoning(ctx, model, body.get("reasoning_effort"))
    tool = (
        _openai_function_tool(body.get("tools"), False) if ctx.controls.has("tool_call") else None
    )
    if body.get("tool_choice") == "none":
        tool = None
    pieces = tool.pieces if tool else ctx.controls.reply_pieces()
    out = _plan_output(reasoning, pieces, _limit(body, "max_completion_tokens", "max_tokens"))
    completion = n * (out.reasoning + len(out.pieces))
    usage = _chat_usage(prompt, completion, n * out.reasoning)
    finish = "length" if out.truncated else ("tool_calls" if tool else "stop")
    completion_id = ctx.ids.chatcmpl()
    fingerprint = ctx.ids.fingerprint(model)
    tier = _openai_service_tier(body)
    stream = bool(body.get("stream"))
    headers = _openai_headers(
        ctx, prompt_tokens=prompt.total, output_tokens=completion, stream=stream
    )
    call_ids = [ctx.ids.call() for _ in range(n)]

    if not stream:
        choices = []
        for i in range(n):
            message: JSONDict = {"role": "assistant", "content": None if tool else out.text}
            message["refusal"] = None
            message["annotations"] = []
            if tool:
                message["tool_calls"] = [
                    {
                        "id": call_ids[i],
                        "type": "function",
                        "function": {"name": tool.name, "arguments": "".join(out.pieces)},
                    }
                ]
            choice: JSONDict = {
                "index": i,
                "message": message,
                "logprobs": None,
                "finish_reason": finish,
            }
            if ctx.azure:
                choice["content_filter_results"] = _azure_filter_results()
            choices.append(choice)
        result: JSONDict = {
            "id": completion_id,
            "object": "chat.completion",
            "created": ctx.created,
            "model": model,
            "choices": choices,
            "usage": usage,
            "service_tier": tier,
            "system_fingerprint": fingerprint,
        }
        if ctx.azure:
            result["prompt_filter_results"] = [
                {"prompt_index": 0, "content_filter_results": _azure_filter_results()}
            ]
        return _Reply(200, headers, body=result, indent=2)

    stream_options = _sub(body, "stream_options")
    include_usage = bool(stream_options.get("include_usage")) and not ctx.controls.has(
        "no_stream_usage"
    )
    obfuscate = stream_options.get("include_obfuscation", True) is not False and not ctx.azure
    events: list[tuple[str | None, str]] = []

    def chunk(choices: list[JSONDict], *, final_usage: JSONDict | None = None) -> None:
        data: JSONDict = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": model,
            "service_tier": tier,
            "system_fingerprint": fingerprint,
            "choices": choices,
        }
        if include_usage:
            data["usage"] = final_usage
        if obfuscate:
            data["obfuscation"] = _obfuscation(ctx.ids, len(events))
        events.append((None, _dumps(data)))

    if ctx.azure:
        events.append(
            (
                None,
                _dumps(
                    {
                        "choices": [],
                        "created": 0,
                        "id": "",
                        "model": "",
                        "object": "",
                        "prompt_filter_results": [
                            {"prompt_index": 0, "content_filter_results": _azure_filter_results()}
                        ],
                    }
                ),
            )
        )

    for i in range(n):
        first: JSONDict = {"role": "assistant", "content": None if tool else "", "refusal": None}
        if tool:
            first["tool_calls"] = [
                {
                    "index": 0,
                    "id": call_ids[i],
                    "type": "function",
                    "function": {"name": tool.name, "arguments": ""},
                }
            ]
        extra: JSONDict = {"content_filter_results": {}} if ctx.azure else {}
        chunk([{"index": i, "delta": first, "logprobs": None, "finish_reason": None, **extra}])
        for piece in out.pieces:
            delta: JSONDict = (
                {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                if tool
                else {"content": piece}
            )
            if ctx.azure:
                extra = {"content_filter_results": _azure_filter_results()}
            chunk([{"index": i, "delta": delta, "logprobs": None, "finish_reason": None, **extra}])
        extra = {"content_filter_results": {}} if ctx.azure else {}
        chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": finish, **extra}])
    if include_usage:
        chunk([], final_usage=usage)
    return _finish_openai_stream(ctx, headers, events)


def _openai_stream_error_body() -> JSONDict:
    return {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def _finish_openai_stream(
    ctx: _Ctx, headers: dict[str, str], events: list[tuple[str | None, str]]
) -> _Reply:
    if ctx.controls.has("stream_error"):
        cut = _cut_point(ctx.controls, len(events))
        events = [*events[:cut], (None, _dumps(_openai_stream_error_body()))]
        return _Reply(200, headers, events=events)
    events.append((None, "[DONE]"))
    return _Reply(200, headers, events=events)


def _cut_point(controls: _Controls, count: int) -> int:
    if controls.drop_after is not None:
        return min(controls.drop_after, count)
    return max(1, count // 2)


# ---- OpenAI legacy completions ------------------------------------------------------------------


def _openai_completions(ctx: _Ctx) -> _Reply:
    body = ctx.body
    model = ctx.model("gpt-3.5-turbo-instruct:20230824-v2")
    prompts = _text_inputs(body.get("prompt"))
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    n = max(1, min(int(n or 1), 8))
    estimate = sum(_input_tokens(p) for p in prompts)
    prompt = _openai_prompt_usage(estimate, ctx.controls)
    limit = _limit(body, "max_tokens")
    out = _plan_output(0, ctx.controls.reply_pieces(), 16 if limit is None else limit)
    finish = "length" if out.truncated else "stop"
    echo = bool(body.get("echo"))
    n_choices = n * len(prompts)
    completion = n_choices * len(out.pieces)
    usage: JSONDict = {
        "prompt_tokens": prompt.total,
        "completion_tokens": completion,
        "total_tokens": prompt.total + completion,
    }
    if prompt.cached:
        usage["prompt_tokens_details"] = {"cached_tokens": prompt.cached, "audio_tokens": 0}
    completion_id = ctx.ids.cmpl()
    stream = bool(body.get("stream"))
    headers = _openai_headers(
        ctx, prompt_tokens=prompt.total, output_tokens=completion, stream=stream
    )

    def prefix(index: int) -> str:
        p = prompts[index // n]
        return p if echo and isinstance(p, str) else ""

    if not stream:
        choices = []
        for idx in range(n_choices):
            choice: JSONDict = {
                "text": prefix(idx) + out.text,
                "index": idx,
                "logprobs": None,
                "finish_reason": finish,
            }
            if ctx.azure:
                choice["content_filter_results"] = _azure_filter_results()
            choices.append(choice)
        result: JSONDict = {
            "id": completion_id,
            "object": "text_completion",
            "created": ctx.created,
            "model": model,
            "choices": choices,
            "usage": usage,
        }
        if ctx.azure:
            result["prompt_filter_results"] = [
                {"prompt_index": i, "content_filter_results": _azure_filter_results()}
                for i in range(len(prompts))
            ]
        return _Reply(200, headers, body=result, indent=2)

    stream_options = _sub(body, "stream_options")
    include_usage = bool(stream_options.get("include_usage")) and not ctx.controls.has(
        "no_stream_usage"
    )
    events: list[tuple[str | None, str]] = []

    def chunk(choices: list[JSONDict], final_usage: JSONDict | None = None) -> None:
        data: JSONDict = {
            "id": completion_id,
            "object": "text_completion",
            "created": ctx.created,
            "choices": choices,
            "model": model,
        }
        if include_usage:
            data["usage"] = final_usage
        events.append((None, _dumps(data)))

    for idx in range(n_choices):
        texts = ([prefix(idx)] if prefix(idx) else []) + out.pieces
        for text in texts:
            chunk([{"text": text, "index": idx, "logprobs": None, "finish_reason": None}])
        chunk([{"text": "", "index": idx, "logprobs": None, "finish_reason": finish}])
    if include_usage:
        chunk([], usage)
    return _finish_openai_stream(ctx, headers, events)


# ---- OpenAI embeddings --------------------------------------------------------------------------


def _embedding_vector(item: Any, dims: int) -> list[float]:
    seed = hashlib.sha256(json.dumps(item, sort_keys=True).encode()).digest()
    rng = random.Random(int.from_bytes(seed[:8], "big"))
    values = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 8) for v in values]


def _openai_embeddings(ctx: _Ctx) -> _Reply:
    body = ctx.body
    requested = (
        body.get("model") if isinstance(body.get("model"), str) else "text-embedding-3-small"
    )
    model = ctx.model(str(requested))
    inputs = _text_inputs(body.get("input"))
    dims = body.get("dimensions")
    if not isinstance(dims, int) or dims <= 0:
        dims = 3072 if "3-large" in model else 1536
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for i, item in enumerate(inputs):
        vector = _embedding_vector(item, dims)
        embedding: Any = (
            base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if as_base64 else vector
        )
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    prompt_tokens = sum(_input_tokens(i) for i in inputs)
    headers = _openai_headers(ctx, prompt_tokens=prompt_tokens, output_tokens=0, stream=False)
    result = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return _Reply(200, headers, body=result, indent=2)


# ---- OpenAI Responses ---------------------------------------------------------------------------


def _responses_usage(prompt: _PromptUsage, output: int, reasoning: int) -> JSONDict:
    details: JSONDict = {"cached_tokens": prompt.cached, "cache_write_tokens": prompt.written}
    if prompt.written:
        details["cache_write_tokens_details"] = {
            "ttl_30m_tokens": prompt.written - prompt.written_long,
            "ttl_12h_tokens": prompt.written_long,
        }
    return {
        "input_tokens": prompt.total,
        "input_tokens_details": details,
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt.total + output,
    }


def _openai_responses(ctx: _Ctx) -> _Reply:
    body = ctx.body
    model = ctx.model("gpt-4o-mini-2024-07-18")
    prompt = _openai_prompt_usage(_responses_prompt_tokens(body), ctx.controls)
    reasoning_cfg = _sub(body, "reasoning")
    reasoning = _openai_reasoning(ctx, model, reasoning_cfg.get("effort"))
    tool = _openai_function_tool(body.get("tools"), True) if ctx.controls.has("tool_call") else None
    if body.get("tool_choice") == "none":
        tool = None
    pieces = tool.pieces if tool else ctx.controls.reply_pieces()
    out = _plan_output(reasoning, pieces, _limit(body, "max_output_tokens"))
    searches = ctx.controls.web_search_requests if ctx.controls.has("web_search") else 0
    output_tokens = out.reasoning + len(out.pieces)
    usage = _responses_usage(prompt, output_tokens, out.reasoning)
    response_id = ctx.ids.openai_item("resp")
    stream = bool(body.get("stream"))
    headers = _openai_headers(
        ctx, prompt_tokens=prompt.total, output_tokens=output_tokens, stream=stream
    )
    status = "incomplete" if out.truncated else "completed"

    reasoning_item: JSONDict | None = None
    if out.reasoning or _is_openai_reasoning_model(model):
        reasoning_item = {"id": ctx.ids.openai_item("rs"), "type": "reasoning", "summary": []}
    search_items: list[JSONDict] = []
    for k in range(searches):
        search_items.append(
            {
                "id": ctx.ids.openai_item("ws"),
                "type": "web_search_call",
                "status": "completed",
                "action": {"type": "search", "query": f"otel-tokens demo search {k + 1}"},
            }
        )
    final_item: JSONDict
    if tool:
        final_item = {
            "id": ctx.ids.openai_item("fc"),
            "type": "function_call",
            "status": status,
            "arguments": "".join(out.pieces),
            "call_id": ctx.ids.call(),
            "name": tool.name,
        }
    else:
        final_item = {
            "id": ctx.ids.openai_item("msg"),
            "type": "message",
            "status": status,
            "content": [
                {"type": "output_text", "annotations": [], "logprobs": [], "text": out.text}
            ],
            "role": "assistant",
        }
    output: list[JSONDict] = [
        *([reasoning_item] if reasoning_item else []),
        *search_items,
        final_item,
    ]

    def response_obj(state: str, items: list[JSONDict], with_usage: bool) -> JSONDict:
        text_cfg = _sub(body, "text")
        obj: JSONDict = {
            "id": response_id,
            "object": "response",
            "created_at": ctx.created,
            "status": state,
            "background": bool(body.get("background", False)),
            "completed_at": ctx.created + 1 if state == "completed" else None,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if state == "incomplete"
            else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": model,
            "output": items,
            "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": {
                "effort": reasoning_cfg.get("effort", "medium" if reasoning_item else None),
                "summary": reasoning_cfg.get("summary"),
            },
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": _openai_service_tier(body) if state != "in_progress" else "auto",
            "store": bool(body.get("store", True)),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium", **text_cfg},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": usage if with_usage else None,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }
        return obj

    if not stream:
        return _Reply(200, headers, body=response_obj(status, output, True), indent=2)

    stream_options = _sub(body, "stream_options")
    obfuscate = stream_options.get("include_obfuscation", True) is not False and not ctx.azure
    events: list[tuple[str | None, str]] = []

    def emit(etype: str, payload: JSONDict) -> None:
        data = {"type": etype, "sequence_number": len(events), **payload}
        events.append((etype, _dumps(data)))

    emit("response.created", {"response": response_obj("in_progress", [], False)})
    emit("response.in_progress", {"response": response_obj("in_progress", [], False)})
    index = 0
    if reasoning_item:
        emit("response.output_item.added", {"output_index": index, "item": reasoning_item})
        emit("response.output_item.done", {"output_index": index, "item": reasoning_item})
        index += 1
    for item in search_items:
        added = {**item, "status": "in_progress", "action": {"type": "search"}}
        emit("response.output_item.added", {"output_index": index, "item": added})
        for phase in ("in_progress", "searching", "completed"):
            emit(
                f"response.web_search_call.{phase}", {"output_index": index, "item_id": item["id"]}
            )
        emit("response.output_item.done", {"output_index": index, "item": item})
        index += 1
    item_id = final_item["id"]
    if tool:
        emit(
            "response.output_item.added",
            {
                "output_index": index,
                "item": {**final_item, "status": "in_progress", "arguments": ""},
            },
        )
        for piece in out.pieces:
            emit(
                "response.function_call_arguments.delta",
                {"item_id": item_id, "output_index": index, "delta": piece},
            )
        emit(
            "response.function_call_arguments.done",
            {"item_id": item_id, "output_index": index, "arguments": final_item["arguments"]},
        )
    else:
        emit(
            "response.output_item.added",
            {"output_index": index, "item": {**final_item, "status": "in_progress", "content": []}},
        )
        empty_part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        emit(
            "response.content_part.added",
            {"item_id": item_id, "output_index": index, "content_index": 0, "part": empty_part},
        )
        for piece in out.pieces:
            payload: JSONDict = {
                "item_id": item_id,
                "output_index": index,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            }
            if obfuscate:
                payload["obfuscation"] = _obfuscation(ctx.ids, len(events))
            emit("response.output_text.delta", payload)
        emit(
            "response.output_text.done",
            {
                "item_id": item_id,
                "output_index": index,
                "content_index": 0,
                "text": out.text,
                "logprobs": [],
            },
        )
        emit(
            "response.content_part.done",
            {
                "item_id": item_id,
                "output_index": index,
                "content_index": 0,
                "part": final_item["content"][0],
            },
        )
    emit("response.output_item.done", {"output_index": index, "item": final_item})
    if ctx.controls.has("stream_error"):
        cut = _cut_point(ctx.controls, len(events))
        failed = response_obj("failed", [], False)
        failed["error"] = {
            "code": "server_error",
            "message": "An error occurred while processing your request.",
        }
        events = events[:cut]
        data = {"type": "response.failed", "sequence_number": len(events), "response": failed}
        events.append(("response.failed", _dumps(data)))
        return _Reply(200, headers, events=events)
    final_type = "response.incomplete" if out.truncated else "response.completed"
    emit(final_type, {"response": response_obj(status, output, True)})
    return _Reply(200, headers, events=events)


# ---- Anthropic ----------------------------------------------------------------------------------


def _anthropic_headers(
    ctx: _Ctx, *, input_tokens: int, output_tokens: int, stream: bool
) -> dict[str, str]:
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ctx.created + 1))
    headers = {
        "content-type": "text/event-stream; charset=utf-8" if stream else "application/json",
        "request-id": ctx.ids.anthropic_request(),
        "anthropic-organization-id": "0b3d4b0e-7c1a-4f63-9d0e-0e1c2d3f4a5b",
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-input-tokens-limit": "2000000",
        "anthropic-ratelimit-input-tokens-remaining": str(max(0, 2_000_000 - input_tokens)),
        "anthropic-ratelimit-input-tokens-reset": reset,
        "anthropic-ratelimit-output-tokens-limit": "400000",
        "anthropic-ratelimit-output-tokens-remaining": str(max(0, 400_000 - output_tokens)),
        "anthropic-ratelimit-output-tokens-reset": reset,
        "anthropic-ratelimit-tokens-limit": "2400000",
        "anthropic-ratelimit-tokens-remaining": str(
            max(0, 2_400_000 - input_tokens - output_tokens)
        ),
        "anthropic-ratelimit-tokens-reset": reset,
        "x-robots-tag": "none",
        "via": "1.1 google",
    }
    if stream:
        headers["cache-control"] = "no-cache"
    return headers


@dataclass(frozen=True)
class _AnthropicPrompt:
    input_tokens: int
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def total(self) -> int:
        return self.input_tokens + self.cache_read + self.cache_write


def _anthropic_prompt(estimate: int, controls: _Controls) -> _AnthropicPrompt:
    cache = controls.has("cache")
    if controls.cached_tokens is not None:
        read = controls.cached_tokens
    else:
        read = estimate // 2 if cache else 0
    if controls.cache_write_tokens is not None:
        write = controls.cache_write_tokens
    else:
        write = estimate // 4 if cache else 0
    long = controls.cache_write_long or 0
    write = max(write, long)
    total = max(estimate, read + write + 1)
    return _AnthropicPrompt(total - read - write, read, write - long, long)


def _anthropic_thinking(ctx: _Ctx) -> int:
    thinking = ctx.body.get("thinking")
    enabled = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    if ctx.controls.reasoning_tokens is not None:
        return ctx.controls.reasoning_tokens
    if not enabled:
        return 0
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    return min(48, budget) if isinstance(budget, int) and budget > 0 else 48


def _anthropic_tool(tools: Any) -> _ToolCall | None:
    if not isinstance(tools, list):
        return None
    for tool in tools:
        if isinstance(tool, dict) and "input_schema" in tool and isinstance(tool.get("name"), str):
            args = _schema_example(tool.get("input_schema"))
            return _ToolCall(tool["name"], json.dumps(args, separators=(",", ":")))
    return None


def _anthropic_count_tokens(ctx: _Ctx) -> _Reply:
    estimate = _anthropic_prompt_tokens(ctx.body)
    headers = _anthropic_headers(ctx, input_tokens=0, output_tokens=0, stream=False)
    return _Reply(200, headers, body={"input_tokens": estimate})


def _anthropic_messages(ctx: _Ctx) -> _Reply:
    body = ctx.body
    model = ctx.model("claude-sonnet-4-5-20250929")
    prompt = _anthropic_prompt(_anthropic_prompt_tokens(body), ctx.controls)
    controls = ctx.controls
    thinking = _anthropic_thinking(ctx)
    tool = _anthropic_tool(body.get("tools")) if controls.has("tool_call") else None
    if isinstance(body.get("tool_choice"), dict) and body["tool_choice"].get("type") == "none":
        tool = None
    searches = controls.web_search_requests if controls.has("web_search") else 0
    search_queries = [
        json.dumps({"query": f"otel-tokens demo search {k + 1}"}, separators=(",", ":"))
        for k in range(searches)
    ]
    search_pieces = [_split_pieces(q) for q in search_queries]
    search_output = sum(len(p) for p in search_pieces)
    pieces = tool.pieces if tool else controls.reply_pieces()
    max_tokens = _limit(body, "max_tokens")
    limit = None if max_tokens is None else max(0, max_tokens - search_output)
    out = _plan_output(thinking, pieces, limit)
    if tool and out.truncated:
        tool = None
        out = _Output(out.reasoning, [], True)
    output_tokens = out.reasoning + search_output + len(out.pieces)
    final_input = prompt.input_tokens + SEARCH_RESULT_TOKENS * searches
    stop_reason = "max_tokens" if out.truncated else ("tool_use" if tool else "end_turn")
    message_id = ctx.ids.anthropic("msg")
    stream = bool(body.get("stream"))
    headers = _anthropic_headers(
        ctx, input_tokens=prompt.total, output_tokens=output_tokens, stream=stream
    )
    tier = "priority" if body.get("service_tier") == "priority" else "standard"

    def usage(input_tokens: int, output: int) -> JSONDict:
        u: JSONDict = {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": prompt.cache_write,
            "cache_read_input_tokens": prompt.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": prompt.cache_write_5m,
                "ephemeral_1h_input_tokens": prompt.cache_write_1h,
            },
            "output_tokens": output,
            "service_tier": tier,
        }
        if searches:
            u["server_tool_use"] = {"web_search_requests": searches, "web_fetch_requests": 0}
        if out.reasoning:
            u["output_tokens_details"] = {"thinking_tokens": out.reasoning}
        return u

    signature = base64.b64encode(hashlib.sha256(message_id.encode()).digest() * 3).decode()
    thinking_pieces = _thinking_pieces(out.reasoning)
    blocks: list[JSONDict] = []
    if out.reasoning:
        blocks.append(
            {"type": "thinking", "thinking": "".join(thinking_pieces), "signature": signature}
        )
    search_ids = [ctx.ids.anthropic("srvtoolu") for _ in range(searches)]
    for k in range(searches):
        blocks.append(
            {
                "type": "server_tool_use",
                "id": search_ids[k],
                "name": "web_search",
                "input": json.loads(search_queries[k]),
            }
        )
        blocks.append(
            {
                "type": "web_search_tool_result",
                "tool_use_id": search_ids[k],
                "content": [
                    {
                        "type": "web_search_result",
                        "title": f"Demo search result {k + 1}",
                        "url": f"https://example.com/result-{k + 1}",
                        "encrypted_content": base64.b64encode(f"result {k + 1}".encode()).decode(),
                        "page_age": "January 1, 2025",
                    }
                ],
            }
        )
    tool_id = ctx.ids.anthropic("toolu")
    if tool:
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_id,
                "name": tool.name,
                "input": json.loads(tool.arguments),
            }
        )
    elif out.pieces or not blocks:
        blocks.append({"type": "text", "text": out.text})

    if not stream:
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage(final_input, output_tokens),
        }
        return _Reply(200, headers, body=message)

    events: list[tuple[str | None, str]] = []

    def emit(etype: str, payload: JSONDict) -> None:
        events.append((etype, _dumps({"type": etype, **payload})))

    start_usage = usage(prompt.input_tokens, 1)
    start_usage.pop("server_tool_use", None)
    start_usage.pop("output_tokens_details", None)
    emit(
        "message_start",
        {
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            }
        },
    )
    for index, block in enumerate(blocks):
        btype = block["type"]
        if btype == "thinking":
            emit(
                "content_block_start",
                {"index": index, "content_block": {**block, "thinking": "", "signature": ""}},
            )
        elif btype in ("server_tool_use", "tool_use"):
            emit("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
        elif btype == "text":
            emit(
                "content_block_start",
                {"index": index, "content_block": {"type": "text", "text": ""}},
            )
        else:
            emit("content_block_start", {"index": index, "content_block": block})
        if index == 0:
            emit("ping", {})
        if btype == "thinking":
            for piece in thinking_pieces:
                emit(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "thinking_delta", "thinking": piece}},
                )
            emit(
                "content_block_delta",
                {"index": index, "delta": {"type": "signature_delta", "signature": signature}},
            )
        elif btype == "server_tool_use":
            k = search_ids.index(block["id"])
            for piece in ["", *search_pieces[k]]:
                emit(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}},
                )
        elif btype == "tool_use":
            for piece in ["", *out.pieces]:
                emit(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}},
                )
        elif btype == "text":
            for piece in out.pieces:
                emit(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "text_delta", "text": piece}},
                )
        emit("content_block_stop", {"index": index})
    if controls.has("stream_error"):
        cut = _cut_point(controls, len(events))
        error = {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": headers["request-id"],
        }
        events = [*events[:cut], ("error", _dumps(error))]
        return _Reply(200, headers, events=events)
    delta_usage = usage(final_input, output_tokens)
    delta_usage.pop("cache_creation", None)
    delta_usage.pop("service_tier", None)
    emit(
        "message_delta",
        {"delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": delta_usage},
    )
    emit("message_stop", {})
    return _Reply(200, headers, events=events)


# ---- Errors -------------------------------------------------------------------------------------


def _openai_error(
    ctx: _Ctx, status: int, message: str, etype: str, code: str | None, param: str | None = None
) -> _Reply:
    headers = _openai_headers(ctx, prompt_tokens=0, output_tokens=0, stream=False)
    body = {"error": {"message": message, "type": etype, "param": param, "code": code}}
    return _Reply(status, headers, body=body, indent=2)


def _anthropic_error(ctx: _Ctx, status: int, etype: str, message: str) -> _Reply:
    headers = _anthropic_headers(ctx, input_tokens=0, output_tokens=0, stream=False)
    body = {
        "type": "error",
        "error": {"type": etype, "message": message},
        "request_id": headers["request-id"],
    }
    return _Reply(status, headers, body=body)


def _retry_headers(ctx: _Ctx, reply: _Reply, *, fast: bool) -> None:
    reply.headers["retry-after"] = str(max(0, math.ceil(ctx.controls.retry_after)))
    if fast:
        reply.headers["retry-after-ms"] = "10"
    elif ctx.azure:
        reply.headers["retry-after-ms"] = str(int(ctx.controls.retry_after * 1000))


def _scenario_error(ctx: _Ctx) -> _Reply | None:
    c = ctx.controls
    anthropic = ctx.provider == "anthropic"
    model = str(ctx.body.get("model") or ctx.deployment or "gpt-4o-mini")
    if c.unknown:
        message = f"Unknown x-test-scenario: {', '.join(c.unknown)}"
        if anthropic:
            return _anthropic_error(ctx, 400, "invalid_request_error", message)
        return _openai_error(ctx, 400, message, "invalid_request_error", None)
    if c.has("auth_error"):
        if anthropic:
            return _anthropic_error(ctx, 401, "authentication_error", "invalid x-api-key")
        if ctx.azure:
            reply = _openai_error(ctx, 401, "", "", None)
            reply.body = {
                "error": {
                    "code": "401",
                    "message": _AZURE_401_MESSAGE,
                }
            }
            return reply
        return _openai_error(
            ctx,
            401,
            "Incorrect API key provided: test. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )
    if c.has("bad_request"):
        if anthropic:
            return _anthropic_error(
                ctx,
                400,
                "invalid_request_error",
                "messages.0.content: Input should be a valid list",
            )
        return _openai_error(
            ctx,
            400,
            "Invalid value for 'messages': the test scenario rejected this request.",
            "invalid_request_error",
            "invalid_value",
            "messages",
        )
    first_attempt = c.retry_count == 0
    if c.has("rate_limit") or (c.has("rate_limit_once") and first_attempt):
        fast = not c.has("rate_limit")
        if anthropic:
            reply = _anthropic_error(
                ctx,
                429,
                "rate_limit_error",
                _ANTHROPIC_429_MESSAGE,
            )
            for key in list(reply.headers):
                if key.startswith("anthropic-ratelimit-input-tokens-remaining") or key.startswith(
                    "anthropic-ratelimit-tokens-remaining"
                ):
                    reply.headers[key] = "0"
        elif ctx.azure:
            reply = _openai_error(ctx, 429, "", "", None)
            reply.body = {
                "error": {
                    "code": "429",
                    "message": _AZURE_429_MESSAGE.format(
                        api_version=ctx.query.get("api-version", "")
                    ),
                }
            }
            reply.headers["x-ratelimit-remaining-tokens"] = "0"
        else:
            reply = _openai_error(
                ctx,
                429,
                _OPENAI_429_MESSAGE.format(model=model),
                "tokens",
                "rate_limit_exceeded",
            )
            reply.headers["x-ratelimit-remaining-tokens"] = "0"
            reply.headers["x-ratelimit-reset-tokens"] = "1s"
        _retry_headers(ctx, reply, fast=fast)
        return reply
    stream = bool(ctx.body.get("stream"))
    server_error = (
        c.has("server_error")
        or (c.has("server_error_once") and first_attempt)
        or (c.has("stream_error") and not stream)
    )
    if server_error:
        fast = not c.has("server_error") and not c.has("stream_error")
        if anthropic:
            reply = _anthropic_error(ctx, 529, "overloaded_error", "Overloaded")
        else:
            body = _openai_stream_error_body()["error"]
            reply = _openai_error(ctx, 500, body["message"], "server_error", None)
        if fast:
            _retry_headers(ctx, reply, fast=True)
        return reply
    if c.has("internal_error"):
        if anthropic:
            return _anthropic_error(ctx, 500, "api_error", "Internal server error")
        body = _openai_stream_error_body()["error"]
        return _openai_error(ctx, 500, body["message"], "server_error", None)
    return None


def _validate(ctx: _Ctx) -> _Reply | None:
    body = ctx.body
    if ctx.provider == "anthropic":
        if ctx.endpoint == "messages" and "max_tokens" not in body:
            return _anthropic_error(ctx, 400, "invalid_request_error", "max_tokens: Field required")
        if "model" not in body:
            return _anthropic_error(ctx, 400, "invalid_request_error", "model: Field required")
        if "messages" not in body:
            return _anthropic_error(ctx, 400, "invalid_request_error", "messages: Field required")
        return None
    if ctx.azure and ctx.deployment is not None and "api-version" not in ctx.query:
        reply = _openai_error(ctx, 404, "Resource not found", "", None)
        reply.body = {"error": {"code": "404", "message": "Resource not found"}}
        return reply
    if "model" not in body and not (ctx.azure and ctx.deployment):
        return _openai_error(
            ctx, 400, "you must provide a model parameter", "invalid_request_error", None
        )
    required = {
        "chat.completions": "messages",
        "completions": "prompt",
        "embeddings": "input",
        "responses": None,
    }.get(ctx.endpoint)
    if required and required not in body:
        return _openai_error(
            ctx,
            400,
            f"Missing required parameter: '{required}'.",
            "invalid_request_error",
            "missing_required_parameter",
            required,
        )
    if "stream_options" in body and body["stream_options"] is not None and not body.get("stream"):
        return _openai_error(
            ctx,
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "invalid_request_error",
            None,
            "stream_options",
        )
    return None


# -------------------------------------------------------------------------------------------------
# Routing

_OPENAI_ROUTE = re.compile(
    r"^(?P<prefix>/openai)?(?:/v1)?(?:/deployments/(?P<deployment>[^/]+))?"
    r"/(?P<endpoint>chat/completions|completions|embeddings|responses)$"
)
_ANTHROPIC_ROUTE = re.compile(r"^(?:/v1)?/messages(?P<count>/count_tokens)?$")


def _route(path: str) -> tuple[str, str, str | None]:
    match = _ANTHROPIC_ROUTE.match(path)
    if match:
        return "anthropic", "messages.count_tokens" if match.group("count") else "messages", None
    match = _OPENAI_ROUTE.match(path)
    if match:
        provider = "azure" if match.group("prefix") else "openai"
        return provider, match.group("endpoint").replace("/", "."), match.group("deployment")
    if path == "/health":
        return "unknown", "health", None
    return ("anthropic" if "messages" in path else "unknown"), "unknown", None


_HANDLERS = {
    ("openai", "chat.completions"): _openai_chat,
    ("openai", "completions"): _openai_completions,
    ("openai", "embeddings"): _openai_embeddings,
    ("openai", "responses"): _openai_responses,
    ("anthropic", "messages"): _anthropic_messages,
    ("anthropic", "messages.count_tokens"): _anthropic_count_tokens,
}


class _Dropped(Exception):
    """Raised to cut the connection in the middle of a reply."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # bursts of concurrent clients in tests and benchmarks

    def __init__(self, address: tuple[str, int], owner: ProviderServer) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)) and not self.owner.verbose:
            return  # a client went away (keep-alive connection reset, dropped stream): not news
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "otel-tokens-demo/1.0"
    sys_version = ""
    timeout = 60
    server: _HTTPServer

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.owner.verbose:
            sys.stderr.write(f"[demo-server] {self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _read_body(self) -> bytes:
        length = self.headers.get("content-length")
        if length:
            return self.rfile.read(int(length))
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            data = bytearray()
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
            return bytes(data)
        return b""

    def _handle(self, method: str) -> None:
        owner = self.server.owner
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        raw = self._read_body()
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            k = key.lower()
            headers[k] = f"{headers[k]}, {value}" if k in headers else value
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        provider, endpoint, deployment = _route(path)
        owner._record(
            RecordedRequest(
                method=method,
                path=path,
                query=query,
                headers=headers,
                body=body,
                provider=provider,
                endpoint=endpoint,
                deployment=deployment,
                raw_body=raw,
            )
        )
        body_dict: JSONDict = body if isinstance(body, dict) else {}
        controls = _Controls.parse(headers, body_dict, owner.default_scenarios, owner.stream_delay)
        ctx = _Ctx(
            server=owner,
            ids=owner._ids,
            body=body_dict,
            controls=controls,
            provider=provider,
            endpoint=endpoint,
            deployment=deployment,
            query=query,
        )
        try:
            if controls.latency:
                time.sleep(controls.latency)
            reply = self._reply(method, ctx, bad_json)
            self._send(reply, ctx)
        except _Dropped:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _reply(self, method: str, ctx: _Ctx, bad_json: bool) -> _Reply:
        if ctx.endpoint == "health":
            return _Reply(200, {"content-type": "application/json"}, body={"status": "ok"})
        provider_key = "openai" if ctx.provider == "azure" else ctx.provider
        handler = _HANDLERS.get((provider_key, ctx.endpoint))
        if handler is None or method != "POST":
            if ctx.provider == "anthropic":
                return _anthropic_error(ctx, 404, "not_found_error", "Not Found")
            return _openai_error(
                ctx, 404, f"Invalid URL ({method} {self.path})", "invalid_request_error", None
            )
        if bad_json:
            if ctx.provider == "anthropic":
                return _anthropic_error(ctx, 400, "invalid_request_error", "Invalid JSON body")
            return _openai_error(
                ctx,
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            )
        return _validate(ctx) or _scenario_error(ctx) or handler(ctx)

    def _send(self, reply: _Reply, ctx: _Ctx) -> None:
        drop = ctx.controls.has("drop_mid_stream") and reply.status == 200
        self.send_response(reply.status)
        for key, value in reply.headers.items():
            if key != "content-length":
                self.send_header(key, value)
        if reply.events is None:
            payload = (_dumps(reply.body, reply.indent) + ("\n" if reply.indent else "")).encode()
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            if drop:
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                raise _Dropped
            self.wfile.write(payload)
            self.wfile.flush()
            return
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        cut = _cut_point(ctx.controls, len(reply.events)) if drop else None
        delay = ctx.controls.stream_delay
        for i, (event, data) in enumerate(reply.events):
            if cut is not None and i >= cut:
                # Leave the chunked body unterminated, mid-event, like a dropped connection.
                self._write_chunk(b'data: {"id":')
                raise _Dropped
            if i and delay:
                time.sleep(delay)
            text = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
            self._write_chunk(text.encode())
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


# -------------------------------------------------------------------------------------------------
# Public server


class ProviderServer:
    """A local fake of the OpenAI, Azure OpenAI and Anthropic HTTP APIs, run in a background thread.

    ``scenario`` sets the default scenario(s) (comma separated) for requests that do not choose one;
    ``stream_delay`` is the pause between SSE events under ``slow_stream``. Identifiers
    (``chatcmpl-``, ``resp_``, ``msg_``, request ids...) are unique per server unless ``seed`` is
    given, which makes them repeat from run to run. See the module docstring for the endpoints
    and scenarios.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        scenario: str | Iterable[str] | None = None,
        stream_delay: float = DEFAULT_SLOW_DELAY,
        seed: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self._requested_port = port
        if isinstance(scenario, str):
            names = {s.strip().lower() for s in scenario.split(",") if s.strip()}
        else:
            names = {s.strip().lower() for s in scenario or ()}
        unknown = names - SCENARIOS
        if unknown:
            raise ValueError(f"unknown scenario(s): {', '.join(sorted(unknown))}")
        self.default_scenarios: frozenset[str] = frozenset(names)
        self.stream_delay = stream_delay
        self.verbose = verbose
        self._ids = _Ids(uuid.uuid4().hex if seed is None else seed)
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> ProviderServer:
        """Bind and serve in a daemon thread. Returns ``self``."""
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otel-tokens-demo-server:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and release the port."""
        httpd, thread = self._httpd, self._thread
        self._httpd = None
        self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        if self._httpd is None:
            self._httpd = _HTTPServer((self.host, self._requested_port), self)
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ProviderServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """Base URL for ``openai.OpenAI(base_url=...)``: :attr:`url` + ``/v1``."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for ``anthropic.Anthropic(base_url=...)``: :attr:`url`."""
        return self.url

    @property
    def azure_endpoint(self) -> str:
        """``azure_endpoint`` for ``openai.AzureOpenAI``: :attr:`url`."""
        return self.url

    # -- recorded requests -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise LookupError("no request received yet")
            return self._requests[-1]

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve forever: ``python -m otel_tokens.demo.server --port 8787``."""
    parser = argparse.ArgumentParser(
        prog="python -m otel_tokens.demo.server",
        description="Local fake of the OpenAI / Azure OpenAI / Anthropic HTTP APIs.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument(
        "--scenario",
        default=None,
        help=f"default scenario(s), comma separated: {sorted(SCENARIOS)}",
    )
    parser.add_argument("--stream-delay", type=float, default=DEFAULT_SLOW_DELAY)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    server = ProviderServer(
        args.host,
        args.port,
        scenario=args.scenario,
        stream_delay=args.stream_delay,
        verbose=args.verbose,
    )
    server._httpd = _HTTPServer((server.host, server._requested_port), server)
    print(f"otel-tokens demo provider server on {server.url}", flush=True)
    print(f"  OpenAI:    OPENAI_BASE_URL={server.openai_base_url}", flush=True)
    print(f"  Anthropic: ANTHROPIC_BASE_URL={server.anthropic_base_url}", flush=True)
    print(f"  Azure:     AZURE_OPENAI_ENDPOINT={server.azure_endpoint}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
