"""What a request asks of the OpenAI/Anthropic fake: its scenarios and control headers
(see the package docstring), and the reply text they shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

DEFAULT_REPLY: Final = "Hello! This is a deterministic reply from the otel-tokens demo server."


DEFAULT_THINKING: Final = "Let me think about what the user is asking and answer it clearly."


SCENARIOS: Final = frozenset(
    {
        "ok",
        "cache",
        "rate_limit",
        "rate_limit_once",
        "server_error",
        "server_error_once",
        "internal_error",
        "bad_request",
        "auth_error",
        "drop_mid_stream",
        "stream_error",
        "slow_stream",
        "web_search",
        "tool_call",
        "no_stream_usage",
    }
)


DEFAULT_SLOW_DELAY: Final = 0.05


_N = TypeVar("_N", int, float)


def _number_header(headers: Mapping[str, str], name: str, kind: type[_N]) -> _N | None:
    """The header's value as a number, at least zero; ``None`` when absent or not a number."""
    value = headers.get(name)
    if value is None or not value.strip():
        return None
    try:
        return max(kind(0), kind(value.strip()))
    except ValueError:
        return None


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    return _number_header(headers, name, int)


def _float_header(headers: Mapping[str, str], name: str) -> float | None:
    return _number_header(headers, name, float)


@dataclass(frozen=True)
class Controls:
    scenarios: frozenset[str]
    unknown: tuple[str, ...]
    cached_tokens: int | None
    cache_write_tokens: int | None
    cache_write_long: int | None
    cache_write_12h: int | None
    reasoning_tokens: int | None
    output_tokens: int | None
    reply: str | None
    served_model: str | None
    web_search_requests: int
    stream_delay: float
    latency: float
    drop_after: int | None
    retry_after: float
    retry_count: int

    @classmethod
    def parse(
        cls, headers: Mapping[str, str], body: Any, default_scenarios: frozenset[str], delay: float
    ) -> Controls:
        raw: str | None = headers.get("x-test-scenario")
        if raw is None and isinstance(body, dict):
            metadata = body.get("metadata")
            if isinstance(metadata, dict) and isinstance(metadata.get("test_scenario"), str):
                raw = metadata["test_scenario"]
        names: set[str]
        if raw is None:
            names = set(default_scenarios)
        else:
            names = {part.strip().lower() for part in raw.split(",") if part.strip()}
        unknown = tuple(sorted(n for n in names if n not in SCENARIOS))
        names -= set(unknown)
        names.discard("ok")
        stream_delay_ms = _float_header(headers, "x-test-stream-delay-ms")
        if stream_delay_ms is not None:
            stream_delay = stream_delay_ms / 1000.0
        elif "slow_stream" in names:
            stream_delay = delay
        else:
            stream_delay = 0.0
        latency_ms = _float_header(headers, "x-test-latency-ms")
        retry_after = _float_header(headers, "x-test-retry-after")
        searches = _int_header(headers, "x-test-web-search-requests")
        return cls(
            scenarios=frozenset(names),
            unknown=unknown,
            cached_tokens=_int_header(headers, "x-test-cached-tokens"),
            cache_write_tokens=_int_header(headers, "x-test-cache-write-tokens"),
            cache_write_long=_int_header(headers, "x-test-cache-write-1h"),
            cache_write_12h=_int_header(headers, "x-test-cache-write-12h"),
            reasoning_tokens=_int_header(headers, "x-test-reasoning-tokens"),
            output_tokens=_int_header(headers, "x-test-output-tokens"),
            reply=headers.get("x-test-reply"),
            served_model=(headers.get("x-test-served-model") or None),
            web_search_requests=2 if searches is None else searches,
            stream_delay=stream_delay,
            latency=(latency_ms or 0.0) / 1000.0,
            drop_after=_int_header(headers, "x-test-drop-after"),
            retry_after=1.0 if retry_after is None else retry_after,
            retry_count=_int_header(headers, "x-stainless-retry-count") or 0,
        )

    def has(self, name: str) -> bool:
        return name in self.scenarios

    def reply_pieces(self) -> list[str]:
        words = (DEFAULT_REPLY if self.reply is None else self.reply).split()
        if self.output_tokens is not None:
            base = words or DEFAULT_REPLY.split()
            words = [base[i % len(base)] for i in range(self.output_tokens)]
        return [w if i == 0 else " " + w for i, w in enumerate(words)]


def thinking_words(count: int) -> list[str]:
    base = DEFAULT_THINKING.split()
    return [base[i % len(base)] if i == 0 else " " + base[i % len(base)] for i in range(count)]


def split_pieces(text: str, size: int = 6) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]
