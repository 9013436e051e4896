"""Forms of the message workbench. They only shape what a person types into what the data
plane and the services take; the rules (sizes, names, delays) stay where the API applies
them, in :func:`queues.engine.messages.validate_batch` and the services, whose errors come
back onto the form."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, cast

import orjson
from django import forms

from kernel import limits

JSON_BODY = "json"
TEXT_BODY = "text"

#: How many messages one receive-and-requeue may lease.
MAX_REQUEUE = 10
#: How many dead letters one "all" redrive moves at most when no count is given.
DEFAULT_REDRIVE_MAX = 1000
#: The lease a receive-and-requeue takes: it is given back at once, so it only has to outlast
#: the round trip between the pull and the nack.
REQUEUE_LEASE_MS = 5000


def parse_attributes(text: str) -> dict[str, str]:
    """``name=value`` lines (blank lines ignored) as a dict; a line without ``=`` or a name
    given twice is a ValidationError. The names and values themselves are checked by the
    data plane, like an API publish's."""
    attributes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise forms.ValidationError(f"Line {number}: expected name=value.")
        if name in attributes:
            raise forms.ValidationError(f"Line {number}: '{name}' is given twice.")
        attributes[name] = value.strip()
    return attributes


class SendForm(forms.Form):
    body_format = forms.ChoiceField(
        label="Body is",
        choices=[(JSON_BODY, "JSON"), (TEXT_BODY, "Text (stored as raw bytes)")],
        initial=JSON_BODY,
    )
    body = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        strip=False,
        help_text="A JSON value, or any text when the body is text.",
    )
    attributes = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text=(
            f"One name=value per line, at most {limits.MAX_ATTRIBUTES}; names starting "
            f"'{limits.RESERVED_ATTRIBUTE_PREFIX}' are reserved."
        ),
    )
    key = forms.CharField(
        required=False,
        help_text="Messages with one key keep their order (on a topic: one partition).",
    )
    delay_seconds = forms.IntegerField(
        label="Delay (seconds)",
        required=False,
        help_text=f"0 to {limits.MAX_DELAY_SECONDS}; empty: the queue's default.",
    )

    def clean_attributes(self) -> dict[str, str]:
        return parse_attributes(self.cleaned_data.get("attributes") or "")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        body = data.get("body")
        if body is not None and data.get("body_format") == JSON_BODY:
            try:
                data["parsed_body"] = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                self.add_error("body", f"Not valid JSON: {exc}.")
        return data


def build_message(data: dict[str, Any]) -> dict[str, Any]:
    """The message object an API publish would send, from a valid :class:`SendForm`'s data."""
    message: dict[str, Any] = {}
    if data["body_format"] == JSON_BODY:
        message["body"] = data["parsed_body"]
    else:
        message["body_base64"] = base64.b64encode(data["body"].encode()).decode()
    if data["attributes"]:
        message["attributes"] = data["attributes"]
    if data["key"]:
        message["key"] = data["key"]
    if data["delay_seconds"] is not None:
        message["delay_seconds"] = data["delay_seconds"]
    return message


class RequeueForm(forms.Form):
    count = forms.IntegerField(min_value=1, max_value=MAX_REQUEUE, initial=1)


class SeekForm(forms.Form):
    to = forms.ChoiceField(
        choices=[
            ("earliest", "The earliest retained message"),
            ("latest", "The latest (skip everything unread)"),
            ("time", "A time"),
        ],
        widget=forms.RadioSelect,
        initial="latest",
    )
    time = forms.DateTimeField(
        required=False,
        help_text="UTC, as YYYY-MM-DD HH:MM[:SS]: messages published from then on are unread.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("to") == "time" and data.get("time") is None:
            self.add_error("time", "Give the time to seek to.")
        return data


def seek_target(data: dict[str, Any]) -> str | datetime:
    """What :func:`queues.services.subscription_seek` takes, from a valid :class:`SeekForm`'s
    data: "earliest", "latest" or a datetime."""
    return data["time"] if data["to"] == "time" else data["to"]  # type: ignore[no-any-return]


class DeadLetterActionForm(forms.Form):
    """What to do with dead letters: redrive or purge, the chosen ones (``ids``) or all."""

    action = forms.ChoiceField(choices=[("redrive", "Redrive"), ("purge", "Purge")])
    scope = forms.ChoiceField(
        choices=[("selected", "Selected"), ("all", "All")], initial="selected"
    )
    ids = forms.MultipleChoiceField(required=False)
    to = forms.CharField(required=False, max_length=limits.NAME_MAX_LENGTH)
    max_messages = forms.IntegerField(required=False, min_value=1, max_value=100_000)
    confirm = forms.BooleanField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Offsets are checked by the services; any string may be chosen here.
        ids = self.data.getlist("ids") if hasattr(self.data, "getlist") else []
        cast(forms.MultipleChoiceField, self.fields["ids"]).choices = [(i, i) for i in ids]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("scope") == "selected" and not data.get("ids"):
            raise forms.ValidationError("Choose at least one message, or act on all of them.")
        data["to"] = data.get("to") or None
        return data
