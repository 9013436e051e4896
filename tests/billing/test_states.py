"""An issued invoice is immutable; corrections are credit notes; void and paid are one-way."""

from __future__ import annotations

import pytest
from django.utils import timezone

from billing import services
from billing.models import CreditNote, Invoice, InvoiceImmutable, InvoiceLine, InvoiceStatus
from kernel.errors import Conflict, InvalidRequest, NotFound
from tenants.models import AuditEvent
from tests.billing.conftest import MONTH
from tests.factories import TenantCtx

pytestmark = pytest.mark.django_db

YEAR = timezone.now().year


@pytest.fixture
def issued(shop: TenantCtx) -> Invoice:
    services.billing_run(month=MONTH, actor="operator")
    return Invoice.objects.for_tenant(shop.tenant).get()


def stored(invoice: Invoice) -> tuple[object, ...]:
    row = Invoice.all_tenants.get(pk=invoice.pk)
    return (row.status, row.number, row.subtotal_minor, row.total_minor, row.paid_at, row.voided_at)


def events(invoice: Invoice, action: str) -> list[tuple[str, dict[str, object]]]:
    return list(
        AuditEvent.objects.for_tenant(invoice.tenant_id)
        .filter(action=action, target_id=str(invoice.pk))
        .order_by("id")
        .values_list("actor", "data")
    )


def test_the_amounts_of_an_issued_invoice_cannot_change(issued: Invoice) -> None:
    before = stored(issued)
    issued.total_minor = 1

    with pytest.raises(
        InvoiceImmutable, match="total_minor cannot change; correct it with a credit note"
    ):
        issued.save()

    assert stored(issued) == before


def test_the_lines_of_an_issued_invoice_cannot_change(issued: Invoice) -> None:
    line = issued.lines.all()[0]
    line.amount_minor = 1

    with pytest.raises(InvoiceImmutable, match="lines of an issued invoice"):
        line.save()
    with pytest.raises(InvoiceImmutable):
        line.delete()
    with pytest.raises(InvoiceImmutable):
        InvoiceLine(
            invoice=issued,
            position=9,
            kind="x",
            description="x",
            quantity=1,
            unit_price_minor=1,
            amount_minor=1,
        ).save()

    assert list(InvoiceLine.objects.values_list("amount_minor", flat=True)) == [4900, 0, 0]


def test_a_status_cannot_go_back(issued: Invoice) -> None:
    issued.status = InvoiceStatus.DRAFT
    with pytest.raises(InvoiceImmutable, match="from issued to draft"):
        issued.save(update_fields=["status"])
    assert stored(issued)[0] == "issued"


def test_mark_paid_then_nothing_but_credit(issued: Invoice) -> None:
    tenant = issued.tenant
    paid = services.invoice_mark_paid(tenant=tenant, invoice_id=issued.pk, actor="operator")

    assert stored(issued)[0] == "paid"
    assert paid.paid_at is not None
    assert events(issued, "invoice.mark_paid") == [("operator", {"number": f"{YEAR}-000001"})]
    before = stored(issued)
    with pytest.raises(Conflict, match="only an issued one can be voided"):
        services.invoice_void(tenant=tenant, invoice_id=issued.pk, actor="operator")
    with pytest.raises(Conflict, match="only an issued one can be marked paid"):
        services.invoice_mark_paid(tenant=tenant, invoice_id=issued.pk, actor="operator")
    assert stored(issued) == before
    assert events(issued, "invoice.void") == []


def test_void_is_audited_and_final(issued: Invoice) -> None:
    tenant = issued.tenant
    services.invoice_void(
        tenant=tenant, invoice_id=issued.pk, actor="operator", reason="wrong plan"
    )

    assert stored(issued)[0] == "void"
    assert events(issued, "invoice.void") == [
        ("operator", {"number": f"{YEAR}-000001", "reason": "wrong plan"})
    ]
    with pytest.raises(Conflict):
        services.invoice_mark_paid(tenant=tenant, invoice_id=issued.pk, actor="operator")
    with pytest.raises(Conflict, match="only an issued or paid one can be credited"):
        services.credit_note_create(
            tenant=tenant, invoice_id=issued.pk, amount_minor=1, reason="x", actor="operator"
        )
    assert not CreditNote.all_tenants.exists()


