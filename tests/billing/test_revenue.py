"""The operators' revenue figures: issued and paid invoices less credit notes."""

from __future__ import annotations

from datetime import UTC, date, datetime

from billing import selectors, services
from billing.models import Invoice
from tenants import admin_dashboard
from tenants.models import Plan
from tests.billing.conftest import MONTH, billed_tenant, usage
from tests.factories import TenantCtx

ACTOR = "operator:ops@platform.test"
TODAY = date(2025, 5, 20)


def test_revenue_counts_issued_and_paid_less_credit_notes(pro: Plan, shop: TenantCtx) -> None:
    """Shop: 49.00 base + 1 M requests beyond the included 1 M at 0.40 = 49.40, less a 5.00
    credit note; Mart: 49.00 base, voided and so nothing; Bazaar: 49.00 billed and paid.
    Drafts and voided invoices count nothing; the order is highest first."""
    mart = billed_tenant("Mart", pro)
    bazaar = billed_tenant("Bazaar", pro)
    usage(shop.tenant, datetime(2025, 3, 2, tzinfo=UTC), requests=2_000_000)
    services.billing_run(month=MONTH, actor=ACTOR)
    invoices = {i.tenant_id: i for i in Invoice.all_tenants.filter(period=MONTH)}
    assert invoices[shop.tenant.id].total_minor == 4940
    services.credit_note_create(
        tenant=shop.tenant,
        invoice_id=invoices[shop.tenant.id].id,
        amount_minor=500,
        reason="Outage on 3 March",
        actor=ACTOR,
    )
    services.invoice_void(tenant=mart.tenant, invoice_id=invoices[mart.tenant.id].id, actor=ACTOR)
    services.invoice_mark_paid(
        tenant=bazaar.tenant, invoice_id=invoices[bazaar.tenant.id].id, actor=ACTOR
    )

    rows = selectors.revenue_by_tenant(limit=10, today=TODAY)
    assert [(r.tenant.name, r.total_minor, r.currency) for r in rows] == [
        ("Bazaar", 4900, "EUR"),
        ("Shop", 4440, "EUR"),
    ]
    assert [r.tenant.name for r in selectors.revenue_by_tenant(limit=1, today=TODAY)] == ["Bazaar"]
    # A year later the month is out of the window.
    assert selectors.revenue_by_tenant(limit=10, today=date(2026, 4, 1)) == []


def test_the_billing_app_feeds_the_operators_dashboard() -> None:
    """billing registers its revenue source with the dashboard when the apps load (tenants,
    a layer below, cannot import it)."""
    assert admin_dashboard._revenue_source is selectors.revenue_by_tenant
