"""Counts and retention enforced when queues, topics, subscriptions and keys are made, with
the tenant's EFFECTIVE quotas (its plan's, or an operator's override): a refusal is 403
quota_exceeded naming the limit and its value, stores nothing, and concurrent creations never
overshoot the count."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from kernel.errors import InvalidRequest, QuotaExceeded
from kernel.redis_client import get_redis
from queues import services
from queues.models import Queue, Subscription, Topic
from tenants import services as tenant_services
from tenants.authority import OPERATOR
from tenants.models import ApiKey, AuditEvent, Tenant
from tests.factories import (
    ACTOR,
    TenantCtx,
    make_key,
    make_plan,
    make_queue,
    make_subscription,
    make_tenant,
    make_topic,
)
from tests.helpers import assert_problem, patch_json, post_json

pytestmark = pytest.mark.django_db


def override(ctx: TenantCtx, **values: Any) -> None:
    tenant_services.tenant_quotas_set(tenant=ctx.tenant, actor="operator:test", overrides=values)
    ctx.tenant.refresh_from_db()


def counts(tenant: Tenant) -> tuple[int, int, int, int, int]:
    return (
        Queue.objects.for_tenant(tenant).count(),
        Topic.objects.for_tenant(tenant).count(),
        Subscription.objects.for_tenant(tenant).count(),
        ApiKey.objects.for_tenant(tenant).count(),
        AuditEvent.objects.for_tenant(tenant).count(),
    )


def redis_keys() -> set[bytes]:
    return set(get_redis().keys("op:{t.*"))


# --- counts: the plan's limit ---------------------------------------------------------------


def test_plan_max_queues_refuses_the_next_and_stores_nothing(acme: TenantCtx) -> None:
    make_plan(tenant=acme.tenant, max_queues=2)
    make_queue(tenant=acme.tenant, name="a")
    make_queue(tenant=acme.tenant, name="b")
    before, stored = counts(acme.tenant), redis_keys()

    with pytest.raises(QuotaExceeded) as refused:
        make_queue(tenant=acme.tenant, name="c")

    assert refused.value.status == 403
    assert refused.value.code == "quota_exceeded"
    assert refused.value.detail == (
        "Quota max_queues reached: the plan allows 2 queues, and this tenant has 2."
    )
    assert counts(acme.tenant) == before
    assert redis_keys() == stored


def test_plan_max_topics_and_max_subscriptions(acme: TenantCtx) -> None:
    make_plan(tenant=acme.tenant, max_topics=1, max_subscriptions=1)
    make_topic(tenant=acme.tenant, name="events")
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    before = counts(acme.tenant)

    with pytest.raises(QuotaExceeded) as topics:
        make_topic(tenant=acme.tenant, name="more")
    with pytest.raises(QuotaExceeded) as subs:
        make_subscription(tenant=acme.tenant, name="billing", topic="events")

    assert topics.value.detail == (
        "Quota max_topics reached: the plan allows 1 topics, and this tenant has 1."
    )
    assert subs.value.detail == (
        "Quota max_subscriptions reached: the plan allows 1 subscriptions, and this tenant has 1."
    )
    assert counts(acme.tenant) == before


# --- counts: an operator's override replaces the plan's -------------------------------------


def test_override_raises_the_plans_count(acme: TenantCtx) -> None:
    make_plan(tenant=acme.tenant, max_queues=1)
    make_queue(tenant=acme.tenant, name="a")
    override(acme, max_queues=3)

    make_queue(tenant=acme.tenant, name="b")
    make_queue(tenant=acme.tenant, name="c")
    with pytest.raises(QuotaExceeded) as refused:
        make_queue(tenant=acme.tenant, name="d")

    assert refused.value.detail == (
        "Quota max_queues reached: this tenant's override allows 3 queues, and this tenant has 3."
    )
    assert sorted(Queue.objects.for_tenant(acme.tenant).values_list("name", flat=True)) == [
        "a",
        "b",
        "c",
    ]


def test_override_lowers_the_plans_count(acme: TenantCtx) -> None:
    """The plan allows 1000; an override of 0 topics refuses the first one."""
    override(acme, max_topics=0)

    with pytest.raises(QuotaExceeded) as refused:
        make_topic(tenant=acme.tenant, name="events")

    assert refused.value.detail == (
        "Quota max_topics reached: this tenant's override allows 0 topics, and this tenant has 0."
    )
    assert Topic.objects.for_tenant(acme.tenant).count() == 0


def test_override_of_null_is_unlimited(acme: TenantCtx) -> None:
    """A null override means no limit whatever the plan says."""
    make_plan(tenant=acme.tenant, max_subscriptions=0)
    make_topic(tenant=acme.tenant, name="events")
    override(acme, max_subscriptions=None)

    for number in range(3):
        make_subscription(tenant=acme.tenant, name=f"s{number}", topic="events")

    assert Subscription.objects.for_tenant(acme.tenant).count() == 3


def test_override_of_api_keys(acme: TenantCtx) -> None:
    """make_tenant's key is the first; an override of 2 allows one more, revoked ones do not
    count."""
    override(acme, max_api_keys=2)
    second = make_key(tenant=acme.tenant, name="second")

    with pytest.raises(QuotaExceeded) as refused:
        make_key(tenant=acme.tenant, name="third")

    assert refused.value.detail == (
        "Quota max_api_keys reached: this tenant's override allows 2 active API keys, and "
        "this tenant has 2."
    )
    assert ApiKey.objects.for_tenant(acme.tenant).count() == 2
    tenant_services.key_revoke(
        tenant=acme.tenant,
        key_id=str(second.key.id),
        actor=ACTOR,
        authority=OPERATOR,
    )
    make_key(tenant=acme.tenant, name="third")
    assert ApiKey.objects.for_tenant(acme.tenant).filter(revoked_at__isnull=True).count() == 2


def test_another_tenants_quota_is_its_own(acme: TenantCtx, globex: TenantCtx) -> None:
    """Acme's override and Acme's queues neither limit nor count for Globex (same plan)."""
    override(acme, max_queues=1)
    make_queue(tenant=acme.tenant, name="a")

    for name in ("a", "b", "c"):
        make_queue(tenant=globex.tenant, name=name)

    with pytest.raises(QuotaExceeded):
        make_queue(tenant=acme.tenant, name="b")
    assert Queue.objects.for_tenant(globex.tenant).count() == 3
    assert Queue.objects.for_tenant(acme.tenant).count() == 1
    assert globex.tenant.quota_overrides == {}


def test_override_applies_to_the_callers_stale_copy(acme: TenantCtx) -> None:
    """The service counts against the overrides as committed, not the caller's copy of the
    tenant (the API and console hold one for the whole request)."""
    stale = Tenant.objects.get(pk=acme.tenant.pk)
    override(acme, max_queues=0)

    with pytest.raises(QuotaExceeded):
        services.queue_create(tenant=stale, actor=ACTOR, name="a")
    assert Queue.objects.for_tenant(acme.tenant).count() == 0


# --- retention ------------------------------------------------------------------------------


def test_retention_above_the_plans_limit_is_refused_on_create(acme: TenantCtx) -> None:
    make_plan(tenant=acme.tenant, max_retention_seconds=3600)
    before, stored = counts(acme.tenant), redis_keys()

    with pytest.raises(QuotaExceeded) as queue:
        make_queue(tenant=acme.tenant, name="q", retention_seconds=3601)
    with pytest.raises(QuotaExceeded) as topic:
        make_topic(tenant=acme.tenant, name="t", retention_seconds=7200)

    detail = "Above the quota max_retention_seconds: the plan allows at most 3600 seconds."
    assert queue.value.detail == f"retention_seconds: {detail}"
    assert queue.value.errors == [{"field": "retention_seconds", "detail": detail}]
    assert topic.value.errors == [{"field": "retention_seconds", "detail": detail}]
    assert counts(acme.tenant) == before
    assert redis_keys() == stored
    # at the limit is fine
    assert (
        make_queue(tenant=acme.tenant, name="q", retention_seconds=3600).retention_seconds == 3600
    )
    assert (
        make_topic(tenant=acme.tenant, name="t", retention_seconds=3600).retention_seconds == 3600
    )


def test_retention_default_above_an_override_is_refused(acme: TenantCtx) -> None:
    """The queue default (4 days) is above an override of one day: it must be asked for."""
    override(acme, max_retention_seconds=86400)

    with pytest.raises(QuotaExceeded) as refused:
        make_queue(tenant=acme.tenant, name="q")

    assert refused.value.errors == [
        {
            "field": "retention_seconds",
            "detail": "Above the quota max_retention_seconds: this tenant's override allows at "
            "most 86400 seconds.",
        }
    ]
    assert make_queue(tenant=acme.tenant, name="q", retention_seconds=86400)


def test_retention_above_the_limit_is_refused_on_update(acme: TenantCtx) -> None:
    queue = make_queue(tenant=acme.tenant, name="q", retention_seconds=3600)
    topic = make_topic(tenant=acme.tenant, name="t", retention_seconds=3600)
    override(acme, max_retention_seconds=7200)
    events = AuditEvent.objects.for_tenant(acme.tenant).count()

    with pytest.raises(QuotaExceeded):
        services.queue_update(
            tenant=acme.tenant,
            actor=ACTOR,
            queue=queue,
            changes={"retention_seconds": 7201, "delay_seconds": 5},
        )
    with pytest.raises(QuotaExceeded):
        services.topic_update(
            tenant=acme.tenant, actor=ACTOR, topic=topic, changes={"retention_seconds": 7201}
        )

    queue.refresh_from_db()
    topic.refresh_from_db()
    assert (queue.retention_seconds, queue.delay_seconds, topic.retention_seconds) == (
        3600,
        0,
        3600,
    )
    assert AuditEvent.objects.for_tenant(acme.tenant).count() == events
    updated = services.queue_update(
        tenant=acme.tenant, actor=ACTOR, queue=queue, changes={"retention_seconds": 7200}
    )
    assert updated.retention_seconds == 7200


def test_other_changes_pass_when_a_lowered_limit_is_below_the_current_retention(
    acme: TenantCtx,
) -> None:
    """Lowering the limit later does not lock a queue's other settings: only a change of the
    retention itself is checked."""
    queue = make_queue(tenant=acme.tenant, name="q", retention_seconds=86400)
    override(acme, max_retention_seconds=3600)

    updated = services.queue_update(
        tenant=acme.tenant, actor=ACTOR, queue=queue, changes={"delay_seconds": 5}
    )

    assert (updated.delay_seconds, updated.retention_seconds) == (5, 86400)


def test_an_unlimited_retention_quota_leaves_the_platform_range(acme: TenantCtx) -> None:
    """max_retention_seconds null: the platform's own range still holds (a 400)."""
    override(acme, max_retention_seconds=None)

    assert make_queue(tenant=acme.tenant, name="q", retention_seconds=1209600)
    with pytest.raises(InvalidRequest):
        make_queue(tenant=acme.tenant, name="r", retention_seconds=1209601)


