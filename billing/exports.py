"""Invoices as documents: a PDF (fpdf2, pure Python, a core font: nothing to download), the
CSV of one invoice's lines, and the CSV of every invoice of a month for operators.

Amounts in the CSVs are integers of minor units, as stored; the PDF shows them formatted in
the currency (billing.pricing.format_minor).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import date

from fpdf import FPDF

from billing.models import Invoice
from billing.pricing import format_minor
from billing.selectors import credit_notes, credited_minor, month_invoices

LINE_COLUMNS = [
    "invoice",
    "period",
    "position",
    "kind",
    "description",
    "quantity",
    "unit_price_minor",
    "price_per",
    "amount_minor",
    "currency",
]
MONTH_COLUMNS = [
    "number",
    "tenant",
    "tenant_id",
    "period",
    "status",
    "currency",
    "subtotal_minor",
    "total_minor",
    "credited_minor",
    "issued_at",
    "paid_at",
    "voided_at",
]


def _csv(header: list[str], rows: Iterable[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _iso(value: object) -> str:
    return value.isoformat() if value is not None else ""  # type: ignore[attr-defined]


def invoice_csv(invoice: Invoice) -> str:
    """One row per line of the invoice (RFC 4180, CRLF line ends)."""
    return _csv(
        LINE_COLUMNS,
        (
            [
                invoice.number or "",
                f"{invoice.period:%Y-%m}",
                line.position,
                line.kind,
                line.description,
                line.quantity,
                line.unit_price_minor,
                line.price_per,
                line.amount_minor,
                invoice.currency,
            ]
            for line in invoice.lines.all()
        ),
    )


def month_csv(month: date) -> str:
    """One row per invoice of the month, every tenant's (drafts and void ones included, with
    their status), in number order."""
    return _csv(
        MONTH_COLUMNS,
        (
            [
                invoice.number or "",
                invoice.tenant.slug,
                str(invoice.tenant_id),
                f"{invoice.period:%Y-%m}",
                invoice.status,
                invoice.currency,
                invoice.subtotal_minor,
                invoice.total_minor,
                credited_minor(invoice),
                _iso(invoice.issued_at),
                _iso(invoice.paid_at),
                _iso(invoice.voided_at),
            ]
            for invoice in month_invoices(month=month)
        ),
    )


def _latin1(text: str) -> str:
    # The PDF core fonts cover Latin-1 only; anything else shows as "?" rather than failing.
    return text.encode("latin-1", "replace").decode("latin-1")


def invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice as a one-page (or longer) A4 PDF."""
    pdf = FPDF(format="A4")
    # Uncompressed: invoices are small, and the text stays searchable as written.
    pdf.set_compression(False)
    title = f"Invoice {invoice.number}" if invoice.number else "Draft invoice"
    pdf.set_title(title)
    pdf.set_creator("OpenPlatform")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, _latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    facts = [
        ("Customer", f"{invoice.tenant.name} ({invoice.tenant.slug})"),
        ("Period", f"{invoice.period:%B %Y}"),
        ("Plan", invoice.plan_name),
        ("Status", invoice.status),
        ("Issued", f"{invoice.issued_at:%Y-%m-%d}" if invoice.issued_at else "-"),
    ]
    for label, value in facts:
        pdf.cell(30, 6, label)
        pdf.cell(0, 6, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(150, 7, "Description", border="B")
    pdf.cell(0, 7, "Amount", border="B", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    for line in invoice.lines.all():
        pdf.cell(150, 6, _latin1(line.description[:110]))
        pdf.cell(
            0,
            6,
            format_minor(line.amount_minor, invoice.currency),
            align="R",
            new_x="LMARGIN",
            new_y="NEXT",
        )
    pdf.ln(2)
    credited = credited_minor(invoice)
    totals = [
        ("Subtotal", invoice.subtotal_minor),
        ("Total", invoice.total_minor),
    ]
    if credited:
        totals += [("Credited", -credited), ("Amount due", invoice.total_minor - credited)]
    pdf.set_font("Helvetica", "B", 10)
    for label, amount in totals:
        pdf.cell(150, 6, label, align="R")
        pdf.cell(
            0, 6, format_minor(amount, invoice.currency), align="R", new_x="LMARGIN", new_y="NEXT"
        )
    notes = list(credit_notes(invoice))
    if notes:
        pdf.ln(4)
        pdf.set_font("Helvetica", "", 9)
        for note in notes:
            pdf.cell(
                0,
                6,
                _latin1(
                    f"Credit note {note.number}: "
                    f"{format_minor(note.amount_minor, invoice.currency)} - {note.reason[:80]}"
                ),
                new_x="LMARGIN",
                new_y="NEXT",
            )
    return bytes(pdf.output())
