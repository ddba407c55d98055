"""`CostRecord`: one billable line, with its FOCUS columns and its CloudEvents envelope.

A usage record is one bucket of one stream (a metric series) over one charge period
(semconv/SPEC.md section 7). Its id is deterministic and names the usage only, never how it
was priced: a point delivered again is the same record whatever the prices are by then, so
re-delivery, replays and re-exports deduplicate. A price change reaches the ledger only as
an adjustment record (``reprice``): the difference to what the usage was billed so far.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from . import semconv as sc
from .pricing import decimal_str

CHARGE_USAGE = "Usage"
CHARGE_ADJUSTMENT = "Adjustment"

CLOUDEVENT_TYPE = "io.otel-tokens.cost.v1"
CLOUDEVENT_SOURCE = "otel-tokens"

_PROVIDER_NAMES = {
    "openai": ("OpenAI", "OpenAI API"),
    "azure.ai.openai": ("Microsoft", "Azure OpenAI"),
    "anthropic": ("Anthropic", "Anthropic API"),
    "aws.bedrock": ("AWS", "Amazon Bedrock"),
    "gcp.vertex_ai": ("Google Cloud", "Vertex AI"),
    "gcp.gemini": ("Google", "Gemini API"),
}


def usage_id(stream: str, period_start: datetime, period_end: datetime, bucket: str) -> str:
    """Identity of a usage record: SHA-256 of stream, period start and end, and bucket."""
    text = "\n".join((stream, _iso(period_start), _iso(period_end), bucket))
    return hashlib.sha256(text.encode()).hexdigest()


def stream_id(parts: Mapping[str, Any]) -> str:
    """Identity of a metric series: a hash of its resource, scope, name and attributes."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class CostRecord:
    stream_id: str
    period_start: datetime
    period_end: datetime
    provider: str
    model: str
    bucket: str
    quantity: int
    currency: str
    catalog_version: str
    pricing_status: str
    usage_source: str = sc.USAGE_SOURCE_PROVIDER
    processing: str = sc.PROCESSING_STANDARD
    context_tier: str = "base"
    price_id: str | None = None
    # The model whose price was used when the served model had none (status estimated).
    priced_model: str | None = None
    billed_cost: Decimal | None = None
    list_cost: Decimal | None = None
    tenant: str | None = None
    feature: str | None = None
    user_id: str | None = None
    operation: str | None = None
    service_name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    # ``Usage``, or ``Adjustment``: a re-pricing of the usage record ``adjusts``, whose
    # costs are the difference to what that usage was billed before (quantity 0: the
    # tokens are the usage record's, counted once).
    charge_category: str = CHARGE_USAGE
    adjusts: str | None = None
    # An adjustment's cost before it (None: unpriced), part of its identity.
    adjusted_from: Decimal | None = None
    # The id a record was stored under before ids stopped naming the price (ledger
    # migration 3): kept so that exports of old records keep their ids.
    stored_id: str | None = field(default=None, compare=False)

    @property
    def id(self) -> str:
        """A usage record's `usage_id` (SPEC section 7); an adjustment's is its own."""
        if self.stored_id is not None:
            return self.stored_id
        if self.adjusts is None:
            return usage_id(self.stream_id, self.period_start, self.period_end, self.bucket)
        # The same re-pricing of the same billed amount is the same adjustment: a second
        # run, or two at once, add nothing.
        text = "\n".join(
            (
                "adjustment",
                self.adjusts,
                "" if self.adjusted_from is None else decimal_str(self.adjusted_from),
                self.price_id or "",
                self.catalog_version,
                _dec(self.billed_cost) or "",
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def usage_key(self) -> str | None:
        """The usage this record bills (None for an adjustment): unique in a ledger."""
        if self.adjusts is not None:
            return None
        return usage_id(self.stream_id, self.period_start, self.period_end, self.bucket)

    @property
    def is_priced(self) -> bool:
        return self.billed_cost is not None

    @property
    def unit(self) -> tuple[str, int]:
        """(FOCUS consumed unit, how many units one price is quoted for)."""
        if self.bucket in sc.REQUEST_BUCKETS:
            return "Requests", 1000
        return "Tokens", 1_000_000

    def to_focus(self) -> dict[str, Any]:
        """FOCUS 1.2 columns (money and quantities as exact decimal strings)."""
        unit, per = self.unit
        provider_name, service_name = _PROVIDER_NAMES.get(
            self.provider, (self.provider, self.provider)
        )
        pricing_quantity = Decimal(self.quantity) / per
        list_unit = None
        if self.list_cost is not None and self.quantity:
            list_unit = self.list_cost / pricing_quantity
        return {
            "BilledCost": _dec(self.billed_cost),
            "EffectiveCost": _dec(self.billed_cost),
            "ListCost": _dec(self.list_cost),
            "ListUnitPrice": _dec(list_unit),
            "BillingCurrency": self.currency,
            "ChargeCategory": self.charge_category,
            "ChargeFrequency": "Usage-Based",
            "ChargeDescription": f"{self.model} {self.bucket} ({self.processing})",
            "ChargePeriodStart": _iso(self.period_start),
            "ChargePeriodEnd": _iso(self.period_end),
            "ConsumedQuantity": str(self.quantity),
            "ConsumedUnit": unit,
            "PricingQuantity": decimal_str(pricing_quantity),
            "PricingUnit": f"{per} {unit}",
            "ProviderName": provider_name,
            "PublisherName": provider_name,
            "ServiceName": service_name,
            "ServiceCategory": "AI and Machine Learning",
            "ServiceSubcategory": "Generative AI",
            "SkuId": f"{self.provider}/{self.model}/{self.bucket}",
            "SkuPriceId": (
                None
                if self.price_id is None
                else f"{self.price_id}/{self.bucket}"
                + ("" if self.context_tier == "base" else f"/{self.context_tier}")
            ),
            "SubAccountId": self.tenant,
            "Tags": dict(self.tags),
            "x_PriceId": self.price_id,
            "x_CatalogVersion": self.catalog_version,
            "x_UsageSource": self.usage_source,
            "x_PricingStatus": self.pricing_status,
            "x_TokenBucket": self.bucket,
            "x_Model": self.model,
            "x_PricedModel": self.priced_model,
            "x_Provider": self.provider,
            "x_Processing": self.processing,
            "x_ContextTier": self.context_tier,
            "x_Operation": self.operation,
            "x_Feature": self.feature,
            "x_UserId": self.user_id,
            "x_StreamId": self.stream_id,
            "x_ServiceName": self.service_name,
            "x_Adjusts": self.adjusts,
        }

    def to_cloudevent(self) -> dict[str, Any]:
        event: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.id,
            "source": CLOUDEVENT_SOURCE,
            "type": CLOUDEVENT_TYPE,
            "time": _iso(self.period_end),
            "datacontenttype": "application/json",
            "data": self.to_focus(),
        }
        if self.tenant:
            event["subject"] = self.tenant
        return event


@functools.lru_cache(maxsize=4096)  # the points of a batch share a few export times
def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else decimal_str(value)
