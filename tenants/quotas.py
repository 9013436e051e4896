"""The quotas: what each one limits, at which levels it can be set, and which value holds.

A quota is set on the plan (every tenant of the plan gets it), may be overridden for one
tenant by an operator (``Tenant.quota_overrides``), and some may be narrowed further by the
tenant itself: on an API key (its publish and consume rates, its monthly messages) or on a
queue or topic (its backlog). ``None`` means unlimited at that level. The value that holds is
the tightest of the levels that apply; :func:`effective_quotas` says which level it came from,
so ``GET /v1/tenant`` and the console can explain every refusal.

The data plane never calls this module on the warm path: the values are resolved when a
tenant's, key's or resource's document is built for the hot cache, and the Lua scripts get
them as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from tenants.models import ApiKey, Plan, Tenant

Level = Literal["plan", "tenant", "key", "resource"]


@dataclass(frozen=True)
class Quota:
    """One limit. ``levels``: where it may be set, beyond the plan and the tenant override."""

    name: str
    label: str
    unit: str
    narrower: frozenset[Level] = frozenset()


QUOTAS: Final[tuple[Quota, ...]] = (
    Quota("max_message_bytes", "Largest message", "bytes"),
    Quota("max_queues", "Queues", "queues"),
    Quota("max_topics", "Topics", "topics"),
    Quota("max_subscriptions", "Subscriptions", "subscriptions"),
    Quota("max_api_keys", "API keys", "keys"),
    Quota("monthly_messages", "Messages published per month", "messages", frozenset({"key"})),
    Quota(
        "publish_rate_per_second",
        "Messages published per second",
        "messages/s",
        frozenset({"key"}),
    ),
    Quota(
        "consume_rate_per_second", "Messages pulled per second", "messages/s", frozenset({"key"})
    ),
    Quota("request_rate_per_second", "Data-plane requests per second", "requests/s"),
    Quota(
        "max_backlog_messages",
        "Messages stored per queue or topic",
        "messages",
        frozenset({"resource"}),
    ),
    Quota("max_backlog_bytes", "Bytes stored per queue or topic", "bytes", frozenset({"resource"})),
    Quota("max_retention_seconds", "Longest retention", "seconds"),
)
BY_NAME: Final[dict[str, Quota]] = {quota.name: quota for quota in QUOTAS}
#: The quotas an API key may narrow, and those a queue or topic may.
KEY_QUOTAS: Final = tuple(q.name for q in QUOTAS if "key" in q.narrower)
RESOURCE_QUOTAS: Final = tuple(q.name for q in QUOTAS if "resource" in q.narrower)
#: Quotas counted per calendar month, which get the 80 % and 100 % alerts.
MONTHLY_QUOTAS: Final = ("monthly_messages",)


@dataclass(frozen=True)
class Effective:
    """The value that holds (None: unlimited) and the level it comes from."""

    value: int | None
    source: Level

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source}


def validate_overrides(overrides: Mapping[str, Any]) -> dict[str, int | None]:
    """``overrides`` as stored on a tenant: known quota names only, each a whole number
    ≥ 0 or None (unlimited for this tenant, whatever the plan says). ValueError otherwise,
    naming the first bad entry."""
    clean: dict[str, int | None] = {}
    for name, value in overrides.items():
        if name not in BY_NAME:
            raise ValueError(f"{name}: not a quota (one of {', '.join(BY_NAME)}).")
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ValueError(f"{name}: a whole number of at least 0, or null for unlimited.")
        clean[name] = value
    return clean


def tighter(a: int | None, b: int | None) -> int | None:
    """The tighter of two limits, None being unlimited."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _narrower(own: int | None, current: int | None) -> bool:
    """Whether a key's or resource's own limit is stricter than the one holding (an equal one
    is not: the source stays the level that set it first)."""
    return own is not None and (current is None or own < current)


def effective_quotas(tenant: Tenant, plan: Plan | None = None) -> dict[str, Effective]:
    """Every quota of ``tenant``: its override where an operator set one, else its plan's."""
    plan = plan or tenant.plan
    overrides = tenant.quota_overrides or {}
    return {
        quota.name: (
            Effective(overrides[quota.name], "tenant")
            if quota.name in overrides
            else Effective(getattr(plan, quota.name), "plan")
        )
        for quota in QUOTAS
    }


def key_quotas(key: ApiKey, tenant_quotas: Mapping[str, Effective]) -> dict[str, Effective]:
    """The quotas a request with ``key`` meets: the tenant's, narrowed by the key's own."""
    out = dict(tenant_quotas)
    for name in KEY_QUOTAS:
        own = getattr(key, name)
        if _narrower(own, out[name].value):
            out[name] = Effective(own, "key")
    return out


def resource_quotas(resource: Any, tenant_quotas: Mapping[str, Effective]) -> dict[str, Effective]:
    """The backlog limits of a queue or topic: the tenant's, narrowed by the resource's own
    (``max_backlog_messages`` / ``max_backlog_bytes`` on the row, None: the tenant's)."""
    out = {name: tenant_quotas[name] for name in RESOURCE_QUOTAS}
    for name in RESOURCE_QUOTAS:
        own = getattr(resource, name)
        if _narrower(own, out[name].value):
            out[name] = Effective(own, "resource")
    return out
