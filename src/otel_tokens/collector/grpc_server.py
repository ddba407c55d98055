"""OTLP/gRPC receiver: MetricsService/Export billed like OTLP/HTTP; TraceService and
LogsService forwarded to the upstream (or acknowledged empty without one).

Status codes follow the OTLP specification: INVALID_ARGUMENT for a malformed request,
UNAUTHENTICATED, RESOURCE_EXHAUSTED for a message over the limit (enforced by gRPC itself,
compressed and decompressed), and UNAVAILABLE with a ``google.rpc.RetryInfo`` (standard
``grpc-status-details-bin`` trailer, plus the ``google.rpc.retryinfo-bin`` one the Python
SDK reads) when overloaded or when the ledger or the upstream is down: retryable.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from . import decode as d
from ._deps import any_pb2, error_details_pb2, grpc, status_pb2
from .core import Pipeline, Unavailable

log = logging.getLogger("otel_tokens.collector")

_SERVICES = {
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}
_EMPTY: dict[str, Any] = {"traces": ExportTraceServiceResponse, "logs": ExportLogsServiceResponse}


def _identity(data: bytes) -> bytes:
    return data


def _retry_trailers(code: int, message: str, retry_after: float) -> tuple[tuple[str, bytes], ...]:
    seconds = max(retry_after, 0.0)
    whole = math.floor(seconds)
    info = error_details_pb2.RetryInfo()
    info.retry_delay.seconds = whole
    info.retry_delay.nanos = int((seconds - whole) * 1e9)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code, message=message, details=[detail])
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


class GrpcReceiver:
    """The gRPC listener (grpcio server with its own thread pool). ``reuse_port``: share
    the port with other processes that set it too (SO_REUSEPORT), as ``--workers`` does."""

    def __init__(
        self,
        host: str,
        port: int,
        pipeline: Pipeline,
        credentials: tuple[bytes, bytes] | None,
        *,
        reuse_port: bool = False,
    ) -> None:
        g = grpc()
        self._grpc = g
        self.pipeline = pipeline
        limit = pipeline.config.max_body_bytes
        # More workers than admission slots: an RPC beyond --max-queue is picked up at once
        # and answered UNAVAILABLE (retryable) instead of waiting in an unbounded queue.
        workers = pipeline.config.max_queue + 4
        self._server = g.server(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otel-tokens-grpc"),
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                # Without --workers, a second collector on the same port must fail.
                ("grpc.so_reuseport", 1 if reuse_port else 0),
            ],
        )
        handlers = []
        for signal, service in _SERVICES.items():
            method = g.unary_unary_rpc_method_handler(
                self._handler(signal),
                request_deserializer=_identity,
                response_serializer=_identity,
            )
            handlers.append(g.method_handlers_generic_handler(service, {"Export": method}))
        self._server.add_generic_rpc_handlers(tuple(handlers))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if credentials is not None:
                key, cert = credentials
                bound = self._server.add_secure_port(
                    address, g.ssl_server_credentials([(key, cert)])
                )
            else:
                bound = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address} (gRPC): {exc}") from exc
        if not bound:  # grpcio only logs why ("Failed to add port"), often a busy port
            raise OSError(
                f"cannot listen on {address} (gRPC): address already in use or not available"
            )
        self.host = host
        self.port: int = int(bound)

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float) -> None:
        self._server.stop(grace).wait(grace + 1)

    def _handler(self, signal: str) -> Any:
        def handle(body: bytes, context: Any) -> bytes:
            try:
                data = self._handle(signal, body, context)
            except _Failure as failure:
                self.pipeline.stats.request("grpc", signal, failure.code)
                code = getattr(self._grpc.StatusCode, failure.code)
                if failure.retry_after is not None:
                    context.set_trailing_metadata(
                        _retry_trailers(code.value[0], failure.message, failure.retry_after)
                    )
                context.abort(code, failure.message)  # raises: ends the RPC with that status
                raise
            self.pipeline.stats.request("grpc", signal, "OK")
            return data

        return handle

    def _handle(self, signal: str, body: bytes, context: Any) -> bytes:
        pipeline = self.pipeline
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        try:
            principal = pipeline.authenticate(_text(metadata.get("authorization")))
            if signal == "metrics":
                with pipeline.admit():  # before parsing: a parsed batch is ~3x its body
                    request = d.parse(body, d.PROTOBUF, ExportMetricsServiceRequest())
                    response = pipeline.export_metrics(request, principal)
                data: bytes = response.SerializeToString()
                return data
            with pipeline.admit():
                answer = pipeline.forward_raw(signal, body, "application/x-protobuf", None)
        except d.ClientError as exc:
            name = {
                d.UNAUTHENTICATED: "UNAUTHENTICATED",
                d.PERMISSION_DENIED: "PERMISSION_DENIED",
                d.RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
            }.get(exc.grpc_code, "INVALID_ARGUMENT")
            raise _Failure(name, exc.message) from None
        except Unavailable as exc:
            raise _Failure("UNAVAILABLE", exc.message, exc.retry_after) from None
        except Exception:
            log.exception("internal error on gRPC %s Export", signal)
            raise _Failure("INTERNAL", "internal error") from None
        if answer is None:
            empty: bytes = _EMPTY[signal]().SerializeToString()
            return empty
        if answer.ok:
            return answer.body
        raise _Failure(_grpc_code_for(answer.status), answer.describe())


class _Failure(Exception):
    """How an RPC ends when it does not succeed: a gRPC code name, a message and, for
    retryable ones, the delay to advertise."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _grpc_code_for(status: int | None) -> str:
    """gRPC code for an upstream HTTP answer that is neither OK nor retryable."""
    return {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "UNIMPLEMENTED",
        413: "RESOURCE_EXHAUSTED",
    }.get(status or 0, "UNKNOWN")
