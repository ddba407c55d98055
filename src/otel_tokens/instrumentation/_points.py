"""The attribute sets of a call's metric points, built once per shape of call.

A process makes many calls of few shapes (operation, provider, model, server, served model,
error; processing, context tier, usage source, attribution): the dicts its histogram points
carry and the keys its billing sums add to are the same from one call to the next. They are
built on a shape's first call and looked up by a tuple after that, and never changed once
built: the SDK copies a point's attributes before keeping them, and nothing here writes to a
dict it has handed out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry.util.types import AttributeValue

from .. import semconv as sc

if TYPE_CHECKING:
    from ._adapter import Request

Attributes = dict[str, AttributeValue]
SumKey = tuple[tuple[str, AttributeValue], ...]  # the key `_recording.Sums` adds to

# Shapes are few in practice; a process that makes unbounded ones (a model name per call)
# starts over instead of growing.
_MAX_SHAPES = 1024

# The billing point's attributes taken from the histogram points' set, in this order.
_BILLING_KEYS = (sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_REQUEST_MODEL, sc.GEN_AI_RESPONSE_MODEL)


def common_attributes(request: Request) -> Attributes:
    """The attributes of a call's span and of every metric point."""
    common: Attributes = {
        sc.GEN_AI_OPERATION_NAME: request.operation,
        sc.GEN_AI_PROVIDER_NAME: request.provider,
    }
    if request.model:
        common[sc.GEN_AI_REQUEST_MODEL] = request.model
    if request.server_address:
        common[sc.SERVER_ADDRESS] = request.server_address
        if request.server_port:
            common[sc.SERVER_PORT] = request.server_port
    return common


class Shape:
    """The histogram points' attribute sets of one shape of call, and the keys of its billing
    sums (by processing, context tier, usage source and attribution)."""

    __slots__ = ("_billing", "_operation", "duration", "input", "output")

    def __init__(
        self, request: Request, response_model: str | None, error_type: str | None
    ) -> None:
        attrs = common_attributes(request)
        if response_model:
            attrs[sc.GEN_AI_RESPONSE_MODEL] = response_model
        # duration and time to first chunk: with the error; the token points: without it.
        self.input: Attributes = {**attrs, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_INPUT}
        self.output: Attributes = {**attrs, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT}
        if error_type is not None:
            attrs[sc.ERROR_TYPE] = error_type
        self.duration: Attributes = attrs
        self._operation = request.operation
        self._billing: dict[tuple[object, ...], Billing] = {}

    def billing(
        self,
        processing: str,
        context_tier: str,
        source: str,
        attribution: Mapping[str, str],
    ) -> Billing:
        """The billing sums' keys of this shape's calls with these billing facts;
        ``attribution``: the metric attributes the cardinality guard allowed."""
        key = (processing, context_tier, source, *attribution.items())
        found = self._billing.get(key)
        if found is None:
            # As the point was built as a dict: provider, request and response model (those
            # present), operation, processing, tier, source, then the attribution.
            point: Attributes = {k: self.duration[k] for k in _BILLING_KEYS if k in self.duration}
            point[sc.GEN_AI_OPERATION_NAME] = self._operation
            point[sc.BILLING_PROCESSING] = processing
            point[sc.BILLING_CONTEXT_TIER] = context_tier
            point[sc.BILLING_USAGE_SOURCE] = source
            point.update(attribution)
            if len(self._billing) >= _MAX_SHAPES:
                self._billing.clear()
            found = self._billing[key] = Billing(tuple(point.items()))
        return found


class Billing:
    """The keys one shape of call adds its billing sums to."""

    __slots__ = ("_buckets", "_statuses", "base")

    def __init__(self, base: SumKey) -> None:
        self.base = base
        self._buckets: dict[str, SumKey] = {}
        self._statuses: dict[tuple[str, str | None], SumKey] = {}

    def bucket(self, bucket: str) -> SumKey:
        """The key of the tokens of one billing bucket."""
        key = self._buckets.get(bucket)
        if key is None:
            key = self._buckets[bucket] = (*self.base, (sc.BILLING_TOKEN_BUCKET, bucket))
        return key

    def status(self, status: str, currency: str | None = None) -> SumKey:
        """The key of an unpriced call (no ``currency``) or of a call's cost."""
        key = self._statuses.get((status, currency))
        if key is None:
            tail: SumKey = ((sc.BILLING_PRICING_STATUS, status),)
            if currency is not None:
                tail = ((sc.GEN_AI_USAGE_COST_CURRENCY, currency), *tail)
            key = self._statuses[(status, currency)] = (*self.base, *tail)
        return key


class Shapes:
    """A recorder's shapes of call, found by a tuple of the facts that make them."""

    __slots__ = ("_shapes",)

    def __init__(self) -> None:
        self._shapes: dict[tuple[object, ...], Shape] = {}

    def of(self, request: Request, response_model: str | None, error_type: str | None) -> Shape:
        key = (
            request.operation,
            request.provider,
            request.model,
            request.server_address,
            request.server_port,
            response_model,
            error_type,
        )
        shape = self._shapes.get(key)
        if shape is None:
            if len(self._shapes) >= _MAX_SHAPES:
                self._shapes.clear()
            shape = self._shapes[key] = Shape(request, response_model, error_type)
        return shape
