"""A queue delivers exactly the JSON value it was given: big integers, long decimals, ``-0``,
``1e400`` and every string come out of a pull as they went into a publish, on queues and on
topics, whatever the publisher's spacing and string escapes. Identifiers (attribute names and
values, keys, dedup ids) refuse NUL; bodies that are not Unicode text, or nested deeper than
can be stored, are a 400 naming the message."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from django.test import Client
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from api import parsers
from kernel.errors import InvalidRequest
from tests.factories import TenantCtx, make_queue, make_subscription, make_topic
from tests.helpers import assert_problem

JSON = "application/json"

# --- a JSON model that keeps every number's text and every object's key order ----------------


@dataclass(frozen=True)
class Num:
    """A JSON number token, compared by its text: 1.50 is not 1.5, -0 is not 0."""

    text: str


@dataclass(frozen=True)
class Obj:
    """A JSON object as its pairs in order (keys are unique here)."""

    pairs: tuple[tuple[str, Any], ...]


def parse_model(text: str | bytes) -> Any:
    """The test's own exact reading of JSON text, independent of the code under test."""
    return json.loads(
        text,
        parse_int=Num,
        parse_float=Num,
        object_pairs_hook=lambda pairs: Obj(tuple(pairs)),
    )


def canonical(value: Any) -> bytes:
    """The compact text the platform stores for ``value``: numbers as written, strings as
    orjson spells them, no whitespace, key order kept."""
    if value is None:
        return b"null"
    if value is True:
        return b"true"
    if value is False:
        return b"false"
    if isinstance(value, Num):
        return value.text.encode()
    if isinstance(value, str):
        return orjson.dumps(value)
    if isinstance(value, list):
        return b"[" + b",".join(canonical(v) for v in value) + b"]"
    return b"{" + b",".join(orjson.dumps(k) + b":" + canonical(v) for k, v in value.pairs) + b"}"


@dataclass(frozen=True)
class Style:
    """How a publisher writes its JSON."""

    item_sep: str
    key_sep: str
    ascii: bool
    orjson_strings: bool


def write(value: Any, style: Style) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, Num):
        return value.text
    if isinstance(value, str):
        if style.orjson_strings:
            return orjson.dumps(value).decode()
        return json.dumps(value, ensure_ascii=style.ascii)
    if isinstance(value, list):
        return "[" + style.item_sep.join(write(v, style) for v in value) + "]"
    return (
        "{"
        + style.item_sep.join(
            write(k, style) + style.key_sep + write(v, style) for k, v in value.pairs
        )
        + "}"
    )


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?\Z")
_digits = st.text("0123456789", min_size=1, max_size=40)
_int_part = st.just("0") | st.builds(
    str.__add__, st.sampled_from("123456789"), st.text("0123456789", max_size=40)
)


def _token(sign: bool, whole: str, fraction: str | None, exponent: tuple[str, str] | None) -> str:
    text = ("-" if sign else "") + whole
    if fraction is not None:
        text += "." + fraction
    if exponent is not None:
        text += exponent[0] + exponent[1]
    return text


number_tokens = st.one_of(
    st.integers().map(str),
    st.integers(min_value=-(10**60), max_value=10**60).map(str),
    st.builds(
        _token,
        st.booleans(),
        _int_part,
        st.none() | _digits,
        st.none() | st.tuples(st.sampled_from(["e", "E", "e+", "e-", "E+", "E-"]), _digits),
    ),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(
        [
            "-0",
            "-0.0",
            "0.0",
            "1e400",
            "-1e400",
            "1e-400",
            "1E+2",
            "1.50",
            "0.000001",
            "123456789012345678901234567890",
            "1.0000000000000000001",
            "18446744073709551616",
            "-9223372036854775809",
        ]
    ),
).filter(_NUMBER.match)

