"""The data plane over HTTP: publish, pull, ack, nack, modify-deadline, long polling,
isolation, scopes, and the warm hot path's cost (no PostgreSQL, one Redis round trip)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from kernel.redis_client import get_redis
from queues import selectors
from queues.engine.targets import queue_keys
from tenants.authority import OPERATOR
from tenants.principals import tenant_cache, tenant_document
from tenants.services import key_revoke
from tests.factories import (
    TenantCtx,
    api_client,
    async_api_client,
    make_key,
    make_plan,
    make_queue,
    make_subscription,
    make_tenant,
    make_topic,
)
from tests.helpers import assert_problem, key_of, post_json, record_async_redis_commands

JSON = "application/json"


def stream_len(ctx: TenantCtx, queue: str) -> int:
    q = selectors.queue_get(tenant=ctx.tenant, name=queue)
    return get_redis().xlen(queue_keys(str(ctx.tenant.id), str(q.id))["stream"])


def lease_count(ctx: TenantCtx, queue: str) -> int:
    q = selectors.queue_get(tenant=ctx.tenant, name=queue)
    return get_redis().zcard(queue_keys(str(ctx.tenant.id), str(q.id))["lease"])


@pytest.fixture
def orders(acme: TenantCtx) -> TenantCtx:
    make_queue(tenant=acme.tenant, name="orders")
    return acme


class TestPublish:
    def test_single_and_batch(self, orders: TenantCtx) -> None:
        """One message or a batch: 201 with id, partition, offset, duplicate in order."""
        one = post_json(orders.client, "/v1/queues/orders/messages", {"body": {"a": 1}})
        assert one.status_code == 201, one.content
        (item,) = one.json()["messages"]
        assert set(item) == {"id", "partition", "offset", "duplicate"}
        assert item["partition"] == 0
        assert item["duplicate"] is False
        batch = post_json(
            orders.client,
            "/v1/queues/orders/messages",
            {"messages": [{"body": i} for i in range(100)]},
        )
        assert batch.status_code == 201
        offsets = [m["offset"] for m in batch.json()["messages"]]
        assert len(offsets) == 100
        assert offsets == sorted(offsets, key=lambda o: tuple(map(int, o.split("-"))))
        assert stream_len(orders, "orders") == 101

    def test_delivered_shape_binary_and_attributes(self, orders: TenantCtx) -> None:
        """Delivered messages carry body or body_base64, attributes, key, times and ids."""
        post_json(
            orders.client,
            "/v1/queues/orders/messages",
            {
                "messages": [
                    {
                        "body_base64": base64.b64encode(b"\x00\xffbin").decode(),
                        "attributes": {"k": "v"},
                    },
                    {"body": [1, "two", None], "key": "customer-42"},
                ]
            },
        )
        pulled = post_json(orders.client, "/v1/queues/orders/pull", {"max_messages": 10}).json()[
            "messages"
        ]
        first, second = pulled
        assert base64.b64decode(first["body_base64"]) == b"\x00\xffbin"
        assert "body" not in first
        assert first["attributes"] == {"k": "v"}
        assert first["key"] is None
        assert second["body"] == [1, "two", None]
        assert second["key"] == "customer-42"
        assert second["attributes"] == {}
        for m in pulled:
            assert set(m) >= {
                "id",
                "ack_id",
                "publish_time",
                "delivery_attempt",
                "partition",
                "offset",
            }
            assert m["delivery_attempt"] == 1
            assert m["publish_time"].endswith("Z")

    def test_invalid_batch_is_rejected_whole(self, orders: TenantCtx) -> None:
        """Any invalid message rejects the batch with errors naming each bad index; nothing
        is stored."""
        response = post_json(
            orders.client,
            "/v1/queues/orders/messages",
            {
                "messages": [
                    {"body": 1},
                    {"body": 2, "body_base64": "AA=="},
                    {"body": 3, "attributes": {"n": 5}},
                    {"body": 4, "delay_seconds": 901},
                    {"body": 5},
                ]
            },
        )
        problem = assert_problem(response, 400, "invalid_request")
        assert [e["index"] for e in problem["errors"]] == [1, 2, 3]
        assert [e["field"] for e in problem["errors"]] == ["body", "attributes", "delay_seconds"]
        assert stream_len(orders, "orders") == 0

    @pytest.mark.parametrize(
        "payload",
        [
            {"messages": []},
            {"messages": [{"body": i} for i in range(101)]},
            {"messages": "x"},
            {"nobody": 1},
            [1, 2],
            {"body_base64": "not base64!"},
            {"body": 1, "attributes": {"op-x": "reserved"}},
            {"body": 1, "attributes": {f"a{i}": "v" for i in range(33)}},
            {"body": 1, "dedup_id": ""},
        ],
    )
    def test_bad_payloads_are_400(self, orders: TenantCtx, payload: Any) -> None:
        """Malformed publishes are 400 invalid_request and store nothing."""
        response = post_json(orders.client, "/v1/queues/orders/messages", payload)
        assert_problem(response, 400, "invalid_request")
        assert stream_len(orders, "orders") == 0

    def test_too_large_is_413_and_nothing_stored(self, orders: TenantCtx) -> None:
        """A message over the tenant's limit (body + attributes) is 413 for the whole batch."""
        big = "x" * (256 * 1024)
        response = post_json(
            orders.client, "/v1/queues/orders/messages", {"messages": [{"body": 1}, {"body": big}]}
        )
        problem = assert_problem(response, 413, "payload_too_large")
        assert problem["errors"][0]["index"] == 1
        assert stream_len(orders, "orders") == 0

    def test_malformed_json_and_media_type(self, orders: TenantCtx) -> None:
        """Broken JSON is 400; a body that is not JSON is 415."""
        bad = orders.client.post("/v1/queues/orders/messages", data="{oops", content_type=JSON)
        assert_problem(bad, 400, "invalid_request")
        text = orders.client.post(
            "/v1/queues/orders/messages", data="hello", content_type="text/plain"
        )
        assert_problem(text, 415, "unsupported_media_type")
        assert stream_len(orders, "orders") == 0

    def test_unknown_queue_is_404(self, orders: TenantCtx) -> None:
        assert_problem(
            post_json(orders.client, "/v1/queues/nope/messages", {"body": 1}), 404, "not_found"
        )
        assert_problem(post_json(orders.client, "/v1/queues/nope/pull", {}), 404, "not_found")


