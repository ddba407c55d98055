"""Attribution from HTTP headers at a service boundary, for multi-tenant API servers.

    app = AttributionMiddleware(app)          # ASGI (Starlette, FastAPI, ...)
    app = WSGIAttributionMiddleware(app)      # WSGI (Flask, Django, ...)

Each request's LLM calls are attributed to the tenant, user and feature named by its
headers (``x-tenant-id``, ``x-user-id``, ``x-feature`` by default; pass ``headers=`` to map
others). Only trust these headers from your own gateway, which should set or strip them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from .attribution import attribute

DEFAULT_HEADERS: Mapping[str, str] = {
    "x-tenant-id": "tenant",
    "x-user-id": "user",
    "x-feature": "feature",
}

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def _attribution(values: Mapping[str, str], headers: Mapping[str, str]) -> attribute:
    kwargs = {field: values[name] for name, field in headers.items() if name in values}
    tenant = kwargs.pop("tenant", None)
    user = kwargs.pop("user", None)
    feature = kwargs.pop("feature", None)
    return attribute(tenant=tenant, user=user, feature=feature, **kwargs)


class AttributionMiddleware:
    """ASGI middleware: attributes each HTTP request's LLM calls from its headers."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.headers = {k.lower(): v for k, v in (headers or DEFAULT_HEADERS).items()}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        values = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope.get("headers", ())
            if k.decode("latin-1").lower() in self.headers
        }
        with _attribution(values, self.headers):
            await self.app(scope, receive, send)


class WSGIAttributionMiddleware:
    """WSGI middleware: attributes each request's LLM calls from its headers."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], headers: Mapping[str, str] | None = None
    ) -> None:
        self.app = app
        self.headers = {k.lower(): v for k, v in (headers or DEFAULT_HEADERS).items()}

    def __call__(self, environ: Mapping[str, Any], start_response: Any) -> Iterable[bytes]:
        values = {}
        for name in self.headers:
            value = environ.get("HTTP_" + name.upper().replace("-", "_"))
            if value is not None:
                values[name] = str(value)
        with _attribution(values, self.headers):
            # Materialise the body inside the context: streamed bodies that call an LLM
            # while iterating are attributed too.
            body = self.app(environ, start_response)
            try:
                return list(body)
            finally:
                # The server only sees our list: close the application's iterable (PEP 3333)
                # so its clean-up (file handles, request teardown) runs.
                close = getattr(body, "close", None)
                if callable(close):
                    close()
