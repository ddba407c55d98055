"""The standard in semconv/ and the code in src/ cannot drift apart.

Checks src/otel_tokens/semconv.py against the registry YAML in semconv/model/ (both
ways), the enum values against the types the code uses, and the JSON schemas in
semconv/schemas/ against the price-file parser and sample documents.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, get_args

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from otel_tokens import semconv as sc
from otel_tokens.pricing import PROCESSING_VALUES, PriceFileError, PricingStatus, parse_user_prices
from otel_tokens.pricing._model import BUCKET_PRICE_KEYS, PRICE_KEYS
from otel_tokens.pricing._userfile import (
    _DISCOUNT_KEYS,
    _MODEL_KEYS,
    _TOP_KEYS,
    _StringTimestampLoader,
)
from otel_tokens.usage import UsageSource

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "semconv" / "model"
SCHEMAS = ROOT / "semconv" / "schemas"
SPEC = ROOT / "semconv" / "SPEC.md"
OURS = ("gen_ai.billing.", "gen_ai.usage.cost.")


# --- loading -----------------------------------------------------------------------------
def _groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted(MODEL.glob("*.yaml")):
        groups.extend(yaml.safe_load(path.read_text(encoding="utf-8"))["groups"])
    return groups


GROUPS = _groups()
DEFINED: dict[str, dict[str, Any]] = {
    a["id"]: a for g in GROUPS for a in g.get("attributes", ()) if "id" in a
}
REFS: set[str] = {a["ref"] for g in GROUPS for a in g.get("attributes", ()) if "ref" in a}
DEPRECATED: dict[str, dict[str, Any]] = {
    a["ref"]: a["deprecated"] for g in GROUPS for a in g.get("attributes", ()) if "deprecated" in a
}
METRICS: dict[str, dict[str, Any]] = {g["metric_name"]: g for g in GROUPS if g["type"] == "metric"}
CONSTANTS: dict[str, str] = {
    name: value for name, value in vars(sc).items() if name.isupper() and isinstance(value, str)
}
PREFIXES = {sc.BILLING_TAG_PREFIX, sc.BILLING_USAGE_PREFIX, sc.BILLING_WORKFLOW_USAGE_PREFIX}
ALL_BUCKETS = (*sc.TOKEN_BUCKETS, *sc.REQUEST_BUCKETS)
USAGE_ATTRIBUTES = {sc.BILLING_USAGE_PREFIX + bucket for bucket in ALL_BUCKETS}


def _attribute_constants() -> dict[str, str]:
    return {
        name: value
        for name, value in CONSTANTS.items()
        if not name.startswith("METRIC_") and "." in value and value not in PREFIXES
    }


def _ours(value: str) -> bool:
    return value.startswith(OURS)


def _members(attribute_id: str) -> list[str]:
    attribute_type = DEFINED[attribute_id]["type"]
    assert isinstance(attribute_type, dict), f"{attribute_id} is not an enum"
    return [m["value"] for m in attribute_type["members"]]


def _constants_with_prefix(prefix: str) -> set[str]:
    return {v for k, v in CONSTANTS.items() if k.startswith(prefix)}


# --- the registry's format ----------------------------------------------------------------
def test_groups_are_well_formed() -> None:
    ids = [g["id"] for g in GROUPS]
    assert len(ids) == len(set(ids))
    for group in GROUPS:
        assert group["type"] in {"attribute_group", "metric", "span"}, group["id"]
        assert group["stability"] == "development", group["id"]
        assert group["brief"].strip(), group["id"]
        if "extends" in group:
            assert group["extends"] in ids, group["id"]
        if group["type"] == "metric":
            assert group["id"] == f"metric.{group['metric_name']}"
            assert group["instrument"] in {"counter", "updowncounter", "histogram", "gauge"}
            assert group["unit"]


def test_attributes_are_well_formed() -> None:
    for attribute_id, attribute in DEFINED.items():
        assert attribute["stability"] == "development", attribute_id
        assert attribute["brief"].strip(), attribute_id
        assert "requirement_level" not in attribute, f"{attribute_id}: set it on refs"
        attribute_type = attribute["type"]
        if isinstance(attribute_type, dict):
            values = [m["value"] for m in attribute_type["members"]]
            assert len(values) == len(set(values)), attribute_id
            for member in attribute_type["members"]:
                assert member["id"] and member["brief"].strip(), attribute_id
                assert member["stability"] == "development", attribute_id
        else:
            assert attribute_type in {
                "string",
                "int",
                "double",
                "boolean",
                "template[string]",
                "template[int]",
            }, attribute_id
        assert attribute.get("examples") not in (None, []), attribute_id


def test_every_ref_resolves() -> None:
    upstream = {v for v in _attribute_constants().values() if not _ours(v)}
    assert REFS - set(DEFINED) <= upstream, "refs to names neither defined nor upstream"


def test_deprecated_names_point_at_their_replacement() -> None:
    # Upstream renames (semantic-conventions-genai PR #440): the old name stays ref'd, marked
    # deprecated, while it is still emitted during the transition.
    assert set(DEPRECATED) == {sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS}
    cache_creation = DEPRECATED[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS]
    assert cache_creation["reason"] == "renamed"
    assert cache_creation["renamed_to"] == sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS
    code = set(_attribute_constants().values())
    for name, deprecated in DEPRECATED.items():
        assert name in code and deprecated["renamed_to"] in code
        assert deprecated["renamed_to"] in REFS and deprecated["renamed_to"] not in DEPRECATED
        assert "gen_ai_latest_experimental" in deprecated["note"], name


def test_spec_documents_each_deprecated_name_and_when_it_goes() -> None:
    spec = SPEC.read_text(encoding="utf-8")
    assert "OTEL_SEMCONV_STABILITY_OPT_IN" in spec and "gen_ai_latest_experimental" in spec
    for name, deprecated in DEPRECATED.items():
        assert f"`{name}`" in spec and f"`{deprecated['renamed_to']}`" in spec


# --- code -> standard ---------------------------------------------------------------------
def test_every_billing_attribute_in_the_code_is_defined() -> None:
    missing = {
        name: value
        for name, value in _attribute_constants().items()
        if _ours(value) and value not in DEFINED
    }
    assert not missing


def test_prefixes_are_defined() -> None:
    tag = DEFINED[sc.BILLING_TAG_PREFIX.rstrip(".")]
    assert tag["type"].startswith("template[")
    assert DEFINED[sc.BILLING_WORKFLOW_USAGE_PREFIX.rstrip(".")]["type"] == "template[int]"
    for name in USAGE_ATTRIBUTES:
        assert DEFINED[name]["type"] == "int", name


def test_upstream_attributes_are_referenced_not_redefined() -> None:
    for name, value in _attribute_constants().items():
        if _ours(value):
            continue
        assert value in REFS, f"{name} = {value!r} is not ref'd in semconv/model"
        assert value not in DEFINED, f"{value!r} is upstream: ref it, do not define it"


def test_every_billing_metric_in_the_code_is_defined() -> None:
    code = {v for k, v in CONSTANTS.items() if k.startswith("METRIC_") and _ours(v)}
    assert code == set(METRICS)


def test_upstream_metrics_are_documented_not_redefined() -> None:
    spec = SPEC.read_text(encoding="utf-8")
    for name, value in CONSTANTS.items():
        if name.startswith("METRIC_") and not _ours(value):
            assert value not in METRICS, value
            assert f"`{value}`" in spec, f"SPEC.md does not mention {value}"


# --- standard -> code ---------------------------------------------------------------------
def test_every_defined_attribute_is_in_the_code() -> None:
    code = {v for v in _attribute_constants().values() if _ours(v)}
    templates = {p.rstrip(".") for p in (sc.BILLING_TAG_PREFIX, sc.BILLING_WORKFLOW_USAGE_PREFIX)}
    known = code | USAGE_ATTRIBUTES | templates
    assert set(DEFINED) == known


def test_every_metric_attribute_is_known() -> None:
    for metric in METRICS.values():
        for attribute in metric.get("attributes", ()):
            assert attribute["ref"] in DEFINED or attribute["ref"] in REFS


def test_spec_mentions_every_name() -> None:
    spec = SPEC.read_text(encoding="utf-8")
    names = (set(DEFINED) - USAGE_ATTRIBUTES) | set(METRICS)
    missing = sorted(n for n in names if f"`{n}" not in spec)
    assert not missing, f"SPEC.md does not mention {missing}"


# --- enums --------------------------------------------------------------------------------
def test_pricing_status_members() -> None:
    members = _members(sc.BILLING_PRICING_STATUS)
    assert set(members) == _constants_with_prefix("STATUS_") == set(get_args(PricingStatus))


def test_usage_source_members() -> None:
    members = _members(sc.BILLING_USAGE_SOURCE)
    assert set(members) == _constants_with_prefix("USAGE_SOURCE_") == set(get_args(UsageSource))


def test_schemas_enumerate_every_usage_source() -> None:
    """A source missing from a schema would fail valid cost records and vectors."""
    members = _members(sc.BILLING_USAGE_SOURCE)
    record = _schema("cost-record.schema.json")["properties"]["x_UsageSource"]
    case = _schema("conformance-vectors.schema.json")["$defs"]["case"]["properties"]["source"]
    assert record["enum"] == members == list(sc.USAGE_SOURCES)
    assert case["enum"] == members


def test_processing_members() -> None:
    members = _members(sc.BILLING_PROCESSING)
    assert members == list(PROCESSING_VALUES)
    assert set(members) == _constants_with_prefix("PROCESSING_")


def test_token_bucket_members() -> None:
    members = _members(sc.BILLING_TOKEN_BUCKET)
    assert members == list(ALL_BUCKETS)
    assert set(members) == _constants_with_prefix("BUCKET_") == set(BUCKET_PRICE_KEYS)


def test_cost_source_members() -> None:
    assert set(_members(sc.GEN_AI_USAGE_COST_SOURCE)) == _constants_with_prefix("COST_SOURCE_")


# --- JSON schemas -------------------------------------------------------------------------
def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return schema


REGISTRY: Registry[Any] = Registry().with_resources(
    (s["$id"], Resource.from_contents(s))
    for s in (_schema(p.name) for p in sorted(SCHEMAS.glob("*.schema.json")))
)


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        schema, registry=REGISTRY, format_checker=jsonschema.FormatChecker()
    )


def _errors(schema: dict[str, Any], instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator(schema).iter_errors(instance)
    ]


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.schema.json")), ids=lambda p: p.name)
def test_schema_is_valid_2020_12(path: Path) -> None:
    schema = _schema(path.name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    for example in schema.get("examples", ()):
        assert not _errors(schema, example)


PRICE_FILE = _schema("price-file.schema.json")

SAMPLE_PRICE_FILE = """\
version: 1
currency: EUR
fx:
  USD: "0.92"
  GBP: 1.17