class TestConsume:
    def test_pull_ack_nack_modify_deadline_round_trip(self, orders: TenantCtx) -> None:
        """pull leases, ack removes, nack returns, modify-deadline 0 returns at once."""
        post_json(
            orders.client,
            "/v1/queues/orders/messages",
            {"messages": [{"body": i} for i in range(3)]},
        )
        a, b, c = post_json(orders.client, "/v1/queues/orders/pull", {"max_messages": 3}).json()[
            "messages"
        ]
        assert post_json(
            orders.client, "/v1/queues/orders/ack", {"ack_ids": [a["ack_id"]]}
        ).json() == {
            "acked": 1,
            "stale": [],
        }
        assert post_json(
            orders.client, "/v1/queues/orders/nack", {"ack_ids": [b["ack_id"]], "delay_seconds": 0}
        ).json() == {"nacked": 1, "stale": []}
        assert post_json(
            orders.client,
            "/v1/queues/orders/modify-deadline",
            {"ack_ids": [c["ack_id"]], "seconds": 0},
        ).json() == {"modified": 1, "stale": []}
        again = post_json(orders.client, "/v1/queues/orders/pull", {"max_messages": 10}).json()[
            "messages"
        ]
        assert sorted((m["body"], m["delivery_attempt"]) for m in again) == [(1, 2), (2, 2)]
        assert stream_len(orders, "orders") == 2

    def test_bad_consume_requests(self, orders: TenantCtx) -> None:
        """Out-of-range pull options and malformed ack ids are 400 and change nothing."""
        for body in (
            {"max_messages": 0},
            {"max_messages": 101},
            {"wait_seconds": 21},
            {"visibility_timeout": -1},
            {"extra": 1},
        ):
            assert_problem(
                post_json(orders.client, "/v1/queues/orders/pull", body), 400, "invalid_request"
            )
        for body in ({"ack_ids": []}, {"ack_ids": ["garbage"]}, {"ack_ids": ["5.1-0.1"]}, {}):
            assert_problem(
                post_json(orders.client, "/v1/queues/orders/ack", body), 400, "invalid_request"
            )
        assert_problem(
            post_json(orders.client, "/v1/queues/orders/modify-deadline", {"ack_ids": ["0.1-0.1"]}),
            400,
            "invalid_request",
        )
        assert lease_count(orders, "orders") == 0

    def test_subscription_data_plane(self, acme: TenantCtx) -> None:
        """Topic publish fans out; each subscription pulls and acks its own copy."""
        make_topic(tenant=acme.tenant, name="events", partitions=2)
        for name in ("one", "two"):
            make_subscription(tenant=acme.tenant, name=name, topic="events")
        post_json(
            acme.client,
            "/v1/topics/events/messages",
            {"messages": [{"body": i, "key": str(i)} for i in range(4)]},
        )
        for name in ("one", "two"):
            got = post_json(
                acme.client, f"/v1/subscriptions/{name}/pull", {"max_messages": 10}
            ).json()["messages"]
            assert sorted(m["body"] for m in got) == [0, 1, 2, 3]
            acked = post_json(
                acme.client,
                f"/v1/subscriptions/{name}/ack",
                {"ack_ids": [m["ack_id"] for m in got]},
            )
            assert acked.json() == {"acked": 4, "stale": []}


