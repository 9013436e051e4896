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


def tenant_tag(tenant_id: str) -> str:
    return "{t." + tenant_id.replace("-", "") + "}"


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


# --- deduplication ----------------------------------------------------------------------------


def dedup_key(prefix: str, dedup_id: str) -> str:
    """A publish's dedup key under a queue's or topic's dedup prefix (expires with the window)."""
    return prefix + dedup_id


def dedup_scan_pattern(prefix: str) -> str:
    """SCAN match pattern of every dedup key under ``prefix``."""
    return prefix + "*"


# --- tenants and API keys ---------------------------------------------------------------------


def usage_key(tenant_id: str) -> str:
    """Hash of the tenant's traffic counters, ``<hour epoch>:<counter>`` → count."""
    return f"op:{tenant_tag(tenant_id)}:usage"


def publish_rate_key(usage: str, second: int) -> str:
    """The tenant's publish counter for one second (beside its usage hash, same slot)."""
    return f"{usage}:rate:{second}"


def cache_key(namespace: str, ident: str) -> str:
    """A hot-cache document (see kernel.hotcache)."""
    return f"op:cache:{namespace}:{ident}"


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
