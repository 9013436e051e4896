"""The figures of the operator dashboard (``/admin/tenants/tenant/dashboard/``, linked from the
admin's index): the top tenants by traffic in a month, the tenants near their monthly message
quota, the platform's totals per day and, when the billing app has registered its revenue
selector (:func:`set_revenue_source`), the top tenants by revenue.

Traffic comes from the hourly usage rows of tenant totals (``key_prefix`` and ``resource``
empty), so it is as fresh as the last usage roll-up. Everything is exact integers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import F, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from tenants.models import Tenant, UsageRecord
from tenants.quotas import effective_quotas

TOP = 10
DAYS = 30
#: A tenant is "near" its monthly quota from this share of it on.
NEAR_PERCENT = 80
MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True)
class TenantTraffic:
    tenant: Tenant
    published: int
    delivered: int
    acked: int
    requests: int
    traffic_bytes: int

    @property
    def messages(self) -> int:
        """Messages in and out: what "traffic" ranks by."""
        return self.published + self.delivered


@dataclass(frozen=True)
class NearQuota:
    tenant: Tenant
    used: int
    limit: int
    source: str

    @property
    def percent(self) -> int:
        """The share used, in whole percent, rounded down (a zero limit counts as full)."""
        return 100 if self.limit == 0 else self.used * 100 // self.limit


@dataclass(frozen=True)
class DayTotals:
    day: date
    published: int
    delivered: int
    acked: int


@dataclass(frozen=True)
class Revenue:
    tenant: Any
    total_minor: int
    currency: str


def month_of(text: str | None, today: date) -> date:
    """The first day of the month ``text`` names ("YYYY-MM"); this month when it names none."""
    match = MONTH.match(text or "")
    if match is None:
        return today.replace(day=1)
    return date(int(match.group(1)), int(match.group(2)), 1)


def _next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


def _at_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _totals() -> QuerySet[UsageRecord]:
    return UsageRecord.all_tenants.filter(key_prefix="", resource="")


def month_traffic(month: date) -> dict[Any, dict[str, int]]:
    """Every tenant's totals of ``month``: {tenant id: {column: sum}}."""
    rows: Any = (
        _totals()
        .filter(hour__gte=_at_midnight(month), hour__lt=_at_midnight(_next_month(month)))
        .values("tenant_id")
        .annotate(
            published=Sum("published"),
            delivered=Sum("delivered"),
            acked=Sum("acked"),
            requests=Sum("requests"),
            traffic_bytes=Sum(F("published_bytes") + F("delivered_bytes")),
        )
    )
    return {
        row["tenant_id"]: {
            name: int(value or 0) for name, value in row.items() if name != "tenant_id"
        }
        for row in rows
    }


def top_traffic(
    traffic: dict[Any, dict[str, int]], tenants: dict[Any, Tenant]
) -> list[TenantTraffic]:
    """The TOP tenants by messages published plus delivered (then by slug)."""
    ranked = [TenantTraffic(tenant=tenants[tid], **sums) for tid, sums in traffic.items()]
    ranked.sort(key=lambda row: (-row.messages, row.tenant.slug))
    return ranked[:TOP]


def near_quota(traffic: dict[Any, dict[str, int]], tenants: Iterable[Tenant]) -> list[NearQuota]:
    """Tenants whose messages published in the month reached NEAR_PERCENT of their effective
    ``monthly_messages`` (unlimited tenants never do), fullest first."""
    near = []
    for tenant in tenants:
        quota = effective_quotas(tenant)["monthly_messages"]
        if quota.value is None:
            continue
        used = traffic.get(tenant.id, {}).get("published", 0)
        if used * 100 >= NEAR_PERCENT * quota.value:
            near.append(NearQuota(tenant=tenant, used=used, limit=quota.value, source=quota.source))
    near.sort(key=lambda row: (-row.percent, -row.used, row.tenant.slug))
    return near


def daily_totals(last_day: date) -> list[DayTotals]:
    """The platform's messages published, delivered and acked on each of the DAYS days
    ending with ``last_day`` (UTC days; a quiet day is zeros)."""
    first_day = last_day - timedelta(days=DAYS - 1)
    rows: Any = (
        _totals()
        .filter(hour__gte=_at_midnight(first_day), hour__lt=_at_midnight(last_day + timedelta(1)))
        .annotate(day=TruncDate("hour", tzinfo=UTC))
        .values("day")
        .annotate(published=Sum("published"), delivered=Sum("delivered"), acked=Sum("acked"))
    )
    by_day = {row["day"]: row for row in rows}
    out = []
    for offset in range(DAYS):
        day = first_day + timedelta(days=offset)
        row = by_day.get(day, {})
        out.append(
            DayTotals(
                day=day,
                published=row.get("published", 0),
                delivered=row.get("delivered", 0),
                acked=row.get("acked", 0),
            )
        )
    return out


def _field(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


#: Where revenue comes from: a callable ``(limit=n) -> rows`` (each row, a mapping or an
#: object, with ``tenant``, ``total_minor`` and ``currency``), highest first. Tenants sit below
#: billing, so they never import it: the billing app registers its selector here with
#: :func:`set_revenue_source`; until one does, the dashboard says billing is not installed.
RevenueSource = Callable[..., Iterable[Any]]
_revenue_source: RevenueSource | None = None


def set_revenue_source(source: RevenueSource | None) -> None:
    """Register (or, with None, remove) the dashboard's revenue source; see RevenueSource."""
    global _revenue_source
    _revenue_source = source


def top_revenue() -> list[Revenue] | None:
    """The TOP tenants by revenue from the registered source, or None when none is."""
    if _revenue_source is None:
        return None
    return [
        Revenue(
            tenant=_field(row, "tenant"),
            total_minor=int(_field(row, "total_minor")),
            currency=str(_field(row, "currency")),
        )
        for row in list(_revenue_source(limit=TOP))[:TOP]
    ]


def dashboard_context(month_text: str | None, today: date | None = None) -> dict[str, Any]:
    """Everything the dashboard's template shows, for the month ``month_text`` ("YYYY-MM";
    this month when absent or malformed). The daily totals end with the month's last day, or
    today for the current month."""
    today = today or timezone.now().astimezone(UTC).date()
    month = month_of(month_text, today)
    last_day = min(today, _next_month(month) - timedelta(days=1))
    tenants = {tenant.id: tenant for tenant in Tenant.objects.select_related("plan")}
    traffic = month_traffic(month)
    days = daily_totals(last_day)
    return {
        "month": month,
        "previous_month": (month - timedelta(days=1)).replace(day=1),
        "next_month": _next_month(month) if _next_month(month) <= today else None,
        "top_traffic": top_traffic(traffic, tenants),
        "near_quota": near_quota(traffic, tenants.values()),
        "near_percent": NEAR_PERCENT,
        "days": days,
        "days_total": DayTotals(
            day=last_day,
            published=sum(d.published for d in days),
            delivered=sum(d.delivered for d in days),
            acked=sum(d.acked for d in days),
        ),
        "day_peak": max([d.published for d in days] + [1]),
        "top_revenue": top_revenue(),
    }