# --- backlog limits of a queue or topic -----------------------------------------------------


def test_backlog_limits_on_create_and_update_are_stored_and_audited(acme: TenantCtx) -> None:
    queue = make_queue(tenant=acme.tenant, name="q", max_backlog_messages=10)
    topic = make_topic(tenant=acme.tenant, name="t", max_backlog_bytes=2048)

    assert (queue.max_backlog_messages, queue.max_backlog_bytes) == (10, None)
    assert (topic.max_backlog_messages, topic.max_backlog_bytes) == (None, 2048)
    services.queue_update(
        tenant=acme.tenant,
        actor=ACTOR,
        queue=queue,
        changes={"max_backlog_messages": None, "max_backlog_bytes": 4096},
    )
    services.topic_update(
        tenant=acme.tenant, actor=ACTOR, topic=topic, changes={"max_backlog_messages": 7}
    )
    queue.refresh_from_db()
    topic.refresh_from_db()
    assert (queue.max_backlog_messages, queue.max_backlog_bytes) == (None, 4096)
    assert (topic.max_backlog_messages, topic.max_backlog_bytes) == (7, 2048)
    trail = list(
        AuditEvent.objects.for_tenant(acme.tenant)
        .filter(target_type__in=["queue", "topic"])
        .order_by("id")
        .values_list("action", "target_id", "data")
    )
    assert trail == [
        ("queue.create", "q", {"max_backlog_messages": 10}),
        ("topic.create", "t", {"max_backlog_bytes": 2048}),
        ("queue.update", "q", {"max_backlog_messages": None, "max_backlog_bytes": 4096}),
        ("topic.update", "t", {"max_backlog_messages": 7}),
    ]


