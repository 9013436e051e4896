"""The data plane's first step: resolving a key from the hot cache without PostgreSQL, noting
its last use at most once a minute, and refusing a revoked key in every process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from openplatform.errors import Forbidden, Unauthenticated
from openplatform.hotcache import HotCache, forget_all_local
from openplatform.redis_client import get_async_redis, get_redis
from tenants import principals, services
from tenants.models import ApiKey
from tenants.principals import (
    LAST_USED_KEY,
    aauthenticate,
    authenticate,
    key_cache,
    key_document,
    parse_authorization,
    parse_token,
    tenant_cache,
)
from tests.conftest import TenantCtx
from tests.helpers import new_key, prefix_of


def _no_postgres(ident: str) -> None:
    raise AssertionError(f"the hot path asked PostgreSQL for {ident!r}")


def forbid_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, a cache miss that would read PostgreSQL fails the test."""
    monkeypatch.setattr(key_cache, "loader", _no_postgres)
    monkeypatch.setattr(tenant_cache, "loader", _no_postgres)


@pytest.fixture
async def async_redis() -> AsyncIterator[None]:
    """Close this test's event-loop Redis pool when the test ends."""
    yield
    await get_async_redis().aclose()


# --- Parsing ----------------------------------------------------------------------------------


def test_parse_token_splits_prefix_and_secret() -> None:
    """op_<prefix>_<secret> splits at the first two underscores only."""
    assert parse_token("op_abcdefghij_s3cr3t") == ("abcdefghij", "s3cr3t")
    assert parse_token("op_abcdefghij_with_underscore") == ("abcdefghij", "with_underscore")


@pytest.mark.parametrize(
    "token", ["", "op", "op_abcdefghij", "op_abcdefghij_", "op_abc_secret", "ko_abcdefghij_s"]
)
def test_parse_token_rejects_other_shapes(token: str) -> None:
    with pytest.raises(Unauthenticated, match="Malformed API key"):
        parse_token(token)


def test_parse_authorization_accepts_any_case_of_bearer() -> None:
    """The scheme is case-insensitive (RFC 9110) and surrounding blanks are dropped."""
    assert parse_authorization("Bearer op_x") == "op_x"
    assert parse_authorization("bearer op_x ") == "op_x"
    assert parse_authorization("BEARER  op_x") == "op_x"


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer   ", "op_x"])
def test_parse_authorization_rejects_other_headers(header: str | None) -> None:
    with pytest.raises(Unauthenticated):
        parse_authorization(header)


# --- The principal ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_principal_carries_the_keys_grants(acme: TenantCtx) -> None:
    """The principal names the key, its tenant, scopes, resources and the audit actor."""
    created = new_key(acme, scopes=["consume"], resources=["queue:orders", "topic:events.*"])

    principal = authenticate(f"Bearer {created.secret}")

    assert principal.key_id == str(created.key.id)
    assert principal.prefix == created.key.prefix
    assert principal.tenant_id == str(acme.tenant.id)
    assert principal.scopes == frozenset({"consume"})
    assert principal.resources == ("queue:orders", "topic:events.*")
    assert principal.actor == f"key:{created.key.prefix}"
    assert principal.tenant["slug"] == "acme"
    assert principal.tenant["active"] is True
    principal.require_scope("consume")
    with pytest.raises(Forbidden, match="lacks the 'publish' scope"):
        principal.require_scope("publish")
    principal.require_resource("queue", "orders")
    principal.require_resource("topic", "events.signup")
    with pytest.raises(Forbidden, match="does not cover queue 'payments'"):
        principal.require_resource("queue", "payments")
    with pytest.raises(Forbidden, match="does not cover subscription 'orders'"):
        principal.require_resource("subscription", "orders")


# --- The hot path never asks PostgreSQL when warm ---------------------------------------------


@pytest.mark.django_db
def test_cold_authentication_reads_postgres_once_per_document(
    acme: TenantCtx, django_assert_num_queries
) -> None:
    """The first request of a process loads the key and the tenant: two queries. (This is
    what makes the zero below meaningful.)"""
    with django_assert_num_queries(2):
        authenticate(f"Bearer {acme.key}")


