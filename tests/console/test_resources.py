"""Creating queues, topics and subscriptions from the console."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework import serializers

from api.views.queues import QueueListCreateView
from api.views.subscriptions import SubscriptionListCreateView
from api.views.topics import TopicListCreateView
from kernel.redis_client import get_redis
from kernel.redis_keys import tenant_scan_pattern, topic_partition_stream
from queues.models import Queue, Subscription, Topic
from tenants.models import AuditEvent
from tests.factories import TenantCtx, make_queue, make_topic

ACTOR = "user:owner@acme.test"


def audit_trail(ctx: TenantCtx) -> list[tuple[str, str, str]]:
    """(actor, action, target) of the tenant's audit events, except the fixtures' own."""
    return list(
        AuditEvent.objects.for_tenant(ctx.tenant)
        .exclude(actor__in=["operator", "test"])
        .order_by("id")
        .values_list("actor", "action", "target_id")
    )


def queue_form(**changes: object) -> dict[str, object]:
    return {
        "name": "orders",
        "visibility_timeout": 45,
        "delay_seconds": 0,
        "retention_seconds": 86400,
        "dead_letter_queue": "",
        "max_delivery_attempts": "",
        **changes,
    }


def test_create_queue(acme: TenantCtx, owner: Client) -> None:
    """A valid form creates the queue through the service, audits it as the signed-in user,
    and returns to the dashboard with a confirmation."""
    assert owner.get("/new/queue/").status_code == 200
    response = owner.post("/new/queue/", queue_form())
    assert response.status_code == 302
    assert response["Location"] == "/#queues"
    queue = Queue.objects.for_tenant(acme.tenant).get()
    assert (queue.name, queue.visibility_timeout, queue.retention_seconds) == (
        "orders",
        45,
        86400,
    )
    assert audit_trail(acme) == [(ACTOR, "queue.create", "orders")]
    page = owner.get("/")
    assert "Queue \u201corders\u201d created." in page.content.decode()
    assert [row.stats for row in page.context["queues"]] == [
        {"available": 0, "in_flight": 0, "delayed": 0, "oldest_age_seconds": 0}
    ]


def test_create_queue_with_a_dead_letter_queue(acme: TenantCtx, owner: Client) -> None:
    """The dead-letter choice lists the tenant's queues and is stored with the attempts."""
    make_queue(tenant=acme.tenant, name="orders-dlq")
    form = owner.get("/new/queue/").context["form"]
    assert form.fields["dead_letter_queue"].choices == [("", "None"), ("orders-dlq", "orders-dlq")]
    response = owner.post(
        "/new/queue/", queue_form(dead_letter_queue="orders-dlq", max_delivery_attempts=5)
    )
    assert response.status_code == 302
    queue = Queue.objects.for_tenant(acme.tenant).get(name="orders")
    assert (queue.dead_letter_queue.name, queue.max_delivery_attempts) == ("orders-dlq", 5)


def test_service_errors_show_on_the_form(acme: TenantCtx, owner: Client) -> None:
    """A name the service rejects is shown beside the field and nothing is stored."""
    response = owner.post("/new/queue/", queue_form(name="-bad name"))
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "name": ["1-128 of A-Z a-z 0-9 . _ -, starting alphanumeric."]
    }
    assert not Queue.objects.for_tenant(acme.tenant).exists()
    assert audit_trail(acme) == []


def test_dead_letter_queue_needs_attempts(acme: TenantCtx, owner: Client) -> None:
    """The service's rule that both go together comes back as a field error."""
    make_queue(tenant=acme.tenant, name="dlq")
    response = owner.post("/new/queue/", queue_form(dead_letter_queue="dlq"))
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "max_delivery_attempts": [
            "Set dead_letter_queue and max_delivery_attempts together (or neither)."
        ]
    }
    assert list(Queue.objects.for_tenant(acme.tenant).values_list("name", flat=True)) == ["dlq"]


def test_duplicate_queue_is_a_form_error(acme: TenantCtx, owner: Client) -> None:
    """A taken name (a Conflict) is shown on top of the form; the first queue is untouched."""
    owner.post("/new/queue/", queue_form())
    response = owner.post("/new/queue/", queue_form(visibility_timeout=99))
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == ["A queue named 'orders' already exists."]
    assert "already exists" in response.content.decode()
    assert Queue.objects.for_tenant(acme.tenant).get().visibility_timeout == 45
    assert audit_trail(acme) == [(ACTOR, "queue.create", "orders")]


