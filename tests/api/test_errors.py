"""Whatever fails, the client gets application/problem+json with type, title, status, detail
and code, the status matching the HTTP status, and nothing is stored."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import RequestDataTooBig
from django.test import Client
from rest_framework import serializers

from api.errors import to_platform_error
from tenants.models import ApiKey, AuditEvent
from tests.factories import TenantCtx
from tests.helpers import assert_problem, key_of, post_json

pytestmark = pytest.mark.django_db


def stored(ctx: TenantCtx) -> tuple[int, int]:
    return (
        ApiKey.objects.for_tenant(ctx.tenant).count(),
        AuditEvent.objects.for_tenant(ctx.tenant).count(),
    )


@pytest.mark.parametrize(
    "raw", ['{"name": "k", "scopes": ["publish"]', "{name: 1}", "nope", '{"a": 1}}', "\xff"]
)
def test_malformed_json_is_400(acme: TenantCtx, raw: str) -> None:
    """A body that is not JSON is a 400 invalid_request naming the parse failure."""
    before = stored(acme)

    response = acme.client.post("/v1/keys", data=raw, content_type="application/json")

    body = assert_problem(response, 400, "invalid_request")
    assert body["detail"].startswith("Malformed JSON: ")
    assert stored(acme) == before


@pytest.mark.parametrize("payload", [[1, 2], "a string", 42, None])
def test_json_that_is_not_an_object_is_400(acme: TenantCtx, payload: object) -> None:
    """Valid JSON of the wrong shape is a 400 too, not a 500."""
    before = stored(acme)

    response = post_json(acme.client, "/v1/keys", payload)

    assert_problem(response, 400, "invalid_request")
    assert stored(acme) == before


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_wrong_content_type_is_415(acme: TenantCtx, content_type: str) -> None:
    """A body in another media type is refused as unsupported, and nothing is created."""
    before = stored(acme)

    response = acme.client.post(
        "/v1/keys", data='{"name": "k", "scopes": ["publish"]}', content_type=content_type
    )

    body = assert_problem(response, 415, "unsupported_media_type")
    assert body["detail"] == "Send the request body as application/json."
    assert stored(acme) == before


@pytest.mark.parametrize(
    "path", ["/v1/nope", "/v1/", "/v1/keys/a/b", "/v1/topics-and-more", "/v1/KEYS"]
)
def test_unknown_path_under_v1_is_404(acme: TenantCtx, path: str) -> None:
    """Any unknown path under /v1 is a problem+json 404, with or without a key."""
    for client in (acme.client, Client()):
        body = assert_problem(client.get(path), 404, "not_found")
        assert body["detail"] == "No such resource."
        assert_problem(
            client.post(path, data="{}", content_type="application/json"), 404, "not_found"
        )


def test_unknown_path_outside_the_api_is_not_problem_json(db: None) -> None:
    """Outside /v1 (the console, the admin), a 404 stays an ordinary HTML page."""
    response = Client().get("/no-such-page")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("put", "/v1/tenant", "GET, HEAD, OPTIONS"),
        ("post", "/v1/tenant", "GET, HEAD, OPTIONS"),
        ("delete", "/v1/keys", "GET, POST, HEAD, OPTIONS"),
        ("patch", "/v1/keys/{key_id}", "GET, DELETE, HEAD, OPTIONS"),
        ("post", "/v1/audit-events", "GET, HEAD, OPTIONS"),
    ],
)
def test_wrong_method_is_405(acme: TenantCtx, method: str, path: str, allow: str) -> None:
    """A method the endpoint does not have is a 405 listing the allowed ones, and changes
    nothing."""
    key = key_of(acme)
    before = stored(acme)

    response = getattr(acme.client, method)(
        path.format(key_id=key.id), data="{}", content_type="application/json"
    )

    assert_problem(response, 405, "method_not_allowed")
    assert response["Allow"] == allow
    assert stored(acme) == before
    key.refresh_from_db()
    assert key.revoked_at is None


def test_oversize_body_is_413_and_stores_nothing(acme: TenantCtx, settings) -> None:
    """A body over DATA_UPLOAD_MAX_MEMORY_SIZE is a 413 payload_too_large, even though it is
    valid JSON, and no key is created."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64
    raw = json.dumps({"name": "x" * 60, "scopes": ["publish"]})
    before = stored(acme)

    response = acme.client.post("/v1/keys", data=raw, content_type="application/json")

    body = assert_problem(response, 413, "payload_too_large")
    assert body["detail"] == "The request body is larger than the server accepts."
    assert stored(acme) == before


