"""What the data-plane app (api.asgi) decides about a request before Django sees it.

- :class:`RefusalMemory`: once the publish, pull or settle script refuses a call because a
  per-second rate is used up, further calls of the same limit's scope in the same wall-clock
  second are refused from here, with the same answer, before the body is read or Redis asked.
  Within one second a rate window's count only grows, so a window the script found used up
  stays used up until the second ends: the shortcut never refuses what the script would take.
- :class:`FairAdmission`: at most ``limit`` data-plane requests of one tenant run at once in
  this process; more wait in that tenant's FIFO. A tenant at its limit does not take the event
  loop's turns from the others.

Both identify the caller from the Authorization header and this process's copy of the key
document (tenants.principals' hot cache), checking the secret's hash as authentication does,
so a guessed prefix with a forged secret is neither refused early nor queued as the tenant.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from tenants.principals import hash_secret, key_cache, tenant_cache

#: The operations of the data plane, as far as the limits go.
PUBLISH, PULL, SETTLE = "publish", "pull", "settle"

# Which limits can refuse each operation: (scope, policy name of the RateLimit headers), the
# scope being "t" (the whole tenant) or "k" (one key). A settle meets only the request rate.
_POLICIES: dict[str, tuple[tuple[str, str], ...]] = {
    PUBLISH: (("t", "publish"), ("k", "key-publish"), ("t", "requests")),
    PULL: (("t", "consume"), ("k", "key-consume"), ("t", "requests")),
    SETTLE: (("t", "requests"),),
}
# The limit each policy reads (queues.messaging.limits_of): (document, field).
_QUOTA_FIELDS: dict[str, tuple[str, str]] = {
    "publish": ("t", "publish_rate_per_second"),
    "consume": ("t", "consume_rate_per_second"),
    "requests": ("t", "request_rate_per_second"),
    "key-publish": ("k", "publish_rate_per_second"),
    "key-consume": ("k", "consume_rate_per_second"),
}
# A per-message check ('m') refusing a call of n messages says the window has fewer than n
# left; only n == 1 says it has none. A pull is refused only when none is left (pull.lua).
_PER_MESSAGE_PUBLISH = frozenset({"publish", "key-publish"})


@dataclass(frozen=True, slots=True)
class Caller:
    """A request's key, verified against this process's copy of its document."""

    prefix: str
    tenant_id: str
    key: dict[str, Any]
    tenant: dict[str, Any]


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def caller_of(scope: dict[str, Any]) -> Caller | None:
    """The caller of an ASGI request when its key and tenant are in this process's hot cache,
    the secret opens the key, the key is live and the tenant active; otherwise None (the
    request takes the ordinary path, which authenticates it and answers any refusal)."""
    raw = _header(scope, b"authorization")
    if raw is None:
        return None
    try:
        scheme, _, token = raw.decode("latin1").partition(" ")
    except UnicodeDecodeError:  # pragma: no cover - latin1 decodes every byte
        return None
    if scheme.lower() != "bearer":
        return None
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "op":
        return None
    prefix, secret = parts[1], parts[2]
    found, key = key_cache._local_get(prefix)
    if not found or key is None:
        return None
    if not hmac.compare_digest(key["hash"], hash_secret(secret)):
        return None
    if key["revoked"] or (key["expires_at"] is not None and key["expires_at"] <= time.time()):
        return None
    found, tenant = tenant_cache._local_get(key["tenant_id"])
    if not found or tenant is None or not tenant["active"]:
        return None
    return Caller(prefix, key["tenant_id"], key, tenant)


def _quota(policy: str, caller: Caller) -> Any:
    where, name = _QUOTA_FIELDS[policy]
    if where == "t":
        return caller.tenant.get(name)
    return (caller.key.get("limits") or {}).get(name)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A script's refusal by a per-second rate, to be answered again within its second."""

    second: int
    quota: int
    host: bytes | None
    scheme: str
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def _policy_of(header: str) -> tuple[str, int] | None:
    """(name, quota) of a per-second ``RateLimit-Policy`` value ``"name";q=10;w=1``."""
    name, _, params = header.partition(";")
    fields = dict(p.split("=", 1) for p in params.split(";") if "=" in p)
    if fields.get("w") != "1" or not fields.get("q", "").isdigit():
        return None
    return name.strip('"'), int(fields["q"])


def _single_message(body: bytes) -> bool:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(doc, dict):
        return False
    messages = doc.get("messages")
    return messages is None or (isinstance(messages, list) and len(messages) == 1)


