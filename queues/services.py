"""Writes of topics, queues and subscriptions.

Each service is one PostgreSQL transaction with its audit record. Redis structures are
created and dropped inside the transaction, with the row locked (a Redis failure rolls the
change back), so PostgreSQL and Redis agree on what exists. The hot cache learns of every
change on commit; a process acting on a stale copy meanwhile finds the structures gone, and
:func:`resource_repair` is its way back to the truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Model, ProtectedError
from django.utils import timezone
from redis import exceptions as redis_exceptions

from kernel.errors import Conflict, InvalidRequest, NotFound, QuotaExceeded
from kernel.limits import (
    DEFAULT_PARTITIONS,
    DEFAULT_QUEUE_RETENTION,
    DEFAULT_TOPIC_RETENTION,
    DEFAULT_VISIBILITY_TIMEOUT,
    MAX_BACKOFF_SECONDS,
    is_stream_id,
)
from kernel.redis_client import get_redis
from queues import selectors
from queues.engine import dataplane, scripts, streams
from queues.engine.dataplane import Gone
from queues.engine.messages import now_ms
from queues.engine.targets import (
    Consumer,
    queue_consumer,
    queue_keys,
    subscription_consumer,
    topic_dedup_prefix,
    topic_destination,
    topic_partition_keys,
)
from queues.models import ConsumerPosition, Queue, StartAt, Subscription, Topic
from tenants.models import Tenant
from tenants.quotas import RESOURCE_QUOTAS, Effective, effective_quotas
from tenants.services import audit

logger = logging.getLogger(__name__)

BACKOFF_LIMIT = MAX_BACKOFF_SECONDS


def _validate(instance: Model) -> None:
    """Field-level validation of the model (ranges, name pattern) as a 400 naming fields."""
    try:
        instance.full_clean(exclude=["tenant"], validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        errors = [
            {"field": field, "detail": " ".join(str(m) for m in messages)}
            for field, messages in exc.message_dict.items()
        ]
        raise InvalidRequest(f"{errors[0]['field']}: {errors[0]['detail']}", errors=errors) from exc


def _push(tenant: Tenant, kind: str, name: str, doc: dict[str, Any] | None) -> None:
    ident = selectors.resource_ident(str(tenant.id), kind, name)
    transaction.on_commit(lambda: selectors.resource_cache.push(ident, doc))


def _field_error(field: str, detail: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {detail}", errors=[{"field": field, "detail": detail}])


def _set_backoff(instance: Queue | Subscription, backoff: dict[str, Any] | None) -> None:
    if backoff is None:
        return
    if not isinstance(backoff, dict) or set(backoff) - {"min_seconds", "max_seconds"}:
        raise _field_error("retry_backoff", 'Expected {"min_seconds": N, "max_seconds": N}.')
    low = backoff.get("min_seconds", instance.retry_backoff_min)
    high = backoff.get("max_seconds", instance.retry_backoff_max)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
        raise _field_error("retry_backoff", "min_seconds and max_seconds are integers.")
    if not 0 <= low <= high <= BACKOFF_LIMIT:
        raise _field_error(
            "retry_backoff", f"Need 0 <= min_seconds <= max_seconds <= {BACKOFF_LIMIT}."
        )
    instance.retry_backoff_min, instance.retry_backoff_max = low, high


def _set_dead_letter(
    tenant: Tenant, instance: Queue | Subscription, dlq_name: str | None, max_attempts: int | None
) -> None:
    """Dead letters need both a queue and a count; the queue must be another of this tenant's."""
    if dlq_name is None:
        instance.dead_letter_queue = None
    else:
        dlq = Queue.objects.for_tenant(tenant).filter(name=dlq_name).first()
        if dlq is None:
            raise _field_error("dead_letter_queue", f"No queue '{dlq_name}'.")
        if isinstance(instance, Queue) and dlq.pk == instance.pk:
            raise _field_error("dead_letter_queue", "A queue cannot be its own dead-letter queue.")
        instance.dead_letter_queue = dlq
    instance.max_delivery_attempts = max_attempts
    if (instance.dead_letter_queue is None) != (max_attempts is None):
        raise _field_error(
            "max_delivery_attempts",
            "Set dead_letter_queue and max_delivery_attempts together (or neither).",
        )


def _locked_quotas(tenant: Tenant) -> dict[str, Effective]:
    """The tenant's effective quotas (its plan's, or an operator's override), read with the
    tenant row locked until the commit. Every creation that a count quota limits and every
    change of the overrides takes this lock first, so two concurrent creations cannot both
    see room for one more, and a creation never counts against overrides being replaced."""
    locked = Tenant.objects.select_for_update().select_related("plan").get(pk=tenant.pk)
    return effective_quotas(locked)


def _current_quotas(tenant: Tenant) -> dict[str, Effective]:
    """The tenant's effective quotas as committed now (the caller's copy may be older)."""
    return effective_quotas(Tenant.objects.select_related("plan").get(pk=tenant.pk))


def _origin(limit: Effective) -> str:
    return "this tenant's override" if limit.source == "tenant" else "the plan"


