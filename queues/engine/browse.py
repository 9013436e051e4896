"""Reading a subscription's messages as its pulls would find them, changing nothing.

A subscription keeps, on each partition of its topic, a consumer group (its position: the last
entry it read, and the pending-entries list of what it delivered and has not settled, with
delivery counts) and two sorted sets of its own: leases by deadline and retries by due time
(see ``lua/_lib.lua``). Delayed messages wait in the topic's delay sets, for every
subscription of the topic alike, and join the partition's stream when due.

Everything here reads with XINFO, XRANGE, XPENDING, ZRANGE and ZSCORE, and runs no script: no
lease is taken, no position moves, nothing is acknowledged or counted in usage, and no due
work is done (a due delay or an expired lease stays where it is until a pull or beat's tick
moves it). The readers page through several partitions at once in one order: a page is the
first ``limit`` messages of all partitions merged, and its cursor holds one point per
partition (see :func:`_merge`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis

from queues.engine.messages import delivered, fields_dict
from queues.engine.streams import MAX_ID, _unpack_fields
from queues.engine.targets import Consumer

#: Where nothing can follow (the last stream id there is): Redis refuses a range after it.
LAST_ID = f"{MAX_ID}-{MAX_ID}"
#: The pending-entries cursor of a first page: every id Redis hands out is above it.
PENDING_START = "0-0"
#: How many entries one round reads per partition at least when a filter skips some (the
#: pull reads 50 at a time for the same reason), and how many rounds one page may take.
FILTERED_SCAN = 50
FILTERED_ROUNDS = 10


@dataclass(frozen=True, slots=True)
class GroupPosition:
    """A subscription's consumer group on one partition: ``position`` is the last entry it
    read (None when the group is missing: Redis lost it, or the subscription is being
    deleted), ``pending`` how many entries it delivered and has not settled, ``lag`` how many
    entries follow the position (None when Redis cannot tell, after entries were deleted)."""

    partition: int
    position: str | None
    pending: int
    lag: int | None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of messages in order across partitions. ``next`` is the cursor of the page
    that follows (one point per partition), None when nothing follows; ``skipped`` counts the
    entries the subscription's filter leaves out that this page read past."""

    messages: list[dict[str, Any]]
    next: list[str] | None
    skipped: int = 0


def group_positions(client: redis.Redis, c: Consumer) -> list[GroupPosition]:
    """The subscription's group on each partition (one pipelined round trip)."""
    pipe = client.pipeline(transaction=False)
    for stream in c.streams:
        pipe.xinfo_groups(stream)
    out = []
    for p, groups in enumerate(pipe.execute(raise_on_error=False)):
        found = None
        if not isinstance(groups, Exception):
            found = next((g for g in groups if g["name"].decode() == c.group), None)
        if found is None:
            out.append(GroupPosition(p, None, 0, None))
            continue
        lag = found.get("lag")
        out.append(
            GroupPosition(
                partition=p,
                position=found["last-delivered-id"].decode(),
                pending=int(found["pending"]),
                lag=lag if isinstance(lag, int) else None,
            )
        )
    return out