def test_quota_is_a_form_error(acme: TenantCtx, owner: Client) -> None:
    """Over the plan's limit the service's QuotaExceeded detail is shown and nothing stored."""
    plan = acme.tenant.plan
    plan.max_queues = 0
    plan.save(update_fields=["max_queues"])
    response = owner.post("/new/queue/", queue_form())
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "Quota max_queues reached: the plan allows 0 queues, and this tenant has 0."
    ]
    assert not Queue.objects.for_tenant(acme.tenant).exists()


def test_create_topic(acme: TenantCtx, owner: Client) -> None:
    """A topic with 3 partitions is created and audited."""
    assert owner.get("/new/topic/").status_code == 200
    response = owner.post(
        "/new/topic/", {"name": "events", "partitions": 3, "retention_seconds": 3600}
    )
    assert response.status_code == 302
    assert response["Location"] == "/#topics"
    topic = Topic.objects.for_tenant(acme.tenant).get()
    assert (topic.name, topic.partitions, topic.retention_seconds) == ("events", 3, 3600)
    assert audit_trail(acme) == [(ACTOR, "topic.create", "events")]


def test_topic_partitions_are_checked(acme: TenantCtx, owner: Client) -> None:
    """More than 64 partitions is refused by the service, beside the field."""
    response = owner.post(
        "/new/topic/", {"name": "events", "partitions": 65, "retention_seconds": 3600}
    )
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "partitions": ["Ensure this value is less than or equal to 64."]
    }
    assert not Topic.objects.for_tenant(acme.tenant).exists()


def test_create_subscription(acme: TenantCtx, owner: Client) -> None:
    """The topic choice lists the tenant's topics; the subscription is created and audited."""
    make_topic(tenant=acme.tenant, name="events")
    form = owner.get("/new/subscription/").context["form"]
    assert form.fields["topic"].choices == [("events", "events")]
    response = owner.post(
        "/new/subscription/",
        {"name": "audit", "topic": "events", "start_at": "earliest", "visibility_timeout": 30},
    )
    assert response.status_code == 302
    sub = Subscription.objects.for_tenant(acme.tenant).get()
    assert (sub.name, sub.topic.name, sub.start_at) == ("audit", "events", "earliest")
    assert audit_trail(acme) == [(ACTOR, "subscription.create", "audit")]


def test_subscription_to_another_tenants_topic_is_refused(
    acme: TenantCtx, globex: TenantCtx, owner: Client
) -> None:
    """Only the tenant's own topics can be chosen; Globex's is not a valid choice."""
    make_topic(tenant=globex.tenant, name="globex-events")
    response = owner.post(
        "/new/subscription/",
        {"name": "spy", "topic": "globex-events", "start_at": "latest", "visibility_timeout": 30},
    )
    assert response.status_code == 200
    assert "topic" in response.context["form"].errors
    assert not Subscription.objects.for_tenant(acme.tenant).exists()
    assert not Subscription.objects.for_tenant(globex.tenant).exists()


# --- what the create forms offer ---------------------------------------------------------------

#: The API's create fields that a form splits into (or names as) other fields.
FORM_FIELDS_OF_API_FIELD = {
    "retry_backoff": ["retry_backoff_min", "retry_backoff_max"],
    "filter": ["filter_attributes"],
}


@pytest.mark.parametrize(
    ("path", "api_input"),
    [
        ("/new/queue/", QueueListCreateView.InputSerializer),
        ("/new/topic/", TopicListCreateView.InputSerializer),
        ("/new/subscription/", SubscriptionListCreateView.InputSerializer),
    ],
)
def test_create_forms_offer_every_field_the_api_takes_on_create(
    owner: Client, path: str, api_input: type[serializers.Serializer[Any]]
) -> None:
    """What POST /v1/queues, /v1/topics and /v1/subscriptions accept, the console's create
    form offers too, so nothing needs a second step (an edit) after creating."""
    form = owner.get(path).context["form"]
    wanted = [
        field for name in api_input().fields for field in FORM_FIELDS_OF_API_FIELD.get(name, [name])
    ]
    assert sorted(form.fields) == sorted(wanted)


def tenant_redis_keys(ctx: TenantCtx) -> list[bytes]:
    return sorted(get_redis().keys(tenant_scan_pattern(str(ctx.tenant.id))))


