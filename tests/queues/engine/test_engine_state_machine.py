"""A hypothesis state machine over the message engine, against a real Redis and real rows.

Each example makes a fresh queue (or a 2-partition topic with one subscription, filtered or
not), with a dead-letter queue and max_delivery_attempts or without, with its visibility
timeout and retry backoff, through ``queues.services``; then drives it through the engine
functions directly (publish, pull, ack / nack / modify-deadline on current and stale ack
ids, housekeeping, purge, redrive) on a model clock: every call gets ``now_ms`` from the
machine and the ``advance`` rules move it, so leases expire, backoffs end and delays fall
due deterministically, also exactly on the millisecond.

The model predicts every answer exactly: which messages a pull delivers, in which order,
with which delivery_attempt; what a settle settles and which ack ids are stale; what a
publish returns (a repeated dedup id: the first message, nothing stored). After every step
the machine reads each message's state back from Redis (the streams, the pending lists, the
lease, retry and delay sets, the dead-letter stream) and checks that the published messages
are partitioned exactly into available, in flight, waiting (retry or delayed),
dead-lettered (with op-delivery-attempts == max_delivery_attempts) and gone (acked,
filtered out, purged): nothing in two places, nothing missing, nothing extra, every
delivery count, deadline and due time as modelled, stream order as published; and that
``consumer_stats`` and the usage counters agree. Settling stale ack ids must leave Redis
exactly as it was.

Where the engine may rightly do either of two things (a subscription's pull starts at a
partition it rotates), the model keeps both outcomes until Redis shows which one happened.

Not modelled: the dedup window's end (Redis expires dedup keys on its own clock, and an
example lasts well under the 5 minutes), retention trimming, seek, pulls from the
dead-letter queue, changing a queue's settings, several subscriptions on one topic.

The rows are made per example inside the test function's transaction (the ``acme``
fixture): ``Machine.TestCase`` is a plain ``unittest.TestCase``, which pytest-django gives
no database, so the machines run through ``run_state_machine_as_test`` in a test function.
The autouse fixture empties Redis around the test function, not between examples: each
example has its own queue or topic, and ``teardown`` deletes the rows (the plan's quotas
count them) and with them the Redis structures.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from kernel.redis_client import get_redis
from queues import selectors, services
from queues.engine import dataplane, streams
from queues.engine.messages import Outgoing, rfc3339_ms, validate_batch
from queues.engine.targets import (
    Consumer,
    Destination,
    queue_consumer,
    queue_destination,
    subscription_consumer,
    topic_destination,
)
from queues.models import Topic
from tests.engine import run
from tests.factories import TenantCtx, make_queue, make_subscription, make_topic

T0 = 1_800_000_000_000  # the model clock's start, in ms
MAX_BYTES = 262144

SETTINGS = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    database=None,  # no .hypothesis folder in the tree; failures print their steps
    suppress_health_check=[HealthCheck.too_slow],
)

READY, LEASED, RETRY, DELAYED, DEAD, GONE = "ready", "leased", "retry", "delayed", "dead", "gone"

# message id -> (state, partition, delivery count, deadline or due time)
View = dict[str, tuple[str, int | None, int, int | None]]

_names = itertools.count()

SETTLE_HOW = [
    ("ack", 0),
    ("nack", -1),  # the backoff policy
    ("nack", 0),
    ("nack", 700),
    ("nack", 2000),
    ("deadline", 0),  # deliverable now
    ("deadline", 1),
    ("deadline", 1500),
    ("deadline", 5000),
]


# delay_seconds, dedup_id, the color attribute, key (it picks a topic partition)
Spec = tuple[int | None, str | None, str | None, str | None]
MESSAGE = st.tuples(
    st.sampled_from([None, 0, 1, 2]),
    st.sampled_from([None, None, "a", "b"]),
    st.sampled_from([None, "red", "blue"]),
    st.sampled_from([None, "k1", "k2", "k3"]),
)
# Every example starts with some messages: swarm testing switches rules off per example,
# publish among them, and an example with nothing to deliver checks little.
FIRST_BATCH = st.lists(MESSAGE, min_size=1, max_size=6)


def _parse(ack_id: str) -> tuple[int, str, int]:
    """``<partition>.<entry id>.<attempt>``, as the engine makes them."""
    partition, entry, attempt = ack_id.split(".")
    return int(partition), entry, int(attempt)


def _entry_key(entry: str) -> tuple[int, int]:
    ms, seq = entry.split("-")
    return int(ms), int(seq)


def _cmsgpack(items: list[bytes]) -> bytes:
    """What Redis's ``cmsgpack.pack`` makes of a Lua array of strings: the delay-set member
    of a delayed message (publish.lua), so the machine can recognise it and knows the order
    of equal due times (ZRANGEBYSCORE breaks ties by member bytes)."""
    out = bytearray([0x90 | len(items)])  # fixarray: a message has at most 14 fields
    for item in items:
        n = len(item)
        if n < 32:
            out.append(0xA0 | n)
        elif n <= 0xFF:
            out += bytes([0xD9, n])
        elif n <= 0xFFFF:
            out += b"\xda" + n.to_bytes(2, "big")
        else:
            out += b"\xdb" + n.to_bytes(4, "big")
        out += item
    return bytes(out)


@dataclass
class Msg:
    """The model of one published message."""

    id: str
    body: int
    attrs: dict[str, str]
    published_at: int
    packed: bytes
    partition: int
    state: str = READY
    count: int = 0  # deliveries so far (the pending entry's delivery count)
    at: int | None = None  # lease deadline (LEASED) or when it may go (RETRY, DELAYED)
    entry: str | None = None  # stream entry id, once known
    slot: int | None = None  # position in its partition's log while in the stream
    dead_attempts: int = 0


@dataclass
class Model:
    """The engine as the contract (API.md) describes it, on the machine's clock."""

    partitions: int
    is_queue: bool
    visibility_ms: int
    max_attempts: int  # 0: no dead-letter queue (unlimited deliveries)
    backoff_min_ms: int
    backoff_max_ms: int
    default_delay: int
    filter: dict[str, str]
    now: int = T0
    msgs: dict[str, Msg] = field(default_factory=dict)
    # Per partition, every message in the order it joined the stream: [id, entry id or None].
    logs: list[list[list[Any]]] = field(default_factory=list)
    dead_order: list[str] = field(default_factory=list)  # the dead-letter stream, oldest first
    dedup: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: int = 0
    delivered: int = 0
    acked: int = 0

    def __post_init__(self) -> None:
        self.logs = [[] for _ in range(self.partitions)]

    # --- helpers ---------------------------------------------------------------------------

    def backoff_ms(self, count: int) -> int:
        if self.backoff_min_ms <= 0:
            return 0
        return min(self.backoff_min_ms * 2 ** (count - 1), self.backoff_max_ms)

    def matches(self, m: Msg) -> bool:
        return all(m.attrs.get(k) == v for k, v in self.filter.items())

    def in_state(self, partition: int, state: str) -> list[Msg]:
        return [m for m in self.msgs.values() if m.partition == partition and m.state == state]

    def join(self, m: Msg, entry: str | None = None) -> None:
        """``m`` is appended to its partition's stream (publish, due delay, redrive)."""
        log = self.logs[m.partition]
        m.slot = len(log)
        m.entry = entry
        log.append([m.id, entry])

    def learn_entry(self, m: Msg, entry: str) -> None:
        """Redis told us the entry id of ``m``: it must fit the order the model expects."""
        if m.entry is not None:
            assert m.entry == entry, (m.id, m.entry, entry)
            return
        assert m.slot is not None, m
        m.entry = entry
        self.logs[m.partition][m.slot][1] = entry
        known = [_entry_key(e) for _, e in self.logs[m.partition] if e is not None]
        assert known == sorted(set(known)), (
            "stream entries are not in the order the messages joined",
            self.logs[m.partition],
        )

    def pending_at(self, partition: int, entry: str) -> Msg | None:
        for m in self.msgs.values():
            if m.partition == partition and m.entry == entry and m.state in (LEASED, RETRY):
                return m
        return None

    def dead_letter(self, m: Msg) -> None:
        m.state, m.dead_attempts, m.at, m.slot = DEAD, m.count, None, None
        self.dead_order.append(m.id)

    def next_event(self) -> int | None:
        """The next time after now at which something changes by itself."""
        times = []
        for m in self.msgs.values():
            if m.state in (DELAYED, RETRY) and m.at is not None:
                times.append(m.at)
            elif m.state == LEASED and m.at is not None:
                times += [m.at, m.at + self.backoff_ms(m.count)]
        future = [t for t in times if t > self.now]
        return min(future) if future else None

    def waiting(self) -> bool:
        """Something the clock alone moves on: a lease, a retry or a delay."""
        return any(m.state in (LEASED, RETRY, DELAYED) for m in self.msgs.values())

    def live(self) -> int:
        """Messages in the source: neither acked nor dead-lettered."""
        return sum(m.state in (READY, LEASED, RETRY, DELAYED) for m in self.msgs.values())

    # --- the operations ----------------------------------------------------------------------

    def publish(self, batch: list[Outgoing], results: list[dict[str, Any]]) -> list[Any]:
        """The answer the engine must give for ``batch``; ``results`` only supplies what
        Redis chooses (entry ids, the round-robin partition of unkeyed topic messages)."""
        expected: list[dict[str, Any]] = []
        for o, r in zip(batch, results, strict=True):
            if o.dedup_id is not None and o.dedup_id in self.dedup:
                expected.append({**self.dedup[o.dedup_id], "duplicate": True})
                continue
            if self.partitions == 1:
                partition = 0
            elif o.key:
                partition = dataplane.partition_for(o.key, self.partitions)
            else:
                partition = r["partition"]
            fields = [b"i", o.id.encode(), b"b", o.body, b"e", o.encoding]
            if o.attributes:
                fields += [b"a", o.attributes]
            if o.key:
                fields += [b"k", o.key.encode()]
            fields += [b"t", str(self.now).encode()]
            m = Msg(
                id=o.id,
                body=orjson.loads(o.body),
                attrs=orjson.loads(o.attributes) if o.attributes else {},
                published_at=self.now,
                packed=_cmsgpack(fields),
                partition=partition,
            )
            self.msgs[m.id] = m
            delay = o.delay_seconds if o.delay_seconds is not None else self.default_delay
            offset = None
            if delay > 0:
                m.state, m.at = DELAYED, self.now + delay * 1000
            else:
                offset = r["offset"]
                assert isinstance(offset, str), r
                self.join(m)
                self.learn_entry(m, offset)
            record = {"id": m.id, "partition": partition, "offset": offset}
            if o.dedup_id is not None:
                self.dedup[o.dedup_id] = record
            expected.append({**record, "duplicate": False})
            self.published += 1
        return expected

    def pull(self, want: int, vis: int, first: int) -> list[tuple[int, str, int]]:
        """Lease up to ``want`` messages, partitions taken from ``first`` on; the deliveries
        as (partition, message id, delivery attempt), in the order the engine answers."""
        now = self.now
        out: list[tuple[int, str, int]] = []
        got = 0
        for step in range(self.partitions):
            p = (first + step) % self.partitions
            # Due delays join the stream, earliest first.
            due = [m for m in self.in_state(p, DELAYED) if m.at is not None and m.at <= now]
            for m in sorted(due, key=lambda m: (m.at, m.packed))[:500]:
                m.state, m.at = READY, None
                self.join(m)
            # Expired leases: dead letters at the limit, the others wait out their backoff
            # or, when there is room in this pull and no backoff left, are delivered again.
            again: list[Msg] = []
            expired = [m for m in self.in_state(p, LEASED) if m.at is not None and m.at <= now]
            for m in sorted(expired, key=self._zset_order)[: want + 200]:
                assert m.at is not None
                if self.max_attempts and m.count >= self.max_attempts:
                    self.dead_letter(m)
                    continue
                wait = self.backoff_ms(m.count)
                if m.at + wait > now or len(again) + got >= want:
                    m.state, m.at = RETRY, m.at + wait
                else:
                    again.append(m)
            if len(again) + got < want:
                ready = [m for m in self.in_state(p, RETRY) if m.at is not None and m.at <= now]
                again += sorted(ready, key=self._zset_order)[: want - got - len(again)]
            for m in again:
                m.state, m.count, m.at = LEASED, m.count + 1, now + vis
                out.append((p, m.id, m.count))
                got += 1
            # New messages, in stream order. A filter reads ahead: matching messages past
            # what was asked for go back undelivered (retry, due now, delivery count 0);
            # messages the filter rejects are settled for this subscription, never delivered.
            fresh = sorted(self.in_state(p, READY), key=lambda m: m.slot or 0)
            read = rounds = 0
            while got < want and rounds < 10:
                rounds += 1
                need = want - got
                if self.filter:
                    need = max(need, 50)
                batch = fresh[read : read + need]
                read += len(batch)
                if not batch:
                    break
                for m in batch:
                    if self.filter and not self.matches(m):
                        m.state, m.slot = GONE, None
                    elif got >= want:
                        m.state, m.count, m.at = RETRY, 0, now
                    else:
                        m.state, m.count, m.at = LEASED, 1, now + vis
                        out.append((p, m.id, 1))
                        got += 1
                if len(batch) < need:
                    break
            if got >= want and want > 0:
                break
        self.delivered += got
        return out

    @staticmethod
    def _zset_order(m: Msg) -> tuple[int, str]:
        """Sorted sets order equal scores by member (the entry id) bytes."""
        assert m.at is not None, m
        assert m.entry is not None, m
        return m.at, m.entry

    def settle(
        self, mode: str, triples: list[tuple[int, str, int]], ms: int
    ) -> tuple[int, list[int]]:
        """(how many settled, the positions of the stale ack ids)."""
        settled = 0
        stale: list[int] = []
        for position, (p, entry, attempt) in enumerate(triples):
            m = self.pending_at(p, entry)
            if m is None:
                continue  # acked, dead-lettered, purged or redriven: nothing to settle
            assert m.at is not None
            if m.state != LEASED or m.at <= self.now or m.count != attempt:
                stale.append(position)
                continue
            settled += 1
            if mode == "ack":
                m.state, m.at, m.slot = GONE, None, None
            elif mode == "deadline" and ms > 0:
                m.at = self.now + ms
            elif self.max_attempts and m.count >= self.max_attempts:
                self.dead_letter(m)
            else:
                wait = 0 if mode == "deadline" else ms if ms >= 0 else self.backoff_ms(m.count)
                m.state, m.at = RETRY, self.now + wait
        if mode == "ack":
            self.acked += settled
        return settled, stale

    def purge(self) -> int:
        purged = 0
        for m in self.msgs.values():
            if m.state in (READY, LEASED, RETRY, DELAYED):
                m.state, m.at, m.slot = GONE, None, None
                purged += 1
        return purged

    def redrive(self, max_messages: int | None) -> int:
        moving = self.dead_order[: max_messages if max_messages is not None else None]
        del self.dead_order[: len(moving)]
        for mid in moving:
            m = self.msgs[mid]
            m.state, m.count, m.dead_attempts = READY, 0, 0
            self.join(m)
        return len(moving)

    # --- what Redis must show ----------------------------------------------------------------

    def view(self) -> View:
        out: View = {}
        for m in self.msgs.values():
            if m.state == GONE:
                continue
            if m.state == DEAD:
                out[m.id] = (DEAD, None, m.dead_attempts, None)
            elif m.state == READY:
                out[m.id] = (READY, m.partition, 0, None)
            else:
                out[m.id] = (m.state, m.partition, m.count, m.at)
        return out

    def stats(self) -> dict[str, int]:
        """The stats as streams.consumer_stats computes them. Until the next pull or
        housekeeping moves them on, an expired lease counts as available even when it has
        a backoff to wait out or is a last attempt about to be dead-lettered, and so does
        an unread message a filter rejects: a pull at that moment delivers none of them."""
        now = self.now
        counts = {"available": 0, "in_flight": 0, "delayed": 0}
        for m in self.msgs.values():
            if m.state == READY:
                counts["available"] += 1
            elif m.state == LEASED:
                assert m.at is not None
                counts["in_flight" if m.at > now else "available"] += 1
            elif m.state in (RETRY, DELAYED):
                assert m.at is not None
                counts["available" if m.at <= now else "delayed"] += 1
        return counts


