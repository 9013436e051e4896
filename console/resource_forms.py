"""Forms of the queue, topic and subscription pages: the delivery settings queues and
subscriptions share, the edit forms, and the typed-name confirmation of a delete.

An edit form knows the row it edits and hands the service only what differs from it
(:meth:`changes`), so the audit trail records what a person actually changed."""

from __future__ import annotations

from typing import Any, cast

from django import forms

from kernel import limits
from queues.models import Queue, Subscription, Topic


def retention_field(default: int) -> forms.IntegerField:
    return forms.IntegerField(
        label="Retention (seconds)",
        min_value=limits.MIN_RETENTION_SECONDS,
        max_value=limits.MAX_RETENTION_SECONDS,
        initial=default,
        help_text=f"From {limits.MIN_RETENTION_SECONDS} seconds to 14 days "
        f"({limits.MAX_RETENTION_SECONDS}).",
    )


#: A queue's or topic's own backlog limits (tenants.quotas.RESOURCE_QUOTAS), as the forms
#: and the services name them.
BACKLOG_FIELDS = ("max_backlog_messages", "max_backlog_bytes")
_BACKLOG_LABELS = {
    "max_backlog_messages": ("Most messages stored", "messages"),
    "max_backlog_bytes": ("Most bytes stored", "bytes"),
}


def backlog_field(name: str) -> forms.IntegerField:
    """An optional backlog limit: empty means the tenant's limit holds. One above the
    tenant's is kept, but the tenant's (the tighter) holds."""
    label, unit = _BACKLOG_LABELS[name]
    return forms.IntegerField(
        label=label,
        required=False,
        min_value=1,
        max_value=2**63 - 1,
        help_text=f"Publishing is refused once this many {unit} are stored. Empty: your "
        "plan's limit. A value above your plan's changes nothing.",
    )


def backlog_settings(data: dict[str, Any]) -> dict[str, int | None]:
    """The backlog limits of a valid form's cleaned data, as the services take them."""
    return {name: data.get(name) for name in BACKLOG_FIELDS}


def _backlog_changes(form: forms.Form, row: Queue | Topic) -> dict[str, Any]:
    return {
        name: value
        for name, value in backlog_settings(form.cleaned_data).items()
        if value != getattr(row, name)
    }


FILTER_HELP = (
    "One name=value per line: only messages with all of these attributes are delivered. "
    "Empty: every message."
)


