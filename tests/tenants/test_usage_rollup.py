"""usage_rollup: the data plane's hourly counters in Redis become UsageRecord rows per tenant,
hour and scope (the tenant's total, each API key, each resource), exactly, for active and
suspended tenants alike; a retry or a roll-up that read older counters never lowers a row;
old hours and months leave Redis, the current and previous month's quota counters stay.
usage_trim: rows older than the months kept leave PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection

from kernel.redis_client import get_redis
from kernel.redis_keys import USAGE_COUNTERS, usage_hour_field, usage_key, usage_month_field
from tenants.models import UsageRecord
from tenants.services import _usage_upsert, usage_rollup, usage_trim
from tenants.tasks import usage_rollup as usage_rollup_task
from tenants.tasks import usage_trim as usage_trim_task
from tests.engine import publish_to_queue, pull, queue_reader, settle
from tests.factories import TenantCtx, make_queue, make_tenant

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 17, 30, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
HOUR = int(NOW.timestamp()) // 3600
COLUMNS = tuple(USAGE_COUNTERS)


def at_hour(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * 3600, tz=UTC)


def rows(ctx: TenantCtx) -> list[tuple[datetime, int, int]]:
    """The tenant's totals rows: (hour, published, delivered)."""
    return [
        (r.hour, r.published, r.delivered)
        for r in UsageRecord.objects.for_tenant(ctx.tenant)
        .filter(key_prefix="", resource="")
        .order_by("hour")
    ]


def every_row(ctx: TenantCtx) -> list[tuple[Any, ...]]:
    """Every row of the tenant: (hour, key prefix, resource, then each column)."""
    return [
        (r.hour, r.key_prefix, r.resource, *(getattr(r, c) for c in COLUMNS))
        for r in UsageRecord.objects.for_tenant(ctx.tenant).order_by(
            "hour", "key_prefix", "resource"
        )
    ]


def count(ctx: TenantCtx, at_ms: int, column: str, n: int, **scope: str) -> None:
    """What the data plane's scripts do: HINCRBY the hour's field of ``column``."""
    get_redis().hincrby(usage_key(str(ctx.tenant.id)), usage_hour_field(at_ms, column, **scope), n)


# --- exact rows ---------------------------------------------------------------------------------


def test_every_tenant_with_traffic_gets_its_rows(acme: TenantCtx, globex: TenantCtx) -> None:
    """Two tenants that published (each hash also holding the monthly quota counter, which
    once crashed the roll-up after the first tenant) both get their current-hour totals row
    with exact counts; a tenant without traffic gets none."""
    quiet = make_tenant(name="Quiet")
    for ctx, n in ((acme, 3), (globex, 5)):
        make_queue(tenant=ctx.tenant, name="jobs")
        publish_to_queue(ctx, "jobs", *({"body": i} for i in range(n)))
    hour = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()) // 3600 * 3600, tz=UTC)

    usage_rollup_task()

    assert rows(acme) == [(hour, 3, 0)]
    assert rows(globex) == [(hour, 5, 0)]
    assert every_row(quiet) == []


def test_publish_pull_ack_end_to_end_is_exact(acme: TenantCtx) -> None:
    """250 messages published in five batches, 120 pulled, 70 of them acked, all through the
    engine: the hour's totals row says exactly 250 / 120 / 70, and the bytes in are the
    bodies' JSON (each body "m-000".."m-249" is 7 bytes with its quotes: 1750)."""
    make_queue(tenant=acme.tenant, name="orders")
    for batch in range(5):
        publish_to_queue(
            acme, "orders", *({"body": f"m-{batch * 50 + i:03d}"} for i in range(50)), now=NOW_MS
        )
    reader = queue_reader(acme, "orders")
    delivered = pull(reader, 100, now=NOW_MS) + pull(reader, 20, now=NOW_MS)
    assert len(delivered) == 120
    assert settle(reader, "ack", [m["ack_id"] for m in delivered[:70]], now=NOW_MS) == (70, [])

    usage_rollup(now=NOW)
    usage_rollup(now=NOW)  # a retry changes nothing

    total = UsageRecord.objects.for_tenant(acme.tenant).get(key_prefix="", resource="")
    assert total.hour == at_hour(HOUR)
    assert (total.published, total.published_bytes, total.delivered, total.acked) == (
        250,
        1750,
        120,
        70,
    )


