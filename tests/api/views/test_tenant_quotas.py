"""GET /v1/tenant: every effective quota with where it comes from (plan or an operator's
override), this period's usage, and for a key with limits of its own the quotas its requests
meet (key_quotas, source "key" where the key's limit holds)."""

from __future__ import annotations

from typing import Any

import pytest

from tenants import services
from tenants.authority import OPERATOR
from tenants.quotas import QUOTAS
from tests.factories import TenantCtx, api_client, make_key, make_plan, signed_in

pytestmark = pytest.mark.django_db

DEVELOPER_PLAN = {
    "max_message_bytes": 262144,
    "max_queues": 1000,
    "max_topics": 1000,
    "max_subscriptions": 1000,
    "max_api_keys": 100,
    "monthly_messages": None,
    "publish_rate_per_second": None,
    "consume_rate_per_second": None,
    "request_rate_per_second": None,
    "max_backlog_messages": None,
    "max_backlog_bytes": None,
    "max_retention_seconds": 1209600,
}


def plan_quotas(**changed: tuple[int | None, str]) -> dict[str, dict[str, Any]]:
    quotas = {name: {"value": value, "source": "plan"} for name, value in DEVELOPER_PLAN.items()}
    for name, (value, source) in changed.items():
        quotas[name] = {"value": value, "source": source}
    return quotas


def test_every_quota_comes_from_the_plan_by_default(acme: TenantCtx) -> None:
    body = acme.client.get("/v1/tenant").json()

    assert list(body["quotas"]) == [quota.name for quota in QUOTAS]
    assert body["quotas"] == plan_quotas()
    assert "key_quotas" not in body  # the fixture's key has no limits of its own


def test_overrides_show_as_the_tenants(acme: TenantCtx, globex: TenantCtx) -> None:
    make_plan(tenant=acme.tenant, monthly_messages=5000, max_queues=10)
    services.tenant_quotas_set(
        tenant=acme.tenant,
        actor="op",
        overrides={"max_queues": 25, "monthly_messages": None, "publish_rate_per_second": 0},
    )

    quotas = acme.client.get("/v1/tenant").json()["quotas"]

    assert quotas == plan_quotas(
        max_queues=(25, "tenant"),
        monthly_messages=(None, "tenant"),
        publish_rate_per_second=(0, "tenant"),
    )
    assert globex.client.get("/v1/tenant").json()["quotas"] == plan_quotas()


def test_a_key_with_limits_gets_its_key_quotas(acme: TenantCtx) -> None:
    """The key's publish rate (10) is below the tenant's override (50): source key; its
    monthly messages (9000) above the plan's (5000): the plan's holds; no consume limit of
    its own: the tenant's (unlimited)."""
    make_plan(tenant=acme.tenant, monthly_messages=5000)
    services.tenant_quotas_set(
        tenant=acme.tenant, actor="op", overrides={"publish_rate_per_second": 50}
    )
    created = services.key_create(
        tenant=acme.tenant,
        name="narrow",
        scopes=["publish"],
        actor="test",
        authority=OPERATOR,
        publish_rate_per_second=10,
        monthly_messages=9000,
    )

    body = api_client(created).get("/v1/tenant").json()

    tenant_view = plan_quotas(
        monthly_messages=(5000, "plan"), publish_rate_per_second=(50, "tenant")
    )
    assert body["quotas"] == tenant_view
    assert body["key_quotas"] == {
        **tenant_view,
        "publish_rate_per_second": {"value": 10, "source": "key"},
    }


def test_a_key_limit_below_an_unlimited_tenant_holds(acme: TenantCtx) -> None:
    created = make_key(tenant=acme.tenant, scopes=["consume"])
    created.key.consume_rate_per_second = 3
    created.key.save(update_fields=["consume_rate_per_second"])

    body = api_client(created).get("/v1/tenant").json()

    assert body["key_quotas"]["consume_rate_per_second"] == {"value": 3, "source": "key"}
    assert body["key_quotas"]["publish_rate_per_second"] == {"value": None, "source": "plan"}
    assert body["quotas"]["consume_rate_per_second"] == {"value": None, "source": "plan"}


def test_a_console_session_gets_no_key_quotas(acme: TenantCtx) -> None:
    body = signed_in(acme.owner).get("/v1/tenant").json()

    assert body["quotas"] == plan_quotas()
    assert "key_quotas" not in body


def test_usage_is_this_periods(acme: TenantCtx) -> None:
    body = acme.client.get("/v1/tenant").json()

    assert body["usage"]["published"] == 0
    assert body["usage"]["period_start"].endswith("T00:00:00Z")
