"""Fair queues: a message's key is its group; a pull serves quiet groups before noisy ones
(a group holding > 10 % of the queue's in-flight messages and at least 30 of them)."""

from __future__ import annotations

from typing import Any

import orjson

from kernel.redis_client import get_redis
from queues.engine.targets import fair_keys
from tests import engine
from tests.engine import queue_reader, queue_writer
from tests.factories import TenantCtx, make_queue

T0 = 1_800_000_000_000


def ends(ctx: TenantCtx, fair: bool = True) -> tuple[Any, Any]:
    make_queue(tenant=ctx.tenant, name="jobs", visibility_timeout=30, fair=fair)
    return queue_writer(ctx, "jobs"), queue_reader(ctx, "jobs")


def publish(dest: Any, key: str, *bodies: Any) -> None:
    engine.publish(dest, *({"body": b, "key": key} for b in bodies), now=T0)


def pull(c: Any, n: int, now: int = T0) -> list[dict[str, Any]]:
    return engine.pull(c, n, now=now)


def bodies(ms: list[dict[str, Any]]) -> list[Any]:
    return [orjson.loads(orjson.dumps(m["body"])) for m in ms]


def in_flight(c: Any) -> dict[str, int]:
    _, counts = fair_keys(c.leases[0])
    return {k.decode(): int(v) for k, v in get_redis().hgetall(counts).items()}


def test_quiet_groups_come_before_a_noisy_one(acme: TenantCtx) -> None:
    dest, c = ends(acme)
    publish(dest, "big", *range(100))
    first = pull(c, 40)
    assert bodies(first) == list(range(40))  # no quiet group waits: the noisy one is served
    assert in_flight(c) == {"big": 40}
    for i in range(5):
        publish(dest, f"small{i}", f"q{i}")
    got = pull(c, 5)
    assert bodies(got) == ["q0", "q1", "q2", "q3", "q4"]
    assert [m["delivery_attempt"] for m in got] == [1] * 5
    assert in_flight(c) == {"big": 40, **{f"small{i}": 1 for i in range(5)}}
    # nothing quiet left: the noisy group's messages are delivered, each once, as attempt 1
    rest = pull(c, 100)
    assert sorted(bodies(rest)) == list(range(40, 100))
    assert {m["delivery_attempt"] for m in rest} == {1}
    assert pull(c, 10) == []
    assert engine.ack(c, first + got + rest) == 105
    assert in_flight(c) == {}
    assert get_redis().hlen(fair_keys(c.leases[0])[0]) == 0


def test_a_lease_expiry_and_a_nack_leave_the_counts(acme: TenantCtx) -> None:
    dest, c = ends(acme)
    publish(dest, "a", 1, 2)
    publish(dest, "b", 3)
    got = pull(c, 3)
    assert in_flight(c) == {"a": 2, "b": 1}
    assert engine.settle(c, "nack", [got[2]["ack_id"]], ms=60_000, now=T0) == (1, [])
    assert in_flight(c) == {"a": 2}
    # the leases end (30 s): a housekeeping pull moves them to their backoff
    assert engine.pull(c, 0, now=T0 + 31_000) == []
    assert in_flight(c) == {}
    again = pull(c, 10, now=T0 + 120_000)
    assert sorted(bodies(again)) == [1, 2, 3]
    assert {m["delivery_attempt"] for m in again} == {2}
    assert in_flight(c) == {"a": 2, "b": 1}
    assert engine.ack(c, again) == 3
    assert in_flight(c) == {}


def test_a_non_fair_queue_delivers_in_order_and_keeps_no_counts(acme: TenantCtx) -> None:
    dest, c = ends(acme, fair=False)
    publish(dest, "big", *range(100))
    assert bodies(pull(c, 40)) == list(range(40))
    for i in range(5):
        publish(dest, f"small{i}", f"q{i}")
    assert bodies(pull(c, 5)) == [40, 41, 42, 43, 44]
    assert get_redis().exists(*fair_keys(c.leases[0])) == 0


def test_purge_clears_the_counts(acme: TenantCtx) -> None:
    from queues.engine import streams

    dest, c = ends(acme)
    publish(dest, "a", 1, 2)
    pull(c, 2)
    assert in_flight(c) == {"a": 2}
    assert streams.purge(get_redis(), c) == 2
    assert get_redis().exists(*fair_keys(c.leases[0])) == 0
