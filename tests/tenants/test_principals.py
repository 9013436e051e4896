"""The data plane's first step: resolving a key from the hot cache without PostgreSQL, noting
its last use at most once a minute, and refusing a revoked key in every process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from kernel.errors import Forbidden, RateLimited, Unauthenticated
from kernel.hotcache import HotCache, forget_all_local
from kernel.redis_client import get_async_redis, get_redis
from tenants import principals, services
from tenants.authority import OPERATOR
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
from tests.factories import TenantCtx, make_key
from tests.helpers import key_of, prefix_of


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
    created = make_key(
        tenant=acme.tenant, scopes=["consume"], resources=["queue:orders", "topic:events.*"]
    )

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
    created = make_key(tenant=acme.tenant)
    header = f"Bearer {created.secret}"
    authenticate(header)

    with django_capture_on_commit_callbacks(execute=True):
        services.key_revoke(
            authority=OPERATOR, tenant=acme.tenant, key_id=str(created.key.id), actor="test"
        )

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
    created = make_key(tenant=acme.tenant)
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
    """An unknown prefix is looked up once (and, the key index being cold, the index is built
    from PostgreSQL on the way); repeats are refused from the cache, so guessing cannot make
    every request query PostgreSQL."""
    header = f"Bearer op_zzzzzzzzzz_{'x' * 40}"
    with django_assert_num_queries(2), pytest.raises(Unauthenticated):
        authenticate(header)
    forget_all_local()

    with django_assert_num_queries(0), pytest.raises(Unauthenticated):
        authenticate(header)

    assert get_redis().ttl("op:cache:apikey:zzzzzzzzzz") <= 30


# --- Unknown keys are refused without PostgreSQL: the key index --------------------------------


def _unknown(n: int) -> str:
    """A well-formed token whose prefix no key has (prefixes are random letters and digits)."""
    return f"Bearer op_{n:0>10}_{'x' * 40}"


@pytest.mark.django_db
def test_once_the_index_is_built_no_unknown_prefix_queries_postgres(
    acme: TenantCtx, django_assert_num_queries
) -> None:
    """The first unknown prefix builds the index of every prefix (one query besides its own
    lookup); after that, fifty other unknown prefixes, each new to every cache, are refused
    without a single query, and the valid key still works."""
    with django_assert_num_queries(2), pytest.raises(Unauthenticated):
        authenticate(_unknown(0))
    assert get_redis().smembers(principals.KEY_INDEX) == {prefix_of(acme.key).encode(), b"!"}
    assert 0 < get_redis().ttl(principals.KEY_INDEX) <= principals.key_index.ttl

    with django_assert_num_queries(0):
        for n in range(1, 51):
            forget_all_local()
            with pytest.raises(Unauthenticated, match="Unknown API key"):
                authenticate(_unknown(n))

    assert authenticate(f"Bearer {acme.key}").tenant_id == str(acme.tenant.id)


@pytest.fixture
async def loader_thread_db() -> AsyncIterator[None]:
    """Close the connection the hot cache's loader opened in its worker thread."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.mark.django_db(transaction=True)
async def test_async_unknown_prefixes_make_no_query_once_warm(
    acme: TenantCtx,
    django_assert_num_queries,
    monkeypatch: pytest.MonkeyPatch,
    async_redis: None,
    loader_thread_db: None,
) -> None:
    """The data plane's path is as cheap: warm, a new unknown prefix makes no query."""
    with pytest.raises(Unauthenticated):
        await aauthenticate(_unknown(0))
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with django_assert_num_queries(0):
        for n in range(1, 21):
            with pytest.raises(Unauthenticated, match="Unknown API key"):
                await aauthenticate(_unknown(n))


@pytest.mark.django_db
def test_a_key_created_after_the_index_is_found(
    acme: TenantCtx, django_capture_on_commit_callbacks
) -> None:
    """key_create's push adds the new prefix to the index, so the key works even once its
    cached document is gone (expired from Redis)."""
    with pytest.raises(Unauthenticated):
        authenticate(_unknown(0))  # builds the index
    with django_capture_on_commit_callbacks(execute=True):
        created = make_key(tenant=acme.tenant)
    get_redis().delete(f"op:cache:apikey:{created.key.prefix}")
    forget_all_local()

    assert authenticate(f"Bearer {created.secret}").key_id == str(created.key.id)


@pytest.mark.django_db
def test_an_index_without_its_marker_is_not_trusted(acme: TenantCtx) -> None:
    """A set that only pushes filled (Redis was emptied since the last build) has no
    completeness marker: a prefix missing from it is looked up in PostgreSQL, found, and
    the index is built whole on the next unknown prefix."""
    prefix = prefix_of(acme.key)
    principals.key_index.add("aaaaaaaaaa")  # a push; the set has no marker
    forget_all_local()

    assert authenticate(f"Bearer {acme.key}").prefix == prefix
    with pytest.raises(Unauthenticated):
        authenticate(_unknown(0))
    assert get_redis().sismember(principals.KEY_INDEX, prefix)
    assert get_redis().sismember(principals.KEY_INDEX, "aaaaaaaaaa")  # merged, not replaced


