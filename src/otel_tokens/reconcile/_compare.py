"""The comparison: the ledger's tokens and cost per UTC day and model (and scope) against a
provider's report, each difference with its drift and its likely cause."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow
from typing import Literal

from .. import semconv as sc
from ..records import CostRecord
from ._model import CostRow, Covers, ProviderReport

# Sums of money are exact: a rounding raises instead of changing an amount.
_EXACT = Context(prec=1000, traps=[Inexact, InvalidOperation, Overflow])
_PERCENT = Decimal("0.0001")

Measure = Literal["tokens", "requests", "cost"]

AGREE = "agree"
LEDGER_BELOW = "ledger_below_provider"
LEDGER_ABOVE = "ledger_above_provider"
PRICE_DIFFERENCE = "price_difference"
UNPRICED = "unpriced_in_ledger"
CURRENCY = "currency_mismatch"

CAUSES: Mapping[str, str] = {
    AGREE: "within the threshold",
    LEDGER_BELOW: "ledger below provider: telemetry lost, or calls made outside instrumentation",
    LEDGER_ABOVE: "ledger above provider: double counting, or manipulated counts",
    PRICE_DIFFERENCE: "tokens agree, cost differs: a price difference (our catalog, a "
    "discount or a price change)",
    UNPRICED: "the ledger has unpriced usage here: its cost is unknown, not 0",
    CURRENCY: "the ledger's currency is not the provider's",
}


@dataclass(frozen=True, slots=True)
class DriftLine:
    """One compared quantity: a token bucket (or request count) or a cost."""

    day: date
    model: str | None  # None: a cost the provider reports for all models of the day
    scope: str | None  # project or workspace, when compared per scope
    measure: Measure
    bucket: str | None  # the token bucket; None for a cost
    ledger: Decimal | None  # None: unpriced in the ledger
    provider: Decimal
    currency: str | None = None
    covers: Covers = "all"
    threshold: Decimal = Decimal(1)
    currency_mismatch: bool = False
    # Token lines: the ledger's cost of one token of this bucket (None: unknown), so that a
    # cost drift can be split into what the token drift explains and the rest (the price).
    unit_cost: Decimal | None = None

    @property
    def drift(self) -> Decimal | None:
        """Ledger minus provider (negative: the ledger has less)."""
        return None if self.ledger is None else _EXACT.subtract(self.ledger, self.provider)

    @property
    def percent(self) -> Decimal | None:
        """The drift in percent of the provider's figure (None when the provider's is 0)."""
        drift = self.drift
        if drift is None or not self.provider:
            return None
        return (drift * 100 / self.provider).quantize(_PERCENT)

    @property
    def exceeds(self) -> bool:
        return self.cause_code != AGREE

    @property
    def cause_code(self) -> str:
        if self.currency_mismatch:
            return CURRENCY
        if self.measure == "cost" and self.ledger is None:
            return UNPRICED
        drift = self.drift
        if not drift or not self._over_threshold():
            return AGREE
        return LEDGER_BELOW if drift < 0 else LEDGER_ABOVE

    def _over_threshold(self) -> bool:
        percent = self.percent
        return percent is None or abs(percent) > self.threshold


@dataclass(frozen=True, slots=True)
class Finding:
    """A drift line with its cause decided (a cost's cause depends on its tokens)."""

    line: DriftLine
    cause: str

    @property
    def exceeds(self) -> bool:
        return self.line.exceeds


@dataclass(frozen=True, slots=True)
class Reconciliation:
    provider: str
    since: datetime
    until: datetime
    threshold: Decimal
    findings: tuple[Finding, ...]
    with_costs: bool

    @property
    def exceeded(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.exceeds)


def _day(end: datetime) -> date:
    # A record ending exactly at midnight is the day before's, as ``report --by day``.
    return (end.astimezone(UTC) - timedelta(microseconds=1)).date()


_Key = tuple[date, str, str | None]  # day, model, scope


def reconcile(
    report: ProviderReport,
    records: Iterable[CostRecord],
    since: datetime,
    until: datetime,
    *,
    threshold: Decimal = Decimal(1),
    scope_tag: str | None = None,
) -> Reconciliation:
    """Compare the ledger's ``records`` (period end in ``(since, until]``) with ``report``.

    Per UTC day and model, and per scope when ``scope_tag`` names the ledger tag holding the
    provider's project or workspace id (else the provider's scopes are summed).
    """
    first, last = since.astimezone(UTC).date(), until.astimezone(UTC).date()
    ledger_tokens: dict[_Key, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    # (day, model, scope, compared bucket) -> currency -> cost; None once unpriced
    ledger_cost: dict[tuple[date, str, str | None, str], dict[str, Decimal | None]] = defaultdict(
        dict
    )
    for r in records:
        if r.provider != report.provider:
            continue
        scope = r.tags.get(scope_tag) if scope_tag else None
        key = (_day(r.period_end), r.model, scope)
        bucket = report.fold.get(r.bucket, r.bucket)
        if r.quantity:
            ledger_tokens[key][bucket] += r.quantity
        sums = ledger_cost[(*key, bucket)]
        if r.billed_cost is None:
            sums[r.currency] = None
        elif r.currency not in sums or sums[r.currency] is not None:
            before = sums.get(r.currency) or Decimal(0)
            sums[r.currency] = _EXACT.add(before, r.billed_cost)

    provider_tokens: dict[_Key, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in report.usage:
        if first <= row.day < last:
            key = (row.day, row.model, row.scope if scope_tag else None)
            for bucket, n in row.tokens.items():
                provider_tokens[key][bucket] += n

    lines: list[DriftLine] = []
    for key in sorted(set(ledger_tokens) | set(provider_tokens), key=_sort_key):
        ours, theirs = ledger_tokens.get(key, {}), provider_tokens.get(key, {})
        for bucket in _bucket_order(set(ours) | set(theirs)):
            if not ours.get(bucket) and not theirs.get(bucket):
                continue
            lines.append(
                DriftLine(
                    key[0],
                    key[1],
                    key[2],
                    "requests" if bucket in sc.REQUEST_BUCKETS else "tokens",
                    bucket,
                    Decimal(ours.get(bucket, 0)),
                    Decimal(theirs.get(bucket, 0)),
                    threshold=threshold,
                    unit_cost=_unit_cost(ledger_cost.get((*key, bucket)), ours.get(bucket, 0)),
                )
            )
    if report.costs is not None:
        lines.extend(_cost_lines(report.costs, ledger_cost, first, last, threshold, scope_tag))
    findings = tuple(Finding(line, _cause(line, lines)) for line in lines)
    return Reconciliation(
        report.provider, since, until, threshold, findings, report.costs is not None
    )


def _cost_lines(
    costs: Iterable[CostRow],
    ledger_cost: Mapping[tuple[date, str, str | None, str], Mapping[str, Decimal | None]],
    first: date,
    last: date,
    threshold: Decimal,
    scope_tag: str | None,
) -> list[DriftLine]:
    # The provider's cost lines, summed per what they cover.
    theirs: dict[tuple[date, str | None, str | None, Covers], dict[str, Decimal]] = defaultdict(
        dict
    )
    for row in costs:
        if first <= row.day < last:
            key = (row.day, row.model, row.scope if scope_tag else None, row.covers)
            sums = theirs[key]
            sums[row.currency] = _EXACT.add(sums.get(row.currency, Decimal(0)), row.amount)

    def covered(cell: tuple[date, str, str | None, str], key: tuple[object, ...]) -> bool:
        day, model, scope, covers = key
        if (cell[0], cell[2]) != (day, scope):
            return False
        if model is not None and cell[1] != model:
            return False
        return covers == "all" or (covers == "requests") == (cell[3] in sc.REQUEST_BUCKETS)

    # Ledger cost the provider's report has no line for: compared with 0.
    for cell in ledger_cost:
        if first <= cell[0] < last and not any(covered(cell, k) for k in theirs):
            requests = cell[3] in sc.REQUEST_BUCKETS
            covers: Covers = "requests" if requests else "tokens"
            theirs[(cell[0], None if requests else cell[1], cell[2], covers)] = {}

    lines = []
    for key in sorted(theirs, key=lambda k: (k[0], k[1] or "", k[2] or "", k[3])):
        day, model, scope, covers = key
        provider_sums = theirs[key]
        ours: dict[str, Decimal | None] = {}
        for cell, amounts in ledger_cost.items():
            if covered(cell, key):
                for currency, amount in amounts.items():
                    if amount is None or (currency in ours and ours[currency] is None):
                        ours[currency] = None
                    else:
                        ours[currency] = _EXACT.add(ours.get(currency) or Decimal(0), amount)
        currencies = sorted(set(provider_sums) | set(ours))
        if not currencies:  # neither side has a cost: nothing to compare
            continue
        currency = currencies[0]
        lines.append(
            DriftLine(
                day,
                model,
                scope,
                "cost",
                None,
                ours.get(currency, Decimal(0)),
                provider_sums.get(currency, Decimal(0)),
                currency="/".join(currencies),
                covers=covers,
                threshold=threshold,
                currency_mismatch=len(currencies) > 1,
            )
        )
    return lines


def _cause(line: DriftLine, lines: list[DriftLine]) -> str:
    code = line.cause_code
    if line.measure != "cost" or code not in (LEDGER_BELOW, LEDGER_ABOVE):
        return code
    # A cost drift: the tokens it is for explain it, or it is the price, or both.
    tokens = [
        other
        for other in lines
        if other.measure != "cost"
        and other.day == line.day
        and other.scope == line.scope
        and (line.model is None or other.model == line.model)
        and (line.covers == "all" or (line.covers == "requests") == (other.measure == "requests"))
    ]
    causes = [c for c in (LEDGER_BELOW, LEDGER_ABOVE) if c in {t.cause_code for t in tokens}]
    if not causes:
        return PRICE_DIFFERENCE
    # What the token drift costs at the ledger's own prices; what it leaves unexplained is
    # a price difference when it is over the threshold too.
    if all(t.unit_cost is not None for t in tokens if t.drift):
        explained = sum(
            (t.drift * t.unit_cost for t in tokens if t.drift and t.unit_cost is not None),
            Decimal(0),
        )
        rest = DriftLine(
            line.day,
            line.model,
            line.scope,
            "cost",
            None,
            line.ledger,
            line.provider + explained,
            threshold=line.threshold,
        )
        if rest.cause_code != AGREE:
            causes.append(PRICE_DIFFERENCE)
    return "+".join(causes)


def _unit_cost(costs: Mapping[str, Decimal | None] | None, quantity: int) -> Decimal | None:
    if not costs or len(costs) != 1 or not quantity:
        return None
    (cost,) = costs.values()
    return None if cost is None else cost / quantity


_ORDER = {b: i for i, b in enumerate((*sc.TOKEN_BUCKETS, *sc.REQUEST_BUCKETS))}


def _bucket_order(buckets: set[str]) -> list[str]:
    return sorted(buckets, key=lambda b: (_ORDER.get(b, len(_ORDER)), b))


def _sort_key(key: _Key) -> tuple[date, str, str]:
    return key[0], key[1], key[2] or ""
