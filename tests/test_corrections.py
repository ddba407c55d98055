"""otel-tokens' corrections over genai-prices (src/otel_tokens/pricing/corrections.yaml).

Each correction is checked against its source by hand here, as the hand-computed cases of
tests/test_pricing.py are, and against genai-prices: a correction that upstream now covers
fails `test_every_correction_is_still_needed` (then remove it from corrections.yaml).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from otel_tokens.cli import main
from otel_tokens.pricing import (
    Catalog,
    Tiered,
    bundled_corrections,
    correction_status,
    parse_user_prices,
)
from otel_tokens.usage import TokenUsage

AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
CATALOG = Catalog()
UPSTREAM = Catalog(corrections=False)

# 150000 uncached input + 60000 cache reads = 210000 > 200000: the long-context tier.
LONG = TokenUsage(input=150_000, cache_read=60_000, cache_write_5m=1000, output=1000)


@pytest.mark.parametrize("model", ["claude-sonnet-4-0", "claude-sonnet-4-20250514"])
def test_claude_sonnet_4_long_context_is_priced_at_the_published_tier(model: str) -> None:
    # Anthropic pricing page, "Long context pricing": Claude Sonnet 4 above 200K input
    # tokens $6 input / $22.50 output per MTok; prompt caching multipliers on $6: 5m write
    # $7.50, cache hit $0.60. 150000 x 6 = 900000; 60000 x 0.6 = 36000; 1000 x 7.5 = 7500;
    # 1000 x 22.5 = 22500 -> 966000 -> $0.966
    result = CATALOG.price(LONG, model, provider="anthropic", at=AT)
    assert (result.status, result.total) == ("priced", Decimal("0.966"))
    assert result.context_tier == "above_200k"
    assert result.price_id == "correction:anthropic/claude-sonnet-4-0"
    # The catalog version of a result a correction priced names the correction file.
    assert result.catalog_version.startswith(
        f"{CATALOG.version}+corrections.sha256:{bundled_corrections().sha256[:16]}"
    )
    # genai-prices alone bills the flat <= 200K rates: 450000 + 18000 + 3750 + 15000 -> half.
    flat = UPSTREAM.price(LONG, model, provider="anthropic", at=AT)
    assert flat.total == Decimal("0.48675")
    assert flat.catalog_version == CATALOG.version


def test_below_the_tier_a_correction_agrees_with_genai_prices() -> None:
    usage = TokenUsage(input=100_000, cache_read=50_000, cache_write_1h=10, output=2000)
    ours = CATALOG.price(usage, "claude-sonnet-4-0", provider="anthropic", at=AT)
    theirs = UPSTREAM.price(usage, "claude-sonnet-4-0", provider="anthropic", at=AT)
    # 100000 x 3 + 50000 x 0.3 + 10 x 6 + 2000 x 15 = 345060 -> $0.34506
    assert ours.total == theirs.total == Decimal("0.34506")
    assert ours.context_tier == "base"


def test_every_correction_has_provenance_and_is_still_needed() -> None:
    corrections = bundled_corrections()
    assert corrections.models
    for entry in corrections.models:
        assert entry.source is not None and entry.source.startswith("https://"), entry
        assert entry.date is not None, entry
        status = correction_status(entry, AT)
        assert status.state == "needed", (entry.key, status.detail)


def test_a_correction_upstream_covers_is_flagged() -> None:
    entry = bundled_corrections().models[0]
    # The same entry with genai-prices' own (flat) rates: nothing left to correct.
    flat = {k: (r.base if isinstance(r, Tiered) else r) for k, r in entry.rates.items()}
    assert correction_status(replace(entry, rates=flat), AT).state == "covered_upstream"
    other = {**flat, "output_mtok": Decimal("16")}
    status = correction_status(replace(entry, rates=other), AT)
    assert status.state == "differs_upstream"
    assert "output_mtok" in status.detail


def test_the_user_file_beats_a_correction_and_its_discounts_apply() -> None:
    contract = Catalog(
        parse_user_prices(
            b"models:\n  - provider: anthropic\n    model: claude-sonnet-4-0\n"
            b"    prices: {input_mtok: '2', cache_read_mtok: '0.2', cache_write_mtok: '2.5',"
            b" output_mtok: '10'}\n",
            "c.yaml",
        )
    )
    result = contract.price(LONG, "claude-sonnet-4-0", provider="anthropic", at=AT)
    assert result.price_id == "user:anthropic/claude-sonnet-4-0"
    discounted = Catalog(
        parse_user_prices(b"discounts:\n  - provider: anthropic\n    percent: 10\n", "d.yaml")
    )
    result = discounted.price(LONG, "claude-sonnet-4-0", provider="anthropic", at=AT)
    assert result.price_id == "correction:anthropic/claude-sonnet-4-0~discount0:10%"
    assert result.total == Decimal("0.8694")  # 0.966 x 0.9


def test_check_prices_reports_the_corrections(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-prices"]) == 0
    out = capsys.readouterr().out
    assert "anthropic/claude-sonnet-4-0: needed: genai-prices lacks the tiers of" in out
    assert "source: https://docs.anthropic.com/en/docs/about-claude/pricing" in out


def test_the_correction_file_is_a_valid_price_file() -> None:
    import json
    from importlib.resources import files
    from pathlib import Path

    import jsonschema
    import yaml

    schema = json.loads(
        (Path(__file__).parents[1] / "semconv/schemas/price-file.schema.json").read_text()
    )
    text = files("otel_tokens.pricing").joinpath("corrections.yaml").read_text()
    jsonschema.validate(yaml.safe_load(text), schema)


def test_claude_sonnet_4_cache_rates_follow_anthropics_multipliers_in_both_tiers() -> None:
    """Anthropic's rule for every tier: cache read 0.1x the input rate, 5m write 1.25x, 1h
    write 2x; long context 2x input and 1.5x output. Checked on the file's own numbers."""
    from importlib.resources import files

    import yaml

    text = files("otel_tokens.pricing").joinpath("corrections.yaml").read_text()
    (entry,) = [m for m in yaml.safe_load(text)["models"] if m["model"] == "claude-sonnet-4-0"]
    prices = entry["prices"]

    def tiers(key: str) -> tuple[Decimal, Decimal]:
        (tier,) = prices[key]["tiers"]
        assert tier["start"] == 200_000
        return Decimal(prices[key]["base"]), Decimal(tier["price"])

    base_in, long_in = tiers("input_mtok")
    base_out, long_out = tiers("output_mtok")
    assert (base_in, base_out) == (Decimal(3), Decimal(15))
    assert (long_in, long_out) == (2 * base_in, Decimal("1.5") * base_out)
    for key, factor in (
        ("cache_read_mtok", Decimal("0.1")),
        ("cache_write_mtok", Decimal("1.25")),
        ("cache_write_1h_mtok", Decimal(2)),
    ):
        assert tiers(key) == (factor * base_in, factor * long_in), key
    # And priced so: 1h writes above the tier, 250000 x 6 + 1000 x 12 + 100 x 22.5 = 1514250
    usage = TokenUsage(input=250_000, cache_write_1h=1000, output=100)
    result = CATALOG.price(usage, "claude-sonnet-4-0", provider="anthropic", at=AT)
    assert (result.status, result.total) == ("priced", Decimal("1.51425"))