class TestIsolationAndScopes:
    def test_other_tenant_gets_404_everywhere_and_changes_nothing(
        self, orders: TenantCtx, globex: TenantCtx
    ) -> None:
        """Another tenant's key gets 404 on every data-plane endpoint of acme's queue, topic
        and subscription; acme's messages and leases are untouched."""
        make_topic(tenant=orders.tenant, name="events")
        make_subscription(tenant=orders.tenant, name="sub", topic="events")
        post_json(
            orders.client, "/v1/queues/orders/messages", {"messages": [{"body": 1}, {"body": 2}]}
        )
        (leased,) = post_json(orders.client, "/v1/queues/orders/pull", {"max_messages": 1}).json()[
            "messages"
        ]
        ack = {"ack_ids": [leased["ack_id"]]}
        calls = [
            ("/v1/queues/orders/messages", {"body": 9}),
            ("/v1/queues/orders/pull", {}),
            ("/v1/queues/orders/ack", ack),
            ("/v1/queues/orders/nack", ack),
            ("/v1/queues/orders/modify-deadline", {**ack, "seconds": 0}),
            ("/v1/topics/events/messages", {"body": 9}),
            ("/v1/subscriptions/sub/pull", {}),
            ("/v1/subscriptions/sub/ack", ack),
            ("/v1/subscriptions/sub/nack", ack),
            ("/v1/subscriptions/sub/modify-deadline", {**ack, "seconds": 0}),
        ]
        for path, body in calls:
            assert_problem(post_json(globex.client, path, body), 404, "not_found")
        assert stream_len(orders, "orders") == 2
        assert lease_count(orders, "orders") == 1
        # acme's lease still holds and settles
        assert post_json(orders.client, "/v1/queues/orders/ack", ack).json() == {
            "acked": 1,
            "stale": [],
        }

    def test_scopes_and_resources(self, orders: TenantCtx) -> None:
        """A publish-only key cannot consume and a consume-only key cannot publish; a key for
        queue:orders cannot touch another queue. Nothing happens on a 403."""
        make_queue(tenant=orders.tenant, name="other")
        publisher = api_client(make_key(tenant=orders.tenant, scopes=["publish"]))
        consumer = api_client(make_key(tenant=orders.tenant, scopes=["consume"]))
        only_orders = api_client(
            make_key(
                tenant=orders.tenant, scopes=["publish", "consume"], resources=["queue:orders"]
            )
        )
        assert post_json(publisher, "/v1/queues/orders/messages", {"body": 1}).status_code == 201
        assert_problem(post_json(publisher, "/v1/queues/orders/pull", {}), 403, "forbidden")
        assert lease_count(orders, "orders") == 0
        assert_problem(
            post_json(consumer, "/v1/queues/orders/messages", {"body": 2}), 403, "forbidden"
        )
        assert stream_len(orders, "orders") == 1
        assert_problem(
            post_json(only_orders, "/v1/queues/other/messages", {"body": 3}), 403, "forbidden"
        )
        assert_problem(post_json(only_orders, "/v1/queues/other/pull", {}), 403, "forbidden")
        assert stream_len(orders, "other") == 0
        got = post_json(only_orders, "/v1/queues/orders/pull", {}).json()["messages"]
        assert [m["body"] for m in got] == [1]

    def test_revoked_key_is_refused_on_the_data_plane(
        self, orders: TenantCtx, settings: Any, django_capture_on_commit_callbacks: Any
    ) -> None:
        """Revocation reaches the data plane once the local cache entry expires."""
        settings.HOT_CACHE_TTL_SECONDS = 0.05
        assert (
            post_json(orders.client, "/v1/queues/orders/messages", {"body": 1}).status_code == 201
        )
        key = str(key_of(orders).id)
        with django_capture_on_commit_callbacks(execute=True):
            key_revoke(authority=OPERATOR, tenant=orders.tenant, key_id=key, actor="test")
        time.sleep(0.06)
        assert_problem(
            post_json(orders.client, "/v1/queues/orders/messages", {"body": 2}),
            401,
            "unauthenticated",
        )
        assert stream_len(orders, "orders") == 1


