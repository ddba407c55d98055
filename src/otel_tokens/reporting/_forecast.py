"""Forecasts of spend and tokens from a ledger's own history, and their backtested error.

The method, stated in every output (``ForecastMethod.describe``):

* the history is a series of UTC daily totals; a record's day is the day its charge period
  ends in (a record ending exactly at midnight counts in the day before), as ``report --by
  day`` groups them; a day without records inside the series counts as 0;
* a forecast made at a cut-off uses the full days of a trailing window before it (28 by
  default; the days before the series' first record are unknown, not 0);
* day-of-week seasonality: a future day is expected to see the mean of the same weekday's
  totals in the window; with fewer than 14 days of history (two of each weekday), the mean
  of all its days instead;
* the error figure is a backtest on the same history: forecasts of the next 7 days made at
  each of up to 28 past daily cut-offs (each with at least 7 days of history before it),
  compared with what the ledger then recorded, as MAPE (the mean absolute percentage error;
  cut-offs whose 7 days recorded nothing are left out, a percentage of 0 being undefined).

What was spent is exact (the ledger's Decimals summed without rounding); what is expected
is an estimate (Decimal, 28 significant digits) and is always reported apart from it, never
added into billed totals except as a clearly named projection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Context, Decimal, localcontext

from ._common import EXACT

DAY = timedelta(days=1)
_SECONDS_PER_DAY = Decimal(86400)
# Estimates are rounded: a mean of 7 days is no exact amount of money.
ESTIMATE = Context(prec=28, rounding=ROUND_HALF_EVEN)
_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class ForecastMethod:
    """How forecasts are made and backtested (the defaults are the documented method)."""

    window_days: int = 28
    seasonal_min_days: int = 14
    backtest_horizon_days: int = 7
    backtest_cutoffs: int = 28
    backtest_min_history_days: int = 7

    def __post_init__(self) -> None:
        for name in ("window_days", "backtest_horizon_days", "backtest_cutoffs"):
            if getattr(self, name) < 1:
                raise ValueError(f"forecast {name} must be at least 1")
        if self.backtest_min_history_days < 1 or self.seasonal_min_days < 1:
            raise ValueError("forecast minimum histories must be at least 1 day")

    def describe(self) -> str:
        return (
            f"trailing {self.window_days}-day window of UTC daily totals with day-of-week "
            f"seasonality (a day expects the mean of the same weekday in the window; the "
            f"mean of all days with under {self.seasonal_min_days} days of history); error: "
            f"MAPE of {self.backtest_horizon_days}-day forecasts made at up to "
            f"{self.backtest_cutoffs} past daily cut-offs"
        )


def day_of(end: datetime) -> date:
    """The UTC day of a record ending at ``end`` (charge period ends are exclusive)."""
    return (end.astimezone(UTC) - timedelta(microseconds=1)).date()


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def daily_totals(uses: Iterable[tuple[datetime, Decimal]]) -> dict[date, Decimal]:
    """Exact sum of the amounts per UTC day of their period end."""
    out: dict[date, Decimal] = {}
    with localcontext(EXACT):
        for end, amount in uses:
            day = day_of(end)
            out[day] = out.get(day, Decimal(0)) + amount
    return out


@dataclass(frozen=True, slots=True)
class DailyRates:
    """The expected total of a day, by weekday (``date.weekday()``: Monday is 0)."""

    by_weekday: tuple[Decimal, ...]
    history_days: int  # full days of history the rates come from
    seasonal: bool

    def day(self, day: date) -> Decimal:
        return self.by_weekday[day.weekday()]

    def expected(self, start: datetime, end: datetime) -> Decimal:
        """Expected total over ``[start, end)``; a part of a day gets its share of the day."""
        total = Decimal(0)
        cursor = start.astimezone(UTC)
        end = end.astimezone(UTC)
        with localcontext(ESTIMATE):
            while cursor < end:
                day = cursor.date()
                stop = min(midnight(day) + DAY, end)
                seconds = Decimal((stop - cursor).total_seconds())
                rate = self.day(day)
                total += rate if seconds == _SECONDS_PER_DAY else rate * seconds / _SECONDS_PER_DAY
                cursor = stop
        return total

    def runs_out(self, start: datetime, amount: Decimal, until: datetime) -> datetime | None:
        """When the expected use from ``start`` reaches ``amount``, if before ``until``
        (the instant is rounded up to the second); ``start`` when nothing is left."""
        if amount <= 0:
            return start
        cursor, left = start.astimezone(UTC), amount
        until = until.astimezone(UTC)
        with localcontext(ESTIMATE):
            while cursor < until:
                stop = min(midnight(cursor.date()) + DAY, until)
                can = self.expected(cursor, stop)
                if can >= left:
                    seconds = Decimal((stop - cursor).total_seconds()) * left / can
                    whole = int(seconds.to_integral_value(ROUND_CEILING))
                    return min(cursor + timedelta(seconds=whole), stop)
                left -= can
                cursor = stop
        return None


def fit(
    daily: Mapping[date, Decimal],
    cutoff: date,
    method: ForecastMethod,
    first: date | None = None,
) -> DailyRates | None:
    """Rates from the full days before ``cutoff`` in the trailing window; None without any.

    ``first`` is the series' first day (default: its earliest day with a total)."""
    known = [d for d in daily if d < cutoff]
    if first is None:
        if not known:
            return None
        first = min(known)
    lo = max(first, cutoff - timedelta(days=method.window_days))
    days = [lo + timedelta(days=i) for i in range((cutoff - lo).days)]
    if not days:
        return None
    seasonal = len(days) >= method.seasonal_min_days
    with localcontext(ESTIMATE):
        if seasonal:
            rates = []
            for weekday in range(7):
                same = [daily.get(d, Decimal(0)) for d in days if d.weekday() == weekday]
                rates.append(sum(same, Decimal(0)) / len(same))
            by_weekday = tuple(rates)
        else:
            mean = sum((daily.get(d, Decimal(0)) for d in days), Decimal(0)) / len(days)
            by_weekday = (mean,) * 7
    return DailyRates(by_weekday, len(days), seasonal)