def test_create_queue_with_a_retry_backoff(acme: TenantCtx, owner: Client) -> None:
    """The create form offers the edit form's backoff fields, in the edit form's order, and
    the queue is created with the backoff in one step (one audit event, the page shows it)."""
    form = owner.get("/new/queue/").context["form"]
    assert list(form.fields) == [
        "name",
        "visibility_timeout",
        "delay_seconds",
        "retention_seconds",
        "dead_letter_queue",
        "max_delivery_attempts",
        "retry_backoff_min",
        "retry_backoff_max",
        "max_backlog_messages",
        "max_backlog_bytes",
        "fair",
    ]
    assert (form["retry_backoff_min"].initial, form["retry_backoff_max"].initial) == (0, 600)
    response = owner.post(
        "/new/queue/", queue_form(retry_backoff_min=5, retry_backoff_max=90, delay_seconds=2)
    )
    assert response.status_code == 302
    queue = Queue.objects.for_tenant(acme.tenant).get()
    assert (
        queue.name,
        queue.visibility_timeout,
        queue.delay_seconds,
        queue.retention_seconds,
        queue.dead_letter_queue,
        queue.max_delivery_attempts,
        queue.retry_backoff_min,
        queue.retry_backoff_max,
    ) == ("orders", 45, 2, 86400, None, None, 5, 90)
    assert audit_trail(acme) == [(ACTOR, "queue.create", "orders")]
    page = owner.get("/queues/orders/").content.decode()
    assert "<dt>Retry backoff</dt><dd>5 s to 1 min 30 s" in page


def test_empty_backoff_fields_create_the_default_backoff(acme: TenantCtx, owner: Client) -> None:
    """Left empty (or not sent at all), the backoff is the default: 0 to 600 seconds."""
    owner.post("/new/queue/", queue_form(retry_backoff_min="", retry_backoff_max=""))
    owner.post("/new/queue/", queue_form(name="billing"))
    rows = Queue.objects.for_tenant(acme.tenant).order_by("name")
    assert [(q.name, q.retry_backoff_min, q.retry_backoff_max) for q in rows] == [
        ("billing", 0, 600),
        ("orders", 0, 600),
    ]


@pytest.mark.parametrize(
    ("low", "high", "errors"),
    [
        (50, 5, {"retry_backoff_max": ["At least the first wait."]}),
        # An empty longest wait is the default 600 s, shorter than this first wait.
        (700, "", {"retry_backoff_max": ["At least the first wait."]}),
        (-1, 5, {"retry_backoff_min": ["Ensure this value is greater than or equal to 0."]}),
        (0, 43201, {"retry_backoff_max": ["Ensure this value is less than or equal to 43200."]}),
    ],
)
def test_a_refused_backoff_creates_no_queue(
    acme: TenantCtx, owner: Client, low: object, high: object, errors: dict[str, list[str]]
) -> None:
    """The edit form's checks refuse the backoff beside its field; no row, no audit event and
    no Redis structure is left behind."""
    response = owner.post("/new/queue/", queue_form(retry_backoff_min=low, retry_backoff_max=high))
    assert response.status_code == 200
    assert response.context["form"].errors == errors
    assert not Queue.objects.for_tenant(acme.tenant).exists()
    assert audit_trail(acme) == []
    assert tenant_redis_keys(acme) == []


def test_a_refused_backoff_creates_no_subscription(acme: TenantCtx, owner: Client) -> None:
    """The subscription form shares the check: refused, no row, no audit event and no
    consumer group on the topic's partitions."""
    topic = make_topic(tenant=acme.tenant, name="events", partitions=2)
    response = owner.post(
        "/new/subscription/",
        {
            "name": "billing",
            "topic": "events",
            "start_at": "earliest",
            "visibility_timeout": 30,
            "retry_backoff_min": 50,
            "retry_backoff_max": 5,
        },
    )
    assert response.status_code == 200
    assert response.context["form"].errors == {"retry_backoff_max": ["At least the first wait."]}
    assert not Subscription.objects.for_tenant(acme.tenant).exists()
    assert audit_trail(acme) == []
    streams = [topic_partition_stream(str(acme.tenant.id), str(topic.id), p) for p in (0, 1)]
    assert [get_redis().xinfo_groups(stream) for stream in streams] == [[], []]


def test_fair_mode_from_the_create_and_edit_forms(acme: TenantCtx, owner: Client) -> None:
    """The create form makes a fair queue, the detail page says so, and the edit form
    switches it off (one audit event each)."""
    response = owner.post("/new/queue/", queue_form(fair="on"))
    assert response.status_code == 302
    queue = Queue.objects.for_tenant(acme.tenant).get()
    assert queue.fair is True
    page = owner.get("/queues/orders/").content.decode()
    assert "<dt>Fair mode</dt><dd>on" in page
    edit = owner.get("/queues/orders/edit/").context["form"]
    assert edit["fair"].initial is True
