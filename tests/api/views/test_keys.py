"""POST/GET /v1/keys and GET/DELETE /v1/keys/{id}: secrets shown once and never stored,
revocation that reaches every process, scopes, validation and tenant isolation."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from kernel.redis_client import get_redis
from tenants.models import ApiKey, AuditEvent, Role
from tenants.principals import authenticate
from tests.factories import (
    TenantCtx,
    api_client,
    make_key,
    make_member,
    make_plan,
    signed_in,
)
from tests.helpers import assert_problem, key_of, post_json, prefix_of, secret_of

pytestmark = pytest.mark.django_db

KEY_FIELDS = {
    "id",
    "name",
    "prefix",
    "scopes",
    "resources",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "created_at",
    "publish_rate_per_second",
    "consume_rate_per_second",
    "monthly_messages",
}
TOKEN = re.compile(r"^op_(?P<prefix>[a-z0-9]{10})_(?P<secret>[A-Za-z0-9]{40})$")
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def key_events(ctx: TenantCtx, action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.for_tenant(ctx.tenant).filter(action=action).order_by("id"))


def database_dump() -> str:
    """Every row of every table, as PostgreSQL prints it."""
    rows: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT t::text FROM {connection.ops.quote_name(table)} t")  # noqa: S608
            rows += [row[0] for row in cursor.fetchall()]
    return "\n".join(rows)


def redis_dump() -> str:
    """Every string and hash value in the test Redis database."""
    redis = get_redis()
    values: list[str] = []
    for name in redis.scan_iter():
        kind = redis.type(name)
        if kind == b"string":
            values.append(repr(redis.get(name)))
        elif kind == b"hash":
            values.append(repr(redis.hgetall(name)))
        else:
            values.append(f"{name!r}:{kind!r}")
    return "\n".join(values)


# --- Creating keys and their secrets --------------------------------------------------------


def test_create_returns_the_secret_once(acme: TenantCtx) -> None:
    """201 with the key's fields and a secret op_<prefix>_<40 characters> whose prefix is the
    key's prefix; the row holds the SHA-256 of the secret part and the audit trail records the
    creation."""
    response = post_json(
        acme.client,
        "/v1/keys",
        {"name": "ci deploys", "scopes": ["manage", "publish"], "resources": ["queue:orders"]},
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == KEY_FIELDS | {"secret"}
    match = TOKEN.match(body["secret"])
    assert match is not None, body["secret"]
    assert match["prefix"] == body["prefix"]
    assert body["secret"].startswith(f"op_{body['prefix']}_")
    assert body["name"] == "ci deploys"
    assert body["scopes"] == ["publish", "manage"]  # canonical order
    assert body["resources"] == ["queue:orders"]
    assert body["expires_at"] is None
    assert body["revoked_at"] is None
    assert body["last_used_at"] is None
    assert RFC3339_UTC.match(body["created_at"])
    key = ApiKey.objects.for_tenant(acme.tenant).get(pk=body["id"])
    assert key.prefix == body["prefix"]
    assert key.secret_hash == hashlib.sha256(match["secret"].encode()).hexdigest()
    assert key.created_by == f"key:{prefix_of(acme.key)}"
    [event] = key_events(acme, "key.create")[1:]  # the first is make_tenant's own key
    assert event.actor == f"key:{prefix_of(acme.key)}"
    assert event.target_type == "key"
    assert event.target_id == body["id"]
    assert event.data == {
        "name": "ci deploys",
        "scopes": ["publish", "manage"],
        "resources": ["queue:orders"],
    }


def test_created_secret_authenticates_with_its_scopes(acme: TenantCtx) -> None:
    """The secret from the 201 is a working key carrying exactly the scopes and resources
    asked for."""
    body = post_json(acme.client, "/v1/keys", {"name": "reader", "scopes": ["consume"]}).json()

    principal = authenticate(f"Bearer {body['secret']}")
    assert principal.key_id == body["id"]
    assert principal.tenant_id == str(acme.tenant.id)
    assert principal.scopes == frozenset({"consume"})
    assert principal.resources == ()
    assert api_client(body["secret"]).get("/v1/tenant").status_code == 200


def test_create_with_expiry(acme: TenantCtx) -> None:
    """An expires_at in the future is stored and returned as RFC 3339 UTC."""
    response = post_json(
        acme.client,
        "/v1/keys",
        {"name": "temp", "scopes": ["publish"], "expires_at": "2999-01-02T03:04:05Z"},
    )

    assert response.status_code == 201
    assert response.json()["expires_at"] == "2999-01-02T03:04:05Z"
    key = ApiKey.objects.for_tenant(acme.tenant).get(pk=response.json()["id"])
    assert key.expires_at.isoformat() == "2999-01-02T03:04:05+00:00"


def test_secret_is_stored_nowhere(acme: TenantCtx, django_capture_on_commit_callbacks) -> None:
    """After creating and using a key, its secret appears in no row of any table and in no
    Redis value; only its SHA-256 hash is kept."""
    with django_capture_on_commit_callbacks(execute=True):
        body = post_json(acme.client, "/v1/keys", {"name": "leak check", "scopes": ["manage"]})
    token = body.json()["secret"]
    secret = secret_of(token)
    assert api_client(token).get(f"/v1/keys/{body.json()['id']}").status_code == 200

    assert secret not in str(list(ApiKey.all_tenants.values()))
    assert secret not in str(list(AuditEvent.all_tenants.values()))
    dump = database_dump()
    assert secret not in dump
    assert hashlib.sha256(secret.encode()).hexdigest() in dump
    assert secret not in redis_dump()
    assert redis_dump()  # the hot cache did store the key's document, just not its secret


def test_list_and_detail_never_show_secrets(acme: TenantCtx) -> None:
    """GET /v1/keys and GET /v1/keys/{id} return the key's fields but never a secret."""
    created = post_json(acme.client, "/v1/keys", {"name": "shown once", "scopes": ["publish"]})
    token = created.json()["secret"]

    listing = acme.client.get("/v1/keys")
    detail = acme.client.get(f"/v1/keys/{created.json()['id']}")

    assert listing.status_code == 200
    assert detail.status_code == 200
    for item in listing.json()["results"]:
        assert set(item) == KEY_FIELDS
    assert set(detail.json()) == KEY_FIELDS
    assert detail.json() == {k: v for k, v in created.json().items() if k != "secret"}
    for response in (listing, detail):
        assert secret_of(token).encode() not in response.content
        assert b"secret" not in response.content