def test_rows_per_key_and_per_resource_with_every_column(
    acme: TenantCtx, globex: TenantCtx
) -> None:
    """Fields of the tenant's total, of one key and of two resources, in two hours, become
    one row each with every column (a column the hash lacks is 0); another tenant's hash
    becomes its own rows only."""
    earlier = NOW_MS - 3_600_000
    for i, column in enumerate(COLUMNS, start=1):
        count(acme, NOW_MS, column, 10 * i)
        count(acme, NOW_MS, column, i, key="k3yprefix1")
        count(acme, NOW_MS, column, 100 + i, resource="queue:orders")
    count(acme, NOW_MS, "requests", 4, resource="subscription:audit")
    count(acme, earlier, "published", 6)
    count(acme, earlier, "published", 6, resource="topic:events")
    count(globex, NOW_MS, "published", 99)

    assert usage_rollup(now=NOW) == 7

    zeros = (0,) * (len(COLUMNS) - 1)
    assert every_row(acme) == [
        (at_hour(HOUR - 1), "", "", 6, *zeros),
        (at_hour(HOUR - 1), "", "topic:events", 6, *zeros),
        (at_hour(HOUR), "", "", 10, 20, 30, 40, 50, 60, 70),
        (at_hour(HOUR), "", "queue:orders", 101, 102, 103, 104, 105, 106, 107),
        (at_hour(HOUR), "", "subscription:audit", *zeros, 4),
        (at_hour(HOUR), "k3yprefix1", "", 1, 2, 3, 4, 5, 6, 7),
    ]
    assert every_row(globex) == [(at_hour(HOUR), "", "", 99, *zeros)]


def test_suspended_tenants_are_rolled_up(acme: TenantCtx) -> None:
    """A tenant suspended during the hour still gets the hour's traffic counted."""
    count(acme, NOW_MS, "published", 12)
    acme.tenant.is_active = False
    acme.tenant.save(update_fields=["is_active"])

    assert usage_rollup(now=NOW) == 1

    assert rows(acme) == [(at_hour(HOUR), 12, 0)]


def test_a_field_too_long_for_its_column_is_skipped(acme: TenantCtx) -> None:
    """A resource longer than the column (nothing writes one today) is left out instead of
    failing the insert of every other row."""
    count(acme, NOW_MS, "published", 3)
    count(acme, NOW_MS, "published", 3, resource="queue:" + "x" * 300)

    assert usage_rollup(now=NOW) == 1
    assert rows(acme) == [(at_hour(HOUR), 3, 0)]


# --- idempotent, never lowered -----------------------------------------------------------------


def test_rollup_overwrites_with_the_newer_totals(acme: TenantCtx) -> None:
    """The counters are totals: a second run after more traffic writes the new totals (not
    the sum of both reads); a third run with nothing new writes the same rows."""
    count(acme, NOW_MS, "published", 5)
    count(acme, NOW_MS, "published", 5, key="k3yprefix1")
    usage_rollup(now=NOW)
    count(acme, NOW_MS, "published", 2)
    count(acme, NOW_MS, "published", 2, key="k3yprefix1")

    usage_rollup(now=NOW)
    usage_rollup(now=NOW)

    assert [(r[1], r[3]) for r in every_row(acme)] == [("", 7), ("k3yprefix1", 7)]