class TestHotPath:
    def test_warm_data_plane_makes_no_postgres_query(
        self, orders: TenantCtx, django_assert_num_queries: Any
    ) -> None:
        """Warm publish, pull, ack, nack and modify-deadline make no PostgreSQL query."""
        post_json(orders.client, "/v1/queues/orders/messages", {"body": 0})  # warm the caches
        with django_assert_num_queries(0):
            assert (
                post_json(
                    orders.client,
                    "/v1/queues/orders/messages",
                    {"messages": [{"body": 1}, {"body": 2}, {"body": 3}]},
                ).status_code
                == 201
            )
            a, b, c = post_json(
                orders.client, "/v1/queues/orders/pull", {"max_messages": 3}
            ).json()["messages"]
            assert (
                post_json(
                    orders.client, "/v1/queues/orders/ack", {"ack_ids": [a["ack_id"]]}
                ).status_code
                == 200
            )
            assert (
                post_json(
                    orders.client, "/v1/queues/orders/nack", {"ack_ids": [b["ack_id"]]}
                ).status_code
                == 200
            )
            assert (
                post_json(
                    orders.client,
                    "/v1/queues/orders/modify-deadline",
                    {"ack_ids": [c["ack_id"]], "seconds": 60},
                ).status_code
                == 200
            )

    def test_cold_request_does_query_postgres(
        self, orders: TenantCtx, django_assert_max_num_queries: Any, django_assert_num_queries: Any
    ) -> None:
        """The zero-query check can fail: a cold cache reads the key, tenant and queue."""
        from kernel.hotcache import forget_all_local

        forget_all_local()
        get_redis().flushdb()
        with pytest.raises(pytest.fail.Exception), django_assert_num_queries(0):
            post_json(orders.client, "/v1/queues/orders/messages", {"body": 1})