json_values = st.recursive(
    st.none() | st.booleans() | number_tokens.map(Num) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10), children, max_size=5).map(
            lambda d: Obj(tuple(d.items()))
        )
    ),
    max_leaves=25,
)
styles = st.builds(
    Style,
    item_sep=st.sampled_from([",", ", ", ",\n  ", " ,\t"]),
    key_sep=st.sampled_from([":", ": ", " : "]),
    ascii=st.booleans(),
    orjson_strings=st.booleans(),
)
BOUNDED = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no .hypothesis folder in the tree; a failure prints its example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- the parser on its own --------------------------------------------------------------------


@settings(max_examples=500, deadline=None, database=None)
@given(value=json_values, style=styles)
@example(value=Num("123456789012345678901234567890"), style=Style(",", ":", False, True))
@example(value=Num("1.0000000000000000001"), style=Style(",", ":", False, True))
@example(value=Num("-0"), style=Style(",", ":", False, True))
def test_loads_exact_keeps_every_value(value: Any, style: Style) -> None:
    """orjson.dumps of what loads_exact read is the canonical text of the value written,
    wherever it sits in a publish request and however the publisher spaced and escaped it."""
    request = '{"messages":[{"body":' + write(value, style) + "}]}"
    parsed = parsers.loads_exact(request.encode())
    assert orjson.dumps(parsed["messages"][0]["body"]) == canonical(value)


def test_ordinary_bodies_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Integers of up to 64 bits, strings, nesting and any spacing keep orjson's reading;
    so do floats orjson writes back as sent (compact requests). Only the rest reparse."""
    reparsed: list[bytes] = []
    slow = parsers._loads_verbatim

    def spy(raw: bytes) -> Any:
        reparsed.append(raw)
        return slow(raw)

    monkeypatch.setattr(parsers, "_loads_verbatim", spy)
    fast = [
        b'{"body": {"id": 18446744073709551615, "n": [1, -2, 0], "s": "caf\\u00e9 -0"}}',
        b'{"messages": [{"body": "x", "delay_seconds": 0}, {"body": -9223372036854775808}]}',
        b'{"body":{"t":12345.678901234567,"price":19.99,"big":1e+16,"z":-0.0}}',
    ]
    for raw in fast:
        parsers.loads_exact(raw)
    assert reparsed == []
    slow_ones = [b'{"body": 1.5}', b'{"body":1.50}', b'{"body":-0}', b'{"body":1e400}']
    for raw in slow_ones:
        parsers.loads_exact(raw)
    assert reparsed == slow_ones


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"body": "\\ud800"}', "no low surrogate"),
        (b'{"body": ["\\udfff", 1.5]}', "surrogate"),
        (b'{"body": NaN}', "Malformed JSON"),
        (b'{"body": [Infinity, 1.5]}', "Malformed JSON"),
        (b'{"body": "\xff", "n": 1.5}', "UTF-8"),
        (b'\xef\xbb\xbf{"body": 1.5}', "byte order mark"),
        (b'{"body": 1.5,}', "Malformed JSON"),
        (b'{"body": 01}', "Malformed JSON"),
        (b'{"body": [1e400, "\\ud800"]}', "lone surrogate"),
        (b'{"body": [1e400, NaN]}', "NaN is not JSON"),
        (b'{"body": [1e400, "\xff"]}', "UTF-8"),
        (b'{"body": [1e400, ' + b"[" * 5000 + b"]" * 5000 + b"]}", "recursion"),
    ],
)
def test_loads_exact_is_as_strict_as_orjson(raw: bytes, message: str) -> None:
    """What is not JSON text (a lone surrogate, NaN, invalid UTF-8, a BOM, a trailing comma,
    a leading zero) is an InvalidRequest, on the fast path and on the exact one alike; so is
    nesting past what the exact parser can follow."""
    with pytest.raises(InvalidRequest, match=message):
        parsers.loads_exact(raw)


def test_duplicate_keys_keep_the_last_value_at_the_first_place() -> None:
    """A repeated key keeps its last value at its first position, on both paths."""
    assert orjson.dumps(parsers.loads_exact(b'{"a": 1, "b": 2, "a": 3}')) == b'{"a":3,"b":2}'
    assert orjson.dumps(parsers.loads_exact(b'{"a": 1.5, "b": 2, "a": -0}')) == b'{"a":-0,"b":2}'


# --- through the HTTP API: publish, then pull --------------------------------------------------


def post(client: Client, path: str, raw: str | bytes) -> Any:
    return client.post(path, data=raw, content_type=JSON)


def pull_all(client: Client, source: str, expected: int) -> bytes:
    """Pull ``expected`` messages from ``source`` (a queue or subscription path), ack them,
    and return the pull's raw response."""
    pulled = post(client, f"{source}/pull", b'{"max_messages": 100}')
    assert pulled.status_code == 200, pulled.content
    messages = json.loads(pulled.content)["messages"]  # orjson refuses 1e400
    assert len(messages) == expected
    acked = post(
        client, f"{source}/ack", orjson.dumps({"ack_ids": [m["ack_id"] for m in messages]})
    )
    assert acked.json() == {"acked": expected, "stale": []}
    return pulled.content


