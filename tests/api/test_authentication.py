"""Every way an API key can fail to authenticate is a 401 problem with code "unauthenticated"
and a WWW-Authenticate challenge, and none of them reaches the handler."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from kernel.hotcache import forget_all_local
from tenants.models import ApiKey, AuditEvent, Role
from tenants.principals import key_cache, key_document, tenant_cache, tenant_document
from tests.factories import TenantCtx, api_client, make_key, make_member, make_user, signed_in
from tests.helpers import assert_problem, key_of, post_json, prefix_of, secret_of

pytestmark = pytest.mark.django_db

CHALLENGE = 'Bearer realm="openplatform"'


def assert_unauthenticated(response, detail: str) -> None:
    body = assert_problem(response, 401, "unauthenticated")
    assert body["detail"] == detail
    assert response["WWW-Authenticate"] == CHALLENGE


def test_the_right_key_authenticates(acme: TenantCtx) -> None:
    """The control case: the same request with a valid key is answered 200 with no challenge."""
    response = acme.client.get("/v1/tenant")

    assert response.status_code == 200
    assert response.json()["slug"] == "acme"
    assert "WWW-Authenticate" not in response


def test_missing_authorization_header_is_401(acme: TenantCtx) -> None:
    """No Authorization header at all (and no console session) is refused."""
    response = Client().get("/v1/tenant")

    assert_unauthenticated(
        response, "Send the API key as 'Authorization: Bearer op_<prefix>_<secret>'."
    )


def test_empty_authorization_header_is_401(acme: TenantCtx) -> None:
    """An empty header is the same as none."""
    response = Client(HTTP_AUTHORIZATION="").get("/v1/tenant")

    assert_unauthenticated(
        response, "Send the API key as 'Authorization: Bearer op_<prefix>_<secret>'."
    )


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Token {key}", "{key}", "Bearer", "Bearer ", "Bearer    "],
    ids=["basic", "token-scheme", "no-scheme", "bearer-alone", "bearer-space", "bearer-blank"],
)
def test_malformed_authorization_header_is_401(acme: TenantCtx, header: str) -> None:
    """A scheme other than Bearer, or Bearer with nothing after it, is refused, even when the
    key itself is valid."""
    response = Client(HTTP_AUTHORIZATION=header.format(key=acme.key)).get("/v1/tenant")

    assert_unauthenticated(response, "Malformed Authorization header: expected 'Bearer <api key>'.")


@pytest.mark.parametrize(
    "token",
    [
        "not-a-key",
        "op_",
        "op_abcdefghij",
        "op_abcdefghij_",
        "op_short_secretsecret",
        "op_abcdefghijk_secret",
        "xx_abcdefghij_secret",
        "OP_abcdefghij_secret",
    ],
)
def test_malformed_key_is_401(acme: TenantCtx, token: str) -> None:
    """A token that is not op_<10-character prefix>_<non-empty secret> is refused before any
    lookup."""
    response = api_client(token).get("/v1/tenant")

    assert_unauthenticated(response, "Malformed API key: expected op_<prefix>_<secret>.")


def test_unknown_prefix_is_401(acme: TenantCtx) -> None:
    """A well-formed key whose prefix matches no key is refused."""
    response = api_client(f"op_zzzzzzzzzz_{secret_of(acme.key)}").get("/v1/tenant")

    assert_unauthenticated(response, "Unknown API key.")


def test_right_prefix_wrong_secret_is_401_and_indistinguishable_from_unknown(
    acme: TenantCtx,
) -> None:
    """A real prefix with a wrong secret gets exactly the answer an unknown prefix gets, so a
    caller cannot learn which prefixes exist."""
    wrong = f"op_{prefix_of(acme.key)}_{'x' * 40}"

    response = api_client(wrong).get("/v1/tenant")

    assert_unauthenticated(response, "Unknown API key.")
    unknown = api_client(f"op_zzzzzzzzzz_{'x' * 40}").get("/v1/tenant")
    assert response.content == unknown.content


def test_secret_is_checked_in_full(acme: TenantCtx) -> None:
    """A prefix of the right secret, or the secret with a character appended, is refused."""
    prefix, secret = prefix_of(acme.key), secret_of(acme.key)

    for token in (f"op_{prefix}_{secret[:-1]}", f"op_{prefix}_{secret}x"):
        assert_unauthenticated(api_client(token).get("/v1/tenant"), "Unknown API key.")


def test_expired_key_is_401(acme: TenantCtx) -> None:
    """A key whose expires_at has passed is refused, even though it worked before."""
    created = make_key(tenant=acme.tenant, expires_at=timezone.now() + timedelta(days=1))
    client = api_client(created.secret)
    assert client.get("/v1/tenant").status_code == 200
    ApiKey.all_tenants.filter(pk=created.key.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    expired = ApiKey.all_tenants.get(pk=created.key.pk)
    forget_all_local()
    key_cache.push(expired.prefix, key_document(expired))

    response = client.get("/v1/tenant")

    assert_unauthenticated(response, "This API key has expired.")


def test_key_expiring_in_the_future_authenticates(acme: TenantCtx) -> None:
    """An expiry still ahead does not refuse the key."""
    created = make_key(tenant=acme.tenant, expires_at=timezone.now() + timedelta(minutes=5))

    assert api_client(created.secret).get("/v1/tenant").status_code == 200


def test_revoked_key_is_401(acme: TenantCtx, django_capture_on_commit_callbacks) -> None:
    """A revoked key is refused with a message saying so."""
    created = make_key(tenant=acme.tenant)
    client = api_client(created.secret)
    assert client.get("/v1/tenant").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = acme.client.delete(f"/v1/keys/{created.key.id}")
    assert response.status_code == 200

    assert_unauthenticated(client.get("/v1/tenant"), "This API key has been revoked.")


def test_revoked_key_with_wrong_secret_does_not_reveal_revocation(
    acme: TenantCtx, django_capture_on_commit_callbacks
) -> None:
    """Only the holder of the secret learns that a key was revoked; anyone else sees an
    unknown key."""
    created = make_key(tenant=acme.tenant)
    with django_capture_on_commit_callbacks(execute=True):
        acme.client.delete(f"/v1/keys/{created.key.id}")

    response = api_client(f"op_{created.key.prefix}_{'x' * 40}").get("/v1/tenant")

    assert_unauthenticated(response, "Unknown API key.")


def test_inactive_tenant_key_is_401(acme: TenantCtx) -> None:
    """A key of a deactivated tenant is refused once the change reaches the cache."""
    assert acme.client.get("/v1/tenant").status_code == 200
    acme.tenant.is_active = False
    acme.tenant.save(update_fields=["is_active"])
    tenant_cache.push(str(acme.tenant.id), tenant_document(acme.tenant))

    assert_unauthenticated(acme.client.get("/v1/tenant"), "This API key's tenant is not active.")


def test_refused_write_changes_nothing(acme: TenantCtx) -> None:
    """A POST with a bad key creates no key and records no audit event."""
    keys = ApiKey.objects.for_tenant(acme.tenant).count()
    events = AuditEvent.objects.for_tenant(acme.tenant).count()

    response = api_client(f"op_{prefix_of(acme.key)}_{'x' * 40}").post(
        "/v1/keys", data={"name": "sneaky", "scopes": ["manage"]}, content_type="application/json"
    )

    assert_unauthenticated(response, "Unknown API key.")
    assert ApiKey.objects.for_tenant(acme.tenant).count() == keys
    assert AuditEvent.objects.for_tenant(acme.tenant).count() == events
    assert key_of(acme).revoked_at is None


# --- Console sessions -------------------------------------------------------------------------


def session_client(ctx: TenantCtx, role: Role, *, csrf: bool = False) -> Client:
    """A logged-in console user of ctx's tenant with this role."""
    email = f"{role.value}.console@{ctx.tenant.slug}.test"
    return signed_in(
        make_member(tenant=ctx.tenant, email=email, role=role), enforce_csrf_checks=csrf
    )


