"""Writes for billing: the monthly run, issuing, voiding, payment and credit notes. Each
writes its audit event (tenants.services.audit) in the same transaction as the change.

The billing run's rules:

- A month is billed once it has ended; the current month is only a running cost.
- Every tenant created before the month's end is billed on its plan *as it is when the run
  runs* (plans keep no history). A tenant created during the month pays the base fee pro-rated
  by days, its creation day included (billing.pricing). A tenant on a plan with no price at
  all gets no invoice. Suspended tenants are billed like active ones.
- One live (not void) invoice per tenant and month: a unique constraint holds it, and each
  tenant is billed in its own transaction under a row lock, so two runs at once (two workers,
  or the beat task beside an operator's re-run) produce one invoice, never two, and the loser
  leaves it unchanged.
- Re-running a month changes nothing for an issued, paid or void invoice and recomputes a
  draft from the usage as it is now. Voiding an invoice frees its month: the next run bills
  it again, with a new number.
- Numbers are given when an invoice is issued: ``<year>-<6 digits>``, sequential with no gap
  in the year of issue (``CN-<year>-<6 digits>`` for credit notes).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import (
    BillingRun,
    CreditNote,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    NumberSequence,
)
from billing.payments import payment_provider
from billing.pricing import format_minor, is_priced, month_bounds, month_start
from billing.selectors import credited_minor, month_price
from kernel.errors import Conflict, InvalidRequest, NotFound
from tenants.models import Tenant
from tenants.services import audit


def _next_number(kind: str, year: int) -> int:
    """The next number of ``kind`` in ``year``; the sequence row stays locked until the
    caller's transaction ends, so a rolled-back issue gives its number back."""
    NumberSequence.objects.get_or_create(kind=kind, year=year)
    sequence = NumberSequence.objects.select_for_update().get(kind=kind, year=year)
    sequence.last += 1
    sequence.save(update_fields=["last"])
    return sequence.last


def _locked(tenant: Tenant, invoice_id: Any) -> Invoice:
    try:
        return Invoice.objects.for_tenant(tenant).select_for_update().get(pk=invoice_id)
    except (Invoice.DoesNotExist, ValueError) as exc:
        raise NotFound("No such invoice.") from exc


def _issue(invoice: Invoice, actor: str) -> Invoice:
    now = timezone.now()
    invoice.number = f"{now.year}-{_next_number('invoice', now.year):06d}"
    invoice.status = InvoiceStatus.ISSUED
    invoice.issued_at = now
    invoice.save(update_fields=["number", "status", "issued_at"])
    audit(
        tenant=invoice.tenant,
        actor=actor,
        action="invoice.issue",
        target_type="invoice",
        target_id=str(invoice.pk),
        data={
            "number": invoice.number,
            "period": f"{invoice.period:%Y-%m}",
            "total_minor": invoice.total_minor,
            "currency": invoice.currency,
        },
    )
    transaction.on_commit(lambda: payment_provider().charge(invoice))
    return invoice


@dataclass(frozen=True)
class Billed:
    """What billing one tenant's month did: "created", "recomputed" (a draft), "unchanged"
    (an issued, paid invoice already there) or "skipped" (a plan with no price)."""

    invoice: Invoice | None
    outcome: str


@transaction.atomic
def invoice_bill(*, tenant: Tenant, month: date, actor: str, issue: bool = True) -> Billed:
    """Bill one tenant's month (the rules are in the module docstring); with ``issue`` the
    invoice is issued in the same transaction, else it stays a draft."""
    month = month_start(month)
    tenant = Tenant.objects.select_related("plan").get(pk=tenant.pk)
    invoices = Invoice.objects.for_tenant(tenant).select_for_update()
    invoice = invoices.filter(period=month).exclude(status=InvoiceStatus.VOID).first()
    if invoice is not None and not invoice.is_draft:
        return Billed(invoice, "unchanged")
    priced = month_price(tenant=tenant, month=month)
    fields = {
        "currency": priced.currency,
        "plan_name": tenant.plan.name,
        "subtotal_minor": priced.subtotal_minor,
        "total_minor": priced.total_minor,
    }
    outcome = "recomputed"
    if invoice is None:
        if not is_priced(tenant.plan):
            return Billed(None, "skipped")
        try:
            with transaction.atomic():
                invoice = Invoice.all_tenants.create(tenant=tenant, period=month, **fields)
            outcome = "created"
        except IntegrityError:
            # Another run inserted this month's invoice and has committed it meanwhile (the
            # insert waited for it): take that one as it is now.
            invoice = invoices.filter(period=month).exclude(status=InvoiceStatus.VOID).get()
            if not invoice.is_draft:
                return Billed(invoice, "unchanged")
    if outcome == "recomputed":
        for name, value in fields.items():
            setattr(invoice, name, value)
        invoice.save(update_fields=list(fields))
        invoice.lines.all().delete()
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            position=position,
            kind=line.kind,
            description=line.description,
            quantity=line.quantity,
            unit_price_minor=line.unit_price_minor,
            price_per=line.price_per,
            amount_minor=line.amount_minor,
        )
        for position, line in enumerate(priced.lines, start=1)
    )
    audit(
        tenant=tenant,
        actor=actor,
        action="invoice.draft",
        target_type="invoice",
        target_id=str(invoice.pk),
        data={"period": f"{month:%Y-%m}", "total_minor": invoice.total_minor, "outcome": outcome},
    )
    if issue:
        _issue(invoice, actor)
    return Billed(invoice, outcome)