def assert_delivered(content: bytes, values: list[Any]) -> None:
    """Each delivered body is the canonical text of the value sent, in order, both as raw
    text in the answer and as the test's own exact reading of it."""
    for value in values:
        assert b'"body":' + canonical(value) + b',"attributes":' in content
    delivered = parse_model(content)
    (field, messages) = delivered.pairs[0]
    assert field == "messages"
    assert [dict(m.pairs)["body"] for m in messages] == values


@pytest.fixture
def exact(acme: TenantCtx) -> TenantCtx:
    make_queue(tenant=acme.tenant, name="exact")
    make_topic(tenant=acme.tenant, name="facts", partitions=1)
    make_subscription(tenant=acme.tenant, name="reader", topic="facts")
    return acme


@BOUNDED
@given(values=st.lists(json_values, min_size=1, max_size=3), style=styles)
def test_queue_delivers_the_value_it_was_given(
    exact: TenantCtx, values: list[Any], style: Style
) -> None:
    """Whatever JSON values a batch carries, a pull delivers each one unchanged."""
    request = "{" + write("messages", style) + style.key_sep + "["
    request += style.item_sep.join(
        "{" + write("body", style) + style.key_sep + write(v, style) + "}" for v in values
    )
    published = post(exact.client, "/v1/queues/exact/messages", request + "]}")
    assert published.status_code == 201, published.content
    assert_delivered(pull_all(exact.client, "/v1/queues/exact", len(values)), values)


@BOUNDED
@given(value=json_values, style=styles)
def test_topic_delivers_the_value_it_was_given(exact: TenantCtx, value: Any, style: Style) -> None:
    """A single message published to a topic reaches its subscription unchanged."""
    request = "{" + write("body", style) + style.key_sep + write(value, style) + "}"
    published = post(exact.client, "/v1/topics/facts/messages", request)
    assert published.status_code == 201, published.content
    assert_delivered(pull_all(exact.client, "/v1/subscriptions/reader", 1), [value])


@pytest.mark.parametrize(
    ("sent", "delivered"),
    [
        ("123456789012345678901234567890", b"123456789012345678901234567890"),
        ("1.0000000000000000001", b"1.0000000000000000001"),
        ("-0", b"-0"),
        ("1e400", b"1e400"),
        ('{"n": -0, "x": [1.50, 0.1, 2E+3, -1e-400]}', b'{"n":-0,"x":[1.50,0.1,2E+3,-1e-400]}'),
        ('"caf\\u00e9 \\u0000 \\ud83d\\ude00"', '"café \\u0000 😀"'.encode()),
    ],
)
def test_the_reported_cases_are_delivered_as_sent(
    exact: TenantCtx, sent: str, delivered: bytes
) -> None:
    """The cases that used to change (a 30-digit integer became 1.2345678901234568e+29, a
    20-digit decimal 1.0, -0 became 0, 1e400 was refused) come back as sent, from a queue
    pull, a subscription pull, the queue peek and the topic log alike."""
    for path in ("/v1/queues/exact/messages", "/v1/topics/facts/messages"):
        published = post(exact.client, path, '{"body": ' + sent + "}")
        assert published.status_code == 201, published.content
    expected = b'"body":' + delivered + b',"attributes":'
    assert expected in exact.client.get("/v1/queues/exact/messages").content
    assert expected in exact.client.get("/v1/topics/facts/messages?partition=0").content
    assert expected in pull_all(exact.client, "/v1/queues/exact", 1)
    assert expected in pull_all(exact.client, "/v1/subscriptions/reader", 1)


