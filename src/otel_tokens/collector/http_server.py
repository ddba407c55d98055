"""OTLP/HTTP receiver (``POST /v1/metrics``, ``/v1/traces``, ``/v1/logs``), ``GET /metrics``
(Prometheus text) and ``GET /healthz``, on the standard library's threading HTTP server.

Answers follow the OTLP/HTTP specification: 200 with an ``Export*ServiceResponse`` (partial
success for rejected points); 400, 401, 403, 404, 408, 411, 413 and 415 with a
``google.rpc.Status`` body, not retryable; 503 with ``Retry-After`` when overloaded or when
the ledger or the upstream is down, retryable. Bodies are answered in the request's encoding
(protobuf or JSON).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from . import decode as d
from .core import Pipeline, Principal, Unavailable
from .stats import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE

log = logging.getLogger("otel_tokens.collector")

_SIGNALS = {"/v1/metrics": "metrics", "/v1/traces": "traces", "/v1/logs": "logs"}
_EMPTY_RESPONSE: dict[str, Any] = {
    "traces": ExportTraceServiceResponse,
    "logs": ExportLogsServiceResponse,
}
_HANDSHAKE_TIMEOUT = 10.0
_IDLE_TIMEOUT = 60.0
_READ_SIZE = 64 * 1024
# Each open connection holds a thread; beyond this many, new ones get an immediate 503.
MAX_CONNECTIONS = 1024
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


class StatusPages(Protocol):
    """What ``GET /metrics`` and ``GET /healthz`` show: this process's pipeline
    (`PipelinePages`), or every worker's (``--workers``)."""

    def metrics_page(self) -> str:
        """The Prometheus text."""
        ...

    def health(self) -> dict[str, Any]:
        """The JSON body; its ``status`` is ``ok`` (200) or not (503)."""
        ...


