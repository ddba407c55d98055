"""Forwarding to an upstream OTLP/HTTP endpoint (``--upstream``), with the standard library."""

from __future__ import annotations

import gzip
import http.client
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    """What the upstream said; ``status`` None means it could not be reached."""

    status: int | None
    body: bytes = b""
    content_type: str | None = None
    retry_after: str | None = None
    error: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_STATUS

    def describe(self) -> str:
        if self.status is None:
            return f"upstream unreachable: {self.error}"
        snippet = self.body[:200].decode("utf-8", "replace")
        return f"upstream answered {self.status}" + (f": {snippet}" if snippet else "")


class Upstream:
    """POSTs OTLP bodies to ``<base>/v1/<signal>``."""

    def __init__(
        self, base_url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.timeout = timeout
        self._context = ssl.create_default_context() if base_url.startswith("https") else None

    def url(self, signal: str) -> str:
        return f"{self.base_url}/v1/{signal}"

    def post(
        self,
        signal: str,
        body: bytes,
        content_type: str,
        content_encoding: str | None = None,
        *,
        compress: bool = False,
    ) -> UpstreamAnswer:
        headers = {**self.headers, "Content-Type": content_type}
        if compress and content_encoding is None:
            body = gzip.compress(body, compresslevel=5)
            content_encoding = "gzip"
        if content_encoding and content_encoding != "identity":
            headers["Content-Encoding"] = content_encoding
        request = urllib.request.Request(
            self.url(signal), data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=self._context
            ) as response:
                return UpstreamAnswer(
                    status=response.status,
                    body=response.read(),
                    content_type=response.headers.get("Content-Type"),
                    headers=dict(response.headers.items()),
                )
        except urllib.error.HTTPError as exc:
            try:
                data = exc.read()
            except (OSError, http.client.HTTPException):
                data = b""
            return UpstreamAnswer(
                status=exc.code,
                body=data,
                content_type=exc.headers.get("Content-Type") if exc.headers else None,
                retry_after=exc.headers.get("Retry-After") if exc.headers else None,
                headers=dict(exc.headers.items()) if exc.headers else {},
            )
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return UpstreamAnswer(status=None, error=str(exc) or type(exc).__name__)
