"""What a ``gen_ai.billing.tokens`` point looks like, for the tests that make them by hand
(the exporter's, the ledger's and the collector's), in one place."""

from __future__ import annotations

from typing import Any

from otel_tokens import semconv as sc

# The attributes the instrumentation puts on every gen_ai.billing.tokens point of a
# gpt-4o call (the bucket, and any attribution, added by each test).
BASE_ATTRS: dict[str, str] = {
    sc.GEN_AI_PROVIDER_NAME: "openai",
    sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
    sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
    sc.GEN_AI_OPERATION_NAME: "chat",
    sc.BILLING_PROCESSING: "standard",
    sc.BILLING_CONTEXT_TIER: "base",
    sc.BILLING_USAGE_SOURCE: "provider",
}


def chat_point_attrs(
    provider: str | None, model: str | None, bucket: str, **extra: Any
) -> dict[str, Any]:
    """A chat call's point of ``bucket``, ``model`` requested and served, and ``extra``
    attributes; those given as None are left out."""
    attrs: dict[str, Any] = {
        sc.GEN_AI_PROVIDER_NAME: provider,
        sc.GEN_AI_REQUEST_MODEL: model,
        sc.GEN_AI_RESPONSE_MODEL: model,
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.BILLING_PROCESSING: "standard",
        sc.BILLING_CONTEXT_TIER: "base",
        sc.BILLING_USAGE_SOURCE: "provider",
        sc.BILLING_TOKEN_BUCKET: bucket,
        **extra,
    }
    return {k: v for k, v in attrs.items() if v is not None}
