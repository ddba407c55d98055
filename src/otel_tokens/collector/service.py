"""`Collector`: the OTLP receivers, the ledger and the pricing catalog, started together."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..ledger import Ledger, open_ledger
from ..pricing import Catalog
from .config import CollectorConfig, ConfigError, parse_endpoint, redact
from .core import Pipeline
from .grpc_server import GrpcReceiver
from .http_server import HttpReceiver, StatusPages

log = logging.getLogger("otel_tokens.collector")


class Collector:
    """The pricing collector, in-process.

    >>> with Collector(http_endpoint="127.0.0.1:0", grpc_endpoint="127.0.0.1:0",
    ...                ledger="sqlite:///ledger.db") as c:
    ...     export to c.http_url + "/v1/metrics" or to c.grpc_target

    Settings are those of `CollectorConfig` (a config, keyword overrides, or both).
    ``ledger`` is a URL or a `Ledger` object (which the collector then neither closes nor
    reopens after errors); ``catalog`` replaces the one loaded from ``prices``.
    ``reuse_port`` and ``pages`` are for a worker process (``--workers``, `workers.py`):
    listen on ports other processes share, and show their status pages.
    """

    def __init__(
        self,
        config: CollectorConfig | None = None,
        *,
        ledger: Ledger | str | None = None,
        catalog: Catalog | None = None,
        reuse_port: bool = False,
        pages: Callable[[Pipeline], StatusPages] | None = None,
        **settings: Any,
    ) -> None:
        if isinstance(ledger, str):
            settings["ledger"] = ledger
            ledger = None
        self.config = replace(config, **settings) if config else CollectorConfig(**settings)
        self._ledger = ledger
        self._catalog = catalog
        self._reuse_port = reuse_port
        self._pages = pages
        self.pipeline: Pipeline | None = None
        self._http: HttpReceiver | None = None
        self._grpc: GrpcReceiver | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> Collector:
        config = self.config
        catalog = self._catalog or Catalog.load(config.prices, use_env=False)
        external = self._ledger

        def factory() -> Ledger:
            return external if external is not None else open_ledger(config.ledger)

        pipeline = Pipeline(
            config, ledger_factory=factory, catalog=catalog, reopen=external is None
        )
        pipeline.open()
        self.pipeline = pipeline
        try:
            if config.http_endpoint is not None:
                host, port = parse_endpoint(config.http_endpoint, "http_endpoint")
                self._http = HttpReceiver(
                    host,
                    port,
                    pipeline,
                    self._ssl_context(),
                    pages=self._pages(pipeline) if self._pages else None,
                    reuse_port=self._reuse_port,
                )
            if config.grpc_endpoint is not None:
                host, port = parse_endpoint(config.grpc_endpoint, "grpc_endpoint")
                self._grpc = GrpcReceiver(
                    host, port, pipeline, self._grpc_credentials(), reuse_port=self._reuse_port
                )
        except BaseException:
            self.stop(0)
            raise
        if self._http is not None:
            self._http.start()
        if self._grpc is not None:
            self._grpc.start()
        log.info(
            "otel-tokens collector: http=%s grpc=%s ledger=%s upstream=%s",
            self.http_url or "off",
            self.grpc_target or "off",
            redact(config.ledger if external is None else external.url),
            config.upstream or "none",
        )
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let batches in flight finish (up to ``grace`` s), close."""
        http, self._http = self._http, None
        grpc, self._grpc = self._grpc, None
        if http is not None:
            http.stop_accepting()
        if grpc is not None:
            grpc.stop(grace)
        if self.pipeline is not None:
            self.pipeline.drain(grace)
        if http is not None:
            http.close_connections()
        if self.pipeline is not None:
            self.pipeline.close()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses ---------------------------------------------------------------------
    @property
    def http_url(self) -> str | None:
        """Base URL of the OTLP/HTTP receiver (``http[s]://host:port``)."""
        if self._http is None:
            return None
        host = f"[{self._http.host}]" if ":" in self._http.host else self._http.host
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{host}:{self._http.port}"

    @property
    def grpc_target(self) -> str | None:
        """``host:port`` of the OTLP/gRPC receiver."""
        if self._grpc is None:
            return None
        host = f"[{self._grpc.host}]" if ":" in self._grpc.host else self._grpc.host
        return f"{host}:{self._grpc.port}"

    # --- TLS ---------------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext | None:
        cert, key = self.config.tls_cert, self.config.tls_key
        if cert is None or key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from exc
        return context

    def _grpc_credentials(self) -> tuple[bytes, bytes] | None:
        cert, key = self.config.tls_cert, self.config.tls_key
        if cert is None or key is None:
            return None
        try:
            return Path(key).read_bytes(), Path(cert).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read TLS certificate or key: {exc}") from exc
