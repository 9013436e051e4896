"""Invoices, their lines and credit notes; the per-year number sequences; the record of each
month's billing run.

Money is integers of minor units (``*_minor``), never floats. An invoice is a draft while the
billing run may still recompute it; once issued its amounts, lines, number, period and
currency are frozen (``save()`` refuses a change, and so does every line's ``save()`` and
``delete()``): a correction is a :class:`CreditNote`. Its status moves only draft → issued →
paid or void.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from django.db import models
from django.db.models import Q
from django.utils import timezone

from kernel.errors import Conflict
from tenants.models import Tenant, TenantManager


class InvoiceImmutable(Conflict):
    """A change to an issued, paid or void invoice (or its lines), or a transition its status
    does not allow."""


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft"
    ISSUED = "issued"
    PAID = "paid"
    VOID = "void"


#: The transitions a status allows (staying the same is always allowed).
TRANSITIONS: dict[str, frozenset[str]] = {
    InvoiceStatus.DRAFT: frozenset({InvoiceStatus.ISSUED}),
    InvoiceStatus.ISSUED: frozenset({InvoiceStatus.PAID, InvoiceStatus.VOID}),
    InvoiceStatus.PAID: frozenset(),
    InvoiceStatus.VOID: frozenset(),
}
#: What an issued invoice never changes.
FROZEN_FIELDS = (
    "tenant_id",
    "period",
    "number",
    "currency",
    "plan_name",
    "subtotal_minor",
    "total_minor",
)


class Invoice(models.Model):
    """One tenant's bill for one calendar month (``period``: the month's first day)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="invoices")
    period = models.DateField(help_text="The month billed: its first day.")
    number = models.CharField(
        max_length=20,
        unique=True,
        null=True,
        blank=True,
        help_text='"<year>-<6 digits>", sequential per year of issue; given when issued.',
    )
    currency = models.CharField(max_length=3)
    plan_name = models.CharField(max_length=100, blank=True)
    status = models.CharField(
        max_length=8, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT
    )
    subtotal_minor = models.BigIntegerField(default=0)
    total_minor = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    issued_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        constraints: ClassVar[list[Any]] = [
            # One live invoice per tenant and month; a void one frees the month for a new
            # invoice. Two billing runs at once meet here (the loser re-reads the winner's).
            models.UniqueConstraint(
                fields=["tenant", "period"],
                condition=~Q(status="void"),
                name="invoice_one_per_period",
            ),
            models.CheckConstraint(condition=Q(period__day=1), name="invoice_period_first_day"),
            models.CheckConstraint(
                condition=Q(status="draft") | Q(number__isnull=False),
                name="invoice_issued_has_number",
            ),
        ]
        indexes = [models.Index(fields=["tenant", "-period"]), models.Index(fields=["period"])]

    def __str__(self) -> str:
        return self.number or f"draft {self.period:%Y-%m} {self.tenant_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Refuses (InvoiceImmutable) a change of a frozen field once the stored row is no
        longer a draft, and a status change TRANSITIONS does not allow."""
        if not self._state.adding:
            stored = Invoice.all_tenants.filter(pk=self.pk).values("status", *FROZEN_FIELDS).first()
            if stored is not None:
                was = stored["status"]
                if self.status != was and self.status not in TRANSITIONS[was]:
                    raise InvoiceImmutable(f"An invoice cannot go from {was} to {self.status}.")
                if was != InvoiceStatus.DRAFT:
                    changed = [f for f in FROZEN_FIELDS if stored[f] != getattr(self, f)]
                    if changed:
                        raise InvoiceImmutable(
                            f"Invoice {stored['number']} is {was}: its {', '.join(changed)} "
                            "cannot change; correct it with a credit note."
                        )
        super().save(*args, **kwargs)

    @property
    def is_draft(self) -> bool:
        return self.status == InvoiceStatus.DRAFT


class InvoiceLine(models.Model):
    """``amount_minor = round_half_up(quantity * unit_price_minor / price_per)``
    (billing.pricing): a price per million requests has ``price_per`` 1,000,000, per GiB of
    bytes 2**30, a whole month's base fee 1."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=16)
    description = models.CharField(max_length=300)
    quantity = models.BigIntegerField()
    unit_price_minor = models.BigIntegerField()
    price_per = models.BigIntegerField(default=1)
    amount_minor = models.BigIntegerField()

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "position"], name="invoice_line_position")
        ]

    def __str__(self) -> str:
        return self.description

    def _require_draft(self) -> None:
        status = Invoice.all_tenants.filter(pk=self.invoice_id).values_list("status", flat=True)
        if status and status[0] != InvoiceStatus.DRAFT:
            raise InvoiceImmutable(
                "The lines of an issued invoice cannot change; correct it with a credit note."
            )

    def save(self, *args: Any, **kwargs: Any) -> None:
        self._require_draft()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        self._require_draft()
        return super().delete(*args, **kwargs)


class CreditNote(models.Model):
    """A correction of an issued (or paid) invoice: credits ``amount_minor`` of its total.
    The credits of an invoice never add up to more than its total."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="credit_notes")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    number = models.CharField(max_length=24, unique=True, help_text='"CN-<year>-<6 digits>".')
    amount_minor = models.BigIntegerField()
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="credit_note_positive")
        ]

    def __str__(self) -> str:
        return self.number


class NumberSequence(models.Model):
    """The last number given of one kind ("invoice", "credit_note") in one year: locked while
    the next is taken, so numbers have no gap and no repeat however many workers issue."""

    kind = models.CharField(max_length=16)
    year = models.PositiveSmallIntegerField()
    last = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "year"], name="sequence_unique")]

    def __str__(self) -> str:
        return f"{self.kind} {self.year}: {self.last}"


class BillingRun(models.Model):
    """That a month has been billed (``finished_at``), by whom, with what outcome; the daily
    task bills the previous month only while it has no finished run."""

    month = models.DateField(unique=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    actor = models.CharField(max_length=200)
    invoices = models.PositiveIntegerField(default=0, help_text="Live invoices of the month.")

    def __str__(self) -> str:
        return f"{self.month:%Y-%m}"
