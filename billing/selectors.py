"""Reads for billing: a tenant's metered month, its invoices, and the running cost.

Tenants see issued, paid and void invoices; drafts are the billing run's work in progress
(recomputed until issued), so :func:`invoice_list` and :func:`invoice_get` leave them out
unless an operator asks for them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta

from django.core.exceptions import ValidationError
from django.db.models import QuerySet, Sum
from django.utils import timezone

from billing.models import CreditNote, Invoice, InvoiceStatus
from billing.pricing import Priced, Usage, days_billed, month_bounds, month_start, price_month
from kernel.errors import NotFound
from tenants.models import Tenant, UsageRecord


def month_usage(*, tenant: Tenant, month: date) -> Usage:
    """The tenant's total usage rows (no key, no resource) of the month: requests, and bytes
    published plus delivered."""
    start, end = month_bounds(month)
    totals = (
        UsageRecord.objects.for_tenant(tenant)
        .filter(hour__gte=start, hour__lt=end, key_prefix="", resource="")
        .aggregate(
            requests=Sum("requests"),
            published_bytes=Sum("published_bytes"),
            delivered_bytes=Sum("delivered_bytes"),
        )
    )
    return Usage(
        requests=totals["requests"] or 0,
        traffic_bytes=(totals["published_bytes"] or 0) + (totals["delivered_bytes"] or 0),
    )


def month_price(*, tenant: Tenant, month: date) -> Priced:
    """What the tenant's month costs on its plan with its usage so far."""
    return price_month(
        tenant.plan,
        month_usage(tenant=tenant, month=month),
        month=month,
        days=days_billed(month, tenant.created_at),
    )


@dataclass(frozen=True)
class RunningCost:
    month: date
    priced: Priced
    usage: Usage


def running_cost(*, tenant: Tenant) -> RunningCost:
    """This month's cost so far: the same pricing as the invoice, on the usage rolled up until
    now (the base fee in full, or pro-rated for a tenant created this month)."""
    month = month_start(timezone.now().date())
    usage = month_usage(tenant=tenant, month=month)
    priced = price_month(
        tenant.plan, usage, month=month, days=days_billed(month, tenant.created_at)
    )
    return RunningCost(month=month, priced=priced, usage=usage)


def invoice_list(*, tenant: Tenant, include_drafts: bool = False) -> QuerySet[Invoice]:
    rows = Invoice.objects.for_tenant(tenant)
    if not include_drafts:
        rows = rows.exclude(status=InvoiceStatus.DRAFT)
    return rows.order_by("-period", "-created_at")


def invoice_get(
    *, tenant: Tenant, invoice_id: uuid.UUID | str, include_drafts: bool = False
) -> Invoice:
    """One of the tenant's invoices with its lines and credit notes; NotFound for another
    tenant's, a malformed id, or (unless ``include_drafts``) a draft."""
    try:
        return (
            invoice_list(tenant=tenant, include_drafts=include_drafts)
            .prefetch_related("lines")
            .get(pk=invoice_id)
        )
    except (Invoice.DoesNotExist, ValueError, ValidationError) as exc:
        raise NotFound("No such invoice.") from exc


def credit_notes(invoice: Invoice) -> QuerySet[CreditNote]:
    """The invoice's credit notes, oldest first."""
    return (
        CreditNote.objects.for_tenant(invoice.tenant_id)
        .filter(invoice=invoice)
        .order_by("created_at", "number")
    )


def credited_minor(invoice: Invoice) -> int:
    """The sum of the invoice's credit notes."""
    total = CreditNote.all_tenants.filter(invoice=invoice).aggregate(total=Sum("amount_minor"))
    return int(total["total"] or 0)


def month_invoices(*, month: date) -> QuerySet[Invoice]:
    """Every tenant's invoices of a month (operators: the month's CSV, the admin)."""
    return (
        Invoice.all_tenants.filter(period=month_start(month))
        .select_related("tenant")
        .order_by("number", "tenant__slug")
    )


@dataclass(frozen=True)
class TenantRevenue:
    """What one tenant was invoiced in one currency: issued and paid invoices less their
    credit notes, in minor units."""

    tenant: Tenant
    total_minor: int
    currency: str


#: The window of :func:`revenue_by_tenant`: the twelve billed months before this one.
REVENUE_MONTHS = 12


def revenue_by_tenant(*, limit: int, today: date | None = None) -> list[TenantRevenue]:
    """The ``limit`` tenants invoiced most over the last REVENUE_MONTHS billed months
    (issued and paid invoices, less credit notes; drafts and voided invoices count nothing),
    highest first, one row per tenant and currency. The operators' dashboard shows it."""
    today = today or timezone.now().date()
    first = month_start(today)
    for _ in range(REVENUE_MONTHS):
        first = month_start(first - timedelta(days=1))
    counted = Invoice.all_tenants.filter(
        status__in=[InvoiceStatus.ISSUED, InvoiceStatus.PAID], period__gte=first
    )
    invoiced = {
        (row["tenant"], row["currency"]): row["total"]
        for row in counted.values("tenant", "currency").annotate(total=Sum("total_minor"))
    }
    credits = (
        CreditNote.all_tenants.filter(invoice__in=counted)
        .values("invoice__tenant", "invoice__currency")
        .annotate(total=Sum("amount_minor"))
    )
    for row in credits:
        key = (row["invoice__tenant"], row["invoice__currency"])
        invoiced[key] = invoiced.get(key, 0) - row["total"]
    top = sorted(invoiced.items(), key=lambda item: (-item[1], str(item[0][0])))[:limit]
    tenants = Tenant.objects.in_bulk([tenant_id for (tenant_id, _), _ in top])
    return [
        TenantRevenue(tenant=tenants[tenant_id], total_minor=total, currency=currency)
        for (tenant_id, currency), total in top
    ]