@dataclass(frozen=True, slots=True)
class Backtest:
    """The method's error on this history: MAPE in percent (two places) of ``horizon_days``
    forecasts at ``cutoffs`` past cut-offs; None when no cut-off could be scored."""

    mape: Decimal | None
    cutoffs: int
    horizon_days: int


def backtest(
    daily: Mapping[date, Decimal],
    until: date,
    method: ForecastMethod,
    first: date | None = None,
) -> Backtest:
    """Score the method at past cut-offs whose horizon ends by ``until`` (the first day not
    fully known): the forecast of the horizon against the recorded total."""
    horizon = method.backtest_horizon_days
    if first is None:
        known = [d for d in daily if d < until]
        if not known:
            return Backtest(None, 0, horizon)
        first = min(known)
    last = until - timedelta(days=horizon)
    errors: list[Decimal] = []
    for i in range(method.backtest_cutoffs):
        cutoff = last - timedelta(days=i)
        if (cutoff - first).days < method.backtest_min_history_days:
            break
        rates = fit(daily, cutoff, method, first)
        assert rates is not None  # the history is at least one day
        with localcontext(EXACT):
            actual = sum(
                (daily.get(cutoff + timedelta(days=j), Decimal(0)) for j in range(horizon)),
                Decimal(0),
            )
        if actual == 0:
            continue
        forecast = rates.expected(midnight(cutoff), midnight(cutoff + timedelta(days=horizon)))
        with localcontext(ESTIMATE):
            # abs: adjustment records can make a week's total negative.
            errors.append(abs(actual - forecast) / abs(actual))
    if not errors:
        return Backtest(None, 0, horizon)
    with localcontext(ESTIMATE):
        mape = (sum(errors, Decimal(0)) * 100 / len(errors)).quantize(_CENT)
    return Backtest(mape, len(errors), horizon)


@dataclass(frozen=True, slots=True)
class Forecast:
    """One series (a group's cost in one currency, or its tokens) over one period.

    ``spent`` is exact (recorded in ``(period_start, at]``); ``expected_rest`` (the rest of
    the period, ``(at, period_end]``) and ``projected`` (their sum) are estimates, None when
    the series has no full day of history before ``at``."""

    spent: Decimal
    expected_rest: Decimal | None
    projected: Decimal | None
    rates: DailyRates | None
    backtest: Backtest


def forecast(
    uses: Iterable[tuple[datetime, Decimal]],
    at: datetime,
    period_start: datetime,
    period_end: datetime,
    method: ForecastMethod,
) -> Forecast:
    """Forecast one series from its uses (``(period end, amount)``; later than ``at`` ignored)."""
    known = [(end, amount) for end, amount in uses if end <= at]
    with localcontext(EXACT):
        spent = sum((a for end, a in known if period_start < end), Decimal(0))
    daily = daily_totals(known)
    cutoff = at.astimezone(UTC).date()  # its full days are the ones before at's day
    rates = fit(daily, cutoff, method)
    check = backtest(daily, cutoff, method)
    if rates is None:
        return Forecast(spent, None, None, None, check)
    rest = rates.expected(at, period_end) if at < period_end else Decimal(0)
    with localcontext(ESTIMATE):
        projected = spent + rest
    return Forecast(spent, rest, projected, rates, check)
