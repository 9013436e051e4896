"""Every Redis key the platform uses is built here.

Message data is grouped per tenant under one hash tag, ``{t.<tenant id>}``: a queue, its
dead-letter queue, a topic's partitions and their subscriptions all live in one Redis Cluster
slot, so every multi-key Lua script (publish to several partitions, move a message to the
dead-letter queue, redrive) is atomic on a cluster exactly as on one server. Tenants spread
over the cluster's slots; one tenant's traffic is bounded by one shard.

The strings are a storage format: data in running deployments lives under them, so changing
one loses that data (``tests/kernel/test_redis_keys.py`` pins them).
"""

from __future__ import annotations

from dataclasses import dataclass


def tenant_tag(tenant_id: str) -> str:
    return "{t." + tenant_id.replace("-", "") + "}"


def tenant_scan_pattern(tenant_id: str) -> str:
    """SCAN match pattern of every message-data key of a tenant."""
    return f"op:{tenant_tag(tenant_id)}:*"


# --- queues -----------------------------------------------------------------------------------


def queue_base(tenant_id: str, queue_id: str) -> str:
    """Prefix of a queue's keys (below)."""
    return f"op:{tenant_tag(tenant_id)}:q:{queue_id.replace('-', '')}"


def queue_stream(tenant_id: str, queue_id: str) -> str:
    return f"{queue_base(tenant_id, queue_id)}:s"


def queue_delay(tenant_id: str, queue_id: str) -> str:
    """Sorted set of delayed messages, scored by when they are due (ms)."""
    return f"{queue_base(tenant_id, queue_id)}:delay"


def queue_lease(tenant_id: str, queue_id: str) -> str:
    """Sorted set of held leases, scored by when they expire (ms)."""
    return f"{queue_base(tenant_id, queue_id)}:lease"


def queue_retry(tenant_id: str, queue_id: str) -> str:
    """Sorted set of expired leases waiting out their backoff, scored by when they are due."""
    return f"{queue_base(tenant_id, queue_id)}:retry"


def queue_dedup_prefix(tenant_id: str, queue_id: str) -> str:
    """Prefix of the queue's dedup keys (:func:`dedup_key`)."""
    return f"{queue_base(tenant_id, queue_id)}:dd:"


def queue_channel(tenant_id: str, queue_id: str) -> str:
    """Pub/sub channel that wakes the queue's long polls."""
    return f"{queue_base(tenant_id, queue_id)}:n"


# --- topics and subscriptions -----------------------------------------------------------------


def topic_base(tenant_id: str, topic_id: str) -> str:
    """Prefix of a topic's keys (below)."""
    return f"op:{tenant_tag(tenant_id)}:t:{topic_id.replace('-', '')}"


def topic_partition_stream(tenant_id: str, topic_id: str, partition: int) -> str:
    return f"{topic_base(tenant_id, topic_id)}:{partition}:s"


def topic_partition_delay(tenant_id: str, topic_id: str, partition: int) -> str:
    return f"{topic_base(tenant_id, topic_id)}:{partition}:delay"


def topic_channel(tenant_id: str, topic_id: str) -> str:
    """Pub/sub channel that wakes the long polls of every subscription of the topic."""
    return f"{topic_base(tenant_id, topic_id)}:n"


def topic_dedup_prefix(tenant_id: str, topic_id: str) -> str:
    """Prefix of the topic's dedup keys (:func:`dedup_key`)."""
    return f"{topic_base(tenant_id, topic_id)}:dd:"


def subscription_base(tenant_id: str, subscription_id: str) -> str:
    """Prefix of a subscription's keys (below)."""
    return f"op:{tenant_tag(tenant_id)}:sub:{subscription_id.replace('-', '')}"


def subscription_partition_lease(tenant_id: str, subscription_id: str, partition: int) -> str:
    return f"{subscription_base(tenant_id, subscription_id)}:{partition}:lease"


def subscription_partition_retry(tenant_id: str, subscription_id: str, partition: int) -> str:
    return f"{subscription_base(tenant_id, subscription_id)}:{partition}:retry"


#: The one consumer name the engine reads consumer groups with: leases are the engine's own
#: (lease sets), so every reader of a group is the same Redis consumer.
CONSUMER = "c"


# --- deduplication ----------------------------------------------------------------------------


def dedup_key(prefix: str, dedup_id: str) -> str:
    """A publish's dedup key under a queue's or topic's dedup prefix (expires with the window)."""
    return prefix + dedup_id


def dedup_scan_pattern(prefix: str) -> str:
    """SCAN match pattern of every dedup key under ``prefix``."""
    return prefix + "*"


# --- tenants and API keys ---------------------------------------------------------------------


def usage_key(tenant_id: str) -> str:
    """Hash of the tenant's traffic counters: fields :func:`usage_hour_field` (an hour's
    traffic, rolled up into PostgreSQL by beat) and :func:`usage_month_field` (the month's
    published count, read by the publish script's quota check)."""
    return f"op:{tenant_tag(tenant_id)}:usage"


#: The counters of an hour in the usage hash, by the UsageRecord column each is rolled into.
USAGE_COUNTERS = {
    "published": "p",
    "published_bytes": "pb",
    "delivered": "d",
    "delivered_bytes": "db",
    "acked": "a",
    "dead_lettered": "x",
    "requests": "r",
}


