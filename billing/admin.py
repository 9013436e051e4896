"""The operators' admin for billing: invoices (issue, void, mark paid, credit note, re-run a
month, the month's CSV) and credit notes, read-only.

Every change goes through billing.services, so it is audited like any other; nothing here
writes a billing row itself. Invoices are made by the billing run only (no "add"), never
deleted (financial records), and an issued one is read-only in every field.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from billing import exports, services
from billing.models import CreditNote, Invoice, InvoiceLine
from billing.pricing import format_minor
from billing.selectors import credit_notes, credited_minor
from kernel.errors import PlatformError

# The admin's classes are generic only to the type checker (django-stubs).
if TYPE_CHECKING:
    _LineInline = admin.TabularInline[InvoiceLine, Invoice]
    _InvoiceAdmin = admin.ModelAdmin[Invoice]
    _CreditNoteAdmin = admin.ModelAdmin[CreditNote]
else:
    _LineInline = admin.TabularInline
    _InvoiceAdmin = _CreditNoteAdmin = admin.ModelAdmin


def _actor(request: HttpRequest) -> str:
    return f"staff:{getattr(request.user, 'email', '')}"


class InvoiceLineInline(_LineInline):
    model = InvoiceLine
    extra = 0
    can_delete = False
    fields = (
        "position",
        "kind",
        "description",
        "quantity",
        "unit_price_minor",
        "price_per",
        "amount_minor",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MonthForm(forms.Form):
    month = forms.DateField(input_formats=["%Y-%m"], help_text="YYYY-MM: a month that has ended.")
    issue = forms.BooleanField(
        required=False, initial=True, help_text="Issue the invoices (else leave them drafts)."
    )


class CreditNoteForm(forms.Form):
    amount_minor = forms.IntegerField(min_value=1, help_text="In minor units (cents).")
    reason = forms.CharField(max_length=500)


@admin.register(Invoice)
class InvoiceAdmin(_InvoiceAdmin):
    list_display = ("__str__", "tenant", "period", "status", "total", "credited", "issued_at")
    list_filter = ("status", "period", "currency")
    search_fields = ("number", "tenant__slug", "tenant__name")
    date_hierarchy = "period"
    ordering = ("-period", "number")
    inlines = (InvoiceLineInline,)
    actions = ("issue", "void", "mark_paid", "export_csv")
    list_select_related = ("tenant",)
    change_form_template = "admin/billing/invoice/change_form.html"
    change_list_template = "admin/billing/invoice/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Invoice]:
        return Invoice.all_tenants.select_related("tenant")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Invoices change through the actions (services) only: every field is read-only.
        return [field.name for field in Invoice._meta.fields] + ["credit_notes"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Credit notes")
    def credit_notes(self, invoice: Invoice) -> str:
        return (
            "; ".join(
                f"{note.number}: {format_minor(note.amount_minor, invoice.currency)}"
                f" ({note.reason})"
                for note in credit_notes(invoice)
            )
            or "-"
        )

    @admin.display(description="Total")
    def total(self, invoice: Invoice) -> str:
        return format_minor(invoice.total_minor, invoice.currency)

    @admin.display(description="Credited")
    def credited(self, invoice: Invoice) -> str:
        return format_minor(credited_minor(invoice), invoice.currency)

    def _each(
        self, request: HttpRequest, queryset: QuerySet[Invoice], verb: str, call: Any
    ) -> None:
        done = 0
        for invoice in queryset:
            try:
                call(tenant=invoice.tenant, invoice_id=invoice.pk, actor=_actor(request))
                done += 1
            except PlatformError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
        if done:
            self.message_user(request, f"{done} invoice(s) {verb}.", messages.SUCCESS)

    @admin.action(description="Issue the selected drafts")
    def issue(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        self._each(request, queryset, "issued", services.invoice_issue)

    @admin.action(description="Void the selected issued invoices")
    def void(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        self._each(request, queryset, "voided", services.invoice_void)

    @admin.action(description="Mark the selected issued invoices paid")
    def mark_paid(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        self._each(request, queryset, "marked paid", services.invoice_mark_paid)

    @admin.action(description="Download the selected invoices' lines as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> HttpResponse:
        parts = [exports.invoice_csv(invoice) for invoice in queryset.order_by("number")]
        body = parts[0] + "".join(part.split("\r\n", 1)[1] for part in parts[1:]) if parts else ""
        response = HttpResponse(body, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="invoice-lines.csv"'
        return response

    def get_urls(self) -> list[URLPattern]:
        own = [
            path("run/", self.admin_site.admin_view(self.run_view), name="billing_invoice_run"),
            path(
                "month-csv/",
                self.admin_site.admin_view(self.month_csv_view),
                name="billing_invoice_month_csv",
            ),
            path(
                "<path:object_id>/credit-note/",
                self.admin_site.admin_view(self.credit_note_view),
                name="billing_invoice_credit_note",
            ),
            path(
                "<path:object_id>/document.pdf",
                self.admin_site.admin_view(self.pdf_view),
                name="billing_invoice_pdf",
            ),
        ]
        return own + super().get_urls()

    def _form_page(self, request: HttpRequest, title: str, form: forms.Form) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/billing/invoice/form.html", context)

    def run_view(self, request: HttpRequest) -> HttpResponse:
        """Bill (or re-bill) a month: billing.services.billing_run."""
        if not self.has_change_permission(request):
            return HttpResponse(status=403)
        form = MonthForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            month: date = form.cleaned_data["month"]
            try:
                result = services.billing_run(
                    month=month, actor=_actor(request), issue=form.cleaned_data["issue"]
                )
            except PlatformError as exc:
                form.add_error("month", exc.detail)
            else:
                summary = ", ".join(f"{n} {what}" for what, n in sorted(result.outcomes.items()))
                self.message_user(request, f"{month:%Y-%m} billed: {summary or 'no tenant'}.")
                return HttpResponseRedirect(reverse("admin:billing_invoice_changelist"))
        return self._form_page(request, "Bill a month", form)

    def month_csv_view(self, request: HttpRequest) -> HttpResponse:
        """Every invoice of ``?month=YYYY-MM``, as CSV."""
        form = MonthForm(request.GET or None)
        if not request.GET or not form.is_valid():
            return self._form_page(request, "Invoices of a month as CSV", form)
        month: date = form.cleaned_data["month"]
        response = HttpResponse(exports.month_csv(month), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="invoices-{month:%Y-%m}.csv"'
        return response

    def credit_note_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_change_permission(request):
            return HttpResponse(status=403)
        invoice = self.get_object(request, object_id)
        if invoice is None:
            return HttpResponse(status=404)
        form = CreditNoteForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                note = services.credit_note_create(
                    tenant=invoice.tenant,
                    invoice_id=invoice.pk,
                    amount_minor=form.cleaned_data["amount_minor"],
                    reason=form.cleaned_data["reason"],
                    actor=_actor(request),
                )
            except PlatformError as exc:
                form.add_error(None, exc.detail)
            else:
                self.message_user(request, f"Credit note {note.number} created.")
                return HttpResponseRedirect(
                    reverse("admin:billing_invoice_change", args=[invoice.pk])
                )
        return self._form_page(request, f"Credit note for invoice {invoice}", form)

    def pdf_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        invoice = self.get_object(request, object_id)
        if invoice is None:
            return HttpResponse(status=404)
        response = HttpResponse(exports.invoice_pdf(invoice), content_type="application/pdf")
        response["Content-Disposition"] = (
            f'attachment; filename="{invoice.number or invoice.pk}.pdf"'
        )
        return response


@admin.register(CreditNote)
class CreditNoteAdmin(_CreditNoteAdmin):
    list_display = (
        "number",
        "invoice",
        "tenant",
        "amount_minor",
        "reason",
        "created_at",
        "created_by",
    )
    search_fields = ("number", "invoice__number", "tenant__slug")
    list_select_related = ("invoice", "tenant")

    def get_queryset(self, request: HttpRequest) -> QuerySet[CreditNote]:
        return CreditNote.all_tenants.select_related("invoice", "tenant")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in CreditNote._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # made from an invoice's page (InvoiceAdmin.credit_note_view)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
