"""Every attribute, metric and enum name otel-tokens emits, in one place.

Upstream OpenTelemetry GenAI names are reused where they exist; our token-billing
extensions live under ``gen_ai.billing.*`` and the upstream cost proposal's
``gen_ai.usage.cost.*``. ``tests/test_semconv.py`` checks this module against the
registry YAML in ``semconv/model/`` so that code and standard cannot drift.
"""

from __future__ import annotations

from typing import Final

# --- Upstream GenAI and general attributes (reused as they are) -------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
# Deprecated: upstream renamed it to GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS (semantic-conventions-
# genai PR #440). Emitted beside the new name unless OTEL_SEMCONV_STABILITY_OPT_IN asks for
# gen_ai_latest_experimental; see docs/semconv-transition.md.
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
# Per-modality counts (semantic-conventions-genai PR #440): inclusive and overlapping, set only
# from what the provider reported; <modality>.cache_read is a part of <modality>.input.
GEN_AI_USAGE_TEXT_INPUT_TOKENS: Final = "gen_ai.usage.text.input_tokens"
GEN_AI_USAGE_IMAGE_INPUT_TOKENS: Final = "gen_ai.usage.image.input_tokens"
GEN_AI_USAGE_AUDIO_INPUT_TOKENS: Final = "gen_ai.usage.audio.input_tokens"
GEN_AI_USAGE_TEXT_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.text.cache_read.input_tokens"
GEN_AI_USAGE_IMAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.image.cache_read.input_tokens"
GEN_AI_USAGE_AUDIO_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.audio.cache_read.input_tokens"
GEN_AI_USAGE_TEXT_OUTPUT_TOKENS: Final = "gen_ai.usage.text.output_tokens"
GEN_AI_USAGE_IMAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.image.output_tokens"
GEN_AI_USAGE_AUDIO_OUTPUT_TOKENS: Final = "gen_ai.usage.audio.output_tokens"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
OPENAI_REQUEST_SERVICE_TIER: Final = "openai.request.service_tier"
OPENAI_RESPONSE_SERVICE_TIER: Final = "openai.response.service_tier"
ERROR_TYPE: Final = "error.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"

# --- Upstream proposal: per-operation cost (semantic-conventions-genai PR 443) ------------
GEN_AI_USAGE_COST_AMOUNT: Final = "gen_ai.usage.cost.amount"
GEN_AI_USAGE_COST_CURRENCY: Final = "gen_ai.usage.cost.currency"
GEN_AI_USAGE_COST_SOURCE: Final = "gen_ai.usage.cost.source"

# --- otel-tokens billing extensions ---------------------------------------------------
BILLING_COST_DECIMAL: Final = "gen_ai.billing.cost.decimal"
BILLING_PRICE_ID: Final = "gen_ai.billing.price_id"
BILLING_PRICED_MODEL: Final = "gen_ai.billing.priced_model"
BILLING_CATALOG_VERSION: Final = "gen_ai.billing.catalog_version"
BILLING_PRICING_STATUS: Final = "gen_ai.billing.pricing_status"
BILLING_USAGE_SOURCE: Final = "gen_ai.billing.usage_source"
BILLING_TOKEN_BUCKET: Final = "gen_ai.billing.token.bucket"
BILLING_PROCESSING: Final = "gen_ai.billing.processing"
BILLING_CONTEXT_TIER: Final = "gen_ai.billing.context_tier"
# The scope of a cross-region inference profile (Amazon Bedrock: us, eu, apac, global).
BILLING_INFERENCE_PROFILE: Final = "gen_ai.billing.inference_profile"
BILLING_TENANT_ID: Final = "gen_ai.billing.tenant.id"
BILLING_USER_ID: Final = "gen_ai.billing.user.id"
BILLING_FEATURE: Final = "gen_ai.billing.feature"
BILLING_TAG_PREFIX: Final = "gen_ai.billing.tag."
BILLING_WORKFLOW_CALLS: Final = "gen_ai.billing.workflow.calls"
BILLING_WORKFLOW_UNPRICED_CALLS: Final = "gen_ai.billing.workflow.unpriced_calls"
BILLING_WORKFLOW_COST_DECIMAL: Final = "gen_ai.billing.workflow.cost.decimal"
BILLING_WORKFLOW_COST_CURRENCY: Final = "gen_ai.billing.workflow.cost.currency"
BILLING_BUDGET_NAME: Final = "gen_ai.billing.budget.name"
BILLING_BUDGET_UNIT: Final = "gen_ai.billing.budget.unit"
BILLING_BUDGET_THRESHOLD: Final = "gen_ai.billing.budget.threshold"
# Workflow roll-ups use their own names: summing usage over spans never counts a call twice.
BILLING_WORKFLOW_USAGE_PREFIX: Final = "gen_ai.billing.workflow.usage."
# A cost the response or a framework reported (LiteLLM), beside our own price.
BILLING_PROVIDER_COST_DECIMAL: Final = "gen_ai.billing.provider_cost.decimal"
BILLING_PROVIDER_COST_CURRENCY: Final = "gen_ai.billing.provider_cost.currency"
# The context-window guard's event (observe mode): the model's window and the request's counts.
BILLING_CONTEXT_WINDOW: Final = "gen_ai.billing.context_window"
BILLING_CONTEXT_WINDOW_INPUT_TOKENS: Final = "gen_ai.billing.context_window.input_tokens"
BILLING_CONTEXT_WINDOW_MAX_OUTPUT_TOKENS: Final = "gen_ai.billing.context_window.max_output_tokens"

