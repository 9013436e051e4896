"""The console's forms. They parse what a person typed; the services decide what is valid, and
their errors come back onto the form with :func:`add_platform_error`."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any, cast

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.utils import timezone

from console.resource_forms import (
    BACKLOG_FIELDS,
    FILTER_HELP,
    AttributesField,
    DeliveryForm,
    backlog_field,
)
from kernel import limits
from kernel.errors import PlatformError
from queues.models import StartAt
from tenants.models import Scope
from tenants.services import KEY_LIMIT_MAX

#: The longest lifetime "expires in N days" offers (ten years).
MAX_KEY_LIFETIME_DAYS = 3650

NAME_HELP = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit."


class LoginForm(AuthenticationForm):
    """Email and password. Addresses are stored in lower case, so they are matched that way."""

    username = forms.EmailField(
        label="Email",
        max_length=254,
        widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"}),
    )

    def clean_username(self) -> str:
        return str(self.cleaned_data["username"]).strip().lower()


def add_platform_error(form: forms.Form, exc: PlatformError) -> None:
    """Show a service's error on the form: field errors beside their fields, the rest on top."""
    items = exc.errors or []
    placed = False
    for item in items:
        field = item.get("field")
        if field not in form.fields or field in form.errors:
            continue
        detail = item.get("detail") or exc.detail
        if len(items) == 1 and exc.detail != f"{field}: {detail}":
            # Some services give a generic line per field ("Invalid resources.") and say
            # what is wrong in the summary: show the summary then.
            detail = exc.detail
        form.add_error(field, detail)
        placed = True
    if not placed:
        form.add_error(None, exc.detail)


def _name_field(placeholder: str) -> forms.CharField:
    return forms.CharField(
        max_length=128,
        help_text=NAME_HELP,
        widget=forms.TextInput(attrs={"placeholder": placeholder, "autofocus": True}),
    )


class QueueForm(DeliveryForm):
    """A new queue: its name, delay and retention, and the delivery settings the edit form
    offers too (visibility, dead letters, retry backoff; ``queue_names``: the dead-letter
    queues to offer)."""

    name = _name_field("orders")
    delay_seconds = forms.IntegerField(
        label="Delivery delay (seconds)",
        min_value=0,
        max_value=limits.MAX_DELAY_SECONDS,
        initial=0,
        help_text=f"0 to {limits.MAX_DELAY_SECONDS}.",
    )
    retention_seconds = forms.IntegerField(
        label="Retention (seconds)",
        min_value=limits.MIN_RETENTION_SECONDS,
        max_value=limits.MAX_RETENTION_SECONDS,
        initial=limits.DEFAULT_QUEUE_RETENTION,
        help_text=f"From {limits.MIN_RETENTION_SECONDS} seconds to 14 days "
        f"({limits.MAX_RETENTION_SECONDS}). Default: 4 days.",
    )
    max_backlog_messages = backlog_field("max_backlog_messages")
    max_backlog_bytes = backlog_field("max_backlog_bytes")
    fair = forms.BooleanField(
        label="Fair mode",
        required=False,
        help_text="A message's key is its group: a pull serves quiet groups before one that "
        "holds more than 10 % of the messages in flight (and at least 30).",
    )

    field_order = [
        "name",
        "visibility_timeout",
        "delay_seconds",
        "retention_seconds",
        "dead_letter_queue",
        "max_delivery_attempts",
        "retry_backoff_min",
        "retry_backoff_max",
        *BACKLOG_FIELDS,
        "fair",
    ]


class TopicForm(forms.Form):
    name = _name_field("events")
    partitions = forms.IntegerField(
        min_value=1,
        max_value=limits.MAX_PARTITIONS,
        initial=limits.DEFAULT_PARTITIONS,
        help_text=f"1 to {limits.MAX_PARTITIONS}. Messages with the same key keep their order "
        "within a partition.",
    )
    retention_seconds = forms.IntegerField(
        label="Retention (seconds)",
        min_value=limits.MIN_RETENTION_SECONDS,
        max_value=limits.MAX_RETENTION_SECONDS,
        initial=limits.DEFAULT_TOPIC_RETENTION,
        help_text=f"From {limits.MIN_RETENTION_SECONDS} seconds to 14 days "
        f"({limits.MAX_RETENTION_SECONDS}). Default: 7 days.",
    )
    max_backlog_messages = backlog_field("max_backlog_messages")
    max_backlog_bytes = backlog_field("max_backlog_bytes")


class SubscriptionForm(DeliveryForm):
    """A new subscription: its topic, where it starts, its filter and its delivery settings
    (``queue_names``: the dead-letter queues to offer)."""

    name = _name_field("billing-events")
    topic = forms.ChoiceField()
    start_at = forms.ChoiceField(
        label="Start at",
        choices=StartAt.choices,
        initial=StartAt.LATEST,
        help_text="Latest: only messages published from now on. Earliest: the retained log too.",
    )
    filter_attributes = AttributesField(label="Filter attributes", help_text=FILTER_HELP)

    field_order = ["name", "topic", "start_at", "filter_attributes"]

    def __init__(
        self, *args: Any, topic_names: list[str], queue_names: list[str], **kwargs: Any
    ) -> None:
        super().__init__(*args, queue_names=queue_names, **kwargs)
        cast(forms.ChoiceField, self.fields["topic"]).choices = [(n, n) for n in topic_names]


