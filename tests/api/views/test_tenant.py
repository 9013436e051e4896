"""GET /v1/tenant, GET /v1/usage and GET /v1/audit-events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from tenants.models import AuditEvent, UsageRecord
from tests.factories import TenantCtx, api_client, make_key
from tests.helpers import assert_problem, post_json

pytestmark = pytest.mark.django_db


def usage(ctx: TenantCtx, hour: datetime, **counts: int) -> UsageRecord:
    return UsageRecord.all_tenants.create(tenant=ctx.tenant, hour=hour, **counts)


# --- /v1/tenant -------------------------------------------------------------------------------


def test_tenant_shows_plan_quotas_and_this_months_usage(acme: TenantCtx, globex: TenantCtx) -> None:
    """The caller's tenant with its plan, the plan's quotas and this month's summed usage;
    last month's records and other tenants' records are not counted."""
    month_start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    usage(
        acme,
        month_start + timedelta(hours=1),
        published=5,
        published_bytes=500,
        delivered=4,
        acked=3,
    )
    usage(acme, month_start, published=1, published_bytes=10, delivered=1, acked=1)
    usage(acme, month_start - timedelta(hours=1), published=1000, delivered=1000)
    usage(globex, month_start, published=77)

    response = acme.client.get("/v1/tenant")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "id": str(acme.tenant.id),
        "name": "Acme",
        "slug": "acme",
        "created_at": acme.tenant.created_at.isoformat().replace("+00:00", "Z"),
        "plan": {"slug": "developer", "name": "Developer"},
        "quotas": {
            name: {"value": value, "source": "plan"}
            for name, value in {
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
            }.items()
        },
        "usage": {
            "period_start": month_start.isoformat().replace("+00:00", "Z"),
            "published": 6,
            "published_bytes": 510,
            "delivered": 5,
            "acked": 4,
        },
    }


@pytest.mark.parametrize("scopes", [["publish"], ["consume"]])
def test_any_key_may_read_its_tenant(acme: TenantCtx, scopes: list[str]) -> None:
    """Reading the tenant needs no particular scope."""
    response = api_client(make_key(tenant=acme.tenant, scopes=scopes)).get("/v1/tenant")

    assert response.status_code == 200
    assert response.json()["slug"] == "acme"


def test_each_key_sees_its_own_tenant(acme: TenantCtx, globex: TenantCtx) -> None:
    assert acme.client.get("/v1/tenant").json()["id"] == str(acme.tenant.id)
    assert globex.client.get("/v1/tenant").json()["id"] == str(globex.tenant.id)


# --- /v1/audit-events -------------------------------------------------------------------------


def test_audit_events_newest_first_with_cursor_pagination(
    acme: TenantCtx, globex: TenantCtx
) -> None:
    """Three key creations appear newest first; paging with limit=2 visits every event once
    and the last page's next is null. Globex's events never appear."""
    created = [
        post_json(acme.client, "/v1/keys", {"name": f"k{i}", "scopes": ["publish"]}).json()
        for i in range(3)
    ]
    post_json(globex.client, "/v1/keys", {"name": "theirs", "scopes": ["publish"]})

    pages = []
    url = "/v1/audit-events?limit=2"
    while url:
        response = acme.client.get(url)
        assert response.status_code == 200
        page = response.json()
        assert set(page) == {"results", "next"}
        pages.append(page)
        url = f"/v1/audit-events?limit=2&cursor={page['next']}" if page["next"] else ""

    assert [len(page["results"]) for page in pages] == [2, 2, 1]
    assert pages[-1]["next"] is None
    events = [event for page in pages for event in page["results"]]
    ids = [event["id"] for event in events]
    assert len(set(ids)) == len(ids) == 5
    assert ids == sorted(ids, reverse=True)
    assert [(e["action"], e["target_id"]) for e in events[:3]] == [
        ("key.create", created[2]["id"]),
        ("key.create", created[1]["id"]),
        ("key.create", created[0]["id"]),
    ]
    assert [e["action"] for e in events[3:]] == ["key.create", "tenant.create"]
    assert set(events[0]) == {
        "id",
        "actor",
        "action",
        "target_type",
        "target_id",
        "data",
        "created_at",
    }
    assert events[0]["actor"] == f"key:{acme.key.split('_')[1]}"
    assert events[0]["data"] == {"name": "k2", "scopes": ["publish"], "resources": []}
    expected = AuditEvent.objects.for_tenant(acme.tenant).order_by("-id")
    assert ids == [event.id for event in expected]


def test_audit_events_need_manage(acme: TenantCtx) -> None:
    client = api_client(make_key(tenant=acme.tenant, scopes=["publish", "consume"]))
    assert_problem(client.get("/v1/audit-events"), 403, "forbidden")


# --- /v1/usage --------------------------------------------------------------------------------


def test_usage_by_hour_and_by_day(acme: TenantCtx, globex: TenantCtx) -> None:
    """Hourly records inside [from, to) come back one per hour, or summed per day; records
    outside the window and other tenants' records are left out."""
    day = datetime(2024, 5, 1, tzinfo=UTC)
    usage(acme, day + timedelta(hours=1), published=1, published_bytes=10, delivered=1, acked=1)
    usage(acme, day + timedelta(hours=5), published=2, published_bytes=20, delivered=2, acked=0)
    usage(acme, day + timedelta(days=1, hours=3), published=4, published_bytes=40)
    usage(acme, day + timedelta(days=2), published=100)  # at `to`: excluded
    usage(globex, day + timedelta(hours=1), published=999)
    window = "from=2024-05-01T00:00:00Z&to=2024-05-03T00:00:00Z"

    hourly = acme.client.get(f"/v1/usage?{window}&granularity=hour")
    daily = acme.client.get(f"/v1/usage?{window}&granularity=day")

    assert hourly.status_code == 200
    assert hourly.json() == {
        "results": [
            {
                "start": "2024-05-01T01:00:00Z",
                "published": 1,
                "published_bytes": 10,
                "delivered": 1,
                "acked": 1,
            },
            {
                "start": "2024-05-01T05:00:00Z",
                "published": 2,
                "published_bytes": 20,
                "delivered": 2,
                "acked": 0,
            },
            {
                "start": "2024-05-02T03:00:00Z",
                "published": 4,
                "published_bytes": 40,
                "delivered": 0,
                "acked": 0,
            },
        ]
    }
    assert daily.status_code == 200
    assert daily.json() == {
        "results": [
            {
                "start": "2024-05-01T00:00:00Z",
                "published": 3,
                "published_bytes": 30,
                "delivered": 3,
                "acked": 1,
            },
            {
                "start": "2024-05-02T00:00:00Z",
                "published": 4,
                "published_bytes": 40,
                "delivered": 0,
                "acked": 0,
            },
        ]
    }


