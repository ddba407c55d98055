"""The deployment assets in collector/: OpenTelemetry Collector config, compose stack,
Prometheus scrape config and alert rules, Grafana provisioning and dashboard.

Structural checks parse every file and cross-check them (pipelines, mounts, host names,
ports, datasource uids, the README's list of PromQL). The key test runs the dashboard's and
the alerts' PromQL on a real Prometheus (Debian package ``prometheus``) that scrapes a real
pricing collector fed with known token points over OTLP/HTTP by the OpenTelemetry SDK, and
checks every number against the exact prices of the tokens sent.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from _points import chat_point_attrs
from _processes import stop
from otel_tokens import semconv as sc
from otel_tokens.pricing import price
from otel_tokens.usage import TokenUsage

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "collector"
COMPOSE = ASSETS / "compose.yaml"
OTELCOL = ASSETS / "otelcol-config.yaml"
PROMETHEUS_YML = ASSETS / "prometheus.yml"
ALERTS = ASSETS / "alerts.yml"
DASHBOARD = ASSETS / "grafana" / "dashboards" / "otel-tokens.json"
DATASOURCES = ASSETS / "grafana" / "provisioning" / "datasources"
DASHBOARD_PROVIDERS = ASSETS / "grafana" / "provisioning" / "dashboards"
README = ASSETS / "README.md"

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
NO_PROMETHEUS = (
    "the prometheus binary is not installed (Debian: apt-get install -y prometheus); "
    "the dashboard and alert PromQL cannot be run against a real Prometheus"
)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def dashboard_targets() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def all_promql() -> list[str]:
    exprs = [t["expr"] for _, t in dashboard_targets()]
    exprs += [rule["expr"] for rule in alert_rules()]
    return exprs


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


# --- structure ---------------------------------------------------------------------------


def test_every_asset_parses() -> None:
    files = sorted(ASSETS.rglob("*.y*ml"))
    assert {p.name for p in files} >= {
        "compose.yaml",
        "otelcol-config.yaml",
        "prometheus.yml",
        "alerts.yml",
    }
    for path in files:
        assert isinstance(load_yaml(path), dict), path
    for path in ASSETS.rglob("*.json"):
        assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict), path
    assert (ASSETS / "Dockerfile").is_file()
    assert README.is_file()


def _components(config: dict[str, Any], kind: str) -> dict[str, Any]:
    return config.get(kind) or {}


def test_otelcol_config() -> None:
    config = load_yaml(OTELCOL)
    receivers = _components(config, "receivers")
    processors = _components(config, "processors")
    exporters = _components(config, "exporters")
    extensions = _components(config, "extensions")
    service = config["service"]
    pipelines = service["pipelines"]

    # Current component types only (no `logging`, `jaeger`, `prometheusremotewrite` typos).
    known = {
        "receivers": {"otlp"},
        "processors": {"batch", "memory_limiter", "filter", "transform", "attributes"},
        "exporters": {"otlp", "otlphttp", "prometheus", "debug"},
        "extensions": {"health_check", "file_storage", "pprof", "zpages"},
    }
    for kind, types in known.items():
        for name in _components(config, kind):
            assert name.split("/")[0] in types, f"{kind}: unexpected component {name}"

    assert set(receivers["otlp"]["protocols"]) == {"grpc", "http"}
    assert receivers["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    assert receivers["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")

    # Every component a pipeline names is defined; every defined one is used.
    used: dict[str, set[str]] = defaultdict(set)
    for name, pipeline in pipelines.items():
        assert name.split("/")[0] in {"traces", "metrics", "logs"}, name
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in _components(config, kind), f"{name}: {component} undefined"
                used[kind].add(component)
        procs = pipeline.get("processors", [])
        assert procs[0] == "memory_limiter", f"{name}: memory_limiter must come first"
        assert "batch" in procs, f"{name}: no batch processor"
    for kind in ("receivers", "processors", "exporters"):
        assert used[kind] == set(_components(config, kind)), f"unused {kind}"
    assert set(service.get("extensions", [])) == set(extensions)

    def exporters_of(signal: str) -> set[str]:
        return {
            e
            for name, p in pipelines.items()
            if name.split("/")[0] == signal
            for e in p["exporters"]
        }

    assert exporters_of("traces") == {"otlp/jaeger"}
    assert exporters["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert exporters_of("metrics") == {"prometheus", "otlphttp/pricing"}
    assert exporters_of("logs") == {"debug"}
    assert exporters["prometheus"]["endpoint"] == "0.0.0.0:8889"

    pricing = exporters["otlphttp/pricing"]
    assert pricing["endpoint"] == "http://otel-tokens-collector:4318"
    assert pricing["retry_on_failure"]["enabled"] is True
    assert pricing["retry_on_failure"]["max_elapsed_time"] == 0  # never drop a batch
    queue = pricing["sending_queue"]
    assert queue["enabled"] is True
    assert queue["storage"] in extensions, "the pricing queue must be persistent"
    assert extensions[queue["storage"]]["directory"]

    # The pricing pipeline keeps gen_ai.billing.tokens and drops everything else.
    pricing_pipeline = next(p for p in pipelines.values() if "otlphttp/pricing" in p["exporters"])
    filters = [processors[p] for p in pricing_pipeline["processors"] if p.startswith("filter")]
    assert len(filters) == 1
    conditions = filters[0]["metrics"]["metric"]
    assert conditions == [f'name != "{sc.METRIC_BILLING_TOKENS}"']


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def _mount_source(volume: str | dict[str, Any]) -> tuple[str, str]:
    if isinstance(volume, dict):
        return str(volume["source"]), str(volume["target"])
    parts = volume.split(":")
    return parts[0], parts[1]


def test_compose_stack() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"otelcol", "jaeger", "prometheus", "grafana", "otel-tokens-collector"} <= set(services)
    named_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dep in service.get("depends_on", []) or []:
            assert dep in services, f"{name} depends on unknown service {dep}"
        for port in service.get("ports", []):
            assert re.fullmatch(r"(\d+\.\d+\.\d+\.\d+:)?\d+:\d+(/(tcp|udp))?", str(port)), port
        for volume in service.get("volumes", []):
            source, target = _mount_source(volume)
            assert target.startswith("/"), (name, volume)
            if source.startswith((".", "/")):
                path = (COMPOSE.parent / source).resolve()
                assert path.exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in named_volumes, f"{name}: volume {source} is not declared"

    def mounted(service: str, target: str) -> Path:
        for volume in services[service]["volumes"]:
            source, tgt = _mount_source(volume)
            if tgt == target:
                return (COMPOSE.parent / source).resolve()
        raise AssertionError(f"{service} mounts nothing at {target}")

    # Each service gets the files this directory holds, where it reads them.
    otelcol = services["otelcol"]
    config_arg = next(a for a in otelcol["command"] if a.startswith("--config="))
    assert mounted("otelcol", config_arg.split("=", 1)[1]) == OTELCOL.resolve()
    queue_dir = load_yaml(OTELCOL)["extensions"]["file_storage/pricing_queue"]["directory"]
    assert any(_mount_source(v)[1] == queue_dir for v in otelcol["volumes"])
    prom_cmd = services["prometheus"]["command"]
    prom_config = next(a for a in prom_cmd if a.startswith("--config.file="))
    prom_config_path = prom_config.split("=", 1)[1]
    assert mounted("prometheus", prom_config_path) == PROMETHEUS_YML.resolve()
    for rule_file in load_yaml(PROMETHEUS_YML)["rule_files"]:
        target = str(Path(prom_config_path).parent / rule_file)
        assert mounted("prometheus", target) == (ASSETS / rule_file).resolve()
    assert mounted("grafana", "/etc/grafana/provisioning") == (ASSETS / "grafana/provisioning")
    provider_paths = {
        p["options"]["path"]
        for f in DASHBOARD_PROVIDERS.glob("*.y*ml")
        for p in load_yaml(f)["providers"]
    }
    assert len(provider_paths) == 1
    assert mounted("grafana", provider_paths.pop()) == DASHBOARD.parent.resolve()

    # Host names in the configs are compose services, on the ports those services serve.
    otel_cfg = load_yaml(OTELCOL)
    hosts = [otel_cfg["exporters"]["otlp/jaeger"]["endpoint"]]
    hosts.append(
        urllib.parse.urlsplit(otel_cfg["exporters"]["otlphttp/pricing"]["endpoint"]).netloc
    )
    for job in load_yaml(PROMETHEUS_YML)["scrape_configs"]:
        for static in job["static_configs"]:
            hosts += static["targets"]
    for f in DATASOURCES.glob("*.y*ml"):
        hosts += [urllib.parse.urlsplit(d["url"]).netloc for d in load_yaml(f)["datasources"]]
    for hostport in hosts:
        host = hostport.split(":")[0]
        assert host in services, f"{hostport} is not a compose service"
    collector = services["otel-tokens-collector"]
    cmd = collector["command"]
    assert cmd[cmd.index("--http-endpoint") + 1] == "0.0.0.0:4318"
    assert "otelcol:8889" in hosts and "otel-tokens-collector:4318" in hosts

    # The pricing collector: built from this repository, ledger on a volume, health-checked
    # (otelcol waits for it), SQLite by default with a PostgreSQL alternative spelled out.
    build = collector["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == (ASSETS / "Dockerfile").resolve()
    env = collector["environment"]
    assert env["OTEL_TOKENS_LEDGER"].startswith("sqlite:////var/lib/otel-tokens/")
    assert any(_mount_source(v)[1] == "/var/lib/otel-tokens" for v in collector["volumes"])
    assert "healthz" in " ".join(collector["healthcheck"]["test"])
    deps = services["otelcol"]["depends_on"]
    assert deps["otel-tokens-collector"]["condition"] == "service_healthy"
    text = COMPOSE.read_text(encoding="utf-8")
    assert re.search(r"^\s*#\s*postgres:\s*$", text, re.MULTILINE)
    assert re.search(r"^\s*#\s*OTEL_TOKENS_LEDGER: postgresql://", text, re.MULTILINE)


def test_dockerfile() -> None:
    text = (ASSETS / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r'pip install "\.\[collector,postgres\]"', text)
    assert 'ENTRYPOINT ["python", "-m", "otel_tokens.collector"]' in text
    assert 'VOLUME ["/var/lib/otel-tokens"]' in text
    ignore = (ASSETS / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    for needed in ("pyproject.toml", "README.md", "src/"):
        assert f"!{needed}" in ignore
        assert needed.rstrip("/") in text


def test_collector_flags_exist() -> None:
    """The flags the Dockerfile and compose.yaml pass are the collector's own."""
    out = subprocess.run(
        [sys.executable, "-m", "otel_tokens.collector", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    service = _compose()["services"]["otel-tokens-collector"]
    dockerfile = (ASSETS / "Dockerfile").read_text(encoding="utf-8")
    cmd_line = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
    flags = [a for a in service["command"] + json.loads(cmd_line[4:]) if a.startswith("--")]
    for flag in flags:
        assert re.search(rf"(^|\s){re.escape(flag)}\b", out), f"collector has no {flag}"
    for var in service["environment"]:
        assert var in out, f"the collector documents no {var}"


# --- scale-out: the loadbalancing exporter in front of pricing replicas on one PostgreSQL ---
OTELCOL_LB = ASSETS / "otelcol-loadbalancing.yaml"
COMPOSE_SCALE = ASSETS / "compose-scale.yaml"


def _replica_services(services: dict[str, Any]) -> list[str]:
    return sorted(n for n in services if n.startswith("otel-tokens-collector-"))


def test_loadbalancing_config() -> None:
    config = load_yaml(OTELCOL_LB)
    extensions = _components(config, "extensions")
    processors = _components(config, "processors")
    exporters = _components(config, "exporters")
    pipelines = config["service"]["pipelines"]
    for kind, types in {
        "receivers": {"otlp"},
        "processors": {"batch", "memory_limiter", "filter"},
        "exporters": {"loadbalancing", "debug"},
        "extensions": {"health_check", "file_storage"},
    }.items():
        for name in _components(config, kind):
            assert name.split("/")[0] in types, f"{kind}: unexpected component {name}"
    used: dict[str, set[str]] = defaultdict(set)
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in _components(config, kind), f"{name}: {component} undefined"
                used[kind].add(component)
        assert pipeline["processors"][0] == "memory_limiter", name
        assert "batch" in pipeline["processors"], name
    for kind in ("receivers", "processors", "exporters"):
        assert used[kind] == set(_components(config, kind)), f"unused {kind}"
    assert set(config["service"]["extensions"]) == set(extensions)

    (name,) = [e for e in exporters if e.split("/")[0] == "loadbalancing"]
    lb = exporters[name]
    # A cumulative stream stays on one replica (no waiting on another's mark locks).
    assert lb["routing_key"] == "streamID"
    # Retried (and re-routed) at the load balancer, for ever, from a queue on disk: the
    # pricing collector's ingestion is idempotent, so a retry never bills twice.
    assert lb["retry_on_failure"]["enabled"] is True
    assert lb["retry_on_failure"]["max_elapsed_time"] == 0
    queue = lb["sending_queue"]
    assert queue["enabled"] is True
    assert extensions[queue["storage"]]["directory"]
    otlp = lb["protocol"]["otlp"]
    assert "endpoint" not in otlp  # the resolver's
    assert otlp["tls"]["insecure"] is True
    hostnames = lb["resolver"]["static"]["hostnames"]
    assert len(hostnames) >= 2
    assert all(re.fullmatch(r"[a-z0-9-]+:4317", h) for h in hostnames), hostnames

    # Only gen_ai.billing.tokens goes to the pricing replicas.
    (pricing,) = [p for p in pipelines.values() if name in p["exporters"]]
    assert pricing["exporters"] == [name]
    filters = [processors[p] for p in pricing["processors"] if p.startswith("filter")]
    assert [f["metrics"]["metric"] for f in filters] == [[f'name != "{sc.METRIC_BILLING_TOKENS}"']]


def test_compose_scale_stack() -> None:
    compose = load_yaml(COMPOSE_SCALE)
    services = compose["services"]
    named_volumes = set(compose.get("volumes") or {})
    replicas = _replica_services(services)
    assert len(replicas) >= 2
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dep in service.get("depends_on", []) or []:
            assert dep in services, f"{name} depends on unknown service {dep}"
        for port in service.get("ports", []):
            assert re.fullmatch(r"(\d+\.\d+\.\d+\.\d+:)?\d+:\d+(/(tcp|udp))?", str(port)), port
        for volume in service.get("volumes", []):
            source, target = _mount_source(volume)
            assert target.startswith("/"), (name, volume)
            if source.startswith((".", "/")):
                assert (COMPOSE_SCALE.parent / source).resolve().exists(), (name, source)
            else:
                assert source in named_volumes, f"{name}: volume {source} is not declared"

    # otelcol runs the loadbalancing config, its queue on a volume, and routes to exactly
    # the replicas of this file, on their OTLP/gRPC port.
    otelcol = services["otelcol"]
    config_arg = next(a for a in otelcol["command"] if a.startswith("--config="))
    mounts = dict(reversed(_mount_source(v)) for v in otelcol["volumes"])
    assert (COMPOSE_SCALE.parent / mounts[config_arg.split("=", 1)[1]]).resolve() == OTELCOL_LB
    lb_config = load_yaml(OTELCOL_LB)
    queue_dir = lb_config["extensions"]["file_storage/pricing_queue"]["directory"]
    assert queue_dir in mounts
    lb = lb_config["exporters"]["loadbalancing/pricing"]
    assert sorted(h.split(":")[0] for h in lb["resolver"]["static"]["hostnames"]) == replicas
    for replica in replicas:
        assert otelcol["depends_on"][replica]["condition"] == "service_healthy"

    # Every replica: this repository's image, gRPC on 4317, one PostgreSQL ledger (the
    # compose service), health-checked, after PostgreSQL is ready.
    ledgers = set()
    for replica in replicas:
        service = services[replica]
        assert (COMPOSE_SCALE.parent / service["build"]["context"]).resolve() == ROOT
        cmd = service["command"]
        assert cmd[cmd.index("--grpc-endpoint") + 1] == "0.0.0.0:4317"
        url = service["environment"]["OTEL_TOKENS_LEDGER"]
        assert urllib.parse.urlsplit(url).scheme == "postgresql"
        ledgers.add(url)
        assert "healthz" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert len(ledgers) == 1
    host = urllib.parse.urlsplit(ledgers.pop()).hostname
    assert host == "postgres" and "healthcheck" in services["postgres"]

    # The flags the replicas pass are the collector's own.
    out = subprocess.run(
        [sys.executable, "-m", "otel_tokens.collector", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for flag in (a for a in services[replicas[0]]["command"] if a.startswith("--")):
        assert re.search(rf"(^|\s){re.escape(flag)}\b", out), f"collector has no {flag}"


def test_prometheus_config() -> None:
    config = load_yaml(PROMETHEUS_YML)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["otelcol"]["honor_labels"] is True
    assert jobs["otelcol"]["static_configs"][0]["targets"] == ["otelcol:8889"]
    assert jobs["otel-tokens-collector"]["static_configs"][0]["targets"] == [
        "otel-tokens-collector:4318"
    ]
    assert jobs["otel-tokens-collector"].get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == ["alerts.yml"]
    # The alerts name the pricing collector by the job this file gives it.
    for rule in alert_rules():
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, (rule["alert"], job)


def test_alert_rules_structure() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["expr"].strip()
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert {
        "LLMSpendSpike",
        "LLMUnpricedTokens",
        "OtelTokensLedgerErrors",
        "OtelTokensRejectedPoints",
    } <= set(names)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt install prometheus)")
def test_promtool_checks() -> None:
    assert PROMTOOL is not None
    for args in (["check", "rules", str(ALERTS)], ["check", "config", str(PROMETHEUS_YML)]):
        result = subprocess.run(
            [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_and_dashboard() -> None:
    sources = [d for f in DATASOURCES.glob("*.y*ml") for d in load_yaml(f)["datasources"]]
    uids = {d["uid"]: d for d in sources}
    assert uids["prometheus"]["type"] == "prometheus"
    assert uids["prometheus"]["url"] == "http://prometheus:9090"
    for f in DASHBOARD_PROVIDERS.glob("*.y*ml"):
        for provider in load_yaml(f)["providers"]:
            assert provider["type"] == "file"

    board = dashboard()
    assert board["uid"] and board["title"]
    variables = {v["name"] for v in board["templating"]["list"]}
    for v in board["templating"]["list"]:
        assert v["datasource"]["uid"] in uids
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in board["panels"]]
    assert len(titles) == len(set(titles))
    builtin = {"__range", "__interval", "__rate_interval"}
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["description"].strip(), panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], f"{panel['title']} has no targets"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] in uids
            for var in re.findall(r"\$\{?(\w+)", target["expr"]):
                assert var in builtin or var in variables, (panel["title"], var)
    # The panels the dashboard is for.
    for needed in (
        "Total spend",
        "Spend by model",
        "Spend by tenant",
        "Spend by feature",
        "Tokens by bucket",
        "Unpriced tokens and calls",
        "Cache savings",
    ):
        assert needed in titles, needed


def test_readme_lists_every_expression() -> None:
    readme = squash(README.read_text(encoding="utf-8"))
    for expr in all_promql():
        if squash(expr) not in readme:
            pytest.fail(f"collector/README.md does not list:\n{expr}")


# --- metric names: ours, and the OpenTelemetry Collector's translation of the apps' ---------

# Upstream GenAI metrics, which semconv/model/metrics.yaml does not redefine.
UPSTREAM_METRICS = {
    sc.METRIC_CLIENT_TOKEN_USAGE: ("histogram", "{token}"),
    sc.METRIC_CLIENT_OPERATION_DURATION: ("histogram", "s"),
    sc.METRIC_CLIENT_TIME_TO_FIRST_CHUNK: ("histogram", "s"),
}
_UNIT_SUFFIX = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}


def prometheus_name(name: str, instrument: str, unit: str) -> str:
    """The contrib `prometheus` exporter's default name translation
    (UnderscoreEscapingWithSuffixes): invalid characters to `_`, units in braces dropped,
    other units appended as words, `_total` on monotonic counters."""
    out = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    out = re.sub(r"__+", "_", out).strip("_")
    if unit and not unit.startswith("{"):
        suffix = _UNIT_SUFFIX.get(unit, re.sub(r"[^a-zA-Z0-9]", "", unit))
        if suffix and not out.endswith("_" + suffix):
            out += "_" + suffix
    if instrument == "counter":
        out += "_total"
    return out


def prometheus_label(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def app_metrics() -> dict[str, tuple[str, str]]:
    """Prometheus name -> (OpenTelemetry name, instrument) of every application metric."""
    model = load_yaml(ROOT / "semconv" / "model" / "metrics.yaml")
    metrics = {
        g["metric_name"]: (g["instrument"], g["unit"])
        for g in model["groups"]
        if g.get("type") == "metric"
    }
    metrics.update(UPSTREAM_METRICS)
    return {
        prometheus_name(name, instrument, unit): (name, instrument)
        for name, (instrument, unit) in metrics.items()
    }


def test_promql_names_real_series() -> None:
    """Every series the PromQL reads is one the pricing collector serves (its source) or
    the OpenTelemetry Collector makes of a metric our instrumentation emits."""
    collector_source = "".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "src/otel_tokens/collector").glob("*.py")
    )
    apps = app_metrics()
    attribute_labels = {
        prometheus_label(value)
        for key, value in vars(sc).items()
        if key.isupper() and isinstance(value, str) and value.startswith("gen_ai.")
    }
    for expr in all_promql():
        for name in re.findall(r"\b((?:otel_tokens|gen_ai|otelcol)_\w+)", expr):
            if name.startswith("otel_tokens_"):
                assert f'"{name}"' in collector_source, f"the pricing collector serves no {name}"
            elif name.startswith("gen_ai_"):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if base in apps and base != name:
                    assert apps[base][1] == "histogram", name
                if name not in apps and base not in apps:
                    # Not a metric: then a label, an attribute key with dots as underscores.
                    assert name in attribute_labels, f"{name} is no metric or attribute of ours"


