"""The user price file: contracted prices, discounts, custom models, currency and FX."""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from ._model import PRICE_KEYS, PROCESSING_VALUES, Processing, Rate, Tiered

ENV_PRICES = "OTEL_TOKENS_PRICES"
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_TOP_KEYS = {"version", "currency", "fx", "models", "discounts"}
_MODEL_KEYS = {
    "provider",
    "model",
    "pattern",
    "effective_from",
    "currency",
    "prices",
    "variants",
    "name",
    "source",
    "date",
}
_DISCOUNT_KEYS = {"provider", "model", "pattern", "percent", "effective_from"}


class PriceFileError(ValueError):
    """A price file that cannot be used, with the file and the place in it."""


@dataclass(frozen=True, slots=True)
class UserPrice:
    """One ``models:`` entry of the price file."""

    index: int
    provider: str | None
    model: str | None
    pattern: str | None
    effective_from: datetime | None
    currency: str
    rates: Mapping[str, Rate]
    variants: Mapping[Processing, Mapping[str, Rate]]
    # Provenance: where the price is published and when it was read there (required in
    # the package's corrections, optional in a user's file).
    source: str | None = None
    date: date | None = None

    @property
    def key(self) -> str:
        name = self.model if self.model is not None else f"pattern:{self.pattern}"
        return f"{self.provider or '*'}/{name}"


@dataclass(frozen=True, slots=True)
class Discount:
    """One ``discounts:`` entry: a percentage off the default catalog's prices."""

    index: int
    provider: str | None
    model: str | None
    pattern: str | None
    percent: Decimal
    effective_from: datetime | None

    @property
    def factor(self) -> Decimal:
        return (Decimal(100) - self.percent) / Decimal(100)


@dataclass(frozen=True, slots=True)
class UserPrices:
    path: str
    sha256: str
    currency: str
    fx: Mapping[str, Decimal]
    models: tuple[UserPrice, ...]
    discounts: tuple[Discount, ...]


class _StringTimestampLoader(yaml.SafeLoader):
    """A safe loader that keeps timestamps and floats as text, so we parse them ourselves.

    An unquoted ``0.0416666666666666667`` would otherwise become a binary float and lose
    digits before ``Decimal`` ever saw it; instants need their offsets checked.
    """


_TEXT_TAGS = {"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:float"}
_StringTimestampLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _TEXT_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML's spellings of the non-finite floats, which now arrive as text.
_YAML_NON_FINITE = {".nan", ".inf", "+.inf", "-.inf"}


def prices_path_from_env() -> str | None:
    return os.environ.get(ENV_PRICES) or None


def load_user_prices(path: str | os.PathLike[str]) -> UserPrices:
    """Read and validate a price file; raises `PriceFileError` saying what and where."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise PriceFileError(f"cannot read price file {p}: {exc.strerror or exc}") from exc
    return parse_user_prices(raw, str(p))


def parse_user_prices(raw: bytes, path: str = "<prices>") -> UserPrices:
    """Validate a price file's bytes; raises `PriceFileError` naming ``path`` and what."""
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_StringTimestampLoader)
    except UnicodeDecodeError as exc:
        raise PriceFileError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except yaml.YAMLError as exc:
        raise PriceFileError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    ctx = _Ctx(path)
    if not isinstance(data, dict):
        ctx.fail("", "the file must be a mapping with keys such as 'models' and 'discounts'")
    ctx.unknown_keys(data, _TOP_KEYS, "")
    version = data.get("version", 1)
    if version != 1:
        ctx.fail("version", f"unsupported version {version!r}; this release reads version 1")
    currency = ctx.currency(data.get("currency", "USD"), "currency")
    fx = _fx(ctx, data.get("fx") or {}, currency)
    models = tuple(
        _model(ctx, entry, i, currency, fx) for i, entry in enumerate(ctx.list(data, "models"))
    )
    discounts = tuple(
        _discount(ctx, entry, i) for i, entry in enumerate(ctx.list(data, "discounts"))
    )
    return UserPrices(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        currency=currency,
        fx=fx,
        models=models,
        discounts=discounts,
    )


