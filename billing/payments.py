"""The seam for a payment provider (none is integrated yet).

A provider is a class implementing :class:`PaymentProvider`, named by the setting
``BILLING_PAYMENT_PROVIDER`` (a dotted path; default :class:`NoPaymentProvider`, which does
nothing: operators mark invoices paid in the admin). The billing services call it at two
points and nowhere else:

- ``charge(invoice)``, after the transaction that issued the invoice has committed (so a
  provider never charges for an invoice that was rolled back). It should start collecting
  ``invoice.total_minor`` minus the invoice's credit notes and return quickly; a slow provider
  belongs behind a Celery task of its own.
- ``handle_webhook(body, headers)``, from an HTTP endpoint the integration adds: it verifies
  the provider's signature and returns the id of the invoice that was paid (or None). The
  caller then calls :func:`billing.services.invoice_mark_paid`, which is audited like an
  operator's change; the provider itself never writes billing rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from billing.models import Invoice

DEFAULT_PROVIDER = "billing.payments.NoPaymentProvider"


class PaymentProvider(Protocol):
    def charge(self, invoice: Invoice) -> None:
        """Start collecting an issued invoice's amount due."""

    def handle_webhook(self, body: bytes, headers: Mapping[str, str]) -> uuid.UUID | None:
        """The id of the invoice a verified provider notification says is paid, or None."""


class NoPaymentProvider:
    """No provider: nothing is charged; invoices are marked paid by operators."""

    def charge(self, invoice: Invoice) -> None:
        return None

    def handle_webhook(self, body: bytes, headers: Mapping[str, str]) -> uuid.UUID | None:
        return None


@cache
def _provider(path: str) -> PaymentProvider:
    provider: PaymentProvider = import_string(path)()
    return provider


def payment_provider() -> PaymentProvider:
    """The configured provider (one instance per process and setting)."""
    return _provider(getattr(settings, "BILLING_PAYMENT_PROVIDER", DEFAULT_PROVIDER))
