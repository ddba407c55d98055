"""Which GenAI semantic-convention names to emit, from ``OTEL_SEMCONV_STABILITY_OPT_IN``.

The OpenTelemetry Python instrumentations read this comma-separated list once per process;
its value ``gen_ai_latest_experimental`` means "emit the latest GenAI conventions and not the
old names". Without it we emit the latest names *and* the deprecated names they replace, so
dashboards and queries built on the old names keep working through the transition
(docs/semconv-transition.md).
"""

from __future__ import annotations

import functools
import os

OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
GEN_AI_LATEST_EXPERIMENTAL = "gen_ai_latest_experimental"


def latest_only_from(value: str | None) -> bool:
    """``value`` (the variable's text) asks for the latest GenAI names only."""
    if not value:
        return False
    return GEN_AI_LATEST_EXPERIMENTAL in (token.strip() for token in value.split(","))


@functools.cache
def latest_only() -> bool:
    """This process asked for the latest GenAI names only (read once, like upstream)."""
    return latest_only_from(os.environ.get(OPT_IN_ENV))
