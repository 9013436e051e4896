"""The dashboard: one tenant's queues, topics, subscriptions, keys and live numbers."""

from __future__ import annotations

from typing import Any

from django.test import Client

from kernel.redis_client import get_redis
from queues import selectors
from queues import services as queue_services
from queues.engine import dataplane
from queues.engine.messages import now_ms, validate_batch
from queues.engine.targets import queue_consumer, queue_destination
from queues.models import Queue
from tenants import services
from tenants.authority import OPERATOR
from tenants.models import ApiKey
from tests.conftest import TenantCtx


def publish(ctx: TenantCtx, queue: str, count: int, now: int, **extra: Any) -> None:
    doc = selectors.queue_document(selectors.queue_get(tenant=ctx.tenant, name=queue))
    batch = validate_batch(
        {"messages": [{"body": {"n": i}, **extra} for i in range(count)]},
        max_message_bytes=262144,
        now_ms=now,
    )
    dataplane.publish(get_redis(), queue_destination(str(ctx.tenant.id), doc), batch, now)


def build(ctx: TenantCtx, prefix: str) -> None:
    """A queue, a topic with a subscription, and an extra key, all named after ``prefix``."""
    queue_services.queue_create(tenant=ctx.tenant, actor="test", name=f"{prefix}-orders")
    queue_services.topic_create(
        tenant=ctx.tenant, actor="test", name=f"{prefix}-events", partitions=3
    )
    queue_services.subscription_create(
        tenant=ctx.tenant, actor="test", name=f"{prefix}-audit", topic=f"{prefix}-events"
    )
    services.key_create(
        authority=OPERATOR, tenant=ctx.tenant, name=f"{prefix}-ci", scopes=["publish"], actor="test"
    )


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
    queue_services.queue_create(tenant=acme.tenant, actor="test", name="orders")
    now = now_ms()
    publish(acme, "orders", 3, now)
    publish(acme, "orders", 1, now, delay_seconds=60)
    consumer = queue_consumer(
        str(acme.tenant.id),
        selectors.queue_document(selectors.queue_get(tenant=acme.tenant, name="orders")),
    )
    dataplane.pull(get_redis(), consumer, count=1, now_ms=now)

    response = owner.get("/")
    (row,) = response.context["queues"]
    assert row.stats["available"] == 2
    assert row.stats["in_flight"] == 1
    assert row.stats["delayed"] == 1
    assert row.stats["oldest_age_seconds"] in (0, 1)  # Redis stamps entries with its clock
    assert response.context["stats_unavailable"] is False


def test_revoked_keys_are_marked(acme: TenantCtx, owner: Client) -> None:
    """A revoked key stays listed, marked revoked and without a revoke button."""
    created = services.key_create(
        authority=OPERATOR, tenant=acme.tenant, name="old", scopes=["consume"], actor="test"
    )
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
