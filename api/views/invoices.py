"""The caller's invoices: ``GET /v1/invoices``, ``GET /v1/invoices/{id}`` and the downloads
``GET /v1/invoices/{id}.pdf`` and ``GET /v1/invoices/{id}.csv``.

Invoices cover the whole tenant: they need the manage scope and a key without resource
patterns (403 otherwise), like usage and the audit trail. Another tenant's invoice is a 404.
Drafts (the billing run's work in progress, recomputed until issued) are not shown: a tenant
sees an invoice from the moment it is issued, as ``issued``, then ``paid`` or ``void``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from api.pagination import paginate
from api.schema import AUTH_ERRORS, INVALID, page_of, problem
from api.views.tenant import FORBIDDEN_TENANT_WIDE, TenantWideView
from billing import exports, selectors
from billing.models import Invoice, InvoiceStatus

NOT_FOUND_INVOICE = {404: problem("not_found: no such invoice in this tenant")}


class InvoiceLineOutputSerializer(serializers.Serializer[Any]):
    position = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=["base_fee", "requests", "traffic"])
    description = serializers.CharField()
    quantity = serializers.IntegerField(help_text="Units billed: days, requests or bytes.")
    unit_price_minor = serializers.IntegerField(help_text="Price of price_per units.")
    price_per = serializers.IntegerField(
        help_text="How many units the price is for (1, 1000000 requests, 1073741824 bytes)."
    )
    amount_minor = serializers.IntegerField(
        help_text="quantity * unit_price_minor / price_per, rounded half up."
    )


class CreditNoteOutputSerializer(serializers.Serializer[Any]):
    number = serializers.CharField()
    amount_minor = serializers.IntegerField()
    reason = serializers.CharField()
    created_at = serializers.DateTimeField()


class InvoiceOutputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    number = serializers.CharField()
    period = serializers.CharField(help_text="The month billed, YYYY-MM.")
    status = serializers.ChoiceField(choices=InvoiceStatus.values)
    currency = serializers.CharField(help_text="ISO 4217; every amount is in its minor unit.")
    subtotal_minor = serializers.IntegerField()
    total_minor = serializers.IntegerField()
    credited_minor = serializers.IntegerField(help_text="The sum of the credit notes.")
    amount_due_minor = serializers.IntegerField(help_text="total_minor - credited_minor.")
    issued_at = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(allow_null=True)
    voided_at = serializers.DateTimeField(allow_null=True)


class InvoiceDetailOutputSerializer(InvoiceOutputSerializer):
    lines = InvoiceLineOutputSerializer(many=True)
    credit_notes = CreditNoteOutputSerializer(many=True)


def invoice_data(invoice: Invoice, *, detail: bool = False) -> dict[str, Any]:
    credited = selectors.credited_minor(invoice)
    data: dict[str, Any] = {
        "id": invoice.id,
        "number": invoice.number,
        "period": f"{invoice.period:%Y-%m}",
        "status": invoice.status,
        "currency": invoice.currency,
        "subtotal_minor": invoice.subtotal_minor,
        "total_minor": invoice.total_minor,
        "credited_minor": credited,
        "amount_due_minor": invoice.total_minor - credited,
        "issued_at": invoice.issued_at,
        "paid_at": invoice.paid_at,
        "voided_at": invoice.voided_at,
    }
    if detail:
        data["lines"] = [
            {
                "position": line.position,
                "kind": line.kind,
                "description": line.description,
                "quantity": line.quantity,
                "unit_price_minor": line.unit_price_minor,
                "price_per": line.price_per,
                "amount_minor": line.amount_minor,
            }
            for line in invoice.lines.all()
        ]
        data["credit_notes"] = [
            {
                "number": note.number,
                "amount_minor": note.amount_minor,
                "reason": note.reason,
                "created_at": note.created_at,
            }
            for note in selectors.credit_notes(invoice)
        ]
    return data


class InvoiceView(TenantWideView):
    tenant_wide = "invoices"


class InvoiceListView(InvoiceView):
    @extend_schema(
        operation_id="invoices_list",
        parameters=[
            OpenApiParameter("limit", int, description="1..200, default 50"),
            OpenApiParameter("cursor", str),
        ],
        responses={
            200: page_of("Invoice", InvoiceOutputSerializer),
            **INVALID,
            **AUTH_ERRORS,
            **FORBIDDEN_TENANT_WIDE,
        },
        description="The tenant's issued, paid and void invoices, newest month first.",
    )
    def get(self, request: Request) -> Response:
        return Response(
            paginate(
                selectors.invoice_list(tenant=self.tenant),
                request.query_params,
                ordering=["-period", "-created_at", "-id"],
                serialize=invoice_data,
            )
        )


INVOICE_ID = OpenApiParameter("invoice_id", OpenApiTypes.UUID, OpenApiParameter.PATH)


class InvoiceDetailView(InvoiceView):
    @extend_schema(
        operation_id="invoices_retrieve",
        parameters=[INVOICE_ID],
        responses={
            200: InvoiceDetailOutputSerializer,
            **AUTH_ERRORS,
            **FORBIDDEN_TENANT_WIDE,
            **NOT_FOUND_INVOICE,
        },
    )
    def get(self, request: Request, invoice_id: Any) -> Response:
        invoice = selectors.invoice_get(tenant=self.tenant, invoice_id=invoice_id)
        return Response(invoice_data(invoice, detail=True))


class _FileRenderer(BaseRenderer):
    charset = None

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return data if isinstance(data, bytes) else b""


class PdfRenderer(_FileRenderer):
    media_type, format = "application/pdf", "pdf"


class CsvRenderer(_FileRenderer):
    media_type, format = "text/csv", "csv"


class TheOneMediaType(BaseContentNegotiation):
    """A download has one media type whatever Accept says (errors are problem+json)."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: Any, format_suffix: str | None = None
    ) -> tuple[Any, str]:
        return renderers[0], renderers[0].media_type


def _download(content: bytes, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class InvoicePdfView(InvoiceView):
    renderer_classes = [PdfRenderer]
    content_negotiation_class = TheOneMediaType

    @extend_schema(
        operation_id="invoices_pdf",
        parameters=[INVOICE_ID],
        responses={
            (200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="PDF"),
            **AUTH_ERRORS,
            **FORBIDDEN_TENANT_WIDE,
            **NOT_FOUND_INVOICE,
        },
    )
    def get(self, request: Request, invoice_id: Any) -> HttpResponse:
        invoice = selectors.invoice_get(tenant=self.tenant, invoice_id=invoice_id)
        return _download(exports.invoice_pdf(invoice), "application/pdf", f"{invoice.number}.pdf")


class InvoiceCsvView(InvoiceView):
    renderer_classes = [CsvRenderer]
    content_negotiation_class = TheOneMediaType

    @extend_schema(
        operation_id="invoices_csv",
        parameters=[INVOICE_ID],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The lines, CSV"),
            **AUTH_ERRORS,
            **FORBIDDEN_TENANT_WIDE,
            **NOT_FOUND_INVOICE,
        },
    )
    def get(self, request: Request, invoice_id: Any) -> HttpResponse:
        invoice = selectors.invoice_get(tenant=self.tenant, invoice_id=invoice_id)
        return _download(
            exports.invoice_csv(invoice).encode(),
            "text/csv; charset=utf-8",
            f"{invoice.number}.csv",
        )
