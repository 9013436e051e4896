"""Everything else the engine does to streams: create and delete their Redis structures,
stats, peeking, reading the log, purge, redrive, seek, retention, positions and rebuilds.
These serve the control plane and Celery, so they are synchronous."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis
from redis.client import Pipeline
from redis.exceptions import ResponseError

from kernel import redis_keys
from kernel.errors import InvalidRequest
from kernel.limits import is_stream_id
from kernel.redis_keys import dedup_scan_pattern
from queues.engine import dataplane, scripts
from queues.engine.dataplane import Gone
from queues.engine.messages import delivered, fields_dict
from queues.engine.targets import (
    QUEUE_GROUP,
    Consumer,
    fair_keys,
    queue_keys,
    subscription_group,
    subscription_partition_keys,
    topic_channel,
    topic_partition_keys,
)

MAX_ID = "18446744073709551615"

#: An XRANGE entry from the engine's clients, which never decode replies: the id and the
#: fields are bytes, and a range holds no deleted entry (redis-py's type allows str and None
#: for clients that decode and for XCLAIM's replies).
Entry = tuple[bytes, dict[bytes, bytes]]


def _xrange(client: redis.Redis, stream: str, *, start: str = "-", count: int) -> list[Entry]:
    return cast("list[Entry]", client.xrange(stream, min=start, count=count))


def _create_group(client: redis.Redis, stream: str, group: str, start: str) -> bool:
    """Create a consumer group (and its stream); False when it already existed."""
    try:
        client.xgroup_create(stream, group, start, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    return True


def queue_create(client: redis.Redis, tenant_id: str, queue_id: str) -> None:
    _create_group(client, queue_keys(tenant_id, queue_id)["stream"], QUEUE_GROUP, "0")


def _drop(
    client: redis.Redis,
    *,
    delete: list[str],
    channel: str,
    group_on: list[str] | None = None,
    group: str = "",
) -> None:
    """Delete structures atomically and wake their long polls (see drop.lua)."""
    destroy = group_on or []
    scripts.DROP.run(client, [*destroy, *delete], [channel, group, len(destroy)])


def queue_drop(client: redis.Redis, tenant_id: str, queue_id: str) -> None:
    """Delete a queue's stream, delay, lease and retry sets in one step. From then on every
    script finds the queue gone and writes nothing (its dedup keys: :func:`forget_dedup`)."""
    keys = queue_keys(tenant_id, queue_id)
    _drop(
        client,
        delete=[
            keys["stream"],
            keys["delay"],
            keys["lease"],
            keys["retry"],
            *fair_keys(keys["lease"]),
            redis_keys.queue_backlog(tenant_id, queue_id),
        ],
        channel=keys["channel"],
    )


def forget_dedup(client: redis.Redis, prefix: str) -> None:
    """Delete the dedup keys under ``prefix`` (a deleted queue's or topic's). They expire
    within the dedup window anyway; this only returns the memory sooner."""
    batch = []
    for key in client.scan_iter(match=dedup_scan_pattern(prefix), count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)


def topic_create(client: redis.Redis, tenant_id: str, topic_id: str, partitions: int) -> None:
    """Create each partition's (empty) stream: a topic is alive in Redis while they exist, and
    a publish to a topic whose streams are missing stores nothing. Existing streams are kept."""
    pipe = client.pipeline(transaction=True)
    for p in range(partitions):
        stream = topic_partition_keys(tenant_id, topic_id, p)["stream"]
        # Redis makes an empty stream only together with a consumer group.
        pipe.xgroup_create(stream, _EMPTY_GROUP, "$", mkstream=True)
        pipe.xgroup_destroy(stream, _EMPTY_GROUP)
    pipe.execute(raise_on_error=False)  # BUSYGROUP cannot happen: the group is never kept


_EMPTY_GROUP = "op.create"


def topic_drop(
    client: redis.Redis,
    tenant_id: str,
    topic_id: str,
    partitions: int,
    subscription_ids: list[str],
) -> None:
    """Delete a topic's streams and delay sets with its subscriptions' lease and retry sets
    in one step (deleting a stream deletes its consumer groups)."""
    keys: list[str] = []
    for p in range(partitions):
        part = topic_partition_keys(tenant_id, topic_id, p)
        keys += [part["stream"], part["delay"]]
        for sub_id in subscription_ids:
            own = subscription_partition_keys(tenant_id, sub_id, p)
            keys += [own["lease"], own["retry"]]
    keys.append(redis_keys.topic_backlog(tenant_id, topic_id))
    _drop(client, delete=keys, channel=topic_channel(tenant_id, topic_id))


def subscription_create(
    client: redis.Redis,
    tenant_id: str,
    topic_id: str,
    partitions: int,
    subscription_id: str,
    start_at: str,
) -> None:
    start = "0" if start_at == "earliest" else "$"
    group = subscription_group(subscription_id)
    for p in range(partitions):
        _create_group(client, topic_partition_keys(tenant_id, topic_id, p)["stream"], group, start)


def subscription_drop(
    client: redis.Redis, tenant_id: str, topic_id: str, partitions: int, subscription_id: str
) -> None:
    """Destroy a subscription's group on every partition and delete its lease and retry sets,
    in one step; the topic's streams stay."""
    streams_: list[str] = []
    own: list[str] = []
    for p in range(partitions):
        streams_.append(topic_partition_keys(tenant_id, topic_id, p)["stream"])
        keys = subscription_partition_keys(tenant_id, subscription_id, p)
        own += [keys["lease"], keys["retry"]]
    _drop(
        client,
        delete=own,
        channel=topic_channel(tenant_id, topic_id),
        group_on=streams_,
        group=subscription_group(subscription_id),
    )


