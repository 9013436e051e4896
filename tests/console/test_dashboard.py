"""The dashboard: one tenant's queues, topics, subscriptions, keys and live numbers."""

from __future__ import annotations

from django.test import Client

from queues.engine.messages import now_ms
from queues.models import Queue
from tenants import services
from tenants.authority import OPERATOR
from tenants.models import ApiKey
from tests.engine import publish_to_queue, pull, queue_reader
from tests.factories import TenantCtx, make_key, make_queue, make_subscription, make_topic


def build(ctx: TenantCtx, prefix: str) -> None:
    """A queue, a topic with a subscription, and an extra key, all named after ``prefix``."""
    make_queue(tenant=ctx.tenant, name=f"{prefix}-orders")
    make_topic(tenant=ctx.tenant, name=f"{prefix}-events", partitions=3)
    make_subscription(tenant=ctx.tenant, name=f"{prefix}-audit", topic=f"{prefix}-events")
    make_key(tenant=ctx.tenant, name=f"{prefix}-ci", scopes=["publish"])


def test_dashboard_shows_this_tenants_resources(
    acme: TenantCtx, globex: TenantCtx, owner: Client
) -> None:
    """Names, plan, key prefixes and scopes of Acme appear; nothing of Globex does."""
    build(acme, "acme")
    build(globex, "globex")
    response = owner.get("/")
    assert response.status_code == 200
    body = response.content.decode()
    for name in ("acme-orders", "acme-events", "acme-audit", "acme-ci"):
        assert name in body
    assert "Developer plan" in body
    for key in response.context["keys"]:
        assert f"op_{key.item.prefix}_…" in body
    assert [row.item.name for row in response.context["queues"]] == ["acme-orders"]
    assert [
        (row.item.name, row.item.partitions, row.subscriptions)
        for row in response.context["topics"]
    ] == [("acme-events", 3, 1)]
    assert [row.item.name for row in response.context["subscriptions"]] == ["acme-audit"]
    assert sorted(row.item.name for row in response.context["keys"]) == ["acme-ci", "all"]

    assert "globex" not in body.lower()
    for key in ApiKey.objects.for_tenant(globex.tenant):
        assert key.prefix not in body


def test_dashboard_counts_against_the_plan(acme: TenantCtx, owner: Client) -> None:
    """The tiles show used / allowed for each limited resource."""
    build(acme, "acme")
    counts = owner.get("/").context["counts"]
    assert counts == [
        ("Queues", 1, 1000),
        ("Topics", 1, 1000),
        ("Subscriptions", 1, 1000),
        ("Active API keys", 2, 100),
    ]


def test_queue_stats_are_live(acme: TenantCtx, owner: Client) -> None:
    """available / in flight / delayed / oldest age come from the stream right now."""
    make_queue(tenant=acme.tenant, name="orders")
    now = now_ms()
    publish_to_queue(acme, "orders", *({"body": {"n": i}} for i in range(3)), now=now)
    publish_to_queue(acme, "orders", {"body": {"n": 0}, "delay_seconds": 60}, now=now)
    pull(queue_reader(acme, "orders"), 1, now=now)

    response = owner.get("/")
    (row,) = response.context["queues"]
    assert row.stats["available"] == 2
    assert row.stats["in_flight"] == 1
    assert row.stats["delayed"] == 1
    assert row.stats["oldest_age_seconds"] in (0, 1)  # Redis stamps entries with its clock
    assert response.context["stats_unavailable"] is False


def test_revoked_keys_are_marked(acme: TenantCtx, owner: Client) -> None:
    """A revoked key stays listed, marked revoked and without a revoke button."""
    created = make_key(tenant=acme.tenant, name="old", scopes=["consume"])
    services.key_revoke(
        authority=OPERATOR, tenant=acme.tenant, key_id=str(created.key.id), actor="test"
    )
    response = owner.get("/")
    statuses = {row.item.name: row.status for row in response.context["keys"]}
    assert statuses == {"old": "revoked", "all": "active"}
    assert f"/keys/{created.key.id}/revoke/" not in response.content.decode()


def test_dashboard_survives_redis_being_down(
    acme: TenantCtx, owner: Client, redis_down: None
) -> None:
    """Without Redis the metadata still shows, the numbers are blank and a notice says why."""
    # A row made directly: creating a queue through the service needs Redis.
    Queue.all_tenants.create(tenant=acme.tenant, name="orders")
    response = owner.get("/")
    assert response.status_code == 200
    assert response.context["stats_unavailable"] is True
    assert [row.stats for row in response.context["queues"]] == [None]
    assert "Live numbers are unavailable" in response.content.decode()
