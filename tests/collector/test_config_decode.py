"""Settings (flags > environment > file > defaults), tokens, the CLI, and body decoding."""

from __future__ import annotations

import argparse
import gzip
import json
import zlib
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from otel_tokens.collector import CollectorConfig, ConfigError
from otel_tokens.collector import decode as d
from otel_tokens.collector.__main__ import main
from otel_tokens.collector.cli import add_parser
from otel_tokens.collector.config import parse_size, parse_token, redact, resolve


def test_defaults() -> None:
    config = resolve({}, {}, None)
    assert config == CollectorConfig()
    assert config.ledger == "sqlite:///otel-tokens-ledger.db"
    assert config.http_endpoint == "127.0.0.1:4318"
    assert config.grpc_endpoint == "127.0.0.1:4317"
    assert config.max_body_bytes == 8 * 1024 * 1024
    assert config.tokens == {} and config.upstream is None


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    (tmp_path / "tokens.txt").write_text("# comment\nfile-token=globex\n\n")
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(
        "ledger: sqlite:///from-file.db\n"
        "http-endpoint: 0.0.0.0:9000\n"
        "grpc_endpoint: none\n"
        "max-body-bytes: 1MiB\n"
        "max-queue: 5\n"
        "upstream: http://file:4318\n"
        "tokens: [admin, t1=acme]\n"
        "tokens-file: tokens.txt\n"
    )
    env = {
        "OTEL_TOKENS_LEDGER": "sqlite:///from-env.db",
        "OTEL_TOKENS_COLLECTOR_MAX_QUEUE": "7",
        "OTEL_TOKENS_COLLECTOR_UPSTREAM": "http://env:4318",
    }
    config = resolve({"upstream": "https://flag:4318", "max_queue": None}, env, str(cfg))
    assert config.ledger == "sqlite:///from-env.db"  # env > file
    assert config.upstream == "https://flag:4318"  # flag > env
    assert config.max_queue == 7  # env > file; an absent flag does not count
    assert config.http_endpoint == "0.0.0.0:9000"  # file > default
    assert config.grpc_endpoint is None
    assert config.max_body_bytes == 1024 * 1024
    assert config.tokens == {"admin": None, "t1": "acme", "file-token": "globex"}
    # The config file can come from the environment too.
    assert resolve({}, {"OTEL_TOKENS_COLLECTOR_CONFIG": str(cfg)}).max_queue == 5


def test_bad_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ledgr: sqlite:///x.db\n")
    with pytest.raises(ConfigError, match="unknown setting 'ledgr'"):
        resolve({}, {}, str(cfg))
    for flags in (
        {"http_endpoint": "nohost"},
        {"http_endpoint": "none", "grpc_endpoint": "none"},
        {"max_queue": "0"},
        {"max_body_bytes": "lots"},
        {"tls_cert": "c.pem"},
        {"upstream": "ftp://x"},
    ):
        with pytest.raises(ConfigError):
            resolve(flags, {}, None)


def test_tokens_and_sizes() -> None:
    assert parse_token("abc") == ("abc", None)
    assert parse_token("abc=acme") == ("abc", "acme")
    assert parse_token("YWJj==") == ("YWJj==", None)  # base64 padding is not a tenant
    assert parse_token("YWJj===acme") == ("YWJj==", "acme")
    assert parse_size("8MiB") == 8 * 1024**2
    assert parse_size("512k") == 512 * 1024
    assert parse_size(1234) == 1234
    assert redact("postgresql://u:secret@db/x") == "postgresql://u:***@db/x"
    config = resolve({}, {"OTEL_TOKENS_COLLECTOR_TOKENS": "a=x, b  c=y"}, None)
    assert config.tokens == {"a": "x", "b": None, "c": "y"}


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="otel-tokens")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    with pytest.raises(SystemExit):
        parser.parse_args(["collector", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--ledger",
        "--prices",
        "--http-endpoint",
        "--grpc-endpoint",
        "--upstream",
        "--config",
        "--max-body-bytes",
        "--max-queue",
        "--body-timeout",
        "--token",
        "--tokens-file",
        "--tls-cert",
        "--tls-key",
        "precedence",
        "OTEL_TOKENS_LEDGER",
        "OTEL_TOKENS_PRICES",
        "/v1/traces",
        "Retry-After",
    ):
        assert flag in text, flag


def test_cli_config_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--http-endpoint", "bad", "--grpc-endpoint", "none"]) == 4
    assert "HOST:PORT" in capsys.readouterr().err


def test_cli_unusable_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["--ledger", "mysql://x", "--http-endpoint", "127.0.0.1:0", "--grpc-endpoint", "none"]
    )
    assert code == 4
    assert "unsupported ledger URL" in capsys.readouterr().err


# --- decoding --------------------------------------------------------------------------------
def test_media_types_and_encodings() -> None:
    assert d.media_type("application/x-protobuf") == d.PROTOBUF
    assert d.media_type("Application/JSON; charset=utf-8") == d.JSON
    for bad in (None, "", "text/plain", "application/grpc"):
        with pytest.raises(d.ClientError) as err:
            d.media_type(bad)
        assert err.value.status == 415
    with pytest.raises(d.ClientError) as err:
        d.check_encoding("zstd")
    assert err.value.status == 415