class PipelinePages:
    """The status pages of one pipeline."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def metrics_page(self) -> str:
        return self._pipeline.metrics_page()

    def health(self) -> dict[str, Any]:
        up = self._pipeline.ledger_up
        return {
            "status": "ok" if up else "degraded",
            "ledger": "up" if up else "down",
            "queue_depth": self._pipeline.queue_depth,
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        pipeline: Pipeline,
        ssl_context: ssl.SSLContext | None,
        pages: StatusPages,
        reuse_port: bool,
    ) -> None:
        self.pipeline = pipeline
        self.ssl_context = ssl_context
        self.pages = pages
        # Worker processes each listen on the same port; the kernel spreads connections.
        self.allow_reuse_port = reuse_port
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._active = 0
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            full = self._active >= MAX_CONNECTIONS
            if not full:
                self._active += 1
        if full:
            self.pipeline.stats.count("overloaded")
            with contextlib.suppress(OSError):
                request.sendall(_REFUSED)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self._conn_lock:
                self._active -= 1
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints the traceback to stderr, past --log-level; a client gone
        # mid-request (broken pipe, reset) is routine, anything else is our bug.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError)):
            log.debug("connection with %s ended: %s", client_address, exc)
        else:
            log.error("internal error serving %s", client_address, exc_info=exc)

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            self._serve_connection(request, client_address)
        finally:
            with self._conn_lock:
                self._active -= 1

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread: a slow TLS handshake blocks nobody else.
        conn = request
        if self.ssl_context is not None:
            try:
                request.settimeout(_HANDSHAKE_TIMEOUT)
                conn = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ValueError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                request.close()
                return
        with self._conn_lock:
            self._connections.add(conn)
        try:
            _Handler(conn, client_address, self)
        finally:
            with self._conn_lock:
                self._connections.discard(conn)
            if conn is not request:
                with contextlib.suppress(OSError):
                    conn.close()

    def close_connections(self) -> None:
        """Hang up on every open (keep-alive) connection, at shutdown."""
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "otel-tokens-collector"
    sys_version = ""
    timeout = _IDLE_TIMEOUT
    server: _Server
    _deadline = 0.0
    _held = 0

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    # --- plumbing ----------------------------------------------------------------------
    def _reply(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _status(
        self,
        status: int,
        code: int,
        message: str,
        kind: str,
        headers: dict[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        self._reply(
            status, d.status_body(code, message, kind), d.CONTENT_TYPE[kind], headers, close=close
        )

    # A body is read in pieces, each raw read bounded by what is left of --body-timeout:
    # a sender trickling bytes gets 408 when its time is up (BufferedReader.read would
    # wait as long as every byte comes within the idle timeout). Bytes are counted against
    # the pipeline's memory bound as they arrive.
    def _recv(self, n: int, *, hold: bool) -> bytes:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._too_slow()
        self.connection.settimeout(min(left, _IDLE_TIMEOUT))
        try:
            data = self.rfile.read1(n)
        except TimeoutError:
            raise self._too_slow() from None
        if hold and data:
            self.server.pipeline.hold_bytes(len(data))
            self._held += len(data)
        return data

    def _too_slow(self) -> d.ClientError:
        seconds = self.server.pipeline.config.body_timeout
        return d.ClientError(408, f"request body not received within {seconds:g} s")

    def _read_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            data = self._recv(min(n - len(out), _READ_SIZE), hold=True)
            if not data:
                raise d.ClientError(400, "body shorter than its Content-Length")
            out += data
        return bytes(out)

    def _readline(self, limit: int) -> bytes:
        line = bytearray()
        while len(line) < limit and not line.endswith(b"\n"):
            data = self._recv(1, hold=False)
            if not data:
                break
            line += data
        return bytes(line)

    def _read_body(self, limit: int) -> bytes:
        self._deadline = time.monotonic() + self.server.pipeline.config.body_timeout
        try:
            return self._read_body_by_deadline(limit)
        finally:
            with contextlib.suppress(OSError):
                self.connection.settimeout(_IDLE_TIMEOUT)

    def _read_body_by_deadline(self, limit: int) -> bytes:
        encoding = self.headers.get("Transfer-Encoding", "").strip().lower()
        if encoding and encoding != "identity":
            if encoding != "chunked":
                raise d.ClientError(400, f"unsupported Transfer-Encoding {encoding!r}")
            return self._read_chunked(limit)
        length = self.headers.get("Content-Length")
        if length is None:
            raise d.ClientError(411, "Content-Length required")
        if not length.strip().isdigit():
            raise d.ClientError(400, f"bad Content-Length {length!r}")
        n = int(length)
        if n > limit:
            raise d.too_large(limit)
        return self._read_exact(n)

    def _read_chunked(self, limit: int) -> bytes:
        out = bytearray()
        while True:
            line = self._readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise d.ClientError(400, "malformed chunked body") from None
            if size < 0:
                raise d.ClientError(400, "malformed chunked body")
            if size == 0:
                break
            if len(out) + size > limit:
                raise d.too_large(limit)
            chunk = self._read_exact(size)
            if self._readline(1024).strip():
                raise d.ClientError(400, "malformed chunked body")
            out += chunk
        for _ in range(100):  # trailers, up to the blank line
            if not self._readline(8192).strip():
                break
        return bytes(out)

    # --- routes ------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        pipeline = self.server.pipeline
        if path == "/healthz":
            health = self.server.pages.health()
            status = 200 if health["status"] == "ok" else 503
            self._reply(status, json.dumps(health).encode(), "application/json")
            return
        if path == "/metrics":
            if pipeline.auth_enabled:
                try:
                    pipeline.require_admin(pipeline.authenticate(self.headers.get("Authorization")))
                except d.ClientError as exc:
                    self._reply(
                        exc.status,
                        (exc.message + "\n").encode(),
                        "text/plain; charset=utf-8",
                        {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None,
                    )
                    return
            self._reply(200, self.server.pages.metrics_page().encode(), PROMETHEUS_CONTENT_TYPE)
            return
        self._reply(404, b"not found\n", "text/plain; charset=utf-8")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        signal = _SIGNALS.get(path)
        pipeline = self.server.pipeline
        if signal is None:
            self._status(404, d.NOT_FOUND, f"no such path {path}", d.JSON, close=True)
            return
        kind = d.JSON
        read = False
        status = 500
        self._held = 0
        try:
            principal = pipeline.authenticate(self.headers.get("Authorization"))
            kind = d.media_type(self.headers.get("Content-Type"))
            encoding = d.check_encoding(self.headers.get("Content-Encoding"))
            limit = pipeline.config.max_body_bytes
            # Admitted once the body is in: a slow sender holds no slot, only its
            # connection and the bytes it sent (bounded by hold_bytes).
            raw = self._read_body(limit)
            read = True
            with pipeline.admit():
                if signal == "metrics":
                    body = d.decompress(raw, encoding, limit)
                    del raw  # only the parsed request is needed from here: free the bytes
                    request = d.parse(body, kind, ExportMetricsServiceRequest())
                    del body
                    status = self._metrics(request, kind, principal)
                else:
                    d.decompress(raw, encoding, limit)  # checked, then forwarded as sent
                    status = self._forward(signal, raw, kind, encoding)
        except d.ClientError as exc:
            status = exc.status
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            self._status(exc.status, exc.grpc_code, exc.message, kind, headers, close=not read)
        except Unavailable as exc:
            status = 503
            retry = str(max(1, math.ceil(exc.retry_after)))
            self._status(
                503, d.UNAVAILABLE, exc.message, kind, {"Retry-After": retry}, close=not read
            )
        except (TimeoutError, ConnectionError, ssl.SSLError) as exc:
            status = 408
            log.debug("connection problem while reading a request: %s", exc)
            self.close_connection = True
        except Exception:
            status = 500
            log.exception("internal error on POST %s", path)
            self._status(500, d.INTERNAL, "internal error", kind, close=True)
        finally:
            pipeline.release_bytes(self._held)
            self._held = 0
            pipeline.stats.request("http", signal, str(status))

    def _metrics(
        self, request: ExportMetricsServiceRequest, kind: str, principal: Principal
    ) -> int:
        response = self.server.pipeline.export_metrics(request, principal)
        self._reply(200, d.encode(response, kind), d.CONTENT_TYPE[kind])
        return 200

    def _forward(self, signal: str, raw: bytes, kind: str, encoding: str) -> int:
        answer = self.server.pipeline.forward_raw(
            signal, raw, d.CONTENT_TYPE[kind], None if encoding == "identity" else encoding
        )
        if answer is None:
            self._reply(200, d.encode(_EMPTY_RESPONSE[signal](), kind), d.CONTENT_TYPE[kind])
            return 200
        status = 200 if answer.ok else answer.status or 502
        self._reply(status, answer.body, answer.content_type or d.CONTENT_TYPE[kind])
        return status


class HttpReceiver:
    """The HTTP listener, serving on a background thread. ``reuse_port``: share the port
    with other processes that set it too (SO_REUSEPORT), as ``--workers`` does."""

    def __init__(
        self,
        host: str,
        port: int,
        pipeline: Pipeline,
        ssl_context: ssl.SSLContext | None,
        *,
        pages: StatusPages | None = None,
        reuse_port: bool = False,
    ) -> None:
        cls = _Server6 if ":" in host else _Server
        pages = pages if pages is not None else PipelinePages(pipeline)
        try:
            self._server = cls((host, port), pipeline, ssl_context, pages, reuse_port)
        except OSError as exc:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise OSError(f"cannot listen on {shown} (HTTP): {exc.strerror or exc}") from exc
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="otel-tokens-http",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop_accepting(self) -> None:
        # shutdown() waits for serve_forever to return: never call it if it never ran
        # (start-up failed on the other port), or it waits for ever.
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def close_connections(self) -> None:
        self._server.close_connections()
