"""The price of a tenant's month: pure integer arithmetic on a plan and its metered usage.

Every amount is an integer number of minor units of the plan's currency (cents for EUR);
nothing here is a float. A charge whose price is stated per million requests or per GiB of
traffic is ``quantity * price / per`` rounded **half up on the minor unit**
(:func:`round_half_up`): 1,500,000 requests at 3 minor units per million is 4.5, billed 5;
4,499,999 is 13.499997, billed 13. The base fee of a tenant that existed for only part of the
month is pro-rated by whole days (the day it was created counts), rounded the same way;
included requests and GiB are not pro-rated.

The billing run (:func:`billing.services.billing_run`) and the console's running cost use
this one function, so what a tenant sees during the month is what it is billed.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime

from tenants.models import Plan

MILLION = 1_000_000
GIB = 2**30

#: Minor units per major unit (ISO 4217 exponents); every currency not listed has 2.
CURRENCY_EXPONENTS = {"BHD": 3, "JOD": 3, "KWD": 3, "OMR": 3, "TND": 3, "JPY": 0, "KRW": 0}


def round_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded to the nearest integer, halves up (both >= 0,
    ``denominator`` > 0): exact, with no float on the way."""
    if numerator < 0 or denominator <= 0:
        raise ValueError("round_half_up takes a non-negative numerator and a positive divisor")
    return (2 * numerator + denominator) // (2 * denominator)


def format_minor(amount_minor: int, currency: str) -> str:
    """``1234, "EUR"`` → ``"12.34 EUR"`` (the currency's own number of decimals)."""
    exponent = CURRENCY_EXPONENTS.get(currency.upper(), 2)
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 10**exponent)
    text = f"{whole:,}" + (f".{fraction:0{exponent}d}" if exponent else "")
    return f"{sign}{text} {currency}"


def format_gib(num_bytes: int) -> str:
    """Bytes as GiB with three decimals, rounded half up: ``1610612736`` → ``"1.500"``."""
    thousandths = round_half_up(num_bytes * 1000, GIB)
    return f"{thousandths // 1000:,}.{thousandths % 1000:03d}"


def month_start(day: date) -> date:
    """The first day of ``day``'s month."""
    return day.replace(day=1)


def next_month(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def previous_month(month: date) -> date:
    return date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """The UTC instants [start, end) of the month that starts on ``month``."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    following = next_month(month)
    return start, datetime(following.year, following.month, 1, tzinfo=UTC)


def days_billed(month: date, created_at: datetime) -> int:
    """Days of ``month`` the tenant existed: all of them for a tenant created before the
    month, from its creation day (counted) to the month's end for one created during it, 0
    for one created after it."""
    days = calendar.monthrange(month.year, month.month)[1]
    start, end = month_bounds(month)
    if created_at < start:
        return days
    if created_at >= end:
        return 0
    return days - created_at.astimezone(UTC).day + 1


@dataclass(frozen=True)
class Usage:
    """A tenant's metered usage in a month: data-plane requests and bytes in plus out."""

    requests: int = 0
    traffic_bytes: int = 0


@dataclass(frozen=True)
class PricedLine:
    """One line of an invoice: ``amount_minor = round_half_up(quantity * unit_price_minor,
    price_per)``; ``price_per`` is how many units the price is for (1, a million requests,
    a GiB of bytes)."""

    kind: str  # "base_fee", "requests", "traffic"
    description: str
    quantity: int
    unit_price_minor: int
    price_per: int
    amount_minor: int


@dataclass(frozen=True)
class Priced:
    currency: str
    lines: tuple[PricedLine, ...]
    subtotal_minor: int
    total_minor: int  # no taxes yet: the total is the subtotal


def is_priced(plan: Plan) -> bool:
    """Whether the plan charges anything at all; a tenant on a plan that does not is not
    invoiced (no empty invoices, no invoice number spent)."""
    return bool(
        plan.base_fee_minor or plan.price_per_million_requests_minor or plan.price_per_gib_minor
    )


def price_month(plan: Plan, usage: Usage, *, month: date, days: int | None = None) -> Priced:
    """The invoice lines of ``month`` for a tenant on ``plan`` with ``usage``; ``days`` is
    how many days of the month it existed (:func:`days_billed`; default: all)."""
    currency = plan.currency
    in_month = calendar.monthrange(month.year, month.month)[1]
    days = in_month if days is None else days
    lines: list[PricedLine] = []
    if plan.base_fee_minor:
        fee = plan.base_fee_minor
        description = f"Base fee, {plan.name} plan, {month:%B %Y}"
        # A whole month is one unit of the fee; part of one is days at the fee per month-days.
        quantity, per = (1, 1) if days == in_month else (days, in_month)
        if per != 1:
            description += f", {days} of {in_month} days"
        lines.append(
            PricedLine(
                kind="base_fee",
                description=description,
                quantity=quantity,
                unit_price_minor=fee,
                price_per=per,
                amount_minor=round_half_up(quantity * fee, per),
            )
        )
    if plan.price_per_million_requests_minor:
        price = plan.price_per_million_requests_minor
        billable = max(0, usage.requests - plan.included_requests)
        lines.append(
            PricedLine(
                kind="requests",
                description=(
                    f"API requests: {usage.requests:,}, {plan.included_requests:,} included; "
                    f"{billable:,} at {format_minor(price, currency)} per million"
                ),
                quantity=billable,
                unit_price_minor=price,
                price_per=MILLION,
                amount_minor=round_half_up(billable * price, MILLION),
            )
        )
    if plan.price_per_gib_minor:
        price = plan.price_per_gib_minor
        billable = max(0, usage.traffic_bytes - plan.included_gib * GIB)
        lines.append(
            PricedLine(
                kind="traffic",
                description=(
                    f"Traffic in and out: {format_gib(usage.traffic_bytes)} GiB, "
                    f"{plan.included_gib:,} GiB included; {format_gib(billable)} GiB at "
                    f"{format_minor(price, currency)} per GiB"
                ),
                quantity=billable,
                unit_price_minor=price,
                price_per=GIB,
                amount_minor=round_half_up(billable * price, GIB),
            )
        )
    subtotal = sum(line.amount_minor for line in lines)
    return Priced(
        currency=currency, lines=tuple(lines), subtotal_minor=subtotal, total_minor=subtotal
    )