# --- stats ------------------------------------------------------------------------------------


def current_stats(
    client: redis.Redis, consumers: list[Consumer], now_ms: int
) -> list[dict[str, int]]:
    """:func:`consumer_stats` of each consumer as a pull would see it now: first the work that
    is due is done (due delays join the stream, expired leases go to their backoff or, at
    max_delivery_attempts, to the dead-letter queue), as beat does every few seconds, so an
    expired lease with a backoff to wait out counts as delayed, not available, and a last
    attempt is already a dead letter. (A filtered subscription still counts unread messages
    its filter will skip as available: telling them apart would mean reading them.)

    One pipelined round trip for every consumer however many there are (after the pipeline's
    SCRIPT EXISTS, see ``Script.queue``): the due work's scripts first, then the counts, which
    Redis runs in that order on the one connection, so the counts see the work done. One more
    only when subscriptions have unread messages (see :func:`_tally`)."""
    if not consumers:
        return []
    pipe = client.pipeline(transaction=False)
    for c in consumers:
        keys, args = dataplane.pull_call(c, 0, None, now_ms)
        scripts.PULL.queue(pipe, keys, args)
    for c in consumers:
        _queue_counts(pipe, c, now_ms)
    replies = pipe.execute(raise_on_error=False)
    return _tally(client, consumers, replies[len(consumers) :], now_ms)


def consumer_stats(client: redis.Redis, c: Consumer, now_ms: int) -> dict[str, int]:
    """available / in_flight / delayed / oldest_age_seconds, summed over partitions.

    available counts messages a pull would deliver now (new, expired leases, retries and
    delays that are due: a pull moves those first); in_flight counts held leases; delayed
    counts delayed messages and retries not yet due; the oldest age is that of the oldest
    message not yet acknowledged."""
    pipe = client.pipeline(transaction=False)
    _queue_counts(pipe, c, now_ms)
    return _tally(client, [c], pipe.execute(raise_on_error=False), now_ms)[0]


#: How many replies :func:`_queue_counts` adds to a pipeline per partition.
_COUNTS_PER_PARTITION = 10


