"""Who is calling: an API key resolved to its tenant, scopes and resource patterns.

This is the data plane's first step on every request, so it never queries PostgreSQL when
warm: keys and tenants come from the hot cache, and the secret is checked against the cached
SHA-256 hash in constant time.

Refusals are cheap too, so a flood of bad keys costs neither PostgreSQL nor much else:

- A token that is not ``op_<prefix>_<secret>``, or whose prefix has a character no prefix
  has, is refused before any lookup.
- A prefix that no key has is answered from :class:`KeyIndex`, a Redis set of every prefix
  there is: a miss in the hot cache asks PostgreSQL only when the index has the prefix (or is
  being rebuilt). Repeats are refused from the hot cache's copy of the miss.
- A revoked or expired key is a cached document like any other.
- Failed authentications are counted per client address (:class:`FailureLimiter`); past the
  limits the address is answered 429 with Retry-After until the window ends. A valid key is
  still served from a limited address, so a neighbour behind the same NAT who floods bad keys
  does not take down a good client; the valid key's warm path gains nothing (the counters are
  touched only after a refusal).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction
from redis.exceptions import RedisError

from kernel.errors import Forbidden, RateLimited, Unauthenticated
from kernel.hotcache import HotCache, register
from kernel.redis_client import get_async_redis, get_redis
from kernel.redis_keys import (
    KEY_INDEX,
    KEY_INDEX_BUILD,
    KEY_INDEX_LOCK,
    LAST_USED,
    auth_failure_key,
    cache_key,
)
from kernel.redis_scripts import Script
from tenants.models import ApiKey, Tenant
from tenants.quotas import KEY_QUOTAS, effective_quotas

logger = logging.getLogger(__name__)

KEY_PREFIX_LEN = 10
KEY_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
LAST_USED_KEY = LAST_USED
LAST_USED_EVERY_SECONDS = 60

_PREFIX_CHARS = frozenset(KEY_PREFIX_ALPHABET)


def hash_secret(secret: str) -> str:
    """SHA-256 of a key's secret. Secrets are 192 random bits, so a fast hash is enough:
    there is nothing to brute-force that a slow hash would protect."""
    return hashlib.sha256(secret.encode()).hexdigest()


# --- which prefixes exist ---------------------------------------------------------------------

# A member no prefix can be (prefixes have KEY_PREFIX_LEN characters): present only in an index
# built whole from PostgreSQL.
_COMPLETE = "!"

_PUBLISH_INDEX = Script(Path(__file__).parent / "lua" / "publish_index.lua")


class KeyIndex:
    """Every API key prefix in PostgreSQL, as a Redis set, so an unknown prefix is refused
    without a query.

    A new key's prefix is added when its hot-cache document is pushed (``key_create`` does
    that on commit, see :class:`KeyCache`). The set is rebuilt from PostgreSQL when it lacks
    the completeness marker (Redis was emptied, or it expired) and a lookup found nothing;
    it expires every ``ttl`` seconds, so a key that reached PostgreSQL some other way is
    found by the next rebuild and stale prefixes (deleted tenants) go. Until the marker is
    there, every lookup goes to PostgreSQL as before: an incomplete index is never trusted.
    """

    def __init__(self, *, ttl: int = 900, batch: int = 10_000) -> None:
        self.ttl = ttl
        self.batch = batch

    def lookup(self, prefix: str) -> tuple[bool, bool]:
        """(whether the index has ``prefix``, whether the index is complete)."""
        member, complete = get_redis().smismember(KEY_INDEX, [prefix, _COMPLETE])
        return bool(member), bool(complete)

    async def alookup(self, prefix: str) -> tuple[bool, bool]:
        """:meth:`lookup` for async code."""
        member, complete = await get_async_redis().smismember(KEY_INDEX, [prefix, _COMPLETE])
        return bool(member), bool(complete)

    def add(self, prefix: str) -> None:
        get_redis().sadd(KEY_INDEX, prefix)

    def rebuild(self) -> bool:
        """Read every prefix from PostgreSQL and publish the index (one process at a time;
        the others carry on asking PostgreSQL meanwhile). Returns whether it was published."""
        redis = get_redis()
        if not redis.set(KEY_INDEX_LOCK, "1", nx=True, ex=120):
            return False
        try:
            redis.delete(KEY_INDEX_BUILD)
            count, last = 0, ""
            while True:  # in pages by prefix: bounded memory, no server-side cursor
                page = list(
                    ApiKey.all_tenants.filter(prefix__gt=last)
                    .order_by("prefix")
                    .values_list("prefix", flat=True)[: self.batch]
                )
                if page:
                    redis.sadd(KEY_INDEX_BUILD, *page)
                    count, last = count + len(page), page[-1]
                if len(page) < self.batch:
                    break
            pipe = redis.pipeline(transaction=False)
            pipe.sadd(KEY_INDEX_BUILD, _COMPLETE)
            pipe.expire(KEY_INDEX_BUILD, 120)  # a build whose process died goes away
            pipe.execute()
            published = bool(
                _PUBLISH_INDEX.run(redis, [KEY_INDEX, KEY_INDEX_BUILD], [count + 1, self.ttl])
            )
        finally:
            redis.delete(KEY_INDEX_LOCK)
        if not published:
            logger.warning("the API key index build lost members; PostgreSQL stays in use")
        return published


key_index = KeyIndex()


def _load_key(prefix: str) -> dict[str, Any] | None:
    member, complete = key_index.lookup(prefix)
    if complete and not member:
        return None
    key = ApiKey.all_tenants.filter(prefix=prefix).first()
    if key is None and not complete:
        key_index.rebuild()  # someone sends unknown prefixes: make the next ones cheap
    return key_document(key) if key else None


def _load_tenant(tenant_id: str) -> dict[str, Any] | None:
    tenant = Tenant.objects.select_related("plan").filter(pk=tenant_id).first()
    return tenant_document(tenant) if tenant else None


def key_document(key: ApiKey) -> dict[str, Any]:
    """What the hot cache keeps of a key (never the secret itself), with the key's own limits
    (``limits``: KEY_QUOTAS, None unlimited). The data plane holds a key to these and its
    tenant to the tenant's, each counted separately, so both always hold."""
    return {
        "id": str(key.id),
        "tenant_id": str(key.tenant_id),
        "prefix": key.prefix,
        "hash": key.secret_hash,
        "scopes": list(key.scopes),
        "resources": list(key.resources),
        "expires_at": key.expires_at.timestamp() if key.expires_at else None,
        "revoked": key.revoked_at is not None,
        "limits": {name: getattr(key, name) for name in KEY_QUOTAS},
    }


