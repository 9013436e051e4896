"""The console's forms take the limits the API takes: a key's own rates and monthly messages,
a queue's or topic's backlog limits; a retention above the tenant's quota is an error on the
field and stores nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from queues.models import Queue, Topic
from tenants import services
from tenants.models import ApiKey, AuditEvent
from tests.factories import TenantCtx, make_queue, make_topic

pytestmark = pytest.mark.django_db


def trail(ctx: TenantCtx) -> list[tuple[str, str, Any]]:
    return list(
        AuditEvent.objects.for_tenant(ctx.tenant)
        .exclude(actor__in=["operator", "test", "op"])
        .order_by("id")
        .values_list("action", "target_type", "data")
    )


def test_key_form_takes_the_keys_limits(acme: TenantCtx, owner: Client) -> None:
    form = owner.get("/keys/new/").context["form"]
    assert {"publish_rate_per_second", "consume_rate_per_second", "monthly_messages"} <= set(
        form.fields
    )

    created = owner.post(
        "/keys/new/",
        {
            "name": "ci",
            "scopes": ["publish"],
            "publish_rate_per_second": "25",
            "consume_rate_per_second": "",
            "monthly_messages": "1000000",
        },
    )

    assert created.status_code == 303
    key = ApiKey.objects.for_tenant(acme.tenant).get(name="ci")
    assert (key.publish_rate_per_second, key.consume_rate_per_second, key.monthly_messages) == (
        25,
        None,
        1000000,
    )
    ((action, _, data),) = trail(acme)
    assert action == "key.create"
    assert data["publish_rate_per_second"] == 25
    assert data["monthly_messages"] == 1000000
    assert "consume_rate_per_second" not in data


def test_key_form_refuses_a_zero_limit(acme: TenantCtx, owner: Client) -> None:
    keys = ApiKey.objects.for_tenant(acme.tenant).count()

    response = owner.post(
        "/keys/new/", {"name": "ci", "scopes": ["publish"], "monthly_messages": "0"}
    )

    assert response.status_code == 200
    assert response.context["form"].errors["monthly_messages"] == [
        "Ensure this value is greater than or equal to 1."
    ]
    assert ApiKey.objects.for_tenant(acme.tenant).count() == keys


def queue_form(**changes: object) -> dict[str, object]:
    return {
        "name": "orders",
        "visibility_timeout": 30,
        "delay_seconds": 0,
        "retention_seconds": 86400,
        "dead_letter_queue": "",
        "max_delivery_attempts": "",
        **changes,
    }


def test_create_queue_and_topic_with_backlog_limits(acme: TenantCtx, owner: Client) -> None:
    assert owner.post("/new/queue/", queue_form(max_backlog_messages="500")).status_code == 302
    assert (
        owner.post(
            "/new/topic/",
            {
                "name": "events",
                "partitions": 1,
                "retention_seconds": 3600,
                "max_backlog_bytes": "1048576",
            },
        ).status_code
        == 302
    )

    queue = Queue.objects.for_tenant(acme.tenant).get(name="orders")
    topic = Topic.objects.for_tenant(acme.tenant).get(name="events")
    assert (queue.max_backlog_messages, queue.max_backlog_bytes) == (500, None)
    assert (topic.max_backlog_messages, topic.max_backlog_bytes) == (None, 1048576)
    assert trail(acme) == [
        ("queue.create", "queue", {"max_backlog_messages": 500}),
        ("topic.create", "topic", {"max_backlog_bytes": 1048576}),
    ]


def test_retention_above_the_quota_is_a_field_error(acme: TenantCtx, owner: Client) -> None:
    services.tenant_quotas_set(
        tenant=acme.tenant, actor="op", overrides={"max_retention_seconds": 3600}
    )

    response = owner.post("/new/queue/", queue_form(retention_seconds=7200))

    assert response.status_code == 200
    assert response.context["form"].errors["retention_seconds"] == [
        "Above the quota max_retention_seconds: this tenant's override allows at most 3600 seconds."
    ]
    assert not Queue.objects.for_tenant(acme.tenant).exists()
    assert trail(acme) == []


def test_edit_forms_change_backlog_limits(acme: TenantCtx, owner: Client) -> None:
    queue = make_queue(tenant=acme.tenant, name="orders", max_backlog_bytes=4096)
    make_topic(tenant=acme.tenant, name="events", retention_seconds=3600)
    page = owner.get("/queues/orders/edit/")
    assert page.context["form"]["max_backlog_bytes"].initial == 4096

    edited = owner.post(
        "/queues/orders/edit/",
        {
            "visibility_timeout": queue.visibility_timeout,
            "delay_seconds": queue.delay_seconds,
            "retention_seconds": queue.retention_seconds,
            "dead_letter_queue": "",
            "max_delivery_attempts": "",
            "retry_backoff_min": queue.retry_backoff_min,
            "retry_backoff_max": queue.retry_backoff_max,
            "max_backlog_messages": "100",
            "max_backlog_bytes": "",
        },
    )
    topic_edited = owner.post(
        "/topics/events/edit/", {"retention_seconds": 3600, "max_backlog_messages": "9"}
    )

    assert (edited.status_code, topic_edited.status_code) == (302, 302)
    queue.refresh_from_db()
    topic = Topic.objects.for_tenant(acme.tenant).get(name="events")
    assert (queue.max_backlog_messages, queue.max_backlog_bytes) == (100, None)
    assert (topic.max_backlog_messages, topic.retention_seconds) == (9, 3600)
    assert trail(acme) == [
        ("queue.update", "queue", {"max_backlog_messages": 100, "max_backlog_bytes": None}),
        ("topic.update", "topic", {"max_backlog_messages": 9}),
    ]
    detail = owner.get("/queues/orders/").content.decode()
    assert "Most messages stored" in detail