# --- the key test: the PromQL against a real Prometheus and a real pricing collector ------

PROVIDER_MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "acme": "acme-llm-1"}
# (provider, tenant, feature, {bucket: tokens}); batch 2 comes after batch 1 was scraped.
BATCH_1 = [
    ("openai", "acme", "chat", {"input": 1000, "cache_read": 4000, "output": 200}),
    (
        "anthropic",
        "globex",
        "search",
        {"input": 2000, "cache_read": 10000, "cache_write_5m": 500, "output": 300},
    ),
    ("acme", "acme", "chat", {"input": 700, "output": 50}),  # no price: unpriced tokens
]
BATCH_2 = [
    ("openai", "acme", "chat", {"input": 500, "cache_read": 2000, "output": 100}),
    ("openai", "globex", "search", {"input": 300, "output": 30}),  # a series born in batch 2
    ("anthropic", "acme", "chat", {"input": 100, "cache_read": 900, "output": 10}),
    ("acme", "acme", "chat", {"input": 100}),
]

Key = tuple[str, str, str, str, str]  # provider, model (as priced), bucket, tenant, feature


def expected_records(
    batches: list[list[tuple[str, str, str, dict[str, int]]]],
) -> tuple[dict[Key, int], dict[Key, Decimal]]:
    """Tokens and exact cost of what the collector writes for ``batches``, per series."""
    tokens: dict[Key, int] = defaultdict(int)
    cost: dict[Key, Decimal] = defaultdict(Decimal)
    for batch in batches:
        for provider, tenant, feature, buckets in batch:
            for bucket, n in buckets.items():
                model = PROVIDER_MODELS[provider]
                result = price(TokenUsage(**{bucket: n}), model, provider=provider)
                key = (provider, result.model, bucket, tenant, feature)
                tokens[key] += n
                if result.total is not None:
                    cost[key] += result.amounts[bucket]
    return dict(tokens), dict(cost)


