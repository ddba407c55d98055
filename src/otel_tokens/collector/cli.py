"""``otel-tokens collector``: the argparse subcommand (wired into the main CLI by
`add_parser`) and its run loop."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from .._arguments import EXIT_BAD_INPUT, EXIT_LISTEN, Subparsers, add_command
from ..ledger import LedgerError
from ..pricing import PriceFileError
from .config import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_GRPC_ENDPOINT,
    DEFAULT_HTTP_ENDPOINT,
    DEFAULT_MAX_QUEUE,
    DEFAULT_RETRY_AFTER,
    DEFAULT_SERIES_CACHE,
    DEFAULT_UPSTREAM_TIMEOUT,
    DEFAULT_WORKERS,
    ENV_CONFIG,
    ENV_VARS,
    ConfigError,
    redact,
    resolve,
)


def _epilog() -> str:
    flags = {"tokens": "token", "upstream_headers": "upstream-header"}
    envs = "\n".join(
        f"  {var:<42} --{flags.get(key, key.replace('_', '-'))}" for key, var in ENV_VARS.items()
    )
    return f"""\
precedence: command-line flags > environment variables > --config file > defaults.

environment variables:
  {ENV_CONFIG:<42} --config
{envs}
  (OTEL_TOKENS_COLLECTOR_TOKENS: TOKEN[=TENANT] separated by commas or spaces;
   OTEL_TOKENS_COLLECTOR_UPSTREAM_HEADERS: NAME=VALUE separated by commas)

config file (YAML, the names above with - or _; tokens and upstream-headers are lists;
paths are relative to the file), for example:
  ledger: postgresql://otel@db/billing
  prices: /etc/otel-tokens/prices.yaml
  http-endpoint: 0.0.0.0:4318
  grpc-endpoint: none
  upstream: http://otel-collector:4318
  max-body-bytes: 8MiB
  tokens: [s3cret-admin, s3cret-acme=acme]
  tokens-file: tokens.txt
  tls-cert: cert.pem
  tls-key: key.pem
  workers: 2

authentication: with no token configured, every request is accepted. Otherwise every OTLP
request needs "Authorization: Bearer TOKEN" (gRPC metadata "authorization"), else 401 /
UNAUTHENTICATED. A token bound to a tenant (TOKEN=TENANT) writes only that tenant:
gen_ai.billing.* points without gen_ai.billing.tenant.id get it, points naming another
tenant are rejected (partial success). GET /metrics then needs an unbound token.
"""


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Register ``collector`` on the ``otel-tokens`` subparsers."""
    p = add_command(subparsers, "collector", run, epilog=_epilog(), raw=True)
    p.add_argument("--config", metavar="FILE", help="YAML file with the settings below")
    p.add_argument(
        "--ledger",
        metavar="URL",
        help="ledger: sqlite:///path.db or postgresql://user@host/db "
        "(default: sqlite:///otel-tokens-ledger.db in the working directory)",
    )
    p.add_argument("--prices", metavar="FILE", help="user price file (contracts, discounts)")
    p.add_argument(
        "--http-endpoint",
        metavar="HOST:PORT",
        help=f"OTLP/HTTP, /metrics and /healthz listener, or 'none' "
        f"(default: {DEFAULT_HTTP_ENDPOINT}; port 0 picks a free port)",
    )
    p.add_argument(
        "--grpc-endpoint",
        metavar="HOST:PORT",
        help=f"OTLP/gRPC listener, or 'none' (default: {DEFAULT_GRPC_ENDPOINT})",
    )
    p.add_argument(
        "--upstream",
        metavar="URL",
        help="OTLP/HTTP base URL to forward to (metrics plus cost metrics, traces, logs), "
        "e.g. http://otel-collector:4318; /v1/<signal> is appended (default: none)",
    )
    p.add_argument(
        "--upstream-header",
        metavar="NAME=VALUE",
        action="append",
        dest="upstream_headers",
        help="header sent to the upstream (repeatable)",
    )
    p.add_argument(
        "--upstream-timeout",
        metavar="SECONDS",
        help=f"timeout of one forward (default: {DEFAULT_UPSTREAM_TIMEOUT:g})",
    )
    p.add_argument(
        "--max-body-bytes",
        metavar="SIZE",
        help="largest request body, compressed and decompressed, e.g. 8MiB (default: 8MiB); "
        "larger: 413 / RESOURCE_EXHAUSTED",
    )
    p.add_argument(
        "--max-queue",
        metavar="N",
        help=f"batches in flight at once; beyond: 503 / UNAVAILABLE with Retry-After "
        f"(default: {DEFAULT_MAX_QUEUE})",
    )
    p.add_argument(
        "--body-timeout",
        metavar="SECONDS",
        help="longest time to receive one HTTP request body; slower: 408, connection closed "
        f"(default: {DEFAULT_BODY_TIMEOUT:g})",
    )
    p.add_argument(
        "--retry-after",
        metavar="SECONDS",
        help=f"delay advertised with retryable answers (default: {DEFAULT_RETRY_AFTER:g})",
    )
    p.add_argument(
        "--token",
        metavar="TOKEN[=TENANT]",
        action="append",
        dest="tokens",
        help="accepted bearer token, optionally bound to a tenant (repeatable)",
    )
    p.add_argument(
        "--tokens-file",
        metavar="FILE",
        help="file of TOKEN[=TENANT] lines (# comments); adds to --token",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="PEM certificate (chain) for HTTP and gRPC")
    p.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    p.add_argument(
        "--workers",
        metavar="N",
        help="processes serving the same ports, each pricing on its own core: N = the cores "
        "to use; /metrics sums them all; with SQLite one still writes at a time "
        f"(default: {DEFAULT_WORKERS}, the collector in this one process)",
    )
    p.add_argument(
        "--series-cache",
        metavar="N",
        help="series whose reading each process keeps in memory, about 1.5 KB each; "
        f"0: none (default: {DEFAULT_SERIES_CACHE:,})",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level, to stderr (default: INFO)",
    )
    return p