def test_usage_defaults_to_the_last_day_by_hour(acme: TenantCtx) -> None:
    """With no parameters: the last 24 hours, hourly."""
    this_hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    usage(acme, this_hour - timedelta(hours=2), published=7)
    usage(acme, this_hour - timedelta(days=2), published=1)

    response = acme.client.get("/v1/usage")

    assert response.status_code == 200
    assert [(r["published"], r["delivered"]) for r in response.json()["results"]] == [(7, 0)]


def test_usage_with_no_records_is_an_empty_list(acme: TenantCtx) -> None:
    response = acme.client.get("/v1/usage?granularity=day")

    assert response.status_code == 200
    assert response.json() == {"results": []}


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("granularity=week", ["granularity"]),
        ("granularity=", ["granularity"]),
        ("from=yesterday", ["from"]),
        ("to=2024-13-01T00:00:00Z", ["to"]),
        ("from=2024-05-02T00:00:00Z&to=2024-05-01T00:00:00Z", None),
        ("from=0001-01-01T00:00:00%2B23:00", ["from"]),  # before year 1 in UTC
    ],
)
def test_usage_rejects_bad_parameters(acme: TenantCtx, query: str, fields: list | None) -> None:
    """An unknown granularity, an unparsable time or from after to is a 400."""
    body = assert_problem(acme.client.get(f"/v1/usage?{query}"), 400, "invalid_request")

    assert [error["field"] for error in body.get("errors", [])] == (fields or [])


def test_usage_times_with_any_offset_are_read_in_utc(acme: TenantCtx) -> None:
    """An offset PostgreSQL would refuse (beyond 15:59) is a valid RFC 3339 time: it is
    converted to UTC first, so the window is the same as written in UTC."""
    usage(acme, datetime(2024, 5, 1, 1, tzinfo=UTC), published=3)
    response = acme.client.get(
        "/v1/usage?granularity=day&from=2024-05-01T20:55:00%2B20:55&to=2024-05-02T00:00:00Z"
    )
    assert response.status_code == 200
    assert [(row["start"], row["published"]) for row in response.json()["results"]] == [
        ("2024-05-01T00:00:00Z", 3)
    ]


def test_usage_needs_manage(acme: TenantCtx) -> None:
    client = api_client(make_key(tenant=acme.tenant, scopes=["publish"]))
    assert_problem(client.get("/v1/usage"), 403, "forbidden")


# --- tenant-wide data and resource-limited keys -----------------------------------------------


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/audit-events"])
def test_a_resource_limited_key_is_refused_tenant_wide_data(acme: TenantCtx, path: str) -> None:
    """Usage and the audit trail cover every resource and key of the tenant: a manage key
    limited to queue:orders gets 403 forbidden saying why, and the body holds no data."""
    usage(acme, datetime.now(UTC).replace(minute=0, second=0, microsecond=0), published=7)
    client = api_client(make_key(tenant=acme.tenant, scopes=["manage"], resources=["queue:orders"]))

    body = assert_problem(client.get(path), 403, "forbidden")

    what = "usage" if path == "/v1/usage" else "the audit trail"
    assert body["detail"] == (
        f"This API key is limited to the resources ['queue:orders']; {what} covers the whole "
        "tenant."
    )
    assert acme.client.get(path).status_code == 200  # a tenant-wide manage key still may


def test_a_resource_limited_key_still_reads_its_tenant(acme: TenantCtx) -> None:
    """GET /v1/tenant (the plan and quotas every key works under) stays open to it."""
    client = api_client(
        make_key(tenant=acme.tenant, scopes=["publish"], resources=["queue:orders"])
    )
    response = client.get("/v1/tenant")

    assert response.status_code == 200
    assert response.json()["slug"] == "acme"


@pytest.mark.parametrize("value", ["", "0", "201", "x"])
def test_audit_events_limit_must_be_1_to_200(acme: TenantCtx, value: str) -> None:
    body = assert_problem(
        acme.client.get(f"/v1/audit-events?limit={value}"), 400, "invalid_request"
    )
    assert [error["field"] for error in body["errors"]] == ["limit"]
