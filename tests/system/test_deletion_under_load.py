"""Deleting under traffic, on the real processes: two web workers (each with its own hot
cache), the Celery worker and beat, and client threads publishing and pulling throughout.

A queue is deleted and created again under the same name five times while the threads work on
it, and a second queue is deleted once and never created again. The ledger of every request
must show: no 5xx; every message whose publish was sent after the last DELETE answered and got
a 201 is delivered (none lands in a deleted queue's stream); nothing is delivered twice or
that was never accepted; publishes and pulls on the queue that stays deleted answer 404; and
no Redis key of a deleted queue is left behind.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import redis

from tests.system.conftest import ApiTenant, Platform

ROUNDS = 5
ROUND_SECONDS = 0.6
FINAL_SECONDS = 1.5
PUBLISHERS = 6
PULLERS = 4
DRAIN_SECONDS = 30.0


@dataclass
class Ledger:
    """Every request the threads made, as (queue, what, sent, answered, status, uids)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    published: list[tuple[str, float, float, int, str]] = field(default_factory=list)
    pulled: list[tuple[str, int]] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def publisher(tenant: ApiTenant, ledger: Ledger, stop: threading.Event, ident: int) -> None:
    counter = itertools.count()
    with httpx.Client(base_url=str(tenant.http.base_url), headers=tenant.http.headers) as http:
        while not stop.is_set():
            for queue in ("orders", "scratch"):
                uid = f"{ident}-{next(counter)}"
                sent = time.monotonic()
                try:
                    answer = http.post(f"/v1/queues/{queue}/messages", json={"body": uid})
                except httpx.HTTPError as exc:
                    with ledger.lock:
                        ledger.errors.append(f"publish {queue}: {exc!r}")
                    continue
                with ledger.lock:
                    ledger.published.append(
                        (queue, sent, time.monotonic(), answer.status_code, uid)
                    )


def puller(tenant: ApiTenant, ledger: Ledger, stop: threading.Event) -> None:
    with httpx.Client(
        base_url=str(tenant.http.base_url), headers=tenant.http.headers, timeout=10
    ) as http:
        while not stop.is_set():
            for queue in ("orders", "scratch"):
                try:
                    answer = http.post(
                        f"/v1/queues/{queue}/pull", json={"max_messages": 20, "wait_seconds": 1}
                    )
                    with ledger.lock:
                        ledger.pulled.append((queue, answer.status_code))
                    if answer.status_code != 200:
                        continue
                    messages = answer.json()["messages"]
                    if not messages:
                        continue
                    with ledger.lock:
                        ledger.delivered += [m["body"] for m in messages]
                    acked = http.post(
                        f"/v1/queues/{queue}/ack", json={"ack_ids": [m["ack_id"] for m in messages]}
                    )
                    with ledger.lock:
                        ledger.acks.append(acked.status_code)
                except httpx.HTTPError as exc:
                    with ledger.lock:
                        ledger.errors.append(f"pull {queue}: {exc!r}")


def queue_ids_in_redis(store: redis.Redis, tenant: ApiTenant) -> set[str]:
    """The ids of the queues of ``tenant`` that have any key in Redis."""
    tag = "{t." + tenant.id.replace("-", "") + "}"
    return {key.decode().split(":")[3] for key in store.scan_iter(match=f"op:{tag}:q:*")}


def test_delete_and_create_under_traffic_keeps_the_ledger(platform: Platform) -> None:
    tenant = platform.tenant("Ledger")
    http = tenant.http
    for name in ("orders", "scratch"):
        assert http.post("/v1/queues", json={"name": name}).status_code == 201
    ledger = Ledger()
    stop_publishing, stop_pulling = threading.Event(), threading.Event()
    threads = [
        threading.Thread(target=publisher, args=(tenant, ledger, stop_publishing, n))
        for n in range(PUBLISHERS)
    ] + [
        threading.Thread(target=puller, args=(tenant, ledger, stop_pulling)) for _ in range(PULLERS)
    ]
    for thread in threads:
        thread.start()
    control: list[tuple[str, int]] = []
    try:
        time.sleep(ROUND_SECONDS)  # traffic before the first delete (a load, not an assertion)
        answered_at = 0.0
        for round_ in range(ROUNDS):
            deleted = http.delete("/v1/queues/orders")
            answered_at = time.monotonic()
            control.append(("delete orders", deleted.status_code))
            if round_ == 1:
                control.append(("delete scratch", http.delete("/v1/queues/scratch").status_code))
                scratch_gone_at = time.monotonic()
            created = http.post("/v1/queues", json={"name": "orders"})
            control.append(("create orders", created.status_code))
            time.sleep(ROUND_SECONDS if round_ < ROUNDS - 1 else FINAL_SECONDS)
    finally:
        stop_publishing.set()
        for thread in threads[:PUBLISHERS]:
            thread.join(timeout=30)
    # Let the pullers drain what the last queue holds.
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        stats = http.get("/v1/queues/orders").json()["stats"]
        if stats["available"] == 0 and stats["in_flight"] == 0 and stats["delayed"] == 0:
            break
        time.sleep(0.2)
    stop_pulling.set()
    for thread in threads[PUBLISHERS:]:
        thread.join(timeout=30)

    assert control == [
        *(("delete orders", 204), ("create orders", 201)),
        *(("delete orders", 204), ("delete scratch", 204), ("create orders", 201)),
        *(("delete orders", 204), ("create orders", 201)) * (ROUNDS - 2),
    ]
    assert ledger.errors == []
    statuses = Counter((queue, status) for queue, _, _, status, _ in ledger.published)
    assert {status for (_, status) in statuses} <= {201, 404}, statuses
    assert {status for (_, status) in ledger.pulled} <= {200, 404}, Counter(ledger.pulled)
    assert set(ledger.acks) <= {200, 404}, Counter(ledger.acks)

    accepted = {uid for _, _, _, status, uid in ledger.published if status == 201}
    delivered = Counter(ledger.delivered)
    assert [uid for uid, n in delivered.items() if n > 1] == []  # acked, so delivered once
    assert set(delivered) - accepted == set()  # nothing delivered that was refused
    after_last_delete = {
        uid
        for queue, sent, _, status, uid in ledger.published
        if queue == "orders" and status == 201 and sent > answered_at
    }
    assert len(after_last_delete) > 100  # the traffic was real
    assert after_last_delete - set(delivered) == set()  # none lost in a deleted queue

    scratch_after = [
        status for queue, sent, _, status, _ in ledger.published
        if queue == "scratch" and sent > scratch_gone_at
    ]  # fmt: skip
    assert scratch_after
    assert set(scratch_after) == {404}
    assert http.get("/v1/queues/scratch").status_code == 404

    store = redis.Redis.from_url(platform.env["REDIS_URL"])
    try:
        assert len(queue_ids_in_redis(store, tenant)) == 1  # the live "orders", nothing else
    finally:
        store.close()
