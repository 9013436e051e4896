"""billing.services.billing_run and the beat task: one invoice per tenant and month from its
plan and usage, idempotent, re-runnable for a past month, safe with two workers at once."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from billing import services, tasks
from billing.models import BillingRun, Invoice, InvoiceLine, InvoiceStatus
from billing.pricing import GIB, month_start, previous_month
from kernel.errors import InvalidRequest
from tenants.models import AuditEvent, Plan
from tests.billing.conftest import MONTH, billed_tenant, priced_plan, usage
from tests.factories import TenantCtx, make_plan

pytestmark = pytest.mark.django_db

YEAR = timezone.now().year


def lines(invoice: Invoice) -> list[tuple[str, int, int]]:
    return [(line.kind, line.quantity, line.amount_minor) for line in invoice.lines.all()]


def test_a_month_is_billed_from_the_tenant_totals_of_that_month(shop: TenantCtx) -> None:
    """Requests and bytes in plus out of the month's total rows are billed; rows of a key or
    a resource (already in the totals) and rows of other months are not."""
    tenant = shop.tenant
    usage(tenant, datetime(2025, 3, 1, 0, tzinfo=UTC), requests=2_000_000, published_bytes=8 * GIB)
    usage(tenant, datetime(2025, 3, 31, 23, tzinfo=UTC), requests=500_000, delivered_bytes=4 * GIB)
    usage(tenant, datetime(2025, 3, 31, 23, tzinfo=UTC), key_prefix="abc", requests=9_000_000)
    usage(tenant, datetime(2025, 3, 2, 5, tzinfo=UTC), resource="queue:q", published_bytes=GIB)
    usage(tenant, datetime(2025, 2, 28, 23, tzinfo=UTC), requests=7_000_000)
    usage(tenant, datetime(2025, 4, 1, 0, tzinfo=UTC), requests=7_000_000)

    result = services.billing_run(month=date(2025, 3, 17), actor="operator")

    invoice = Invoice.objects.for_tenant(tenant).get()
    assert result.month == MONTH
    assert result.outcomes == {"created": 1}
    assert (invoice.period, invoice.status, invoice.number) == (MONTH, "issued", f"{YEAR}-000001")
    assert (invoice.currency, invoice.plan_name) == ("EUR", "Pro")
    assert lines(invoice) == [
        ("base_fee", 1, 4900),
        ("requests", 1_500_000, 60),  # 2,500,000 - 1,000,000 included, 0.40 per million
        ("traffic", 2 * GIB, 18),  # 12 GiB - 10 included, 0.09 per GiB
    ]
    assert (invoice.subtotal_minor, invoice.total_minor) == (4978, 4978)
    assert invoice.issued_at is not None
    actions = list(
        AuditEvent.objects.for_tenant(tenant)
        .filter(target_type="invoice")
        .order_by("id")
        .values_list("action", "actor", "data")
    )
    assert actions == [
        (
            "invoice.draft",
            "operator",
            {"period": "2025-03", "total_minor": 4978, "outcome": "created"},
        ),
        (
            "invoice.issue",
            "operator",
            {
                "number": f"{YEAR}-000001",
                "period": "2025-03",
                "total_minor": 4978,
                "currency": "EUR",
            },
        ),
    ]
    run = BillingRun.objects.get()
    assert (run.month, run.invoices, run.actor) == (MONTH, 1, "operator")
    assert run.finished_at is not None


def test_every_tenant_that_existed_in_the_month_is_billed_and_numbered_in_order(
    pro: Plan,
) -> None:
    """Tenants created before the month's end get an invoice, numbered in the order billed;
    one created after it gets none; one on a plan with no price gets none either."""
    first = billed_tenant("First", pro)
    mid = billed_tenant("Mid", pro, created_at=datetime(2025, 3, 21, 8, tzinfo=UTC))
    billed_tenant("Later", pro, created_at=datetime(2025, 4, 1, tzinfo=UTC))
    free = make_plan(slug="gratis", name="Gratis")
    billed_tenant("Free", free)

    result = services.billing_run(month=MONTH, actor="operator")

    assert result.outcomes == {"created": 2, "skipped": 1}
    rows = Invoice.all_tenants.order_by("number").values_list(
        "tenant__slug", "number", "total_minor"
    )
    # Mid existed 11 of 31 days: 49.00 * 11 / 31 = 17.387..., billed 17.39.
    assert list(rows) == [("first", f"{YEAR}-000001", 4900), ("mid", f"{YEAR}-000002", 1739)]
    assert lines(Invoice.objects.for_tenant(mid.tenant).get()) == [
        ("base_fee", 11, 1739),
        ("requests", 0, 0),
        ("traffic", 0, 0),
    ]
    assert Invoice.objects.for_tenant(first.tenant).get().lines.all()[0].description == (
        "Base fee, Pro plan, March 2025"
    )


def test_re_running_a_month_changes_nothing_already_issued(shop: TenantCtx) -> None:
    usage(shop.tenant, datetime(2025, 3, 3, tzinfo=UTC), requests=3_000_000)
    services.billing_run(month=MONTH, actor="operator")
    before = Invoice.objects.for_tenant(shop.tenant).get()
    line_ids = list(InvoiceLine.objects.values_list("id", flat=True))
    events = AuditEvent.objects.for_tenant(shop.tenant).count()
    usage(shop.tenant, datetime(2025, 3, 4, tzinfo=UTC), requests=9_000_000)  # late usage

    result = services.billing_run(month=MONTH, actor="operator")

    after = Invoice.objects.for_tenant(shop.tenant).get()
    assert result.outcomes == {"unchanged": 1}
    assert (after.pk, after.number, after.total_minor, after.issued_at) == (
        before.pk,
        before.number,
        before.total_minor,
        before.issued_at,
    )
    assert after.total_minor == 4980
    assert list(InvoiceLine.objects.values_list("id", flat=True)) == line_ids
    assert AuditEvent.objects.for_tenant(shop.tenant).count() == events


def test_a_draft_is_recomputed_by_a_re_run_then_issued(shop: TenantCtx) -> None:
    usage(shop.tenant, datetime(2025, 3, 3, tzinfo=UTC), requests=3_000_000)
    first = services.billing_run(month=MONTH, actor="operator", issue=False)
    draft = Invoice.objects.for_tenant(shop.tenant).get()
    assert (first.outcomes, draft.status, draft.number, draft.total_minor) == (
        {"created": 1},
        "draft",
        None,
        4980,
    )
    assert BillingRun.objects.get().finished_at is None
    usage(shop.tenant, datetime(2025, 3, 4, tzinfo=UTC), requests=1_000_000)

    second = services.billing_run(month=MONTH, actor="operator")

    invoice = Invoice.objects.for_tenant(shop.tenant).get()
    assert second.outcomes == {"recomputed": 1}
    assert (invoice.pk, invoice.status, invoice.number) == (draft.pk, "issued", f"{YEAR}-000001")
    assert lines(invoice) == [
        ("base_fee", 1, 4900),
        ("requests", 3_000_000, 120),
        ("traffic", 0, 0),
    ]
    assert invoice.total_minor == 5020


def test_a_void_invoice_frees_its_month_for_a_new_one(shop: TenantCtx) -> None:
    services.billing_run(month=MONTH, actor="operator")
    old = Invoice.objects.for_tenant(shop.tenant).get()
    services.invoice_void(tenant=shop.tenant, invoice_id=old.pk, actor="operator")

    result = services.billing_run(month=MONTH, actor="operator")

    assert result.outcomes == {"created": 1}
    assert list(
        Invoice.objects.for_tenant(shop.tenant).order_by("number").values_list("number", "status")
    ) == [(f"{YEAR}-000001", "void"), (f"{YEAR}-000002", "issued")]


@pytest.mark.parametrize("when", ["current", "future"])
def test_only_a_month_that_has_ended_can_be_billed(shop: TenantCtx, when: str) -> None:
    this_month = month_start(timezone.now().date())
    month = this_month if when == "current" else date(this_month.year + 1, 1, 1)

    with pytest.raises(InvalidRequest, match="has not ended"):
        services.billing_run(month=month, actor="operator")

    assert not Invoice.all_tenants.exists()
    assert not BillingRun.objects.exists()


def test_the_task_bills_the_previous_month_once(pro: Plan) -> None:
    shop = billed_tenant("Shop", pro)
    last_month = previous_month(month_start((timezone.now() - tasks.BILLING_GRACE).date()))

    assert tasks.run_previous_month() == f"{last_month:%Y-%m} {{'created': 1}}"
    assert tasks.run_previous_month() == f"{last_month:%Y-%m} already billed"
    invoice = Invoice.objects.for_tenant(shop.tenant).get()
    assert (invoice.period, invoice.status) == (last_month, InvoiceStatus.ISSUED)
    assert AuditEvent.objects.for_tenant(shop.tenant).filter(
        action="invoice.issue"
    ).get().actor == ("system:billing")


def test_the_beat_schedule_runs_the_task() -> None:
    from django.conf import settings

    assert settings.CELERY_BEAT_SCHEDULE["billing-run"]["task"] == "billing.run_previous_month"


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_make_one_invoice_per_tenant_with_gapless_numbers() -> None:
    """Two workers bill the same month at the same moment: each tenant ends with exactly one
    invoice, the numbers run 1..N without a gap or a repeat, and each is issued once."""
    plan = priced_plan(slug="pro-concurrent")
    tenants = [billed_tenant(f"T{i}", plan).tenant for i in range(6)]
    barrier = threading.Barrier(2)
    results: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(services.billing_run(month=MONTH, actor="operator"))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    created = sum(result.outcomes.get("created", 0) for result in results)
    unchanged = sum(result.outcomes.get("unchanged", 0) for result in results)
    assert (created, unchanged) == (6, 6)
    numbers = sorted(Invoice.all_tenants.values_list("number", flat=True))
    assert numbers == [f"{YEAR}-{n:06d}" for n in range(1, 7)]
    for tenant in tenants:
        assert Invoice.objects.for_tenant(tenant).count() == 1
        assert AuditEvent.objects.for_tenant(tenant).filter(action="invoice.issue").count() == 1
