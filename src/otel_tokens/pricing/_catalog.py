"""The price catalog: genai-prices' bundled data, under otel-tokens' corrections, under the
user's price file.

Precedence, for a model at instant T (documented in docs/pricing.md):

1. a user ``models:`` entry naming the model exactly, in force at T (latest
   ``effective_from`` wins, then the later entry in the file);
2. a user ``models:`` entry naming the model of which this is a dated snapshot
   (``gpt-4o`` for ``gpt-4o-2024-08-06``), in force at T;
3. a user ``models:`` entry whose ``pattern`` matches, in force at T (the first matching
   pattern in file order; for that pattern, the latest ``effective_from``);
4. the project's corrections (``corrections.yaml``, same rules 1-3), then the genai-prices
   entry in force at T, less the most specific user discount in force at T (exact model,
   then pattern, then provider-wide; later ``effective_from`` wins).

Without a provider, the provider is the one genai-prices knows the model by (as calls
always carry one), so provider-scoped entries apply.

A user entry (or a correction) replaces the catalog entry whole: a bucket it has no rate
for is priced by no other entry (and only by the few fallbacks of ``BUCKET_PRICE_KEYS``
within it, e.g. reasoning as output), never by the catalog's. A processing variant (batch,
flex, priority) is taken only from the winning entry; if that entry does not define it,
the status is ``variant_unavailable``.
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from importlib.metadata import version as _dist_version
from os import PathLike
from typing import Any, Literal

from genai_prices import data_snapshot as _gp_snapshot
from genai_prices import types as _gp

from ..usage import TokenUsage
from ._corrections import bundled_corrections
from ._engine import EXACT, compute
from ._model import PRICE_KEYS, Price, PriceResult, Processing, Rate, Tiered
from ._unit import UnitPrice, unit_price
from ._userfile import Discount, UserPrice, UserPrices, load_user_prices, prices_path_from_env

# gen_ai.provider.name values (semantic conventions) -> genai-prices provider ids.
_GENAI_PRICES_PROVIDER = {
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "x_ai": "x-ai",
    "mistral_ai": "mistral",
}
# How genai-prices marks each processing variant.
_VARIANT_CONTEXT: Mapping[str, Mapping[str, str]] = {
    "batch": {"processing": "batch"},
    "flex": {"service_tier": "flex"},
    "priority": {"service_tier": "priority"},
}
_EPOCH = datetime.min.replace(tzinfo=UTC)
# A dated snapshot's suffix: gpt-4o-2024-08-06, claude-sonnet-4-20250514.
_SNAPSHOT_DATE = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")


def genai_prices_provider(provider: str | None) -> str | None:
    """genai-prices' id for a provider name (normalised; unknown names pass through)."""
    if provider is None:
        return None
    p = provider.strip().lower()
    return _GENAI_PRICES_PROVIDER.get(p, p)


@dataclass(frozen=True, slots=True)
class _Unpriced:
    status: str  # "unpriced" or "variant_unavailable"
    reason: str
    price_id: str | None = None


