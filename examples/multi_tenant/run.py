"""Run the multi-tenant example end to end, offline by default.

    python examples/multi_tenant/run.py [--ledger sqlite:///example-ledger.db]
                                        [--otlp http://127.0.0.1:4318]

Starts the bundled provider server (unless OPENAI_API_KEY/ANTHROPIC_API_KEY are set),
instruments openai and anthropic with the budgets in budgets.yaml, serves requests for two
tenants through the ASGI app, writes cost records to the ledger with the in-process pricing
exporter, and prints the ledger report by tenant and model and the budget status. With
``--otlp`` the metrics also go to an OTLP endpoint (the collector stack in collector/, whose
Grafana dashboard then shows the same costs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", default="sqlite:///example-ledger.db")
    parser.add_argument("--otlp", help="also export metrics to this OTLP/HTTP endpoint")
    parser.add_argument("--requests", type=int, default=4, help="requests per tenant")
    args = parser.parse_args()

    server = None
    if not (os.environ.get("OPENAI_API_KEY") or os.environ.get("ANTHROPIC_API_KEY")):
        from otel_tokens_fakes import ProviderServer

        server = ProviderServer(stream_delay=0)
        server.start()
        os.environ.update(
            OPENAI_API_KEY="example",
            ANTHROPIC_API_KEY="example",
            OPENAI_BASE_URL=server.openai_base_url,
            ANTHROPIC_BASE_URL=server.anthropic_base_url,
            ANTHROPIC_OPEN_TELEMETRY="false",
        )
    os.environ.setdefault("OTEL_TOKENS_BUDGETS", str(HERE / "budgets.yaml"))
    # Budgets start from what this ledger says is used (a new process's memory store, a
    # new Redis), so a second run does not find globex's pool full again.
    os.environ["OTEL_TOKENS_LEDGER"] = args.ledger

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    from otel_tokens.exporter import PricingMetricExporter
    from otel_tokens.instrumentation import AnthropicInstrumentor, OpenAIInstrumentor

    wrapped = None
    if args.otlp:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        wrapped = OTLPMetricExporter(endpoint=args.otlp.rstrip("/") + "/v1/metrics")
    exporter = PricingMetricExporter(wrapped, ledger=args.ledger, wrap_from_env=False)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "multi-tenant-example"}),
    )
    OpenAIInstrumentor().instrument(meter_provider=provider)
    AnthropicInstrumentor().instrument(meter_provider=provider)

    sys.path.insert(0, str(HERE))
    from app import app

    async def drive() -> None:
        import httpx2

        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://example") as http:
            for i in range(args.requests):
                for tenant in ("acme", "globex"):
                    r = await http.post(
                        "/ask",
                        json={"question": f"Question {i} from {tenant}: what is a token?"},
                        headers={"x-tenant-id": tenant, "x-feature": "qa"},
                    )
                    print(
                        f"{tenant:>7} request {i}: HTTP {r.status_code}"
                        + (f"  {r.json()['error']}" if r.status_code != 200 else "")
                    )

    asyncio.run(drive())
    provider.shutdown()  # final export: the ledger now holds every call's cost
    if server is not None:
        server.stop()

    from otel_tokens.cli import main as cli

    print("\nCost by tenant and model (from the ledger):")
    cli(["report", "--ledger", args.ledger, "--by", "tenant,model"])
    print("\nBudgets:")
    cli(["budgets", "--ledger", args.ledger, "--budgets", os.environ["OTEL_TOKENS_BUDGETS"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