@pytest.mark.django_db
def test_a_key_the_index_missed_is_found_after_the_index_expires(acme: TenantCtx) -> None:
    """A key that reached PostgreSQL without a push (say, an operator's direct insert) is not
    in a built index; the index expires after KeyIndex.ttl, and the next build has it."""
    with pytest.raises(Unauthenticated):
        authenticate(_unknown(0))
    # on_commit is not run: no push, no index entry, no document
    created = make_key(tenant=acme.tenant)
    forget_all_local()
    with pytest.raises(Unauthenticated, match="Unknown API key"):
        authenticate(f"Bearer {created.secret}")

    get_redis().delete(principals.KEY_INDEX, f"op:cache:apikey:{created.key.prefix}")  # expiry
    forget_all_local()
    with pytest.raises(Unauthenticated):
        authenticate(_unknown(1))  # the index is built again

    assert authenticate(f"Bearer {created.secret}").key_id == str(created.key.id)


def test_a_build_that_lost_members_is_not_published() -> None:
    """The publishing script merges the build only when it holds every prefix read (plus the
    marker); a short one is dropped and the live index keeps what it had."""
    redis = get_redis()

    def publish(*, keys: list[str], args: list[int]) -> int:
        return int(principals._PUBLISH_INDEX.run(redis, keys, args))

    redis.sadd(principals.KEY_INDEX, "livelivel1")
    redis.sadd(principals.KEY_INDEX_BUILD, "builtbuilt", "!")

    assert publish(keys=[principals.KEY_INDEX, principals.KEY_INDEX_BUILD], args=[3, 60]) == 0
    assert redis.smembers(principals.KEY_INDEX) == {b"livelivel1"}
    assert not redis.exists(principals.KEY_INDEX_BUILD)

    redis.sadd(principals.KEY_INDEX_BUILD, "builtbuilt", "!")
    assert publish(keys=[principals.KEY_INDEX, principals.KEY_INDEX_BUILD], args=[2, 60]) == 1
    assert redis.smembers(principals.KEY_INDEX) == {b"livelivel1", b"builtbuilt", b"!"}
    assert 0 < redis.ttl(principals.KEY_INDEX) <= 60


@pytest.mark.django_db
def test_a_prefix_no_key_can_have_is_refused_before_any_lookup(
    acme: TenantCtx, django_assert_num_queries
) -> None:
    """Prefixes are lower-case letters and digits: anything else is unknown at once, with
    no query and nothing written to Redis."""
    with django_assert_num_queries(0), pytest.raises(Unauthenticated, match="Unknown API key"):
        authenticate(f"Bearer op_ZZZZ{{}}*..._{'x' * 40}")
    assert get_redis().keys("op:cache:*") == []


# --- Failed authentications per address ---------------------------------------------------------


@pytest.fixture
def limits(settings) -> Any:
    """Small limits; this process forgets which addresses it limited when the test ends."""
    settings.AUTH_FAILURES_PER_SECOND = 0
    settings.AUTH_FAILURES_PER_MINUTE = 3
    _steady_minute()
    yield settings
    principals.failure_limiter.forget_local()


def _steady_minute() -> None:
    """Start away from a minute boundary, so a test's failures fall in one window."""
    if time.time() % 60 > 57:
        time.sleep(60 - time.time() % 60 + 0.05)


BAD = f"Bearer op_zzzzzzzzzz_{'x' * 40}"