def id_order(entry_id: str | bytes) -> tuple[int, int]:
    """A stream id as (ms, seq), the order Redis keeps entries in."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


# --- merging partitions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Scanned:
    """An entry one partition's scan found: ``key`` orders it among every partition's,
    ``cursor`` is where that partition resumes once it is consumed, and ``value`` is what the
    page shows of it (None: the subscription's filter skips it)."""

    key: tuple[int, ...]
    partition: int
    cursor: str
    value: Any


#: A scan answers, per partition asked, the entries from its cursor on in order, and whether
#: more may follow them (the scan stopped at its count).
Scan = Callable[[dict[int, str]], dict[int, tuple[list[_Scanned], bool]]]


def _merge(
    scan: Scan, cursors: Sequence[str], limit: int, *, rounds: int
) -> tuple[list[_Scanned], list[str] | None, int]:
    """The first ``limit`` kept entries of all partitions together in key order, from
    ``cursors`` (one per partition); with the next cursors (None: every partition is read to
    its end) and how many skipped entries were read past.

    An entry is taken only when no partition can still hold one before it: a partition whose
    scan stopped at its count may hold more after its last entry, so nothing beyond the
    smallest such last entry is taken in this round. The partition with that smallest last
    entry is then consumed whole, so every round moves on. A filter that skips many entries
    may need several rounds to fill a page; after ``rounds`` the page is what was found."""
    cursors = list(cursors)
    unfinished = set(range(len(cursors)))
    taken: list[_Scanned] = []
    skipped = 0
    for _ in range(rounds):
        windows = scan({p: cursors[p] for p in sorted(unfinished)})
        stops = [items[-1].key for items, more in windows.values() if more and items]
        bound = min(stops) if stops else None
        ready = sorted(
            (i for items, _ in windows.values() for i in items if bound is None or i.key <= bound),
            key=lambda i: i.key,
        )
        consumed = dict.fromkeys(windows, 0)
        for item in ready:
            if item.value is None:
                skipped += 1
            elif len(taken) == limit:
                break
            else:
                taken.append(item)
            cursors[item.partition] = item.cursor
            consumed[item.partition] += 1
        for p, (items, more) in windows.items():
            if not more and consumed[p] == len(items):
                unfinished.discard(p)
        if len(taken) == limit or not unfinished:
            break
    return taken, (cursors if unfinished else None), skipped


def _filter_of(c: Consumer) -> dict[str, str]:
    return cast("dict[str, str]", orjson.loads(c.filter_json)) if c.filter_json else {}


def _matches(fields: dict[bytes, bytes], wanted: dict[str, str]) -> bool:
    """Whether an entry's attributes hold every pair of the filter: the rule pull.lua's
    ``attrs_match`` applies, so what is shown is what a pull would deliver."""
    if not wanted:
        return True
    raw = fields.get(b"a")
    attrs = orjson.loads(raw) if raw else {}
    return all(attrs.get(name) == value for name, value in wanted.items())


def _scan_count(limit: int, wanted: dict[str, str]) -> tuple[int, int]:
    """(entries per partition per round, rounds): one round of ``limit`` without a filter."""
    return (max(limit, FILTERED_SCAN), FILTERED_ROUNDS) if wanted else (limit, 1)


# --- what a pull delivers next --------------------------------------------------------------


def unread(
    client: redis.Redis,
    c: Consumer,
    *,
    positions: Sequence[str | None],
    after: Sequence[str] | None = None,
    limit: int,
) -> Page:
    """The entries after the group's position on each partition (``positions``, from
    :func:`group_positions`; a partition whose group is missing is left out), or after
    ``after`` where that is further on: what the subscription's pulls deliver for the first
    time, oldest first, each with ``delivery_attempts`` 0. Entries its filter skips are left
    out (a pull acknowledges them without delivering them) and counted in ``skipped``."""
    wanted = _filter_of(c)
    count, rounds = _scan_count(limit, wanted)
    starts = []
    for p, position in enumerate(positions):
        start = position or LAST_ID  # a missing group: nothing to read there
        if after is not None and id_order(after[p]) > id_order(start):
            start = after[p]
        starts.append(start)

    def scan(cursors: dict[int, str]) -> dict[int, tuple[list[_Scanned], bool]]:
        asked = [p for p, cursor in cursors.items() if cursor != LAST_ID]
        pipe = client.pipeline(transaction=False)
        for p in asked:
            pipe.xrange(c.streams[p], min="(" + cursors[p], max="+", count=count)
        found = dict(zip(asked, pipe.execute(raise_on_error=False), strict=True))
        windows: dict[int, tuple[list[_Scanned], bool]] = {}
        for p in cursors:
            entries = found.get(p)
            if not isinstance(entries, list):  # LAST_ID, or the stream is gone
                windows[p] = ([], False)
                continue
            items = []
            for entry_id, fields in cast("list[tuple[bytes, dict[bytes, bytes]]]", entries):
                offset = entry_id.decode()
                flat = [x for pair in fields.items() for x in pair]
                value = flat if _matches(fields, wanted) else None
                items.append(_Scanned((*id_order(offset), p), p, offset, value))
            windows[p] = (items, len(items) == count)
        return windows

    taken, cursors, skipped = _merge(scan, starts, limit, rounds=rounds)
    messages = []
    for item in taken:
        message = delivered(
            item.value, partition=item.partition, offset=item.cursor, attempt=None, ack_id=None
        )
        message.update(
            delivery_attempts=0, state="available", lease_deadline_ms=None, retry_due_ms=None
        )
        messages.append(message)
    return Page(messages, cursors, skipped)


# --- delivered and not settled ----------------------------------------------------------------


def pending(
    client: redis.Redis, c: Consumer, *, after: Sequence[str] | None = None, limit: int
) -> Page:
    """The entries the subscription delivered and has not settled, in offset order across
    partitions from ``after`` (one offset per partition; None: from the start), each with
    ``delivery_attempts`` (how often it was delivered) and its state: ``in_flight`` with
    ``lease_deadline_ms`` while a lease is held (a deadline in the past: the lease ended and
    the next pull or tick redelivers the message, backs it off or dead-letters it), else
    ``retry`` with ``retry_due_ms``, when it may be delivered again (0 attempts: a pull read
    it ahead while skipping filtered entries and handed it back undelivered). An entry
    retention trimmed away is not shown: there is nothing left to deliver."""
    cursors = list(after) if after is not None else [PENDING_START] * c.partitions

    def scan(cursors: dict[int, str]) -> dict[int, tuple[list[_Scanned], bool]]:
        asked = [p for p, cursor in cursors.items() if cursor != LAST_ID]
        pipe = client.pipeline(transaction=False)
        for p in asked:
            pipe.xpending_range(c.streams[p], c.group, min="(" + cursors[p], max="+", count=limit)
        found = dict(zip(asked, pipe.execute(raise_on_error=False), strict=True))
        windows: dict[int, tuple[list[_Scanned], bool]] = {}
        for p in cursors:
            rows = found.get(p)
            if not isinstance(rows, list):  # LAST_ID, or the group is missing
                windows[p] = ([], False)
                continue
            items = [
                _Scanned(
                    (*id_order(row["message_id"]), p),
                    p,
                    row["message_id"].decode(),
                    int(row["times_delivered"]),
                )
                for row in rows
            ]
            windows[p] = (items, len(items) == limit)
        return windows

    taken, next_cursors, _ = _merge(scan, cursors, limit, rounds=1)
    if not taken:
        return Page([], next_cursors)
    pipe = client.pipeline(transaction=False)
    for item in taken:
        p = item.partition
        pipe.xrange(c.streams[p], min=item.cursor, max=item.cursor, count=1)
        pipe.zscore(c.leases[p], item.cursor)
        pipe.zscore(c.retries[p], item.cursor)
    results = pipe.execute()
    messages = []
    for i, item in enumerate(taken):
        entries, lease, retry = results[3 * i : 3 * i + 3]
        if not entries:
            continue
        _, fields = entries[0]
        flat = [x for pair in fields.items() for x in pair]
        message = delivered(
            flat, partition=item.partition, offset=item.cursor, attempt=None, ack_id=None
        )
        message.update(
            delivery_attempts=item.value,
            state="in_flight" if lease is not None else "retry",
            lease_deadline_ms=int(lease) if lease is not None else None,
            retry_due_ms=int(retry) if retry is not None else None,
        )
        messages.append(message)
    return Page(messages, next_cursors)


# --- delayed on the topic ---------------------------------------------------------------------


def delayed(
    client: redis.Redis, c: Consumer, *, after: Sequence[str] | None = None, limit: int
) -> Page:
    """The messages waiting in the topic's delay sets that the subscription's filter lets
    through, soonest due first across partitions, each with ``due_ms`` and ``offset`` None
    (they get one when they join the stream). ``after`` holds per partition the rank in its
    delay set to read from (None: from the first); ranks shift as due messages leave, so a
    later page may repeat or miss one that moved meanwhile, as any paging of a live set."""
    wanted = _filter_of(c)
    count, rounds = _scan_count(limit, wanted)
    cursors = list(after) if after is not None else ["0"] * c.partitions

    def scan(cursors: dict[int, str]) -> dict[int, tuple[list[_Scanned], bool]]:
        asked = list(cursors)
        pipe = client.pipeline(transaction=False)
        for p in asked:
            start = int(cursors[p])
            pipe.zrange(c.delays[p], start, start + count - 1, withscores=True)
        windows: dict[int, tuple[list[_Scanned], bool]] = {}
        for p, members in zip(asked, pipe.execute(), strict=True):
            start = int(cursors[p])
            items = []
            for rank, (packed, due) in enumerate(
                cast("list[tuple[bytes, float]]", members), start=start
            ):
                flat = _unpack_fields(packed)
                value = (flat, int(due)) if _matches(fields_dict(flat), wanted) else None
                # a delay set orders by score, then by member: the rank keeps that order
                items.append(_Scanned((int(due), p, rank), p, str(rank + 1), value))
            windows[p] = (items, len(items) == count)
        return windows

    taken, next_cursors, skipped = _merge(scan, cursors, limit, rounds=rounds)
    messages = []
    for item in taken:
        flat, due = item.value
        message = delivered(flat, partition=item.partition, offset="", attempt=None, ack_id=None)
        message.update(offset=None, due_ms=due, state="delayed")
        messages.append(message)
    return Page(messages, next_cursors, skipped)