#: The key limits the form offers, as ``key_create`` takes them.
KEY_LIMIT_FIELDS = ("publish_rate_per_second", "consume_rate_per_second", "monthly_messages")


def _key_limit_field(label: str, name: str) -> forms.IntegerField:
    return forms.IntegerField(
        label=label,
        required=False,
        min_value=1,
        max_value=KEY_LIMIT_MAX[name],
        help_text="Optional: this key's own limit. Empty: your tenant's limit holds. A value "
        "above your tenant's changes nothing (the tighter limit holds).",
    )


class KeyForm(forms.Form):
    """A key's name, scopes, resource patterns, optional expiry and optional limits of its
    own. ``cleaned_data`` gains ``expires_at`` (an aware UTC datetime or None) from whichever
    expiry field was filled."""

    name = forms.CharField(
        max_length=100, widget=forms.TextInput(attrs={"placeholder": "ci-publisher"})
    )
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[Scope.PUBLISH, Scope.CONSUME],
        help_text="What the key may do. publish: send messages to queues and topics. "
        "consume: pull, acknowledge and nack messages of queues and subscriptions. "
        "manage: create, change and delete queues, topics and subscriptions, and read their "
        "stats. Only the scopes your role may grant are offered.",
    )
    resources = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "queue:orders\ntopic:events.*"}),
        help_text="Which resources the key reaches: one pattern per line (or comma-separated), "
        "each <kind>:<name> with kind queue, topic or subscription. The name may use * (any "
        "run of characters) and ? (one character): queue:orders is that queue only, "
        "topic:events.* every topic whose name starts with events., subscription:* every "
        "subscription. Leave empty to allow every resource.",
    )
    expires_on = forms.DateField(
        label="Expires on (UTC)",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The key stops working at 00:00 UTC on this day.",
    )
    expires_in_days = forms.IntegerField(
        label="Or expires in (days)",
        required=False,
        min_value=1,
        max_value=MAX_KEY_LIFETIME_DAYS,
        help_text="Counted from now. Leave both empty for a key that never expires.",
    )
    publish_rate_per_second = _key_limit_field(
        "Publish rate (messages per second)", "publish_rate_per_second"
    )
    consume_rate_per_second = _key_limit_field(
        "Consume rate (messages per second)", "consume_rate_per_second"
    )
    monthly_messages = _key_limit_field("Messages published per month", "monthly_messages")

    def __init__(
        self, *args: Any, grantable_scopes: frozenset[str] | None = None, **kwargs: Any
    ) -> None:
        """``grantable_scopes``: the scopes the member's role may grant (None: all); only
        those are offered, and the service checks the same rule again."""
        super().__init__(*args, **kwargs)
        if grantable_scopes is not None:
            field = cast(forms.MultipleChoiceField, self.fields["scopes"])
            field.choices = [(v, label) for v, label in Scope.choices if v in grantable_scopes]
            field.initial = [v for v in field.initial if v in grantable_scopes]

    def clean_resources(self) -> list[str]:
        raw = self.cleaned_data["resources"]
        return [part.strip() for part in raw.replace(",", "\n").splitlines() if part.strip()]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        on, days = data.get("expires_on"), data.get("expires_in_days")
        if on is not None and days is not None:
            raise forms.ValidationError("Give an expiry date or a number of days, not both.")
        expires_at = None
        if on is not None:
            expires_at = datetime.combine(on, time.min, tzinfo=UTC)
        elif days is not None:
            expires_at = timezone.now() + timedelta(days=days)
        data["expires_at"] = expires_at
        return data


class AuditFilterForm(forms.Form):
    """The audit page's filters (a GET form: every field optional). ``actor`` and ``action``
    may end with ``*`` to match a prefix; ``since`` / ``until`` are UTC."""

    actor = forms.CharField(
        required=False,
        max_length=200,
        widget=forms.TextInput(attrs={"list": "audit-actors", "placeholder": "user:*"}),
    )
    action = forms.CharField(
        required=False,
        max_length=64,
        widget=forms.TextInput(attrs={"list": "audit-actions", "placeholder": "key.*"}),
    )
    target_type = forms.CharField(
        label="Target type",
        required=False,
        max_length=32,
        widget=forms.TextInput(attrs={"list": "audit-targets", "placeholder": "queue"}),
    )
    since = forms.DateTimeField(
        label="From (UTC)",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    until = forms.DateTimeField(
        label="Until (UTC)",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def _utc(self, name: str) -> datetime | None:
        value: datetime | None = self.cleaned_data.get(name)
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if timezone.is_naive(value) else value.astimezone(UTC)

    def clean_since(self) -> datetime | None:
        return self._utc("since")

    def clean_until(self) -> datetime | None:
        return self._utc("until")