def test_bounded_decompression() -> None:
    data = b"x" * 10_000
    assert d.decompress(gzip.compress(data), "gzip", 10_000) == data
    assert d.decompress(zlib.compress(data), "deflate", 10_000) == data
    raw = zlib.compressobj(wbits=-15)
    assert d.decompress(raw.compress(data) + raw.flush(), "deflate", 10_000) == data
    two = gzip.compress(b"ab") + gzip.compress(b"cd")
    assert d.decompress(two, "gzip", 100) == b"abcd"  # multi-member gzip
    for body, enc, limit, status in (
        (gzip.compress(data), "gzip", 9_999, 413),
        (zlib.compress(b"\0" * 10**7), "deflate", 10**6, 413),
        (gzip.compress(data)[:-4], "gzip", 10**6, 400),
        (b"\x1f\x8b garbage", "gzip", 10**6, 400),
        (gzip.compress(data) + b"trailing", "gzip", 10**6, 400),
        (b"x" * 11, "identity", 10, 413),
    ):
        with pytest.raises(d.ClientError) as err:
            d.decompress(body, enc, limit)
        assert err.value.status == status


def test_json_hex_ids_become_bytes() -> None:
    body = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "m",
                                "sum": {
                                    "dataPoints": [
                                        {
                                            "asInt": "3",
                                            "timeUnixNano": "5",
                                            "exemplars": [
                                                {
                                                    "asInt": "1",
                                                    "traceId": "5b8efff798038103d269b633813fc60c",
                                                    "spanId": "eee19b7ec3c1b174",
                                                }
                                            ],
                                        }
                                    ]
                                },
                            }
                        ]
                    }
                ]
            }
        ]
    }
    msg = d.parse(json.dumps(body).encode(), d.JSON, ExportMetricsServiceRequest())
    point = msg.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
    assert point.as_int == 3 and point.time_unix_nano == 5
    ex = point.exemplars[0]
    assert ex.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert ex.span_id.hex() == "eee19b7ec3c1b174"
    assert d.encode(msg, d.JSON).startswith(b"{")


def test_malformed_bodies() -> None:
    for body, kind in (
        (b"\xff\xff\xff", d.PROTOBUF),
        (b"\xc3\x28{}", d.JSON),
        (b'{"resourceMetrics": 5}', d.JSON),
        (b"null", d.JSON),
        (b"[" * 50_000, d.JSON),
    ):
        with pytest.raises(d.ClientError) as err:
            d.parse(body, kind, ExportMetricsServiceRequest())
        assert err.value.status == 400


def test_labelled_counters_are_bounded() -> None:
    """Past MAX_LABELLED_SERIES label sets, new tenant/feature pairs fold into "other"."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from otel_tokens.collector import stats as stats_module
    from otel_tokens.records import CostRecord

    stats = stats_module.Stats()
    now = datetime.now(UTC)
    limit = stats_module.MAX_LABELLED_SERIES
    records = [
        CostRecord(
            stream_id=str(i),
            period_start=now,
            period_end=now,
            provider="openai",
            model="gpt-4o",
            bucket="input",
            quantity=1,
            currency="USD",
            catalog_version="v",
            pricing_status="priced",
            billed_cost=Decimal("0.01"),
            tenant=f"t{i}",
        )
        for i in range(limit + 50)
    ]
    stats.add_records(records)
    assert len(stats.tokens) == limit + 1
    assert stats.tokens[("openai", "gpt-4o", "input", "other", "other")] == 50
    assert sum(stats.tokens.values()) == limit + 50
    assert sum(stats.cost.values()) == Decimal("0.01") * (limit + 50)


def test_every_labelled_counter_is_bounded() -> None:
    """Distinct models (and tenants) beyond the limit fold too, in all three families, for
    priced and unpriced records alike; no token or cost is lost in the folding."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from otel_tokens.collector import stats as stats_module
    from otel_tokens.records import CostRecord

    stats = stats_module.Stats()
    now = datetime.now(UTC)
    limit = stats_module.MAX_LABELLED_SERIES
    n = 2 * limit + 5_000
    records = [
        CostRecord(
            stream_id=str(i),
            period_start=now,
            period_end=now,
            provider="openai",
            model=f"model-{i}",
            bucket="input" if i % 3 else "output",
            quantity=2,
            currency="USD",
            catalog_version="v",
            pricing_status="priced" if i % 2 else "unpriced",
            billed_cost=Decimal("0.01") if i % 2 else None,
            tenant=f"t{i}",
        )
        for i in range(n)
    ]
    stats.add_records(records)
    bound = limit + limit // 10 + 10  # the documented bound: about 1.1 x the limit
    for table in (stats.tokens, stats.cost, stats.unpriced):
        assert len(table) <= bound
    assert sum(stats.tokens.values()) == 2 * n
    assert sum(stats.unpriced.values()) == 2 * (n // 2)
    assert sum(stats.cost.values()) == Decimal("0.01") * (n - n // 2)
    assert stats.unpriced[("other", "other", "input")] > 0
    assert stats.tokens[("other", "other", "output", "other", "other")] > 0
    page = stats.render(0, 16, True)
    assert page.count("\n") < 3 * bound + 100


def test_body_timeout_setting(tmp_path: Path) -> None:
    assert resolve({}, {}, None).body_timeout == 30.0
    assert resolve({}, {"OTEL_TOKENS_COLLECTOR_BODY_TIMEOUT": "2.5"}, None).body_timeout == 2.5
    cfg = tmp_path / "c.yaml"
    cfg.write_text("body-timeout: 7\n")
    assert resolve({}, {}, str(cfg)).body_timeout == 7.0
    assert resolve({"body_timeout": "3"}, {}, str(cfg)).body_timeout == 3.0
    for bad in ("0", "-1", "soon", "3601"):
        with pytest.raises(ConfigError, match="body_timeout"):
            resolve({"body_timeout": bad}, {}, None)
