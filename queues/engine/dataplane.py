"""Publish, pull and settle: the hot path. Each operation is one Lua script call (one Redis
round trip) on the event loop's script lane; the functions here only build its KEYS/ARGV
(``*_call``) and read its answer (``*_result``)."""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kernel.errors import InvalidRequest, NotFound, QuotaExceeded, RateLimited
from kernel.limits import ACK_ID_PATTERN, MAX_ACK_IDS
from kernel.redis_keys import (
    CONSUMER,
    dedup_key,
    publish_rate_key,
    usage_hour_field,
    usage_month_field,
)
from queues.engine import scripts
from queues.engine.messages import Outgoing, delivered
from queues.engine.targets import DEDUP_WINDOW_SECONDS, Consumer, Destination

_round_robin = itertools.count()
_ACK_ID = re.compile(ACK_ID_PATTERN)


class Gone(NotFound):
    """The resource's Redis structures do not exist: it was deleted (a process acted on a
    cached copy of it), or Redis lost them. The script that says so changed nothing, so the
    caller may look the resource up again (``queues.services.resource_repair``) and retry once.
    Left unhandled it is a 404."""

    def __init__(self) -> None:
        super().__init__("No such resource.")


def partition_for(key: str, partitions: int) -> int:
    """The partition of a keyed message: stable for a key, whatever process publishes."""
    return zlib.crc32(key.encode()) % partitions


# --- publish ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """A tenant's publish limits (0: none), from its plan."""

    per_second: int = 0
    per_month: int = 0


NO_LIMITS = Limits()


def _month(now_ms: int) -> str:
    moment = datetime.fromtimestamp(now_ms / 1000, UTC)
    return usage_month_field(moment.year, moment.month)


