"""Topics, subscriptions and queues: the metadata. Their messages live in Redis Streams
(queues.engine); PostgreSQL keeps what they are and where each consumer stands."""

from __future__ import annotations

import uuid

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
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="topic_unique_name")]

    def __str__(self) -> str:
        return self.name


class Queue(RetryBackoffMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="queues")
    name = models.CharField(max_length=128, validators=[name_validator])
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
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="queue_unique_name")]

    def __str__(self) -> str:
        return self.name


class StartAt(models.TextChoices):
    LATEST = "latest"
    EARLIEST = "earliest"


class Subscription(RetryBackoffMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="subscriptions")
    name = models.CharField(max_length=128, validators=[name_validator])
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
