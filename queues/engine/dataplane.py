"""Publish, pull and settle: the hot path. Each operation is one Lua script call (one Redis
round trip) on the event loop's script lane; the functions here only build its KEYS/ARGV
(``*_call``) and read its answer (``*_result``)."""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kernel.errors import InvalidRequest, NotFound, QuotaExceeded, RateLimited
from kernel.limits import ACK_ID_PATTERN, MAX_ACK_IDS
from kernel.redis_keys import (
    CONSUMER,
    dedup_key,
    rate_field,
    rate_window_key,
    usage_hour_field,
    usage_month_field,
    usage_scope,
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


# --- limits -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """What a data-plane call may do and whose call it is. Every limit is None when none
    applies. The tenant's limits count the tenant's traffic, the key's (``key``: the API key's
    prefix, "" for a console session) that key's own: both hold. ``request``: count the call
    as one data-plane request (metering and the request rate); engine-internal calls (a
    housekeeping pull, the long poll's later pulls) are not requests. The backlog limits are
    the tenant's; a queue's or topic's own (its Destination) narrow them."""

    per_second: int | None = None  # messages published per second, by the tenant
    per_month: int | None = None  # messages published per calendar month, by the tenant
    consume_per_second: int | None = None  # messages leased per second, by the tenant
    requests_per_second: int | None = None  # data-plane requests per second, by the tenant
    key: str = ""
    key_per_second: int | None = None
    key_per_month: int | None = None
    key_consume_per_second: int | None = None
    max_backlog_messages: int | None = None
    max_backlog_bytes: int | None = None
    request: bool = False


#: No limit, and not a request (an engine-internal call; tests).
NO_LIMITS = Limits()
#: A pull that is not a request and meets no limit: housekeeping.
HOUSEKEEPING = NO_LIMITS


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """The limit nearest to exhaustion after a call (or the one that refused it), as the
    ``RateLimit-Policy`` / ``RateLimit`` header fields tell it: ``policy`` its name, ``quota``
    its value, ``window`` its length and ``reset`` the seconds until it starts again,
    ``remaining`` what is left of it."""

    policy: str
    quota: int
    window: int
    remaining: int
    reset: int

    def headers(self) -> dict[str, str]:
        """The two header fields (IETF draft "RateLimit header fields for HTTP")."""
        return {
            "RateLimit-Policy": f'"{self.policy}";q={self.quota};w={self.window}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset}',
        }


#: The state of the current task's latest data-plane call (None: no limit applied). Set by
#: the ``*_result`` functions, read by the API to write the RateLimit headers.
RATE_LIMIT: ContextVar[RateLimitState | None] = ContextVar("rate_limit", default=None)


@dataclass(frozen=True, slots=True)
class _Check:
    where: str  # "w": this second's rate window; "u": the usage hash (a month's count)
    field: str
    limit: int
    unit: str  # "r": one per request; "m": one per message
    policy: str
    detail: str


def _month_window(now_ms: int) -> tuple[int, int]:
    """(length of the month of ``now_ms`` in seconds, seconds until it ends), UTC."""
    moment = datetime.fromtimestamp(now_ms / 1000, UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return int((end - start).total_seconds()), max(1, int(end.timestamp() - now_ms // 1000))


def _check_args(checks: Sequence[_Check]) -> list[Any]:
    args: list[Any] = [len(checks)]
    for c in checks:
        args += (c.where, c.field, c.limit, c.unit)
    return args


def _state(checks: Sequence[_Check], left: Sequence[int], now_ms: int) -> RateLimitState | None:
    """The check nearest to exhaustion: the least left of its quota (share, then count)."""
    best: tuple[float, int, int] | None = None
    for i, c in enumerate(checks):
        share = left[i] / c.limit if c.limit else 0.0
        if best is None or (share, left[i]) < (best[0], best[1]):
            best = (share, left[i], i)
    if best is None:
        return None
    return _state_of(checks[best[2]], best[1], now_ms)


def _state_of(check: _Check, left: int, now_ms: int) -> RateLimitState:
    if check.where == "u":
        window, reset = _month_window(now_ms)
    else:
        window, reset = 1, 1
    return RateLimitState(check.policy, check.limit, window, max(left, 0), reset)


def _refusal(check: _Check, now_ms: int) -> Exception:
    """The error of a call refused by ``check``, with the state for the headers."""
    state = _state_of(check, 0, now_ms)
    RATE_LIMIT.set(state)
    if check.where == "u":
        return QuotaExceeded(check.detail)
    return RateLimited(check.detail, retry_after=state.reset)


def _rate_checks(
    limits: Limits,
    second: int,
    *,
    counter: str,
    tenant_limit: int | None,
    key_limit: int | None,
    done: str,
) -> list[_Check]:
    """The per-second checks of one kind of traffic (publish or consume) and of requests."""
    checks: list[_Check] = []
    verb = "publish" if counter == "publish" else "consume"
    if tenant_limit is not None:
        checks.append(
            _Check(
                "w",
                rate_field(counter),
                tenant_limit,
                "m",
                verb,
                f"The tenant's {verb} rate of {tenant_limit} messages/s is used up for this "
                f"second; {done}.",
            )
        )
    if key_limit is not None and limits.key:
        checks.append(
            _Check(
                "w",
                rate_field(counter, key=limits.key),
                key_limit,
                "m",
                f"key-{verb}",
                f"The key's {verb} rate of {key_limit} messages/s is used up for this "
                f"second; {done}.",
            )
        )
    if limits.request and limits.requests_per_second is not None:
        checks.append(
            _Check(
                "w",
                rate_field("requests"),
                limits.requests_per_second,
                "r",
                "requests",
                f"The tenant's request rate of {limits.requests_per_second} requests/s is used "
                f"up for this second; {done}.",
            )
        )
    return checks


def tighter(a: int | None, b: int | None) -> int | None:
    """The tighter of two limits, None being unlimited (as tenants.quotas.tighter)."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _scopes(limits: Limits, label: str) -> tuple[str, str]:
    return usage_scope(key=limits.key), usage_scope(resource=label)


# --- publish ----------------------------------------------------------------------------------


def _month(now_ms: int) -> str:
    moment = datetime.fromtimestamp(now_ms / 1000, UTC)
    return usage_month_field(moment.year, moment.month)


def publish_call(
    dest: Destination, messages: Sequence[Outgoing], now_ms: int, limits: Limits = NO_LIMITS
) -> tuple[list[str], list[Any], list[_Check]]:
    partitions = dest.partitions
    slots: dict[int, int] = {}
    second = now_ms // 1000
    keys: list[str] = [dest.usage, rate_window_key(dest.usage, second), dest.backlog]
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
    done = "nothing was stored"
    checks = _rate_checks(
        limits,
        second,
        counter="publish",
        tenant_limit=limits.per_second,
        key_limit=limits.key_per_second,
        done=done,
    )
    month = _month(now_ms)
    if limits.per_month is not None:
        checks.append(
            _Check(
                "u",
                month,
                limits.per_month,
                "m",
                "monthly",
                f"The tenant's monthly quota of {limits.per_month} messages is used up; {done}.",
            )
        )
    key_scope, resource_scope = _scopes(limits, dest.label)
    if limits.key_per_month is not None and limits.key:
        checks.append(
            _Check(
                "u",
                month + key_scope,  # usage_month_field(..., key=prefix)
                limits.key_per_month,
                "m",
                "key-monthly",
                f"The key's monthly quota of {limits.key_per_month} messages is used up; {done}.",
            )
        )
    max_messages = tighter(limits.max_backlog_messages, dest.max_backlog_messages)
    max_bytes = tighter(limits.max_backlog_bytes, dest.max_backlog_bytes)
    args: list[Any] = [
        now_ms,
        len(slots),
        len(messages),
        DEDUP_WINDOW_SECONDS,
        usage_hour_field(now_ms, "published"),
        dest.channel,
        "all" if dest.fanout else "",
        usage_hour_field(now_ms, "published_bytes"),
        usage_hour_field(now_ms, "requests") if limits.request else "",
        month,
        key_scope,
        resource_scope,
        -1 if max_messages is None else max_messages,
        -1 if max_bytes is None else max_bytes,
        *_check_args(checks),
    ]
    return keys, args + per_message, checks


def _backlog_refusal(dest: Destination, limits: Limits, which: str) -> QuotaExceeded:
    kind, _, name = dest.label.partition(":")
    if which == "messages":
        value = tighter(limits.max_backlog_messages, dest.max_backlog_messages)
        what = f"{value} messages"
    else:
        value = tighter(limits.max_backlog_bytes, dest.max_backlog_bytes)
        what = f"{value} bytes"
    return QuotaExceeded(
        f"{kind.title() or 'The resource'} '{name}' holds its backlog limit of {what}; "
        "nothing was stored."
    )


def publish_result(
    raw: list[Any],
    checks: Sequence[_Check] = (),
    now_ms: int = 0,
    dest: Destination | None = None,
    limits: Limits = NO_LIMITS,
) -> list[dict[str, Any]]:
    if raw[0] == -1:
        reason = raw[1]
        if reason == b"gone":
            raise Gone
        if reason == b"limit":
            raise _refusal(checks[int(raw[2]) - 1], now_ms)
        if reason == b"backlog" and dest is not None:
            RATE_LIMIT.set(None)
            raise _backlog_refusal(dest, limits, raw[2].decode())
        raise QuotaExceeded("A quota is used up; nothing was stored.")  # pragma: no cover
    _, records, left = raw
    RATE_LIMIT.set(_state(checks, left, now_ms) if checks else None)
    out = []
    for duplicate, record in records:
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
    would pass a limit of ``limits`` (rates per second of the tenant, of the key and of
    requests; monthly messages of the tenant and of the key; the destination's backlog)
    raises RateLimited / QuotaExceeded, and one for a deleted destination raises Gone; either
    way nothing is stored and nothing counted. The call counts (usage hash, this hour) the
    messages stored, their bytes and the request, for the tenant, the key and the resource;
    :data:`RATE_LIMIT` says what is left of the limit nearest to exhaustion."""
    keys, args, checks = publish_call(dest, messages, now_ms, limits)
    return publish_result(await scripts.PUBLISH.arun(keys, args), checks, now_ms, dest, limits)


# --- pull -------------------------------------------------------------------------------------

#: Fair queues (see pull.lua): a group (a message's key) is noisy while it holds more than
#: this percent of the queue's in-flight messages and at least FAIR_NOISY_MIN of them, as in
#: SQS's fair queues. Its messages are then leased after those of quiet groups.
FAIR_NOISY_PERCENT = 10
FAIR_NOISY_MIN = 30
#: How many candidates a fair pull weighs: 4 x the messages asked for, within these bounds.
FAIR_WINDOW_MIN = 100
FAIR_WINDOW_MAX = 500


def _consumer_kind(c: Consumer) -> int:
    """ARGV's consumer kind: 0 a subscription, 1 a queue, 2 a fair queue."""
    if not c.is_queue:
        return 0
    return 2 if c.fair else 1


def _consumer_keys(c: Consumer, second: int) -> list[str]:
    keys: list[str] = []
    for p in range(c.partitions):
        keys += (c.streams[p], c.delays[p], c.leases[p], c.retries[p])
    keys += (c.usage, rate_window_key(c.usage, second), c.backlog)
    if c.dlq_stream:
        keys += (c.dlq_stream, c.dlq_backlog)
    return keys


def pull_call(
    c: Consumer,
    count: int,
    visibility_ms: int | None,
    now_ms: int,
    limits: Limits = HOUSEKEEPING,
) -> tuple[list[str], list[Any]]:
    """The pull script's KEYS and ARGV (a housekeeping pull by default: see apull)."""
    keys, args, _ = pull_call_checked(c, count, visibility_ms, now_ms, limits)
    return keys, args


def pull_call_checked(
    c: Consumer,
    count: int,
    visibility_ms: int | None,
    now_ms: int,
    limits: Limits = HOUSEKEEPING,
) -> tuple[list[str], list[Any], list[_Check]]:
    first = next(_round_robin) % c.partitions if c.partitions > 1 else 0
    second = now_ms // 1000
    checks = _rate_checks(
        limits,
        second,
        counter="consume",
        tenant_limit=limits.consume_per_second,
        key_limit=limits.key_consume_per_second,
        done="nothing was leased",
    )
    key_scope, resource_scope = _scopes(limits, c.label)
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
        _consumer_kind(c),
        usage_hour_field(now_ms, "delivered"),
        c.dlq_channel,
        CONSUMER,
        usage_hour_field(now_ms, "delivered_bytes"),
        usage_hour_field(now_ms, "requests") if limits.request else "",
        usage_hour_field(now_ms, "dead_lettered"),
        key_scope,
        resource_scope,
        *_check_args(checks),
    ]
    if c.fair:
        args += [FAIR_NOISY_PERCENT, FAIR_NOISY_MIN, FAIR_WINDOW_MIN, FAIR_WINDOW_MAX]
    return _consumer_keys(c, second), args, checks


@dataclass(slots=True)
class Pulled:
    messages: list[dict[str, Any]]
    next_due_ms: int | None  # when nothing was delivered: when something may become due


def pull_result(raw: list[Any], checks: Sequence[_Check] = (), now_ms: int = 0) -> Pulled:
    if raw[0] == -2:
        raise Gone
    if raw[0] == -3:
        raise _refusal(checks[int(raw[1]) - 1], now_ms)
    next_due, entries, left = raw
    RATE_LIMIT.set(_state(checks, left, now_ms) if checks else None)
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
    limits: Limits = HOUSEKEEPING,
) -> Pulled:
    """Lease up to ``count`` messages (0: housekeeping only) for the visibility timeout, and
    no more than the consume rates of ``limits`` leave for this second. Raises Gone, having
    changed nothing, when the consumer's structures are missing, and RateLimited, having
    leased and counted nothing, when a consume rate has nothing left or the request rate is
    used up. Counts (this hour) what was delivered, its bytes, the dead letters made on the
    way and the request (when ``limits.request``), for the tenant, the key and the resource;
    a housekeeping pull (the default) counts the dead letters only, for the tenant and the
    resource."""
    keys, args, checks = pull_call_checked(c, count, visibility_ms, now_ms, limits)
    return pull_result(await scripts.PULL.arun(keys, args), checks, now_ms)


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
    c: Consumer,
    mode: str,
    ack_ids: list[tuple[int, str, int]],
    ms: int,
    now_ms: int,
    limits: Limits = NO_LIMITS,
) -> tuple[list[str], list[Any], list[_Check]]:
    second = now_ms // 1000
    keys: list[str] = []
    for p in range(c.partitions):
        keys += (c.streams[p], c.leases[p], c.retries[p])
    keys += (c.usage, rate_window_key(c.usage, second), c.backlog)
    if c.dlq_stream:
        keys += (c.dlq_stream, c.dlq_backlog)
    checks: list[_Check] = []
    if limits.request and limits.requests_per_second is not None:
        checks.append(
            _Check(
                "w",
                rate_field("requests"),
                limits.requests_per_second,
                "r",
                "requests",
                f"The tenant's request rate of {limits.requests_per_second} requests/s is used "
                "up for this second; nothing was settled.",
            )
        )
    key_scope, resource_scope = _scopes(limits, c.label)
    args: list[Any] = [
        mode,
        now_ms,
        c.group,
        c.partitions,
        _consumer_kind(c),
        ms,
        c.max_attempts,
        c.backoff_min_ms,
        c.backoff_max_ms,
        c.label,
        usage_hour_field(now_ms, "acked"),
        c.channel,
        c.dlq_channel,
        usage_hour_field(now_ms, "requests") if limits.request else "",
        usage_hour_field(now_ms, "dead_lettered"),
        key_scope,
        resource_scope,
        *_check_args(checks),
    ]
    for partition, offset, attempt in ack_ids:
        args += (partition, offset, attempt)
    return keys, args, checks


def settle_result(
    raw: list[Any], ack_ids: list[Any], checks: Sequence[_Check] = (), now_ms: int = 0
) -> tuple[int, list[str]]:
    if raw[0] == -1:
        raise Gone
    if raw[0] == -3:
        raise _refusal(checks[int(raw[1]) - 1], now_ms)
    settled, stale, left = raw
    RATE_LIMIT.set(_state(checks, left, now_ms) if checks else None)
    return int(settled), [ack_ids[i] for i in stale]


async def asettle(
    c: Consumer,
    mode: str,
    ack_ids: list[str],
    *,
    ms: int,
    now_ms: int,
    limits: Limits = NO_LIMITS,
) -> tuple[int, list[str]]:
    """``mode`` is 'ack', 'nack' (``ms`` delay, -1 for the backoff policy) or 'deadline'
    (``ms`` new lease length; 0 makes the messages deliverable now). Returns how many were
    settled and the stale ack ids. Raises Gone, having changed nothing, when the consumer's
    structures are missing, and RateLimited, having changed and counted nothing, past the
    tenant's request rate. Counts the request, the acks and the dead letters made (this hour)
    for the tenant, the key and the resource."""
    parsed = parse_ack_ids(ack_ids, c.partitions)
    keys, args, checks = settle_call(c, mode, parsed, ms, now_ms, limits)
    return settle_result(await scripts.SETTLE.arun(keys, args), ack_ids, checks, now_ms)
