"""A key's own limits on POST /v1/keys: publish_rate_per_second, consume_rate_per_second and
monthly_messages (each optional, at least 1, or null for the tenant's), returned by every
key answer, audited, and refused whole when invalid."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.errors import InvalidRequest
from tenants import services
from tenants.authority import OPERATOR
from tenants.models import ApiKey, AuditEvent
from tests.factories import TenantCtx, make_plan
from tests.helpers import assert_problem, post_json

pytestmark = pytest.mark.django_db

LIMITS = ("publish_rate_per_second", "consume_rate_per_second", "monthly_messages")


def test_create_with_limits_stores_returns_and_audits_them(acme: TenantCtx) -> None:
    response = post_json(
        acme.client,
        "/v1/keys",
        {
            "name": "narrow",
            "scopes": ["publish", "consume"],
            "publish_rate_per_second": 20,
            "consume_rate_per_second": 5,
            "monthly_messages": 100000,
        },
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert {name: body[name] for name in LIMITS} == {
        "publish_rate_per_second": 20,
        "consume_rate_per_second": 5,
        "monthly_messages": 100000,
    }
    key = ApiKey.objects.for_tenant(acme.tenant).get(pk=body["id"])
    assert (key.publish_rate_per_second, key.consume_rate_per_second, key.monthly_messages) == (
        20,
        5,
        100000,
    )
    event = AuditEvent.objects.for_tenant(acme.tenant).filter(action="key.create").last()
    assert event is not None
    assert event.data == {
        "name": "narrow",
        "scopes": ["publish", "consume"],
        "resources": [],
        "publish_rate_per_second": 20,
        "consume_rate_per_second": 5,
        "monthly_messages": 100000,
    }
    detail = acme.client.get(f"/v1/keys/{key.id}").json()
    assert {name: detail[name] for name in LIMITS} == {name: body[name] for name in LIMITS}
    listed = next(
        k for k in acme.client.get("/v1/keys").json()["results"] if k["id"] == str(key.id)
    )
    assert listed["monthly_messages"] == 100000


def test_limits_default_to_null(acme: TenantCtx) -> None:
    body = post_json(acme.client, "/v1/keys", {"name": "plain", "scopes": ["publish"]}).json()

    assert {name: body[name] for name in LIMITS} == dict.fromkeys(LIMITS)
    event = AuditEvent.objects.for_tenant(acme.tenant).filter(action="key.create").last()
    assert event is not None
    assert event.data == {"name": "plain", "scopes": ["publish"], "resources": []}


def test_a_limit_above_the_tenants_is_kept(acme: TenantCtx) -> None:
    """Allowed, and returned as given: the tenant's (tighter) limit holds, which
    GET /v1/tenant shows in key_quotas."""
    make_plan(tenant=acme.tenant, publish_rate_per_second=10)

    body = post_json(
        acme.client,
        "/v1/keys",
        {"name": "wide", "scopes": ["publish"], "publish_rate_per_second": 1000},
    ).json()

    assert body["publish_rate_per_second"] == 1000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("publish_rate_per_second", 0),
        ("publish_rate_per_second", -5),
        ("consume_rate_per_second", "5"),
        ("consume_rate_per_second", 2.5),
        ("monthly_messages", True),
        ("publish_rate_per_second", 2**31),
        ("monthly_messages", 2**63),
    ],
)
def test_bad_limits_are_400_and_store_nothing(acme: TenantCtx, field: str, value: Any) -> None:
    keys = ApiKey.objects.for_tenant(acme.tenant).count()
    events = AuditEvent.objects.for_tenant(acme.tenant).count()

    response = post_json(
        acme.client, "/v1/keys", {"name": "bad", "scopes": ["publish"], field: value}
    )

    body = assert_problem(response, 400, "invalid_request")
    assert [error["field"] for error in body["errors"]] == [field]
    assert ApiKey.objects.for_tenant(acme.tenant).count() == keys
    assert AuditEvent.objects.for_tenant(acme.tenant).count() == events


def test_the_service_refuses_bad_limits_too(acme: TenantCtx) -> None:
    """Callers other than the API (the console, operator code) meet the same rule."""
    keys = ApiKey.objects.for_tenant(acme.tenant).count()
    with pytest.raises(InvalidRequest) as refused:
        services.key_create(
            tenant=acme.tenant,
            name="bad",
            scopes=["publish"],
            actor="test",
            authority=OPERATOR,
            monthly_messages=0,
        )

    assert refused.value.errors == [
        {
            "field": "monthly_messages",
            "detail": f"A whole number from 1 to {2**63 - 1}, or null for the tenant's limit.",
        }
    ]
    assert ApiKey.objects.for_tenant(acme.tenant).count() == keys
