"""otel-tokens: billable LLM token usage on OpenTelemetry.

Exact billable tokens per call (`TokenUsage`), exact `Decimal` prices over a versioned catalog
(`price`, `Catalog`), and OpenTelemetry instrumentation that records both.
"""

from ._background import flush
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
from .workflow import workflow

__all__ = [
    "AttributionMiddleware",
    "Catalog",
    "InvalidUsageError",
    "PriceFileError",
    "PriceResult",
    "PricingStatus",
    "Processing",
    "TokenUsage",
    "UsageSource",
    "WSGIAttributionMiddleware",
    "attribute",
    "default_catalog",
    "flush",
    "from_anthropic",
    "from_gemini",
    "from_openai_chat",
    "from_openai_responses",
    "price",
    "set_default_catalog",
    "workflow",
]