@pytest.mark.django_db
def test_warm_authentication_makes_no_query(
    acme: TenantCtx, django_assert_num_queries, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once warm, authenticating makes no PostgreSQL query."""
    authenticate(f"Bearer {acme.key}")
    forbid_postgres(monkeypatch)

    with django_assert_num_queries(0):
        principal = authenticate(f"Bearer {acme.key}")

    assert principal.tenant_id == str(acme.tenant.id)


@pytest.mark.django_db
def test_a_new_process_is_served_from_redis_without_postgres(
    acme: TenantCtx, django_assert_num_queries, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process with an empty local cache finds documents another process loaded in Redis
    and does not query PostgreSQL either."""
    authenticate(f"Bearer {acme.key}")  # "another process" fills Redis
    forget_all_local()
    forbid_postgres(monkeypatch)

    with django_assert_num_queries(0):
        principal = authenticate(f"Bearer {acme.key}")

    assert principal.key_id == str(ApiKey.objects.for_tenant(acme.tenant).get().id)


@pytest.mark.django_db(transaction=True)
async def test_warm_async_authentication_makes_no_query(
    acme: TenantCtx,
    django_assert_num_queries,
    monkeypatch: pytest.MonkeyPatch,
    async_redis: None,
) -> None:
    """The async variant is as quiet: after one warm-up call, no PostgreSQL query (and a
    cache miss that would read PostgreSQL fails the test outright)."""
    cold = await aauthenticate(f"Bearer {acme.key}")
    forbid_postgres(monkeypatch)
    # The query counter opens the connection on entry, which Django refuses on the event loop.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with django_assert_num_queries(0):
        warm = await aauthenticate(f"Bearer {acme.key}")

    assert warm == cold
    assert warm.tenant_id == str(acme.tenant.id)
    assert warm.scopes == frozenset({"publish", "consume", "manage"})


@pytest.mark.django_db(transaction=True)
async def test_async_authentication_refuses_like_sync(acme: TenantCtx, async_redis: None) -> None:
    """aauthenticate applies the same checks: a wrong secret is an unknown key, a malformed
    token is refused before any lookup."""
    with pytest.raises(Unauthenticated, match="Unknown API key"):
        await aauthenticate(f"Bearer op_{prefix_of(acme.key)}_{'x' * 40}")
    with pytest.raises(Unauthenticated, match="Malformed"):
        await aauthenticate("Bearer op_nope")


# --- Last use is noted at most once a minute --------------------------------------------------


@pytest.mark.django_db
def test_last_use_is_noted_in_redis_at_most_once_a_minute(
    acme: TenantCtx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request notes the time in the last-used hash; another within the minute does
    not write it again; one after the minute does."""
    prefix = prefix_of(acme.key)
    redis = get_redis()
    assert redis.hget(LAST_USED_KEY, prefix) is None
    before = int(time.time())

    authenticate(f"Bearer {acme.key}")

    noted = int(redis.hget(LAST_USED_KEY, prefix))
    assert before <= noted <= int(time.time())
    redis.hset(LAST_USED_KEY, prefix, 1)  # a marker: a rewrite would replace it
    authenticate(f"Bearer {acme.key}")
    assert redis.hget(LAST_USED_KEY, prefix) == b"1"

    monkeypatch.setitem(principals._last_touch, prefix, time.time() - 61)
    authenticate(f"Bearer {acme.key}")
    assert int(redis.hget(LAST_USED_KEY, prefix)) >= before
    assert redis.hlen(LAST_USED_KEY) == 1


@pytest.mark.django_db
def test_refused_requests_note_no_use(acme: TenantCtx) -> None:
    """A wrong secret leaves the key's last use untouched."""
    with pytest.raises(Unauthenticated):
        authenticate(f"Bearer op_{prefix_of(acme.key)}_{'x' * 40}")

    assert get_redis().hget(LAST_USED_KEY, prefix_of(acme.key)) is None


@pytest.mark.django_db(transaction=True)
async def test_async_last_use_is_noted_once_a_minute(acme: TenantCtx, async_redis: None) -> None:
    """aauthenticate notes last use the same way."""
    prefix = prefix_of(acme.key)
    redis = get_async_redis()

    await aauthenticate(f"Bearer {acme.key}")
    assert abs(int(await redis.hget(LAST_USED_KEY, prefix)) - time.time()) <= 2
    await redis.hset(LAST_USED_KEY, prefix, 1)
    await aauthenticate(f"Bearer {acme.key}")

    assert await redis.hget(LAST_USED_KEY, prefix) == b"1"


# --- Revocation reaches every process ---------------------------------------------------------


@pytest.mark.django_db
def test_revocation_reaches_this_process_and_a_fresh_one(
    acme: TenantCtx, django_capture_on_commit_callbacks, django_assert_num_queries
) -> None:
    """After key_revoke commits, this process refuses the key at once, and so does a process
    with an empty local cache, from Redis alone."""
    created = new_key(acme)
    header = f"Bearer {created.secret}"
    authenticate(header)

    with django_capture_on_commit_callbacks(execute=True):
        services.key_revoke(tenant=acme.tenant, key_id=str(created.key.id), actor="test")

    with pytest.raises(Unauthenticated, match="revoked"):
        authenticate(header)
    forget_all_local()
    with django_assert_num_queries(0), pytest.raises(Unauthenticated, match="revoked"):
        authenticate(header)


@pytest.mark.django_db
def test_revocation_reaches_a_process_with_a_stale_copy_within_its_ttl(
    acme: TenantCtx, settings
) -> None:
    """A process that cached the key before another process revoked it keeps its copy for at
    most HOT_CACHE_TTL_SECONDS (under a second), then reads the revocation from Redis."""
    assert settings.HOT_CACHE_TTL_SECONDS <= 1.0  # API.md: revoked everywhere within 1 s
    settings.HOT_CACHE_TTL_SECONDS = 0.2
    created = new_key(acme)
    header = f"Bearer {created.secret}"
    authenticate(header)  # this process now holds the live key
    revoked = ApiKey.objects.for_tenant(acme.tenant).get(pk=created.key.pk)
    revoked.revoked_at = revoked.created_at
    revoked.save(update_fields=["revoked_at"])
    other_process = HotCache("apikey", principals._load_key)
    other_process.push(created.key.prefix, key_document(revoked))
    started = time.monotonic()

    authenticate(header)  # still inside this process's TTL: the stale copy answers
    time.sleep(0.25)

    with pytest.raises(Unauthenticated, match="revoked"):
        authenticate(header)
    assert time.monotonic() - started < 1.0


@pytest.mark.django_db
def test_two_caches_converge_after_a_push(acme: TenantCtx, settings) -> None:
    """Two processes' caches of one key: a push from one drops its own copy at once, and the
    other's copy expires after the TTL."""
    settings.HOT_CACHE_TTL_SECONDS = 0.1
    prefix = prefix_of(acme.key)
    first = HotCache("apikey", principals._load_key)
    second = HotCache("apikey", principals._load_key)
    assert first.get(prefix)["revoked"] is False
    assert second.get(prefix)["revoked"] is False
    key = ApiKey.objects.for_tenant(acme.tenant).get()
    key.revoked_at = key.created_at
    key.save(update_fields=["revoked_at"])

    first.push(prefix, key_document(key))

    assert first.get(prefix)["revoked"] is True
    assert second.get(prefix)["revoked"] is False
    time.sleep(0.15)
    assert second.get(prefix)["revoked"] is True


@pytest.mark.django_db
def test_unknown_prefix_is_cached_as_a_miss(acme: TenantCtx, django_assert_num_queries) -> None:
    """An unknown prefix is looked up once; repeats are refused from the cache, so guessing
    cannot make every request query PostgreSQL."""
    header = f"Bearer op_zzzzzzzzzz_{'x' * 40}"
    with django_assert_num_queries(1), pytest.raises(Unauthenticated):
        authenticate(header)
    forget_all_local()

    with django_assert_num_queries(0), pytest.raises(Unauthenticated):
        authenticate(header)

    assert get_redis().ttl("op:cache:apikey:zzzzzzzzzz") <= 30
