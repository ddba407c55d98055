"""otel-tokens: billable LLM token usage on OpenTelemetry.

Exact billable tokens per call (`TokenUsage`), exact `Decimal` prices over a versioned catalog
(`price`, `Catalog`), and OpenTelemetry instrumentation that records both.

Names are imported on first use: ``opentelemetry-instrument`` loads our instrumentors through
this package, and an application's start-up should not wait for the price catalog.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .attribution import attribute
    from .middleware import AttributionMiddleware, WSGIAttributionMiddleware
    from .pricing import (
        Catalog,
        PriceFileError,
        PriceResult,
        PricingStatus,
        Processing,
        default_catalog,
        price,
        set_default_catalog,
    )
    from .usage import (
        InvalidUsageError,
        TokenUsage,
        UsageSource,
        from_anthropic,
        from_gemini,
        from_openai_chat,
        from_openai_responses,
    )
    from .window import ContextWindowExceeded, Preflight, fit_messages, preflight

# Imported now, unlike the rest: importing the submodule later (the instrumentation does, on
# the first call) would otherwise leave the module, not the function, under this name.
from .workflow import workflow

_HOMES = {
    "attribute": ".attribution",
    "AttributionMiddleware": ".middleware",
    "WSGIAttributionMiddleware": ".middleware",
    "Catalog": ".pricing",
    "PriceFileError": ".pricing",
    "PriceResult": ".pricing",
    "PricingStatus": ".pricing",
    "Processing": ".pricing",
    "default_catalog": ".pricing",
    "price": ".pricing",
    "set_default_catalog": ".pricing",
    "InvalidUsageError": ".usage",
    "TokenUsage": ".usage",
    "UsageSource": ".usage",
    "from_anthropic": ".usage",
    "from_gemini": ".usage",
    "from_openai_chat": ".usage",
    "from_openai_responses": ".usage",
    "ContextWindowExceeded": ".window",
    "Preflight": ".window",
    "fit_messages": ".window",
    "preflight": ".window",
}


def flush(timeout: float = 5.0) -> bool:
    """Does nothing, and says so: every call is recorded when it ends, on the thread that
    ends it. Kept for code written when calls were recorded on a background thread."""
    return True


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'otel_tokens' has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # once: later lookups are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AttributionMiddleware",
    "Catalog",
    "ContextWindowExceeded",
    "InvalidUsageError",
    "Preflight",
    "PriceFileError",
    "PriceResult",
    "PricingStatus",
    "Processing",
    "TokenUsage",
    "UsageSource",
    "WSGIAttributionMiddleware",
    "attribute",
    "default_catalog",
    "fit_messages",
    "flush",
    "from_anthropic",
    "from_gemini",
    "from_openai_chat",
    "from_openai_responses",
    "preflight",
    "price",
    "set_default_catalog",
    "workflow",
]
