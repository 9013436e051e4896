"""The usage, audit and chart pages: exact totals and limits, filters that return exactly the
matching events, charts as script-free SVG, and another tenant's data never shown."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from django.test import Client
from django.utils import timezone

from queues.models import ResourceMetric
from tenants.models import ApiKey, AuditEvent, QuotaAlert, Role, Tenant, UsageRecord
from tests.factories import (
    TenantCtx,
    make_key,
    make_member,
    make_plan,
    make_queue,
    make_subscription,
    make_topic,
    signed_in,
)


def cells(body: str, attr: str, value: str) -> list[str]:
    """The text of the cells of the row marked ``data-<attr>="<value>"``, tags stripped."""
    match = re.search(rf'<tr data-{attr}="{re.escape(value)}">(.*?)</tr>', body, re.DOTALL)
    assert match, f"no row {attr}={value}"
    raw = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", match.group(1), re.DOTALL)
    return [" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in raw]


def usage(tenant: Tenant, hour: datetime, published: int, delivered: int, acked: int) -> None:
    UsageRecord.all_tenants.create(
        tenant=tenant,
        hour=hour,
        published=published,
        published_bytes=published * 10,
        delivered=delivered,
        acked=acked,
    )


# --- usage and quotas -------------------------------------------------------------------------


class TestUsage:
    def test_totals_and_quotas(self, acme: TenantCtx, globex: TenantCtx) -> None:
        """This month's totals and every quota of the plan with what is used of it; another
        tenant's traffic is not counted, nor revoked or expired keys."""
        make_plan(
            tenant=acme.tenant,
            max_queues=4,
            max_topics=10,
            max_subscriptions=20,
            max_api_keys=5,
            monthly_messages=1000,
            max_message_bytes=65536,
            publish_rate_per_second=None,
        )
        for name in ("orders", "jobs", "mail"):
            make_queue(tenant=acme.tenant, name=name)
        make_topic(tenant=acme.tenant, name="events")
        make_subscription(tenant=acme.tenant, name="audit", topic="events")
        make_key(tenant=acme.tenant, name="soon", expires_at=timezone.now() + timedelta(days=1))
        this_hour = timezone.now().replace(minute=0, second=0, microsecond=0)
        usage(acme.tenant, this_hour, 700, 650, 600)
        usage(globex.tenant, this_hour, 5, 5, 5)

        response = signed_in(acme.owner).get("/usage/")
        assert response.status_code == 200
        body = response.content.decode()
        assert cells(body, "quota", "Messages this month") == [
            "Messages this month", "700", "1000", "70% 70%"
        ]  # fmt: skip
        assert cells(body, "quota", "Queues") == ["Queues", "3", "4", "75% 75%"]
        assert cells(body, "quota", "Topics") == ["Topics", "1", "10", "10% 10%"]
        assert cells(body, "quota", "Subscriptions") == ["Subscriptions", "1", "20", "5% 5%"]
        assert cells(body, "quota", "Active API keys") == ["Active API keys", "2", "5", "40% 40%"]
        assert cells(body, "quota", "Message size") == [
            "Message size", "—", "65536 bytes", "a limit per message or second"
        ]  # fmt: skip
        assert cells(body, "quota", "Publish rate") == [
            "Publish rate", "—", "unlimited", "a limit per message or second"
        ]  # fmt: skip
        assert '<td class="num" data-usage="published">700</td>' in body
        assert '<td class="num" data-usage="published_bytes">7000</td>' in body
        assert '<td class="num" data-usage="delivered">650</td>' in body
        assert '<td class="num" data-usage="acked">600</td>' in body
        assert '<meter min="0" max="100" low="75" high="90" optimum="0" value="75"' in body
        assert 'src="/usage/chart.svg"' in body

    def test_per_day_sums_the_hours(self, acme: TenantCtx, globex: TenantCtx) -> None:
        """Hourly rows are summed per UTC day over the last 30 days; older rows and another
        tenant's are left out; a day without traffic shows zeros."""
        today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
        usage(acme.tenant, today, 10, 8, 7)
        usage(acme.tenant, today + timedelta(hours=23), 5, 4, 3)
        usage(acme.tenant, today - timedelta(hours=19), 2, 2, 2)
        usage(acme.tenant, today - timedelta(days=30), 1000, 1000, 1000)
        usage(globex.tenant, today, 99, 99, 99)

        body = signed_in(acme.owner).get("/usage/").content.decode()
        yesterday = today - timedelta(days=1)
        assert cells(body, "day", f"{today:%Y-%m-%d}") == [f"{today:%Y-%m-%d}", "15", "12", "10"]
        assert cells(body, "day", f"{yesterday:%Y-%m-%d}") == [
            f"{yesterday:%Y-%m-%d}", "2", "2", "2"
        ]  # fmt: skip
        two_ago = today - timedelta(days=2)
        assert cells(body, "day", f"{two_ago:%Y-%m-%d}") == [f"{two_ago:%Y-%m-%d}", "0", "0", "0"]
        assert cells(body, "day", "total") == ["Total", "17", "14", "12"]
        assert f'data-day="{today - timedelta(days=30):%Y-%m-%d}"' not in body
        assert body.count("<tr data-day=") == 31  # 30 days and the total

    def test_chart_is_script_free_svg(self, acme: TenantCtx, owner: Client) -> None:
        """The daily chart is an SVG image with its own policy and no script."""
        usage(acme.tenant, timezone.now().replace(minute=0, second=0, microsecond=0), 3, 2, 1)
        response = owner.get("/usage/chart.svg")
        assert response.status_code == 200
        assert response["Content-Type"] == "image/svg+xml"
        assert response["Content-Security-Policy"] == (
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"
        )
        svg = response.content
        assert b"<svg" in svg
        assert b"<script" not in svg
        assert b"Messages per day (last 30 days, UTC)" in svg

    def test_viewer_may_read(self, acme: TenantCtx, viewer: Client) -> None:
        assert viewer.get("/usage/").status_code == 200
        assert viewer.get("/audit/").status_code == 200

    def test_signed_out_is_sent_to_login(self, acme: TenantCtx) -> None:
        for path in ("/usage/", "/usage/chart.svg", "/audit/"):
            response = Client().get(path)
            assert response.status_code == 302
            assert response["Location"].startswith("/login/")


