"""Topics, subscriptions and queues: the metadata. Their messages live in Redis Streams
(queues.engine); PostgreSQL keeps what they are and where each consumer stands."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from kernel.limits import (
    DEFAULT_BACKOFF_MAX,
    DEFAULT_BACKOFF_MIN,
    DEFAULT_PARTITIONS,
    DEFAULT_QUEUE_RETENTION,
    DEFAULT_TOPIC_RETENTION,
    DEFAULT_VISIBILITY_TIMEOUT,
    MAX_DELAY_SECONDS,
    MAX_DELIVERY_ATTEMPTS,
    MAX_PARTITIONS,
    MAX_RETENTION_SECONDS,
    MAX_VISIBILITY_TIMEOUT,
    MIN_RETENTION_SECONDS,
    NAME_PATTERN,
)
from tenants.models import Tenant, TenantManager

name_validator = RegexValidator(NAME_PATTERN, "1-128 of A-Z a-z 0-9 . _ -, starting alphanumeric.")

_DIGITS = re.compile(r"[0-9]+")


def natural_sort_key(name: str) -> str:
    """The key the console sorts names by: case folded, and each run of digits prefixed with
    its length, so numbers compare by value ("q2" < "q10") with plain byte order. (An ICU
    collation would do the same, but PostgreSQL is not always built with ICU.)"""
    return _DIGITS.sub(lambda run: f"{len(run.group()):03d}{run.group()}", name.lower())


class NaturalSortKeyField(models.CharField):  # type: ignore[type-arg]  # generic only in the stubs
    """``natural_sort_key`` of the row's name, written on every insert and save (bulk_create
    included: Django asks each field's ``pre_save`` for the value)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 400)  # a 128-character name of 64 digit runs: 384
        kwargs.setdefault("editable", False)
        kwargs.setdefault("default", "")
        super().__init__(**kwargs)

    def pre_save(self, model_instance: models.Model, add: bool) -> str:
        key = natural_sort_key(model_instance.name)  # type: ignore[attr-defined]
        setattr(model_instance, self.attname, key)
        return key


class RetryBackoffMixin(models.Model):
    """Exponential backoff between redeliveries: attempt n waits min(max, min·2^(n-1))
    seconds after a nack or an expired lease. min 0 (the default) redelivers at once."""

    retry_backoff_min = models.PositiveIntegerField(default=DEFAULT_BACKOFF_MIN)
    retry_backoff_max = models.PositiveIntegerField(default=DEFAULT_BACKOFF_MAX)

    class Meta:
        abstract = True

    @property
    def retry_backoff(self) -> dict[str, int]:
        return {"min_seconds": self.retry_backoff_min, "max_seconds": self.retry_backoff_max}


class Topic(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="topics")
    name = models.CharField(max_length=128, validators=[name_validator])
    sort_key = NaturalSortKeyField()
    partitions = models.PositiveSmallIntegerField(
        default=DEFAULT_PARTITIONS,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_PARTITIONS)],
    )
    retention_seconds = models.PositiveIntegerField(
        default=DEFAULT_TOPIC_RETENTION,
        validators=[
            MinValueValidator(MIN_RETENTION_SECONDS),
            MaxValueValidator(MAX_RETENTION_SECONDS),
        ],
    )
    # The resource's own backlog limits, narrowing the tenant's (None: the tenant's hold).
    max_backlog_messages = models.BigIntegerField(null=True, blank=True)
    max_backlog_bytes = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="topic_unique_name")]
        indexes = [models.Index(fields=["tenant", "sort_key"], name="topic_natural_order")]

    def __str__(self) -> str:
        return self.name