@pytest.mark.django_db(transaction=True)
class TestLongPolling:
    @pytest.fixture(autouse=True)
    async def close_worker_connections(self) -> Any:
        """The ORM calls of these tests run in asgiref's worker thread: close its connection
        so the test database can be dropped at the end of the run."""
        yield
        await sync_to_async(connections.close_all)()

    async def test_publish_is_one_redis_round_trip(self, monkeypatch: Any) -> None:
        """A warm publish sends exactly one command to Redis (EVALSHA of the publish script),
        counted where every async command leaves the process: the connection."""
        ctx = await sync_to_async(make_tenant)(name="Trips")
        await sync_to_async(make_queue)(tenant=ctx.tenant, name="jobs")
        client = async_api_client(ctx.key)
        warm = await client.post("/v1/queues/jobs/messages", data={"body": 0})
        assert warm.status_code == 201
        sent = record_async_redis_commands(monkeypatch)
        response = await client.post(
            "/v1/queues/jobs/messages", data={"messages": [{"body": 1}, {"body": 2}]}
        )
        assert response.status_code == 201
        assert sent == ["EVALSHA"]

    async def test_waiting_pull_wakes_on_publish(self) -> None:
        """A pull with wait_seconds returns as soon as a message is published."""
        ctx = await sync_to_async(make_tenant)(name="Waiter")
        await sync_to_async(make_queue)(tenant=ctx.tenant, name="jobs")
        client = async_api_client(ctx.key)
        waiting = asyncio.ensure_future(
            client.post("/v1/queues/jobs/pull", data={"wait_seconds": 20}, content_type=JSON)
        )
        await asyncio.sleep(0.3)
        assert not waiting.done(), waiting.result().content
        published = await client.post(
            "/v1/queues/jobs/messages", data={"body": "hi"}, content_type=JSON
        )
        assert published.status_code == 201
        # woken by the publish: a pull still waiting out its 20 s would not answer in 10
        response = await asyncio.wait_for(waiting, 10)
        assert [m["body"] for m in response.json()["messages"]] == ["hi"]

    async def test_wait_ends_with_empty_list(self) -> None:
        """With nothing published, the pull answers an empty list when the wait ends."""
        ctx = await sync_to_async(make_tenant)(name="Idle")
        await sync_to_async(make_queue)(tenant=ctx.tenant, name="jobs")
        client = async_api_client(ctx.key)
        started = time.monotonic()
        response = await client.post(
            "/v1/queues/jobs/pull", data={"wait_seconds": 1}, content_type=JSON
        )
        assert response.json() == {"messages": []}
        assert time.monotonic() - started >= 1

    async def test_delayed_message_wakes_waiter_when_due(self) -> None:
        """A waiting pull gets a delayed message when it becomes due, with no publish."""
        ctx = await sync_to_async(make_tenant)(name="Delayed")
        await sync_to_async(make_queue)(tenant=ctx.tenant, name="jobs")
        client = async_api_client(ctx.key)
        await client.post(
            "/v1/queues/jobs/messages",
            data={"body": "later", "delay_seconds": 1},
            content_type=JSON,
        )
        response = await client.post(
            "/v1/queues/jobs/pull", data={"wait_seconds": 5}, content_type=JSON
        )
        assert [m["body"] for m in response.json()["messages"]] == ["later"]


class TestPlanLimits:
    def test_rate_limited_publish_is_429_with_retry_after(self, orders: TenantCtx) -> None:
        """A tenant over its plan's publish rate gets 429 with Retry-After; nothing stored."""
        make_plan(tenant=orders.tenant, publish_rate_per_second=2)
        tenant_cache.push(str(orders.tenant.id), tenant_document(orders.tenant))
        first = post_json(
            orders.client, "/v1/queues/orders/messages", {"messages": [{"body": 1}, {"body": 2}]}
        )
        assert first.status_code == 201
        second = post_json(orders.client, "/v1/queues/orders/messages", {"body": 3})
        if second.status_code == 201:  # the clock crossed a second boundary: try once more
            second = post_json(
                orders.client,
                "/v1/queues/orders/messages",
                {"messages": [{"body": 4}, {"body": 5}, {"body": 6}]},
            )
        assert_problem(second, 429, "rate_limited")
        assert second["Retry-After"] == "1"
