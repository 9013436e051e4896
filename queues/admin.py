"""Queues, topics and subscriptions in the operators' admin: read-only lists across tenants.

Changes go through the tenant's API or console, and nothing is deleted here: a resource's
messages and consumer state live in Redis, which only ``queues.services`` cleans up.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from queues.models import Queue, Subscription, Topic


class ResourceAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """A tenant-owned resource, seen across tenants (its manager's ``all_tenants``)."""

    ordering = ("tenant__slug", "name")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return self.model.all_tenants.select_related("tenant")  # type: ignore[no-any-return]

    def get_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        # Named, so the admin never builds a form to find them: a form's choices of a queue
        # (the dead-letter queue) would read Queue's default manager, which fails closed.
        return [field.name for field in self.model._meta.fields]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        return self.get_fields(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Queue)
class QueueAdmin(ResourceAdmin):
    list_display = (
        "name",
        "tenant",
        "visibility_timeout",
        "retention_seconds",
        "max_delivery_attempts",
        "dead_letter_queue",
        "max_backlog_messages",
        "fair",
        "created_at",
    )
    list_select_related = ("tenant", "dead_letter_queue")
    list_filter = ("tenant", "fair")
    search_fields = ("name", "tenant__slug")


@admin.register(Topic)
class TopicAdmin(ResourceAdmin):
    list_display = (
        "name",
        "tenant",
        "partitions",
        "retention_seconds",
        "max_backlog_messages",
        "max_backlog_bytes",
        "created_at",
    )
    list_select_related = ("tenant",)
    list_filter = ("tenant",)
    search_fields = ("name", "tenant__slug")


@admin.register(Subscription)
class SubscriptionAdmin(ResourceAdmin):
    list_display = (
        "name",
        "tenant",
        "topic",
        "start_at",
        "visibility_timeout",
        "max_delivery_attempts",
        "dead_letter_queue",
        "created_at",
    )
    list_select_related = ("tenant", "topic", "dead_letter_queue")
    list_filter = ("tenant",)
    search_fields = ("name", "topic__name", "tenant__slug")
