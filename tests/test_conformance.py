"""Runs the conformance vectors in semconv/conformance/ against the Python implementation.

Every case: raw provider usage -> converter -> disjoint buckets and inclusive semantic
convention attributes; cases with a ``pricing`` block are then priced and compared as
exact Decimals. See semconv/conformance/README.md for the vector format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from otel_tokens.pricing import Catalog, parse_user_prices, price
from otel_tokens.usage import (
    InvalidUsageError,
    TokenUsage,
    from_anthropic,
    from_cohere,
    from_gemini,
    from_langchain,
    from_litellm,
    from_mistral,
    from_ollama,
    from_openai_chat,
    from_openai_responses,
)
from otel_tokens.usage.bedrock import (
    from_bedrock_converse,
    from_bedrock_headers,
    from_bedrock_llama,
    from_bedrock_nova,
)

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "semconv" / "conformance"
SCHEMAS = ROOT / "semconv" / "schemas"

CONVERTERS: dict[str, Callable[..., TokenUsage]] = {
    "openai_chat": from_openai_chat,
    "openai_responses": from_openai_responses,
    "anthropic": from_anthropic,
    "gemini": from_gemini,
    "bedrock_converse": from_bedrock_converse,
    "bedrock_nova": from_bedrock_nova,
    "bedrock_llama": from_bedrock_llama,
    "bedrock_headers": from_bedrock_headers,
    "ollama": from_ollama,
    "mistral": from_mistral,
    "cohere": from_cohere,
    "litellm": from_litellm,
    "langchain": from_langchain,
}

# Upstream names the registry marks deprecated: with OTEL_SEMCONV_STABILITY_OPT_IN listing
# gen_ai_latest_experimental, the vectors' attributes without these.
DEPRECATED = {
    attribute["ref"]
    for group in yaml.safe_load((ROOT / "semconv" / "model" / "registry.yaml").read_text())[
        "groups"
    ]
    for attribute in group.get("attributes", ())
    if "deprecated" in attribute
}

# Case id -> reason, for vectors that fail because of a known bug in src/ (none today).
XFAIL: dict[str, str] = {}


def _files() -> list[Path]:
    return sorted(VECTORS.glob("*.json"))


def _cases() -> Iterator[dict[str, Any]]:
    for path in _files():
        yield from json.loads(path.read_text(encoding="utf-8"))["cases"]


def _params(cases: Iterator[dict[str, Any]]) -> list[Any]:
    return [
        pytest.param(
            case,
            id=case["id"],
            marks=[pytest.mark.xfail(reason=XFAIL[case["id"]], strict=True)]
            if case["id"] in XFAIL
            else [],
        )
        for case in cases
    ]


ALL_CASES = _params(_cases())
PRICED_CASES = _params(c for c in _cases() if "pricing" in c)


def _convert(case: dict[str, Any]) -> TokenUsage:
    converter = CONVERTERS[case["provider_shape"]]
    return converter(case["usage"], source=case.get("source", "provider"))


# --- the vector files themselves ---------------------------------------------------------
def test_vector_files_follow_their_schema() -> None:
    schemas = [
        json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
        for name in ("conformance-vectors.schema.json", "price-file.schema.json")
    ]
    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)
    validator = jsonschema.Draft202012Validator(
        schemas[0], registry=registry, format_checker=jsonschema.FormatChecker()
    )
    assert len(_files()) >= 12
    for path in _files():
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(json.loads(path.read_text(encoding="utf-8")))
        ]
        assert not errors, f"{path.name}: {errors}"


def test_case_ids_are_unique() -> None:
    ids = [case["id"] for case in _cases()]
    assert len(ids) == len(set(ids))


def test_vectors_cover_every_provider_shape_and_outcome() -> None:
    cases = list(_cases())
    assert {c["provider_shape"] for c in cases} == set(CONVERTERS)
    statuses = {c["pricing"]["expected"]["status"] for c in cases if "pricing" in c}
    assert statuses == {"priced", "unpriced", "estimated", "variant_unavailable"}
    assert any(c.get("expected_error") for c in cases)


def test_expected_amounts_add_up_to_the_total() -> None:
    for case in _cases():
        expected = case.get("pricing", {}).get("expected")
        if not expected or expected["total"] is None:
            continue
        amounts = sum((Decimal(v) for v in expected["amounts"].values()), Decimal(0))
        assert amounts == Decimal(expected["total"]), case["id"]


# --- usage conversion --------------------------------------------------------------------
@pytest.mark.parametrize("case", ALL_CASES)
def test_conversion(case: dict[str, Any]) -> None:
    if case.get("expected_error"):
        with pytest.raises(InvalidUsageError):
            _convert(case)
        return
    usage = _convert(case)
    assert dict(usage.buckets()) == case["tokens"]
    attributes = usage.to_attributes(latest_only=False)
    assert attributes == case["semconv"]
    latest = usage.to_attributes(latest_only=True)
    assert latest == {k: v for k, v in case["semconv"].items() if k not in DEPRECATED}
    # The disjoint buckets make the attributes lossless.
    assert TokenUsage.from_attributes(attributes) == usage
    assert TokenUsage.from_attributes(latest) == usage


# --- pricing -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", PRICED_CASES)
def test_pricing(case: dict[str, Any]) -> None:
    spec = case["pricing"]
    expected = spec["expected"]
    price_file = spec.get("price_file")
    # An explicit catalog: OTEL_TOKENS_PRICES in the environment must not change results.
    catalog = Catalog(
        parse_user_prices(json.dumps(price_file).encode(), "<vector>") if price_file else None
    )
    result = price(
        _convert(case),
        spec["model"],
        provider=spec.get("provider"),
        at=datetime.fromisoformat(spec["at"]),
        processing=spec.get("processing", "standard"),
        catalog=catalog,
    )
    assert result.status == expected["status"], result.reason
    assert result.currency == expected.get("currency", "USD")
    if expected["total"] is None:
        assert result.total is None
        assert not result.amounts
    else:
        assert isinstance(result.total, Decimal)
        assert result.total == Decimal(expected["total"])
    assert dict(result.amounts) == {k: Decimal(v) for k, v in expected["amounts"].items()}
    assert all(isinstance(v, Decimal) for v in result.amounts.values())
    if "price_id" in expected:
        assert result.price_id == expected["price_id"]
    if "context_tier" in expected:
        assert result.context_tier == expected["context_tier"]
    assert result.catalog_version.startswith("genai-prices@")