class Catalog:
    """Versioned prices: resolves the `Price` in force and prices `TokenUsage` with it."""

    def __init__(self, user: UserPrices | None = None, *, corrections: bool = True) -> None:
        self.user = user
        # The project's corrections over genai-prices (``corrections=False``: genai-prices'
        # data alone, e.g. to compare with it).
        self.corrections = bundled_corrections() if corrections else None
        self.currency = user.currency if user else "USD"
        self.genai_prices_version = _dist_version("genai-prices")
        version = f"genai-prices@{self.genai_prices_version}"
        # Named in the catalog version of results a correction priced (only those: the
        # others do not depend on it).
        self._corrections_tag = (
            f"+corrections.sha256:{self.corrections.sha256[:16]}" if self.corrections else ""
        )
        if user is not None:
            version += f"+user.sha256:{user.sha256[:16]}"
        self._base_version = version
        self._fx: Mapping[str, Decimal] = user.fx if user else {"USD": Decimal(1)}
        # Resolved prices, each with the interval of instants over which it holds: the
        # lookup runs once per model and price change, not once per call.
        self._resolved: dict[
            tuple[str, str | None, str, int], tuple[Price | _Unpriced, datetime, datetime]
        ] = {}
        instants: set[datetime] = set()
        for layer in (user, self.corrections):
            if layer is not None:
                instants.update(e.effective_from for e in layer.models if e.effective_from)
                instants.update(d.effective_from for d in layer.discounts if d.effective_from)
        self._user_instants = sorted(instants)

    @property
    def version(self) -> str:
        """genai-prices version, plus the update's time when updated data is in use, plus the
        hash of the user price file."""
        snapshot = _gp_snapshot.get_snapshot()
        if not snapshot.from_auto_update:
            return self._base_version
        stamp = snapshot.timestamp.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        base, plus, user = self._base_version.partition("+")
        return f"{base}+update.{stamp}" + (f"+{user}" if plus else "")

    @classmethod
    def load(cls, prices: str | PathLike[str] | None = None, *, use_env: bool = True) -> Catalog:
        """The default catalog plus a user price file (argument, else ``OTEL_TOKENS_PRICES``)."""
        path = prices if prices is not None else (prices_path_from_env() if use_env else None)
        return cls(load_user_prices(path) if path is not None else None)

    # --- pricing ---------------------------------------------------------------------
    def price(
        self,
        usage: TokenUsage,
        model: str,
        *,
        provider: str | None = None,
        at: datetime | None = None,
        processing: Processing = "standard",
        context_tier: str | None = None,
    ) -> PriceResult:
        """Price ``usage`` of ``model`` with the prices in force at ``at`` (default: now).

        ``context_tier`` (e.g. ``above_200k``) prices at that long-context tier instead of
        deriving it from the usage, for aggregated points that carry it as an attribute.
        """
        at = _utc(at)
        resolved = self.resolve(model, provider=provider, at=at, processing=processing)
        if isinstance(resolved, _Unpriced):
            return self._unpriced(resolved, usage, model, provider, processing)
        fx = self._fx.get(resolved.currency)
        if fx is None:  # only reachable for catalog (USD) prices with a non-USD report
            missing = _Unpriced(
                "unpriced",
                f"price is in {resolved.currency} but the price file has no FX rate for it: "
                f"add 'fx: {{{resolved.currency}: <value in {self.currency}>}}'",
                resolved.price_id,
            )
            return self._unpriced(missing, usage, model, provider, processing)
        catalog_version = self.version
        if resolved.origin == "correction":
            head, user, rest = catalog_version.partition("+user.")
            catalog_version = head + self._corrections_tag + user + rest
        return compute(
            resolved,
            usage,
            fx=fx,
            currency=self.currency,
            catalog_version=catalog_version,
            processing=processing,
            provider=provider,
            model=model,
            context_tier=context_tier,
        )

    def price_call(
        self,
        usage: TokenUsage,
        served_model: str | None,
        requested_model: str | None = None,
        *,
        provider: str | None = None,
        at: datetime | None = None,
        processing: Processing = "standard",
        context_tier: str | None = None,
    ) -> PriceResult:
        """Price one call by the model that served it, else by the model it asked for.

        A served model the catalog does not know at all (a router's name, a snapshot newer
        than the data) is priced at the requested model's price, marked: status
        ``estimated`` and ``priced_model`` the requested model, so such calls can be found.
        A served model the catalog knows but cannot price (a bucket without a rate, a
        missing variant) stays unpriced: another model's price would be a guess.
        """
        model = served_model or requested_model or ""
        result = self.price(
            usage,
            model,
            provider=provider,
            at=at,
            processing=processing,
            context_tier=context_tier,
        )
        if (
            result.status != "unpriced"
            or result.price_id is not None  # known, but not priceable as asked
            or not requested_model
            or requested_model == model
        ):
            return result
        fallback = self.price(
            usage,
            requested_model,
            provider=provider,
            at=at,
            processing=processing,
            context_tier=context_tier,
        )
        if not fallback.is_priced:
            return result
        return replace(
            fallback,
            status="estimated",
            model=model,
            priced_model=requested_model,
            reason=(
                f"served model {model!r} has no price; priced at the requested model "
                f"{requested_model!r} ({fallback.price_id})"
            ),
        )

    def unit_price(
        self,
        usage: TokenUsage,
        served_model: str | None,
        requested_model: str | None = None,
        *,
        provider: str | None = None,
        at: datetime | None = None,
        processing: Processing = "standard",
        context_tier: str = "base",
    ) -> UnitPrice | None:
        """`price_call` of ``usage``, a count of one in one bucket, as a `UnitPrice` that
        prices any count of that bucket, with the instants between which it holds; None
        when it cannot (prices that change by the time of day)."""
        return unit_price(
            self,
            usage,
            served_model,
            requested_model,
            provider=provider,
            at=_utc(at),
            processing=processing,
            context_tier=context_tier,
        )

    def stable_window(
        self, model: str, provider: str | None = None, at: datetime | None = None
    ) -> tuple[datetime, datetime] | None:
        """The instants around ``at`` between which no price of ``model`` can change; None
        if it may change at any time (off-peak prices)."""
        name = model.strip().lower()
        gp_provider = genai_prices_provider(provider) or _known_provider(name)
        return self._validity(name, gp_provider, _utc(at))

    def fx_rate(self, currency: str) -> Decimal | None:
        """What one unit of ``currency`` is in the reporting currency (None: not known)."""
        return self._fx.get(currency)

    def _unpriced(
        self,
        why: _Unpriced,
        usage: TokenUsage,
        model: str,
        provider: str | None,
        processing: Processing,
    ) -> PriceResult:
        return PriceResult(
            status=why.status,  # type: ignore[arg-type]
            usage=usage,
            model=model,
            provider=provider,
            currency=self.currency,
            catalog_version=self.version,
            price_id=why.price_id,
            processing=processing,
            reason=why.reason,
        )

    def resolve(
        self,
        model: str,
        *,
        provider: str | None = None,
        at: datetime | None = None,
        processing: Processing = "standard",
    ) -> Price | _Unpriced:
        at = _utc(at)
        key = (model, provider, processing, id(_gp_snapshot.get_snapshot()))
        hit = self._resolved.get(key)
        if hit is not None and hit[1] <= at < hit[2]:
            return hit[0]
        name = model.strip().lower()
        gp_provider = genai_prices_provider(provider) or _known_provider(name)
        resolved: Price | _Unpriced | None = None
        if self.user is not None:
            entry = _entry(self.user.models, name, provider, gp_provider, at)
            if entry is not None:
                resolved = _user_price(entry, processing, "user")
        if resolved is None and self.corrections is not None:
            entry = _entry(self.corrections.models, name, provider, gp_provider, at)
            if entry is not None:
                resolved = _user_price(entry, processing, "correction")
                if isinstance(resolved, Price):  # a correction is a list price: discounts apply
                    resolved = _discounted(
                        resolved, self._discount(name, provider, gp_provider, at)
                    )
        if resolved is None:
            resolved = self._catalog_price(name, model, provider, gp_provider, at, processing)
        validity = self._validity(name, gp_provider, at)
        if validity is not None:
            if len(self._resolved) > 4096:
                self._resolved.clear()
            self._resolved[key] = (resolved, *validity)
        return resolved

    def _validity(
        self, name: str, gp_provider: str | None, at: datetime
    ) -> tuple[datetime, datetime] | None:
        """The instants around ``at`` between which no price of ``name`` can change."""
        instants = list(self._user_instants)
        try:
            _, info = _gp_snapshot.get_snapshot().find_provider_model(name, None, gp_provider, None)
        except LookupError:
            info = None
        if info is not None:
            constraints = [
                c.constraint for c in (info.prices if isinstance(info.prices, list) else ())
            ] + [v.constraint for v in info.price_variants or ()]
            for c in constraints:
                if isinstance(c, _gp.TimeOfDateConstraint):
                    return None  # changes every day (off-peak prices): not cached
                if isinstance(c, _gp.StartDateConstraint):
                    instants.append(datetime.combine(c.start_date, datetime.min.time(), UTC))
        lower = max((i for i in instants if i <= at), default=_EPOCH)
        upper = min((i for i in instants if i > at), default=datetime.max.replace(tzinfo=UTC))
        return lower, upper

    # --- user discounts ---------------------------------------------------------------
    def _discount(
        self, name: str, provider: str | None, gp_provider: str | None, at: datetime
    ) -> Discount | None:
        if self.user is None:
            return None
        best: tuple[tuple[int, datetime, int], Discount] | None = None
        for d in self.user.discounts:
            if not _provider_matches(d.provider, provider, gp_provider) or not _in_force(d, at):
                continue
            if d.model is not None:
                if d.model != name:
                    continue
                specificity = 3
            elif d.pattern is not None:
                if not fnmatch.fnmatchcase(name, d.pattern):
                    continue
                specificity = 2
            else:
                specificity = 1
            rank = (specificity, d.effective_from or _EPOCH, d.index)
            if best is None or rank > best[0]:
                best = (rank, d)
        return best[1] if best else None

    # --- genai-prices ------------------------------------------------------------------
    def _catalog_price(
        self,
        name: str,
        model: str,
        provider: str | None,
        gp_provider: str | None,
        at: datetime,
        processing: Processing,
    ) -> Price | _Unpriced:
        snapshot = _gp_snapshot.get_snapshot()
        try:
            gp_prov, info = snapshot.find_provider_model(name, None, gp_provider, None)
        except LookupError:
            where = f" from provider {provider!r}" if provider else ""
            return _Unpriced(
                "unpriced",
                f"no price for model {model!r}{where} in genai-prices "
                f"{self.genai_prices_version}"
                + (" or the user price file" if self.user else "")
                + f". Add one to a price file (OTEL_TOKENS_PRICES or --prices):\n"
                f"  models:\n    - model: {model}\n"
                + (f"      provider: {provider}\n" if provider else "")
                + "      prices: {input_mtok: '<USD per 1M input tokens>', "
                "output_mtok: '<USD per 1M output tokens>'}",
            )
        base, since = _standard_prices(info, at)
        price_id = f"genai-prices:{gp_prov.id}/{info.id}" + (f"@{since}" if since else "")
        rates = _rates_of(base)
        if not rates:
            return _Unpriced(
                "unpriced",
                f"genai-prices lists {gp_prov.id}/{info.id} but gives it no rate "
                "(e.g. included in a subscription); add a price to a price file to bill it",
                price_id,
            )
        if processing != "standard":
            context = _VARIANT_CONTEXT[processing]
            overlay: dict[str, Rate] = {}
            found = False
            for variant in info.price_variants or ():
                if variant.constraint is not None and not variant.constraint.active(at):
                    continue
                if any(context.get(k) != v for k, v in variant.when.items()):
                    continue
                found = True
                for key, rate in _rates_of(variant.prices).items():
                    overlay.setdefault(key, rate)
            price_id += f"#{processing}"
            if not found:
                return _Unpriced(
                    "variant_unavailable",
                    f"genai-prices defines no {processing} price for {gp_prov.id}/{info.id} "
                    f"in force at {at.isoformat()}",
                    price_id,
                )
            rates = {**rates, **overlay}
        listed = Price(
            price_id=price_id,
            provider=gp_prov.id,
            model=info.id,
            currency="USD",
            rates=rates,
            origin="genai-prices",
        )
        return _discounted(listed, self._discount(name, provider, gp_provider, at))