@pytest.mark.parametrize("value", [0, -1, 2**63, True, "10", 1.5])
def test_bad_backlog_limits_are_refused_and_change_nothing(acme: TenantCtx, value: Any) -> None:
    queue = make_queue(tenant=acme.tenant, name="q", max_backlog_messages=10)
    before = counts(acme.tenant)

    with pytest.raises(InvalidRequest) as create:
        make_queue(tenant=acme.tenant, name="r", max_backlog_bytes=value)
    with pytest.raises(InvalidRequest) as update:
        services.queue_update(
            tenant=acme.tenant, actor=ACTOR, queue=queue, changes={"max_backlog_messages": value}
        )
    with pytest.raises(InvalidRequest):
        make_topic(tenant=acme.tenant, name="t", max_backlog_messages=value)

    assert create.value.errors is not None
    assert create.value.errors[0]["field"] == "max_backlog_bytes"
    assert update.value.errors is not None
    assert update.value.errors[0]["field"] == "max_backlog_messages"
    queue.refresh_from_db()
    assert queue.max_backlog_messages == 10
    assert counts(acme.tenant) == before


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_creations_never_overshoot_the_count() -> None:
    """Eight threads (eight PostgreSQL connections) create queues at once under a limit of
    three: exactly three are made, five are refused."""
    ctx = make_tenant(name="Racer")
    override(ctx, max_queues=3)
    start = threading.Barrier(8)
    made: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def create(number: int) -> None:
        try:
            start.wait()
            services.queue_create(tenant=ctx.tenant, actor=ACTOR, name=f"q{number}")
            with lock:
                made.append(f"q{number}")
        except QuotaExceeded:
            with lock:
                refused.append(f"q{number}")
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert (len(made), len(refused)) == (3, 5)
    assert sorted(Queue.objects.for_tenant(ctx.tenant).values_list("name", flat=True)) == sorted(
        made
    )
    assert AuditEvent.objects.for_tenant(ctx.tenant).filter(action="queue.create").count() == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_key_creations_never_overshoot_the_count() -> None:
    ctx = make_tenant(name="Keyracer")  # its first key counts
    override(ctx, max_api_keys=3)
    start = threading.Barrier(6)
    outcomes: list[str] = []
    lock = threading.Lock()

    def create(number: int) -> None:
        try:
            start.wait()
            make_key(tenant=ctx.tenant, name=f"k{number}")
            result = "made"
        except QuotaExceeded:
            result = "refused"
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["made", "made"] + ["refused"] * 4
    assert ApiKey.objects.for_tenant(ctx.tenant).count() == 3


