"""The console's billing pages: the invoices (list, one invoice with its lines and credit
notes, PDF and CSV downloads) and this period's running cost, priced by the same function as
the invoice (billing.selectors.running_cost).

Billing covers the whole tenant, so it needs what the API's invoices need: a role with the
manage scope (owners, admins and developers; a viewer gets a 403). Drafts are not shown, as
in the API; another tenant's invoice is a 404.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import path
from django.views import View
from django.views.generic import TemplateView

from billing import exports
from billing import selectors as billing_selectors
from billing.models import Invoice
from billing.pricing import format_gib, format_minor
from console.views import TenantMixin
from kernel.errors import NotFound
from tenants.models import Scope

PAGE_SIZE = 24


class BillingMixin(TenantMixin):
    def check_access(self) -> None:
        if Scope.MANAGE.value not in self.permissions.scopes:
            raise PermissionDenied(f"Your role ({self.membership.role}) cannot see billing.")

    def invoice(self, invoice_id: str) -> Invoice:
        try:
            return billing_selectors.invoice_get(tenant=self.tenant, invoice_id=invoice_id)
        except NotFound as exc:
            raise Http404("No such invoice.") from exc


def _amounts(invoice: Invoice) -> dict[str, str]:
    credited = billing_selectors.credited_minor(invoice)
    return {
        "total": format_minor(invoice.total_minor, invoice.currency),
        "credited": format_minor(credited, invoice.currency) if credited else "",
        "due": format_minor(invoice.total_minor - credited, invoice.currency),
    }


class InvoiceListView(BillingMixin, TemplateView):
    """This period's running cost, then the invoices, newest month first."""

    template_name = "console/billing/invoices.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        running = billing_selectors.running_cost(tenant=self.tenant)
        currency = running.priced.currency
        page = Paginator(billing_selectors.invoice_list(tenant=self.tenant), PAGE_SIZE).get_page(
            self.request.GET.get("page")
        )
        context.update(
            running=running,
            running_total=format_minor(running.priced.total_minor, currency),
            running_lines=[
                (line.description, format_minor(line.amount_minor, currency))
                for line in running.priced.lines
            ],
            running_gib=format_gib(running.usage.traffic_bytes),
            page=page,
            invoices=[(invoice, _amounts(invoice)) for invoice in page.object_list],
        )
        return context


class InvoiceDetailView(BillingMixin, TemplateView):
    template_name = "console/billing/invoice.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        invoice = self.invoice(self.kwargs["invoice_id"])
        context.update(
            invoice=invoice,
            amounts=_amounts(invoice),
            lines=[
                (line, format_minor(line.amount_minor, invoice.currency))
                for line in invoice.lines.all()
            ],
            credit_notes=[
                (note, format_minor(note.amount_minor, invoice.currency))
                for note in billing_selectors.credit_notes(invoice)
            ],
        )
        return context


class InvoiceDownloadView(BillingMixin, View):
    """The invoice as PDF or as the CSV of its lines (``kind`` in the URL)."""

    def get(self, request: HttpRequest, invoice_id: str, kind: str) -> HttpResponse:
        invoice = self.invoice(invoice_id)
        if kind == "pdf":
            response = HttpResponse(exports.invoice_pdf(invoice), content_type="application/pdf")
        else:
            response = HttpResponse(
                exports.invoice_csv(invoice), content_type="text/csv; charset=utf-8"
            )
        response["Content-Disposition"] = f'attachment; filename="{invoice.number}.{kind}"'
        return response


urlpatterns = [
    path("billing/", InvoiceListView.as_view(), name="billing"),
    path("billing/invoices/<uuid:invoice_id>/", InvoiceDetailView.as_view(), name="invoice"),
    path(
        "billing/invoices/<uuid:invoice_id>.pdf",
        InvoiceDownloadView.as_view(),
        {"kind": "pdf"},
        name="invoice-pdf",
    ),
    path(
        "billing/invoices/<uuid:invoice_id>.csv",
        InvoiceDownloadView.as_view(),
        {"kind": "csv"},
        name="invoice-csv",
    ),
]
