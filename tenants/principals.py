"""Who is calling: an API key resolved to its tenant, scopes and resource patterns.

This is the data plane's first step on every request, so it never queries PostgreSQL when
warm: keys and tenants come from the hot cache, and the secret is checked against the cached
SHA-256 hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from openplatform.errors import Forbidden, Unauthenticated
from openplatform.hotcache import HotCache, register
from openplatform.redis_client import get_async_redis, get_redis
from openplatform.redis_keys import LAST_USED
from tenants.models import ApiKey, Tenant

KEY_PREFIX_LEN = 10
LAST_USED_KEY = LAST_USED
LAST_USED_EVERY_SECONDS = 60


def hash_secret(secret: str) -> str:
    """SHA-256 of a key's secret. Secrets are 192 random bits, so a fast hash is enough:
    there is nothing to brute-force that a slow hash would protect."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _load_key(prefix: str) -> dict[str, Any] | None:
    key = ApiKey.all_tenants.filter(prefix=prefix).first()
    return key_document(key) if key else None


def _load_tenant(tenant_id: str) -> dict[str, Any] | None:
    tenant = Tenant.objects.select_related("plan").filter(pk=tenant_id).first()
    return tenant_document(tenant) if tenant else None


def key_document(key: ApiKey) -> dict[str, Any]:
    """What the hot cache keeps of a key (never the secret itself)."""
    return {
        "id": str(key.id),
        "tenant_id": str(key.tenant_id),
        "prefix": key.prefix,
        "hash": key.secret_hash,
        "scopes": list(key.scopes),
        "resources": list(key.resources),
        "expires_at": key.expires_at.timestamp() if key.expires_at else None,
        "revoked": key.revoked_at is not None,
    }


def tenant_document(tenant: Tenant) -> dict[str, Any]:
    plan = tenant.plan
    return {
        "id": str(tenant.id),
        "slug": tenant.slug,
        "active": tenant.is_active,
        "max_message_bytes": plan.max_message_bytes,
        "publish_rate_per_second": plan.publish_rate_per_second,
        "monthly_messages": plan.monthly_messages,
    }


key_cache = register(HotCache("apikey", _load_key))
tenant_cache = register(HotCache("tenant", _load_tenant))


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


_last_touch: dict[str, float] = {}


def _principal(secret: str, key: dict[str, Any] | None, tenant: dict[str, Any] | None) -> Principal:
    if key is None or not hmac.compare_digest(key["hash"], hash_secret(secret)):
        raise Unauthenticated("Unknown API key.")
    if key["revoked"]:
        raise Unauthenticated("This API key has been revoked.")
    if key["expires_at"] is not None and key["expires_at"] <= time.time():
        raise Unauthenticated("This API key has expired.")
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
    )


def _due_touch(prefix: str) -> float | None:
    """The time to record as last use, at most once a minute per key and process."""
    now = time.time()
    if now - _last_touch.get(prefix, 0.0) < LAST_USED_EVERY_SECONDS:
        return None
    _last_touch[prefix] = now
    return now


def authenticate(authorization: str | None) -> Principal:
    """Resolve an Authorization header to a Principal, or raise Unauthenticated."""
    prefix, secret = parse_token(parse_authorization(authorization))
    key = key_cache.get(prefix)
    tenant = tenant_cache.get(key["tenant_id"]) if key else None
    principal = _principal(secret, key, tenant)
    if (now := _due_touch(prefix)) is not None:
        get_redis().hset(LAST_USED_KEY, prefix, int(now))
    return principal


async def aauthenticate(authorization: str | None) -> Principal:
    """:func:`authenticate` for async views."""
    prefix, secret = parse_token(parse_authorization(authorization))
    key = await key_cache.aget(prefix)
    tenant = await tenant_cache.aget(key["tenant_id"]) if key else None
    principal = _principal(secret, key, tenant)
    if (now := _due_touch(prefix)) is not None:
        await get_async_redis().hset(LAST_USED_KEY, prefix, int(now))
    return principal