_FLAG_KEYS = (
    "ledger",
    "prices",
    "http_endpoint",
    "grpc_endpoint",
    "upstream",
    "upstream_headers",
    "upstream_timeout",
    "max_body_bytes",
    "max_queue",
    "body_timeout",
    "retry_after",
    "tokens",
    "tokens_file",
    "tls_cert",
    "tls_key",
    "workers",
    "series_cache",
)


def run(args: argparse.Namespace) -> int:
    """run the pricing collector (OTLP receiver -> ledger, Prometheus /metrics)

    Receive OTLP metrics from OpenTelemetry SDKs and Collectors (OTLP/HTTP protobuf or JSON,
    gzip; OTLP/gRPC), price every gen_ai.billing.tokens point, write exactly-once cost records
    to the ledger, and forward the metrics plus a gen_ai.billing.ledger.cost metric to an
    upstream OTLP/HTTP endpoint.

    A batch is acknowledged only after its ledger transaction has committed; when overloaded or
    when the ledger (or the upstream) is down the collector answers HTTP 503 with Retry-After,
    gRPC UNAVAILABLE with RetryInfo, so clients retry and nothing is lost or billed twice.
    Rejected points (NaN, negative, absurd counts, unknown buckets, another tenant's points,
    repeated attribute keys, keys or values over 256 characters) are reported as OTLP partial
    success and logged at INFO (rate-limited); malformed bodies get a 4xx and write nothing.
    Limits on memory, time and /metrics series: docs/collector-limits.md.

    Traces and logs (/v1/traces, /v1/logs, and the gRPC TraceService and LogsService) are
    forwarded untouched to --upstream; without an upstream they are acknowledged with an empty
    response and dropped.

    The HTTP port also serves GET /metrics (Prometheus text: otel_tokens_cost_total,
    otel_tokens_tokens_total, otel_tokens_unpriced_tokens_total, otel_tokens_ingest_*) and
    GET /healthz (200, or 503 while the ledger is down).

    --workers N runs N processes on the same ports under one supervisor (docs/collector.md,
    "Several cores: --workers"); SIGTERM to it drains them all.
    """
    # Runs until SIGTERM or SIGINT, then drains in-flight batches and exits 0.
    try:
        from .service import Collector
    except ImportError as exc:
        print(
            f"otel-tokens collector: {exc}; install the collector extra: "
            "pip install 'otel-tokens[collector]'",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT

    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = resolve({k: getattr(args, k, None) for k in _FLAG_KEYS}, None, args.config)
    except ConfigError as exc:
        print(f"otel-tokens collector: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if config.workers > 1:
        from .workers import supervise

        return supervise(config)
    collector = Collector(config)
    try:
        collector.start()
    except (ConfigError, LedgerError, PriceFileError) as exc:
        print(f"otel-tokens collector: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"otel-tokens collector: {exc}", file=sys.stderr)
        return EXIT_LISTEN
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"otel-tokens collector ready: http={collector.http_url or 'none'} "
        f"grpc={collector.grpc_target or 'none'} ledger={redact(config.ledger)}",
        flush=True,
    )
    while not stop.wait(0.5):
        pass
    collector.stop()
    print("otel-tokens collector stopped", flush=True)
    return 0