class _Ctx:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> None:
        at = f" at {where}" if where else ""
        raise PriceFileError(f"{self.path}{at}: {message}")

    def unknown_keys(self, data: Mapping[str, Any], allowed: set[str], where: str) -> None:
        unknown = sorted(str(k) for k in data if k not in allowed)
        if unknown:
            self.fail(
                where,
                f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            )

    def list(self, data: Mapping[str, Any], key: str) -> list[Any]:
        value = data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(key, "must be a list")
        return value  # type: ignore[no-any-return]

    def currency(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
            self.fail(where, f"currency must be an ISO 4217 code such as USD, got {value!r}")
        return str(value)

    def decimal(self, value: Any, where: str, *, allow_zero: bool = True) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.fail(where, f"must be a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(where, f"must be a finite number, got {value!r}")
        text = str(value).strip()
        if text.lower() in _YAML_NON_FINITE:
            self.fail(where, f"must be a finite number, got {text}")
        try:
            # The loader hands over the number's text as written, so this is exact.
            number = Decimal(text)
        except InvalidOperation:
            self.fail(where, f"must be a decimal number, got {value!r}")
            raise  # unreachable: fail() raises
        if not number.is_finite():
            self.fail(where, f"must be a finite number, got {value!r}")
        if number < 0 or (number == 0 and not allow_zero):
            qualifier = "positive" if not allow_zero else "non-negative"
            self.fail(where, f"must be a {qualifier} number, got {value!r}")
        return number

    def instant(self, value: Any, where: str) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, date) and not isinstance(value, datetime):
            value = value.isoformat()
        if not isinstance(value, str):
            self.fail(where, f"must be an ISO 8601 date or instant, got {value!r}")
        text = str(value).strip()
        try:
            # A date alone means midnight UTC (both 2025-06-10 and the basic 20250610).
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        except ValueError:
            pass
        try:
            instant = datetime.fromisoformat(text)
        except ValueError:
            self.fail(where, f"must be an ISO 8601 date or instant, got {value!r}")
            raise  # unreachable
        if instant.tzinfo is None:
            self.fail(
                where,
                f"instant {text!r} has no UTC offset; write e.g. {text}Z or {text}+01:00",
            )
        return instant.astimezone(UTC)


def _fx(ctx: _Ctx, raw: Any, reporting: str) -> dict[str, Decimal]:
    if not isinstance(raw, dict):
        ctx.fail("fx", "must map a currency code to its value in the reporting currency")
    fx: dict[str, Decimal] = {reporting: Decimal(1)}
    for code, rate in raw.items():
        ctx.currency(code, f"fx.{code}")
        fx[code] = ctx.decimal(rate, f"fx.{code}", allow_zero=False)
    return fx


def _rates(ctx: _Ctx, raw: Any, where: str) -> dict[str, Rate]:
    if not isinstance(raw, dict) or not raw:
        ctx.fail(where, f"must map price keys ({', '.join(PRICE_KEYS)}) to prices")
    rates: dict[str, Rate] = {}
    for key, value in raw.items():
        here = f"{where}.{key}"
        if key not in PRICE_KEYS:
            ctx.fail(here, f"unknown price key; known keys: {', '.join(PRICE_KEYS)}")
        if isinstance(value, dict):
            ctx.unknown_keys(value, {"base", "tiers"}, here)
            tiers: list[tuple[int, Decimal]] = []
            for j, tier in enumerate(value.get("tiers") or []):
                if not isinstance(tier, dict) or set(tier) != {"start", "price"}:
                    ctx.fail(f"{here}.tiers[{j}]", "each tier needs exactly 'start' and 'price'")
                start = tier["start"]
                if isinstance(start, bool) or not isinstance(start, int) or start < 0:
                    ctx.fail(f"{here}.tiers[{j}].start", "must be a non-negative integer")
                tiers.append((start, ctx.decimal(tier["price"], f"{here}.tiers[{j}].price")))
            if "base" not in value:
                ctx.fail(here, "a tiered price needs 'base'")
            rates[key] = Tiered(ctx.decimal(value["base"], f"{here}.base"), tuple(sorted(tiers)))
        else:
            rates[key] = ctx.decimal(value, here)
    return rates


def _selector(ctx: _Ctx, entry: Mapping[str, Any], where: str) -> tuple[str | None, ...]:
    provider, model, pattern = entry.get("provider"), entry.get("model"), entry.get("pattern")
    for name, value in (("provider", provider), ("model", model), ("pattern", pattern)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            ctx.fail(f"{where}.{name}", "must be a non-empty string")
    if model is not None and pattern is not None:
        ctx.fail(where, "give either 'model' (exact name) or 'pattern' (glob), not both")
    return (
        provider.strip().lower() if provider else None,
        model.strip().lower() if model else None,
        pattern.strip().lower() if pattern else None,
    )


def _model(
    ctx: _Ctx, entry: Any, index: int, reporting: str, fx: Mapping[str, Decimal]
) -> UserPrice:
    where = f"models[{index}]"
    if not isinstance(entry, dict):
        ctx.fail(where, "must be a mapping")
    ctx.unknown_keys(entry, _MODEL_KEYS, where)
    provider, model, pattern = _selector(ctx, entry, where)
    if model is None and pattern is None:
        ctx.fail(where, "needs 'model' (exact name) or 'pattern' (glob such as 'ft:gpt-4o*')")
    currency = ctx.currency(entry.get("currency", reporting), f"{where}.currency")
    if currency not in fx:
        ctx.fail(
            f"{where}.currency",
            f"no FX rate for {currency}: add 'fx: {{{currency}: <value of 1 {currency} in "
            f"{reporting}>}}'",
        )
    variants: dict[Processing, Mapping[str, Rate]] = {}
    raw_variants = entry.get("variants") or {}
    if not isinstance(raw_variants, dict):
        ctx.fail(f"{where}.variants", "must map a processing variant to prices")
    for name, raw in raw_variants.items():
        if name not in PROCESSING_VALUES or name == "standard":
            ctx.fail(f"{where}.variants.{name}", "variant must be one of batch, flex, priority")
        variants[name] = _rates(ctx, raw, f"{where}.variants.{name}")
    return UserPrice(
        index=index,
        provider=provider,
        model=model,
        pattern=pattern,
        effective_from=ctx.instant(entry.get("effective_from"), f"{where}.effective_from"),
        currency=currency,
        rates=_rates(ctx, entry.get("prices"), f"{where}.prices"),
        variants=variants,
        source=_text(ctx, entry.get("source"), f"{where}.source"),
        date=_date(ctx, entry.get("date"), f"{where}.date"),
    )


def _text(ctx: _Ctx, value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        ctx.fail(where, "must be a non-empty string")
    return str(value).strip()


def _date(ctx: _Ctx, value: Any, where: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        ctx.fail(where, f"must be an ISO 8601 date such as 2026-12-07, got {value!r}")
        raise  # unreachable


def _discount(ctx: _Ctx, entry: Any, index: int) -> Discount:
    where = f"discounts[{index}]"
    if not isinstance(entry, dict):
        ctx.fail(where, "must be a mapping")
    ctx.unknown_keys(entry, _DISCOUNT_KEYS, where)
    provider, model, pattern = _selector(ctx, entry, where)
    if provider is None and model is None and pattern is None:
        ctx.fail(where, "needs at least one of 'provider', 'model', 'pattern'")
    if "percent" not in entry:
        ctx.fail(where, "needs 'percent'")
    percent = ctx.decimal(entry["percent"], f"{where}.percent")
    if percent > 100:
        ctx.fail(f"{where}.percent", f"must be between 0 and 100, got {percent}")
    return Discount(
        index=index,
        provider=provider,
        model=model,
        pattern=pattern,
        percent=percent,
        effective_from=ctx.instant(entry.get("effective_from"), f"{where}.effective_from"),
    )