def test_a_rollup_that_read_older_counters_and_writes_last_lowers_nothing(
    acme: TenantCtx,
) -> None:
    """Worker B read the newer counters and wrote them; worker A had read the same hour
    earlier (lower or equal in every column: counters only grow) and writes after B: every
    column keeps the larger value, none goes back to A's."""
    hour = at_hour(HOUR)
    newer = (acme.tenant.id, hour, "", "queue:orders", 9, 900, 8, 800, 7, 1, 20)
    older = (acme.tenant.id, hour, "", "queue:orders", 4, 400, 8, 300, 2, 0, 11)

    _usage_upsert([newer])
    _usage_upsert([older])

    assert every_row(acme) == [(hour, "", "queue:orders", 9, 900, 8, 800, 7, 1, 20)]


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_write_the_final_totals(acme: TenantCtx) -> None:
    """Two roll-ups in two threads (two database connections), started together while the
    counters grow between their reads, ten times over: no error, no deadlock, and after a
    last run the rows are exactly the final counters."""
    make_queue(tenant=acme.tenant, name="orders")
    errors: list[BaseException] = []

    def worker(barrier: threading.Barrier) -> None:
        try:
            barrier.wait()
            usage_rollup(now=NOW)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    for _ in range(10):
        for column in COLUMNS:
            count(acme, NOW_MS, column, 3)
            count(acme, NOW_MS, column, 2, key="k3yprefix1")
            count(acme, NOW_MS, column, 1, resource="queue:orders")
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=worker, args=(barrier,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    usage_rollup(now=NOW)

    assert errors == []
    hour = at_hour(HOUR)
    assert every_row(acme) == [
        (hour, "", "", *(30,) * len(COLUMNS)),
        (hour, "", "queue:orders", *(10,) * len(COLUMNS)),
        (hour, "k3yprefix1", "", *(20,) * len(COLUMNS)),
    ]


# --- what leaves Redis ---------------------------------------------------------------------------


def test_rollup_trims_old_hours_of_every_scope_and_old_months(acme: TenantCtx) -> None:
    """Hours older than three are written once more and dropped from Redis, the tenant's,
    the keys' and the resources' alike; the current and previous month's quota counters
    stay, the tenant's and the keys' (the publish script reads them), older months go.
    Running twice writes the same rows."""
    key = usage_key(str(acme.tenant.id))
    old_ms = NOW_MS - 5 * 3_600_000
    edge_ms = NOW_MS - 3 * 3_600_000  # three hours ago: kept
    get_redis().hset(
        key,
        mapping={
            usage_hour_field(NOW_MS, "published"): 7,
            usage_hour_field(NOW_MS, "delivered"): 2,
            usage_hour_field(NOW_MS, "published", key="k3yprefix1"): 7,
            usage_hour_field(edge_ms, "requests", resource="queue:orders"): 3,
            usage_hour_field(old_ms, "published"): 4,
            usage_hour_field(old_ms, "published", key="k3yprefix1"): 4,
            usage_hour_field(old_ms, "acked", resource="queue:orders"): 4,
            usage_month_field(2026, 12): 11,
            usage_month_field(2026, 11): 9,
            usage_month_field(2026, 9): 1,
            usage_month_field(2026, 12, key="k3yprefix1"): 11,
            usage_month_field(2026, 11, key="k3yprefix1"): 9,
            usage_month_field(2026, 10, key="k3yprefix1"): 5,
            "something-else": 1,
        },
    )

    assert usage_rollup(now=NOW) == 6
    assert usage_rollup(now=NOW) == 3

    # (hour, key prefix, resource, published, delivered, acked, requests)
    assert [(*r[:4], r[5], r[7], r[9]) for r in every_row(acme)] == [
        (at_hour(HOUR - 5), "", "", 4, 0, 0, 0),
        (at_hour(HOUR - 5), "", "queue:orders", 0, 0, 4, 0),
        (at_hour(HOUR - 5), "k3yprefix1", "", 4, 0, 0, 0),
        (at_hour(HOUR - 3), "", "queue:orders", 0, 0, 0, 3),
        (at_hour(HOUR), "", "", 7, 2, 0, 0),
        (at_hour(HOUR), "k3yprefix1", "", 7, 0, 0, 0),
    ]
    assert get_redis().hgetall(key) == {
        f"{HOUR}:p".encode(): b"7",
        f"{HOUR}:d".encode(): b"2",
        f"{HOUR}:p:k:k3yprefix1".encode(): b"7",
        f"{HOUR - 3}:r:r:queue:orders".encode(): b"3",
        b"m202612:p": b"11",
        b"m202611:p": b"9",
        b"m202612:p:k:k3yprefix1": b"11",
        b"m202611:p:k:k3yprefix1": b"9",
        b"something-else": b"1",
    }


def test_in_january_the_previous_december_stays(acme: TenantCtx) -> None:
    """The month before January is the previous year's December."""
    key = usage_key(str(acme.tenant.id))
    get_redis().hset(key, mapping={"m202701:p": 1, "m202612:p": 2, "m202611:p": 3})

    usage_rollup(now=datetime(2027, 1, 2, tzinfo=UTC))

    assert get_redis().hgetall(key) == {b"m202701:p": b"1", b"m202612:p": b"2"}


# --- retention in PostgreSQL -------------------------------------------------------------------


def test_usage_trim_keeps_this_month_and_the_thirteen_before(
    acme: TenantCtx, globex: TenantCtx
) -> None:
    """On 2026-12-15 the rows from 2025-11-01 00:00 on stay (November 2025 to December 2026),
    of every scope and tenant; the hour before goes, and anything older."""
    keep = datetime(2025, 11, 1, tzinfo=UTC)
    gone = datetime(2025, 10, 31, 23, tzinfo=UTC)
    for ctx in (acme, globex):
        for hour in (
            keep,
            gone,
            datetime(2024, 1, 1, tzinfo=UTC),
            datetime(2026, 12, 1, tzinfo=UTC),
        ):
            UsageRecord.all_tenants.create(tenant=ctx.tenant, hour=hour, published=1)
        UsageRecord.all_tenants.create(tenant=ctx.tenant, hour=gone, key_prefix="k", published=1)

    assert usage_trim(now=datetime(2026, 12, 15, 8, tzinfo=UTC), batch=2) == 6

    for ctx in (acme, globex):
        assert sorted(r.hour for r in UsageRecord.objects.for_tenant(ctx.tenant)) == [
            keep,
            datetime(2026, 12, 1, tzinfo=UTC),
        ]


def test_usage_trim_follows_the_setting(acme: TenantCtx, settings: Any) -> None:
    """USAGE_KEEP_MONTHS sets how many months before the current one stay; the task runs it."""
    settings.USAGE_KEEP_MONTHS = 1
    start_of_this = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    previous = datetime(
        start_of_this.year - (start_of_this.month == 1),
        (start_of_this.month - 2) % 12 + 1,
        1,
        tzinfo=UTC,
    )
    UsageRecord.all_tenants.create(tenant=acme.tenant, hour=previous, published=1)
    UsageRecord.all_tenants.create(tenant=acme.tenant, hour=datetime(2020, 1, 1, tzinfo=UTC))

    assert usage_trim_task() == 1

    assert [r.hour for r in UsageRecord.objects.for_tenant(acme.tenant)] == [previous]
