"""Every Redis key the platform uses is built here.

Message data is grouped per tenant under one hash tag, ``{t.<tenant id>}``: a queue, its
dead-letter queue, a topic's partitions and their subscriptions all live in one Redis Cluster
slot, so every multi-key Lua script (publish to several partitions, move a message to the
dead-letter queue, redrive) is atomic on a cluster exactly as on one server. Tenants spread
over the cluster's slots; one tenant's traffic is bounded by one shard.
"""

from __future__ import annotations


def tenant_tag(tenant_id: str) -> str:
    return "{t." + tenant_id.replace("-", "") + "}"


def queue_base(tenant_id: str, queue_id: str) -> str:
    """Prefix of a queue's keys: ``<base>:s`` stream, ``:lease``, ``:retry``, ``:delay``."""
    return f"op:{tenant_tag(tenant_id)}:q:{queue_id.replace('-', '')}"


def topic_base(tenant_id: str, topic_id: str) -> str:
    """Prefix of a topic's keys; partition p has ``<base>:<p>:s`` and ``<base>:<p>:delay``."""
    return f"op:{tenant_tag(tenant_id)}:t:{topic_id.replace('-', '')}"


def subscription_base(tenant_id: str, subscription_id: str) -> str:
    """Prefix of a subscription's keys; per partition ``<base>:<p>:lease`` and ``:retry``."""
    return f"op:{tenant_tag(tenant_id)}:sub:{subscription_id.replace('-', '')}"


def usage_key(tenant_id: str) -> str:
    """Hash of the tenant's traffic counters, ``<hour epoch>:<counter>`` → count."""
    return f"op:{tenant_tag(tenant_id)}:usage"


def publish_rate_key(usage: str, second: int) -> str:
    """The tenant's publish counter for one second (beside its usage hash, same slot)."""
    return f"{usage}:rate:{second}"


def cache_key(namespace: str, ident: str) -> str:
    """A hot-cache document (see openplatform.hotcache)."""
    return f"op:cache:{namespace}:{ident}"


LAST_USED = "op:keys:last_used"  # hash: key prefix → last use (epoch s), drained by beat