def tenant_document(tenant: Tenant) -> dict[str, Any]:
    """What the hot cache keeps of a tenant: every quota of
    :func:`tenants.quotas.effective_quotas` (plan, then the operator's override) by name,
    None for unlimited, at the top level (the data plane reads them there)."""
    quotas = effective_quotas(tenant)
    doc: dict[str, Any] = {
        "id": str(tenant.id),
        "slug": tenant.slug,
        "active": tenant.is_active,
    }
    doc.update({name: effective.value for name, effective in quotas.items()})
    if doc["max_message_bytes"] is None:  # unlimited here: the request body's limit holds
        doc["max_message_bytes"] = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2**31
    return doc


def tenant_refresh(tenant: Tenant | str) -> None:
    """Push the tenant's document to the hot cache once the current transaction commits (at
    once outside one), so a change of its plan, of the plan's quotas, of its overrides or of
    its state reaches the data plane within one local TTL. Call it after any such write; for
    every tenant of a changed plan, :func:`plan_refresh`."""
    tenant_id = str(tenant.pk if isinstance(tenant, Tenant) else tenant)

    def push() -> None:
        row = Tenant.objects.select_related("plan").filter(pk=tenant_id).first()
        tenant_cache.push(tenant_id, tenant_document(row) if row else None)

    transaction.on_commit(push)


def plan_refresh(plan: Any) -> None:
    """:func:`tenant_refresh` for every tenant of ``plan`` (its quotas changed)."""
    for tenant_id in Tenant.objects.filter(plan=plan).values_list("pk", flat=True):
        tenant_refresh(str(tenant_id))


def key_refresh(key: ApiKey) -> None:
    """Push ``key``'s document (its limits, scopes, state) once the transaction commits."""
    doc = key_document(key)
    transaction.on_commit(lambda: key_cache.push(key.prefix, doc))


