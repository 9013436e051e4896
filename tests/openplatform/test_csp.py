"""Content-Security-Policy (django-csp): every HTML page of the console, the admin and the API
docs carries the policy, and everything inline on them carries the response's nonce (nothing
inline runs or styles without it: no style="" or on...="" attributes either)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client

from tenants.models import User
from tests.factories import (
    PASSWORD,
    TenantCtx,
    make_queue,
    make_subscription,
    make_topic,
    signed_in,
)

pytestmark = pytest.mark.django_db

POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'", "'nonce-{nonce}'"],
    "style-src": ["'self'", "'nonce-{nonce}'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
INLINE = re.compile(r"<(script|style)\b([^>]*)>", re.IGNORECASE)
ATTRIBUTE_CODE = re.compile(r"<[^>]*\s(style|on[a-z]+)\s*=", re.IGNORECASE)


def policy_of(response: Any) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {
        name: values
        for name, *values in (part.split() for part in header.split(";") if part.strip())
    }


def assert_strict_page(response: Any) -> str:
    """The page has the policy, with a nonce when it has inline code, and every inline
    script and style carries that nonce; no attribute carries code. Returns the nonce."""
    assert response.status_code in (200, 429), response.status_code
    assert response["Content-Type"].startswith("text/html")
    policy = policy_of(response)
    nonce = ""
    if "'nonce-" in response["Content-Security-Policy"]:
        nonce = re.search(r"'nonce-([^']+)'", response["Content-Security-Policy"]).group(1)
    expected = {
        name: [v.format(nonce=nonce) for v in values if nonce or "nonce" not in v]
        for name, values in POLICY.items()
    }
    assert policy == expected
    html = response.content.decode()
    for tag, attributes in INLINE.findall(html):
        if tag.lower() == "script" and "src=" in attributes:
            continue
        if tag.lower() == "script" and 'type="application/json"' in attributes:
            continue  # a data block (json_script) does not run
        assert nonce, f"inline <{tag}> on a page whose policy has no nonce"
        assert f'nonce="{nonce}"' in attributes, f"<{tag}{attributes}> lacks the nonce"
    assert ATTRIBUTE_CODE.findall(html) == []
    return nonce


def test_the_login_page(db: Any) -> None:
    nonce = assert_strict_page(Client().get("/login/"))
    assert nonce  # the console's stylesheet is inline


def test_the_dashboard_and_a_form(acme: TenantCtx) -> None:
    """The dashboard with a row of each kind, and a form page."""
    make_queue(tenant=acme.tenant, name="orders")
    topic = make_topic(tenant=acme.tenant, name="events")
    make_subscription(tenant=acme.tenant, name="audit", topic=topic.name)
    owner = signed_in(acme.owner)
    assert_strict_page(owner.get("/"))
    assert_strict_page(owner.get("/new/queue/"))


def test_the_lock_out_page(db: Any, settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = 1
    settings.AXES_COOLOFF_TIME = timedelta(minutes=1)
    response = Client().post("/login/", {"username": "x@example.test", "password": "no"})
    assert response.status_code == 429
    assert_strict_page(response)


def test_the_admin(db: Any) -> None:
    """The admin's sign-in (the console's form), its index and a change list (django-axes'
    attempts)."""
    assert_strict_page(Client().get("/admin/login/", follow=True))
    operator = User.objects.create_superuser("root@example.test", PASSWORD)
    client = signed_in(operator)
    assert_strict_page(client.get("/admin/"))
    assert_strict_page(client.get("/admin/axes/accessattempt/"))


def test_the_api_docs(db: Any) -> None:
    """Swagger UI (drf-spectacular's page, with the nonce on its inline style and script)."""
    response = Client().get("/v1/docs")
    nonce = assert_strict_page(response)
    html = response.content.decode()
    assert f'<script nonce="{nonce}">' in html
    assert "SwaggerUIBundle(" in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html


def test_each_response_has_its_own_nonce(db: Any) -> None:
    first = assert_strict_page(Client().get("/login/"))
    second = assert_strict_page(Client().get("/login/"))
    assert first != second


@pytest.mark.parametrize("path", ["/no/such/page/", "/"])
def test_other_pages_carry_the_policy_too(db: Any, path: str) -> None:
    """A 404 page and a redirect to the sign-in page carry the header as well."""
    response = Client().get(path)
    assert policy_of(response)["frame-ancestors"] == ["'none'"]
    assert policy_of(response)["default-src"] == ["'self'"]