def _discounted(price: Price, discount: Discount | None) -> Price:
    if discount is None:
        return price
    with localcontext(EXACT):  # a discounted rate is exact too, or an error
        factor = discount.factor
        rates = {
            k: (r.scaled(factor) if isinstance(r, Tiered) else r * factor)
            for k, r in price.rates.items()
        }
    return replace(
        price,
        price_id=f"{price.price_id}~discount{discount.index}:{discount.percent}%",
        rates=rates,
    )


def _entry(
    entries: tuple[UserPrice, ...],
    name: str,
    provider: str | None,
    gp_provider: str | None,
    at: datetime,
) -> UserPrice | None:
    """The entry of ``entries`` that prices ``name`` at ``at``: exact, snapshot, pattern."""
    in_force = [
        e
        for e in entries
        if _provider_matches(e.provider, provider, gp_provider) and _in_force(e, at)
    ]
    exact = [e for e in in_force if e.model == name]
    if exact:
        return max(exact, key=lambda e: (e.effective_from or _EPOCH, e.index))
    snapshot_of = [
        e for e in in_force if e.model is not None and _is_snapshot(name, e.model, gp_provider)
    ]
    if snapshot_of:
        return max(snapshot_of, key=lambda e: (e.effective_from or _EPOCH, e.index))
    patterned = [
        e for e in in_force if e.pattern is not None and fnmatch.fnmatchcase(name, e.pattern)
    ]
    if not patterned:
        return None
    first = min(patterned, key=lambda e: e.index)
    same = [e for e in patterned if (e.pattern, e.provider) == (first.pattern, first.provider)]
    return max(same, key=lambda e: (e.effective_from or _EPOCH, e.index))