class TestUsageBreakdown:
    """The usage page's tables of this month per API key and per resource, and its monthly
    quotas against the limit that holds."""

    @staticmethod
    def scoped(
        tenant: Tenant, hour: datetime, *values: int, key: str = "", resource: str = ""
    ) -> None:
        columns = (
            "published",
            "published_bytes",
            "delivered",
            "delivered_bytes",
            "acked",
            "requests",
        )
        UsageRecord.all_tenants.create(
            tenant=tenant,
            hour=hour,
            key_prefix=key,
            resource=resource,
            **dict(zip(columns, values, strict=True)),
        )

    def test_busiest_keys_and_resources_of_the_month(
        self, acme: TenantCtx, globex: TenantCtx
    ) -> None:
        """Per key (its name, or "deleted" for a prefix no key has) and per resource, summed
        over this month's hours, busiest first (published + delivered); last month's rows
        and another tenant's are left out."""
        key = ApiKey.objects.for_tenant(acme.tenant).get(name="all")
        month = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        self.scoped(acme.tenant, month, 5, 50, 4, 40, 3, 9, key=key.prefix)
        self.scoped(acme.tenant, month + timedelta(hours=1), 1, 10, 1, 10, 1, 2, key=key.prefix)
        self.scoped(acme.tenant, month, 20, 200, 0, 0, 0, 20, key="g0neprefix")
        self.scoped(acme.tenant, month - timedelta(hours=1), 999, 0, 0, 0, 0, 0, key=key.prefix)
        self.scoped(acme.tenant, month, 2, 20, 2, 20, 2, 4, resource="queue:orders")
        self.scoped(acme.tenant, month, 7, 70, 0, 0, 0, 7, resource="topic:events")
        self.scoped(globex.tenant, month, 50, 0, 0, 0, 0, 0, resource="queue:secret")

        body = signed_in(acme.owner).get("/usage/").content.decode()

        assert cells(body, "key", "g0neprefix") == [
            "op_g0neprefix_… deleted",
            "20",
            "0",
            "0",
            "200",
            "0",
            "20",
        ]
        assert cells(body, "key", key.prefix) == [
            f"all op_{key.prefix}_…",
            "6",
            "5",
            "4",
            "60",
            "50",
            "11",
        ]
        assert body.index('data-key="g0neprefix"') < body.index(f'data-key="{key.prefix}"')
        assert cells(body, "resource", "topic:events") == [
            "topic:events",
            "7",
            "0",
            "0",
            "70",
            "0",
            "7",
        ]
        assert cells(body, "resource", "queue:orders") == [
            "queue:orders",
            "2",
            "2",
            "2",
            "20",
            "20",
            "4",
        ]
        assert body.index('data-resource="topic:events"') < body.index(
            'data-resource="queue:orders"'
        )
        assert "queue:secret" not in body

    def test_top_twenty_only(self, acme: TenantCtx) -> None:
        month = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        for n in range(25):
            self.scoped(acme.tenant, month, n + 1, 0, 0, 0, 0, 0, resource=f"queue:q{n:02d}")

        body = signed_in(acme.owner).get("/usage/").content.decode()

        assert body.count("<tr data-resource=") == 20
        assert 'data-resource="queue:q24"' in body
        assert 'data-resource="queue:q04"' not in body

    def test_nothing_yet(self, acme: TenantCtx) -> None:
        body = signed_in(acme.owner).get("/usage/").content.decode()

        assert "No traffic by API key this month yet." in body
        assert "No traffic by queue, topic or subscription this month yet." in body

    def test_monthly_quota_with_share_and_alerts(self, acme: TenantCtx) -> None:
        """The monthly message quota at the tenant's override (not the plan's), the share
        used, and the alerts already emailed this month."""
        make_plan(tenant=acme.tenant, monthly_messages=1000)
        acme.tenant.quota_overrides = {"monthly_messages": 400}
        acme.tenant.save(update_fields=["quota_overrides"])
        this_hour = timezone.now().replace(minute=0, second=0, microsecond=0)
        usage(acme.tenant, this_hour, 340, 0, 0)
        QuotaAlert.all_tenants.create(
            tenant=acme.tenant, quota="monthly_messages", period=f"{this_hour:%Y-%m}", percent=80
        )
        QuotaAlert.all_tenants.create(
            tenant=acme.tenant, quota="monthly_messages", period="2001-01", percent=100
        )

        body = signed_in(acme.owner).get("/usage/").content.decode()

        assert cells(body, "monthly", "monthly_messages") == [
            "Messages published per month",
            "340",
            "400 messages, set for this tenant",
            "85% 85%",
            "80%",
        ]
        assert cells(body, "quota", "Messages this month") == [
            "Messages this month", "340", "400", "85% 85%"
        ]  # fmt: skip

    def test_monthly_quota_unlimited(self, acme: TenantCtx) -> None:
        body = signed_in(acme.owner).get("/usage/").content.decode()

        assert cells(body, "monthly", "monthly_messages") == [
            "Messages published per month", "0", "unlimited", "no limit", "none"
        ]  # fmt: skip


