"""The invoices' admin: staff act through the services (audited); others are refused."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from billing import services
from billing.models import CreditNote, Invoice
from tenants.models import AuditEvent
from tests.billing.conftest import MONTH
from tests.factories import TenantCtx, make_user, signed_in

pytestmark = pytest.mark.django_db

YEAR = timezone.now().year


@pytest.fixture
def staff() -> Client:
    return signed_in(make_user(email="ops@example.test", is_staff=True, is_superuser=True))


def test_the_list_and_an_issued_invoice_read_only(staff: Client, shop: TenantCtx) -> None:
    services.billing_run(month=MONTH, actor="operator")
    invoice = Invoice.objects.for_tenant(shop.tenant).get()

    listed = staff.get("/admin/billing/invoice/?status__exact=issued")
    change = staff.get(f"/admin/billing/invoice/{invoice.pk}/change/")

    assert listed.status_code == 200
    assert f"{YEAR}-000001" in listed.content.decode()
    assert change.status_code == 200
    assert 'name="total_minor"' not in change.content.decode()  # no editable field
    assert staff.get(f"/admin/billing/invoice/{invoice.pk}/document.pdf").content.startswith(
        b"%PDF"
    )


def test_run_void_and_credit_note_through_the_services(staff: Client, shop: TenantCtx) -> None:
    ran = staff.post("/admin/billing/invoice/run/", {"month": "2025-03", "issue": "on"})
    invoice = Invoice.objects.for_tenant(shop.tenant).get()
    noted = staff.post(
        f"/admin/billing/invoice/{invoice.pk}/credit-note/",
        {"amount_minor": "100", "reason": "sorry"},
    )
    voided = staff.post(
        "/admin/billing/invoice/", {"action": "void", "_selected_action": [str(invoice.pk)]}
    )
    csv = staff.get("/admin/billing/invoice/month-csv/?month=2025-03")

    assert (ran.status_code, noted.status_code, voided.status_code) == (302, 302, 302)
    invoice.refresh_from_db()
    assert invoice.status == "void"
    assert CreditNote.objects.for_tenant(shop.tenant).get().amount_minor == 100
    actions = set(
        AuditEvent.objects.for_tenant(shop.tenant)
        .filter(actor="staff:ops@example.test")
        .values_list("action", flat=True)
    )
    assert actions == {"invoice.draft", "invoice.issue", "credit_note.create", "invoice.void"}
    assert csv.content.decode().split("\r\n")[1].startswith(f"{YEAR}-000001,shop,")


def test_a_current_month_run_is_refused_with_its_reason(staff: Client, shop: TenantCtx) -> None:
    response = staff.post(
        "/admin/billing/invoice/run/", {"month": f"{timezone.now():%Y-%m}", "issue": "on"}
    )

    assert response.status_code == 200
    assert "has not ended" in response.content.decode()
    assert not Invoice.all_tenants.exists()


def test_non_staff_are_refused(shop: TenantCtx) -> None:
    client = signed_in(shop.owner)

    assert client.get("/admin/billing/invoice/").status_code == 302
    assert client.post("/admin/billing/invoice/run/", {"month": "2025-03"}).status_code == 302
    assert not Invoice.all_tenants.exists()