def _check_count(
    tenant: Tenant, quotas: dict[str, Effective], model: type[Model], limit_name: str
) -> None:
    """QuotaExceeded when the tenant has ``limit_name`` rows of ``model`` already (None:
    unlimited). Counted under the lock of :func:`_locked_quotas`."""
    limit = quotas[limit_name]
    if limit.value is None:
        return
    have = model.objects.for_tenant(tenant).count()  # type: ignore[attr-defined]
    if have >= limit.value:
        plural = model._meta.verbose_name_plural
        raise QuotaExceeded(
            f"Quota {limit_name} reached: {_origin(limit)} allows {limit.value} {plural}, "
            f"and this tenant has {have}."
        )


def _check_retention(quotas: dict[str, Effective], retention_seconds: int) -> None:
    """QuotaExceeded naming ``retention_seconds`` when it is above the tenant's longest
    retention (a quota, like the counts: the same value may be fine on another plan, so it
    is a 403 quota_exceeded rather than a 400 about the request's form)."""
    limit = quotas["max_retention_seconds"]
    if limit.value is not None and retention_seconds > limit.value:
        detail = (
            f"Above the quota max_retention_seconds: {_origin(limit)} allows at most "
            f"{limit.value} seconds."
        )
        raise QuotaExceeded(
            f"retention_seconds: {detail}",
            errors=[{"field": "retention_seconds", "detail": detail}],
        )


#: The largest backlog limit a row holds (BIGINT).
MAX_BACKLOG_LIMIT = 2**63 - 1


def _set_backlog_limits(instance: Queue | Topic, values: dict[str, Any]) -> None:
    """A queue's or topic's own ``max_backlog_messages`` / ``max_backlog_bytes`` from
    ``values`` (only those given): a whole number of at least 1, or None for the tenant's.
    A value above the tenant's limit is kept but changes nothing: the tighter one holds
    (tenants.quotas.resource_quotas)."""
    for field in RESOURCE_QUOTAS:
        if field not in values:
            continue
        value = values[field]
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 1 <= value <= MAX_BACKLOG_LIMIT
        ):
            raise _field_error(
                field, f"A whole number from 1 to {MAX_BACKLOG_LIMIT}, or null for the tenant's."
            )
        setattr(instance, field, value)


def _backlog_data(instance: Queue | Topic) -> dict[str, Any]:
    """The backlog limits a new row was given, for its audit event (none: no data)."""
    return {f: getattr(instance, f) for f in RESOURCE_QUOTAS if getattr(instance, f) is not None}


def _save_new(instance: Model, kind: str) -> None:
    try:
        with transaction.atomic():
            instance.save()
    except IntegrityError as exc:
        raise Conflict(f"A {kind} named '{instance.name}' already exists.") from exc  # type: ignore[attr-defined]