# --- audit log --------------------------------------------------------------------------------


def event(
    tenant: Tenant, actor: str, action: str, target_type: str, at: datetime, target_id: str = "x"
) -> AuditEvent:
    return AuditEvent.all_tenants.create(
        tenant=tenant,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        created_at=at,
    )


class TestAudit:
    T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def events(self, acme: TenantCtx, globex: TenantCtx) -> dict[str, AuditEvent]:
        AuditEvent.all_tenants.filter(tenant=acme.tenant).delete()
        t0 = self.T0
        return {
            "a": event(acme.tenant, "user:ann@acme.test", "queue.create", "queue", t0),
            "b": event(
                acme.tenant, "user:bob@acme.test", "queue.delete", "queue", t0 + timedelta(hours=1)
            ),
            "c": event(acme.tenant, "key:abc", "key.create", "key", t0 + timedelta(hours=2)),
            "d": event(
                acme.tenant, "user:ann@acme.test", "key.revoke", "key", t0 + timedelta(hours=3)
            ),
            "x": event(globex.tenant, "user:ann@acme.test", "queue.create", "queue", t0),
        }

    def listed(self, client: Client, query: str) -> list[int]:
        response = client.get(f"/audit/?{query}")
        assert response.status_code == 200
        return [e.id for e in response.context["events"]]

    def test_newest_first_and_tenant_scoped(self, acme: TenantCtx, globex: TenantCtx) -> None:
        ev = self.events(acme, globex)
        owner = signed_in(acme.owner)
        assert self.listed(owner, "") == [ev[k].id for k in "dcba"]
        body = owner.get("/audit/").content.decode()
        assert f'data-event="{ev["x"].id}"' not in body

    def test_filters(self, acme: TenantCtx, globex: TenantCtx) -> None:
        """Each filter, and filters together, return exactly the matching events."""
        ev = self.events(acme, globex)
        owner = signed_in(acme.owner)
        cases = {
            "actor=user%3Aann%40acme.test": "da",
            "actor=user%3A*": "dba",
            "action=queue.create": "a",
            "action=key.*": "dc",
            "target_type=key": "dc",
            "target_type=queue&actor=user%3Abob%40acme.test": "b",
            "since=2026-03-01T13:00": "dcb",
            "until=2026-03-01T13:00": "a",
            "since=2026-03-01T13:00&until=2026-03-01T15:00": "cb",
            "action=key.*&since=2026-03-01T14:30": "d",
            "action=nothing": "",
        }
        for query, expected in cases.items():
            assert self.listed(owner, query) == [ev[k].id for k in expected], query

    def test_bad_date_is_an_error_and_filters_nothing(
        self, acme: TenantCtx, globex: TenantCtx
    ) -> None:
        ev = self.events(acme, globex)
        response = signed_in(acme.owner).get("/audit/?since=yesterday&action=key.create")
        assert response.context["form"].errors == {"since": ["Enter a valid date/time."]}
        assert [e.id for e in response.context["events"]] == [ev[k].id for k in "dcba"]

    def test_paginated(self, acme: TenantCtx) -> None:
        """50 a page, newest first; the page links keep the filters."""
        AuditEvent.all_tenants.filter(tenant=acme.tenant).delete()
        made = [
            event(acme.tenant, "user:a", "queue.create", "queue", self.T0 + timedelta(minutes=i))
            for i in range(53)
        ]
        owner = signed_in(acme.owner)
        first = owner.get("/audit/?action=queue.create")
        assert [e.id for e in first.context["events"]] == [e.id for e in made[::-1][:50]]
        assert 'href="?action=queue.create&amp;page=2"' in first.content.decode()
        second = owner.get("/audit/?action=queue.create&page=2")
        assert [e.id for e in second.context["events"]] == [e.id for e in made[2::-1]]
        assert first.context["page"].paginator.count == 53


