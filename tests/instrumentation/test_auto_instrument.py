"""The real ``opentelemetry-instrument`` command: entry points, the demo, OTLP over loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from _processes import BIN, OtlpSink, run, run_instrumented
from otel_tokens_fakes import ProviderServer


class _OtlpReceiver(OtlpSink):
    """What ``opentelemetry-instrument`` exported over OTLP/HTTP protobuf."""

    def spans(self) -> list[Any]:
        return [
            span
            for req in self.requests("/v1/traces", ExportTraceServiceRequest)
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def metric_points(self, name: str) -> list[Any]:
        return [
            point
            for req in self.requests("/v1/metrics", ExportMetricsServiceRequest)
            for rm in req.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == name
            for point in (metric.sum.data_points or metric.histogram.data_points)
        ]


@pytest.fixture
def otlp() -> Iterator[_OtlpReceiver]:
    receiver = _OtlpReceiver()
    yield receiver
    receiver.close()


def _attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
    return out


APP = """
import openai, anthropic
o = openai.OpenAI(max_retries=0)
r = o.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
a = anthropic.Anthropic(max_retries=0)
m = a.messages.create(model="claude-haiku-4-5", max_tokens=50,
                      messages=[{"role": "user", "content": "hi"}])
print("ok", r.usage.total_tokens, m.usage.output_tokens)
"""


def _clean_env() -> dict[str, str]:
    prefixes = ("OTEL_", "OPENAI_", "ANTHROPIC_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _env(server: ProviderServer, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("OTEL_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "AWS_", "DEMO_")
        )
    }
    env.update(
        OPENAI_API_KEY="test",
        ANTHROPIC_API_KEY="test",
        OPENAI_BASE_URL=server.openai_base_url,
        ANTHROPIC_BASE_URL=server.anthropic_base_url,
        OTEL_SERVICE_NAME="auto-instrument-test",
        OTEL_LOGS_EXPORTER="none",
    )
    env.update(extra)
    return env


def test_opentelemetry_instrument_exports_usage_and_cost_over_otlp(
    server: ProviderServer, otlp: _OtlpReceiver, tmp_path: Path
) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = _env(
        server,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url,
        OTEL_METRIC_EXPORT_INTERVAL="60000",
    )
    done = run_instrumented(app, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")

    spans = {s.name: _attrs(s.attributes) for s in otlp.spans()}
    openai_span = spans["chat gpt-4o-mini"]
    assert openai_span["gen_ai.provider.name"] == "openai"
    assert openai_span["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert openai_span["gen_ai.billing.pricing_status"] == "priced"
    assert openai_span["gen_ai.billing.price_id"] == "genai-prices:openai/gpt-4o-mini"
    assert float(openai_span["gen_ai.billing.cost.decimal"]) > 0
    # anthropic 2.x makes its own call span; our billing attributes are on it, and it is
    # the only span of the call that carries usage.
    anthropic_spans = [
        a for n, a in spans.items() if "claude" in str(a.get("gen_ai.request.model"))
    ]
    assert len(anthropic_spans) == 1
    assert anthropic_spans[0]["gen_ai.billing.pricing_status"] == "priced"
    assert anthropic_spans[0]["gen_ai.usage.cost.currency"] == "USD"

    tokens = otlp.metric_points("gen_ai.billing.tokens")
    by_model: dict[str, int] = {}
    for p in tokens:
        model = _attrs(p.attributes)["gen_ai.response.model"]
        by_model[model] = by_model.get(model, 0) + p.as_int
    assert (
        by_model["gpt-4o-mini-2024-07-18"]
        == openai_span["gen_ai.usage.input_tokens"] + (openai_span["gen_ai.usage.output_tokens"])
    )
    assert otlp.metric_points("gen_ai.client.token.usage")
    assert otlp.metric_points("gen_ai.billing.cost")


def test_demo_runs_offline_and_prints_a_cost_summary(server: ProviderServer) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("OTEL_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "AWS_", "DEMO_")
        )
    }
    done = run([str(BIN / "otel-tokens"), "demo"], env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "bundled local server" in done.stdout
    assert "otel-tokens cost summary" in done.stderr
    summary = done.stderr[done.stderr.index("otel-tokens cost summary") :]
    assert "total: " in summary and " USD over 9 call(s)" in summary
    assert "estimated" in summary  # the stream without usage was counted locally
    assert "unpriced" not in summary
    # The Gemini and Bedrock calls, plain and streamed, against their fakes: metered with the
    # fakes' usage (10 input, 5 output tokens) and priced.
    for call, model in (
        ("generate_content gemini-2.5-flash", "gemini-2.5-flash"),
        ("chat us.amazon.nova-micro-v1:0", "amazon.nova-micro-v1:0"),
    ):
        rows = [line[len(call) :].split() for line in summary.splitlines() if line.startswith(call)]
        assert len(rows) == 2, summary
        for row in rows:  # model, input, cached, cache write, output, reasoning, cost, currency
            assert row[:6] == [model, "10", "0", "0", "5", "0"], summary
            assert Decimal(row[6]) > 0 and row[7:] == ["USD"], summary
