"""GET /v1/usage?by=key|resource: the series per API key or per resource with every counted
column; without ``by`` the tenant's totals exactly as before, never counting the per-key and
per-resource rows again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from tenants.models import ApiKey, UsageRecord
from tests.factories import TenantCtx, api_client, make_key
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db

DAY = datetime(2024, 5, 1, tzinfo=UTC)
WINDOW = "from=2024-05-01T00:00:00Z&to=2024-05-03T00:00:00Z"
COLUMNS = (
    "published",
    "published_bytes",
    "delivered",
    "delivered_bytes",
    "acked",
    "dead_lettered",
    "requests",
)


def usage(ctx: TenantCtx, hour: datetime, *values: int, key: str = "", resource: str = "") -> None:
    """A row with ``values`` for COLUMNS in order (the rest 0)."""
    UsageRecord.all_tenants.create(
        tenant=ctx.tenant,
        hour=hour,
        key_prefix=key,
        resource=resource,
        **dict(zip(COLUMNS, values, strict=False)),
    )


def entry(start: str, *values: int, **scope: str | None) -> dict[str, object]:
    return {"start": start, **scope, **dict(zip(COLUMNS, values, strict=True))}


def legacy(start: str, published: int, published_bytes: int, delivered: int, acked: int) -> dict:
    """An entry of the answer without ``by``: exactly these five fields."""
    return {
        "start": start,
        "published": published,
        "published_bytes": published_bytes,
        "delivered": delivered,
        "acked": acked,
    }


@pytest.fixture
def traffic(acme: TenantCtx, globex: TenantCtx) -> ApiKey:
    """Acme's totals, two keys' and two resources' rows over two days; Globex's rows at the
    same hours. Returns Acme's "all" key (the other key, "gone", is deleted)."""
    main = ApiKey.objects.for_tenant(acme.tenant).get(name="all")
    h1, h5, d2 = DAY + timedelta(hours=1), DAY + timedelta(hours=5), DAY + timedelta(days=1)
    usage(acme, h1, 10, 100, 8, 80, 6, 1, 20)
    usage(acme, h5, 4, 40, 4, 40, 4, 0, 9)
    usage(acme, d2, 1, 10, 1, 10, 1, 0, 3)
    usage(acme, h1, 7, 70, 5, 50, 4, 1, 12, key=main.prefix)
    usage(acme, h1, 3, 30, 3, 30, 2, 0, 8, key="g0neprefix")
    usage(acme, h5, 4, 40, 4, 40, 4, 0, 9, key=main.prefix)
    usage(acme, d2, 1, 10, 1, 10, 1, 0, 3, key=main.prefix)
    usage(acme, h1, 10, 100, 0, 0, 0, 0, 5, resource="topic:events")
    usage(acme, h1, 0, 0, 8, 80, 6, 1, 15, resource="subscription:audit")
    usage(acme, h5, 4, 40, 4, 40, 4, 0, 9, resource="queue:orders")
    usage(acme, DAY + timedelta(days=2), 99, key=main.prefix)  # at `to`: left out
    usage(globex, h1, 999, 999, 999, 999, 999, 999, 999)
    usage(globex, h1, 999, key="glob3xpref")
    usage(globex, h1, 999, resource="queue:orders")
    return main


def test_without_by_the_totals_as_before(acme: TenantCtx, traffic: ApiKey) -> None:
    """The answer without ``by`` has today's five fields and counts the totals rows only:
    the per-key and per-resource rows of the same hours are not added to them."""
    hourly = acme.client.get(f"/v1/usage?{WINDOW}")
    daily = acme.client.get(f"/v1/usage?{WINDOW}&granularity=day")

    assert hourly.status_code == 200
    assert hourly.json() == {
        "results": [
            legacy("2024-05-01T01:00:00Z", 10, 100, 8, 6),
            legacy("2024-05-01T05:00:00Z", 4, 40, 4, 4),
            legacy("2024-05-02T00:00:00Z", 1, 10, 1, 1),
        ]
    }
    assert daily.json() == {
        "results": [
            legacy("2024-05-01T00:00:00Z", 14, 140, 12, 10),
            legacy("2024-05-02T00:00:00Z", 1, 10, 1, 1),
        ]
    }