def test_body_at_the_limit_is_accepted(acme: TenantCtx, settings) -> None:
    """The limit is inclusive: a body of exactly DATA_UPLOAD_MAX_MEMORY_SIZE bytes is read;
    one byte more is refused."""
    exact = json.dumps({"name": "k", "scopes": ["publish"]})
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(exact)

    accepted = acme.client.post("/v1/keys", data=exact, content_type="application/json")
    refused = acme.client.post("/v1/keys", data=exact + " ", content_type="application/json")

    assert accepted.status_code == 201
    assert_problem(refused, 413, "payload_too_large")


def test_backing_service_down_is_503_with_retry_after(acme: TenantCtx, redis_down: str) -> None:
    """With Redis unreachable, an API request is a 503 unavailable with Retry-After, never a
    500."""
    response = acme.client.get("/v1/tenant")

    body = assert_problem(response, 503, "unavailable")
    assert body["detail"] == "A backing service is unavailable; try again shortly."
    assert response["Retry-After"] == "5"


def test_unauthenticated_problem_has_the_full_shape(db: None) -> None:
    """A 401 carries the same five fields and no errors list."""
    body = assert_problem(Client().get("/v1/keys"), 401, "unauthenticated")

    assert "errors" not in body


# --- Mapping exceptions to problems -----------------------------------------------------------


def _validation_error(data: object, serializer: type[serializers.Serializer]) -> Exception:
    instance = serializer(data=data)
    try:
        instance.is_valid(raise_exception=True)
    except serializers.ValidationError as exc:
        return exc
    raise AssertionError("expected the data to be invalid")


class _Nested(serializers.Serializer):
    class _Inner(serializers.Serializer):
        seconds = serializers.IntegerField(min_value=0)

    name = serializers.CharField()
    tags = serializers.ListField(child=serializers.ChoiceField(choices=["a", "b"]))
    inner = _Inner()
    items = _Inner(many=True)


def test_validation_errors_name_each_field() -> None:
    """Each error names its field: list items by index (index 0 included), nested fields by
    dotted path."""
    exc = _validation_error(
        {
            "name": "",
            "tags": ["x", "a", "y"],
            "inner": {"seconds": -1},
            "items": [{"seconds": "no"}, {"seconds": 1}],
        },
        _Nested,
    )

    error = to_platform_error(exc)

    assert error is not None
    assert error.status == 400
    assert error.code == "invalid_request"
    assert [item["field"] for item in error.errors] == [
        "name",
        "tags.0",
        "tags.2",
        "inner.seconds",
        "items.0.seconds",
    ]
    assert error.detail == "name: This field may not be blank."


def test_non_field_errors_have_no_field() -> None:
    exc = _validation_error([1], _Nested)

    error = to_platform_error(exc)

    assert error is not None
    assert error.errors == [{"detail": "Invalid data. Expected a dictionary, but got list."}]


def test_request_data_too_big_maps_to_413() -> None:
    error = to_platform_error(RequestDataTooBig("too big"))

    assert error is not None
    assert (error.status, error.code) == (413, "payload_too_large")


def test_a_bug_is_not_mapped() -> None:
    """An unexpected exception maps to nothing, so it surfaces as a 500 and is logged."""
    assert to_platform_error(KeyError("x")) is None
    assert to_platform_error(ZeroDivisionError()) is None