# --- what is refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"body": 1, "attributes": {"a\u0000b": "v"}}, "attributes"),
        ({"body": 1, "attributes": {"a": "v\u0000"}}, "attributes"),
        ({"body": 1, "key": "customer\u000042"}, "key"),
        ({"body": 1, "dedup_id": "\u0000"}, "dedup_id"),
    ],
)
def test_nul_is_refused_in_identifiers(
    exact: TenantCtx, message: dict[str, Any], field: str
) -> None:
    """NUL in an attribute name or value, a key or a dedup id is a 400 naming the message's
    index and the field, and nothing of the batch is stored."""
    batch = {"messages": [{"body": "fine"}, message]}
    for path in ("/v1/queues/exact/messages", "/v1/topics/facts/messages"):
        response = post(exact.client, path, orjson.dumps(batch))
        problem = assert_problem(response, 400, "invalid_request")
        assert problem["errors"] == [
            {"index": 1, "field": field, "detail": problem["errors"][0]["detail"]}
        ]
        assert "NUL" in problem["errors"][0]["detail"]
    assert orjson.loads(post(exact.client, "/v1/queues/exact/pull", b"{}").content) == {
        "messages": []
    }


def test_nul_in_a_body_is_kept(exact: TenantCtx) -> None:
    """A body is any JSON value: a string in it may hold NUL, delivered as \\u0000."""
    response = post(exact.client, "/v1/queues/exact/messages", b'{"body": {"s": "a\\u0000b"}}')
    assert response.status_code == 201, response.content
    assert b'"body":{"s":"a\\u0000b"}' in pull_all(exact.client, "/v1/queues/exact", 1)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"body": "\\ud800"}',
        b'{"body": [1.5, "\\udc00"]}',
        b'{"body": 1, "attributes": {"a": "\\ud800"}}',
        b'{"body": 1e400, "key": "\\ud800x"}',
        b'{"body": "\xc3"}',
        b'{"body": NaN}',
    ],
)
def test_text_that_is_not_unicode_is_a_400(exact: TenantCtx, raw: bytes) -> None:
    """A lone surrogate escape, invalid UTF-8 or NaN anywhere in a publish is a 400
    invalid_request saying the JSON is malformed, whichever parse path the request takes."""
    problem = assert_problem(
        post(exact.client, "/v1/queues/exact/messages", raw), 400, "invalid_request"
    )
    assert problem["detail"].startswith("Malformed JSON")


def test_a_body_nested_deeper_than_can_be_stored_is_a_400(exact: TenantCtx) -> None:
    """A body nested past what orjson writes (254 levels) is a 400 naming the message, not
    a 500; one within the limit is stored."""
    deep = "[" * 300 + "]" * 300
    batch = '{"messages": [{"body": 1}, {"body": ' + deep + "}]}"
    problem = assert_problem(
        post(exact.client, "/v1/queues/exact/messages", batch), 400, "invalid_request"
    )
    assert [(e["index"], e["field"]) for e in problem["errors"]] == [(1, "body")]
    ok = "[" * 200 + "1.50" + "]" * 200
    assert (
        post(exact.client, "/v1/queues/exact/messages", '{"body": ' + ok + "}").status_code == 201
    )
    assert b'"body":' + ok.encode() + b"," in pull_all(exact.client, "/v1/queues/exact", 1)