def test_by_key_hourly_and_daily(acme: TenantCtx, traffic: ApiKey) -> None:
    """One entry per period and key with traffic, ordered by prefix within a period, every
    column, the key's id and name (null for a key that no longer exists); another tenant's
    keys never appear."""
    main = {"key_prefix": traffic.prefix, "key_id": str(traffic.id), "key_name": "all"}
    gone = {"key_prefix": "g0neprefix", "key_id": None, "key_name": None}
    first, second = sorted([main, gone], key=lambda k: str(k["key_prefix"]))

    hourly = acme.client.get(f"/v1/usage?{WINDOW}&by=key")
    daily = acme.client.get(f"/v1/usage?{WINDOW}&by=key&granularity=day")

    assert hourly.status_code == 200
    values = {
        traffic.prefix: (7, 70, 5, 50, 4, 1, 12),
        "g0neprefix": (3, 30, 3, 30, 2, 0, 8),
    }
    assert hourly.json() == {
        "results": [
            entry("2024-05-01T01:00:00Z", *values[str(first["key_prefix"])], **first),
            entry("2024-05-01T01:00:00Z", *values[str(second["key_prefix"])], **second),
            entry("2024-05-01T05:00:00Z", 4, 40, 4, 40, 4, 0, 9, **main),
            entry("2024-05-02T00:00:00Z", 1, 10, 1, 10, 1, 0, 3, **main),
        ]
    }
    day_values = {traffic.prefix: (11, 110, 9, 90, 8, 1, 21), "g0neprefix": values["g0neprefix"]}
    assert daily.json() == {
        "results": [
            entry("2024-05-01T00:00:00Z", *day_values[str(first["key_prefix"])], **first),
            entry("2024-05-01T00:00:00Z", *day_values[str(second["key_prefix"])], **second),
            entry("2024-05-02T00:00:00Z", 1, 10, 1, 10, 1, 0, 3, **main),
        ]
    }


def test_by_resource(acme: TenantCtx, traffic: ApiKey) -> None:
    """One entry per period and resource, ordered by "<kind>:<name>" within a period."""
    response = acme.client.get(f"/v1/usage?{WINDOW}&by=resource&granularity=day")

    assert response.status_code == 200
    assert response.json() == {
        "results": [
            entry("2024-05-01T00:00:00Z", 4, 40, 4, 40, 4, 0, 9, resource="queue:orders"),
            entry("2024-05-01T00:00:00Z", 0, 0, 8, 80, 6, 1, 15, resource="subscription:audit"),
            entry("2024-05-01T00:00:00Z", 10, 100, 0, 0, 0, 0, 5, resource="topic:events"),
        ]
    }


def test_by_for_another_tenant_shows_only_its_own(globex: TenantCtx, traffic: ApiKey) -> None:
    """Globex sees its own key and resource rows, none of Acme's."""
    by_key = globex.client.get(f"/v1/usage?{WINDOW}&by=key").json()["results"]
    by_resource = globex.client.get(f"/v1/usage?{WINDOW}&by=resource").json()["results"]

    assert [(e["key_prefix"], e["published"]) for e in by_key] == [("glob3xpref", 999)]
    assert [(e["resource"], e["published"]) for e in by_resource] == [("queue:orders", 999)]


@pytest.mark.parametrize("value", ["keys", "", "tenant", "KEY"])
def test_an_unknown_by_is_a_400(acme: TenantCtx, value: str) -> None:
    body = assert_problem(acme.client.get(f"/v1/usage?by={value}"), 400, "invalid_request")

    assert body["errors"] == [{"field": "by", "detail": "Invalid choice."}]


def test_by_is_tenant_wide_data(acme: TenantCtx, traffic: ApiKey) -> None:
    """A key without manage, or limited to resource patterns, is refused the breakdowns too
    (they name every key and resource of the tenant), with no data in the body."""
    publisher = api_client(make_key(tenant=acme.tenant, scopes=["publish"]))
    limited = api_client(
        make_key(tenant=acme.tenant, scopes=["manage"], resources=["queue:orders"])
    )
    for client in (publisher, limited):
        for by in ("key", "resource"):
            body = assert_problem(client.get(f"/v1/usage?{WINDOW}&by={by}"), 403, "forbidden")
            assert "results" not in body


def test_the_schema_describes_by() -> None:
    """The OpenAPI document lists ``by`` with its two values and the entry's fields, the
    breakdown's own ones optional."""
    schema = Client().get("/v1/schema", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/v1/usage"]["get"]
    by = next(p for p in operation["parameters"] if p["name"] == "by")
    assert by["in"] == "query"
    assert by["schema"]["enum"] == ["key", "resource"]
    entry_schema = schema["components"]["schemas"]["UsageOutput"]
    assert set(entry_schema["properties"]) == {
        "start",
        "key_prefix",
        "key_id",
        "key_name",
        "resource",
        *COLUMNS,
    }
    assert sorted(entry_schema["required"]) == [
        "acked",
        "delivered",
        "published",
        "published_bytes",
        "start",
    ]
