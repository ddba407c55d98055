"""Who and what a call is for: tenant, user, feature and free tags, carried in baggage.

``attribute(tenant=..., user=..., feature=..., **tags)`` works as a context manager and as a
decorator (sync and async). The values live in OpenTelemetry baggage, so they follow
asyncio tasks, threads started with the context (OpenTelemetry's threading
instrumentation, or ``contextvars.copy_context()``), and, with the standard propagators,
outgoing requests to other services.

Every span gets all the keys. Metric points get only allow-listed keys (default: tenant and
feature; ``OTEL_TOKENS_METRIC_ATTRIBUTES``), each with a cap on distinct values per process
(``OTEL_TOKENS_CARDINALITY_LIMIT``, default 100) beyond which values fold into ``other``,
so that a user id can never explode metric cardinality.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from . import semconv as sc

F = TypeVar("F", bound=Callable[..., Any])

ENV_METRIC_ATTRIBUTES = "OTEL_TOKENS_METRIC_ATTRIBUTES"
ENV_CARDINALITY_LIMIT = "OTEL_TOKENS_CARDINALITY_LIMIT"
OTHER = "other"

_SHORT = {
    "tenant": sc.BILLING_TENANT_ID,
    "user": sc.BILLING_USER_ID,
    "feature": sc.BILLING_FEATURE,
}
_MAX_VALUE_LENGTH = 256
# Context tokens of the `attribute` blocks open in the current context, innermost last. Kept
# per context (not on the instance): one instance entered by concurrent tasks or threads
# must give each its own token back.
_OPEN: ContextVar[tuple[object, ...]] = ContextVar("otel_tokens_attribute_open", default=())


def _baggage_items(
    tenant: str | None, user: str | None, feature: str | None, tags: Mapping[str, Any]
) -> dict[str, str]:
    items: dict[str, str] = {}
    for short, value in (("tenant", tenant), ("user", user), ("feature", feature)):
        if value is not None:
            items[_SHORT[short]] = str(value)[:_MAX_VALUE_LENGTH]
    for key, value in tags.items():
        if value is not None:
            items[sc.BILLING_TAG_PREFIX + key] = str(value)[:_MAX_VALUE_LENGTH]
    return items


class attribute:
    """Attribute the LLM calls made inside to a tenant, user, feature and tags."""

    def __init__(
        self,
        tenant: str | None = None,
        user: str | None = None,
        feature: str | None = None,
        **tags: Any,
    ) -> None:
        self._items = _baggage_items(tenant, user, feature, tags)

    def __enter__(self) -> attribute:
        ctx = otel_context.get_current()
        for key, value in self._items.items():
            ctx = baggage.set_baggage(key, value, ctx)
        token = otel_context.attach(ctx)
        _OPEN.set((*_OPEN.get(), token))
        return self

    def __exit__(self, *exc: object) -> None:
        open_tokens = _OPEN.get()
        if not open_tokens:
            return
        _OPEN.set(open_tokens[:-1])
        otel_context.detach(open_tokens[-1])  # type: ignore[arg-type]

    async def __aenter__(self) -> attribute:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)

    def __call__(self, func: F) -> F:
        items = self._items
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with attribute._from_items(items):
                    return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with attribute._from_items(items):
                return func(*args, **kwargs)

        return cast(F, wrapper)

    @classmethod
    def _from_items(cls, items: Mapping[str, str]) -> attribute:
        new = cls()
        new._items = dict(items)
        return new


def current(context: Context | None = None) -> dict[str, str]:
    """Our attribution keys in ``context`` (default: the current one), as span attributes."""
    found = baggage.get_all(context)
    if not found:  # the usual case, once per metered call
        return {}
    return {
        k: str(v)
        for k, v in found.items()
        if k in _SHORT.values() or k.startswith(sc.BILLING_TAG_PREFIX)
    }


class CardinalityGuard:
    """Allow-listed metric attributes with a cap on distinct values per key."""

    def __init__(self, allowed: tuple[str, ...] | None = None, limit: int | None = None) -> None:
        if allowed is None:
            raw = os.environ.get(ENV_METRIC_ATTRIBUTES, "tenant,feature")
            allowed = tuple(
                _SHORT.get(k.strip(), sc.BILLING_TAG_PREFIX + k.strip())
                for k in raw.split(",")
                if k.strip()
            )
        if limit is None:
            limit = int(os.environ.get(ENV_CARDINALITY_LIMIT, "100"))
        self.allowed = allowed
        self.limit = limit
        self._seen: dict[str, set[str]] = {key: set() for key in allowed}
        self._lock = threading.Lock()

    def metric_attributes(self, attribution: Mapping[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in self.allowed:
            value = attribution.get(key)
            if value is None:
                continue
            seen = self._seen[key]
            if value not in seen:
                with self._lock:
                    if value not in seen and len(seen) >= self.limit:
                        value = OTHER
                    else:
                        seen.add(value)
            out[key] = value
        return out