def _is_snapshot(name: str, model: str, gp_provider: str | None) -> bool:
    """Is ``name`` a dated snapshot of ``model`` (gpt-4o-2024-08-06 of gpt-4o)?

    When genai-prices knows the snapshot, it says which model it is (claude-sonnet-4-20250514
    is claude-sonnet-4-0; gpt-4o-2024-05-13, with prices of its own, is not gpt-4o);
    a snapshot it does not know yet is one by its name.
    """
    undated = _SNAPSHOT_DATE.sub("", name)
    if undated == name or _SNAPSHOT_DATE.search(model):
        return False  # not a snapshot, or an entry for another snapshot
    known = _known_model(name, gp_provider)
    if known is not None:
        return known == (_known_model(model, gp_provider) or model)
    return undated == model


def _known_model(name: str, gp_provider: str | None) -> str | None:
    try:
        _, info = _gp_snapshot.get_snapshot().find_provider_model(name, None, gp_provider, None)
    except LookupError:
        return None
    return info.id


def _known_provider(name: str) -> str | None:
    """The genai-prices provider of ``name``, the one a call would name (None: unknown)."""
    try:
        provider, _ = _gp_snapshot.get_snapshot().find_provider_model(name, None, None, None)
    except LookupError:
        return None
    return provider.id