def group(values: dict[Key, Any], *fields: str) -> dict[tuple[str, ...], float]:
    index = {"provider": 0, "model": 1, "bucket": 2, "tenant": 3, "feature": 4}
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for key, value in values.items():
        out[tuple(key[index[f]] for f in fields)] += float(value)
    return dict(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(what: str, check: Callable[[], Any], timeout: float, proc: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        try:
            last = check()
        except (OSError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        status, body = http_get(url)
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise AssertionError(f"{path} {params}: {status} {data.get('error', data)}")
        return data["data"]

    def query(self, expr: str, at: float | None = None) -> dict[tuple[str, ...], float]:
        """Instant vector as {sorted label items: value}."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        assert data["resultType"] == "vector", data["resultType"]
        return {_labels(r["metric"]): float(r["value"][1]) for r in data["result"]}

    def query_range_sums(
        self, expr: str, start: float, end: float, step: float
    ) -> dict[tuple[str, ...], float]:
        data = self.api(
            "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}"
        )
        return {
            _labels(r["metric"]): math.fsum(float(v) for _, v in r["values"])
            for r in data["result"]
        }


def _labels(metric: dict[str, str]) -> tuple[str, ...]:
    return tuple(v for _, v in sorted((k, v) for k, v in metric.items() if k != "__name__"))


def grafana(expr: str, **values: str) -> str:
    """``expr`` with Grafana's variables replaced the way Grafana would."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise AssertionError(f"no value for ${name} in {expr}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


# What the OpenTelemetry Collector's `prometheus` exporter serves for one application's
# metrics (service.name demo-app), in two phases; made with the naming rules above.
APP_RESOURCE = {"job": "demo-app", "instance": "demo-1", "otel_scope_name": "otel_tokens"}
UNPRICED_POINT = {
    sc.GEN_AI_OPERATION_NAME: "chat",
    sc.GEN_AI_PROVIDER_NAME: "acme",
    sc.GEN_AI_REQUEST_MODEL: "acme-llm-1",
    sc.BILLING_PROCESSING: "standard",
    sc.BILLING_CONTEXT_TIER: "base",
    sc.BILLING_USAGE_SOURCE: "provider",
    sc.BILLING_PRICING_STATUS: "unpriced",
}
APP_UNPRICED_CALLS = {1: 2, 2: 5}
# Token-usage observations per phase (cumulative): {token type: [(value, count)]}. Phase 1
# lies below the bucket phase 2 fills, so every bucket that grows has the same start value
# and rate() extrapolates them alike: the quantiles come out exact.
APP_TOKEN_USAGE = {
    1: {"input": [(200, 5)], "output": [(3, 2)]},
    2: {"input": [(200, 5), (700, 10)], "output": [(3, 2), (10, 10)]},
}


def app_exposition(phase: int) -> str:
    def labels(attrs: dict[str, Any]) -> str:
        items = {**APP_RESOURCE, **{prometheus_label(k): str(v) for k, v in attrs.items()}}
        return ",".join(f'{k}="{v}"' for k, v in sorted(items.items()))

    unpriced = prometheus_name(sc.METRIC_BILLING_UNPRICED, "counter", "{call}")
    usage = prometheus_name(sc.METRIC_CLIENT_TOKEN_USAGE, "histogram", "{token}")
    lines = [
        f"# TYPE {unpriced} counter",
        f"{unpriced}{{{labels(UNPRICED_POINT)}}} {APP_UNPRICED_CALLS[phase]}",
        f"# TYPE {usage} histogram",
    ]
    common = {sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_PROVIDER_NAME: "openai"}
    for token_type, observations in APP_TOKEN_USAGE[phase].items():
        attrs = {**common, sc.GEN_AI_TOKEN_TYPE: token_type}
        for le in [*sc.TOKEN_USAGE_BUCKETS, "+Inf"]:
            count = sum(n for v, n in observations if le == "+Inf" or v <= float(le))
            lines.append(f'{usage}_bucket{{{labels(attrs)},le="{le}"}} {count}')
        total = sum(v * n for v, n in observations)
        lines.append(f"{usage}_sum{{{labels(attrs)}}} {total}")
        lines.append(f"{usage}_count{{{labels(attrs)}}} {sum(n for _, n in observations)}")
    return "\n".join(lines) + "\n"


class AppMetricsServer:
    """Serves ``app_exposition(phase)`` on /metrics, like the collector's exporter."""

    def __init__(self) -> None:
        self.phase = 1
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = app_exposition(outer.phase).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def billing_point(provider: str, tenant: str, feature: str, bucket: str) -> dict[str, Any]:
    """A gen_ai.billing.tokens point's attributes, as the instrumentation records them."""
    extra = {sc.BILLING_TENANT_ID: tenant, sc.BILLING_FEATURE: feature}
    return chat_point_attrs(provider, PROVIDER_MODELS[provider], bucket, **extra)


class Stack:
    prom: Prometheus
    t_start: float  # before any token point was sent
    t_mid: float  # after batch 1 was scraped, before batch 2 was sent
    t_eval: float  # after batch 2 was scraped


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if PROMETHEUS is None:
        pytest.skip(NO_PROMETHEUS)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    tmp = tmp_path_factory.mktemp("deployment")
    collector_port, prom_port = free_port(), free_port()
    collector: subprocess.Popen[bytes] | None = None
    prometheus: subprocess.Popen[bytes] | None = None
    app = AppMetricsServer()
    meter_provider: Any = None
    logs = {name: open(tmp / f"{name}.log", "wb") for name in ("collector", "prometheus")}  # noqa: SIM115
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        collector = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otel_tokens.collector",
                "--http-endpoint",
                f"127.0.0.1:{collector_port}",
                "--grpc-endpoint",
                "none",
                "--ledger",
                f"sqlite:///{tmp}/l.db",
            ],
            stdout=logs["collector"],
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env=env,
        )
        collector_url = f"http://127.0.0.1:{collector_port}"
        wait_for(
            "the pricing collector's /healthz",
            lambda: http_get(f"{collector_url}/healthz", 1)[0] == 200,
            30,
            collector,
        )

        # Prometheus with our prometheus.yml and alerts.yml, pointed at the test's targets
        # and scraping (and evaluating rules) every second.
        config = load_yaml(PROMETHEUS_YML)
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(ALERTS)]
        targets = {
            "otel-tokens-collector": f"127.0.0.1:{collector_port}",
            "otelcol": f"127.0.0.1:{app.port}",
        }
        config["scrape_configs"] = [
            {**job, "static_configs": [{"targets": [targets[job["job_name"]]]}]}
            for job in config["scrape_configs"]
            if job["job_name"] in targets
        ]
        assert len(config["scrape_configs"]) == len(targets)
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        prometheus = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=logs["prometheus"],
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
        prom = Prometheus(f"http://127.0.0.1:{prom_port}")
        wait_for(
            "Prometheus /-/ready",
            lambda: http_get(f"{prom.base}/-/ready", 1)[0] == 200,
            30,
            prometheus,
        )
        wait_for(
            "both targets up",
            lambda: set(prom.query("up == 1")) == {(targets[j], j) for j in targets},
            15,
            prometheus,
        )

        stack = Stack()
        stack.prom = prom
        stack.t_start = time.time()

        exporter = OTLPMetricExporter(endpoint=f"{collector_url}/v1/metrics", timeout=10)
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        meter_provider = MeterProvider(
            metric_readers=[reader],
            resource=Resource.create({"service.name": "deployment-test"}),
        )
        counter = meter_provider.get_meter("otel_tokens").create_counter(
            sc.METRIC_BILLING_TOKENS, unit="{token}"
        )

        def send(batch: list[tuple[str, str, str, dict[str, int]]]) -> None:
            for provider, tenant, feature, buckets in batch:
                for bucket, n in buckets.items():
                    counter.add(n, billing_point(provider, tenant, feature, bucket))
            assert meter_provider.force_flush(10_000)

        def scraped(batches: list[Any]) -> bool:
            tokens, _ = expected_records(batches)
            got = prom.query("sum(otel_tokens_tokens_total)")
            return got == {(): float(sum(tokens.values()))}

        send(BATCH_1)
        # One point the collector must reject (an unknown bucket): for the rejected alert.
        counter.add(5, billing_point("openai", "acme", "chat", "no_such_bucket"))
        assert meter_provider.force_flush(10_000)
        wait_for("batch 1 in Prometheus", lambda: scraped([BATCH_1]), 15, prometheus)
        stack.t_mid = time.time()
        time.sleep(0.5)
        app.phase = 2
        send(BATCH_2)
        wait_for("batch 2 in Prometheus", lambda: scraped([BATCH_1, BATCH_2]), 15, prometheus)
        wait_for(
            "the applications' phase 2 in Prometheus",
            lambda: (
                prom.query("sum(gen_ai_billing_unpriced_total)")
                == {(): float(APP_UNPRICED_CALLS[2])}
            ),
            15,
            prometheus,
        )
        stack.t_eval = round(time.time(), 3)
        yield stack
    finally:
        if meter_provider is not None:
            meter_provider.shutdown(timeout_millis=5_000)
        stop(prometheus)
        stop(collector)
        app.close()
        for f in logs.values():
            f.close()
        for name in logs:
            log = (tmp / f"{name}.log").read_text(errors="replace")
            if "Traceback" in log or "level=error" in log:
                print(f"--- {name} log ---\n{log[-4000:]}")


