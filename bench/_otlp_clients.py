"""OTLP metrics clients for the collector benchmarks: one connection each (an HTTP/1.1
keep-alive connection, or a gRPC channel with its own subchannel pool, so its own TCP
connection), sending pre-encoded ``ExportMetricsServiceRequest`` bodies until acknowledged.

gRPC uses grpcio's generic client: ``channel.unary_unary`` on ``MetricsService/Export`` (the
method ``MetricsServiceStub`` calls) without serializers, so the bodies go as they are.
"""

from __future__ import annotations

import http.client
import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


@dataclass(frozen=True, slots=True)
class Answer:
    code: str  # "200", "503", "OK", "UNAVAILABLE", ...
    body: bytes
    retry_after: float | None  # set when the answer asks for a retry


class HttpClient:
    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.conn.connect()

    def send(self, body: bytes) -> Answer:
        self.conn.request(
            "POST", "/v1/metrics", body=body, headers={"Content-Type": "application/x-protobuf"}
        )
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.getheader("Connection", "").lower() == "close":
            self.conn.close()  # http.client reconnects on the next request
        retry = None
        if resp.status == 503:
            retry = float(resp.getheader("Retry-After") or 1)
        return Answer(str(resp.status), data, retry)

    def close(self) -> None:
        self.conn.close()


class GrpcClient:
    def __init__(self, port: int) -> None:
        import grpc

        self._grpc = grpc
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        grpc.channel_ready_future(self.channel).result(timeout=10)
        # No serializers: the bodies are already encoded ExportMetricsServiceRequests.
        self.export = self.channel.unary_unary(EXPORT)

    def send(self, body: bytes) -> Answer:
        g = self._grpc
        try:
            data = self.export(body, timeout=120)
        except g.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            retry = 1.0 if code == g.StatusCode.UNAVAILABLE else None
            for key, value in exc.trailing_metadata() or ():  # type: ignore[attr-defined]
                if key == "google.rpc.retryinfo-bin" and retry is not None:
                    from google.rpc.error_details_pb2 import RetryInfo

                    info = RetryInfo.FromString(value)
                    retry = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            return Answer(code.name, b"", retry)
        return Answer("OK", data, None)

    def close(self) -> None:
        self.channel.close()


class Client(Protocol):
    def send(self, body: bytes) -> Answer: ...
    def close(self) -> None: ...


def connect(transport: str, port: int) -> Client:
    """A client of ``transport`` ("http" or "grpc") on 127.0.0.1:``port``."""
    return GrpcClient(port) if transport == "grpc" else HttpClient(port)


def deliver(client: Client, body: bytes) -> tuple[Answer, int]:
    """Send until the answer is not a retry request; (last answer, retries)."""
    retries = 0
    while True:
        answer = client.send(body)
        if answer.retry_after is None:
            return answer, retries
        retries += 1
        time.sleep(answer.retry_after)


def answer_problems(answers: list[Answer]) -> list[str]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceResponse,
    )

    problems = []
    codes = Counter(a.code for a in answers)
    if set(codes) - {"200", "OK"}:
        problems.append(f"answers by status: {dict(codes)}")
    rejected = sum(
        ExportMetricsServiceResponse.FromString(a.body).partial_success.rejected_data_points
        for a in answers
        if a.body
    )
    if rejected:
        problems.append(f"{rejected} points rejected")
    return problems