# --- Listing ----------------------------------------------------------------------------------


def test_list_is_newest_first_and_paginated(acme: TenantCtx) -> None:
    """Keys come newest first; limit=1 pages through all of them with no repeats and a final
    next of null."""
    names = ["first", "second", "third"]
    for name in names:
        make_key(tenant=acme.tenant, name=name)

    seen: list[str] = []
    url = "/v1/keys?limit=1"
    pages = 0
    while True:
        page = acme.client.get(url).json()
        pages += 1
        assert len(page["results"]) == 1
        seen += [item["name"] for item in page["results"]]
        if page["next"] is None:
            break
        url = f"/v1/keys?limit=1&cursor={page['next']}"

    assert seen == ["third", "second", "first", "all"]
    assert pages == 4


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=201", "limit"), ("limit=ten", "limit"), ("cursor=@@", "cursor")],
)
def test_list_rejects_bad_paging(acme: TenantCtx, query: str, field: str) -> None:
    """A limit outside 1..200 or a cursor we did not issue is a 400 naming the parameter."""
    body = assert_problem(acme.client.get(f"/v1/keys?{query}"), 400, "invalid_request")

    assert [error["field"] for error in body["errors"]] == [field]


def test_list_shows_only_the_callers_keys(acme: TenantCtx, globex: TenantCtx) -> None:
    """Each tenant's listing holds its own keys and none of the other's."""
    acme_extra = make_key(tenant=acme.tenant, name="acme extra")
    globex_extra = make_key(tenant=globex.tenant, name="globex extra")

    acme_ids = {item["id"] for item in acme.client.get("/v1/keys").json()["results"]}
    globex_ids = {item["id"] for item in globex.client.get("/v1/keys").json()["results"]}

    assert acme_ids == {str(key_of(acme).id), str(acme_extra.key.id)}
    assert globex_ids == {str(key_of(globex).id), str(globex_extra.key.id)}


# --- Revocation -------------------------------------------------------------------------------