def test_console_session_acts_for_its_tenant(acme: TenantCtx, globex: TenantCtx) -> None:
    """A logged-in member reads their tenant with no API key, and creating a key through the
    session is audited as the user."""
    client = session_client(acme, Role.DEVELOPER)

    assert client.get("/v1/tenant").json()["id"] == str(acme.tenant.id)
    response = post_json(client, "/v1/keys", {"name": "from console", "scopes": ["publish"]})
    assert response.status_code == 201
    event = AuditEvent.objects.for_tenant(acme.tenant).get(target_id=response.json()["id"])
    assert event.actor == "user:developer.console@acme.test"
    assert not AuditEvent.objects.for_tenant(globex.tenant).filter(actor__startswith="user:")


def test_console_viewer_reads_but_cannot_manage(acme: TenantCtx) -> None:
    """A viewer holds no scope: reading the tenant works, creating a key is 403 and stores
    nothing."""
    client = session_client(acme, Role.VIEWER)
    keys = ApiKey.objects.for_tenant(acme.tenant).count()

    assert client.get("/v1/tenant").status_code == 200
    response = post_json(client, "/v1/keys", {"name": "nope", "scopes": ["publish"]})

    assert_problem(response, 403, "forbidden")
    assert ApiKey.objects.for_tenant(acme.tenant).count() == keys


def test_console_write_without_csrf_token_is_403(acme: TenantCtx) -> None:
    """A session-authenticated write must carry the CSRF token; without it nothing happens."""
    client = session_client(acme, Role.OWNER, csrf=True)
    keys = ApiKey.objects.for_tenant(acme.tenant).count()

    response = post_json(client, "/v1/keys", {"name": "csrf", "scopes": ["publish"]})

    body = assert_problem(response, 403, "forbidden")
    assert body["detail"].startswith("CSRF Failed")
    assert ApiKey.objects.for_tenant(acme.tenant).count() == keys


def test_user_without_tenant_is_401(db: None) -> None:
    client = signed_in(make_user(email="lonely@example.test"))

    assert_unauthenticated(client.get("/v1/tenant"), "This user belongs to no tenant.")
