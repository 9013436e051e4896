"""Billing fixtures: a priced plan, tenants that existed before the month billed, and usage
rows with exact numbers (the data plane's roll-up is tested elsewhere)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from tenants.models import Plan, Tenant, UsageRecord
from tests.factories import TenantCtx, make_plan, make_tenant

#: A month that has ended whenever the suite runs.
MONTH = date(2025, 3, 1)
BEFORE = datetime(2025, 1, 1, tzinfo=UTC)


def priced_plan(**prices: Any) -> Plan:
    """49.00 EUR a month with 1,000,000 requests and 10 GiB included; then 0.40 EUR per
    million requests and 0.09 EUR per GiB (``prices`` replaces any of these)."""
    slug = prices.pop("slug", "pro")
    values: dict[str, Any] = {
        "currency": "EUR",
        "base_fee_minor": 4900,
        "included_requests": 1_000_000,
        "price_per_million_requests_minor": 40,
        "included_gib": 10,
        "price_per_gib_minor": 9,
    }
    values.update(prices)
    return make_plan(slug=slug, name="Pro", **values)


def billed_tenant(name: str, plan: Plan, created_at: datetime = BEFORE) -> TenantCtx:
    ctx = make_tenant(name=name, plan=plan)
    Tenant.objects.filter(pk=ctx.tenant.pk).update(created_at=created_at)
    ctx.tenant.refresh_from_db()
    return ctx


def usage(tenant: Tenant, hour: datetime, **counts: int) -> UsageRecord:
    """A usage row (the tenant's total unless key_prefix / resource are given)."""
    key_prefix = str(counts.pop("key_prefix", ""))
    resource = str(counts.pop("resource", ""))
    return UsageRecord.all_tenants.create(
        tenant=tenant, hour=hour, key_prefix=key_prefix, resource=resource, **counts
    )


@pytest.fixture
def pro(db: Any) -> Plan:
    return priced_plan()


@pytest.fixture
def shop(pro: Plan) -> TenantCtx:
    return billed_tenant("Shop", pro)
