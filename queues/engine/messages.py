"""Messages in and out: validation and encoding of what is published (all or nothing), and
the JSON of what is delivered.

A published body is stored as the JSON value the client sent, re-serialized compactly by
``orjson.dumps`` (a number the parser kept as an ``orjson.Fragment`` of its source text is
written verbatim, so big integers, long decimals and ``-0`` stay as sent), or as raw bytes for
``body_base64``; a delivery splices the stored JSON text into the answer without parsing it
again.

Attribute names and values, keys and dedup ids are text without NUL: they are identifiers that
subscription filters (kept in PostgreSQL, whose text refuses NUL), the console and the SQS
endpoint compare and show. A body may hold any string, NUL included (stored as ``\\u0000``).
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from kernel.errors import InvalidRequest, PayloadTooLarge
from kernel.limits import (
    MAX_ATTRIBUTE_NAME,
    MAX_ATTRIBUTES,
    MAX_BATCH,
    MAX_DEDUP_ID,
    MAX_DELAY_SECONDS,
    MAX_KEY_LENGTH,
    RESERVED_ATTRIBUTE_PREFIX,
)

_FIELDS = frozenset({"body", "body_base64", "attributes", "key", "delay_seconds", "dedup_id"})

JSON = b"j"
BINARY = b"b"


def new_message_id(now_ms: int) -> str:
    """Time-ordered and unique: 11 hex digits of milliseconds, 16 of randomness."""
    return f"{now_ms:011x}{os.urandom(8).hex()}"


@dataclass(slots=True)
class Outgoing:
    """A validated message, ready for the publish script."""

    id: str
    body: bytes
    encoding: bytes
    attributes: bytes  # JSON object, or b"" when there are none
    key: str
    delay_seconds: int | None
    dedup_id: str | None
    size: int


def _text_problem(value: str) -> str | None:
    """Why ``value`` cannot be an identifier (attribute name or value, key, dedup id), as the
    end of a sentence; None when it can."""
    if "\x00" in value:
        return "may not contain NUL (\\u0000)"
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return "must be Unicode text (it holds a lone surrogate)"
    return None


def _message_errors(index: int, raw: Any, out: list[dict[str, Any]]) -> Outgoing | None:
    def bad(field: str, detail: str) -> None:
        out.append({"index": index, "field": field, "detail": detail})

    if not isinstance(raw, dict):
        bad("", "A message must be a JSON object.")
        return None
    unknown = raw.keys() - _FIELDS
    if unknown:
        bad(sorted(unknown)[0], f"Unknown field(s): {', '.join(sorted(unknown))}.")
    has_body, has_b64 = "body" in raw, "body_base64" in raw
    body = b""
    encoding = JSON
    if has_body == has_b64:
        bad("body", "Give exactly one of body and body_base64.")
    elif has_body:
        try:
            body = orjson.dumps(raw["body"])
        except orjson.JSONEncodeError as exc:  # nested too deeply, or a lone surrogate
            bad("body", f"The body cannot be stored as JSON: {exc}.")
    else:
        value = raw["body_base64"]
        try:
            if not isinstance(value, str):
                raise ValueError
            body = base64.b64decode(value, validate=True)
            encoding = BINARY
        except (ValueError, binascii.Error):
            bad("body_base64", "Not valid base64.")
    attributes = raw.get("attributes")
    attr_bytes = b""
    attr_size = 0
    if attributes is not None:
        if not isinstance(attributes, dict):
            bad("attributes", "Attributes must be an object of strings.")
        elif len(attributes) > MAX_ATTRIBUTES:
            bad("attributes", f"At most {MAX_ATTRIBUTES} attributes.")
        else:
            for name, value in attributes.items():
                if not 1 <= len(name) <= MAX_ATTRIBUTE_NAME:
                    bad("attributes", f"Attribute names are 1 to {MAX_ATTRIBUTE_NAME} characters.")
                elif name.startswith(RESERVED_ATTRIBUTE_PREFIX):
                    bad(
                        "attributes",
                        f"Attribute names starting '{RESERVED_ATTRIBUTE_PREFIX}' are reserved.",
                    )
                elif problem := _text_problem(name):
                    bad("attributes", f"Attribute names {problem}.")
                elif not isinstance(value, str):
                    bad("attributes", f"Attribute '{name}' must be a string.")
                elif problem := _text_problem(value):
                    bad("attributes", f"Attribute '{name}' {problem}.")
                else:
                    attr_size += len(name.encode()) + len(value.encode())
                    continue
                break
            else:
                if attributes:
                    attr_bytes = orjson.dumps(attributes)
    key = raw.get("key")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH):
        bad("key", f"key must be a string of 1 to {MAX_KEY_LENGTH} characters.")
    elif key is not None and (problem := _text_problem(key)):
        bad("key", f"key {problem}.")
    delay = raw.get("delay_seconds")
    if delay is not None and (
        isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= MAX_DELAY_SECONDS
    ):
        bad("delay_seconds", f"delay_seconds must be an integer from 0 to {MAX_DELAY_SECONDS}.")
    dedup = raw.get("dedup_id")
    if dedup is not None and (not isinstance(dedup, str) or not 1 <= len(dedup) <= MAX_DEDUP_ID):
        bad("dedup_id", f"dedup_id must be a string of 1 to {MAX_DEDUP_ID} characters.")
    elif dedup is not None and (problem := _text_problem(dedup)):
        bad("dedup_id", f"dedup_id {problem}.")
    return Outgoing(
        id="",
        body=body,
        encoding=encoding,
        attributes=attr_bytes,
        key=key if isinstance(key, str) else "",
        delay_seconds=delay if isinstance(delay, int) else None,
        dedup_id=dedup if isinstance(dedup, str) else None,
        size=len(body) + attr_size,
    )


def validate_batch(payload: Any, *, max_message_bytes: int, now_ms: int) -> list[Outgoing]:
    """Validate one message or ``{"messages": [...]}``. All or nothing: any invalid message
    raises InvalidRequest naming every bad index; any over the size limit raises
    PayloadTooLarge. Returns the messages in request order, each with a new id."""
    if isinstance(payload, dict) and "messages" in payload:
        if payload.keys() != {"messages"}:
            raise InvalidRequest('A batch is {"messages": [...]} with nothing beside it.')
        items = payload["messages"]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise InvalidRequest(
                f"messages must be a list of 1 to {MAX_BATCH} messages.",
                errors=[{"field": "messages", "detail": f"1 to {MAX_BATCH} messages."}],
            )
    else:
        items = [payload]
    problems: list[dict[str, Any]] = []
    out: list[Outgoing] = []
    for index, raw in enumerate(items):
        message = _message_errors(index, raw, problems)
        if message is not None:
            message.id = new_message_id(now_ms)
            out.append(message)
    if problems:
        first = problems[0]
        raise InvalidRequest(
            f"Message {first['index']}: {first['detail']} Nothing was published.", errors=problems
        )
    too_big = [
        {
            "index": i,
            "field": "body",
            "detail": f"{m.size} bytes; the limit is {max_message_bytes}.",
        }
        for i, m in enumerate(out)
        if m.size > max_message_bytes
    ]
    if too_big:
        raise PayloadTooLarge(
            f"Message {too_big[0]['index']} is larger than {max_message_bytes} bytes "
            "(body + attributes). Nothing was published.",
            errors=too_big,
        )
    return out


def now_ms() -> int:
    return int(time.time() * 1000)


def rfc3339_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def fields_dict(fields: list[bytes]) -> dict[bytes, bytes]:
    return {fields[i]: fields[i + 1] for i in range(0, len(fields), 2)}


def delivered(
    fields: list[bytes], *, partition: int, offset: str, attempt: int | None, ack_id: str | None
) -> dict[str, Any]:
    """A message as API.md delivers it; the JSON body is spliced in unparsed."""
    f = fields_dict(fields)
    message: dict[str, Any] = {"id": f[b"i"].decode()}
    if ack_id is not None:
        message["ack_id"] = ack_id
    if f.get(b"e", JSON) == JSON:
        message["body"] = orjson.Fragment(f[b"b"])
    else:
        message["body_base64"] = base64.b64encode(f[b"b"]).decode()
    attrs = f.get(b"a")
    message["attributes"] = orjson.Fragment(attrs) if attrs else {}
    key = f.get(b"k")
    message["key"] = key.decode() if key else None
    message["publish_time"] = rfc3339_ms(int(f[b"t"]))
    if attempt is not None:
        message["delivery_attempt"] = attempt
    message["partition"] = partition
    message["offset"] = offset
    return message