# --- through the API ----------------------------------------------------------------------------


def test_api_answers_quota_exceeded_naming_the_limit(acme: TenantCtx) -> None:
    override(acme, max_queues=1, max_retention_seconds=3600)
    created = post_json(
        acme.client,
        "/v1/queues",
        {"name": "a", "retention_seconds": 3600, "max_backlog_messages": 50},
    )
    assert created.status_code == 201, created.content
    assert created.json()["max_backlog_messages"] == 50
    make_topic(tenant=acme.tenant, name="t", retention_seconds=60)

    count = assert_problem(
        post_json(acme.client, "/v1/queues", {"name": "b", "retention_seconds": 60}),
        403,
        "quota_exceeded",
    )
    retention = assert_problem(
        patch_json(acme.client, "/v1/topics/t", {"retention_seconds": 3601}),
        403,
        "quota_exceeded",
    )

    assert count["detail"] == (
        "Quota max_queues reached: this tenant's override allows 1 queues, and this tenant has 1."
    )
    assert retention["errors"] == [
        {
            "field": "retention_seconds",
            "detail": "Above the quota max_retention_seconds: this tenant's override allows at "
            "most 3600 seconds.",
        }
    ]
    assert Topic.objects.for_tenant(acme.tenant).get(name="t").retention_seconds == 60
    assert list(Queue.objects.for_tenant(acme.tenant).values_list("name", flat=True)) == ["a"]


def test_api_refuses_a_zero_backlog_limit(acme: TenantCtx) -> None:
    make_queue(tenant=acme.tenant, name="a")

    body = assert_problem(
        patch_json(acme.client, "/v1/queues/a", {"max_backlog_bytes": 0}), 400, "invalid_request"
    )

    assert [error["field"] for error in body["errors"]] == ["max_backlog_bytes"]
    assert Queue.objects.for_tenant(acme.tenant).get(name="a").max_backlog_bytes is None