class EngineMachine(RuleBasedStateMachine):
    """The rules and checks shared by the queue and the subscription machines; a subclass
    makes the resource in its ``initialize`` rule and sets ``dest``, ``consumer``,
    ``dlq`` and ``model``."""

    ack_ids = Bundle("ack_ids")

    def __init__(self, ctx: TenantCtx) -> None:
        super().__init__()
        self.ctx = ctx
        self.tid = str(ctx.tenant.id)
        self.redis = get_redis()
        self.model: Model | None = None
        self.candidates: list[Model] = []  # models that explain the last pull's answer
        self.dest: Destination
        self.consumer: Consumer
        self.dlq: Consumer | None = None
        self.usage_base: dict[str, int] = {}
        self.issued: list[str] = []  # every ack id handed out, current or stale
        self.rows: list[Any] = []  # what teardown deletes, in this order

    @property
    def m(self) -> Model:
        assert self.model is not None
        return self.model

    def _started(self) -> None:
        self.usage_base = self._usage()
        assert self.model is not None
        self.candidates = [self.model]

    # --- rules -------------------------------------------------------------------------------

    @rule(specs=st.lists(MESSAGE, min_size=1, max_size=4))
    def publish(self, specs: list[Spec]) -> None:
        """Publish a batch; duplicates of a dedup id return the first message and store
        nothing (a batch of nothing but duplicates leaves Redis exactly as it was)."""
        messages = []
        for delay, dedup, color, key in specs:
            body = next(_names)
            raw: dict[str, Any] = {"body": body}
            if delay is not None:
                raw["delay_seconds"] = delay
            if dedup is not None:
                raw["dedup_id"] = dedup
            if color is not None:
                raw["attributes"] = {"color": color}
            if key is not None:
                raw["key"] = key
            messages.append(raw)
        batch = validate_batch(
            {"messages": messages}, max_message_bytes=MAX_BYTES, now_ms=self.m.now
        )
        all_duplicates = all(o.dedup_id is not None and o.dedup_id in self.m.dedup for o in batch)
        before = self._raw_state() if all_duplicates else None
        results = run(dataplane.apublish(self.dest, batch, self.m.now))
        assert results == self.m.publish(batch, results)
        if any(r["duplicate"] for r in results):
            event("publish: a duplicate dedup id")
        if before is not None:
            assert self._raw_state() == before

    @rule(
        target=ack_ids,
        count=st.integers(1, 4),
        visibility_ms=st.sampled_from([None, None, 0, 500, 1000, 4000]),
    )
    def pull(self, count: int, visibility_ms: int | None) -> Any:
        return multiple(*self._pull(count, visibility_ms))

    @precondition(lambda self: self.model is not None and self.m.waiting())
    @rule()
    def housekeeping(self) -> None:
        """What beat runs for every consumer: a pull of nothing."""
        assert self._pull(0, None) == []

    @rule(ids=st.lists(ack_ids, min_size=1, max_size=3), how=st.sampled_from(SETTLE_HOW))
    def settle(self, ids: list[str], how: tuple[str, int]) -> None:
        """Ack, nack or modify-deadline any ack ids handed out, current and stale alike."""
        self._settle(ids, *how)

    @precondition(lambda self: self.model is not None and bool(self._current_ids()))
    @rule(data=st.data(), how=st.sampled_from(SETTLE_HOW))
    def settle_current(self, data: st.DataObject, how: tuple[str, int]) -> None:
        """The same on ack ids of leases held now (most handed out ids soon are not)."""
        current = self._current_ids()
        self._settle(data.draw(st.lists(st.sampled_from(current), min_size=1, max_size=3)), *how)

    def _settle(self, ids: list[str], mode: str, ms: int) -> None:
        settled, stale = run(dataplane.asettle(self.consumer, mode, ids, ms=ms, now_ms=self.m.now))
        want_settled, want_stale = self.m.settle(mode, [_parse(i) for i in ids], ms)
        assert (settled, stale) == (want_settled, [ids[i] for i in want_stale])
        event(f"settle: {mode} settled {min(settled, 2)}+, stale {min(len(stale), 1)}+")

    def _current_ids(self) -> list[str]:
        inert = set(self._inert_ids())
        return [ack_id for ack_id in self.issued if ack_id not in inert]

    def _inert_ids(self) -> list[str]:
        """Ack ids whose settling must change nothing: stale ones, or ones whose message is
        no longer pending (acked, dead-lettered, purged, redriven)."""
        inert = []
        for ack_id in self.issued:
            p, entry, attempt = _parse(ack_id)
            m = self.m.pending_at(p, entry)
            if m is None or m.state != LEASED or (m.at or 0) <= self.m.now or m.count != attempt:
                inert.append(ack_id)
        return inert

    @precondition(lambda self: self.model is not None and bool(self._inert_ids()))
    @rule(
        data=st.data(),
        how=st.sampled_from(
            [("ack", 0), ("nack", -1), ("nack", 0), ("deadline", 0), ("deadline", 9000)]
        ),
    )
    def settle_inert(self, data: st.DataObject, how: tuple[str, int]) -> None:
        """Settling stale or settled ack ids changes nothing at all in Redis."""
        mode, ms = how
        ids = data.draw(st.lists(st.sampled_from(self._inert_ids()), min_size=1, max_size=3))
        before = self._raw_state()
        settled, stale = run(dataplane.asettle(self.consumer, mode, ids, ms=ms, now_ms=self.m.now))
        want_settled, want_stale = self.m.settle(mode, [_parse(i) for i in ids], ms)
        assert want_settled == 0
        assert (settled, stale) == (0, [ids[i] for i in want_stale])
        assert self._raw_state() == before

    @rule(ms=st.sampled_from([1, 499, 1000, 1999, 3000, 10_000]))
    def advance(self, ms: int) -> None:
        self.m.now += ms

    @precondition(lambda self: self.model is not None and self.m.next_event() is not None)
    @rule(offset=st.sampled_from([-1, 0, 1]))
    def advance_to_next_event(self, offset: int) -> None:
        """Move the clock to just before, onto or just past the next deadline or due time."""
        moment = self.m.next_event()
        assert moment is not None
        self.m.now = max(self.m.now, moment + offset)

    # --- the engine calls and their checks ---------------------------------------------------

    def _pull(self, count: int, visibility_ms: int | None) -> list[str]:
        dead_before = set(self.m.dead_order)
        pulled = run(
            dataplane.apull(
                self.consumer, count=count, now_ms=self.m.now, visibility_ms=visibility_ms
            )
        )
        got = [(d["partition"], d["id"], d["delivery_attempt"]) for d in pulled.messages]
        vis = self.consumer.visibility_ms if visibility_ms is None else visibility_ms
        # The engine rotates the partition a pull starts at. Both orders are right, and the
        # answer does not always tell which was taken (a filtered message read or not yet,
        # the order of new dead letters): every model that explains it is kept until the
        # next look at Redis picks one (every_message_exactly_once).
        predictions = []
        candidates = []
        for first in range(self.m.partitions):
            candidate = deepcopy(self.m)
            predicted = candidate.pull(count, vis, first)
            predictions.append(predicted)
            if predicted == got:
                candidates.append(candidate)
        assert candidates, f"pulled {got}, the model expected one of {predictions}"
        self.candidates = candidates
        self.model = candidates[0]
        if len(self.m.dead_order) > len(dead_before):
            event("pull: dead-lettered an expired last attempt")
        if any(attempt > 1 for _, _, attempt in got):
            event("pull: delivered again")
        if any(m.state == RETRY and m.count == 0 for m in self.m.msgs.values()):
            event("pull: read ahead past a filter")
        for d in pulled.messages:
            msg = self.m.msgs[d["id"]]
            assert d["id"] not in dead_before, "a dead letter was delivered from the source"
            if self.m.max_attempts:
                assert d["delivery_attempt"] <= self.m.max_attempts
            assert orjson.loads(orjson.dumps(d["body"])) == msg.body
            assert orjson.loads(orjson.dumps(d["attributes"])) == msg.attrs
            assert d["publish_time"] == rfc3339_ms(msg.published_at)
            for candidate in candidates:
                candidate.learn_entry(candidate.msgs[d["id"]], d["offset"])
            assert d["ack_id"] == f"{d['partition']}.{d['offset']}.{d['delivery_attempt']}"
            self.issued.append(d["ack_id"])
        if got:
            assert pulled.next_due_ms is None
        else:
            self._check_next_due(pulled.next_due_ms)
        return [d["ack_id"] for d in pulled.messages]

    def _check_next_due(self, next_due: int | None) -> None:
        """A long poll that got nothing sleeps until next_due: never past the moment a
        message becomes deliverable, and forever only when nothing waits."""
        waiting = [m for m in self.m.msgs.values() if m.state in (LEASED, RETRY, DELAYED)]
        if not waiting:
            assert next_due is None
            return
        assert next_due is not None
        deliverable = []
        for m in waiting:
            assert m.at is not None
            if m.state != LEASED:
                deliverable.append(m.at)
            elif not (self.m.max_attempts and m.count >= self.m.max_attempts):
                deliverable.append(m.at + self.m.backoff_ms(m.count))
        if deliverable:
            assert next_due <= min(deliverable), (next_due, deliverable)

    # --- reading Redis ------------------------------------------------------------------------

    def _observe(self) -> tuple[View, list[str], dict[str, str]]:
        """Every message's state as Redis holds it, the dead-letter stream's message ids in
        order and the entry id of each message in a stream; checking on the way that no
        message is in two places and that no lease or retry entry is orphaned."""
        c, r = self.consumer, self.redis
        packed = {m.packed: m.id for m in self.m.msgs.values()}
        view: View = {}
        letters: list[str] = []
        entries_of: dict[str, str] = {}

        def put(mid: str, value: tuple[str, int | None, int, int | None]) -> None:
            assert mid not in view, f"message {mid} is both {view[mid]} and {value}"
            view[mid] = value

        for p in range(c.partitions):
            stream = c.streams[p]
            group = next(g for g in r.xinfo_groups(stream) if g["name"].decode() == c.group)
            last = _entry_key(group["last-delivered-id"].decode())
            pending = {
                row["message_id"].decode(): row["times_delivered"]
                for row in r.xpending_range(stream, c.group, "-", "+", 10_000)
            }
            leases = {k.decode(): int(v) for k, v in r.zrange(c.leases[p], 0, -1, withscores=True)}
            retries = {
                k.decode(): int(v) for k, v in r.zrange(c.retries[p], 0, -1, withscores=True)
            }
            assert not set(leases) & set(retries), "an entry both leased and waiting to retry"
            assert set(leases) | set(retries) == set(pending), (
                "every pending entry is in exactly one of the lease and retry sets",
                pending,
                leases,
                retries,
            )
            seen = set()
            for raw_id, fields in r.xrange(stream):
                entry = raw_id.decode()
                seen.add(entry)
                mid = fields[b"i"].decode()
                if entry in pending:
                    if entry in leases:
                        put(mid, (LEASED, p, pending[entry], leases[entry]))
                    else:
                        put(mid, (RETRY, p, pending[entry], retries[entry]))
                elif _entry_key(entry) > last:
                    put(mid, (READY, p, 0, None))
                else:
                    # delivered and settled: a queue deletes such entries, a topic keeps them
                    assert not c.is_queue, f"settled entry {entry} left in the queue's stream"
                    continue
                entries_of[mid] = entry
            assert set(pending) <= seen, "a pending entry without its message"
            for member, score in r.zrange(c.delays[p], 0, -1, withscores=True):
                assert member in packed, f"an unknown delayed message {member!r}"
                put(packed[member], (DELAYED, p, 0, int(score)))
        if c.dlq_stream:
            for _, fields in r.xrange(c.dlq_stream):
                mid = fields[b"i"].decode()
                attrs = orjson.loads(fields[b"a"])
                msg = self.m.msgs[mid]
                assert attrs == {
                    **msg.attrs,
                    "op-dead-letter-source": c.label,
                    "op-dead-letter-reason": "max_delivery_attempts",
                    "op-delivery-attempts": str(self.m.max_attempts),
                    "op-original-id": mid,
                }, attrs
                assert orjson.loads(fields[b"b"]) == msg.body
                put(mid, (DEAD, None, int(attrs["op-delivery-attempts"]), None))
                letters.append(mid)
        return view, letters, entries_of

    def _raw_state(self) -> dict[str, Any]:
        """Everything of this consumer in Redis, for "changes nothing" comparisons (the
        pending list without its idle times, which run with the real clock)."""
        c, r = self.consumer, self.redis
        state: dict[str, Any] = {}
        all_streams = [*c.streams, *([c.dlq_stream] if c.dlq_stream else [])]
        for stream in all_streams:
            groups = r.xinfo_groups(stream)
            state[stream] = (
                r.xrange(stream),
                [sorted(g.items()) for g in groups],
                {
                    g["name"]: [
                        (row["message_id"], row["consumer"], row["times_delivered"])
                        for row in r.xpending_range(stream, g["name"], "-", "+", 10_000)
                    ]
                    for g in groups
                },
            )
        for key in [*c.delays, *c.leases, *c.retries]:
            state[key] = r.zrange(key, 0, -1, withscores=True)
        state[c.usage] = r.hgetall(c.usage)
        return state

    def _usage(self) -> dict[str, int]:
        totals = {"p": 0, "d": 0, "a": 0}
        for name, value in self.redis.hgetall(self.consumer.usage).items():
            matched = re.fullmatch(r"\d+:(p|d|a)", name.decode())
            if matched:
                totals[matched.group(1)] += int(value)
        return totals

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def every_message_exactly_once(self) -> None:
        """The published messages are partitioned exactly by state, with the model's
        delivery counts, deadlines and due times; the stats and the usage counters agree."""
        if self.model is None:
            return
        view, letters, entries = self._observe()
        matching = [c for c in self.candidates if (c.view(), c.dead_order) == (view, letters)]
        if not matching:  # show the difference from the first explanation
            assert (view, letters) == (self.m.view(), self.m.dead_order)
        self.model = matching[0]
        self.candidates = [self.model]
        for mid, entry in entries.items():
            self.m.learn_entry(self.m.msgs[mid], entry)
        stats = streams.consumer_stats(self.redis, self.consumer, self.m.now)
        del stats["oldest_age_seconds"]  # entry ids carry Redis's clock, not the model's
        assert stats == self.m.stats()
        usage = self._usage()
        assert {k: usage[k] - self.usage_base[k] for k in usage} == {
            "p": self.m.published,
            "d": self.m.delivered,
            "a": self.m.acked,
        }


