"""GET /v1/schema states the limits of API.md, closed request bodies and every error status,
so that a client (or Schemathesis, tests/system/test_schemathesis.py) can rely on it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client

from kernel.limits import ACK_ID_PATTERN, STREAM_ID_PATTERN

pytestmark = pytest.mark.django_db

NAME = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def schema(django_db_blocker: Any) -> dict[str, Any]:
    with django_db_blocker.unblock():
        response = Client().get("/v1/schema", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def body_of(schema: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    content = schema["paths"][path][method]["requestBody"]["content"]["application/json"]
    return resolve(schema, content["schema"])


def test_resource_names_in_paths_have_the_name_pattern(schema: dict[str, Any]) -> None:
    seen = 0
    for _, _, operation in operations(schema):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and parameter["name"] in (
                "queue",
                "topic",
                "subscription",
            ):
                assert parameter["schema"] == {"type": "string", "pattern": NAME, "maxLength": 128}
                seen += 1
    assert seen == 24


@pytest.mark.parametrize(
    "path", ["/v1/queues", "/v1/topics", "/v1/subscriptions", "/v1/keys", "/v1/audit-events"]
)
def test_lists_take_limit_1_to_200_and_a_cursor(schema: dict[str, Any], path: str) -> None:
    parameters = {p["name"]: p["schema"] for p in schema["paths"][path]["get"]["parameters"]}

    assert parameters["limit"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
    assert parameters["cursor"] == {"type": "string", "minLength": 1}


@pytest.mark.parametrize(
    ("component", "field", "expected"),
    [
        ("QueueCreateRequest", "visibility_timeout", (0, 43200)),
        ("QueueCreateRequest", "delay_seconds", (0, 900)),
        ("QueueCreateRequest", "retention_seconds", (60, 1209600)),
        ("QueueCreateRequest", "max_delivery_attempts", (1, 1000)),
        ("TopicCreateRequest", "partitions", (1, 64)),
        ("TopicCreateRequest", "retention_seconds", (60, 1209600)),
        ("SubscriptionCreateRequest", "visibility_timeout", (0, 43200)),
        ("SubscriptionCreateRequest", "max_delivery_attempts", (1, 1000)),
        ("PullInRequest", "max_messages", (1, 100)),
        ("PullInRequest", "wait_seconds", (0, 20)),
        ("PullInRequest", "visibility_timeout", (0, 43200)),
        ("DeadlineInRequest", "seconds", (0, 43200)),
        ("JsonMessageInRequest", "delay_seconds", (0, 900)),
        ("RetryBackoffRequest", "max_seconds", (0, 43200)),
    ],
)
def test_integer_ranges(
    schema: dict[str, Any], component: str, field: str, expected: tuple[int, int]
) -> None:
    property_ = schema["components"]["schemas"][component]["properties"][field]

    assert property_["type"] == "integer"
    assert (property_["minimum"], property_["maximum"]) == expected


def test_names_in_bodies_have_the_name_pattern(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for component, field in [
        ("QueueCreateRequest", "name"),
        ("QueueCreateRequest", "dead_letter_queue"),
        ("TopicCreateRequest", "name"),
        ("SubscriptionCreateRequest", "name"),
        ("SubscriptionCreateRequest", "topic"),
        ("QueueRedriveRequest", "to"),
    ]:
        assert components[component]["properties"][field]["pattern"] == NAME, (component, field)


@pytest.mark.parametrize("component", ["AckInRequest", "NackInRequest", "DeadlineInRequest"])
def test_ack_ids_are_1_to_1000_of_the_ack_id_pattern(
    schema: dict[str, Any], component: str
) -> None:
    ack_ids = schema["components"]["schemas"][component]["properties"]["ack_ids"]

    assert (ack_ids["minItems"], ack_ids["maxItems"]) == (1, 1000)
    assert ack_ids["items"]["pattern"] == ACK_ID_PATTERN


def test_the_ack_id_and_offset_patterns_are_exactly_the_64_bit_stream_ids() -> None:
    top = str(2**64 - 1)
    assert re.fullmatch(STREAM_ID_PATTERN, f"{top}-{top}")
    assert not re.fullmatch(STREAM_ID_PATTERN, f"{2**64}-0")
    assert not re.fullmatch(STREAM_ID_PATTERN, "\u0661-1")
    assert re.fullmatch(ACK_ID_PATTERN, f"63.{top}-0.1")
    assert not re.fullmatch(ACK_ID_PATTERN, "0.1-1.0")


def test_publish_is_one_message_or_a_batch_of_1_to_100(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    publish = body_of(schema, "/v1/queues/{queue}/messages")
    branches = [resolve(schema, branch) for branch in publish["oneOf"]]
    json_message, binary_message, batch = branches

    assert json_message["required"] == ["body"]
    assert binary_message["required"] == ["body_base64"]
    assert all(branch["additionalProperties"] is False for branch in branches)
    messages = batch["properties"]["messages"]
    assert (messages["minItems"], messages["maxItems"]) == (1, 100)
    assert resolve(schema, messages["items"]) == components["MessageInRequest"]
    attributes = json_message["properties"]["attributes"]
    assert attributes["maxProperties"] == 32
    assert json_message["properties"]["key"]["maxLength"] == 1024
    assert json_message["properties"]["dedup_id"]["maxLength"] == 128


def test_request_bodies_are_closed(schema: dict[str, Any]) -> None:
    """Unknown fields are a 400, and the schema says so: every request body object (and the
    objects nested in it) has additionalProperties false, or is one of such objects."""
    components = schema["components"]["schemas"]
    ours = [
        name
        for name in components
        if name.endswith("Request") and not name.startswith(("Input", "Key"))
    ]
    assert len(ours) >= 15
    for name in ours:
        component = components[name]
        if "oneOf" in component:
            continue
        assert component.get("additionalProperties") is False, name


def test_every_operation_lists_the_errors_it_can_answer(schema: dict[str, Any]) -> None:
    for path, method, operation in operations(schema):
        statuses = set(operation["responses"])
        assert {"401", "403", "429", "503"} <= statuses, (method, path)
        if "{" in path:
            assert "404" in statuses, (method, path)
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= statuses, (method, path)
        if any(p["in"] == "query" for p in operation.get("parameters", [])):
            assert "400" in statuses, (method, path)
        for status in ("429", "503"):
            assert operation["responses"][status]["headers"]["Retry-After"]["required"] is True


def test_created_resources_link_to_their_operations(schema: dict[str, Any]) -> None:
    created = schema["paths"]["/v1/queues"]["post"]["responses"]["201"]["links"]
    pulled = schema["paths"]["/v1/queues/{queue}/pull"]["post"]["responses"]["200"]["links"]

    assert created["post_queues_queue_pull"] == {
        "operationRef": "#/paths/~1v1~1queues~1{queue}~1pull/post",
        "parameters": {"path.queue": "$response.body#/name"},
    }
    assert pulled["post_queues_queue_ack"]["requestBody"] == {
        "ack_ids": ["$response.body#/messages/0/ack_id"]
    }