def catalog_rates(model: str, provider: str | None, at: datetime) -> dict[str, Rate] | None:
    """genai-prices' standard rates for ``model`` at ``at`` (None: it does not know it)."""
    name = model.strip().lower()
    try:
        _, info = _gp_snapshot.get_snapshot().find_provider_model(
            name, None, genai_prices_provider(provider), None
        )
    except LookupError:
        return None
    return _rates_of(_standard_prices(info, _utc(at))[0])


def known_to_catalog(entry: UserPrice | Discount, corrections: UserPrices | None) -> bool:
    """Does ``entry`` (exact model or pattern) match any model genai-prices or the
    corrections know, for its provider? An entry that does not is a custom model, or a typo."""
    gp_provider = genai_prices_provider(entry.provider)
    if entry.model is not None:
        if corrections is not None and any(c.model == entry.model for c in corrections.models):
            return True
        return _known_model(entry.model, gp_provider) is not None
    if entry.pattern is None:
        return True  # a provider-wide discount
    for prov in _gp_snapshot.get_snapshot().providers:
        if gp_provider is not None and prov.id != gp_provider:
            continue
        if any(fnmatch.fnmatchcase(m.id.lower(), entry.pattern) for m in prov.models):
            return True
    return False


def _user_price(
    entry: UserPrice, processing: Processing, origin: Literal["user", "correction"]
) -> Price | _Unpriced:
    since = (
        entry.effective_from.isoformat().replace("+00:00", "Z") if entry.effective_from else None
    )
    price_id = f"{origin}:{entry.key}" + (f"@{since}" if since else "")
    rates: Mapping[str, Rate] = entry.rates
    if processing != "standard":
        price_id += f"#{processing}"
        variant = entry.variants.get(processing)
        if variant is None:
            where = "the price file" if origin == "user" else "otel-tokens' corrections"
            return _Unpriced(
                "variant_unavailable",
                f"{where} entry models[{entry.index}] ({entry.key}) defines no "
                f"'{processing}' variant; add one under 'variants:' of your price file",
                price_id,
            )
        rates = {**rates, **variant}
    return Price(
        price_id=price_id,
        provider=entry.provider or "*",
        model=entry.model or f"pattern:{entry.pattern}",
        currency=entry.currency,
        rates=rates,
        effective_from=entry.effective_from,
        origin=origin,
    )