def test_revoke_refuses_the_key_and_audits(
    acme: TenantCtx, django_capture_on_commit_callbacks
) -> None:
    """DELETE /v1/keys/{id} answers the key with revoked_at set, writes one key.revoke audit
    event, and the key is refused from the next request on (it was cached before)."""
    victim = make_key(tenant=acme.tenant, name="to revoke")
    victim_client = api_client(victim.secret)
    assert victim_client.get("/v1/tenant").status_code == 200  # warm the hot cache
    before = timezone.now()

    with django_capture_on_commit_callbacks(execute=True):
        response = acme.client.delete(f"/v1/keys/{victim.key.id}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(victim.key.id)
    assert RFC3339_UTC.match(body["revoked_at"])
    victim.key.refresh_from_db()
    assert victim.key.revoked_at is not None
    assert before <= victim.key.revoked_at <= timezone.now()
    [event] = key_events(acme, "key.revoke")
    assert event.actor == f"key:{prefix_of(acme.key)}"
    assert event.target_type == "key"
    assert event.target_id == str(victim.key.id)
    assert event.data == {"name": "to revoke"}
    assert_problem(victim_client.get("/v1/tenant"), 401, "unauthenticated")
    assert acme.client.get("/v1/tenant").status_code == 200  # the caller's own key is fine


def test_revoking_twice_is_harmless(acme: TenantCtx, django_capture_on_commit_callbacks) -> None:
    """A second DELETE answers 200 with the same revoked_at and writes no second event."""
    victim = make_key(tenant=acme.tenant)
    with django_capture_on_commit_callbacks(execute=True):
        first = acme.client.delete(f"/v1/keys/{victim.key.id}")
    revoked_at = ApiKey.objects.for_tenant(acme.tenant).get(pk=victim.key.pk).revoked_at

    with django_capture_on_commit_callbacks(execute=True):
        second = acme.client.delete(f"/v1/keys/{victim.key.id}")

    assert second.status_code == 200
    assert second.json() == first.json()
    assert ApiKey.objects.for_tenant(acme.tenant).get(pk=victim.key.pk).revoked_at == revoked_at
    assert len(key_events(acme, "key.revoke")) == 1


def test_a_key_can_revoke_itself(acme: TenantCtx, django_capture_on_commit_callbacks) -> None:
    """The request that revokes its own key succeeds; the one after it is refused."""
    with django_capture_on_commit_callbacks(execute=True):
        response = acme.client.delete(f"/v1/keys/{key_of(acme).id}")

    assert response.status_code == 200
    assert_problem(acme.client.get("/v1/tenant"), 401, "unauthenticated")


@pytest.mark.parametrize("key_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_unknown_key_is_404(acme: TenantCtx, key_id: str) -> None:
    """A malformed or unknown id is a 404 for both GET and DELETE, and writes no event."""
    assert_problem(acme.client.get(f"/v1/keys/{key_id}"), 404, "not_found")
    assert_problem(acme.client.delete(f"/v1/keys/{key_id}"), 404, "not_found")
    assert key_events(acme, "key.revoke") == []


# --- Scopes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scopes", [["publish"], ["consume"], ["publish", "consume"]])
def test_keys_endpoints_need_manage(acme: TenantCtx, scopes: list[str]) -> None:
    """Without the manage scope a key can neither list, read, create nor revoke keys; each is
    a 403 and nothing is created or revoked."""
    client = api_client(make_key(tenant=acme.tenant, scopes=scopes))
    target = key_of(acme)
    keys_before = ApiKey.objects.for_tenant(acme.tenant).count()
    events_before = AuditEvent.objects.for_tenant(acme.tenant).count()

    created = post_json(client, "/v1/keys", {"name": "escalate", "scopes": ["manage"]})
    listed = client.get("/v1/keys")
    read = client.get(f"/v1/keys/{target.id}")
    revoked = client.delete(f"/v1/keys/{target.id}")

    for response in (created, listed, read, revoked):
        body = assert_problem(response, 403, "forbidden")
        assert body["detail"] == "This API key lacks the 'manage' scope."
    assert ApiKey.objects.for_tenant(acme.tenant).count() == keys_before
    assert AuditEvent.objects.for_tenant(acme.tenant).count() == events_before
    assert not ApiKey.objects.for_tenant(acme.tenant).filter(name="escalate").exists()
    target.refresh_from_db()
    assert target.revoked_at is None


def test_resource_limited_key_is_created(acme: TenantCtx) -> None:
    """resources ["queue:orders", "topic:events.*"] are stored and the new key covers just
    those names."""
    response = post_json(
        acme.client,
        "/v1/keys",
        {"name": "orders", "scopes": ["publish"], "resources": ["queue:orders", "topic:events.*"]},
    )

    assert response.status_code == 201
    assert response.json()["resources"] == ["queue:orders", "topic:events.*"]
    key = ApiKey.objects.for_tenant(acme.tenant).get(pk=response.json()["id"])
    assert key.resources == ["queue:orders", "topic:events.*"]
    principal = authenticate(f"Bearer {response.json()['secret']}")
    assert principal.may_access("queue", "orders")
    assert principal.may_access("topic", "events.signup")
    assert not principal.may_access("queue", "orders-dlq")
    assert not principal.may_access("topic", "orders")


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"name": "x", "scopes": ["admin"]}, ["scopes.0"]),
        ({"name": "x", "scopes": ["publish", "admin", "root"]}, ["scopes.1", "scopes.2"]),
        ({"name": "x", "scopes": []}, ["scopes"]),
        ({"name": "x", "scopes": "manage"}, ["scopes"]),
        ({"name": "x"}, ["scopes"]),
        ({"scopes": ["publish"]}, ["name"]),
        ({"name": "", "scopes": ["publish"]}, ["name"]),
        ({"name": "   ", "scopes": ["publish"]}, ["name"]),
        ({"name": "x" * 101, "scopes": ["publish"]}, ["name"]),
        ({"name": "x", "scopes": ["publish"], "resources": ["orders"]}, ["resources.0"]),
        ({"name": "x", "scopes": ["publish"], "resources": ["queue:"]}, ["resources.0"]),
        ({"name": "x", "scopes": ["publish"], "resources": ["bucket:orders"]}, ["resources.0"]),
        ({"name": "x", "scopes": ["publish"], "resources": ["queue:a b"]}, ["resources.0"]),
        (
            {"name": "x", "scopes": ["publish"], "resources": ["queue:ok", "queue:" + "a" * 129]},
            ["resources.1"],
        ),
        ({"name": "x", "scopes": ["publish"], "expires_at": "tomorrow"}, ["expires_at"]),
        (
            {"name": "x", "scopes": ["publish"], "expires_at": "2001-01-01T00:00:00Z"},
            ["expires_at"],
        ),
    ],
)
def test_invalid_key_requests_are_400_and_store_nothing(
    acme: TenantCtx, payload: dict, fields: list[str]
) -> None:
    """Unknown scopes, bad resource patterns, bad names and expiries are a 400 whose errors
    name the field; no key and no audit event are written."""
    keys_before = ApiKey.objects.for_tenant(acme.tenant).count()
    events_before = AuditEvent.objects.for_tenant(acme.tenant).count()

    body = assert_problem(post_json(acme.client, "/v1/keys", payload), 400, "invalid_request")

    assert [error["field"] for error in body["errors"]] == fields
    assert all(error["detail"] for error in body["errors"])
    assert ApiKey.objects.for_tenant(acme.tenant).count() == keys_before
    assert AuditEvent.objects.for_tenant(acme.tenant).count() == events_before


