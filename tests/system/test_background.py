"""Background work of the running platform, seen over HTTP: what beat schedules and the worker
does (due delays, expired leases, dead letters, key last-use times, usage roll-ups) happens
with no client pulling, and the stats the API shows agree with what pulls return.

Every wait polls for the expected state until a deadline; while the background work has to
act, nothing pulls (a pull does the same housekeeping itself and would hide a broken beat).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from tests.system.conftest import ApiTenant, Platform

T = TypeVar("T")

#: Longer than any beat interval of the platform fixture plus a worker's start-up.
DEADLINE_SECONDS = 20.0
OFFSET = re.compile(r"\A\d+-\d+\Z")
EMPTY = {"available": 0, "in_flight": 0, "delayed": 0}


def eventually(read: Callable[[], T], until: Callable[[T], bool], what: str) -> T:
    """``read()`` again and again until ``until`` accepts its value (returned); an
    AssertionError naming ``what`` and the last value when DEADLINE_SECONDS pass first."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        value = read()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {DEADLINE_SECONDS:.0f} s")
        time.sleep(0.2)


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json() if response.content else None


def create(t: ApiTenant, kind: str, **fields: Any) -> dict[str, Any]:
    return ok(t.http.post(f"/v1/{kind}", json=fields), 201)


def publish(t: ApiTenant, path: str, *messages: dict[str, Any]) -> list[dict[str, Any]]:
    answer = t.http.post(f"/v1/{path}/messages", json={"messages": list(messages)})
    return ok(answer, 201)["messages"]


def pull(t: ApiTenant, path: str, max_messages: int = 10) -> list[dict[str, Any]]:
    return ok(t.http.post(f"/v1/{path}/pull", json={"max_messages": max_messages}))["messages"]


def ack(t: ApiTenant, path: str, *messages: dict[str, Any]) -> dict[str, Any]:
    return ok(t.http.post(f"/v1/{path}/ack", json={"ack_ids": [m["ack_id"] for m in messages]}))


def stats(t: ApiTenant, path: str) -> dict[str, int]:
    """available / in_flight / delayed of a queue or subscription (the age varies)."""
    full = ok(t.http.get(f"/v1/{path}"))["stats"]
    assert set(full) == {"available", "in_flight", "delayed", "oldest_age_seconds"}, full
    return {name: full[name] for name in ("available", "in_flight", "delayed")}


def counts(available: int = 0, in_flight: int = 0, delayed: int = 0) -> dict[str, int]:
    return {"available": available, "in_flight": in_flight, "delayed": delayed}


def encoded_size(body: Any) -> int:
    """The size the platform meters for a JSON body without attributes."""
    return len(json.dumps(body, separators=(",", ":")).encode())


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def test_expired_lease_at_max_attempts_moves_to_the_dead_letter_queue(platform: Platform) -> None:
    """A message delivered max_delivery_attempts (2) times and never acknowledged moves to the
    dead-letter queue when its last lease expires, with nobody pulling (beat's housekeeping
    finds the lease): the source shows nothing left, the dead-letter queue one available
    message with the same id, body and attributes plus op-delivery-attempts "2", reason
    max_delivery_attempts, source queue:work and op-original-id; the source never delivers it
    again."""
    t = platform.tenant("Dead Letters")
    create(t, "queues", name="dlq")
    create(
        t, "queues", name="work", visibility_timeout=1, max_delivery_attempts=2,
        dead_letter_queue="dlq",
    )  # fmt: skip
    (published,) = publish(t, "queues/work", {"body": {"order": 7}, "attributes": {"a": "b"}})

    (first,) = pull(t, "queues/work")
    assert (first["id"], first["delivery_attempt"]) == (published["id"], 1)
    # The first lease expires after 1 s; pull until the second delivery, then stop pulling.
    (second,) = eventually(
        lambda: pull(t, "queues/work"), lambda got: len(got) > 0, "second delivery"
    )
    assert (second["id"], second["delivery_attempt"]) == (published["id"], 2)

    eventually(lambda: stats(t, "queues/dlq"), lambda s: s == counts(available=1), "DLQ stats")
    # The move is one atomic step: once the letter is there, the source is empty.
    assert stats(t, "queues/work") == EMPTY

    attributes = {
        "a": "b",
        "op-dead-letter-source": "queue:work",
        "op-dead-letter-reason": "max_delivery_attempts",
        "op-delivery-attempts": "2",
        "op-original-id": published["id"],
    }
    (peeked,) = ok(t.http.get("/v1/queues/dlq/messages"))["messages"]
    assert peeked["id"] == published["id"]
    assert peeked["body"] == {"order": 7}
    assert peeked["attributes"] == attributes
    assert (peeked["state"], peeked["delivery_attempts"]) == ("available", 0)

    (letter,) = pull(t, "queues/dlq")
    assert (letter["id"], letter["delivery_attempt"]) == (published["id"], 1)
    assert letter["body"] == {"order": 7}
    assert letter["attributes"] == attributes
    assert ack(t, "queues/dlq", letter) == {"acked": 1, "stale": []}
    assert stats(t, "queues/dlq") == EMPTY
    assert pull(t, "queues/work") == []