def _queue_counts(pipe: Pipeline, c: Consumer, now_ms: int) -> None:
    """Add what :func:`_tally` reads of each of ``c``'s partitions to ``pipe``."""
    for p in range(c.partitions):
        stream = c.streams[p]
        pipe.xinfo_groups(stream)
        pipe.xlen(stream)
        pipe.zcard(c.leases[p])
        pipe.zcount(c.leases[p], "-inf", now_ms)
        pipe.zcard(c.retries[p])
        pipe.zcount(c.retries[p], "-inf", now_ms)
        pipe.zcard(c.delays[p])
        pipe.zcount(c.delays[p], "-inf", now_ms)
        pipe.xpending(stream, c.group)
        pipe.xrange(stream, count=1)


@dataclass
class _Tally:
    available: int = 0
    in_flight: int = 0
    delayed: int = 0
    oldest_ms: int | None = None

    def saw(self, entry_id: bytes) -> None:
        """Note an unacknowledged message's id for the oldest age."""
        ms = int(entry_id.split(b"-")[0])
        self.oldest_ms = ms if self.oldest_ms is None else min(self.oldest_ms, ms)

    def stats(self, now_ms: int) -> dict[str, int]:
        oldest = self.oldest_ms
        return {
            "available": self.available,
            "in_flight": self.in_flight,
            "delayed": self.delayed,
            "oldest_age_seconds": max(0, (now_ms - oldest) // 1000) if oldest else 0,
        }


def _tally(
    client: redis.Redis, consumers: list[Consumer], replies: list[Any], now_ms: int
) -> list[dict[str, int]]:
    """The stats of each consumer from its replies to :func:`_queue_counts`, in order. A
    partition whose group is missing counts nothing. A subscription's oldest unread message
    is the first entry after its group's last-delivered id, which only those replies tell: the
    partitions with unread messages are read for it in one more pipeline, all together."""
    tallies = [_Tally() for _ in consumers]
    unread: list[tuple[_Tally, str, str]] = []  # (whose, stream, XRANGE start)
    at = 0
    for c, tally in zip(consumers, tallies, strict=True):
        for p in range(c.partitions):
            (groups, length, leases, expired, retries, retries_due, delays, delays_due, pending,
             head) = replies[at : at + _COUNTS_PER_PARTITION]  # fmt: skip
            at += _COUNTS_PER_PARTITION
            if isinstance(groups, Exception):
                continue
            group = next((g for g in groups if g["name"].decode() == c.group), None)
            if group is None:
                continue
            if c.is_queue:
                undelivered = length - (pending["pending"] if isinstance(pending, dict) else 0)
            else:
                lag = group.get("lag")
                undelivered = lag if isinstance(lag, int) else 0
            tally.in_flight += leases - expired
            tally.available += max(undelivered, 0) + expired + retries_due + delays_due
            tally.delayed += (retries - retries_due) + (delays - delays_due)
            if isinstance(pending, dict) and pending.get("pending"):
                tally.saw(pending["min"])
            if c.is_queue and head:
                tally.saw(head[0][0])
            elif not c.is_queue and undelivered > 0:
                start = "(" + group["last-delivered-id"].decode()
                unread.append((tally, c.streams[p], start))
    if unread:
        pipe = client.pipeline(transaction=False)
        for _, stream, start in unread:
            pipe.xrange(stream, min=start, count=1)
        found = cast("list[list[Entry]]", pipe.execute())
        for (tally, _, _), entries in zip(unread, found, strict=True):
            if entries:
                tally.saw(entries[0][0])
    return [tally.stats(now_ms) for tally in tallies]


# --- reading without leasing ------------------------------------------------------------------


def _after(after: str | None) -> str | None:
    """XRANGE's start for the entries after offset ``after`` (all of them when None; None when
    nothing can follow it). An offset Redis would refuse (not ``<ms>-<seq>`` of ASCII digits
    below 2**64) is a 400 naming ``after``, not a ResponseError."""
    if after is None:
        return "-"
    if not is_stream_id(after):
        raise InvalidRequest(
            "after: not an offset (<ms>-<seq>).",
            errors=[{"field": "after", "detail": "Not an offset: expected <ms>-<seq>."}],
        )
    if after == f"{MAX_ID}-{MAX_ID}":
        return None  # the last stream id there is; Redis refuses an interval after it
    return f"({after}"


def peek(
    client: redis.Redis, c: Consumer, *, limit: int, after: str | None = None
) -> list[dict[str, Any]]:
    """The queue's stored messages in order, with their state, leasing nothing."""
    stream, lease = c.streams[0], c.leases[0]
    start = _after(after)
    entries = _xrange(client, stream, start=start, count=limit) if start is not None else []
    if not entries:
        return []
    pipe = client.pipeline(transaction=False)
    pipe.xpending_range(stream, c.group, min=entries[0][0], max=entries[-1][0], count=limit)
    for entry_id, _ in entries:
        pipe.zscore(lease, entry_id)
    results = pipe.execute()
    counts = {row["message_id"]: row["times_delivered"] for row in results[0]}
    out = []
    for (entry_id, fields), leased in zip(entries, results[1:], strict=True):
        flat = [x for pair in fields.items() for x in pair]
        message = delivered(flat, partition=0, offset=entry_id.decode(), attempt=None, ack_id=None)
        message["delivery_attempts"] = counts.get(entry_id, 0)
        message["state"] = (
            "in_flight" if leased is not None else ("retry" if entry_id in counts else "available")
        )
        out.append(message)
    return out


def log_read(
    client: redis.Redis,
    tenant_id: str,
    topic_id: str,
    *,
    partition: int,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """A topic partition's retained log from just after ``after``, in publish order."""
    stream = topic_partition_keys(tenant_id, topic_id, partition)["stream"]
    start = _after(after)
    entries = _xrange(client, stream, start=start, count=limit) if start is not None else []
    out = []
    for entry_id, fields in entries:
        flat = [x for pair in fields.items() for x in pair]
        out.append(
            delivered(
                flat, partition=partition, offset=entry_id.decode(), attempt=None, ack_id=None
            )
        )
    return out


# --- purge, redrive, seek ---------------------------------------------------------------------


def purge(client: redis.Redis, c: Consumer) -> int:
    """Delete every message of a queue; the count removed. Gone when the queue is."""
    purged = int(
        scripts.PURGE.run(
            client,
            [c.streams[0], c.delays[0], c.leases[0], c.retries[0], c.backlog],
            [c.group],
        )
    )
    if purged < 0:
        raise Gone
    return purged


def redrive(
    client: redis.Redis,
    dlq: Consumer,
    *,
    targets: dict[str, tuple[str, str] | None],
    default: tuple[str, str] | None,
    max_messages: int | None,
) -> dict[str, int]:
    """Move dead letters back. ``targets`` maps an op-dead-letter-source label to its (stream,
    channel) when that source still exists as a queue; ``default`` overrides every source.
    Messages that cannot go anywhere (their source is gone or is a subscription, or the target
    was deleted meanwhile) stay and count as skipped."""
    moved = skipped = 0
    cursor = "-"
    budget = max_messages if max_messages is not None else float("inf")
    while budget > 0:
        entries = _xrange(client, dlq.streams[0], start=cursor, count=500)
        if not entries:
            break
        cursor = "(" + entries[-1][0].decode()
        groups: dict[tuple[str, str], list[bytes]] = {}
        for entry_id, fields in entries:
            if budget <= 0:
                break
            f = fields_dict([x for pair in fields.items() for x in pair])
            source = _source_of(f)
            target = default or targets.get(source or "")
            if target is None:
                skipped += 1
                continue
            groups.setdefault(target, []).append(entry_id)
            budget -= 1
        for (stream, channel), ids in groups.items():
            done = int(
                scripts.REDRIVE.run(
                    client,
                    [
                        dlq.streams[0],
                        dlq.leases[0],
                        dlq.retries[0],
                        stream,
                        dlq.backlog,
                        _backlog(stream),
                    ],
                    [dlq.group, channel, *ids],
                )
            )
            if done < 0:  # the target queue was deleted meanwhile: its messages stay
                skipped += len(ids)
            else:
                moved += done
    return {"moved": moved, "skipped": skipped}


def _source_of(fields: dict[bytes, bytes]) -> str | None:
    raw = fields.get(b"a")
    if not raw:
        return None
    source: str | None = orjson.loads(raw).get("op-dead-letter-source")
    return source


def dead_letter_sources(client: redis.Redis, dlq: Consumer, scan: int = 10_000) -> set[str]:
    sources = set()
    for _, fields in _xrange(client, dlq.streams[0], count=scan):
        source = _source_of(fields_dict([x for pair in fields.items() for x in pair]))
        if source:
            sources.add(source)
    return sources


def seek(client: redis.Redis, c: Consumer, positions: list[str]) -> None:
    """Stand the subscription at ``positions[p]`` on each partition (see seek.lua). Gone when
    the subscription's groups are missing."""
    keys: list[str] = []
    for p in range(c.partitions):
        keys += (c.streams[p], c.leases[p], c.retries[p])
    if int(scripts.SEEK.run(client, keys, [c.group, *positions])) < 0:
        raise Gone


def seek_positions_for_time(client: redis.Redis, c: Consumer, time_ms: int) -> list[str]:
    """The id just before ``time_ms`` on each partition: entries from that time on are new."""
    return [f"{time_ms - 1}-{MAX_ID}" if time_ms > 0 else "0" for _ in range(c.partitions)]


# --- retention, housekeeping ------------------------------------------------------------------


def trim(
    client: redis.Redis, streams: Iterable[str], *, retention_seconds: int, now_ms: int
) -> int:
    """Drop entries older than the retention period, with their queue's or topic's backlog
    counts (see trim.lua: up to TRIM_STEP entries per stream and call, so a long backlog is
    trimmed in bounded steps). Returns how many were removed."""
    floor = now_ms - retention_seconds * 1000
    keys: list[str] = []
    for stream in streams:
        keys += (stream, _backlog(stream))
    if not keys:
        return 0
    removed = 0
    while True:
        step = int(scripts.TRIM.run(client, keys, [floor, TRIM_STEP]))
        removed += step
        if step < TRIM_STEP:
            return removed


#: Most entries trim.lua removes per stream in one call (a bounded pause of Redis).
TRIM_STEP = 10_000


def _backlog(stream: str) -> str:
    """The backlog hash of ``stream``'s queue or topic (a key of its slot in any case)."""
    return redis_keys.backlog_of_stream(stream) or f"{stream}:bl"


# --- positions and rebuilds -------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    partition: int
    last_delivered_id: str
    acked_id: str
    last_generated_id: str


def _before(entry_id: str) -> str:
    ms, seq = (int(x) for x in entry_id.split("-"))
    if seq > 0:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{MAX_ID}" if ms > 0 else "0-0"


def positions(client: redis.Redis, c: Consumer) -> list[Position] | None:
    """Each partition's group position; None when a group is missing (Redis lost it)."""
    pipe = client.pipeline(transaction=False)
    for p in range(c.partitions):
        pipe.xinfo_groups(c.streams[p])
        pipe.xpending(c.streams[p], c.group)
        pipe.xinfo_stream(c.streams[p])
    results = pipe.execute(raise_on_error=False)
    out = []
    for p in range(c.partitions):
        groups, pending, info = results[p * 3 : p * 3 + 3]
        if isinstance(groups, Exception) or isinstance(info, Exception):
            return None
        group = next((g for g in groups if g["name"].decode() == c.group), None)
        if group is None:
            return None
        last = group["last-delivered-id"].decode()
        acked = (
            _before(pending["min"].decode())
            if isinstance(pending, dict) and pending.get("pending")
            else last
        )
        out.append(Position(p, last, acked, info["last-generated-id"].decode()))
    return out


def rebuild(client: redis.Redis, c: Consumer, saved: dict[int, Position]) -> list[str]:
    """Recreate missing streams and groups at the saved positions. Returns what was done."""
    done = []
    for p in range(c.partitions):
        stream = c.streams[p]
        position = saved.get(p)
        exists = bool(client.exists(stream))
        start = position.acked_id if position else "0"
        if _create_group(client, stream, c.group, start):
            made = "created stream and group" if not exists else "created group"
            done.append(f"{made} {c.group} on {stream} at {start}")
            if not exists and position and position.last_generated_id != "0-0":
                client.execute_command("XSETID", stream, position.last_generated_id)
    return done


# --- metrics ----------------------------------------------------------------------------------


def flow_totals(
    client: redis.Redis, streams: tuple[str, ...], group: str | None, *, is_queue: bool = False
) -> dict[str, int]:
    """Cumulative counters of a resource's streams, summed over partitions, for the per-minute
    metrics (their differences between two samples are the flows in between).

    ``published_total`` is each stream's ``entries-added`` (every message ever added, delayed
    ones once due). With ``group`` (a queue's or a subscription's), ``delivered_total`` counts
    messages delivered at least once and ``acked_total`` those settled for good. A queue
    deletes what it settles, so there they are derived from the stream's length: what left
    the stream was acknowledged (or dead-lettered, or past retention), and what is still
    pending was delivered. A topic's streams keep their entries, so a subscription's group
    counts for itself: ``entries-read`` delivered, minus what is still pending. A missing
    stream or group counts 0."""
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_stream(stream)
        if group is not None:
            pipe.xinfo_groups(stream)
            pipe.xpending(stream, group)
    results = pipe.execute(raise_on_error=False)
    step = 1 if group is None else 3
    published = delivered = acked = 0
    for p in range(len(streams)):
        info = results[p * step]
        if isinstance(info, Exception):
            continue
        added = int(info.get("entries-added") or 0)
        published += added
        if group is None:
            continue
        groups, pending = results[p * step + 1], results[p * step + 2]
        if isinstance(groups, Exception):
            continue
        found = next((g for g in groups if g["name"].decode() == group), None)
        if found is None:
            continue
        held = pending["pending"] if isinstance(pending, dict) else 0
        if is_queue:
            gone = max(added - int(info.get("length") or 0), 0)
            delivered += gone + held
            acked += gone
        else:
            read = int(found.get("entries-read") or 0)
            delivered += read
            acked += max(read - held, 0)
    return {"published_total": published, "delivered_total": delivered, "acked_total": acked}


# --- the console's workbench: reads that change nothing, and dead letters by id ---------------


def _unpack_fields(packed: bytes) -> list[bytes]:
    """The field list of a delay-set member: what ``cmsgpack.pack`` makes of a Lua array of
    strings (publish.lua), the only shape the engine ever packs."""
    head = packed[0]
    pos = 1
    if head & 0xF0 == 0x90:
        count = head & 0x0F
    elif head == 0xDC:
        count, pos = int.from_bytes(packed[1:3], "big"), 3
    elif head == 0xDD:
        count, pos = int.from_bytes(packed[1:5], "big"), 5
    else:
        raise ValueError(f"not a packed field list (0x{head:02x})")
    items: list[bytes] = []
    for _ in range(count):
        tag = packed[pos]
        if tag & 0xE0 == 0xA0:
            size, pos = tag & 0x1F, pos + 1
        elif tag in (0xD9, 0xC4):
            size, pos = packed[pos + 1], pos + 2
        elif tag in (0xDA, 0xC5):
            size, pos = int.from_bytes(packed[pos + 1 : pos + 3], "big"), pos + 3
        elif tag in (0xDB, 0xC6):
            size, pos = int.from_bytes(packed[pos + 1 : pos + 5], "big"), pos + 5
        else:
            raise ValueError(f"not a packed string (0x{tag:02x})")
        items.append(packed[pos : pos + size])
        pos += size
    return items


def delayed_read(
    client: redis.Redis, c: Consumer, *, start: int, limit: int
) -> list[dict[str, Any]]:
    """The messages of a queue's delay set, soonest due first, from position ``start``: each
    as delivered, with ``due_ms``. Reading only (the due ones move at the next pull or tick)."""
    members = cast(
        "list[tuple[bytes, float]]",
        client.zrange(c.delays[0], start, start + limit - 1, withscores=True),
    )
    out = []
    for packed, due in members:
        message = delivered(
            _unpack_fields(packed), partition=0, offset="", attempt=None, ack_id=None
        )
        message["offset"] = None
        message["due_ms"] = int(due)
        message["state"] = "delayed"
        out.append(message)
    return out


def lease_and_retry_times(
    client: redis.Redis, c: Consumer, entry_ids: list[str]
) -> list[tuple[int | None, int | None]]:
    """(lease deadline, retry due time) in ms of each stored entry of a queue; None where the
    entry holds no lease or waits for no retry."""
    if not entry_ids:
        return []
    pipe = client.pipeline(transaction=False)
    for entry_id in entry_ids:
        pipe.zscore(c.leases[0], entry_id)
        pipe.zscore(c.retries[0], entry_id)
    scores = pipe.execute()
    return [
        (
            int(scores[i]) if scores[i] is not None else None,
            int(scores[i + 1]) if scores[i + 1] is not None else None,
        )
        for i in range(0, len(scores), 2)
    ]


def redrive_ids(
    client: redis.Redis,
    dlq: Consumer,
    entry_ids: list[str],
    *,
    targets: dict[str, tuple[str, str] | None],
    default: tuple[str, str] | None,
) -> dict[str, int]:
    """:func:`redrive` of the dead letters stored at ``entry_ids`` only. An id that is not (or
    no longer) a stored entry, a leased one, or one with nowhere to go counts as skipped."""
    pipe = client.pipeline(transaction=False)
    for entry_id in entry_ids:
        pipe.xrange(dlq.streams[0], min=entry_id, max=entry_id, count=1)
    found = cast("list[list[Entry]]", pipe.execute())
    moved = skipped = 0
    groups: dict[tuple[str, str], list[bytes]] = {}
    for rows in found:
        if not rows:
            skipped += 1
            continue
        stored_id, fields = rows[0]
        source = _source_of(fields_dict([x for pair in fields.items() for x in pair]))
        target = default or targets.get(source or "")
        if target is None:
            skipped += 1
            continue
        groups.setdefault(target, []).append(stored_id)
    for (stream, channel), ids in groups.items():
        done = int(
            scripts.REDRIVE.run(
                client,
                [
                    dlq.streams[0],
                    dlq.leases[0],
                    dlq.retries[0],
                    stream,
                    dlq.backlog,
                    _backlog(stream),
                ],
                [dlq.group, channel, *ids],
            )
        )
        if done < 0:
            skipped += len(ids)
        else:
            moved += done
            skipped += len(ids) - done
    return {"moved": moved, "skipped": skipped}


def delete_ids(client: redis.Redis, c: Consumer, entry_ids: list[str]) -> int:
    """Delete the queue's stored entries at ``entry_ids`` (leased or not) with their pending
    entries, leases and retries, in one atomic step (see delete_ids.lua); the count deleted.
    Ids not stored count 0 and change nothing but what was left of them."""
    if not entry_ids:
        return 0
    keys = [c.streams[0], c.leases[0], c.retries[0], c.backlog]
    return int(scripts.DELETE_IDS.run(client, keys, [c.group, *entry_ids]))