class KeyCache(HotCache):
    """The hot cache of keys; a pushed key also enters :data:`key_index`."""

    def push(self, ident: str, doc: dict[str, Any] | None) -> None:
        super().push(ident, doc)
        if doc is not None:
            key_index.add(ident)


key_cache = register(KeyCache("apikey", _load_key))
tenant_cache = register(HotCache("tenant", _load_tenant))


# --- the client's address ---------------------------------------------------------------------


@lru_cache(maxsize=16)
def _networks(
    proxies: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _trusted(address: str, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(meta: Mapping[str, Any]) -> str:
    """The address a request came from, for throttling: ``REMOTE_ADDR``, unless that is one
    of ``settings.TRUSTED_PROXIES``; then the nearest ``X-Forwarded-For`` hop that is not a
    trusted proxy. Fails closed: a hop that is not an address, or no header at all, means the
    proxy's own address (so a forged header never buys a fresh budget).

    (Behind the shipped gunicorn config, uvicorn already puts the client from
    X-Forwarded-For into REMOTE_ADDR for FORWARDED_ALLOW_IPS; TRUSTED_PROXIES is for a server
    that does not.)"""
    remote = str(meta.get("REMOTE_ADDR") or "")
    proxies = settings.TRUSTED_PROXIES
    if not proxies:
        return remote
    networks = _networks(tuple(proxies))
    if not _trusted(remote, networks):
        return remote
    for hop in reversed(str(meta.get("HTTP_X_FORWARDED_FOR") or "").split(",")):
        try:
            ip = ipaddress.ip_address(hop.strip())
        except ValueError:
            return remote
        if not any(ip in network for network in networks):
            return str(ip)
    return remote


def request_address(request: Any) -> str:
    """:func:`client_address` of a Django or DRF request (django-axes' AXES_CLIENT_IP_CALLABLE)."""
    return client_address(request.META)


@lru_cache(maxsize=65_536)
def address_bucket(address: str) -> str:
    """What failures are counted under: the address itself for IPv4, its /64 for IPv6 (one
    host usually has a whole /64 to pick addresses from)."""
    if ":" not in address:
        return address or "unknown"
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


# --- failed authentications per address -------------------------------------------------------


class FailureLimiter:
    """Counts failed authentications per address bucket in two fixed windows, one second and
    one minute (``AUTH_FAILURES_PER_SECOND`` / ``AUTH_FAILURES_PER_MINUTE``; 0 turns a window
    off). The counters live in Redis, shared by every process; the failure that goes past a
    limit is answered 429, and so is every later failure from that bucket until the window
    ends: this process remembers the bucket as limited until then and stops counting it.

    Redis being unreachable never turns a 401 into a 5xx here: the refusal stands uncounted.
    """

    def __init__(self, *, max_remembered: int = 100_000) -> None:
        self._limited: dict[str, float] = {}  # bucket -> wall-clock end of its window
        self._max = max_remembered

    def retry_after(self, bucket: str) -> int | None:
        """Seconds until ``bucket`` may fail again, or None when it is not limited."""
        until = self._limited.get(bucket)
        if until is None:
            return None
        left = until - time.time()
        if left <= 0:
            self._limited.pop(bucket, None)
            return None
        return max(1, math.ceil(left))

    @property
    def any_limited(self) -> bool:
        return bool(self._limited)

    def forget_local(self) -> None:
        """Drop this process's memory of limited addresses (tests; the counters stay)."""
        self._limited.clear()

    def _plan(self, bucket: str, now: float) -> list[tuple[str, int]]:
        second = int(now)
        return [
            (auth_failure_key(bucket, "s", second), 2),
            (auth_failure_key(bucket, "m", second // 60), 61),
        ]

    def _judge(self, bucket: str, now: float, counts: list[int]) -> int | None:
        per_second = settings.AUTH_FAILURES_PER_SECOND
        per_minute = settings.AUTH_FAILURES_PER_MINUTE
        until, level = 0.0, logging.INFO
        if per_second and counts[0] > per_second:
            until = float(int(now) + 1)
        if per_minute and counts[1] > per_minute:
            # at most once a minute per address and process: a warning is worth reading
            until, level = float((int(now) // 60 + 1) * 60), logging.WARNING
        if not until:
            return None
        if len(self._limited) >= self._max:  # bound memory under a flood of addresses
            self._limited.clear()
        self._limited[bucket] = until
        logger.log(
            level,
            "API key failures from %s over the limit (%d this second, %d this minute); "
            "answering 429 until %s UTC",
            bucket,
            counts[0],
            counts[1],
            time.strftime("%H:%M:%S", time.gmtime(until)),
        )
        return max(1, math.ceil(until - now))

    def fail(self, bucket: str) -> int | None:
        """Count one failure; returns Retry-After seconds when the bucket is now limited."""
        now = time.time()
        pipe = get_redis().pipeline(transaction=False)
        for key, ttl in self._plan(bucket, now):
            pipe.incr(key)
            pipe.expire(key, ttl)
        try:
            replies = pipe.execute()
        except RedisError:
            logger.debug("could not count an authentication failure", exc_info=True)
            return None
        return self._judge(bucket, now, replies[0::2])

    async def afail(self, bucket: str) -> int | None:
        """:meth:`fail` for async code."""
        now = time.time()
        pipe = get_async_redis().pipeline(transaction=False)
        for key, ttl in self._plan(bucket, now):
            pipe.incr(key)
            pipe.expire(key, ttl)
        try:
            replies = await pipe.execute()
        except RedisError:
            logger.debug("could not count an authentication failure", exc_info=True)
            return None
        return self._judge(bucket, now, replies[0::2])


failure_limiter = FailureLimiter()


def _rate_limited(retry_after: int) -> RateLimited:
    return RateLimited(
        "Too many failed authentications from this address; "
        f"try again in {retry_after} second{'s' if retry_after != 1 else ''}.",
        retry_after=retry_after,
    )


# --- the principal ----------------------------------------------------------------------------


_NO_KEY_LIMITS: Mapping[str, int | None] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``tenant`` is the cached tenant document."""

    key_id: str
    prefix: str
    tenant_id: str
    scopes: frozenset[str]
    resources: tuple[str, ...]
    tenant: dict[str, Any]
    actor: str
    #: the key's own limits (key_document's ``limits``); empty for a console session
    key_limits: Mapping[str, int | None] = field(default_factory=lambda: _NO_KEY_LIMITS)

    def require_scope(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"This API key lacks the '{scope}' scope.")

    def may_access(self, kind: str, name: str) -> bool:
        """Whether the key's resource patterns cover ``<kind>:<name>`` (no patterns: all)."""
        if not self.resources:
            return True
        target = f"{kind}:{name}"
        return any(fnmatchcase(target, pattern) for pattern in self.resources)

    def require_resource(self, kind: str, name: str) -> None:
        if not self.may_access(kind, name):
            raise Forbidden(f"This API key does not cover {kind} '{name}'.")

    def covers(self, kind: str, name: str, *, topic: str | None = None) -> bool:
        """Whether the key may use the resource: a subscription (``topic`` given) is also
        covered by a pattern of its topic, so a key for ``topic:orders*`` consumes from the
        subscriptions of those topics."""
        return self.may_access(kind, name) or (
            topic is not None and self.may_access("topic", topic)
        )

    def require_access(self, kind: str, name: str, *, topic: str | None = None) -> None:
        """403 unless :meth:`covers`."""
        if not self.covers(kind, name, topic=topic):
            raise Forbidden(f"This API key does not cover {kind} '{name}'.")


def parse_token(token: str) -> tuple[str, str]:
    """Split ``op_<prefix>_<secret>``; raises Unauthenticated when it is not that shape."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "op" or len(parts[1]) != KEY_PREFIX_LEN or not parts[2]:
        raise Unauthenticated("Malformed API key: expected op_<prefix>_<secret>.")
    return parts[1], parts[2]


def parse_authorization(header: str | None) -> str:
    if not header:
        raise Unauthenticated("Send the API key as 'Authorization: Bearer op_<prefix>_<secret>'.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Malformed Authorization header: expected 'Bearer <api key>'.")
    return token.strip()


def _parse(authorization: str | None) -> tuple[str, str]:
    prefix, secret = parse_token(parse_authorization(authorization))
    if not _PREFIX_CHARS.issuperset(prefix):
        raise Unauthenticated("Unknown API key.")  # no key has such a prefix: no lookup
    return prefix, secret


_last_touch: dict[str, float] = {}


def _check_key(secret: str, key: dict[str, Any] | None) -> dict[str, Any]:
    """The key document if ``secret`` opens it and it is live (before its tenant is read, so
    a refused key costs no tenant lookup)."""
    if key is None or not hmac.compare_digest(key["hash"], hash_secret(secret)):
        raise Unauthenticated("Unknown API key.")
    if key["revoked"]:
        raise Unauthenticated("This API key has been revoked.")
    if key["expires_at"] is not None and key["expires_at"] <= time.time():
        raise Unauthenticated("This API key has expired.")
    return key


def _principal(key: dict[str, Any], tenant: dict[str, Any] | None) -> Principal:
    if tenant is None or not tenant["active"]:
        raise Unauthenticated("This API key's tenant is not active.")
    return Principal(
        key_id=key["id"],
        prefix=key["prefix"],
        tenant_id=key["tenant_id"],
        scopes=frozenset(key["scopes"]),
        resources=tuple(key["resources"]),
        tenant=tenant,
        actor=f"key:{key['prefix']}",
        key_limits=key.get("limits") or _NO_KEY_LIMITS,
    )


def _due_touch(prefix: str) -> float | None:
    """The time to record as last use, at most once a minute per key and process."""
    now = time.time()
    if now - _last_touch.get(prefix, 0.0) < LAST_USED_EVERY_SECONDS:
        return None
    _last_touch[prefix] = now
    return now


def _resolve(authorization: str | None, limited: int | None) -> Principal:
    prefix, secret = _parse(authorization)
    if limited is None:
        key = key_cache.get(prefix)
    else:  # a limited address: what Redis holds; PostgreSQL only for a prefix that exists
        raw = get_redis().get(cache_key(key_cache.namespace, prefix))
        if raw is not None:
            key = orjson.loads(raw)
        else:
            key = key_cache.get(prefix) if key_index.lookup(prefix)[0] else None
    key = _check_key(secret, key)
    principal = _principal(key, tenant_cache.get(key["tenant_id"]))
    if (now := _due_touch(prefix)) is not None:
        get_redis().hset(LAST_USED_KEY, prefix, int(now))
    return principal


async def _aresolve(authorization: str | None, limited: int | None) -> Principal:
    prefix, secret = _parse(authorization)
    if limited is None:
        key = await key_cache.aget(prefix)
    else:
        raw = await get_async_redis().get(cache_key(key_cache.namespace, prefix))
        if raw is not None:
            key = orjson.loads(raw)
        else:
            member, _ = await key_index.alookup(prefix)
            key = await key_cache.aget(prefix) if member else None
    key = _check_key(secret, key)
    principal = _principal(key, await tenant_cache.aget(key["tenant_id"]))
    if (now := _due_touch(prefix)) is not None:
        await get_async_redis().hset(LAST_USED_KEY, prefix, int(now))
    return principal


def authenticate(authorization: str | None, *, address: str | None = None) -> Principal:
    """Resolve an Authorization header to a Principal, or raise Unauthenticated.

    With the client's ``address`` (see :func:`client_address`), refusals are counted against
    it and raise RateLimited (429, Retry-After) past the limits."""
    bucket = address_bucket(address) if address is not None else None
    limited = None
    if bucket is not None and failure_limiter.any_limited:
        limited = failure_limiter.retry_after(bucket)
    try:
        return _resolve(authorization, limited)
    except Unauthenticated as exc:
        if bucket is None:
            raise
        if limited is None:
            limited = failure_limiter.fail(bucket)
        if limited is not None:
            raise _rate_limited(limited) from exc
        raise


async def aauthenticate(authorization: str | None, *, address: str | None = None) -> Principal:
    """:func:`authenticate` for async views. A valid key from an address that is not limited
    costs what it always did: its warm path touches no counter."""
    bucket = address_bucket(address) if address is not None else None
    limited = None
    if bucket is not None and failure_limiter.any_limited:
        limited = failure_limiter.retry_after(bucket)
    try:
        return await _aresolve(authorization, limited)
    except Unauthenticated as exc:
        if bucket is None:
            raise
        if limited is None:
            limited = await failure_limiter.afail(bucket)
        if limited is not None:
            raise _rate_limited(limited) from exc
        raise
