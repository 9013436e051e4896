"""The console's billing pages: running cost, invoices, downloads; isolation and roles."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client
from django.utils import timezone

from billing import services
from billing.models import Invoice
from billing.pricing import month_start
from tenants.models import Role, Tenant
from tests.billing.conftest import MONTH, billed_tenant, priced_plan, usage
from tests.factories import TenantCtx, make_member, signed_in

pytestmark = pytest.mark.django_db

YEAR = timezone.now().year


@pytest.fixture
def shop(db: object) -> TenantCtx:
    return billed_tenant("Shop", priced_plan())


@pytest.fixture
def invoice(shop: TenantCtx) -> Invoice:
    services.billing_run(month=MONTH, actor="operator")
    invoice = Invoice.objects.for_tenant(shop.tenant).get()
    services.credit_note_create(
        tenant=shop.tenant, invoice_id=invoice.pk, amount_minor=900, reason="outage", actor="op"
    )
    return invoice


def test_the_billing_page_shows_the_running_cost_and_the_invoices(
    shop: TenantCtx, invoice: Invoice
) -> None:
    """This month so far: 49.00 base fee and 2,000,000 requests over the 1,000,000 included
    at 0.40 per million: 49.40 EUR."""
    now = timezone.now()
    usage(shop.tenant, now.replace(minute=0, second=0, microsecond=0), requests=2_000_000)
    Tenant.objects.filter(pk=shop.tenant.pk).update(created_at=datetime(2025, 1, 1, tzinfo=UTC))

    response = signed_in(shop.owner).get("/billing/")

    page = response.content.decode()
    assert response.status_code == 200
    assert '<span class="stat-value" data-running-total>49.40 EUR</span>' in page
    assert "API requests: 2,000,000, 1,000,000 included; 1,000,000 at 0.40 EUR per million" in page
    assert f'data-invoice="{YEAR}-000001"' in page
    for amount in ("49.00 EUR", "9.00 EUR", "40.00 EUR"):  # total, credited, due
        assert amount in page
    assert f"{month_start(now.date()):%B %Y}" in page
    assert 'href="/billing/"' in page  # the navigation's link


def test_one_invoice_and_its_downloads(shop: TenantCtx, invoice: Invoice) -> None:
    client = signed_in(shop.owner)

    detail = client.get(f"/billing/invoices/{invoice.pk}/")
    pdf = client.get(f"/billing/invoices/{invoice.pk}.pdf")
    csv = client.get(f"/billing/invoices/{invoice.pk}.csv")

    page = detail.content.decode()
    assert detail.status_code == 200
    assert f"Invoice {YEAR}-000001" in page
    assert "Base fee, Pro plan, March 2025" in page
    assert '<td class="num name" data-total>49.00 EUR</td>' in page
    assert f"CN-{YEAR}-000001" in page
    assert "outage" in page
    assert (pdf.status_code, pdf["Content-Type"]) == (200, "application/pdf")
    assert pdf.content.startswith(b"%PDF")
    assert (csv.status_code, csv["Content-Type"]) == (200, "text/csv; charset=utf-8")
    assert csv.content.decode().startswith("invoice,period,position,kind")


def test_a_draft_is_not_shown(shop: TenantCtx) -> None:
    services.billing_run(month=MONTH, actor="operator", issue=False)
    draft = Invoice.objects.for_tenant(shop.tenant).get()
    client = signed_in(shop.owner)

    assert "No invoices yet." in client.get("/billing/").content.decode()
    assert client.get(f"/billing/invoices/{draft.pk}/").status_code == 404


def test_another_tenants_invoice_is_not_found(invoice: Invoice, globex: TenantCtx) -> None:
    client = signed_in(globex.owner)

    for suffix in ("/", ".pdf", ".csv"):
        assert client.get(f"/billing/invoices/{invoice.pk}{suffix}").status_code == 404
    assert "No invoices yet." in client.get("/billing/").content.decode()


def test_a_viewer_is_refused_and_has_no_link(shop: TenantCtx, invoice: Invoice) -> None:
    viewer: Client = signed_in(
        make_member(tenant=shop.tenant, email="v@shop.test", role=Role.VIEWER)
    )

    assert viewer.get("/billing/").status_code == 403
    assert viewer.get(f"/billing/invoices/{invoice.pk}.pdf").status_code == 403
    assert 'href="/billing/"' not in viewer.get("/usage/").content.decode()


def test_signed_out_goes_to_login(invoice: Invoice) -> None:
    response = Client().get("/billing/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