class AttributesField(forms.CharField):
    """Message attributes as ``name=value`` lines; cleans to a dict (empty: no filter)."""

    widget = forms.Textarea(attrs={"rows": 3, "placeholder": "region=eu\ntype=order.created"})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return "\n".join(f"{name}={text}" for name, text in value.items())
        return value

    def to_python(self, value: Any) -> dict[str, str]:  # type: ignore[override]  # a dict, not str
        if isinstance(value, dict):
            return value
        attributes: dict[str, str] = {}
        for number, line in enumerate(str(value or "").splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, text = line.partition("=")
            name = name.strip()
            if not sep or not name:
                raise forms.ValidationError(f"Line {number}: expected name=value.")
            if len(name) > limits.MAX_ATTRIBUTE_NAME:
                raise forms.ValidationError(
                    f"Line {number}: a name has at most {limits.MAX_ATTRIBUTE_NAME} characters."
                )
            if name in attributes:
                raise forms.ValidationError(f"Line {number}: '{name}' is given twice.")
            attributes[name] = text.strip()
        if len(attributes) > limits.MAX_ATTRIBUTES:
            raise forms.ValidationError(f"At most {limits.MAX_ATTRIBUTES} attributes.")
        return attributes

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.to_python(data) != self.to_python(initial)
        except forms.ValidationError:
            return True


def delivery_settings(data: dict[str, Any]) -> dict[str, Any]:
    """A valid :class:`DeliveryForm`'s cleaned data as the services' keyword arguments."""
    return {
        "visibility_timeout": data["visibility_timeout"],
        "dead_letter_queue": data["dead_letter_queue"] or None,
        "max_delivery_attempts": data["max_delivery_attempts"],
        "retry_backoff": {"min_seconds": _backoff_min(data), "max_seconds": _backoff_max(data)},
    }


def _backoff_min(data: dict[str, Any]) -> int:
    low = data.get("retry_backoff_min")
    return limits.DEFAULT_BACKOFF_MIN if low is None else int(low)


def _backoff_max(data: dict[str, Any]) -> int:
    high = data.get("retry_backoff_max")
    return limits.DEFAULT_BACKOFF_MAX if high is None else int(high)


class DeliveryForm(forms.Form):
    """Visibility timeout, dead letters and retry backoff: how a queue or a subscription
    hands out its messages. ``queue_names``: the dead-letter queues to offer."""

    visibility_timeout = forms.IntegerField(
        label="Visibility timeout (seconds)",
        min_value=0,
        max_value=limits.MAX_VISIBILITY_TIMEOUT,
        initial=limits.DEFAULT_VISIBILITY_TIMEOUT,
        help_text="How long a pulled message stays hidden before it is delivered again.",
    )
    dead_letter_queue = forms.ChoiceField(
        label="Dead-letter queue",
        required=False,
        help_text="Where messages go after too many failed deliveries.",
    )
    max_delivery_attempts = forms.IntegerField(
        label="Max delivery attempts",
        min_value=1,
        max_value=limits.MAX_DELIVERY_ATTEMPTS,
        required=False,
        help_text="Needed with a dead-letter queue.",
    )
    retry_backoff_min = forms.IntegerField(
        label="Retry backoff, first wait (seconds)",
        min_value=0,
        max_value=limits.MAX_BACKOFF_SECONDS,
        required=False,
        initial=limits.DEFAULT_BACKOFF_MIN,
        help_text="After a failed delivery, attempt n waits min(longest, first \u00d7 2^(n-1)). "
        f"0 redelivers at once. Empty: {limits.DEFAULT_BACKOFF_MIN}.",
    )
    retry_backoff_max = forms.IntegerField(
        label="Retry backoff, longest wait (seconds)",
        min_value=0,
        max_value=limits.MAX_BACKOFF_SECONDS,
        required=False,
        initial=limits.DEFAULT_BACKOFF_MAX,
        help_text=f"Empty: {limits.DEFAULT_BACKOFF_MAX}.",
    )

    def __init__(self, *args: Any, queue_names: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "None")] + [(n, n) for n in queue_names]
        cast(forms.ChoiceField, self.fields["dead_letter_queue"]).choices = choices

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        both = "retry_backoff_min" in data and "retry_backoff_max" in data
        if both and _backoff_min(data) > _backoff_max(data):
            self.add_error("retry_backoff_max", "At least the first wait.")
        return data


def _with_initial(kwargs: dict[str, Any], row_values: dict[str, Any]) -> dict[str, Any]:
    """The form's keyword arguments with the edited row's values as the initial data."""
    return {**kwargs, "initial": {**(kwargs.get("initial") or {}), **row_values}}


def _delivery_initial(row: Queue | Subscription) -> dict[str, Any]:
    return {
        "visibility_timeout": row.visibility_timeout,
        "dead_letter_queue": row.dead_letter_queue.name if row.dead_letter_queue else "",
        "max_delivery_attempts": row.max_delivery_attempts,
        "retry_backoff_min": row.retry_backoff_min,
        "retry_backoff_max": row.retry_backoff_max,
    }


def _delivery_changes(form: DeliveryForm, row: Queue | Subscription) -> dict[str, Any]:
    """What differs; the dead-letter pair travels together, as the service wants it."""
    wanted = delivery_settings(form.cleaned_data)
    changes: dict[str, Any] = {}
    if wanted["visibility_timeout"] != row.visibility_timeout:
        changes["visibility_timeout"] = wanted["visibility_timeout"]
    current_dlq = row.dead_letter_queue.name if row.dead_letter_queue else None
    if (wanted["dead_letter_queue"], wanted["max_delivery_attempts"]) != (
        current_dlq,
        row.max_delivery_attempts,
    ):
        changes["dead_letter_queue"] = wanted["dead_letter_queue"]
        changes["max_delivery_attempts"] = wanted["max_delivery_attempts"]
    if wanted["retry_backoff"] != row.retry_backoff:
        changes["retry_backoff"] = wanted["retry_backoff"]
    return changes