class QueueMachine(EngineMachine):
    """One queue, optionally with a dead-letter queue and max_delivery_attempts."""

    @initialize(
        visibility=st.sampled_from([1, 2, 5]),
        max_attempts=st.sampled_from([None, 1, 2, 3]),
        backoff=st.sampled_from([(0, 0), (0, 3), (1, 1), (1, 4)]),
        delay=st.sampled_from([0, 0, 1]),
        first=FIRST_BATCH,
    )
    def make_queue(
        self,
        visibility: int,
        max_attempts: int | None,
        backoff: tuple[int, int],
        delay: int,
        first: list[Spec],
    ) -> None:
        name = f"sm-{next(_names)}"
        dead_name, dead = None, None
        if max_attempts is not None:
            dead_name = f"{name}-dead"
            dead = make_queue(tenant=self.ctx.tenant, name=dead_name)
            self.dlq = queue_consumer(self.tid, selectors.queue_document(dead))
        queue = make_queue(
            tenant=self.ctx.tenant,
            name=name,
            visibility_timeout=visibility,
            delay_seconds=delay,
            max_delivery_attempts=max_attempts,
            dead_letter_queue=dead_name,
            retry_backoff={"min_seconds": backoff[0], "max_seconds": backoff[1]},
        )
        self.rows = [queue, dead] if dead else [queue]
        doc = selectors.queue_document(queue)
        self.dest = queue_destination(self.tid, doc)
        self.consumer = queue_consumer(self.tid, doc)
        self.model = Model(
            partitions=1,
            is_queue=True,
            visibility_ms=visibility * 1000,
            max_attempts=max_attempts or 0,
            backoff_min_ms=backoff[0] * 1000,
            backoff_max_ms=backoff[1] * 1000,
            default_delay=delay,
            filter={},
        )
        self._started()
        self.publish(first)

    @precondition(lambda self: self.model is not None and self.m.live() >= 3)
    @rule()
    def purge(self) -> None:
        """Purge removes every stored, leased, waiting and delayed message; not the DLQ's."""
        purged = streams.purge(self.redis, self.consumer)
        assert purged == self.m.purge()
        event(f"purge: {min(purged, 1)}+ messages")

    @precondition(lambda self: self.model is not None and bool(self.m.dead_order))
    @rule(max_messages=st.sampled_from([None, 1, 2]))
    def redrive(self, max_messages: int | None) -> None:
        """Dead letters go back to the queue, oldest first, as new messages (attempt 1 next)."""
        assert self.dlq is not None
        moved = streams.redrive(
            self.redis,
            self.dlq,
            targets={self.consumer.label: (self.consumer.streams[0], self.consumer.channel)},
            default=None,
            max_messages=max_messages,
        )
        assert moved == {"moved": self.m.redrive(max_messages), "skipped": 0}
        event("redrive")

    def teardown(self) -> None:
        """Delete the rows (the plan's quotas count them, and shrinking runs many
        examples) and with them the Redis structures."""
        for row in self.rows:
            services.queue_delete(tenant=self.ctx.tenant, actor="test", queue=row)
        if self.rows:  # its dedup keys (the service forgets them only after a commit)
            streams.forget_dedup(self.redis, self.dest.dedup_prefix)