def test_key_quota(acme: TenantCtx) -> None:
    """Past the plan's max_api_keys a create is 403 quota_exceeded and stores nothing;
    revoked keys do not count."""
    make_plan(tenant=acme.tenant, max_api_keys=2)
    second = make_key(tenant=acme.tenant)  # make_tenant's key is the first

    refused = post_json(acme.client, "/v1/keys", {"name": "third", "scopes": ["publish"]})

    body = assert_problem(refused, 403, "quota_exceeded")
    assert body["detail"] == (
        "Quota max_api_keys reached: the plan allows 2 active API keys, and this tenant has 2."
    )
    assert ApiKey.objects.for_tenant(acme.tenant).count() == 2
    assert acme.client.delete(f"/v1/keys/{second.key.id}").status_code == 200
    assert (
        post_json(acme.client, "/v1/keys", {"name": "third", "scopes": ["publish"]}).status_code
        == 201
    )


# --- Tenant isolation -------------------------------------------------------------------------


def test_another_tenants_key_is_404_and_unchanged(
    acme: TenantCtx, globex: TenantCtx, django_capture_on_commit_callbacks
) -> None:
    """Globex's key cannot see or revoke Acme's key: both are 404 not_found (exactly as for a
    key that does not exist), and Acme's key stays unrevoked and working."""
    target = key_of(acme)
    events_before = AuditEvent.all_tenants.count()

    with django_capture_on_commit_callbacks(execute=True):
        read = globex.client.get(f"/v1/keys/{target.id}")
        revoked = globex.client.delete(f"/v1/keys/{target.id}")

    missing = globex.client.get("/v1/keys/00000000-0000-0000-0000-000000000000")
    for response in (read, revoked):
        assert_problem(response, 404, "not_found")
        assert response.content == missing.content
    target.refresh_from_db()
    assert target.revoked_at is None
    assert AuditEvent.all_tenants.count() == events_before
    assert acme.client.get("/v1/tenant").status_code == 200