class QueueEditForm(DeliveryForm):
    """Every setting of a queue but its name."""

    delay_seconds = forms.IntegerField(
        label="Delivery delay (seconds)",
        min_value=0,
        max_value=limits.MAX_DELAY_SECONDS,
        help_text=f"0 to {limits.MAX_DELAY_SECONDS}.",
    )
    retention_seconds = retention_field(limits.DEFAULT_QUEUE_RETENTION)
    max_backlog_messages = backlog_field("max_backlog_messages")
    max_backlog_bytes = backlog_field("max_backlog_bytes")
    fair = forms.BooleanField(
        label="Fair mode",
        required=False,
        help_text="A message's key is its group: a pull serves quiet groups before one that "
        "holds more than 10 % of the messages in flight (and at least 30).",
    )

    field_order = [
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

    def __init__(self, *args: Any, queue: Queue, queue_names: list[str], **kwargs: Any) -> None:
        self.queue = queue
        initial = {
            **_delivery_initial(queue),
            "delay_seconds": queue.delay_seconds,
            "retention_seconds": queue.retention_seconds,
            **{name: getattr(queue, name) for name in BACKLOG_FIELDS},
            "fair": queue.fair,
        }
        # A queue cannot be its own dead-letter queue: do not offer it.
        others = [n for n in queue_names if n != queue.name]
        super().__init__(*args, **_with_initial(kwargs, initial), queue_names=others)

    def changes(self) -> dict[str, Any]:
        """The settings that differ from the queue's, as ``queue_update`` takes them."""
        changes = _delivery_changes(self, self.queue)
        for field in ("delay_seconds", "retention_seconds"):
            if self.cleaned_data[field] != getattr(self.queue, field):
                changes[field] = self.cleaned_data[field]
        changes.update(_backlog_changes(self, self.queue))
        if self.cleaned_data["fair"] != self.queue.fair:
            changes["fair"] = self.cleaned_data["fair"]
        return changes


class TopicEditForm(forms.Form):
    """A topic's retention and backlog limits; its partitions are shown but fixed (see
    ``topic_update``)."""

    partitions = forms.IntegerField(
        disabled=True,
        required=False,
        help_text="Fixed when the topic is created: more partitions would move message keys "
        "to other partitions and break the per-key order consumers rely on.",
    )
    retention_seconds = retention_field(limits.DEFAULT_TOPIC_RETENTION)
    max_backlog_messages = backlog_field("max_backlog_messages")
    max_backlog_bytes = backlog_field("max_backlog_bytes")

    def __init__(self, *args: Any, topic: Topic, **kwargs: Any) -> None:
        self.topic = topic
        initial = {
            "partitions": topic.partitions,
            "retention_seconds": topic.retention_seconds,
            **{name: getattr(topic, name) for name in BACKLOG_FIELDS},
        }
        super().__init__(*args, **_with_initial(kwargs, initial))

    def changes(self) -> dict[str, Any]:
        """The settings that differ from the topic's, as ``topic_update`` takes them."""
        retention = self.cleaned_data["retention_seconds"]
        changes = _backlog_changes(self, self.topic)
        if retention != self.topic.retention_seconds:
            changes["retention_seconds"] = retention
        return changes


class SubscriptionEditForm(DeliveryForm):
    """A subscription's filter and delivery settings; its topic and start are fixed."""

    filter_attributes = AttributesField(label="Filter attributes", help_text=FILTER_HELP)

    field_order = ["filter_attributes"]

    def __init__(
        self, *args: Any, subscription: Subscription, queue_names: list[str], **kwargs: Any
    ) -> None:
        self.subscription = subscription
        initial = {
            **_delivery_initial(subscription),
            "filter_attributes": subscription.filter_attributes or {},
        }
        super().__init__(*args, **_with_initial(kwargs, initial), queue_names=queue_names)

    def changes(self) -> dict[str, Any]:
        """The settings that differ, as ``subscription_update`` takes them."""
        changes = _delivery_changes(self, self.subscription)
        attributes = self.cleaned_data["filter_attributes"]
        if attributes != (self.subscription.filter_attributes or {}):
            changes["filter"] = {"attributes": attributes}
        return changes


class DeleteForm(forms.Form):
    """Deleting takes the resource's exact name, typed: a slip of the mouse deletes nothing."""

    confirm = forms.CharField(
        label="Type the name to confirm",
        max_length=limits.NAME_MAX_LENGTH,
        strip=False,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )

    def __init__(self, *args: Any, name: str, **kwargs: Any) -> None:
        self.name = name
        super().__init__(*args, **kwargs)
        self.fields["confirm"].help_text = f"Type {name} exactly as shown."

    def clean_confirm(self) -> str:
        typed = str(self.cleaned_data["confirm"])
        if typed != self.name:
            raise forms.ValidationError(f"Type \u201c{self.name}\u201d exactly to delete it.")
        return typed