class SubscriptionMachine(EngineMachine):
    """One subscription on a 2-partition topic, optionally filtered, optionally with a
    dead-letter queue. A pull may start at either partition (the engine rotates), so the
    model accepts the answer of either order."""

    @initialize(
        visibility=st.sampled_from([1, 3]),
        max_attempts=st.sampled_from([None, 1, 2]),
        backoff=st.sampled_from([(0, 0), (1, 2)]),
        filtered=st.booleans(),
        first=FIRST_BATCH,
    )
    def make_subscription(
        self,
        visibility: int,
        max_attempts: int | None,
        backoff: tuple[int, int],
        filtered: bool,
        first: list[Spec],
    ) -> None:
        name = f"sm-{next(_names)}"
        dead_name, dead = None, None
        if max_attempts is not None:
            dead_name = f"{name}-dead"
            dead = make_queue(tenant=self.ctx.tenant, name=dead_name)
            self.dlq = queue_consumer(self.tid, selectors.queue_document(dead))
        topic = make_topic(tenant=self.ctx.tenant, name=name, partitions=2)
        the_filter = {"color": "red"} if filtered else {}
        sub = make_subscription(
            tenant=self.ctx.tenant,
            name=name,
            topic=name,
            visibility_timeout=visibility,
            max_delivery_attempts=max_attempts,
            dead_letter_queue=dead_name,
            retry_backoff={"min_seconds": backoff[0], "max_seconds": backoff[1]},
            filter={"attributes": the_filter} if filtered else None,
        )
        self.rows = [topic, dead] if dead else [topic]
        self.dest = topic_destination(self.tid, selectors.topic_document(topic))
        self.consumer = subscription_consumer(self.tid, selectors.subscription_document(sub))
        self.model = Model(
            partitions=2,
            is_queue=False,
            visibility_ms=visibility * 1000,
            max_attempts=max_attempts or 0,
            backoff_min_ms=backoff[0] * 1000,
            backoff_max_ms=backoff[1] * 1000,
            default_delay=0,
            filter=the_filter,
        )
        self._started()
        self.publish(first)

    def teardown(self) -> None:
        for row in self.rows:
            if isinstance(row, Topic):
                services.topic_delete(tenant=self.ctx.tenant, actor="test", topic=row)
            else:
                services.queue_delete(tenant=self.ctx.tenant, actor="test", queue=row)
        if self.rows:  # its dedup keys (the service forgets them only after a commit)
            streams.forget_dedup(self.redis, self.dest.dedup_prefix)


def _factory(
    machine: type[EngineMachine], ctx: TenantCtx, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], EngineMachine]:
    def make() -> EngineMachine:
        # The engine's round-robin (unkeyed topic messages, a pull's first partition) is
        # process-wide; restarting it per example makes every example replay the same.
        monkeypatch.setattr(dataplane, "_round_robin", itertools.count())
        return machine(ctx)

    return make


def test_queue_engine_state_machine(acme: TenantCtx, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever sequence of publishes, pulls, settles, housekeeping, purges, redrives and
    clock moves: every published message is acked, in flight, available, waiting or
    dead-lettered, exactly once; never delivered past max_delivery_attempts; stale ack ids
    change nothing; a duplicate dedup id stores nothing."""
    run_state_machine_as_test(_factory(QueueMachine, acme, monkeypatch), settings=SETTINGS)


def test_subscription_engine_state_machine(
    acme: TenantCtx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on a subscription of a 2-partition topic, with or without a filter: a
    message the filter rejects is never delivered."""
    run_state_machine_as_test(_factory(SubscriptionMachine, acme, monkeypatch), settings=SETTINGS)