# --- Minting and revoking are bounded by the caller -------------------------------------------


def everything(ctx: TenantCtx) -> tuple[list, int, str]:
    """What a refused key request must leave as it was: the tenant's key rows, its audit
    trail and every value in Redis (the hot cache included)."""
    rows = list(
        ApiKey.objects.for_tenant(ctx.tenant)
        .order_by("id")
        .values_list("id", "name", "scopes", "resources", "expires_at", "revoked_at")
    )
    return rows, AuditEvent.objects.for_tenant(ctx.tenant).count(), redis_dump()


def warm(*tokens: str) -> None:
    """Use each key once, so its hot-cache entry and last-used mark exist before a snapshot."""
    for token in tokens:
        assert api_client(token).get("/v1/tenant").status_code == 200


ORDERS_ONLY = {"scopes": ["manage"], "resources": ["queue:orders"]}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"scopes": ["publish", "consume", "manage"]}, "scopes"),
        ({"scopes": ["manage"]}, "resources"),
        ({"scopes": ["manage"], "resources": []}, "resources"),
        ({"scopes": ["manage"], "resources": ["queue:*"]}, "resources"),
        ({"scopes": ["manage"], "resources": ["queue:orders", "queue:payments"]}, "resources"),
        ({"scopes": ["manage"], "resources": ["topic:orders"]}, "resources"),
        ({"scopes": ["manage"], "resources": ["queue:orders*"]}, "resources"),
        ({"scopes": ["publish"], "resources": ["queue:orders"]}, "scopes"),
    ],
)
def test_a_limited_key_cannot_mint_beyond_itself(
    acme: TenantCtx, django_capture_on_commit_callbacks, payload: dict, field: str
) -> None:
    """A manage key limited to queue:orders asking for more scopes, no resource limit, or
    patterns outside queue:orders is 403 forbidden naming the field; no key row, no audit
    event and no hot-cache entry is written."""
    limited = make_key(tenant=acme.tenant, **ORDERS_ONLY)
    warm(limited.secret)
    before = everything(acme)

    with django_capture_on_commit_callbacks(execute=True):
        response = post_json(api_client(limited.secret), "/v1/keys", {"name": "wider", **payload})

    body = assert_problem(response, 403, "forbidden")
    assert [error["field"] for error in body["errors"]] == [field]
    assert everything(acme) == before


def test_a_limited_key_mints_within_itself(acme: TenantCtx) -> None:
    """The same key may create a key of its scopes (or fewer) on its own resources."""
    limited = make_key(
        tenant=acme.tenant, scopes=["publish", "manage"], resources=["queue:orders-*"]
    )

    response = post_json(
        api_client(limited.secret),
        "/v1/keys",
        {"name": "eu", "scopes": ["publish"], "resources": ["queue:orders-eu", "queue:orders-?"]},
    )

    assert response.status_code == 201, response.content
    assert response.json()["scopes"] == ["publish"]
    assert response.json()["resources"] == ["queue:orders-eu", "queue:orders-?"]
    [event] = key_events(acme, "key.create")[2:]
    assert event.actor == f"key:{limited.key.prefix}"


