"""GET /v1/schema: the OpenAPI 3 description of the public surface, served without a key."""

from __future__ import annotations

import json

import pytest
import yaml
from django.test import Client

pytestmark = pytest.mark.django_db

EXPECTED_OPERATIONS = {
    "/v1/keys": {"get", "post"},
    "/v1/keys/{key_id}": {"get", "delete"},
    "/v1/tenant": {"get"},
    "/v1/usage": {"get"},
    "/v1/audit-events": {"get"},
}


@pytest.fixture
def schema() -> dict:
    response = Client().get("/v1/schema", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return json.loads(response.content)


def test_schema_is_served_without_a_key_as_yaml_by_default() -> None:
    """No Authorization header is needed; the default form is YAML of OpenAPI 3."""
    response = Client().get("/v1/schema")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    document = yaml.safe_load(response.content)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "OpenPlatform API"


def test_schema_describes_the_control_plane_paths(schema: dict) -> None:
    """Every keys/tenant/usage/audit path of API.md is there with exactly its methods; the
    schema and docs endpoints themselves are not."""
    paths = schema["paths"]
    for path, methods in EXPECTED_OPERATIONS.items():
        assert path in paths, path
        assert set(paths[path]) - {"parameters"} == methods, path
    assert "/v1/schema" not in paths
    assert "/v1/docs" not in paths


def test_schema_declares_bearer_api_keys(schema: dict) -> None:
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "op_<prefix>_<secret>",
    }
    for path in EXPECTED_OPERATIONS:
        for operation in schema["paths"][path].values():
            assert operation["security"] == [{"ApiKey": []}]


def test_only_key_creation_documents_a_secret(schema: dict) -> None:
    """The 201 of POST /v1/keys has a secret; the list and detail answers do not."""
    components = schema["components"]["schemas"]

    def properties(ref: str) -> set[str]:
        return set(components[ref.rsplit("/", 1)[1]]["properties"])

    keys = schema["paths"]["/v1/keys"]
    created = keys["post"]["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    detail = schema["paths"]["/v1/keys/{key_id}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]["$ref"]
    page = keys["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    item = components[page.rsplit("/", 1)[1]]["properties"]["results"]["items"]["$ref"]
    assert "secret" in properties(created)
    assert "secret" not in properties(detail)
    assert "secret" not in properties(item)


def test_error_responses_are_problem_json(schema: dict) -> None:
    """Every documented 4xx/5xx answer is application/problem+json with the Problem shape."""
    seen = 0
    for path in EXPECTED_OPERATIONS:
        for operation in schema["paths"][path].values():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                seen += 1
                assert set(response["content"]) == {"application/problem+json"}, (path, status)
                assert response["content"]["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"
                }
    assert seen >= 14
    problem = schema["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])


def test_docs_are_served_without_a_key() -> None:
    response = Client().get("/v1/docs")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        ("/v1/keys", "get", {"400", "401", "403"}),
        ("/v1/keys", "post", {"400", "401", "403"}),
        ("/v1/keys/{key_id}", "get", {"401", "403", "404"}),
        ("/v1/keys/{key_id}", "delete", {"401", "403", "404"}),
        ("/v1/audit-events", "get", {"400", "401", "403"}),
        ("/v1/usage", "get", {"400", "401", "403"}),
    ],
)
def test_keys_and_audit_document_their_refusals(
    schema: dict, path: str, method: str, statuses: set[str]
) -> None:
    """The 400 (a bad body or limit) and 403 (scope, resources, authority) answers of the keys
    and audit endpoints are in the schema."""
    responses = schema["paths"][path][method]["responses"]
    assert statuses <= set(responses), set(responses)