def _provider_matches(wanted: str | None, provider: str | None, gp_provider: str | None) -> bool:
    if wanted is None:
        return True
    return wanted in (provider.lower() if provider else None, gp_provider)


def _in_force(entry: UserPrice | Discount, at: datetime) -> bool:
    return entry.effective_from is None or entry.effective_from <= at


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


def _standard_prices(info: _gp.ModelInfo, at: datetime) -> tuple[_gp.ModelPrice, str | None]:
    if isinstance(info.prices, _gp.ModelPrice):
        return info.prices, None
    chosen = info.prices[0]
    for conditional in reversed(info.prices):  # the last active one wins
        if conditional.constraint is None or conditional.constraint.active(at):
            chosen = conditional
            break
    c = chosen.constraint
    if isinstance(c, _gp.StartDateConstraint):
        return chosen.prices, c.start_date.isoformat()
    if isinstance(c, _gp.TimeOfDateConstraint):
        return chosen.prices, f"daily-{c.start_time.isoformat()}-{c.end_time.isoformat()}"
    return chosen.prices, None


def _rates_of(prices: _gp.ModelPrice) -> dict[str, Rate]:
    rates: dict[str, Rate] = {}
    for key in PRICE_KEYS:
        value: Any = getattr(prices, key, None)
        if value is None:
            continue
        if isinstance(value, _gp.TieredPrices):
            rates[key] = Tiered(value.base, tuple((t.start, t.price) for t in value.tiers))
        else:
            rates[key] = Decimal(value)
    return rates


_default: Catalog | None = None
_default_lock = threading.Lock()


ENV_PRICE_UPDATES = "OTEL_TOKENS_PRICE_UPDATES"
_updater: Any = None


def start_price_updates(interval_seconds: float = 3600) -> None:
    """Opt in to fetching genai-prices' newest data in the background (network!).

    Until the first fetch, and if fetching fails, the bundled data stays in use. Results
    priced with updated data carry ``+update.<time>`` in their catalog version.
    """
    global _updater
    with _default_lock:
        if _updater is None:
            from genai_prices import UpdatePrices

            _updater = UpdatePrices(update_interval=interval_seconds)
            _updater.start(wait=False)


def default_catalog() -> Catalog:
    """The process-wide catalog: genai-prices plus ``OTEL_TOKENS_PRICES`` if set.

    No network is used unless ``OTEL_TOKENS_PRICE_UPDATES=true`` opts in to updates.
    """
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Catalog.load()
        if os.environ.get(ENV_PRICE_UPDATES, "").lower() in ("1", "true", "yes", "on"):
            start_price_updates()
    return _default


def set_default_catalog(catalog: Catalog | None) -> None:
    """Replace the process-wide catalog (``None``: reload from the environment on next use)."""
    global _default
    with _default_lock:
        _default = catalog