def test_a_tenant_wide_key_cannot_grant_a_scope_it_lacks(acme: TenantCtx) -> None:
    """A tenant-wide manage-only key may create manage keys (with any resources) but not
    publish keys: scopes are a subset, never more."""
    manager = make_key(tenant=acme.tenant, scopes=["manage"])
    client = api_client(manager.secret)
    warm(manager.secret)
    before = everything(acme)

    refused = post_json(client, "/v1/keys", {"name": "pub", "scopes": ["publish"]})

    body = assert_problem(refused, 403, "forbidden")
    assert (
        body["detail"] == "This API key cannot grant the scopes ['publish']; it holds ['manage']."
    )
    assert everything(acme) == before
    created = post_json(
        client, "/v1/keys", {"name": "m", "scopes": ["manage"], "resources": ["topic:*"]}
    )
    assert created.status_code == 201


def test_an_expiring_key_cannot_mint_a_longer_lived_one(acme: TenantCtx) -> None:
    """A key that expires creates keys that expire no later: none without expiry, none after
    it; one that expires sooner is fine."""
    temporary = make_key(
        tenant=acme.tenant, scopes=["manage"], expires_at=timezone.now() + timedelta(days=1)
    )
    client = api_client(temporary.secret)
    later = (timezone.now() + timedelta(days=2)).isoformat()
    sooner = (timezone.now() + timedelta(hours=1)).isoformat()
    warm(temporary.secret)
    before = everything(acme)

    for extra in ({}, {"expires_at": None}, {"expires_at": later}):
        response = post_json(client, "/v1/keys", {"name": "forever", "scopes": ["manage"], **extra})
        body = assert_problem(response, 403, "forbidden")
        assert [error["field"] for error in body["errors"]] == ["expires_at"]
    assert everything(acme) == before

    ok = post_json(client, "/v1/keys", {"name": "soon", "scopes": ["manage"], "expires_at": sooner})
    assert ok.status_code == 201


def test_a_limited_key_cannot_see_or_revoke_a_wider_key(
    acme: TenantCtx, django_capture_on_commit_callbacks
) -> None:
    """The tenant-wide key is invisible to a key limited to queue:orders: GET and DELETE are
    404 with the very body of a key that does not exist; the target is not revoked, no event
    is written, the hot cache is untouched and the target key keeps working."""
    limited = make_key(tenant=acme.tenant, **ORDERS_ONLY)
    target = key_of(acme)
    client = api_client(limited.secret)
    warm(limited.secret, acme.key)
    before = everything(acme)

    with django_capture_on_commit_callbacks(execute=True):
        read = client.get(f"/v1/keys/{target.id}")
        revoked = client.delete(f"/v1/keys/{target.id}")

    missing = client.get("/v1/keys/00000000-0000-0000-0000-000000000000")
    for response in (read, revoked):
        assert_problem(response, 404, "not_found")
        assert response.content == missing.content
    assert everything(acme) == before
    assert authenticate(f"Bearer {acme.key}").key_id == str(target.id)
    assert acme.client.get("/v1/keys").status_code == 200


def test_a_limited_key_lists_only_keys_within_it(acme: TenantCtx) -> None:
    """The listing of a limited key holds itself and keys within its authority, none wider
    (not the tenant-wide key, not one of another queue, not one with more scopes)."""
    limited = make_key(
        tenant=acme.tenant, scopes=["publish", "manage"], resources=["queue:orders*"]
    )
    narrower = make_key(
        tenant=acme.tenant, name="narrower", scopes=["publish"], resources=["queue:orders-eu"]
    )
    make_key(
        tenant=acme.tenant, name="other queue", scopes=["publish"], resources=["queue:payments"]
    )
    make_key(tenant=acme.tenant, name="more scopes", scopes=["consume"], resources=["queue:orders"])
    make_key(tenant=acme.tenant, name="tenant-wide publisher", scopes=["publish"])

    listing = api_client(limited.secret).get("/v1/keys?limit=1")
    names = []
    page = listing.json()
    while True:
        names += [item["name"] for item in page["results"]]
        if page["next"] is None:
            break
        page = api_client(limited.secret).get(f"/v1/keys?limit=1&cursor={page['next']}").json()

    assert names == [narrower.key.name, limited.key.name]
    everyone = {item["name"] for item in acme.client.get("/v1/keys").json()["results"]}
    assert len(everyone) == 6


