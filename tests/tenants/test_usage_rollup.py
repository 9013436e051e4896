"""usage_rollup: the data plane's hourly counters in Redis become UsageRecord rows for every
tenant with traffic; old hours and months leave Redis, the current month's quota counter stays."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kernel.redis_client import get_redis
from kernel.redis_keys import usage_key
from tenants.models import UsageRecord
from tenants.services import usage_rollup
from tenants.tasks import usage_rollup as usage_rollup_task
from tests.engine import publish_to_queue
from tests.factories import TenantCtx, make_queue, make_tenant

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 17, 30, tzinfo=UTC)
HOUR = int(NOW.timestamp()) // 3600


def rows(ctx: TenantCtx) -> list[tuple[datetime, int, int]]:
    return [
        (r.hour, r.published, r.delivered)
        for r in UsageRecord.objects.for_tenant(ctx.tenant).order_by("hour")
    ]


def test_every_tenant_with_traffic_gets_its_rows(acme: TenantCtx, globex: TenantCtx) -> None:
    """Two tenants that published (each hash also holding the monthly quota counter, which
    once crashed the roll-up after the first tenant) both get their current-hour row with
    exact counts; a tenant without traffic gets none."""
    quiet = make_tenant(name="Quiet")
    for ctx, count in ((acme, 3), (globex, 5)):
        make_queue(tenant=ctx.tenant, name="jobs")
        publish_to_queue(ctx, "jobs", *({"body": n} for n in range(count)))
    hour = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()) // 3600 * 3600, tz=UTC)

    assert usage_rollup_task() == 2

    assert rows(acme) == [(hour, 3, 0)]
    assert rows(globex) == [(hour, 5, 0)]
    assert rows(quiet) == []


def test_rollup_overwrites_trims_old_hours_and_months(acme: TenantCtx) -> None:
    """Hours older than three are written once more and dropped from Redis; the current and
    previous month's quota counters stay (the publish script reads them), older months go.
    Running twice writes the same rows."""
    key = usage_key(str(acme.tenant.id))
    get_redis().hset(
        key,
        mapping={
            f"{HOUR}:p": 7,
            f"{HOUR}:d": 2,
            f"{HOUR - 5}:p": 4,
            "m202612:p": 11,
            "m202611:p": 9,
            "m202609:p": 1,
        },
    )

    assert usage_rollup(now=NOW) == 2
    assert usage_rollup(now=NOW) == 1

    assert rows(acme) == [
        (datetime.fromtimestamp((HOUR - 5) * 3600, tz=UTC), 4, 0),
        (datetime.fromtimestamp(HOUR * 3600, tz=UTC), 7, 2),
    ]
    assert get_redis().hgetall(key) == {
        f"{HOUR}:p".encode(): b"7",
        f"{HOUR}:d".encode(): b"2",
        b"m202612:p": b"11",
        b"m202611:p": b"9",
    }
