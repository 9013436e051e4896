"""Invoice PDF and CSVs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.utils import timezone

from billing import exports, services
from billing.models import Invoice
from billing.pricing import GIB
from tests.billing.conftest import MONTH, billed_tenant, usage
from tests.factories import TenantCtx

pytestmark = pytest.mark.django_db

YEAR = timezone.now().year


@pytest.fixture
def invoice(shop: TenantCtx) -> Invoice:
    usage(
        shop.tenant, datetime(2025, 3, 9, tzinfo=UTC), requests=3_500_000, published_bytes=11 * GIB
    )
    services.billing_run(month=MONTH, actor="operator")
    return Invoice.objects.for_tenant(shop.tenant).get()


def test_the_pdf_is_a_pdf_with_the_number_and_amounts(invoice: Invoice) -> None:
    services.credit_note_create(
        tenant=invoice.tenant, invoice_id=invoice.pk, amount_minor=500, reason="outage", actor="op"
    )

    pdf = exports.invoice_pdf(invoice)

    assert pdf.startswith(b"%PDF")
    assert f"Invoice {YEAR}-000001".encode() in pdf
    for text in (
        b"49.00 EUR",
        b"1.00 EUR",
        b"0.09 EUR",
        b"50.09 EUR",
        b"-5.00 EUR",
        b"45.09 EUR",
        b"March 2025",
    ):
        assert text in pdf, text


def test_the_invoice_csv_has_one_row_per_line(invoice: Invoice) -> None:
    assert exports.invoice_csv(invoice).split("\r\n") == [
        "invoice,period,position,kind,description,quantity,unit_price_minor,price_per,amount_minor,currency",
        f'{YEAR}-000001,2025-03,1,base_fee,"Base fee, Pro plan, March 2025",1,4900,1,4900,EUR',
        f"{YEAR}-000001,2025-03,2,requests,"
        '"API requests: 3,500,000, 1,000,000 included; 2,500,000 at 0.40 EUR per million",'
        "2500000,40,1000000,100,EUR",
        f"{YEAR}-000001,2025-03,3,traffic,"
        '"Traffic in and out: 11.000 GiB, 10 GiB included; 1.000 GiB at 0.09 EUR per GiB",'
        "1073741824,9,1073741824,9,EUR",
        "",
    ]


def test_the_month_csv_lists_every_tenants_invoice(invoice: Invoice, pro: object) -> None:
    other = billed_tenant("Other", invoice.tenant.plan)
    services.billing_run(month=MONTH, actor="operator")  # bills Other; Shop's unchanged
    services.credit_note_create(
        tenant=invoice.tenant, invoice_id=invoice.pk, amount_minor=9, reason="r", actor="op"
    )
    second = Invoice.objects.for_tenant(other.tenant).get()
    services.invoice_void(tenant=other.tenant, invoice_id=second.pk, actor="op")
    second.refresh_from_db()
    invoice.refresh_from_db()

    rows = exports.month_csv(MONTH).split("\r\n")

    assert rows == [
        "number,tenant,tenant_id,period,status,currency,subtotal_minor,total_minor,credited_minor,issued_at,paid_at,voided_at",
        f"{YEAR}-000001,shop,{invoice.tenant_id},2025-03,issued,EUR,5009,5009,9,{invoice.issued_at.isoformat()},,",
        f"{YEAR}-000002,other,{other.tenant.pk},2025-03,void,EUR,4900,4900,0,"
        f"{second.issued_at.isoformat()},,{second.voided_at.isoformat()}",
        "",
    ]
