"""What a ``gen_ai.billing.tokens`` point looks like, for the tests that make them by hand
(the exporter's, the ledger's and the collector's), in one place."""

from __future__ import annotations

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