def test_dashboard_promql_on_real_prometheus(stack: Stack) -> None:
    """Every panel's PromQL, with Grafana's variables filled in, gives the exact numbers of
    the tokens sent: totals over the whole range, batch 2 alone over the range that starts
    between the batches, and per-interval bars that add up to the totals."""
    prom = stack.prom
    tokens_all, cost_all = expected_records([BATCH_1, BATCH_2])
    tokens_b2, cost_b2 = expected_records([BATCH_2])
    # Window that covers everything, and window that starts between the two batches.
    windows = {
        "all": ("1h", tokens_all, cost_all),
        "batch2": (f"{int((stack.t_eval - stack.t_mid) * 1000)}ms", tokens_b2, cost_b2),
    }
    step = 1.0
    n_steps = math.ceil(stack.t_eval - stack.t_start) + 2
    start = stack.t_eval - n_steps * step
    everyone = {"tenant": ".*", "feature": ".*"}

    def instant(expr: str, window: str, **variables: str) -> dict[tuple[str, ...], float]:
        values = {**everyone, "__range": window, **variables}
        return prom.query(grafana(expr, **values), at=stack.t_eval)

    def bars(expr: str) -> dict[tuple[str, ...], float]:
        values = {**everyone, "__interval": f"{step:g}s", "__rate_interval": "4s"}
        return prom.query_range_sums(grafana(expr, **values), start, stack.t_eval, step)

    def close(got: dict[tuple[str, ...], float], want: dict[tuple[str, ...], float]) -> None:
        assert set(got) == set(want), (got, want)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, got, want)

    def savings(
        tokens: dict[Key, int], cost: dict[Key, Decimal], *fields: str
    ) -> dict[tuple[str, ...], float]:
        # Input price per token from the lifetime counters, applied to the window's reads.
        def per_model(values: dict[Key, Any], bucket: str) -> dict[tuple[str, ...], float]:
            return group({k: v for k, v in values.items() if k[2] == bucket}, "provider", "model")

        in_cost, in_tok = per_model(cost_all, "input"), per_model(tokens_all, "input")
        reads, paid = per_model(tokens, "cache_read"), per_model(cost, "cache_read")
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for pm, n in reads.items():
            if pm in in_cost:
                saved = n * in_cost[pm] / in_tok[pm] - paid.get(pm, 0.0)
                labels = {"provider": pm[0], "model": pm[1], "currency": "USD"}
                out[tuple(labels[f] for f in sorted(fields))] += saved
        assert all(v > 0 for v in out.values())
        return dict(out)

    checked: set[str] = set()
    for panel, target in dashboard_targets():
        title, expr = panel["title"], target["expr"]
        checked.add(title)
        if target.get("instant"):
            for _, (window, tokens, cost) in windows.items():
                got = instant(expr, window)
                if title == "Total spend":
                    want = {("USD",): float(sum(cost.values()))}
                elif title == "Spend by tenant":
                    want = {("USD", t): v for (t,), v in group(cost, "tenant").items()}
                elif title == "Spend by feature":
                    want = {("USD", f): v for (f,), v in group(cost, "feature").items()}
                elif title == "Billable tokens":
                    want = {(): float(sum(tokens.values()))}
                elif title == "Unpriced tokens":
                    unpriced = sum(n for k, n in tokens.items() if k not in cost_all)
                    want = {(): float(unpriced)}
                elif title == "Cache savings":
                    want = {("USD",): sum(savings(tokens, cost, "currency").values())}
                elif title == "Cache savings by model":
                    want = savings(tokens, cost, "provider", "model", "currency")
                elif title == "Budgets running out":
                    want = {}  # the stack's applications declare no budget
                else:
                    raise AssertionError(f"no expectation for the panel {title!r}")
                close(got, want)
            if "tenant" in expr:  # the dashboard variables filter
                one = instant(expr, "1h", tenant="globex")
                if title == "Spend by tenant":
                    close(one, {("USD", "globex"): group(cost_all, "tenant")[("globex",)]})
                elif title == "Total spend":
                    only = {k: v for k, v in cost_all.items() if k[3] == "globex"}
                    close(one, {("USD",): float(sum(only.values()))})
        else:
            got = bars(expr)
            if title == "Spend by model":
                want = {
                    ("USD", m, p): v for (p, m), v in group(cost_all, "provider", "model").items()
                }
                close(got, want)
            elif title == "Tokens by bucket":
                close(got, {(b,): v for (b,), v in group(tokens_all, "bucket").items()})
            elif title == "Unpriced tokens and calls" and "otel_tokens" in expr:
                unpriced = {k: v for k, v in tokens_all.items() if k not in cost_all}
                want = {
                    (b, m, p): v
                    for (p, m, b), v in group(unpriced, "provider", "model", "bucket").items()
                }
                close(got, want)
            elif title == "Unpriced tokens and calls":
                close(got, {("unpriced", "acme", "acme-llm-1"): APP_UNPRICED_CALLS[2]})
            elif title == "Tokens per call (p50, p95)":
                # Phase 2 added 10 input calls of 700 tokens (bucket 256-1024) and 10
                # output calls of 10 tokens (bucket 4-16): linear interpolation inside.
                q = 0.5 if "(0.5," in expr else 0.95
                values = {"__rate_interval": "1h"}
                got = prom.query(grafana(expr, **values), at=stack.t_eval)
                close(got, {("input",): 256 + 768 * q, ("output",): 4 + 12 * q})
            elif title.startswith("Pricing collector"):
                got = prom.query(grafana(expr, __rate_interval="1h"), at=stack.t_eval)
                if "requests" in expr:
                    assert set(got) == {("200", "http")}, got
                    assert got[("200", "http")] > 0
                elif "rejected" in expr:
                    assert got[()] > 0
                else:
                    assert got == {(): 0.0}
            else:
                raise AssertionError(f"no expectation for the panel {title!r}")
    assert checked == {p["title"] for p in dashboard()["panels"]}


