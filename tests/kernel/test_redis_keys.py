"""The Redis key strings are a storage format: running deployments keep their data under them,
so every one is pinned here, exactly, for one sample tenant, queue, topic and subscription."""

from __future__ import annotations

from kernel import redis_keys
from queues.engine.targets import (
    queue_keys,
    subscription_partition_keys,
    topic_channel,
    topic_dedup_prefix,
    topic_partition_keys,
)

TENANT = "0b7e6f1c-3d2a-4c5b-9e8f-a1b2c3d4e5f6"
QUEUE = "11111111-2222-3333-4444-555555555555"
TOPIC = "66666666-7777-8888-9999-aaaaaaaaaaaa"
SUBSCRIPTION = "bbbbbbbb-cccc-dddd-eeee-ffffffffffff"

TAG = "{t.0b7e6f1c3d2a4c5b9e8fa1b2c3d4e5f6}"
Q = f"op:{TAG}:q:11111111222233334444555555555555"
T = f"op:{TAG}:t:66666666777788889999aaaaaaaaaaaa"
SUB = f"op:{TAG}:sub:bbbbbbbbccccddddeeeeffffffffffff"


def test_queue_keys_are_unchanged() -> None:
    """A queue's stream, delay, lease, retry, dedup prefix and channel keep their strings, and
    the engine's targets hand out exactly those."""
    assert redis_keys.tenant_tag(TENANT) == TAG
    expected = {
        "stream": f"{Q}:s",
        "delay": f"{Q}:delay",
        "lease": f"{Q}:lease",
        "retry": f"{Q}:retry",
        "dedup": f"{Q}:dd:",
        "channel": f"{Q}:n",
    }
    assert queue_keys(TENANT, QUEUE) == expected
    assert redis_keys.queue_stream(TENANT, QUEUE) == f"{Q}:s"
    assert redis_keys.queue_delay(TENANT, QUEUE) == f"{Q}:delay"
    assert redis_keys.queue_lease(TENANT, QUEUE) == f"{Q}:lease"
    assert redis_keys.queue_retry(TENANT, QUEUE) == f"{Q}:retry"
    assert redis_keys.queue_dedup_prefix(TENANT, QUEUE) == f"{Q}:dd:"
    assert redis_keys.queue_channel(TENANT, QUEUE) == f"{Q}:n"


def test_topic_and_subscription_keys_are_unchanged() -> None:
    """A topic partition's stream and delay, the topic's channel and dedup prefix, and a
    subscription partition's lease and retry keep their strings."""
    assert topic_partition_keys(TENANT, TOPIC, 0) == {"stream": f"{T}:0:s", "delay": f"{T}:0:delay"}
    assert topic_partition_keys(TENANT, TOPIC, 3) == {"stream": f"{T}:3:s", "delay": f"{T}:3:delay"}
    assert topic_channel(TENANT, TOPIC) == f"{T}:n"
    assert topic_dedup_prefix(TENANT, TOPIC) == f"{T}:dd:"
    assert subscription_partition_keys(TENANT, SUBSCRIPTION, 2) == {
        "lease": f"{SUB}:2:lease",
        "retry": f"{SUB}:2:retry",
    }


def test_dedup_keys_and_their_scan_pattern_are_unchanged() -> None:
    """A dedup key is the prefix followed by the dedup id; SCAN finds them with ``<prefix>*``."""
    assert redis_keys.dedup_key(f"{Q}:dd:", "order-42") == f"{Q}:dd:order-42"
    assert redis_keys.dedup_key(f"{T}:dd:", "order-42") == f"{T}:dd:order-42"
    assert redis_keys.dedup_scan_pattern(f"{Q}:dd:") == f"{Q}:dd:*"


def test_tenant_and_key_keys_are_unchanged() -> None:
    """The usage hash, the publish rate counter, hot-cache documents, the last-used hash, the
    key-prefix index and the authentication-failure counters keep their strings."""
    usage = redis_keys.usage_key(TENANT)
    assert usage == f"op:{TAG}:usage"
    assert redis_keys.publish_rate_key(usage, 1_700_000_000) == f"op:{TAG}:usage:rate:1700000000"
    assert redis_keys.cache_key("apikey", "abcde12345") == "op:cache:apikey:abcde12345"
    assert redis_keys.LAST_USED == "op:keys:last_used"
    assert redis_keys.KEY_INDEX == "op:{keyindex}:prefixes"
    assert redis_keys.KEY_INDEX_BUILD == "op:{keyindex}:build"
    assert redis_keys.KEY_INDEX_LOCK == "op:{keyindex}:lock"
    assert redis_keys.auth_failure_key("203.0.113.7", "s", 1_700_000_000) == (
        "op:{authfail.203.0.113.7}:s:1700000000"
    )
    assert redis_keys.auth_failure_key("203.0.113.7", "m", 28_333_333) == (
        "op:{authfail.203.0.113.7}:m:28333333"
    )


def test_usage_hash_fields_are_unchanged() -> None:
    """An hour's counters are ``<hour epoch>:p|pb|d|a`` and a month's published count
    ``m<YYYYMM>:p``; the roll-up reads back exactly what the scripts write."""
    now_ms = 1_700_000_000_000  # 2023-11-14T22:13:20Z, hour 472222
    assert redis_keys.usage_hour_field(now_ms, "published") == "472222:p"
    assert redis_keys.usage_hour_field(now_ms, "published_bytes") == "472222:pb"
    assert redis_keys.usage_hour_field(now_ms, "delivered") == "472222:d"
    assert redis_keys.usage_hour_field(now_ms, "acked") == "472222:a"
    assert redis_keys.usage_month_field(2026, 3) == "m202603:p"
    for column in redis_keys.USAGE_COUNTERS:
        field = redis_keys.usage_hour_field(now_ms, column)
        assert redis_keys.parse_usage_field(field) == redis_keys.UsageField(472222, column)
        by_key = redis_keys.usage_hour_field(now_ms, column, key="ab12cd34")
        assert redis_keys.parse_usage_field(by_key) == redis_keys.UsageField(
            472222, column, key_prefix="ab12cd34"
        )
        by_queue = redis_keys.usage_hour_field(now_ms, column, resource="queue:orders.eu")
        assert redis_keys.parse_usage_field(by_queue) == redis_keys.UsageField(
            472222, column, resource="queue:orders.eu"
        )
    assert redis_keys.parse_usage_field("m202603:p") is None
    assert redis_keys.parse_usage_field("472222:zz") is None
    assert redis_keys.parse_usage_field("472222:p:q:orders") is None
    assert redis_keys.parse_usage_field("472222:p:r:orders") is None
    assert redis_keys.usage_month_field(2026, 3, key="ab12cd34") == "m202603:p:k:ab12cd34"
    assert redis_keys.is_usage_month_field("m202603:p:k:ab12cd34")
    assert redis_keys.is_usage_month_field("m202603:p")
    assert not redis_keys.is_usage_month_field("472222:p")


def test_scan_patterns_and_the_consumer_name_are_unchanged() -> None:
    """What the bench's clean-up scans for, and the one consumer name of every group."""
    assert redis_keys.tenant_scan_pattern(TENANT) == f"op:{TAG}:*"
    assert redis_keys.cache_scan_pattern("res", f"{TENANT}:") == f"op:cache:res:{TENANT}:*"
    assert redis_keys.CONSUMER == "c"