@dataclass(frozen=True)
class RunResult:
    month: date
    outcomes: dict[str, int]  # outcome of invoice_bill -> tenants


def billing_run(*, month: date, actor: str, issue: bool = True) -> RunResult:
    """Bill every tenant for ``month`` (any day of it; it must have ended): one transaction
    per tenant, so a failure leaves the tenants billed so far billed and a re-run finishes
    the rest. With ``issue`` (the default, and the beat task's) the month's BillingRun is
    marked finished; without, the invoices stay drafts for an operator to look at."""
    month = month_start(month)
    if month >= month_start(timezone.now().date()):
        raise InvalidRequest(
            f"{month:%Y-%m} has not ended: only a past month can be billed.",
            errors=[{"field": "month", "detail": "Not a past month."}],
        )
    _, end = month_bounds(month)
    run, _ = BillingRun.objects.get_or_create(month=month, defaults={"actor": actor})
    outcomes: Counter[str] = Counter()
    tenants = Tenant.objects.filter(created_at__lt=end).order_by("created_at", "pk")
    for tenant in tenants.iterator():
        outcomes[invoice_bill(tenant=tenant, month=month, actor=actor, issue=issue).outcome] += 1
    if issue:
        run.finished_at = timezone.now()
        run.actor = actor
        run.invoices = (
            Invoice.all_tenants.filter(period=month).exclude(status=InvoiceStatus.VOID).count()
        )
        run.save(update_fields=["finished_at", "actor", "invoices"])
    return RunResult(month=month, outcomes=dict(outcomes))


@transaction.atomic
def invoice_issue(*, tenant: Tenant, invoice_id: Any, actor: str) -> Invoice:
    """Issue a draft (draft → issued, with the next number). Conflict for any other status."""
    invoice = _locked(tenant, invoice_id)
    if not invoice.is_draft:
        raise Conflict(f"Invoice {invoice} is {invoice.status}: only a draft can be issued.")
    return _issue(invoice, actor)


@transaction.atomic
def invoice_void(*, tenant: Tenant, invoice_id: Any, actor: str, reason: str = "") -> Invoice:
    """issued → void: the invoice no longer counts, and its month can be billed again. A paid
    invoice is corrected with a credit note instead; a draft is not void but recomputed."""
    invoice = _locked(tenant, invoice_id)
    if invoice.status != InvoiceStatus.ISSUED:
        raise Conflict(f"Invoice {invoice} is {invoice.status}: only an issued one can be voided.")
    invoice.status = InvoiceStatus.VOID
    invoice.voided_at = timezone.now()
    invoice.save(update_fields=["status", "voided_at"])
    audit(
        tenant=tenant,
        actor=actor,
        action="invoice.void",
        target_type="invoice",
        target_id=str(invoice.pk),
        data={"number": invoice.number, "reason": reason},
    )
    return invoice


@transaction.atomic
def invoice_mark_paid(*, tenant: Tenant, invoice_id: Any, actor: str) -> Invoice:
    """issued → paid (an operator, or a payment provider's webhook: billing.payments)."""
    invoice = _locked(tenant, invoice_id)
    if invoice.status != InvoiceStatus.ISSUED:
        raise Conflict(
            f"Invoice {invoice} is {invoice.status}: only an issued one can be marked paid."
        )
    invoice.status = InvoiceStatus.PAID
    invoice.paid_at = timezone.now()
    invoice.save(update_fields=["status", "paid_at"])
    audit(
        tenant=tenant,
        actor=actor,
        action="invoice.mark_paid",
        target_type="invoice",
        target_id=str(invoice.pk),
        data={"number": invoice.number},
    )
    return invoice


@transaction.atomic
def credit_note_create(
    *, tenant: Tenant, invoice_id: Any, amount_minor: int, reason: str, actor: str
) -> CreditNote:
    """Credit part or all of an issued or paid invoice: ``amount_minor`` > 0 and no more than
    its total less the credit notes it already has (400 otherwise); a draft or void invoice
    has nothing to credit (409)."""
    invoice = _locked(tenant, invoice_id)
    if invoice.status not in (InvoiceStatus.ISSUED, InvoiceStatus.PAID):
        raise Conflict(
            f"Invoice {invoice} is {invoice.status}: only an issued or paid one can be credited."
        )
    reason = reason.strip()
    if not reason:
        raise InvalidRequest(
            "A credit note needs a reason.", errors=[{"field": "reason", "detail": "Required."}]
        )
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise InvalidRequest(
            "amount_minor must be a positive integer of minor units.",
            errors=[{"field": "amount_minor", "detail": "Not a positive integer."}],
        )
    available = invoice.total_minor - credited_minor(invoice)
    if amount_minor > available:
        raise InvalidRequest(
            f"At most {format_minor(available, invoice.currency)} of invoice {invoice.number} "
            "is left to credit.",
            errors=[{"field": "amount_minor", "detail": f"More than {available}."}],
        )
    year = timezone.now().year
    note = CreditNote.all_tenants.create(
        tenant=tenant,
        invoice=invoice,
        number=f"CN-{year}-{_next_number('credit_note', year):06d}",
        amount_minor=amount_minor,
        reason=reason,
        created_by=actor,
    )
    audit(
        tenant=tenant,
        actor=actor,
        action="credit_note.create",
        target_type="invoice",
        target_id=str(invoice.pk),
        data={
            "number": note.number,
            "invoice": invoice.number,
            "amount_minor": amount_minor,
            "reason": reason,
        },
    )
    return note