def _unchanged_fields(changes: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(changes) - allowed
    if unknown:
        field = sorted(unknown)[0]
        raise _field_error(field, "This field cannot be changed.")


def _apply_delivery_changes(
    tenant: Tenant, instance: Queue | Subscription, changes: dict[str, Any]
) -> None:
    """The delivery settings queues and subscriptions share: visibility timeout, retry
    backoff, and dead letters (a changed half of the pair keeps the other half)."""
    if "visibility_timeout" in changes:
        instance.visibility_timeout = changes["visibility_timeout"]
    _set_backoff(instance, changes.get("retry_backoff"))
    if "dead_letter_queue" in changes or "max_delivery_attempts" in changes:
        current = instance.dead_letter_queue.name if instance.dead_letter_queue else None
        _set_dead_letter(
            tenant,
            instance,
            changes.get("dead_letter_queue", current),
            changes.get("max_delivery_attempts", instance.max_delivery_attempts),
        )


def _save_changes(
    tenant: Tenant,
    actor: str,
    instance: Queue | Subscription | Topic,
    kind: str,
    changes: dict[str, Any],
    document: Callable[[Any], dict[str, Any]],
) -> None:
    """Validate and save a changed row, audit the change, and push it to the hot cache."""
    _validate(instance)
    instance.save()
    audit(
        tenant=tenant,
        actor=actor,
        action=f"{kind}.update",
        target_type=kind,
        target_id=instance.name,
        data=dict(changes),
    )
    _push(tenant, kind, instance.name, document(instance))


# --- queues -----------------------------------------------------------------------------------


@transaction.atomic
def queue_create(
    *,
    tenant: Tenant,
    actor: str,
    name: str,
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
    delay_seconds: int = 0,
    retention_seconds: int = DEFAULT_QUEUE_RETENTION,
    max_delivery_attempts: int | None = None,
    dead_letter_queue: str | None = None,
    retry_backoff: dict[str, int] | None = None,
    max_backlog_messages: int | None = None,
    max_backlog_bytes: int | None = None,
    fair: bool = False,
) -> Queue:
    """Create a queue (``fair``: its pulls serve quiet groups, by message key, before noisy
    ones; see ARCHITECTURE.md, "Fair queues"). Bad settings are InvalidRequest; beyond the
    tenant's effective quotas (``max_queues``, ``max_retention_seconds``) QuotaExceeded; a
    taken name Conflict. A refusal stores nothing, in PostgreSQL or Redis. The count is taken
    with the tenant row locked, so concurrent creations never overshoot ``max_queues``."""
    queue = Queue(
        tenant=tenant,
        name=name,
        visibility_timeout=visibility_timeout,
        delay_seconds=delay_seconds,
        retention_seconds=retention_seconds,
        fair=_fair_flag(fair),
    )
    _set_backoff(queue, retry_backoff)
    _set_dead_letter(tenant, queue, dead_letter_queue, max_delivery_attempts)
    _set_backlog_limits(
        queue,
        {"max_backlog_messages": max_backlog_messages, "max_backlog_bytes": max_backlog_bytes},
    )
    _validate(queue)
    quotas = _locked_quotas(tenant)
    _check_retention(quotas, queue.retention_seconds)
    _check_count(tenant, quotas, Queue, "max_queues")
    _save_new(queue, "queue")
    streams.queue_create(get_redis(), str(tenant.id), str(queue.id))
    audit(
        tenant=tenant,
        actor=actor,
        action="queue.create",
        target_type="queue",
        target_id=name,
        data={**_backlog_data(queue), **({"fair": True} if queue.fair else {})},
    )
    _push(tenant, "queue", name, selectors.queue_document(queue))
    return queue


QUEUE_MUTABLE = {
    "visibility_timeout",
    "delay_seconds",
    "retention_seconds",
    "max_delivery_attempts",
    "dead_letter_queue",
    "retry_backoff",
    "fair",
    *RESOURCE_QUOTAS,
}


def _fair_flag(value: Any) -> bool:
    """``fair`` as given: a boolean, anything else InvalidRequest."""
    if not isinstance(value, bool):
        raise InvalidRequest("fair must be true or false.")
    return value


@transaction.atomic
def queue_update(*, tenant: Tenant, actor: str, queue: Queue, changes: dict[str, Any]) -> Queue:
    """Change the settings in ``changes`` (QUEUE_MUTABLE). A new ``retention_seconds``
    above the tenant's ``max_retention_seconds`` is QuotaExceeded; a refusal changes
    nothing."""
    _unchanged_fields(changes, QUEUE_MUTABLE)
    queue = Queue.objects.for_tenant(tenant).select_for_update().get(pk=queue.pk)
    for field in ("delay_seconds", "retention_seconds"):
        if field in changes:
            setattr(queue, field, changes[field])
    if "fair" in changes:
        queue.fair = _fair_flag(changes["fair"])
    _set_backlog_limits(queue, changes)
    _apply_delivery_changes(tenant, queue, changes)
    if "retention_seconds" in changes:
        _validate(queue)  # a 400 for a value out of range comes before the quota's 403
        _check_retention(_current_quotas(tenant), queue.retention_seconds)
    _save_changes(tenant, actor, queue, "queue", changes, selectors.queue_document)
    return queue


@transaction.atomic
def queue_delete(*, tenant: Tenant, actor: str, queue: Queue) -> None:
    """Delete a queue with its messages.

    The row is locked, then deleted, then the queue's Redis structures are dropped in one
    atomic step, all before the commit: a publish or pull that still holds a cached copy of
    the queue finds it gone in Redis from that step on and stores nothing (and its fallback
    look-up waits on the row lock, then sees no queue: 404). A Redis failure rolls the
    deletion back, so PostgreSQL and Redis never disagree about whether the queue exists."""
    try:
        queue = Queue.objects.for_tenant(tenant).select_for_update().get(pk=queue.pk)
    except Queue.DoesNotExist as exc:  # deleted by a concurrent request
        raise NotFound("No such queue.") from exc
    # Reverse relations go through the fail-closed TenantManager, so ask per tenant.
    users = list(
        Queue.objects.for_tenant(tenant)
        .filter(dead_letter_queue=queue)
        .values_list("name", flat=True)
    ) + list(
        Subscription.objects.for_tenant(tenant)
        .filter(dead_letter_queue=queue)
        .values_list("name", flat=True)
    )
    if users:
        raise Conflict(
            f"Queue '{queue.name}' is the dead-letter queue of {', '.join(sorted(users))}; "
            "change those first."
        )
    tenant_id, queue_id, name = str(tenant.id), str(queue.id), queue.name
    try:
        queue.delete()
    except ProtectedError as exc:  # made a dead-letter queue since the check above
        raise Conflict(f"Queue '{name}' is a dead-letter queue; change its users first.") from exc
    audit(tenant=tenant, actor=actor, action="queue.delete", target_type="queue", target_id=name)
    redis = get_redis()
    streams.queue_drop(redis, tenant_id, queue_id)
    _push(tenant, "queue", name, None)
    dedup = queue_keys(tenant_id, queue_id)["dedup"]
    transaction.on_commit(lambda: _forget_dedup(dedup))


def _forget_dedup(prefix: str) -> None:
    """After a deletion: its dedup keys go (best effort; they expire within minutes anyway)."""
    try:
        streams.forget_dedup(get_redis(), prefix)
    except redis_exceptions.RedisError as exc:
        logger.warning("dedup keys under %s left to expire: %r", prefix, exc)


def queue_purge(*, tenant: Tenant, actor: str, queue: Queue) -> int:
    tenant_id = str(tenant.id)
    redis = get_redis()
    try:
        purged = streams.purge(redis, queue_consumer(tenant_id, selectors.queue_document(queue)))
    except Gone:
        doc = _repaired(tenant_id, "queue", queue.name)
        purged = streams.purge(redis, queue_consumer(tenant_id, doc))
    audit(
        tenant=tenant,
        actor=actor,
        action="queue.purge",
        target_type="queue",
        target_id=queue.name,
        data={"purged": purged},
    )
    return purged


def queue_redrive(
    *,
    tenant: Tenant,
    actor: str,
    queue: Queue,
    to: str | None,
    max_messages: int | None,
    may_target: Callable[[str], bool] | None = None,
) -> dict[str, int]:
    """Move dead letters from ``queue`` back to ``to`` or, by default, each to its source
    queue. Dead letters of subscriptions (or of deleted queues) need an explicit ``to``.
    ``may_target(name)`` restricts the default sources (a resource-limited API key may not
    write to every queue); the dead letters of the others stay and count as skipped."""
    redis = get_redis()
    dlq = queue_consumer(str(tenant.id), selectors.queue_document(queue))
    default, targets = _redrive_targets(redis, tenant, queue, dlq, to, may_target)
    result = streams.redrive(
        redis, dlq, targets=targets, default=default, max_messages=max_messages
    )
    audit(
        tenant=tenant,
        actor=actor,
        action="queue.redrive",
        target_type="queue",
        target_id=queue.name,
        data={"to": to, **result},
    )
    return result


# --- topics -----------------------------------------------------------------------------------


@transaction.atomic
def topic_create(
    *,
    tenant: Tenant,
    actor: str,
    name: str,
    partitions: int = DEFAULT_PARTITIONS,
    retention_seconds: int = DEFAULT_TOPIC_RETENTION,
    max_backlog_messages: int | None = None,
    max_backlog_bytes: int | None = None,
) -> Topic:
    """Create a topic; refusals as :func:`queue_create` (``max_topics``,
    ``max_retention_seconds``), storing nothing."""
    topic = Topic(
        tenant=tenant, name=name, partitions=partitions, retention_seconds=retention_seconds
    )
    _set_backlog_limits(
        topic,
        {"max_backlog_messages": max_backlog_messages, "max_backlog_bytes": max_backlog_bytes},
    )
    _validate(topic)
    quotas = _locked_quotas(tenant)
    _check_retention(quotas, topic.retention_seconds)
    _check_count(tenant, quotas, Topic, "max_topics")
    _save_new(topic, "topic")
    streams.topic_create(get_redis(), str(tenant.id), str(topic.id), topic.partitions)
    audit(
        tenant=tenant,
        actor=actor,
        action="topic.create",
        target_type="topic",
        target_id=name,
        data=_backlog_data(topic),
    )
    _push(tenant, "topic", name, selectors.topic_document(topic))
    return topic


@transaction.atomic
def topic_update(*, tenant: Tenant, actor: str, topic: Topic, changes: dict[str, Any]) -> Topic:
    """Only the retention and the backlog limits can change: more partitions would move keys
    between partitions and break the per-key order that consumers rely on. A retention above
    the tenant's ``max_retention_seconds`` is QuotaExceeded and changes nothing."""
    _unchanged_fields(changes, {"retention_seconds", *RESOURCE_QUOTAS})
    topic = Topic.objects.for_tenant(tenant).select_for_update().get(pk=topic.pk)
    _set_backlog_limits(topic, changes)
    if "retention_seconds" in changes:
        topic.retention_seconds = changes["retention_seconds"]
        _validate(topic)
        _check_retention(_current_quotas(tenant), topic.retention_seconds)
    _save_changes(tenant, actor, topic, "topic", changes, selectors.topic_document)
    return topic


@transaction.atomic
def topic_delete(*, tenant: Tenant, actor: str, topic: Topic) -> None:
    """Deletes the topic, its subscriptions and all their messages, in Redis before the
    commit and in one atomic step (see queue_delete)."""
    try:
        topic = Topic.objects.for_tenant(tenant).select_for_update().get(pk=topic.pk)
    except Topic.DoesNotExist as exc:
        raise NotFound("No such topic.") from exc
    tenant_id, topic_id, partitions, name = (
        str(tenant.id),
        str(topic.id),
        topic.partitions,
        topic.name,
    )
    # by name: the audit event lists them in a stable order (and locks are taken in one order)
    subs = list(
        Subscription.objects.for_tenant(tenant)
        .filter(topic=topic)
        .order_by("name")
        .select_for_update()
    )
    topic.delete()
    audit(
        tenant=tenant,
        actor=actor,
        action="topic.delete",
        target_type="topic",
        target_id=name,
        data={"subscriptions": [s.name for s in subs]},
    )
    streams.topic_drop(get_redis(), tenant_id, topic_id, partitions, [str(s.id) for s in subs])
    for sub in subs:
        _push(tenant, "subscription", sub.name, None)
    _push(tenant, "topic", name, None)
    dedup = topic_dedup_prefix(tenant_id, topic_id)
    transaction.on_commit(lambda: _forget_dedup(dedup))


# --- subscriptions ----------------------------------------------------------------------------


def _set_filter(sub: Subscription, filter_: dict[str, Any] | None) -> None:
    if filter_ is None:
        return
    attributes = filter_.get("attributes", {}) if isinstance(filter_, dict) else None
    if (
        not isinstance(filter_, dict)
        or set(filter_) - {"attributes"}
        or not isinstance(attributes, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items())
    ):
        raise _field_error("filter", 'Expected {"attributes": {"name": "value", ...}}.')
    sub.filter_attributes = attributes


@transaction.atomic
def subscription_create(
    *,
    tenant: Tenant,
    actor: str,
    name: str,
    topic: str,
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
    max_delivery_attempts: int | None = None,
    dead_letter_queue: str | None = None,
    retry_backoff: dict[str, int] | None = None,
    filter: dict[str, Any] | None = None,
    start_at: str = StartAt.LATEST,
) -> Subscription:
    # Locked so the topic cannot be deleted between here and the groups' creation below.
    topic_row = Topic.objects.for_tenant(tenant).select_for_update().filter(name=topic).first()
    if topic_row is None:
        raise _field_error("topic", f"No topic '{topic}'.")
    sub = Subscription(
        tenant=tenant,
        name=name,
        topic=topic_row,
        visibility_timeout=visibility_timeout,
        start_at=start_at,
    )
    _set_backoff(sub, retry_backoff)
    _set_dead_letter(tenant, sub, dead_letter_queue, max_delivery_attempts)
    _set_filter(sub, filter)
    _validate(sub)
    _check_count(tenant, _locked_quotas(tenant), Subscription, "max_subscriptions")
    _save_new(sub, "subscription")
    streams.subscription_create(
        get_redis(), str(tenant.id), str(topic_row.id), topic_row.partitions, str(sub.id), start_at
    )
    audit(
        tenant=tenant,
        actor=actor,
        action="subscription.create",
        target_type="subscription",
        target_id=name,
        data={"topic": topic},
    )
    _push(tenant, "subscription", name, selectors.subscription_document(sub))
    return sub


SUBSCRIPTION_MUTABLE = {
    "visibility_timeout",
    "max_delivery_attempts",
    "dead_letter_queue",
    "retry_backoff",
    "filter",
}


@transaction.atomic
def subscription_update(
    *, tenant: Tenant, actor: str, subscription: Subscription, changes: dict[str, Any]
) -> Subscription:
    _unchanged_fields(changes, SUBSCRIPTION_MUTABLE)
    sub = (
        Subscription.objects.for_tenant(tenant)
        # lock only this row: PostgreSQL refuses FOR UPDATE on the outer-joined DLQ side
        .select_for_update(of=("self",))
        .select_related("topic", "dead_letter_queue")
        .get(pk=subscription.pk)
    )
    _set_filter(sub, changes.get("filter"))
    _apply_delivery_changes(tenant, sub, changes)
    _save_changes(tenant, actor, sub, "subscription", changes, selectors.subscription_document)
    return sub


@transaction.atomic
def subscription_delete(*, tenant: Tenant, actor: str, subscription: Subscription) -> None:
    """Deletes the subscription, its groups, leases and retries (see queue_delete)."""
    try:
        subscription = (
            Subscription.objects.for_tenant(tenant)
            .select_for_update(of=("self",))
            .select_related("topic")
            .get(pk=subscription.pk)
        )
    except Subscription.DoesNotExist as exc:
        raise NotFound("No such subscription.") from exc
    topic = subscription.topic
    args = (str(tenant.id), str(topic.id), topic.partitions, str(subscription.id))
    name = subscription.name
    subscription.delete()
    audit(
        tenant=tenant,
        actor=actor,
        action="subscription.delete",
        target_type="subscription",
        target_id=name,
    )
    streams.subscription_drop(get_redis(), *args)
    _push(tenant, "subscription", name, None)


def subscription_seek(
    *, tenant: Tenant, actor: str, subscription: Subscription, to: str | datetime
) -> None:
    """Replay (or skip) the retained log: ``earliest``, ``latest`` or a time."""
    consumer = subscription_consumer(str(tenant.id), selectors.subscription_document(subscription))
    redis = get_redis()
    if to == "earliest":
        marks = ["0"] * consumer.partitions
    elif to == "latest":
        marks = ["$"] * consumer.partitions
    elif isinstance(to, datetime):
        marks = streams.seek_positions_for_time(redis, consumer, int(to.timestamp() * 1000))
    else:
        raise _field_error("to", 'Expected "earliest", "latest" or an RFC 3339 time.')
    try:
        streams.seek(redis, consumer, marks)
    except Gone:
        doc = _repaired(str(tenant.id), "subscription", subscription.name)
        streams.seek(redis, subscription_consumer(str(tenant.id), doc), marks)
    with transaction.atomic():
        audit(
            tenant=tenant,
            actor=actor,
            action="subscription.seek",
            target_type="subscription",
            target_id=subscription.name,
            data={"to": to if isinstance(to, str) else to.isoformat()},
        )
    positions_snapshot_one(tenant_id=str(tenant.id), subscription=subscription)


# --- consumer positions -----------------------------------------------------------------------


def _save_positions(tenant_id: str, found: list[streams.Position], **owner: Any) -> bool:
    """Upsert the positions of one queue or subscription; False (nothing saved) when it was
    deleted since it was read: its row is gone, so the insert violates the foreign key."""
    try:
        with transaction.atomic():
            for position in found:
                ConsumerPosition.all_tenants.update_or_create(
                    tenant_id=tenant_id,
                    partition=position.partition,
                    **owner,
                    defaults={
                        "last_delivered_id": position.last_delivered_id,
                        "acked_id": position.acked_id,
                        "last_generated_id": position.last_generated_id,
                        "updated_at": timezone.now(),
                    },
                )
    except IntegrityError:
        return False
    return True


def positions_snapshot_one(
    *, tenant_id: str, queue: Queue | None = None, subscription: Subscription | None = None
) -> bool:
    """Copy one consumer's Redis positions to PostgreSQL; False when Redis has no group."""
    if queue is not None:
        consumer = queue_consumer(tenant_id, selectors.queue_document(queue))
    else:
        assert subscription is not None
        consumer = subscription_consumer(tenant_id, selectors.subscription_document(subscription))
    found = streams.positions(get_redis(), consumer)
    if found is None:
        return False
    if queue is not None:
        return _save_positions(tenant_id, found, queue=queue)
    return _save_positions(tenant_id, found, subscription=subscription)


def _each_consumer() -> list[tuple[str, Queue | Subscription, Callable[[], Any]]]:
    out: list[tuple[str, Queue | Subscription, Callable[[], Any]]] = []
    for queue in Queue.all_tenants.select_related("dead_letter_queue"):
        tid = str(queue.tenant_id)
        out.append((tid, queue, partial(_queue_consumer_of, tid, queue)))
    for sub in Subscription.all_tenants.select_related("topic", "dead_letter_queue"):
        tid = str(sub.tenant_id)
        out.append((tid, sub, partial(_subscription_consumer_of, tid, sub)))
    return out


def _queue_consumer_of(tenant_id: str, queue: Queue) -> Consumer:
    return queue_consumer(tenant_id, selectors.queue_document(queue))


def _subscription_consumer_of(tenant_id: str, sub: Subscription) -> Consumer:
    return subscription_consumer(tenant_id, selectors.subscription_document(sub))


def positions_snapshot_all() -> int:
    """Snapshot every queue's and subscription's positions (Celery beat)."""
    saved = 0
    for tenant_id, owner, _ in _each_consumer():
        if isinstance(owner, Queue):
            saved += positions_snapshot_one(tenant_id=tenant_id, queue=owner)
        else:
            saved += positions_snapshot_one(tenant_id=tenant_id, subscription=owner)
    return saved


def _saved_positions(owner: Queue | Subscription) -> dict[int, streams.Position]:
    field = "queue" if isinstance(owner, Queue) else "subscription"
    return {
        p.partition: streams.Position(
            p.partition, p.last_delivered_id, p.acked_id, p.last_generated_id
        )
        for p in ConsumerPosition.all_tenants.filter(**{field: owner})
    }


def _rebuild_consumer(redis: Any, tenant_id: str, owner: Queue | Subscription) -> list[str]:
    """Recreate a queue's or subscription's missing stream and groups at the snapshotted
    positions (nothing when they exist). Returns what was done."""
    if isinstance(owner, Queue):
        consumer = queue_consumer(tenant_id, selectors.queue_document(owner))
    else:
        consumer = subscription_consumer(tenant_id, selectors.subscription_document(owner))
    return [
        f"{consumer.label} ({tenant_id}): {line}"
        for line in streams.rebuild(redis, consumer, _saved_positions(owner))
    ]


def streams_rebuild() -> list[str]:
    """Recreate missing streams and consumer groups at the snapshotted positions, and the
    streams of topics nobody subscribes to."""
    redis = get_redis()
    report: list[str] = []
    for tenant_id, owner, _build in _each_consumer():
        report += _rebuild_consumer(redis, tenant_id, owner)
    for topic in Topic.all_tenants.all():
        streams.topic_create(redis, str(topic.tenant_id), str(topic.id), topic.partitions)
    return report


@transaction.atomic
def resource_repair(*, tenant_id: str, kind: str, name: str) -> dict[str, Any] | None:
    """The fallback of the data plane after a script found a resource gone in Redis.

    Reads the truth from PostgreSQL with the row locked, so a deletion in progress is waited
    for (it holds the lock until its commit). No row: the resource is deleted; the hot cache
    learns so and None is returned (the caller answers 404). A row: its Redis structures (and
    those of its dead-letter queue, and for a topic those of its subscriptions) are recreated
    where missing, at the snapshotted positions (after Redis lost data; nothing when a cached
    copy was merely stale, e.g. of a deleted queue whose name was taken again), the current
    document is pushed to the hot cache and returned, and the caller retries once with it."""
    redis = get_redis()
    models: dict[str, type[Queue] | type[Topic] | type[Subscription]]
    models = {"queue": Queue, "topic": Topic, "subscription": Subscription}
    locked = (
        models[kind].objects.for_tenant(tenant_id).filter(name=name).select_for_update().first()
    )
    if locked is None:
        selectors.resource_cache.push(selectors.resource_ident(tenant_id, kind, name), None)
        return None
    doc: dict[str, Any]
    if isinstance(locked, Topic):
        for sub in Subscription.objects.for_tenant(tenant_id).filter(topic=locked):
            _rebuild_consumer(redis, tenant_id, sub)
        streams.topic_create(redis, tenant_id, str(locked.id), locked.partitions)
        doc = selectors.topic_document(locked)
    elif isinstance(locked, Queue):
        queue = selectors.queue_list(tenant=tenant_id).get(pk=locked.pk)
        _rebuild_with_dead_letters(redis, tenant_id, queue)
        doc = selectors.queue_document(queue)
    else:
        sub = selectors.subscription_list(tenant=tenant_id).get(pk=locked.pk)
        _rebuild_with_dead_letters(redis, tenant_id, sub)
        doc = selectors.subscription_document(sub)
    selectors.resource_cache.push(selectors.resource_ident(tenant_id, kind, name), doc)
    return doc


def _rebuild_with_dead_letters(redis: Any, tenant_id: str, consumer: Queue | Subscription) -> None:
    if consumer.dead_letter_queue is not None:
        _rebuild_consumer(redis, tenant_id, consumer.dead_letter_queue)
    _rebuild_consumer(redis, tenant_id, consumer)


def _repaired(tenant_id: str, kind: str, name: str) -> dict[str, Any]:
    doc = resource_repair(tenant_id=tenant_id, kind=kind, name=name)
    if doc is None:
        raise NotFound(f"No such {kind}.")
    return doc


def housekeeping_all(*, chunk: int = 500) -> int:
    """Due delays into streams, expired leases to retry or dead letters, for every consumer
    (Celery beat), so nothing waits for a pull to happen. Pipelined: one round trip per
    ``chunk`` consumers. Returns how many consumers were visited."""
    redis = get_redis()
    now = now_ms()
    consumers = [build() for _tenant_id, _owner, build in _each_consumer()]
    for start in range(0, len(consumers), chunk):
        pipe = redis.pipeline(transaction=False)
        for consumer in consumers[start : start + chunk]:
            keys, args = dataplane.pull_call(consumer, 0, None, now)
            scripts.PULL.queue(pipe, keys, args)
        pipe.execute(raise_on_error=False)
    # topics nobody pulls from yet still show their delayed messages in the log when due
    topics = list(Topic.all_tenants.all())
    for start in range(0, len(topics), chunk):
        pipe = redis.pipeline(transaction=False)
        for topic in topics[start : start + chunk]:
            dest = topic_destination(str(topic.tenant_id), selectors.topic_document(topic))
            keys = [key for pair in zip(dest.streams, dest.delays, strict=True) for key in pair]
            scripts.DUE.queue(pipe, keys, [now])
        pipe.execute(raise_on_error=False)
    return len(consumers)


def retention_trim_all() -> int:
    redis = get_redis()
    now = now_ms()
    removed = 0
    for topic in Topic.all_tenants.all():
        keys = [
            topic_partition_keys(str(topic.tenant_id), str(topic.id), p)["stream"]
            for p in range(topic.partitions)
        ]
        removed += streams.trim(redis, keys, retention_seconds=topic.retention_seconds, now_ms=now)
    for queue in Queue.all_tenants.all():
        removed += streams.trim(
            redis,
            [queue_keys(str(queue.tenant_id), str(queue.id))["stream"]],
            retention_seconds=queue.retention_seconds,
            now_ms=now,
        )
    return removed


# --- per-minute metrics -----------------------------------------------------------------------


_MetricSource = tuple[Queue | Topic | Subscription, str, tuple[str, ...], str | None]


def _metric_sources() -> list[_MetricSource]:
    """(resource, kind, its streams, its consumer group or None) of every resource."""
    out: list[_MetricSource] = []
    for _, owner, consumer_of in _each_consumer():
        consumer: Consumer = consumer_of()
        kind = "queue" if isinstance(owner, Queue) else "subscription"
        out.append((owner, kind, consumer.streams, consumer.group))
    for topic in Topic.all_tenants.all():
        dest = topic_destination(str(topic.tenant_id), selectors.topic_document(topic))
        out.append((topic, "topic", dest.streams, None))
    return out


def _flow(total: int, previous: int | None) -> int:
    """The traffic between two samples of a cumulative counter; a counter that went down was
    reset (its stream was rebuilt), so all of it is new."""
    if previous is None:
        return total
    return total - previous if total >= previous else total


def metrics_sample_all(*, now: datetime | None = None) -> int:
    """Write this minute's ResourceMetric row of every queue, topic and subscription (Celery
    beat, every minute) and drop rows older than METRIC_RETENTION_HOURS. Returns the rows
    written.

    The data plane keeps no per-resource counters (its usage hash counts per tenant and hour),
    so the flows are sampled from what the streams already count (``streams.flow_totals``):
    this keeps the publish script one round trip with nothing added to it, at the price of
    approximations documented there (a queue's "acked" includes dead-lettered and expired
    messages; redeliveries are not counted again). Backlog (available + in flight + delayed)
    and the oldest message's age are ``selectors.live_stats``. Running twice in a minute
    rewrites that minute's row from the same previous sample, so a doubled run changes
    nothing more. A resource's first sample counts its traffic since creation if it was
    created in the last two minutes, else it is a baseline with no flow (its earlier traffic
    is not this minute's)."""
    from datetime import timedelta

    from kernel.limits import METRIC_RETENTION_HOURS
    from queues.models import ResourceMetric

    now = now or timezone.now()
    minute = now.replace(second=0, microsecond=0)
    redis = get_redis()
    written = 0
    for row, kind, keys, group in _metric_sources():
        totals = streams.flow_totals(redis, keys, group, is_queue=kind == "queue")
        levels = {"backlog": 0, "oldest_age_seconds": 0}
        if not isinstance(row, Topic):
            (stats,) = selectors.live_stats([row])
            levels = {
                "backlog": stats["available"] + stats["in_flight"] + stats["delayed"],
                "oldest_age_seconds": stats["oldest_age_seconds"],
            }
        previous = (
            ResourceMetric.all_tenants.filter(kind=kind, resource_id=row.id, minute__lt=minute)
            .order_by("-minute")
            .first()
        )
        fresh = row.created_at >= minute - timedelta(minutes=2)
        flows = {
            name: _flow(
                totals[f"{name}_total"],
                getattr(previous, f"{name}_total")
                if previous is not None
                else (None if fresh else totals[f"{name}_total"]),
            )
            for name in ("published", "delivered", "acked")
        }
        ResourceMetric.all_tenants.update_or_create(
            kind=kind,
            resource_id=row.id,
            minute=minute,
            defaults={"tenant_id": row.tenant_id, **flows, **levels, **totals},
        )
        written += 1
    ResourceMetric.all_tenants.filter(
        minute__lt=minute - timedelta(hours=METRIC_RETENTION_HOURS)
    ).delete()
    return written


# --- dead letters, one by one -----------------------------------------------------------------


def _entry_ids(ids: list[str]) -> list[str]:
    """The distinct offsets of ``ids`` in order; a 400 naming ``ids`` for one Redis would
    refuse (so a bad id is never half-applied)."""
    bad = [i for i in ids if not is_stream_id(i)]
    if bad or not ids:
        raise _field_error("ids", f"Not a message offset: {bad[0]}." if bad else "None chosen.")
    return list(dict.fromkeys(ids))


def dead_letter_redrive(
    *, tenant: Tenant, actor: str, queue: Queue, ids: list[str], to: str | None
) -> dict[str, int]:
    """:func:`queue_redrive` of the dead letters stored in ``queue`` at offsets ``ids`` only:
    to ``to`` or each to its source queue. Ids no longer stored, leased ones and those with
    nowhere to go stay (or stay gone) and count as skipped."""
    chosen = _entry_ids(ids)
    redis = get_redis()
    dlq = queue_consumer(str(tenant.id), selectors.queue_document(queue))
    default, targets = _redrive_targets(redis, tenant, queue, dlq, to, None)
    result = streams.redrive_ids(redis, dlq, chosen, targets=targets, default=default)
    audit(
        tenant=tenant,
        actor=actor,
        action="queue.redrive",
        target_type="queue",
        target_id=queue.name,
        data={"to": to, "ids": chosen, **result},
    )
    return result


def dead_letter_purge(*, tenant: Tenant, actor: str, queue: Queue, ids: list[str]) -> int:
    """Delete the messages stored in ``queue`` at offsets ``ids`` (leased ones too); the
    count deleted (ids no longer stored count for nothing)."""
    chosen = _entry_ids(ids)
    consumer = queue_consumer(str(tenant.id), selectors.queue_document(queue))
    purged = streams.delete_ids(get_redis(), consumer, chosen)
    audit(
        tenant=tenant,
        actor=actor,
        action="queue.purge",
        target_type="queue",
        target_id=queue.name,
        data={"purged": purged, "ids": chosen},
    )
    return purged


def _redrive_targets(
    redis: Any,
    tenant: Tenant,
    queue: Queue,
    dlq: Consumer,
    to: str | None,
    may_target: Callable[[str], bool] | None,
) -> tuple[tuple[str, str] | None, dict[str, tuple[str, str] | None]]:
    """Where a redrive out of ``queue`` writes: (the ``to`` queue's stream and channel, or
    None) and, without ``to``, each source label's; a 400 for a ``to`` that is no other queue."""
    tenant_id = str(tenant.id)
    targets: dict[str, tuple[str, str] | None] = {}
    if to is not None:
        target = Queue.objects.for_tenant(tenant).filter(name=to).first()
        if target is None:
            raise _field_error("to", f"No queue '{to}'.")
        if target.pk == queue.pk:
            raise _field_error("to", "Cannot redrive a queue into itself.")
        tc = queue_consumer(tenant_id, selectors.queue_document(target))
        return (tc.streams[0], tc.channel), targets
    names = {
        label.split(":", 1)[1]
        for label in streams.dead_letter_sources(redis, dlq)
        if label.startswith("queue:") and (may_target is None or may_target(label.split(":", 1)[1]))
    }
    for source in Queue.objects.for_tenant(tenant).filter(name__in=names):
        sc = queue_consumer(tenant_id, selectors.queue_document(source))
        targets[f"queue:{source.name}"] = (sc.streams[0], sc.channel)
    return None, targets
