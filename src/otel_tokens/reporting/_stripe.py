"""Stripe Billing meter event payloads, and the tenant to Stripe customer map."""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path
from typing import IO, Any, Literal, get_args

from .. import semconv as sc
from ..records import CostRecord
from ._common import EXACT, ExportError, ExportResult, json_line

StripeValue = Literal["tokens", "cost-micros"]
STRIPE_VALUES: tuple[str, ...] = get_args(StripeValue)
DEFAULT_EVENT_NAMES: dict[str, str] = {"tokens": "llm_tokens", "cost-micros": "llm_cost_micros"}
EVENT_NAME_FIELDS = ("provider", "model", "bucket", "processing", "currency", "unit")
_STRIPE_MAX_AGE = timedelta(days=35)
_STRIPE_MAX_AHEAD = timedelta(minutes=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS = Decimal(1_000_000)


def event_name_fields(template: str) -> set[str]:
    """The ``{field}`` names in an event-name template (ValueError when malformed/unknown)."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as exc:
        raise ValueError(f"bad event name {template!r}: {exc}") from None
    unknown = names - set(EVENT_NAME_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown field(s) in event name {template!r}: {', '.join(sorted(unknown))}; "
            f"use {', '.join('{' + f + '}' for f in EVENT_NAME_FIELDS)}"
        )
    return names


def _stripe_timestamp(end: datetime) -> int:
    """The last whole second inside the charge period (its end is exclusive).

    A record ending at 2026-04-01T00:00:00Z is stamped 2026-03-31T23:59:59Z, so it falls in the
    same Stripe billing period as the export window ``(since, until]`` it was selected by.
    """
    micros = (end - _EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1_000_000) - 1


def stripe_events(
    records: Iterable[CostRecord],
    *,
    value: str = "tokens",
    customers: Mapping[str, str] | None = None,
    event_name: str | None = None,
    now: datetime | None = None,
) -> tuple[list[dict[str, Any]], ExportResult]:
    """Stripe meter event payloads (v1 ``billing/meter_events``), one per exported record.

    ``identifier`` is the record id (stable across exports; Stripe deduplicates on it);
    ``payload`` holds ``stripe_customer_id`` (the tenant, or ``customers[tenant]``) and
    ``value`` as a whole-number string, as Stripe's payload is a map of strings:

    * ``tokens``: the record's token count; every record whose tokens are known, priced or
      not. Request buckets (web_search) are left out unless the event name has ``{unit}``
      or ``{bucket}``, so requests never add to a token meter;
    * ``cost-micros``: the billed cost in millionths of the currency unit, priced records
      only. A record's cost is rarely a whole number of micros, so values are apportioned
      by cumulative rounding per customer and event name, in ledger order: the values of an
      export add up to its exact cost rounded half-even to a whole micro, never drifting.
      Several currencies need ``{currency}`` in the event name (one meter per currency).

    Records without a tenant are left out; with ``customers`` given, a tenant missing from it
    is an error (nothing is billed to a guessed customer).
    """
    if value not in STRIPE_VALUES:
        raise ExportError(f"unknown Stripe value {value!r}; use {' or '.join(STRIPE_VALUES)}")
    template = event_name or DEFAULT_EVENT_NAMES[value]
    try:
        fields = event_name_fields(template)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    now = now or datetime.now(UTC)
    result = ExportResult()
    events: list[dict[str, Any]] = []
    unmapped: set[str] = set()
    currencies: set[str] = set()
    exact: dict[tuple[str, str], Decimal] = {}
    sent: dict[tuple[str, str], int] = {}
    too_old = too_new = 0
    for record in records:
        requests = record.bucket in sc.REQUEST_BUCKETS
        if record.tenant is None:
            result.leave_out("no tenant, so no Stripe customer")
            continue
        if value == "tokens" and requests and not fields & {"unit", "bucket"}:
            result.leave_out(
                f"{record.bucket} requests, not tokens (put {{unit}} or {{bucket}} in "
                "--event-name to export them to their own meter)"
            )
            continue
        if value == "cost-micros" and record.billed_cost is None:
            result.leave_out(f"{record.pricing_status} (no cost)")
            continue
        if customers is not None:
            customer = customers.get(record.tenant)
            if customer is None:
                unmapped.add(record.tenant)
                continue
        else:
            customer = record.tenant
        name = template.format(
            provider=record.provider,
            model=record.model,
            bucket=record.bucket,
            processing=record.processing,
            currency=record.currency,
            unit="requests" if requests else "tokens",
        )
        if not name or len(name) > 100:
            raise ExportError(f"Stripe event name {name!r} must have 1 to 100 characters")
        if value == "tokens":
            amount = record.quantity
        else:
            assert record.billed_cost is not None
            currencies.add(record.currency)
            key = (customer, name)
            with localcontext(EXACT):
                total = exact.get(key, Decimal(0)) + record.billed_cost * _MICROS
            exact[key] = total
            target = int(total.to_integral_value(rounding=ROUND_HALF_EVEN))
            amount = target - sent.get(key, 0)
            sent[key] = target
        timestamp = _stripe_timestamp(record.period_end)
        when = _EPOCH + timedelta(seconds=timestamp)
        too_old += when < now - _STRIPE_MAX_AGE
        too_new += when > now + _STRIPE_MAX_AHEAD
        events.append(
            {
                "event_name": name,
                "identifier": record.id,
                "payload": {"stripe_customer_id": customer, "value": str(amount)},
                "timestamp": timestamp,
            }
        )
    if unmapped:
        shown = ", ".join(sorted(unmapped)[:10]) + (" ..." if len(unmapped) > 10 else "")
        raise ExportError(
            f"{len(unmapped)} tenant(s) have no Stripe customer in --customer-map: {shown}"
        )
    if len(currencies) > 1 and "currency" not in fields:
        raise ExportError(
            f"costs are in several currencies ({', '.join(sorted(currencies))}): put "
            "{currency} in --event-name so that each currency has its own meter"
        )
    if any(exact[k] != sent[k] for k in exact):
        result.notes.append(
            "cost-micros: each customer's and meter's values add up to the exact cost "
            "rounded half-even to a whole micro"
        )
    if too_old:
        result.notes.append(
            f"{too_old} event(s) are more than 35 days old: Stripe rejects meter events "
            "older than 35 days"
        )
    if too_new:
        result.notes.append(f"{too_new} event(s) are more than 5 minutes in the future")
    result.written = len(events)
    return events, result


def write_stripe(events: Iterable[Mapping[str, Any]], out: IO[str]) -> None:
    for event in events:
        out.write(json_line(event))


def load_customer_map(specs: Sequence[str]) -> dict[str, str]:
    """``--customer-map`` values: ``TENANT=cus_...`` pairs, or files of such lines (``#``
    comments and blank lines allowed) or of one JSON object ``{"tenant": "cus_..."}``."""
    mapping: dict[str, str] = {}

    def put(tenant: str, customer: str, where: str) -> None:
        tenant, customer = tenant.strip(), customer.strip()
        if not tenant or not customer:
            raise ExportError(f"{where}: expected TENANT=CUSTOMER_ID")
        if mapping.get(tenant, customer) != customer:
            raise ExportError(
                f"{where}: tenant {tenant!r} is mapped to both {mapping[tenant]!r} and {customer!r}"
            )
        mapping[tenant] = customer

    for spec in specs:
        path = Path(spec)
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ExportError(f"cannot read customer map {spec}: {exc}") from None
            if text.lstrip().startswith("{"):
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ExportError(f"customer map {spec}: not valid JSON: {exc}") from None
                if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
                    raise ExportError(f"customer map {spec}: values must be strings")
                for tenant, customer in data.items():
                    put(tenant, customer, spec)
                continue
            for n, raw in enumerate(text.splitlines(), start=1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                if "=" not in line:
                    raise ExportError(f"{spec}:{n}: expected TENANT=CUSTOMER_ID, got {line!r}")
                tenant, customer = line.rsplit("=", 1)
                put(tenant, customer, f"{spec}:{n}")
        elif "=" in spec:
            tenant, customer = spec.rsplit("=", 1)
            put(tenant, customer, f"--customer-map {spec!r}")
        else:
            raise ExportError(
                f"--customer-map {spec!r}: neither TENANT=CUSTOMER_ID nor an existing file"
            )
    return mapping