@pytest.mark.django_db
def test_failures_past_the_limit_are_rate_limited(acme: TenantCtx, limits: Any) -> None:
    """Three refusals from one address are 401s; the fourth and every later one is a 429
    with Retry-After until the minute ends, whatever the key."""
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            authenticate(BAD, address="203.0.113.7")

    with pytest.raises(RateLimited) as refused:
        authenticate(BAD, address="203.0.113.7")
    assert 1 <= refused.value.retry_after <= 60
    assert refused.value.status == 429
    assert refused.value.code == "rate_limited"
    with pytest.raises(RateLimited):
        authenticate("Bearer not-a-key", address="203.0.113.7")
    counter = principals.auth_failure_key("203.0.113.7", "m", int(time.time()) // 60)
    assert get_redis().get(counter) == b"4"  # once limited, this process stops counting
    assert 0 < get_redis().ttl(counter) <= 61


@pytest.mark.django_db
def test_the_per_second_window(acme: TenantCtx, limits: Any) -> None:
    """With a per-second limit, the failure past it is a 429 with Retry-After 1."""
    limits.AUTH_FAILURES_PER_SECOND = 2
    limits.AUTH_FAILURES_PER_MINUTE = 0
    time.sleep(1 - time.time() % 1)  # the start of a second: the three calls fit in it
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            authenticate(BAD, address="203.0.113.8")
    with pytest.raises(RateLimited) as refused:
        authenticate(BAD, address="203.0.113.8")
    assert refused.value.retry_after == 1


@pytest.mark.django_db
def test_a_valid_key_from_a_limited_address_is_served(acme: TenantCtx, limits: Any) -> None:
    """The limit is on failures: the right key from that address still authenticates (from
    what Redis holds), and other addresses are not limited at all."""
    principals.key_cache.push(prefix_of(acme.key), key_document(key_of(acme)))
    for _ in range(4):
        with pytest.raises((Unauthenticated, RateLimited)):
            authenticate(BAD, address="203.0.113.9")

    assert authenticate(f"Bearer {acme.key}", address="203.0.113.9").prefix == prefix_of(acme.key)
    with pytest.raises(Unauthenticated):
        authenticate(BAD, address="198.51.100.1")


@pytest.mark.django_db
def test_a_limited_address_costs_postgres_nothing(
    acme: TenantCtx, limits: Any, django_assert_num_queries
) -> None:
    """While limited, an address's unknown keys are refused from Redis alone, even with a
    cold index and cold local caches: no query."""
    for _ in range(4):
        with pytest.raises((Unauthenticated, RateLimited)):
            authenticate(BAD, address="203.0.113.10")
    get_redis().delete(principals.KEY_INDEX)
    forget_all_local()

    with django_assert_num_queries(0):
        for n in range(10):
            with pytest.raises(RateLimited):
                authenticate(_unknown(n), address="203.0.113.10")


@pytest.mark.django_db(transaction=True)
async def test_async_failures_are_limited_the_same_way(
    acme: TenantCtx, limits: Any, async_redis: None, loader_thread_db: None
) -> None:
    """aauthenticate counts and limits like authenticate."""
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await aauthenticate(BAD, address="203.0.113.11")
    with pytest.raises(RateLimited):
        await aauthenticate(BAD, address="203.0.113.11")
    principal = await aauthenticate(f"Bearer {acme.key}", address="203.0.113.11")
    assert principal.tenant_id == str(acme.tenant.id)


@pytest.mark.django_db
def test_an_ipv6_slash_64_shares_one_budget(acme: TenantCtx, limits: Any) -> None:
    """Addresses of one IPv6 /64 count together (a host picks from its whole /64)."""
    for host in range(3):
        with pytest.raises(Unauthenticated):
            authenticate(BAD, address=f"2001:db8:1:2::{host + 1}")
    with pytest.raises(RateLimited):
        authenticate(BAD, address="2001:db8:1:2:ffff::9")
    with pytest.raises(Unauthenticated):
        authenticate(BAD, address="2001:db8:1:3::1")


def test_address_buckets() -> None:
    assert principals.address_bucket("203.0.113.7") == "203.0.113.7"
    assert principals.address_bucket("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert principals.address_bucket("::ffff:203.0.113.7") == "203.0.113.7"
    assert principals.address_bucket("") == "unknown"


# --- The client's address -----------------------------------------------------------------------


def test_the_address_is_remote_addr_by_default(settings) -> None:
    """With no trusted proxy, X-Forwarded-For is ignored: anyone can write it."""
    settings.TRUSTED_PROXIES = []
    meta = {"REMOTE_ADDR": "198.51.100.4", "HTTP_X_FORWARDED_FOR": "203.0.113.1"}
    assert principals.client_address(meta) == "198.51.100.4"


def test_a_trusted_proxy_names_the_client(settings) -> None:
    """From a trusted proxy, the address is the nearest hop that is not a trusted proxy: a
    client's own (forged) hops further left are never taken."""
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "192.0.2.1"]
    via = {"REMOTE_ADDR": "10.1.2.3"}
    assert (
        principals.client_address({**via, "HTTP_X_FORWARDED_FOR": "6.6.6.6, 198.51.100.4"})
        == "198.51.100.4"
    )
    assert (
        principals.client_address({**via, "HTTP_X_FORWARDED_FOR": "198.51.100.4, 192.0.2.1"})
        == "198.51.100.4"
    )
    assert principals.client_address({**via, "HTTP_X_FORWARDED_FOR": "2001:db8::1"}) == (
        "2001:db8::1"
    )


def test_forwarded_for_fails_closed(settings) -> None:
    """A header that is not addresses, no header, or a header from an untrusted peer: the
    peer's own address."""
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    via = {"REMOTE_ADDR": "10.1.2.3"}
    assert principals.client_address({**via, "HTTP_X_FORWARDED_FOR": "nonsense"}) == "10.1.2.3"
    assert principals.client_address({**via, "HTTP_X_FORWARDED_FOR": "1.2.3.4, x"}) == "10.1.2.3"
    assert principals.client_address(via) == "10.1.2.3"
    outside = {"REMOTE_ADDR": "198.51.100.4", "HTTP_X_FORWARDED_FOR": "203.0.113.1"}
    assert principals.client_address(outside) == "198.51.100.4"
