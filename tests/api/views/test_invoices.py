"""GET /v1/invoices, /v1/invoices/{id}, .pdf and .csv: the tenant's issued invoices only."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from django.utils import timezone

from billing import services
from billing.models import Invoice
from tests.billing.conftest import MONTH, billed_tenant, priced_plan, usage
from tests.factories import TenantCtx, api_client, make_key
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db

YEAR = timezone.now().year


@pytest.fixture
def shop(db: object) -> TenantCtx:
    ctx = billed_tenant("Shop", priced_plan())
    usage(ctx.tenant, datetime(2025, 3, 9, tzinfo=UTC), requests=3_500_000)
    return ctx


@pytest.fixture
def invoice(shop: TenantCtx) -> Invoice:
    services.billing_run(month=MONTH, actor="operator")
    invoice = Invoice.objects.for_tenant(shop.tenant).get()
    services.credit_note_create(
        tenant=shop.tenant, invoice_id=invoice.pk, amount_minor=250, reason="outage", actor="op"
    )
    return invoice


def test_list_and_detail(shop: TenantCtx, invoice: Invoice) -> None:
    listed = shop.client.get("/v1/invoices")
    detail = shop.client.get(f"/v1/invoices/{invoice.pk}")

    assert listed.status_code == 200
    summary = {
        "id": str(invoice.pk),
        "number": f"{YEAR}-000001",
        "period": "2025-03",
        "status": "issued",
        "currency": "EUR",
        "subtotal_minor": 5000,
        "total_minor": 5000,
        "credited_minor": 250,
        "amount_due_minor": 4750,
        "paid_at": None,
        "voided_at": None,
    }
    page = json.loads(listed.content)
    assert page["next"] is None
    assert [{k: v for k, v in row.items() if k != "issued_at"} for row in page["results"]] == [
        summary
    ]
    body = json.loads(detail.content)
    assert body["issued_at"].endswith("Z")
    assert body["lines"] == [
        {
            "position": 1,
            "kind": "base_fee",
            "description": "Base fee, Pro plan, March 2025",
            "quantity": 1,
            "unit_price_minor": 4900,
            "price_per": 1,
            "amount_minor": 4900,
        },
        {
            "position": 2,
            "kind": "requests",
            "description": (
                "API requests: 3,500,000, 1,000,000 included; 2,500,000 at 0.40 EUR per million"
            ),
            "quantity": 2_500_000,
            "unit_price_minor": 40,
            "price_per": 1_000_000,
            "amount_minor": 100,
        },
        {
            "position": 3,
            "kind": "traffic",
            "description": (
                "Traffic in and out: 0.000 GiB, 10 GiB included; 0.000 GiB at 0.09 EUR per GiB"
            ),
            "quantity": 0,
            "unit_price_minor": 9,
            "price_per": 1073741824,
            "amount_minor": 0,
        },
    ]
    assert [{k: v for k, v in n.items() if k != "created_at"} for n in body["credit_notes"]] == [
        {"number": f"CN-{YEAR}-000001", "amount_minor": 250, "reason": "outage"}
    ]


def test_downloads(shop: TenantCtx, invoice: Invoice) -> None:
    pdf = shop.client.get(f"/v1/invoices/{invoice.pk}.pdf", HTTP_ACCEPT="application/json")
    csv = shop.client.get(f"/v1/invoices/{invoice.pk}.csv")

    assert pdf.status_code == 200
    assert pdf["Content-Type"] == "application/pdf"
    assert pdf["Content-Disposition"] == f'attachment; filename="{YEAR}-000001.pdf"'
    assert pdf.content.startswith(b"%PDF")
    assert csv.status_code == 200
    assert csv["Content-Type"] == "text/csv; charset=utf-8"
    assert csv.content.decode().split("\r\n")[1] == (
        f'{YEAR}-000001,2025-03,1,base_fee,"Base fee, Pro plan, March 2025",1,4900,1,4900,EUR'
    )


def test_drafts_are_not_shown(shop: TenantCtx) -> None:
    services.billing_run(month=MONTH, actor="operator", issue=False)
    draft = Invoice.objects.for_tenant(shop.tenant).get()

    assert json.loads(shop.client.get("/v1/invoices").content) == {"results": [], "next": None}
    for suffix in ("", ".pdf", ".csv"):
        assert_problem(shop.client.get(f"/v1/invoices/{draft.pk}{suffix}"), 404, "not_found")


def test_another_tenants_invoice_is_not_found(invoice: Invoice, globex: TenantCtx) -> None:
    assert json.loads(globex.client.get("/v1/invoices").content)["results"] == []
    for suffix in ("", ".pdf", ".csv"):
        assert_problem(globex.client.get(f"/v1/invoices/{invoice.pk}{suffix}"), 404, "not_found")
    assert_problem(globex.client.get(f"/v1/invoices/{uuid.uuid4()}"), 404, "not_found")
    assert_problem(globex.client.get("/v1/invoices/not-a-uuid"), 404, "not_found")


@pytest.mark.parametrize("path", ["/v1/invoices", "/v1/invoices/{id}", "/v1/invoices/{id}.pdf"])
def test_a_key_without_manage_or_with_patterns_is_forbidden(
    shop: TenantCtx, invoice: Invoice, path: str
) -> None:
    url = path.format(id=invoice.pk)
    publisher = make_key(tenant=shop.tenant, name="pub", scopes=["publish", "consume"])
    patterned = make_key(tenant=shop.tenant, name="pat", resources=["queue:orders"])

    assert_problem(api_client(publisher).get(url), 403, "forbidden")
    assert_problem(api_client(patterned).get(url), 403, "forbidden")


def test_pagination(shop: TenantCtx, invoice: Invoice) -> None:
    services.billing_run(month=datetime(2025, 4, 1, tzinfo=UTC).date(), actor="operator")

    first = json.loads(shop.client.get("/v1/invoices?limit=1").content)
    second = json.loads(shop.client.get(f"/v1/invoices?limit=1&cursor={first['next']}").content)

    assert [row["period"] for row in first["results"]] == ["2025-04"]
    assert [row["period"] for row in second["results"]] == ["2025-03"]
    assert second["next"] is None
    assert_problem(shop.client.get("/v1/invoices?limit=0"), 400, "invalid_request")
    assert_problem(shop.client.get("/v1/invoices?cursor=zz"), 400, "invalid_request")
