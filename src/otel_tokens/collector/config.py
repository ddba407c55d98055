"""Collector settings: one dataclass, filled from flags > environment > YAML file > defaults."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..ledger import DEFAULT_LEDGER_URL, ENV_LEDGER
from ..pricing import ENV_PRICES

DEFAULT_HTTP_ENDPOINT = "127.0.0.1:4318"
DEFAULT_GRPC_ENDPOINT = "127.0.0.1:4317"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_QUEUE = 16  # batches in flight; each may hold a decoded body in memory
DEFAULT_RETRY_AFTER = 1.0
DEFAULT_UPSTREAM_TIMEOUT = 10.0
# Longest time to receive one request body: a sender slower than that gets 408, so it holds
# its connection (and the bytes it sent) no longer than this.
DEFAULT_BODY_TIMEOUT = 30.0
# Processes serving the ports (--workers); 1: the collector runs in the one process.
DEFAULT_WORKERS = 1
MAX_WORKERS = 64
# Series whose reading is kept in memory per process (about 1.5 KB each): more active
# series than this are read again at each of their points.
DEFAULT_SERIES_CACHE = 200_000

ENV_CONFIG = "OTEL_TOKENS_COLLECTOR_CONFIG"
# Environment variable of each setting (the two shared with the rest of otel-tokens first).
ENV_VARS: Mapping[str, str] = {
    "ledger": ENV_LEDGER,
    "prices": ENV_PRICES,
    "http_endpoint": "OTEL_TOKENS_COLLECTOR_HTTP_ENDPOINT",
    "grpc_endpoint": "OTEL_TOKENS_COLLECTOR_GRPC_ENDPOINT",
    "upstream": "OTEL_TOKENS_COLLECTOR_UPSTREAM",
    "upstream_headers": "OTEL_TOKENS_COLLECTOR_UPSTREAM_HEADERS",
    "upstream_timeout": "OTEL_TOKENS_COLLECTOR_UPSTREAM_TIMEOUT",
    "max_body_bytes": "OTEL_TOKENS_COLLECTOR_MAX_BODY_BYTES",
    "max_queue": "OTEL_TOKENS_COLLECTOR_MAX_QUEUE",
    "body_timeout": "OTEL_TOKENS_COLLECTOR_BODY_TIMEOUT",
    "retry_after": "OTEL_TOKENS_COLLECTOR_RETRY_AFTER",
    "tokens": "OTEL_TOKENS_COLLECTOR_TOKENS",
    "tokens_file": "OTEL_TOKENS_COLLECTOR_TOKENS_FILE",
    "tls_cert": "OTEL_TOKENS_COLLECTOR_TLS_CERT",
    "tls_key": "OTEL_TOKENS_COLLECTOR_TLS_KEY",
    "workers": "OTEL_TOKENS_COLLECTOR_WORKERS",
    "series_cache": "OTEL_TOKENS_COLLECTOR_SERIES_CACHE",
}


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class CollectorConfig:
    """Everything the collector needs to run (see ``otel-tokens collector --help``).

    ``tokens`` maps each accepted bearer token to the tenant it is bound to (or None for a
    token that may write any tenant and read ``/metrics``). No tokens: no authentication.
    An endpoint of None disables that listener.
    """

    ledger: str = DEFAULT_LEDGER_URL
    prices: str | None = None
    http_endpoint: str | None = DEFAULT_HTTP_ENDPOINT
    grpc_endpoint: str | None = DEFAULT_GRPC_ENDPOINT
    upstream: str | None = None
    upstream_headers: Mapping[str, str] = field(default_factory=dict)
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_queue: int = DEFAULT_MAX_QUEUE
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    retry_after: float = DEFAULT_RETRY_AFTER
    tokens: Mapping[str, str | None] = field(default_factory=dict)
    tls_cert: str | None = None
    tls_key: str | None = None
    workers: int = DEFAULT_WORKERS
    series_cache: int = DEFAULT_SERIES_CACHE

    def __post_init__(self) -> None:
        for name in ("http_endpoint", "grpc_endpoint"):  # "none" disables, as on the CLI
            object.__setattr__(self, name, _endpoint_value(getattr(self, name)))
        if self.http_endpoint is None and self.grpc_endpoint is None:
            raise ConfigError("both the HTTP and the gRPC endpoint are disabled")
        for name in ("http_endpoint", "grpc_endpoint"):
            value = getattr(self, name)
            if value is not None:
                parse_endpoint(value, name)
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if self.max_queue < 1:
            raise ConfigError(f"max_queue must be at least 1, got {self.max_queue}")
        if not 0 < self.body_timeout <= 3600:
            raise ConfigError(f"body_timeout must be in (0, 3600] seconds, got {self.body_timeout}")
        if not 0 < self.retry_after <= 3600:
            raise ConfigError(f"retry_after must be in (0, 3600] seconds, got {self.retry_after}")
        if not 0 < self.upstream_timeout <= 600:
            raise ConfigError(f"upstream_timeout must be in (0, 600], got {self.upstream_timeout}")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"workers must be in [1, {MAX_WORKERS}], got {self.workers}")
        if self.series_cache < 0:
            raise ConfigError(f"series_cache must be 0 (off) or more, got {self.series_cache}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key go together: give both or neither")
        if self.upstream is not None and not re.match(r"^https?://[^/]+", self.upstream):
            raise ConfigError(f"upstream must be an http:// or https:// URL, got {self.upstream!r}")
        for token in self.tokens:
            if not token or any(c.isspace() for c in token):
                raise ConfigError("a token must be non-empty and contain no whitespace")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs)."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def parse_endpoint(text: str, what: str = "endpoint") -> tuple[str, int]:
    """``host:port`` (``[::1]:4318`` for IPv6) -> (host, port); port 0 picks a free port."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", text.strip())
    if not m:
        raise ConfigError(f"{what} must be HOST:PORT (or 'none'), got {text!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if port > 65535:
        raise ConfigError(f"{what}: port {port} is out of range")
    return host, port


def parse_size(value: Any, what: str = "max_body_bytes") -> int:
    """A byte count: ``8388608``, ``8MiB``, ``512KiB``, ``8M``, ``1G``."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a size, got {value!r}")
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(i?B)?\s*", str(value), re.IGNORECASE)
    if not m:
        raise ConfigError(f"{what} must be a size such as 8388608 or 8MiB, got {value!r}")
    unit = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[m.group(2).upper()]
    return int(m.group(1)) * unit


def _number(value: Any, what: str, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None


def parse_token(text: str) -> tuple[str, str | None]:
    """``TOKEN`` or ``TOKEN=TENANT``, split at the last ``=`` (tenants contain no ``=``).

    A token ending in ``=`` (base64 padding) with no tenant is taken whole; to bind such a
    token write ``abc===tenant`` (token ``abc==``).
    """
    text = text.strip()
    token, sep, tenant = text.rpartition("=")
    if not sep or not tenant or not token:
        return text, None
    return token, tenant


def parse_tokens(value: Any, what: str = "tokens") -> dict[str, str | None]:
    """Tokens from a list of ``TOKEN[=TENANT]``, a mapping token -> tenant, or a string of
    ``TOKEN[=TENANT]`` separated by commas or whitespace (the environment form)."""
    if value is None:
        return {}
    out: dict[str, str | None] = {}
    if isinstance(value, Mapping):
        for token, tenant in value.items():
            if tenant is not None and not isinstance(tenant, str):
                raise ConfigError(f"{what}: the tenant of a token must be a string")
            out[str(token)] = tenant or None
        return out
    items = re.split(r"[\s,]+", value) if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(f"{what} must be a list of TOKEN[=TENANT], got {type(value).__name__}")
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{what}: each entry must be a string TOKEN[=TENANT]")
        if item.strip():
            token, tenant = parse_token(item)
            out[token] = tenant
    return out


def read_tokens_file(path: str) -> dict[str, str | None]:
    """One ``TOKEN[=TENANT]`` per line; blank lines and ``#`` comments are ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read tokens file {path}: {exc}") from exc
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return parse_tokens([line for line in lines if line], f"tokens file {path}")


def parse_headers(value: Any, what: str = "upstream_headers") -> dict[str, str]:
    """``K=V`` list, ``K=V,K2=V2`` string, or a mapping."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(f"{what} must be a list of NAME=VALUE")
    out = {}
    for item in items:
        name, sep, val = str(item).partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{what}: expected NAME=VALUE, got {item!r}")
        out[name.strip()] = val.strip()
    return out


_KEYS = {f.name for f in fields(CollectorConfig)} | {"tokens_file"}
_FILE_KEYS = ("prices", "tokens_file", "tls_cert", "tls_key")


def _endpoint_value(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in ("", "none", "off", "disabled") else text


def _convert(key: str, value: Any) -> Any:
    """One raw setting (string from the environment, YAML scalar or list) -> typed value."""
    if key in ("http_endpoint", "grpc_endpoint"):
        return _endpoint_value(value)
    if key == "max_body_bytes":
        return parse_size(value)
    if key in ("max_queue", "workers", "series_cache"):
        return _number(value, key, int)
    if key in ("retry_after", "upstream_timeout", "body_timeout"):
        return _number(value, key, float)
    if key == "tokens":
        return parse_tokens(value)
    if key == "upstream_headers":
        return parse_headers(value)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value or None


def load_file(path: str) -> dict[str, Any]:
    """The YAML config file: a mapping with the settings' names (``-`` or ``_``); the
    paths it gives (prices, tokens_file, tls_cert, tls_key) are relative to it."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    out = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in _KEYS:
            raise ConfigError(
                f"config file {path}: unknown setting {raw_key!r} "
                f"(known: {', '.join(sorted(_KEYS))})"
            )
        out[key] = value
    base = Path(path).parent
    for key in _FILE_KEYS:  # file paths in the file are relative to the file
        value = out.get(key)
        if isinstance(value, str) and value:
            out[key] = str(base / value)
    return out


def resolve(
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> CollectorConfig:
    """Merge settings: ``flags`` (None = not given) > environment > config file > defaults.

    ``tokens`` and ``tokens_file`` each follow that precedence; the tokens in force are
    those of both together.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    path = config_file or environ.get(ENV_CONFIG)
    if path:
        raw.update(load_file(path))
    for key, var in ENV_VARS.items():
        if var in environ:
            raw[key] = environ[var]
    for key, value in flags.items():
        if value is not None and key in _KEYS:
            raw[key] = value
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key != "tokens_file":
            values[key] = _convert(key, value)
    tokens_file = raw.get("tokens_file")
    if tokens_file:
        values["tokens"] = {**read_tokens_file(str(tokens_file)), **values.get("tokens", {})}
    if values.get("ledger") is None:
        values.pop("ledger", None)
    return CollectorConfig(**values)
