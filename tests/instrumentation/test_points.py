"""The metric points' attribute sets, built once per shape of call (`_points`): the same
attributes, in the same order, as building them call by call."""

from __future__ import annotations

from typing import Any

import pytest

from otel_tokens import semconv as sc
from otel_tokens.instrumentation._adapter import Request
from otel_tokens.instrumentation._points import _MAX_SHAPES, Shapes, common_attributes
from otel_tokens.instrumentation._recording import Sums


def _request(**kw: Any) -> Request:
    base: dict[str, Any] = {"operation": "chat", "provider": "openai", "model": "gpt-4o"}
    return Request(**{**base, **kw})


def _by_hand(request: Request, response_model: str | None, error: str | None) -> dict[str, Any]:
    """The histogram points' attributes as the recorder built them per call."""
    attrs = common_attributes(request)
    if response_model:
        attrs[sc.GEN_AI_RESPONSE_MODEL] = response_model
    if error is not None:
        attrs[sc.ERROR_TYPE] = error
    return attrs


@pytest.mark.parametrize(
    ("request_kw", "response_model", "error"),
    [
        ({}, "gpt-4o-2024-08-06", None),
        ({"model": None}, None, None),
        ({"server_address": "api.openai.com", "server_port": 8443}, "m", "TimeoutError"),
        ({"server_address": "localhost"}, None, "APIStatusError"),
    ],
)
def test_a_shape_has_the_attributes_built_call_by_call(
    request_kw: dict[str, Any], response_model: str | None, error: str | None
) -> None:
    request = _request(**request_kw)
    shape = Shapes().of(request, response_model, error)
    expected = _by_hand(request, response_model, error)
    assert list(shape.duration.items()) == list(expected.items())
    expected.pop(sc.ERROR_TYPE, None)
    for attrs, token_type in ((shape.input, "input"), (shape.output, "output")):
        assert list(attrs.items()) == [*expected.items(), (sc.GEN_AI_TOKEN_TYPE, token_type)]


def test_billing_keys_are_the_points_as_dicts() -> None:
    request = _request(server_address="api.openai.com")
    shape = Shapes().of(request, "gpt-4o-2024-08-06", "TimeoutError")
    attribution = {sc.BILLING_TENANT_ID: "acme", sc.BILLING_FEATURE: "search"}
    point = {
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.BILLING_PROCESSING: "flex",
        sc.BILLING_CONTEXT_TIER: "base",
        sc.BILLING_USAGE_SOURCE: "provider",
        **attribution,
    }
    billing = shape.billing("flex", "base", "provider", attribution)
    assert billing.bucket("input") == tuple({**point, sc.BILLING_TOKEN_BUCKET: "input"}.items())
    assert billing.status("unpriced") == tuple(
        {**point, sc.BILLING_PRICING_STATUS: "unpriced"}.items()
    )
    cost = {**point, sc.GEN_AI_USAGE_COST_CURRENCY: "USD", sc.BILLING_PRICING_STATUS: "priced"}
    assert billing.status("priced", "USD") == tuple(cost.items())
    # Another attribution, tier or source is another key; the same ones, the same object.
    assert shape.billing("flex", "base", "provider", {}).bucket("input") != billing.bucket("input")
    assert shape.billing("flex", "base", "provider", dict(attribution)) is billing


def test_shapes_are_found_again_and_bounded() -> None:
    shapes = Shapes()
    first = shapes.of(_request(), "gpt-4o-2024-08-06", None)
    assert shapes.of(_request(), "gpt-4o-2024-08-06", None) is first
    assert shapes.of(_request(), "gpt-4o-2024-11-20", None) is not first
    for i in range(_MAX_SHAPES + 10):  # a model name per call must not grow without end
        shapes.of(_request(model=f"m{i}"), None, None)
    assert len(shapes._shapes) <= _MAX_SHAPES


def test_sums_add_keys_is_add() -> None:
    by_add, by_keys = Sums(), Sums()
    attrs = {sc.GEN_AI_PROVIDER_NAME: "openai", sc.BILLING_TOKEN_BUCKET: "input"}
    by_add.add(3, attrs)
    by_add.add(4, attrs)
    by_keys.add_keys([(tuple(attrs.items()), 3), (tuple(attrs.items()), 4)])
    assert by_add._values == by_keys._values == {tuple(attrs.items()): 7}