def test_a_limited_key_revokes_keys_within_it_and_itself(
    acme: TenantCtx, django_capture_on_commit_callbacks
) -> None:
    """Within its authority a limited key revokes as usual: a key it made, then itself."""
    limited = make_key(tenant=acme.tenant, **ORDERS_ONLY)
    client = api_client(limited.secret)
    made = post_json(client, "/v1/keys", {"name": "child", **ORDERS_ONLY}).json()

    with django_capture_on_commit_callbacks(execute=True):
        child = client.delete(f"/v1/keys/{made['id']}")
    with django_capture_on_commit_callbacks(execute=True):
        itself = client.delete(f"/v1/keys/{limited.key.id}")

    assert child.status_code == 200
    assert itself.status_code == 200
    assert [e.target_id for e in key_events(acme, "key.revoke")] == [
        made["id"],
        str(limited.key.id),
    ]
    assert_problem(client.get("/v1/tenant"), 401, "unauthenticated")


# --- Console sessions on the API act with their role ------------------------------------------


def session_of(ctx: TenantCtx, role: Role) -> Client:
    return signed_in(
        make_member(tenant=ctx.tenant, email=f"{role}@{ctx.tenant.slug}.test", role=role)
    )


def test_a_developer_session_is_bounded_like_its_role(
    acme: TenantCtx, django_capture_on_commit_callbacks
) -> None:
    """A developer's console session may create publish/consume keys through the API, but not
    a manage key; the owner's all-scopes key is invisible to it (404), stays unrevoked and
    keeps working, and nothing is written by the refusals."""
    developer = session_of(acme, Role.DEVELOPER)
    target = key_of(acme)
    warm(acme.key)
    before = everything(acme)

    with django_capture_on_commit_callbacks(execute=True):
        minted = post_json(developer, "/v1/keys", {"name": "admin", "scopes": ["manage"]})
        revoked = developer.delete(f"/v1/keys/{target.id}")
    listed = developer.get("/v1/keys")

    assert [e["field"] for e in assert_problem(minted, 403, "forbidden")["errors"]] == ["scopes"]
    assert_problem(revoked, 404, "not_found")
    assert listed.json()["results"] == []
    assert everything(acme) == before
    assert authenticate(f"Bearer {acme.key}").key_id == str(target.id)
    ok = post_json(developer, "/v1/keys", {"name": "worker", "scopes": ["publish", "consume"]})
    assert ok.status_code == 201
    assert [item["name"] for item in developer.get("/v1/keys").json()["results"]] == ["worker"]


def test_an_admin_session_may_revoke_the_owners_key(
    acme: TenantCtx, django_capture_on_commit_callbacks
) -> None:
    """Admins hold every scope tenant-wide, like owners: the owner's key is theirs to revoke."""
    admin = session_of(acme, Role.ADMIN)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.delete(f"/v1/keys/{key_of(acme).id}")
    assert response.status_code == 200
    assert_problem(acme.client.get("/v1/tenant"), 401, "unauthenticated")


# --- The request body and the list parameters -------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "fields"),
    [
        ({"tenant": "globex"}, ["tenant"]),
        ({"secret": "op_x_y", "prefix": "abc"}, ["prefix", "secret"]),
        ({"scope": ["publish"]}, ["scope"]),
    ],
)
def test_unknown_fields_are_400_and_store_nothing(
    acme: TenantCtx, extra: dict, fields: list[str]
) -> None:
    """A field POST /v1/keys does not know is a 400 naming it (a typo such as "scope" would
    otherwise be dropped silently); nothing is stored."""
    warm(acme.key)
    before = everything(acme)

    response = post_json(acme.client, "/v1/keys", {"name": "x", "scopes": ["publish"], **extra})

    body = assert_problem(response, 400, "invalid_request")
    assert [error["field"] for error in body["errors"]] == fields
    assert {error["detail"] for error in body["errors"]} == {"Unknown field."}
    assert everything(acme) == before


@pytest.mark.parametrize("value", ["", "0", "201", "-1"])
def test_list_limit_must_be_1_to_200(acme: TenantCtx, value: str) -> None:
    """An empty, zero, negative or too large limit is a 400 naming limit."""
    body = assert_problem(acme.client.get(f"/v1/keys?limit={value}"), 400, "invalid_request")
    assert [error["field"] for error in body["errors"]] == ["limit"]