def usage_scope(*, key: str = "", resource: str = "") -> str:
    """The suffix of a usage field counted for one API key (its prefix) or one resource
    (``"<kind>:<name>"``, kind queue, topic or subscription), or "" for the tenant's total.
    Names never hold ":" (kernel.limits.NAME_PATTERN), so the suffix parses back."""
    if key:
        return f":k:{key}"
    if resource:
        return f":r:{resource}"
    return ""


def usage_hour_field(now_ms: int, column: str, *, key: str = "", resource: str = "") -> str:
    """The usage hash field counting ``column`` (a key of USAGE_COUNTERS) in the hour of
    ``now_ms``: ``<hour epoch>:<counter>`` for the tenant's total, with
    :func:`usage_scope`'s suffix for one key or one resource."""
    scope = usage_scope(key=key, resource=resource)
    return f"{now_ms // 3_600_000}:{USAGE_COUNTERS[column]}{scope}"


def usage_month_field(year: int, month: int, *, key: str = "") -> str:
    """The usage hash field counting a calendar month's published messages: ``m<YYYYMM>:p``
    for the tenant, ``m<YYYYMM>:p:k:<prefix>`` for one API key."""
    return f"m{year}{month:02d}:p{usage_scope(key=key)}"


@dataclass(frozen=True)
class UsageField:
    """A parsed hourly usage field: the hour, the UsageRecord column, and whose count it is
    (both empty: the tenant's total)."""

    hour: int
    column: str
    key_prefix: str = ""
    resource: str = ""


def parse_usage_field(field: str) -> UsageField | None:
    """The parts of an hour's field (see :func:`usage_hour_field`); None for any other
    field (a month's count, or something this version does not know)."""
    hour, _, rest = field.partition(":")
    if not hour.isdigit():
        return None
    counter, _, scope = rest.partition(":")
    column = next((c for c, code in USAGE_COUNTERS.items() if code == counter), None)
    if column is None:
        return None
    kind, _, ident = scope.partition(":")
    if not scope:
        return UsageField(int(hour), column)
    if kind == "k" and ident:
        return UsageField(int(hour), column, key_prefix=ident)
    if kind == "r" and ident.count(":") == 1 and all(ident.split(":")):
        return UsageField(int(hour), column, resource=ident)
    return None


def is_usage_month_field(field: str) -> bool:
    """A month's published count, the tenant's or one key's (see :func:`usage_month_field`)."""
    return field.startswith("m") and (field.endswith(":p") or ":p:k:" in field)


def publish_rate_key(usage: str, second: int) -> str:
    """The tenant's publish counter for one second (beside its usage hash, same slot)."""
    return f"{usage}:rate:{second}"


def cache_key(namespace: str, ident: str) -> str:
    """A hot-cache document (see kernel.hotcache)."""
    return f"op:cache:{namespace}:{ident}"


def cache_scan_pattern(namespace: str, ident_prefix: str) -> str:
    """SCAN match pattern of the hot-cache documents whose ident starts ``ident_prefix``."""
    return cache_key(namespace, ident_prefix + "*")


LAST_USED = "op:keys:last_used"  # hash: key prefix → last use (epoch s), drained by beat

# The index of API key prefixes that exist (tenants.principals) and its build share a hash tag
# so the publishing script is one slot on a cluster.
KEY_INDEX = "op:{keyindex}:prefixes"
KEY_INDEX_BUILD = "op:{keyindex}:build"
KEY_INDEX_LOCK = "op:{keyindex}:lock"


def auth_failure_key(bucket: str, window: str, number: int) -> str:
    """An address's failed-authentication counter for one second (``s``) or minute (``m``);
    each address's counters share one hash tag."""
    return f"op:{{authfail.{bucket}}}:{window}:{number}"


# --- per-second rate windows and backlogs (the data plane's quota checks) -----------------------


def rate_window_key(usage: str, second: int) -> str:
    """Hash of the tenant's counts in one second (beside its usage hash, same slot), fields
    :func:`rate_field`; it expires two seconds after it was last counted."""
    return f"{usage}:rl:{second}"


#: What a rate window counts: messages published, messages pulled, data-plane requests.
RATE_COUNTERS = {"publish": "p", "consume": "c", "requests": "r"}


def rate_field(counter: str, *, key: str = "") -> str:
    """The field of :func:`rate_window_key` counting ``counter`` (a key of RATE_COUNTERS) for
    the tenant, or for one API key (its prefix)."""
    return RATE_COUNTERS[counter] + usage_scope(key=key)


def queue_backlog(tenant_id: str, queue_id: str) -> str:
    """Hash of what a queue stores (``n`` messages, ``b`` bytes of bodies and attributes),
    stored and delayed, kept by every script that adds or removes a message."""
    return f"{queue_base(tenant_id, queue_id)}:bl"


def topic_backlog(tenant_id: str, topic_id: str) -> str:
    """:func:`queue_backlog` of a topic: every partition's messages together."""
    return f"{topic_base(tenant_id, topic_id)}:bl"


def backlog_of_stream(stream: str) -> str | None:
    """The backlog hash of the queue or topic whose stream (a topic's: one partition's) is
    ``stream``, or None for a key of another shape."""
    head, sep, tail = stream.rpartition(":")
    if not sep or tail != "s":
        return None
    base, _, last = head.rpartition(":")
    if last.isdigit() and base.rpartition(":")[0].endswith(":t"):
        return f"{base}:bl"  # op:{t.X}:t:<topic>:<partition>:s
    if head.rpartition(":")[0].endswith(":q"):
        return f"{head}:bl"  # op:{t.X}:q:<queue>:s
    return None
