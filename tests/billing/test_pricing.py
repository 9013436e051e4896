"""billing.pricing: exact figures, rounding half up on the minor unit, pro-rating."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from billing.pricing import (
    GIB,
    MILLION,
    PricedLine,
    Usage,
    days_billed,
    format_gib,
    format_minor,
    price_month,
    round_half_up,
)
from tenants.models import Plan

NOVEMBER = date(2026, 11, 1)


def plan(**prices: int) -> Plan:
    values = {
        "base_fee_minor": 4900,
        "included_requests": 1_000_000,
        "price_per_million_requests_minor": 40,
        "included_gib": 10,
        "price_per_gib_minor": 9,
    }
    values.update(prices)
    return Plan(slug="pro", name="Pro", currency="EUR", **values)


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (0, 7, 0),
        (5, 2, 3),
        (4, 2, 2),
        (1, 3, 0),
        (2, 3, 1),
        (3, 2, 2),
        (7, 2, 4),
        (10**30 + 1, 2, 5 * 10**29 + 1),
    ],
)
def test_round_half_up_is_exact(numerator: int, denominator: int, expected: int) -> None:
    """Halves go up, everything else to the nearest integer, with no float even for huge
    numbers."""
    assert round_half_up(numerator, denominator) == expected


def test_round_half_up_refuses_negative_numbers() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        round_half_up(-1, 2)


def test_a_full_month_with_usage_over_the_allowances() -> None:
    """3,500,000 requests (2,500,000 over at 0.40 per million: 1.00 EUR) and 12.5 GiB of
    traffic (2.5 GiB over at 0.09 per GiB: 0.225, billed 0.23) on 49.00 a month."""
    priced = price_month(
        plan(), Usage(requests=3_500_000, traffic_bytes=12 * GIB + GIB // 2), month=NOVEMBER
    )

    assert priced.lines == (
        PricedLine("base_fee", "Base fee, Pro plan, November 2026", 1, 4900, 1, 4900),
        PricedLine(
            "requests",
            "API requests: 3,500,000, 1,000,000 included; 2,500,000 at 0.40 EUR per million",
            2_500_000,
            40,
            MILLION,
            100,
        ),
        PricedLine(
            "traffic",
            "Traffic in and out: 12.500 GiB, 10 GiB included; 2.500 GiB at 0.09 EUR per GiB",
            GIB * 5 // 2,
            9,
            GIB,
            23,
        ),
    )
    assert (priced.currency, priced.subtotal_minor, priced.total_minor) == ("EUR", 5023, 5023)


@pytest.mark.parametrize(
    ("requests", "amount"),
    [
        (1_000_000, 0),  # all included
        (1_012_500, 1),  # 12,500 at 40 per million = 0.5: half up to 1
        (1_012_499, 0),  # 0.49996: down
        (1_037_500, 2),  # 1.5: up to 2
        (1_037_499, 1),  # 1.49996: down
        (999, 0),  # under the allowance never goes negative
    ],
)
def test_request_charges_round_half_up_on_the_minor_unit(requests: int, amount: int) -> None:
    priced = price_month(
        plan(base_fee_minor=0, price_per_gib_minor=0), Usage(requests=requests), month=NOVEMBER
    )

    assert [(line.kind, line.quantity, line.amount_minor) for line in priced.lines] == [
        ("requests", max(0, requests - 1_000_000), amount)
    ]


@pytest.mark.parametrize(
    ("extra_bytes", "amount"),
    [
        (GIB // 2, 5),  # 4.5: half up
        (GIB // 2 - 1, 4),  # 4.49999999
        (GIB // 18 + 1, 1),  # 0.50000001
        (GIB // 18, 0),  # 0.49999999
        (GIB, 9),
        (0, 0),
    ],
)
def test_traffic_charges_round_half_up_on_the_minor_unit(extra_bytes: int, amount: int) -> None:
    """At 9 per GiB beyond the 10 included: half a GiB is exactly 4.5 minor units, billed 5."""
    priced = price_month(
        plan(base_fee_minor=0, price_per_million_requests_minor=0),
        Usage(traffic_bytes=10 * GIB + extra_bytes),
        month=NOVEMBER,
    )

    assert [(line.quantity, line.amount_minor) for line in priced.lines] == [(extra_bytes, amount)]


def test_the_base_fee_of_part_of_a_month_is_pro_rated_by_days() -> None:
    """Created on 20 November: 11 of 30 days of 49.00 = 17.9666..., billed 17.97."""
    days = days_billed(NOVEMBER, datetime(2026, 11, 20, 23, 59, tzinfo=UTC))
    priced = price_month(
        plan(price_per_million_requests_minor=0, price_per_gib_minor=0),
        Usage(),
        month=NOVEMBER,
        days=days,
    )

    assert days == 11
    assert priced.lines == (
        PricedLine(
            "base_fee", "Base fee, Pro plan, November 2026, 11 of 30 days", 11, 4900, 30, 1797
        ),
    )


def test_days_billed() -> None:
    assert days_billed(NOVEMBER, datetime(2026, 10, 31, 23, 59, tzinfo=UTC)) == 30
    assert days_billed(NOVEMBER, datetime(2026, 11, 1, tzinfo=UTC)) == 30
    assert days_billed(NOVEMBER, datetime(2026, 11, 30, 12, tzinfo=UTC)) == 1
    assert days_billed(NOVEMBER, datetime(2026, 12, 1, tzinfo=UTC)) == 0
    assert days_billed(date(2028, 2, 1), datetime(2028, 2, 15, tzinfo=UTC)) == 15  # 29 days


def test_a_free_plan_has_no_lines() -> None:
    priced = price_month(
        plan(base_fee_minor=0, price_per_million_requests_minor=0, price_per_gib_minor=0),
        Usage(requests=10**9, traffic_bytes=10**15),
        month=NOVEMBER,
    )

    assert (priced.lines, priced.total_minor) == ((), 0)


def test_formatting() -> None:
    assert format_minor(123456, "EUR") == "1,234.56 EUR"
    assert format_minor(5, "EUR") == "0.05 EUR"
    assert format_minor(-5, "EUR") == "-0.05 EUR"
    assert format_minor(1500, "JPY") == "1,500 JPY"
    assert format_minor(1500, "KWD") == "1.500 KWD"
    assert format_gib(GIB + GIB // 2) == "1.500"
    assert format_gib(-(-GIB // 2000)) == "0.001"  # just over 0.0005 GiB: up
    assert format_gib(GIB // 2000) == "0.000"  # just under