def test_delayed_queue_message_becomes_available_without_a_pull(platform: Platform) -> None:
    """A message published to a queue with delay_seconds is delayed and not among the stored
    messages; once due, with nobody pulling, beat moves it into the queue (the peek shows it,
    available, never delivered) and the stats count it available; the next pull returns
    exactly that message, and the stats follow the lease and the ack."""
    t = platform.tenant("Queue Delays")
    create(t, "queues", name="later")
    (published,) = publish(t, "queues/later", {"body": "soon", "delay_seconds": 3})
    peek = "/v1/queues/later/messages"
    assert ok(t.http.get(peek)) == {"messages": [], "next": None}
    assert stats(t, "queues/later") == counts(delayed=1)

    (stored,) = eventually(
        lambda: ok(t.http.get(peek))["messages"], lambda got: len(got) > 0, "queue peek"
    )
    assert (stored["id"], stored["body"]) == (published["id"], "soon")
    assert (stored["state"], stored["delivery_attempts"]) == ("available", 0)
    assert stats(t, "queues/later") == counts(available=1)

    (message,) = pull(t, "queues/later")
    assert (message["id"], message["body"], message["delivery_attempt"]) == (
        published["id"],
        "soon",
        1,
    )
    assert message["offset"] == stored["offset"]
    assert stats(t, "queues/later") == counts(in_flight=1)
    assert ack(t, "queues/later", message) == {"acked": 1, "stale": []}
    assert stats(t, "queues/later") == EMPTY


def test_delayed_topic_message_appears_in_the_log_without_a_pull(platform: Platform) -> None:
    """A message published to a topic with delay_seconds is not in the log until due; then,
    with nobody pulling, it appears in the partition's log with an offset, the subscription
    shows it available, and the subscription's pull returns it with that offset."""
    t = platform.tenant("Topic Delays")
    create(t, "topics", name="clicks")
    create(t, "subscriptions", name="clicks-all", topic="clicks")
    (published,) = publish(t, "topics/clicks", {"body": {"x": 1}, "delay_seconds": 3})
    log = "/v1/topics/clicks/messages?partition=0"
    assert ok(t.http.get(log)) == {"messages": [], "next": None}
    assert stats(t, "subscriptions/clicks-all") == counts(delayed=1)

    (entry,) = eventually(
        lambda: ok(t.http.get(log))["messages"], lambda got: len(got) > 0, "topic log"
    )
    assert (entry["id"], entry["body"], entry["partition"]) == (published["id"], {"x": 1}, 0)
    assert OFFSET.match(entry["offset"]), entry
    assert stats(t, "subscriptions/clicks-all") == counts(available=1)

    (message,) = pull(t, "subscriptions/clicks-all")
    assert (message["id"], message["offset"], message["delivery_attempt"]) == (
        published["id"],
        entry["offset"],
        1,
    )
    assert ack(t, "subscriptions/clicks-all", message) == {"acked": 1, "stale": []}
    assert stats(t, "subscriptions/clicks-all") == EMPTY


def test_last_used_at_is_written_for_a_used_key_only(platform: Platform) -> None:
    """Beat copies the last use the data plane noted for a key into PostgreSQL: the used key's
    last_used_at becomes the time of its first use (to the second); a key never used stays
    null."""
    t = platform.tenant("Key Use")
    first_use = int(time.time())
    unused = create(t, "keys", name="unused", scopes=["consume"])
    create(t, "queues", name="jobs")
    publish(t, "queues/jobs", {"body": 1})

    used = eventually(
        lambda: ok(t.http.get(f"/v1/keys/{t.key_id}")),
        lambda key: key["last_used_at"] is not None,
        "last_used_at of the owner key",
    )
    when = datetime.fromisoformat(used["last_used_at"]).timestamp()
    assert first_use <= when <= time.time(), used
    assert ok(t.http.get(f"/v1/keys/{unused['id']}"))["last_used_at"] is None
    listed = {key["id"]: key["last_used_at"] for key in ok(t.http.get("/v1/keys"))["results"]}
    assert listed == {t.key_id: used["last_used_at"], unused["id"]: None}