# --- resource charts --------------------------------------------------------------------------


class TestResourceCharts:
    def test_flow_and_backlog_svg(self, acme: TenantCtx, owner: Client) -> None:
        """A queue's charts draw its minutes within the window, as script-free SVG."""
        queue = make_queue(tenant=acme.tenant, name="orders")
        minute = timezone.now().replace(second=0, microsecond=0)
        for i, (published, backlog) in enumerate([(4, 1), (7, 9)]):
            ResourceMetric.all_tenants.create(
                tenant=acme.tenant,
                kind="queue",
                resource_id=queue.id,
                minute=minute - timedelta(minutes=1 - i),
                published=published,
                backlog=backlog,
            )
        ResourceMetric.all_tenants.create(
            tenant=acme.tenant,
            kind="queue",
            resource_id=queue.id,
            minute=minute - timedelta(hours=3),
            published=12345,
        )
        flow = owner.get("/metrics/queue/orders/flow.svg")
        assert flow.status_code == 200
        assert flow["Content-Type"] == "image/svg+xml"
        svg = flow.content.decode()
        assert "<script" not in svg
        assert "Messages per minute (last 1 h, UTC)" in svg
        for series in ("Published", "Delivered", "Acknowledged"):
            assert series in svg
        assert (minute - timedelta(minutes=1)).strftime("%H:%M") in svg
        assert "12345" not in svg

        wide = owner.get("/metrics/queue/orders/flow.svg?hours=6").content.decode()
        assert "Messages per minute (last 6 h, UTC)" in wide
        assert "12345" in wide
        assert "last 1 h" in owner.get("/metrics/queue/orders/flow.svg?hours=7").content.decode()

        backlog = owner.get("/metrics/queue/orders/backlog.svg").content.decode()
        assert "Backlog (last 1 h, UTC)" in backlog
        assert "Not yet acknowledged" in backlog

    def test_another_tenants_resource_is_a_404(
        self, acme: TenantCtx, globex: TenantCtx, owner: Client
    ) -> None:
        make_queue(tenant=globex.tenant, name="theirs")
        make_topic(tenant=acme.tenant, name="events")
        assert owner.get("/metrics/queue/theirs/flow.svg").status_code == 404
        assert owner.get("/metrics/queue/missing/flow.svg").status_code == 404
        assert owner.get("/metrics/table/events/flow.svg").status_code == 404
        assert owner.get("/metrics/topic/events/pie.svg").status_code == 404
        assert owner.get("/metrics/topic/events/flow.svg").status_code == 200

    def test_detail_pages_include_the_charts(self, acme: TenantCtx, owner: Client) -> None:
        """Queue, topic and subscription pages show their charts as images (a topic has no
        backlog chart)."""
        make_queue(tenant=acme.tenant, name="orders")
        make_topic(tenant=acme.tenant, name="events")
        make_subscription(tenant=acme.tenant, name="audit", topic="events")
        queue_page = owner.get("/queues/orders/?hours=24").content.decode()
        assert 'src="/metrics/queue/orders/flow.svg?hours=24"' in queue_page
        assert 'src="/metrics/queue/orders/backlog.svg?hours=24"' in queue_page
        topic_page = owner.get("/topics/events/").content.decode()
        assert 'src="/metrics/topic/events/flow.svg"' in topic_page
        assert "/metrics/topic/events/backlog.svg" not in topic_page
        sub_page = owner.get("/subscriptions/audit/").content.decode()
        assert 'src="/metrics/subscription/audit/backlog.svg"' in sub_page

    def test_viewer_sees_charts(self, acme: TenantCtx) -> None:
        make_queue(tenant=acme.tenant, name="orders")
        viewer = signed_in(make_member(tenant=acme.tenant, email="v@acme.test", role=Role.VIEWER))
        assert viewer.get("/metrics/queue/orders/flow.svg").status_code == 200