def publish_call(
    dest: Destination, messages: Sequence[Outgoing], now_ms: int, limits: Limits = NO_LIMITS
) -> tuple[list[str], list[Any]]:
    partitions = dest.partitions
    slots: dict[int, int] = {}
    keys: list[str] = [dest.usage, publish_rate_key(dest.usage, now_ms // 1000)]
    per_message: list[Any] = []
    dedup_keys: list[str] = []
    dedup_index: dict[str, int] = {}
    for m in messages:
        if partitions == 1:
            p = 0
        elif m.key:
            p = partition_for(m.key, partitions)
        else:
            p = next(_round_robin) % partitions
        slot = slots.get(p)
        if slot is None:
            slot = slots[p] = len(slots) + 1
        d = 0
        if m.dedup_id is not None:
            d = dedup_index.get(m.dedup_id, 0)
            if not d:
                dedup_keys.append(dedup_key(dest.dedup_prefix, m.dedup_id))
                d = dedup_index[m.dedup_id] = len(dedup_keys)
        delay = m.delay_seconds if m.delay_seconds is not None else dest.default_delay
        due = now_ms + delay * 1000 if delay > 0 else 0
        per_message += (slot, d, due, m.id, m.body, m.encoding, m.attributes, m.key, p)
    for p in slots:  # dicts keep insertion order: slot j is the j-th partition added
        keys += (dest.streams[p], dest.delays[p])
    keys += dedup_keys
    args: list[Any] = [
        now_ms,
        len(slots),
        len(messages),
        DEDUP_WINDOW_SECONDS,
        usage_hour_field(now_ms, "published"),
        dest.channel,
        "all" if dest.fanout else "",
        limits.per_second,
        limits.per_month,
        _month(now_ms),
        usage_hour_field(now_ms, "published_bytes"),
    ]
    return keys, args + per_message


def publish_result(raw: list[Any]) -> list[dict[str, Any]]:
    if raw and raw[0] == -1:
        if raw[1] == b"gone":
            raise Gone
        if raw[1] == b"rate":
            raise RateLimited(
                "The plan's publish rate is exhausted for this second; nothing was stored.",
                retry_after=1,
            )
        raise QuotaExceeded("The plan's monthly message quota is used up; nothing was stored.")
    out = []
    for duplicate, record in raw:
        message_id, partition, offset = record.decode().split("\n")
        out.append(
            {
                "id": message_id,
                "partition": int(partition),
                "offset": offset or None,
                "duplicate": bool(duplicate),
            }
        )
    return out


async def apublish(
    dest: Destination,
    messages: Sequence[Outgoing],
    now_ms: int,
    limits: Limits = NO_LIMITS,
) -> list[dict[str, Any]]:
    """Store validated messages (one round trip). Returns per message id, partition, offset
    (None while delayed) and whether it was a duplicate within the dedup window. A batch that
    would pass the tenant's limits raises RateLimited / QuotaExceeded, and one for a deleted
    destination raises Gone; either way nothing is stored."""
    keys, args = publish_call(dest, messages, now_ms, limits)
    return publish_result(await scripts.PUBLISH.arun(keys, args))


# --- pull -------------------------------------------------------------------------------------


def _consumer_keys(c: Consumer) -> list[str]:
    keys: list[str] = []
    for p in range(c.partitions):
        keys += (c.streams[p], c.delays[p], c.leases[p], c.retries[p])
    keys.append(c.usage)
    if c.dlq_stream:
        keys.append(c.dlq_stream)
    return keys


def pull_call(
    c: Consumer, count: int, visibility_ms: int | None, now_ms: int
) -> tuple[list[str], list[Any]]:
    first = next(_round_robin) % c.partitions if c.partitions > 1 else 0
    args = [
        now_ms,
        count,
        c.visibility_ms if visibility_ms is None else visibility_ms,
        c.group,
        c.max_attempts,
        c.backoff_min_ms,
        c.backoff_max_ms,
        c.partitions,
        first,
        c.filter_json,
        c.label,
        1 if c.is_queue else 0,
        usage_hour_field(now_ms, "delivered"),
        c.dlq_channel,
        CONSUMER,
    ]
    return _consumer_keys(c), args


@dataclass(slots=True)
class Pulled:
    messages: list[dict[str, Any]]
    next_due_ms: int | None  # when nothing was delivered: when something may become due


def pull_result(raw: list[Any]) -> Pulled:
    next_due, entries = raw
    if next_due == -2:
        raise Gone
    messages = []
    for partition, entry_id, attempt, fields in entries:
        offset = entry_id.decode()
        messages.append(
            delivered(
                fields,
                partition=partition,
                offset=offset,
                attempt=attempt,
                ack_id=f"{partition}.{offset}.{attempt}",
            )
        )
    return Pulled(messages, None if next_due < 0 else int(next_due))


async def apull(
    c: Consumer,
    *,
    count: int,
    now_ms: int,
    visibility_ms: int | None = None,
) -> Pulled:
    """Lease up to ``count`` messages (0: housekeeping only) for the visibility timeout.
    Raises Gone, having changed nothing, when the consumer's structures are missing."""
    keys, args = pull_call(c, count, visibility_ms, now_ms)
    return pull_result(await scripts.PULL.arun(keys, args))


# --- ack, nack, modify-deadline ---------------------------------------------------------------


def parse_ack_ids(ack_ids: Any, partitions: int) -> list[tuple[int, str, int]]:
    """``<partition>.<offset>.<attempt>`` → tuples; 400 naming every malformed one: not of
    ACK_ID_PATTERN (ASCII digits, offsets within Redis's 64-bit stream ids; Unicode digits
    that ``int()`` would take are refused), or of a partition the consumer does not have."""
    if not isinstance(ack_ids, list) or not 1 <= len(ack_ids) <= MAX_ACK_IDS:
        raise InvalidRequest(
            f"ack_ids must be a list of 1 to {MAX_ACK_IDS} ack ids.",
            errors=[{"field": "ack_ids", "detail": f"1 to {MAX_ACK_IDS} ack ids."}],
        )
    parsed: list[tuple[int, str, int]] = []
    problems = []
    for index, ack_id in enumerate(ack_ids):
        match = _ACK_ID.fullmatch(ack_id) if isinstance(ack_id, str) else None
        if match is None or int(match[1]) >= partitions:
            problems.append(
                {
                    "index": index,
                    "field": "ack_ids",
                    "detail": "Not an ack id of this queue or subscription.",
                }
            )
            continue
        parsed.append((int(match[1]), match[2], int(match[3])))
    if problems:
        raise InvalidRequest(f"Invalid ack id at index {problems[0]['index']}.", errors=problems)
    return parsed


def settle_call(
    c: Consumer, mode: str, ack_ids: list[tuple[int, str, int]], ms: int, now_ms: int
) -> tuple[list[str], list[Any]]:
    keys: list[str] = []
    for p in range(c.partitions):
        keys += (c.streams[p], c.leases[p], c.retries[p])
    keys.append(c.usage)
    if c.dlq_stream:
        keys.append(c.dlq_stream)
    args: list[Any] = [
        mode,
        now_ms,
        c.group,
        c.partitions,
        1 if c.is_queue else 0,
        ms,
        c.max_attempts,
        c.backoff_min_ms,
        c.backoff_max_ms,
        c.label,
        usage_hour_field(now_ms, "acked"),
        c.channel,
        c.dlq_channel,
    ]
    for partition, offset, attempt in ack_ids:
        args += (partition, offset, attempt)
    return keys, args


def settle_result(raw: list[Any], ack_ids: list[Any]) -> tuple[int, list[str]]:
    settled, stale = raw
    if settled == -1:
        raise Gone
    return int(settled), [ack_ids[i] for i in stale]


async def asettle(
    c: Consumer, mode: str, ack_ids: list[str], *, ms: int, now_ms: int
) -> tuple[int, list[str]]:
    """``mode`` is 'ack', 'nack' (``ms`` delay, -1 for the backoff policy) or 'deadline'
    (``ms`` new lease length; 0 makes the messages deliverable now). Returns how many were
    settled and the stale ack ids. Raises Gone, having changed nothing, when the consumer's
    structures are missing."""
    parsed = parse_ack_ids(ack_ids, c.partitions)
    keys, args = settle_call(c, mode, parsed, ms, now_ms)
    return settle_result(await scripts.SETTLE.arun(keys, args), ack_ids)