def test_credit_notes_up_to_the_total(issued: Invoice) -> None:
    """49.00 invoiced: 30.00 then 19.00 credited; a further cent is refused, and so is an
    amount over what is left."""
    tenant = issued.tenant
    first = services.credit_note_create(
        tenant=tenant, invoice_id=issued.pk, amount_minor=3000, reason="outage", actor="operator"
    )
    with pytest.raises(
        InvalidRequest, match=r"At most 19\.00 EUR of invoice .* is left"
    ) as refused:
        services.credit_note_create(
            tenant=tenant, invoice_id=issued.pk, amount_minor=1901, reason="x", actor="operator"
        )
    assert refused.value.errors == [{"field": "amount_minor", "detail": "More than 1900."}]
    second = services.credit_note_create(
        tenant=tenant, invoice_id=issued.pk, amount_minor=1900, reason="goodwill", actor="operator"
    )
    with pytest.raises(InvalidRequest, match=r"At most 0\.00 EUR"):
        services.credit_note_create(
            tenant=tenant, invoice_id=issued.pk, amount_minor=1, reason="x", actor="operator"
        )

    assert (first.number, second.number) == (f"CN-{YEAR}-000001", f"CN-{YEAR}-000002")
    assert list(
        CreditNote.objects.for_tenant(tenant)
        .order_by("number")
        .values_list("amount_minor", "reason", "created_by")
    ) == [
        (3000, "outage", "operator"),
        (1900, "goodwill", "operator"),
    ]
    assert stored(issued)[3] == 4900  # the invoice itself is untouched
    assert [data["amount_minor"] for _, data in events(issued, "credit_note.create")] == [
        3000,
        1900,
    ]


@pytest.mark.parametrize(
    ("amount", "reason", "field"),
    [
        (0, "r", "amount_minor"),
        (-5, "r", "amount_minor"),
        (True, "r", "amount_minor"),
        (10, "  ", "reason"),
    ],
)
def test_a_bad_credit_note_is_refused(
    issued: Invoice, amount: int, reason: str, field: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        services.credit_note_create(
            tenant=issued.tenant,
            invoice_id=issued.pk,
            amount_minor=amount,
            reason=reason,
            actor="op",
        )
    assert refused.value.errors is not None
    assert refused.value.errors[0]["field"] == field
    assert not CreditNote.all_tenants.exists()


def test_a_draft_can_be_issued_once(shop: TenantCtx) -> None:
    services.billing_run(month=MONTH, actor="operator", issue=False)
    draft = Invoice.objects.for_tenant(shop.tenant).get()

    issued = services.invoice_issue(tenant=shop.tenant, invoice_id=draft.pk, actor="operator")

    assert (issued.status, issued.number) == ("issued", f"{YEAR}-000001")
    with pytest.raises(Conflict, match="only a draft can be issued"):
        services.invoice_issue(tenant=shop.tenant, invoice_id=draft.pk, actor="operator")
    assert stored(draft)[1] == f"{YEAR}-000001"


def test_another_tenants_invoice_is_not_found(issued: Invoice, globex: TenantCtx) -> None:
    before = stored(issued)
    with pytest.raises(NotFound):
        services.invoice_void(tenant=globex.tenant, invoice_id=issued.pk, actor="operator")
    with pytest.raises(NotFound):
        services.credit_note_create(
            tenant=globex.tenant, invoice_id=issued.pk, amount_minor=1, reason="r", actor="op"
        )
    assert stored(issued) == before
    assert not CreditNote.all_tenants.exists()