# Per-bucket token counts on spans: disjoint, so they add up to the billable total.
BILLING_USAGE_PREFIX: Final = "gen_ai.billing.usage."

# --- Metrics ----------------------------------------------------------------------------
METRIC_CLIENT_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_CLIENT_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_CLIENT_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
METRIC_BILLING_TOKENS: Final = "gen_ai.billing.tokens"
METRIC_BILLING_COST: Final = "gen_ai.billing.cost"
METRIC_BILLING_UNPRICED: Final = "gen_ai.billing.unpriced"
METRIC_BILLING_LEDGER_COST: Final = "gen_ai.billing.ledger.cost"
METRIC_BILLING_WORKFLOW_COST: Final = "gen_ai.billing.workflow.cost"
METRIC_BILLING_COST_DIFFERENCE: Final = "gen_ai.billing.cost.difference"
METRIC_BUDGET_USED: Final = "gen_ai.billing.budget.used"
METRIC_BUDGET_LIMIT: Final = "gen_ai.billing.budget.limit"
METRIC_BUDGET_SPEND_RATE: Final = "gen_ai.billing.budget.spend_rate"
METRIC_BUDGET_PROJECTED: Final = "gen_ai.billing.budget.projected"
METRIC_BUDGET_RUNS_OUT_IN: Final = "gen_ai.billing.budget.runs_out_in"
METRIC_BUDGET_THRESHOLD_CROSSINGS: Final = "gen_ai.billing.budget.threshold_crossings"

# --- Enum values ------------------------------------------------------------------------
USAGE_SOURCE_PROVIDER: Final = "provider"
USAGE_SOURCE_ESTIMATED: Final = "estimated"
# Counted at four characters per token: no tokenizer could be loaded for the model.
USAGE_SOURCE_ESTIMATED_HEURISTIC: Final = "estimated_heuristic"
USAGE_SOURCES: Final = (
    USAGE_SOURCE_PROVIDER,
    USAGE_SOURCE_ESTIMATED,
    USAGE_SOURCE_ESTIMATED_HEURISTIC,
)

STATUS_PRICED: Final = "priced"
STATUS_UNPRICED: Final = "unpriced"
STATUS_ESTIMATED: Final = "estimated"
STATUS_VARIANT_UNAVAILABLE: Final = "variant_unavailable"

COST_SOURCE_LOCAL: Final = "local"
COST_SOURCE_PROVIDER: Final = "provider"

PROCESSING_STANDARD: Final = "standard"
PROCESSING_BATCH: Final = "batch"
PROCESSING_FLEX: Final = "flex"
PROCESSING_PRIORITY: Final = "priority"

# Billable buckets, disjoint: their sum is everything the provider bills for a call.
BUCKET_INPUT: Final = "input"
BUCKET_CACHE_READ: Final = "cache_read"
BUCKET_CACHE_WRITE_5M: Final = "cache_write_5m"
BUCKET_CACHE_WRITE_1H: Final = "cache_write_1h"
BUCKET_OUTPUT: Final = "output"
BUCKET_REASONING: Final = "reasoning"
BUCKET_INPUT_AUDIO: Final = "input_audio"
BUCKET_INPUT_IMAGE: Final = "input_image"
BUCKET_OUTPUT_AUDIO: Final = "output_audio"
BUCKET_OUTPUT_IMAGE: Final = "output_image"
BUCKET_WEB_SEARCH: Final = "web_search"
# Search units (Cohere rerank: one per query of up to 100 documents); a request bucket.
BUCKET_SEARCH_UNITS: Final = "search_units"

TOKEN_BUCKETS: Final = (
    BUCKET_INPUT,
    BUCKET_INPUT_AUDIO,
    BUCKET_INPUT_IMAGE,
    BUCKET_CACHE_READ,
    BUCKET_CACHE_WRITE_5M,
    BUCKET_CACHE_WRITE_1H,
    BUCKET_OUTPUT,
    BUCKET_OUTPUT_AUDIO,
    BUCKET_OUTPUT_IMAGE,
    BUCKET_REASONING,
)
REQUEST_BUCKETS: Final = (BUCKET_WEB_SEARCH, BUCKET_SEARCH_UNITS)

TOKEN_TYPE_INPUT: Final = "input"
TOKEN_TYPE_OUTPUT: Final = "output"

# Upstream bucket boundaries advice for the GenAI client metrics.
TOKEN_USAGE_BUCKETS: Final = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
