"""flush_key_last_used: the last-used times the data plane notes in Redis reach PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kernel.redis_client import get_redis
from tenants.models import ApiKey
from tenants.principals import LAST_USED_KEY, authenticate
from tenants.tasks import flush_key_last_used
from tests.factories import TenantCtx, make_key
from tests.helpers import key_of, prefix_of

pytestmark = pytest.mark.django_db


def test_flush_writes_last_used_and_empties_the_hash(acme: TenantCtx, globex: TenantCtx) -> None:
    """Each noted key gets last_used_at equal to the noted second, the hash is gone
    afterwards, and an unused key keeps last_used_at empty."""
    unused = make_key(tenant=acme.tenant, name="unused")
    authenticate(f"Bearer {acme.key}")
    authenticate(f"Bearer {globex.key}")
    redis = get_redis()
    noted = {
        prefix: int(redis.hget(LAST_USED_KEY, prefix))
        for prefix in (prefix_of(acme.key), prefix_of(globex.key))
    }

    assert flush_key_last_used() == 2

    for ctx in (acme, globex):
        assert key_of(ctx).last_used_at == datetime.fromtimestamp(noted[prefix_of(ctx.key)], tz=UTC)
    assert ApiKey.objects.for_tenant(acme.tenant).get(pk=unused.key.pk).last_used_at is None
    assert redis.exists(LAST_USED_KEY) == 0


def test_flush_shows_in_the_api(acme: TenantCtx) -> None:
    """After a flush, GET /v1/keys/{id} reports the key's last use as RFC 3339 UTC."""
    get_redis().hset(LAST_USED_KEY, prefix_of(acme.key), 1_700_000_000)

    flush_key_last_used()

    body = acme.client.get(f"/v1/keys/{key_of(acme).id}").json()
    assert body["last_used_at"] == "2023-11-14T22:13:20Z"


def test_flush_with_nothing_noted_changes_nothing(acme: TenantCtx) -> None:
    """An empty hash flushes nothing and writes no row."""
    assert flush_key_last_used() == 0

    assert key_of(acme).last_used_at is None


def test_flush_ignores_prefixes_of_deleted_keys(acme: TenantCtx) -> None:
    """A noted prefix with no row left is dropped quietly; the others are written."""
    redis = get_redis()
    redis.hset(
        LAST_USED_KEY, mapping={"gonegonego": 1_700_000_000, prefix_of(acme.key): 1_700_000_060}
    )

    assert flush_key_last_used() == 1

    assert key_of(acme).last_used_at == datetime.fromtimestamp(1_700_000_060, tz=UTC)
    assert redis.exists(LAST_USED_KEY) == 0


def test_flush_twice_is_idempotent(acme: TenantCtx) -> None:
    """A second flush with nothing new noted leaves last_used_at as the first one wrote it."""
    get_redis().hset(LAST_USED_KEY, prefix_of(acme.key), 1_700_000_000)
    flush_key_last_used()

    assert flush_key_last_used() == 0

    assert key_of(acme).last_used_at == datetime.fromtimestamp(1_700_000_000, tz=UTC)