models:
  - provider: openai
    model: gpt-4o
    name: GPT-4o (contract 2026)
    effective_from: 2026-01-01
    currency: USD
    prices:
      input_mtok: "2.00"
      cache_read_mtok: "1.00"
      output_mtok: "8.00"
      web_searches_kcount: "10"
    variants:
      batch: {input_mtok: "1.00", output_mtok: "4.00"}
  - provider: acme
    pattern: "acme-*"
    effective_from: "2026-03-01T00:00:00+01:00"
    prices:
      input_mtok:
        base: "0.40"
        tiers: [{start: 200000, price: "0.80"}]
      output_mtok: 1.6
  - model: in-house-llm
    currency: GBP
    prices: {input_mtok: 0, output_mtok: "0.5"}
discounts:
  - provider: anthropic
    percent: "12.5"
    effective_from: 2026-02-01T00:00:00Z
  - pattern: "gemini-2.5-*"
    percent: 5
"""

VALID_PRICE_FILES = {
    "empty-mapping": "{}\n",
    "only-discounts": "discounts:\n  - provider: openai\n    percent: '100'\n",
    "null-sections": "fx: null\nmodels: null\ndiscounts: null\n",
    "null-tiers": "models:\n  - model: m\n    prices: {input_mtok: {base: '1', tiers: null}}\n",
}

INVALID_PRICE_FILES = {
    "unknown-top-key": "modelz: []\n",
    "version-2": "version: 2\n",
    "lowercase-currency": "currency: usd\n",
    "fx-zero": "currency: EUR\nfx: {USD: '0'}\n",
    "fx-negative": "currency: EUR\nfx: {USD: -1}\n",
    "model-and-pattern": "models:\n  - {model: a, pattern: 'a*', prices: {input_mtok: '1'}}\n",
    "no-model-or-pattern": "models:\n  - {provider: openai, prices: {input_mtok: '1'}}\n",
    "empty-model-name": "models:\n  - {model: ' ', prices: {input_mtok: '1'}}\n",
    "no-prices": "models:\n  - {model: a}\n",
    "empty-prices": "models:\n  - {model: a, prices: {}}\n",
    "unknown-price-key": "models:\n  - {model: a, prices: {input_tokens: '1'}}\n",
    "negative-price": "models:\n  - {model: a, prices: {input_mtok: '-1'}}\n",
    "not-a-number": "models:\n  - {model: a, prices: {input_mtok: 'cheap'}}\n",
    "boolean-price": "models:\n  - {model: a, prices: {input_mtok: true}}\n",
    "unknown-model-key": "models:\n  - {model: a, prices: {input_mtok: '1'}, tier: x}\n",
    "tier-without-base": "models:\n  - {model: a, prices: {input_mtok: {tiers: []}}}\n",
    "tier-extra-key": (
        "models:\n  - model: a\n    prices:\n      input_mtok:\n        base: '1'\n"
        "        tiers: [{start: 10, price: '2', end: 20}]\n"
    ),
    "tier-negative-start": (
        "models:\n  - model: a\n    prices:\n      input_mtok:\n        base: '1'\n"
        "        tiers: [{start: -1, price: '2'}]\n"
    ),
    "standard-variant": (
        "models:\n  - {model: a, prices: {input_mtok: '1'}, "
        "variants: {standard: {input_mtok: '1'}}}\n"
    ),
    "unknown-variant": (
        "models:\n  - {model: a, prices: {input_mtok: '1'}, variants: {turbo: {input_mtok: '1'}}}\n"
    ),
    "instant-without-offset": (
        "models:\n  - {model: a, effective_from: '2026-01-01T10:00:00', "
        "prices: {input_mtok: '1'}}\n"
    ),
    "instant-garbage": (
        "models:\n  - {model: a, effective_from: 'next tuesday', prices: {input_mtok: '1'}}\n"
    ),
    "models-not-a-list": "models: {model: a}\n",
    "discount-without-selector": "discounts:\n  - {percent: 10}\n",
    "discount-without-percent": "discounts:\n  - {provider: openai}\n",
    "discount-over-100": "discounts:\n  - {provider: openai, percent: '101'}\n",
    "discount-unknown-key": "discounts:\n  - {provider: openai, percent: 10, until: 2027}\n",
}


def _load_yaml(text: str) -> Any:
    # The parser keeps timestamps as text; so must the instance the schema sees.
    return yaml.load(text, Loader=_StringTimestampLoader)


def test_sample_price_file_is_valid_for_schema_and_parser() -> None:
    assert not _errors(PRICE_FILE, _load_yaml(SAMPLE_PRICE_FILE))
    parsed = parse_user_prices(SAMPLE_PRICE_FILE.encode())
    assert len(parsed.models) == 3
    assert len(parsed.discounts) == 2


@pytest.mark.parametrize("text", VALID_PRICE_FILES.values(), ids=VALID_PRICE_FILES.keys())
def test_schema_and_parser_accept(text: str) -> None:
    assert not _errors(PRICE_FILE, _load_yaml(text))
    parse_user_prices(text.encode())


@pytest.mark.parametrize("text", INVALID_PRICE_FILES.values(), ids=INVALID_PRICE_FILES.keys())
def test_schema_and_parser_reject(text: str) -> None:
    assert _errors(PRICE_FILE, _load_yaml(text)), "the schema accepts it"
    with pytest.raises(PriceFileError):
        parse_user_prices(text.encode())


def test_price_file_schema_lists_the_parsers_keys() -> None:
    defs = PRICE_FILE["$defs"]
    assert set(PRICE_FILE["properties"]) == _TOP_KEYS
    assert set(defs["model"]["properties"]) == _MODEL_KEYS
    assert set(defs["discount"]["properties"]) == _DISCOUNT_KEYS
    assert tuple(defs["prices"]["properties"]) == PRICE_KEYS
    variants = defs["model"]["properties"]["variants"]["properties"]
    assert set(variants) == set(PROCESSING_VALUES) - {"standard"}


# --- cost records -------------------------------------------------------------------------
COST_RECORD = _schema("cost-record.schema.json")
CLOUD_EVENT = {"$ref": f"{COST_RECORD['$id']}#/$defs/CloudEvent"}

SAMPLE_RECORD: dict[str, Any] = {
    "BilledCost": "0.0279",
    "EffectiveCost": "0.0279",
    "ListCost": "0.0279",
    "BillingCurrency": "USD",
    "ChargeCategory": "Usage",
    "ChargeFrequency": "Usage-Based",
    "ChargeDescription": "claude-sonnet-4-0 cache_write_1h tokens (anthropic)",
    "ChargePeriodStart": "2026-11-01T12:00:00Z",
    "ChargePeriodEnd": "2026-11-01T13:00:00Z",
    "ConsumedQuantity": "2000",
    "ConsumedUnit": "Tokens",
    "PricingQuantity": "0.002",
    "PricingUnit": "1000000 Tokens",
    "ListUnitPrice": "6",
    "ProviderName": "Anthropic",
    "ServiceName": "Anthropic API",
    "ServiceCategory": "AI and Machine Learning",
    "ServiceSubcategory": "Generative AI",
    "SkuId": "anthropic/claude-sonnet-4-0/cache_write_1h",
    "SkuPriceId": "genai-prices:anthropic/claude-sonnet-4-0/cache_write_1h",
    "SubAccountId": "tenant-42",
    "Tags": {"cost-center": "cc-7"},
    "x_PriceId": "genai-prices:anthropic/claude-sonnet-4-0",
    "x_CatalogVersion": "genai-prices@0.2.3",
    "x_UsageSource": "provider",
    "x_PricingStatus": "priced",
    "x_TokenBucket": "cache_write_1h",
    "x_Model": "claude-sonnet-4-20250514",
    "x_Provider": "anthropic",
    "x_Processing": "standard",
    "x_ContextTier": "base",
    "x_StreamId": "metric:4b1e0c",
}


def _record(**changes: Any) -> dict[str, Any]:
    record = copy.deepcopy(SAMPLE_RECORD)
    for key, value in changes.items():
        if value is ...:
            record.pop(key)
        else:
            record[key] = value
    return record


def test_sample_cost_record_is_valid() -> None:
    assert not _errors(COST_RECORD, SAMPLE_RECORD)


def test_unpriced_record_has_null_costs_never_zero() -> None:
    unpriced = {
        "x_PricingStatus": "unpriced",
        "BilledCost": None,
        "EffectiveCost": None,
        "ListCost": None,
    }
    assert not _errors(COST_RECORD, _record(**unpriced))
    assert _errors(COST_RECORD, _record(**{**unpriced, "BilledCost": "0"}))
    assert _errors(COST_RECORD, _record(BilledCost=None))  # priced needs an amount


@pytest.mark.parametrize(
    "changes",
    [
        {"BilledCost": 0.0279},  # money is a decimal string, never a float
        {"BilledCost": "2.79e-2"},
        {"BillingCurrency": "usd"},
        {"ConsumedQuantity": "-1"},
        {"ConsumedUnit": "Requests"},  # a token bucket is in tokens
        {"x_TokenBucket": "cached"},
        {"x_PricingStatus": "free"},
        {"ChargePeriodStart": "2026-11-01 12:00"},
        {"Tags": {"n": 1}},
        {"SubAccountId": ...},
        {"Unknown": "column"},  # custom columns need the x_ prefix
    ],
    ids=",".join,
)
def test_invalid_cost_records(changes: dict[str, Any]) -> None:
    assert _errors(COST_RECORD, _record(**changes))


def test_web_search_record_counts_requests() -> None:
    record = _record(
        x_TokenBucket="web_search",
        ConsumedUnit="Requests",
        PricingUnit="1000 Requests",
        ConsumedQuantity="3",
        PricingQuantity="0.003",
    )
    assert not _errors(COST_RECORD, record)
    assert _errors(COST_RECORD, {**record, "PricingUnit": "1000000 Tokens"})


def test_cloudevent_envelope() -> None:
    identity = "\n".join(
        [
            SAMPLE_RECORD["x_StreamId"],
            SAMPLE_RECORD["ChargePeriodStart"],
            SAMPLE_RECORD["ChargePeriodEnd"],
            SAMPLE_RECORD["x_PriceId"],
            SAMPLE_RECORD["x_TokenBucket"],
        ]
    )
    event = {
        "specversion": "1.0",
        "id": hashlib.sha256(identity.encode()).hexdigest(),
        "source": "/otel-tokens/collector/eu-1",
        "type": "io.otel-tokens.cost.v1",
        "subject": "tenant-42",
        "time": SAMPLE_RECORD["ChargePeriodEnd"],
        "datacontenttype": "application/json",
        "data": SAMPLE_RECORD,
    }
    assert not _errors(CLOUD_EVENT, event)
    assert _errors(CLOUD_EVENT, {**event, "type": "io.otel-tokens.cost"})
    assert _errors(CLOUD_EVENT, {**event, "id": "not-a-digest"})
    assert _errors(CLOUD_EVENT, {**event, "data": _record(BilledCost=0.0279)})
    event_without_time = dict(event)
    del event_without_time["time"]
    assert _errors(CLOUD_EVENT, event_without_time)
    for example in COST_RECORD["$defs"]["CloudEvent"]["examples"]:
        assert not _errors(CLOUD_EVENT, example)