class RefusalMemory:
    """This process's memory of the per-second rates the scripts found used up."""

    def __init__(self, *, max_remembered: int = 10_000) -> None:
        self._refused: dict[tuple[str, str], Refusal] = {}
        self._max = max_remembered

    def __bool__(self) -> bool:
        return bool(self._refused)

    def forget(self) -> None:
        """Forget every refusal (tests)."""
        self._refused.clear()

    def remember(
        self,
        op: str,
        caller: Caller,
        scope: dict[str, Any],
        started: float,
        body: bytes,
        status: int,
        headers: list[tuple[bytes, bytes]],
        content: bytes,
    ) -> None:
        """Note a 429 answer of the script to a call of ``op`` that started at ``started``
        (time.time()) and was answered now. Only when the whole call fell within one second
        is that second known to be the script's; only a window found empty is remembered."""
        second = int(started)
        if int(time.time()) != second:
            return
        policy = next((v for k, v in headers if k.lower() == b"ratelimit-policy"), None)
        if policy is None:
            return
        parsed = _policy_of(policy.decode("latin1"))
        if parsed is None:
            return
        name, quota = parsed
        where = next((w for w, p in _POLICIES[op] if p == name), None)
        if where is None or _quota(name, caller) != quota:
            return
        if name in _PER_MESSAGE_PUBLISH and not _single_message(body):
            return
        if len(self._refused) >= self._max:
            self._refused.clear()
        ident = caller.tenant_id if where == "t" else caller.prefix
        kept = [(k, v) for k, v in headers if k.lower() != b"strict-transport-security"]
        self._refused[(ident, name)] = Refusal(
            second,
            quota,
            _header(scope, b"host"),
            scope.get("scheme", "http"),
            status,
            kept,
            content,
        )

    def refusal(self, op: str, caller: Caller, scope: dict[str, Any]) -> Refusal | None:
        """The refusal that still holds for this call of ``op``: its limit's scope is the
        caller's, its second is now, the limit is what it was, and the request came for the
        same host and scheme (so it would have passed the host check and the HTTPS redirect)."""
        now = int(time.time())
        for where, name in _POLICIES[op]:
            ident = caller.tenant_id if where == "t" else caller.prefix
            found = self._refused.get((ident, name))
            if found is None:
                continue
            if found.second != now:
                if found.second < now:
                    del self._refused[(ident, name)]
                continue
            if (
                found.quota == _quota(name, caller)
                and found.host == _header(scope, b"host")
                and found.scheme == scope.get("scheme", "http")
            ):
                return found
        return None


class FairAdmission:
    """At most ``limit`` requests of one tenant in progress; the rest wait, first come first
    served within the tenant. O(1) per request, asyncio only (one event loop per process)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running: dict[str, int] = {}
        self._waiting: dict[str, deque[asyncio.Future[Any]]] = {}

    def running(self, tenant: str) -> int:
        return self._running.get(tenant, 0)

    def waiting(self, tenant: str) -> int:
        return len(self._waiting.get(tenant, ()))

    async def acquire(self, tenant: str) -> Any:
        """Wait for one of ``tenant``'s slots: None once it holds one (release it after), or
        the answer :meth:`shed` gave the tenant's waiters (then it holds none). Cancelled
        while waiting, it holds none."""
        n = self._running.get(tenant, 0)
        if n < self.limit and tenant not in self._waiting:
            self._running[tenant] = n + 1
            return None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, deque()).append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.result() is None:
                self.release(tenant)  # the slot came with the cancellation: pass it on
            else:
                queue = self._waiting.get(tenant)
                if queue is not None and future in queue:
                    queue.remove(future)
                    if not queue:
                        del self._waiting[tenant]
            raise

    def shed(self, tenant: str, answer: Any) -> None:
        """Answer every waiter of ``tenant`` with ``answer`` (they hold no slot)."""
        for future in self._waiting.pop(tenant, ()):
            if not future.done():
                future.set_result(answer)

    def release(self, tenant: str) -> None:
        """Give ``tenant``'s slot to its next waiter, or free it."""
        queue = self._waiting.get(tenant)
        while queue:
            future = queue.popleft()
            if not future.done():
                if not queue:
                    del self._waiting[tenant]
                future.set_result(None)  # the slot passes on: the count stays
                return
        if queue is not None:
            del self._waiting[tenant]
        n = self._running.get(tenant, 0) - 1
        if n > 0:
            self._running[tenant] = n
        else:
            self._running.pop(tenant, None)
