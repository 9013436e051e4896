"""Per-minute resource metrics: what ``metrics_sample_all`` writes after known traffic, how a
second sample turns counters into flows, and the trim of old rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from queues.models import ResourceMetric
from queues.services import metrics_sample_all
from queues.tasks import sample_metrics
from tests.factories import TenantCtx, make_queue, make_subscription, make_topic
from tests.helpers import post_json


def _row(kind: str, resource_id: object) -> dict[str, int]:
    metric = ResourceMetric.all_tenants.get(kind=kind, resource_id=resource_id)
    return {
        "published": metric.published,
        "delivered": metric.delivered,
        "acked": metric.acked,
        "backlog": metric.backlog,
        "oldest_age_seconds": metric.oldest_age_seconds,
    }


def _publish(ctx: TenantCtx, path: str, n: int) -> None:
    response = post_json(ctx.client, path, {"messages": [{"body": i} for i in range(n)]})
    assert response.status_code == 201, response.content


def _pull(ctx: TenantCtx, path: str, n: int) -> list[str]:
    response = post_json(ctx.client, path, {"max_messages": n})
    assert response.status_code == 200, response.content
    return [m["ack_id"] for m in response.json()["messages"]]


@pytest.mark.django_db
class TestSample:
    def test_queue_after_publish_pull_ack(self, acme: TenantCtx) -> None:
        """5 published, 3 pulled, 2 acked: the queue's minute says so, with 3 left unacked."""
        queue = make_queue(tenant=acme.tenant, name="orders")
        _publish(acme, "/v1/queues/orders/messages", 5)
        ack_ids = _pull(acme, "/v1/queues/orders/pull", 3)
        acked = post_json(acme.client, "/v1/queues/orders/ack", {"ack_ids": ack_ids[:2]})
        assert acked.status_code == 200, acked.content

        assert sample_metrics() == 1
        assert _row("queue", queue.id) == {
            "published": 5,
            "delivered": 3,
            "acked": 2,
            "backlog": 3,
            "oldest_age_seconds": 0,
        }
        metric = ResourceMetric.all_tenants.get(resource_id=queue.id)
        assert metric.tenant_id == acme.tenant.id
        assert metric.minute == timezone.now().replace(second=0, microsecond=0)

    def test_topic_and_subscription(self, acme: TenantCtx) -> None:
        """A topic counts what was published to it; its subscription what it delivered and
        what was acked; the topic has no backlog of its own."""
        topic = make_topic(tenant=acme.tenant, name="events", partitions=2)
        sub = make_subscription(tenant=acme.tenant, name="audit", topic="events")
        _publish(acme, "/v1/topics/events/messages", 4)
        ack_ids = _pull(acme, "/v1/subscriptions/audit/pull", 3)
        acked = post_json(acme.client, "/v1/subscriptions/audit/ack", {"ack_ids": ack_ids[:1]})
        assert acked.status_code == 200, acked.content

        assert metrics_sample_all() == 2
        assert _row("topic", topic.id) == {
            "published": 4,
            "delivered": 0,
            "acked": 0,
            "backlog": 0,
            "oldest_age_seconds": 0,
        }
        assert _row("subscription", sub.id) == {
            "published": 4,
            "delivered": 3,
            "acked": 1,
            "backlog": 3,
            "oldest_age_seconds": 0,
        }

    def test_next_minute_counts_only_the_new_traffic(self, acme: TenantCtx) -> None:
        """The second minute's flows are the differences since the first sample; a second
        run within the same minute rewrites that minute with the same numbers."""
        queue = make_queue(tenant=acme.tenant, name="orders")
        now = timezone.now()
        _publish(acme, "/v1/queues/orders/messages", 2)
        metrics_sample_all(now=now)
        _publish(acme, "/v1/queues/orders/messages", 3)
        ack_ids = _pull(acme, "/v1/queues/orders/pull", 10)
        post_json(acme.client, "/v1/queues/orders/ack", {"ack_ids": ack_ids})
        later = now + timedelta(minutes=1)
        metrics_sample_all(now=later)
        metrics_sample_all(now=later)

        rows = list(
            ResourceMetric.all_tenants.filter(resource_id=queue.id)
            .order_by("minute")
            .values_list("published", "delivered", "acked", "backlog")
        )
        assert rows == [(2, 0, 0, 2), (3, 5, 5, 0)]

    def test_old_resource_first_sample_is_a_baseline(self, acme: TenantCtx) -> None:
        """A resource older than two minutes with no sample yet gets a row of levels only:
        its earlier traffic is not this minute's."""
        queue = make_queue(tenant=acme.tenant, name="orders")
        _publish(acme, "/v1/queues/orders/messages", 2)
        metrics_sample_all(now=timezone.now() + timedelta(minutes=5))
        assert _row("queue", queue.id) == {
            "published": 0,
            "delivered": 0,
            "acked": 0,
            "backlog": 2,
            "oldest_age_seconds": 0,  # levels are read at the real moment of the sample
        }


@pytest.mark.django_db
def test_rows_older_than_48_hours_are_trimmed(acme: TenantCtx) -> None:
    """Rows of 48 hours and one minute ago go; 48 hours ago stays (and so does this minute)."""
    queue = make_queue(tenant=acme.tenant, name="orders")
    now = datetime(2026, 3, 5, 12, 0, 30, tzinfo=UTC)
    minute = now.replace(second=0)
    for age in (timedelta(hours=48), timedelta(hours=48, minutes=1), timedelta(days=5)):
        ResourceMetric.all_tenants.create(
            tenant=acme.tenant, kind="queue", resource_id=queue.id, minute=minute - age
        )
    metrics_sample_all(now=now)
    kept = ResourceMetric.all_tenants.filter(resource_id=queue.id).order_by("minute")
    assert [m.minute for m in kept] == [minute - timedelta(hours=48), minute]