def test_dashboard_variables_on_real_prometheus(stack: Stack) -> None:
    tokens, _ = expected_records([BATCH_1, BATCH_2])
    for variable in dashboard()["templating"]["list"]:
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
        assert m, variable["definition"]
        values = stack.prom.api(f"label/{m.group(2)}/values", **{"match[]": m.group(1)})
        index = {"tenant": 3, "feature": 4}[m.group(2)]
        assert set(values) == {k[index] for k in tokens}


def test_alert_rules_on_real_prometheus(stack: Stack) -> None:
    """The rules load and evaluate without errors; the unpriced-tokens and rejected-points
    alerts go off, the others stay quiet."""
    prom = stack.prom

    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        fresh = all(not r.get("lastEvaluation", "0001").startswith("0001") for r in rules)
        return rules if fresh and rules else None

    rules = wait_for("rule evaluation", evaluated, 15)
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))

    def states() -> dict[str, set[tuple[str, ...]]]:
        out: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        for alert in prom.api("alerts")["alerts"]:
            if alert["state"] in ("pending", "firing"):
                labels = alert["labels"]
                out[labels["alertname"]].add((labels.get("model", ""), labels.get("bucket", "")))
        return dict(out)

    want = {
        "LLMUnpricedTokens": {("acme-llm-1", "input"), ("acme-llm-1", "output")},
        "OtelTokensRejectedPoints": {("", "")},
    }
    wait_for("the unpriced and rejected alerts", lambda: states() == want, 15)
    # Each alert expression also answers as a plain query.
    for rule in alert_rules():
        prom.query(rule["expr"], at=stack.t_eval)