class Queue(RetryBackoffMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="queues")
    name = models.CharField(max_length=128, validators=[name_validator])
    sort_key = NaturalSortKeyField()
    visibility_timeout = models.PositiveIntegerField(
        default=DEFAULT_VISIBILITY_TIMEOUT, validators=[MaxValueValidator(MAX_VISIBILITY_TIMEOUT)]
    )
    delay_seconds = models.PositiveIntegerField(
        default=0, validators=[MaxValueValidator(MAX_DELAY_SECONDS)]
    )
    retention_seconds = models.PositiveIntegerField(
        default=DEFAULT_QUEUE_RETENTION,
        validators=[
            MinValueValidator(MIN_RETENTION_SECONDS),
            MaxValueValidator(MAX_RETENTION_SECONDS),
        ],
    )
    max_delivery_attempts = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_DELIVERY_ATTEMPTS)],
    )
    dead_letter_queue = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="dead_letter_sources"
    )
    # The resource's own backlog limits, narrowing the tenant's (None: the tenant's hold).
    max_backlog_messages = models.BigIntegerField(null=True, blank=True)
    max_backlog_bytes = models.BigIntegerField(null=True, blank=True)
    fair = models.BooleanField(
        default=False,
        help_text="Fair mode: messages carry a group key, and a pull serves the messages of "
        "quiet groups before those of a group that holds most of the backlog.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="queue_unique_name")]
        indexes = [models.Index(fields=["tenant", "sort_key"], name="queue_natural_order")]

    def __str__(self) -> str:
        return self.name


class StartAt(models.TextChoices):
    LATEST = "latest"
    EARLIEST = "earliest"


class Subscription(RetryBackoffMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="subscriptions")
    name = models.CharField(max_length=128, validators=[name_validator])
    sort_key = NaturalSortKeyField()
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="subscriptions")
    visibility_timeout = models.PositiveIntegerField(
        default=DEFAULT_VISIBILITY_TIMEOUT, validators=[MaxValueValidator(MAX_VISIBILITY_TIMEOUT)]
    )
    max_delivery_attempts = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_DELIVERY_ATTEMPTS)],
    )
    dead_letter_queue = models.ForeignKey(
        Queue,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="dead_letter_subscriptions",
    )
    filter_attributes = models.JSONField(
        default=dict, blank=True, help_text="Deliver only messages with all these attributes."
    )
    start_at = models.CharField(max_length=8, choices=StartAt.choices, default=StartAt.LATEST)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="subscription_unique_name")
        ]
        indexes = [models.Index(fields=["tenant", "sort_key"], name="subscription_natural_order")]

    def __str__(self) -> str:
        return self.name


class ConsumerPosition(models.Model):
    """Where a queue's or a subscription's consumer group stands on one partition, copied
    from Redis by Celery beat and on seek, so the group can be rebuilt after a data loss.

    ``last_delivered_id``: the group's last-delivered stream id. ``acked_id``: every entry at
    or before it is acknowledged (the oldest pending entry's predecessor)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    queue = models.ForeignKey(Queue, null=True, on_delete=models.CASCADE, related_name="positions")
    subscription = models.ForeignKey(
        Subscription, null=True, on_delete=models.CASCADE, related_name="positions"
    )
    partition = models.PositiveSmallIntegerField(default=0)
    last_delivered_id = models.CharField(max_length=48, default="0-0")
    acked_id = models.CharField(max_length=48, default="0-0")
    last_generated_id = models.CharField(max_length=48, default="0-0")
    updated_at = models.DateTimeField(default=timezone.now)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["queue", "partition"],
                condition=models.Q(queue__isnull=False),
                name="position_unique_queue_partition",
            ),
            models.UniqueConstraint(
                fields=["subscription", "partition"],
                condition=models.Q(subscription__isnull=False),
                name="position_unique_subscription_partition",
            ),
            models.CheckConstraint(
                condition=models.Q(queue__isnull=False) ^ models.Q(subscription__isnull=False),
                name="position_has_one_owner",
            ),
        ]

    def __str__(self) -> str:
        owner = self.queue_id or self.subscription_id
        return f"{owner}[{self.partition}] at {self.last_delivered_id}"


class MetricKind(models.TextChoices):
    QUEUE = "queue", "Queue"
    TOPIC = "topic", "Topic"
    SUBSCRIPTION = "subscription", "Subscription"


class ResourceMetric(models.Model):
    """One resource's traffic in one minute, sampled by beat (``queues.sample_metrics``).

    ``published`` / ``delivered`` / ``acked`` are the minute's flows: the differences between
    this sample's cumulative counters (``*_total``, read from the streams) and the previous
    sample's. ``backlog`` and ``oldest_age_seconds`` are levels at the moment of the sample.
    Rows outlive no resource (``resource_id`` is not a foreign key, so one table holds the
    three kinds; deleting a resource leaves its rows to the trim)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=MetricKind.choices)
    resource_id = models.UUIDField()
    minute = models.DateTimeField()
    published = models.BigIntegerField(default=0)
    delivered = models.BigIntegerField(default=0)
    acked = models.BigIntegerField(default=0)
    backlog = models.BigIntegerField(default=0)
    oldest_age_seconds = models.BigIntegerField(default=0)
    published_total = models.BigIntegerField(default=0)
    delivered_total = models.BigIntegerField(default=0)
    acked_total = models.BigIntegerField(default=0)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "resource_id", "minute"], name="resource_metric_unique_minute"
            )
        ]
        indexes = [models.Index(fields=["minute"], name="resource_metric_minute")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.resource_id} {self.minute:%Y-%m-%d %H:%M}"
