"""JSON in, with orjson: fast, strict, and every failure a clear 400.

:func:`loads` is for requests whose numbers are small integers and the like (every endpoint
but publish). :func:`loads_exact` is for what is stored and delivered as it came: a message's
body. It keeps every number exactly as the client wrote it (big integers, long decimals,
``-0``, ``1e400``) while costing almost nothing more than orjson when nothing needs keeping.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.parsers import BaseParser

from kernel.errors import InvalidRequest, PayloadTooLarge


def loads(raw: bytes) -> Any:
    """Decode a JSON request body; raises InvalidRequest with the parser's message."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Malformed JSON: {exc}") from exc


def loads_exact(raw: bytes) -> Any:
    """Decode a JSON request body so that ``orjson.dumps`` of any part of it gives back the
    same JSON value: every number token as the client wrote it, strings equal, key order kept
    (whitespace and string escapes may be normalized). A number orjson would change is an
    ``orjson.Fragment`` of its source text, which ``orjson.dumps`` writes verbatim; any other
    number is a Python int. Duplicate keys: the last value wins, at the first key's place (as
    orjson, the stdlib and JavaScript's ``JSON.parse`` decide). Raises InvalidRequest as
    :func:`loads` does, also for a lone surrogate (``"\\ud800"``), which is not Unicode text.

    orjson reads an integer beyond 64 bits as a float, rounds a decimal to the nearest double
    and reads ``-0`` as ``0``; the stdlib decoder with number hooks keeps each token's text but
    is two to three times slower. So orjson parses first, and its result is kept when it
    provably re-serializes to the client's values, checked in C where possible:

    1. ``orjson.dumps`` of the result is the request byte for byte: every token came back in
       place. This is what compact writers send (orjson, JavaScript's ``JSON.stringify``).
    2. Else a walk of the result finds no float and no ``0`` that may have been ``-0``:
       orjson reads every other integer exactly and writes it as JSON spells it.
    3. Else the stdlib decoder parses again with the number tokens kept. A false positive of
       1 or 2 only costs this slower parse; neither ever passes a changed number.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # A number beyond a double's range (1e400) is JSON all the same: the exact parser
        # takes it. Any other refusal stands (and a body nested past orjson's limit never
        # reaches the recursive stdlib decoder).
        if not str(exc).startswith(_ORJSON_OUT_OF_RANGE):
            raise InvalidRequest(f"Malformed JSON: {exc}") from exc
        return _loads_verbatim(raw)
    try:
        same = orjson.dumps(value) == raw
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: validation says so
        same = False
    if same or not _may_have_changed(value, raw):
        return value
    return _loads_verbatim(raw)


_ORJSON_OUT_OF_RANGE = "number is infinity"  # orjson's message for 1e400
# The integer -0: followed by what may follow a number (string text like it only costs time).
_NEGATIVE_ZERO = re.compile(rb"-0(?![^ \t\n\r,\]}])")


def _may_have_changed(value: Any, raw: bytes) -> bool:
    """Whether orjson's reading of ``raw`` holds a float (any decimal or exponent token, or
    an integer beyond 64 bits) or an integer 0 while ``raw`` holds a ``-0`` token."""
    kind = type(value)
    if kind is not dict and kind is not list:
        return kind is float or (kind is int and not value and bool(_NEGATIVE_ZERO.search(raw)))
    zero = False
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        container = pop()
        for item in container.values() if type(container) is dict else container:
            kind = type(item)
            if kind is str:
                continue
            if kind is dict or kind is list:
                push(item)
            elif kind is float:
                return True
            elif kind is int and not item:
                zero = True
    return zero and _NEGATIVE_ZERO.search(raw) is not None


def _verbatim_int(text: str) -> Any:
    # Up to 18 characters is within orjson's 64 bits. "-0" stays text, and so do longer tokens:
    # orjson could not write them, and int() takes quadratic time (past 4,300 digits, refuses).
    if len(text) <= 18 and text != "-0":
        return int(text)
    return orjson.Fragment(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_VERBATIM = json.JSONDecoder(
    parse_float=orjson.Fragment, parse_int=_verbatim_int, parse_constant=_refuse_constant
)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _loads_verbatim(raw: bytes) -> Any:
    """The stdlib decoder with every float token (and every integer token orjson would not
    write back as it came) kept as its text. As strict as orjson: UTF-8 only, no NaN or
    Infinity, no lone surrogates; deeper nesting than the interpreter allows is a 400."""
    try:
        text = raw.decode()
        value = _VERBATIM.decode(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError
        raise InvalidRequest(f"Malformed JSON: {exc}") from exc
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise InvalidRequest("Malformed JSON: a string holds a lone surrogate (\\ud800-\\udfff).")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any key or string in ``value`` holds a surrogate code point (a pair of
    escapes decodes to one character, so any left is lone)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is str:
            if _SURROGATE.search(item):
                return True
        elif type(item) is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return False


def read_limited(stream: Any) -> bytes:
    """The whole body, or PayloadTooLarge once it passes DATA_UPLOAD_MAX_MEMORY_SIZE.

    DRF hands parsers the request itself as the stream, and reading it directly skips the
    limit Django applies in ``HttpRequest.body``; so the limit is applied here, reading at
    most one byte past it.
    """
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is None:
        return stream.read()
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise PayloadTooLarge("The request body is larger than the server accepts.")
    return b"".join(chunks)


class FastJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            raw = read_limited(stream) if stream is not None else b""
        except RequestDataTooBig as exc:
            raise PayloadTooLarge("The request body is larger than the server accepts.") from exc
        return loads(raw) if raw else {}