def test_usage_rows_appear_for_every_tenant_with_traffic(platform: Platform) -> None:
    """Beat rolls each tenant's hourly counters up into usage rows: a tenant that published 3
    messages (and pulled all, acked 2) and one that published 5 each get exactly their
    counts for the hour; a tenant with no traffic has no rows."""
    three, five, quiet = (platform.tenant(f"Usage {n}") for n in ("Three", "Five", "Quiet"))
    start = datetime.now(UTC)
    bodies_three = [{"n": n} for n in range(3)]
    bodies_five = [{"n": n} for n in range(5)]
    create(three, "queues", name="q")
    create(five, "queues", name="q")
    for body in bodies_three:
        publish(three, "queues/q", {"body": body})
    publish(five, "queues/q", *({"body": body} for body in bodies_five))
    pulled = pull(three, "queues/q")
    assert [m["body"] for m in pulled] == bodies_three
    assert ack(three, "queues/q", *pulled[:2]) == {"acked": 2, "stale": []}
    end = datetime.now(UTC)
    hours = {hour_of(start), hour_of(end)}  # two only if the test crossed an hour

    def totals(t: ApiTenant) -> dict[str, int]:
        rows = ok(t.http.get("/v1/usage"))["results"]
        starts = {datetime.fromisoformat(row["start"]) for row in rows}
        assert starts <= hours, (rows, hours)
        names = ("published", "published_bytes", "delivered", "acked")
        return {name: sum(row[name] for row in rows) for name in names}

    expected_three = {
        "published": 3,
        "published_bytes": sum(map(encoded_size, bodies_three)),
        "delivered": 3,
        "acked": 2,
    }
    expected_five = {
        "published": 5,
        "published_bytes": sum(map(encoded_size, bodies_five)),
        "delivered": 0,
        "acked": 0,
    }
    eventually(lambda: totals(three), lambda got: got == expected_three, "usage of Usage Three")
    eventually(lambda: totals(five), lambda got: got == expected_five, "usage of Usage Five")
    assert ok(quiet.http.get("/v1/usage")) == {"results": []}
    week = (start - timedelta(days=7)).isoformat()
    assert ok(quiet.http.get("/v1/usage", params={"from": week})) == {"results": []}


def test_stats_agree_with_pulls_acks_and_nacks(platform: Platform) -> None:
    """A queue's stats count what a pull would get (available), what is leased (in_flight)
    and what waits (delayed) after each pull, ack and nack, across both web processes."""
    t = platform.tenant("Stats")
    create(t, "queues", name="jobs")
    publish(t, "queues/jobs", *({"body": n} for n in range(3)))
    assert stats(t, "queues/jobs") == counts(available=3)

    first, second = pull(t, "queues/jobs", max_messages=2)
    assert [(m["body"], m["delivery_attempt"]) for m in (first, second)] == [(0, 1), (1, 1)]
    assert stats(t, "queues/jobs") == counts(available=1, in_flight=2)

    assert ack(t, "queues/jobs", first) == {"acked": 1, "stale": []}
    assert stats(t, "queues/jobs") == counts(available=1, in_flight=1)

    nack = {"ack_ids": [second["ack_id"]], "delay_seconds": 0}
    assert ok(t.http.post("/v1/queues/jobs/nack", json=nack)) == {"nacked": 1, "stale": []}
    assert stats(t, "queues/jobs") == counts(available=2)

    again = pull(t, "queues/jobs")
    assert sorted((m["body"], m["delivery_attempt"]) for m in again) == [(1, 2), (2, 1)]
    assert stats(t, "queues/jobs") == counts(in_flight=2)
    assert ack(t, "queues/jobs", *again) == {"acked": 2, "stale": []}
    full = ok(t.http.get("/v1/queues/jobs"))["stats"]
    assert full == {**EMPTY, "oldest_age_seconds": 0}
