"""The tenant and key services: validation that stores nothing, audit records in the same
transaction, and hot-cache pushes only after commit."""

from __future__ import annotations

import re
from datetime import timedelta

import orjson
import pytest
from django.utils import timezone

from kernel.errors import Conflict, Forbidden, InvalidRequest, NotFound
from kernel.redis_client import get_redis
from tenants import services
from tenants.authority import OPERATOR, Authority
from tenants.models import (
    ALL_SCOPES,
    ApiKey,
    AuditEvent,
    Membership,
    Role,
    Tenant,
    TenantScopeError,
    User,
)
from tenants.principals import authenticate
from tests.factories import TenantCtx, make_key
from tests.helpers import key_of

pytestmark = pytest.mark.django_db


def counts() -> tuple[int, int, int, int]:
    return (
        Tenant.objects.count(),
        User.objects.count(),
        ApiKey.all_tenants.count(),
        AuditEvent.all_tenants.count(),
    )


# --- tenant_create ----------------------------------------------------------------------------


def test_tenant_create_makes_tenant_owner_and_audit() -> None:
    """A new tenant gets the developer plan, its owner (a new user with an unusable password)
    as OWNER, and a tenant.create audit event."""
    created = services.tenant_create(name="Initech Corp", owner_email=" Boss@Initech.TEST ")

    assert created.tenant.slug == "initech-corp"
    assert created.tenant.plan.slug == "developer"
    assert created.owner.email == "boss@initech.test"
    assert not created.owner.has_usable_password()
    assert created.membership.role == Role.OWNER
    [event] = AuditEvent.objects.for_tenant(created.tenant)
    assert (event.actor, event.action, event.target_type, event.target_id) == (
        "operator",
        "tenant.create",
        "tenant",
        str(created.tenant.id),
    )
    assert event.data == {"name": "Initech Corp", "owner": "boss@initech.test"}


def test_tenant_create_existing_user_joins_as_owner(acme: TenantCtx) -> None:
    """An existing user becomes the owner of the new tenant too; no second user is made."""
    users = User.objects.count()

    created = services.tenant_create(name="Acme Labs", owner_email="owner@acme.test")

    assert User.objects.count() == users
    assert created.owner.email == "owner@acme.test"
    assert Membership.all_tenants.filter(user=created.owner).count() == 2


def test_tenant_create_taken_slug_is_conflict_and_stores_nothing(acme: TenantCtx) -> None:
    before = counts()

    with pytest.raises(Conflict, match=re.escape("A tenant 'acme' already exists.")):
        services.tenant_create(name="ACME", owner_email="someone@else.test")

    assert counts() == before
    assert not User.objects.filter(email="someone@else.test").exists()


def test_tenant_create_needs_a_letter_or_digit() -> None:
    with pytest.raises(InvalidRequest):
        services.tenant_create(name="!!!", owner_email="a@b.test")

    assert counts() == (0, 0, 0, 0)


def test_tenant_owned_models_fail_closed(acme: TenantCtx) -> None:
    """A query that forgot its tenant raises instead of reading every tenant's rows."""
    with pytest.raises(TenantScopeError):
        list(ApiKey.objects.all())
    with pytest.raises(TenantScopeError):
        AuditEvent.objects.count()


# --- key_create -------------------------------------------------------------------------------


def test_key_create_normalizes_scopes_and_resources(acme: TenantCtx) -> None:
    """Scopes are stored once each in canonical order; repeated resources once, in order."""
    created = make_key(
        tenant=acme.tenant,
        name="  padded  ",
        scopes=["manage", "publish", "manage"],
        resources=["topic:b", "queue:a", "topic:b"],
    )

    assert created.key.name == "padded"
    assert created.key.scopes == ["publish", "manage"]
    assert created.key.resources == ["topic:b", "queue:a"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"scopes": []}, "scopes"),
        ({"scopes": ["publish", "superuser"]}, "scopes"),
        ({"resources": ["queue"]}, "resources"),
        ({"resources": ["table:users"]}, "resources"),
        ({"resources": ["queue:a/b"]}, "resources"),
        ({"name": ""}, "name"),
        ({"name": "n" * 101}, "name"),
        ({"expires_at": "past"}, "expires_at"),
    ],
)
def test_key_create_rejects_and_stores_nothing(acme: TenantCtx, options: dict, field: str) -> None:
    """Invalid input raises InvalidRequest naming the field; no key, no audit event, nothing
    queued for the hot cache."""
    if options.get("expires_at") == "past":
        options["expires_at"] = timezone.now() - timedelta(seconds=1)
    arguments = {"name": "k", "scopes": ["publish"], **options}
    before = counts()

    with pytest.raises(InvalidRequest) as raised:
        services.key_create(authority=OPERATOR, tenant=acme.tenant, actor="test", **arguments)

    assert [error["field"] for error in raised.value.errors] == [field]
    assert counts() == before
    assert get_redis().keys("op:cache:apikey:*") == []


def test_key_create_pushes_to_the_hot_cache_only_on_commit(
    acme: TenantCtx, django_capture_on_commit_callbacks
) -> None:
    """Until the transaction commits, Redis knows nothing of the new key; on commit it holds
    the key's document with the hash and never the secret."""
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        created = make_key(tenant=acme.tenant, scopes=["publish"], resources=["queue:orders"])
    cache_key = f"op:cache:apikey:{created.key.prefix}"
    assert get_redis().get(cache_key) is None

    for callback in callbacks:
        callback()

    assert orjson.loads(get_redis().get(cache_key)) == {
        "id": str(created.key.id),
        "tenant_id": str(acme.tenant.id),
        "prefix": created.key.prefix,
        "hash": created.key.secret_hash,
        "scopes": ["publish"],
        "resources": ["queue:orders"],
        "expires_at": None,
        "revoked": False,
        "limits": {
            "publish_rate_per_second": None,
            "consume_rate_per_second": None,
            "monthly_messages": None,
        },
    }


# --- key_revoke -------------------------------------------------------------------------------


def test_key_revoke_sets_revoked_at_once(
    acme: TenantCtx, django_capture_on_commit_callbacks
) -> None:
    """Revoking sets revoked_at and writes key.revoke; a second revoke returns the same time
    and writes nothing more. Both push the revoked document to Redis."""
    victim = make_key(tenant=acme.tenant, name="victim")

    with django_capture_on_commit_callbacks(execute=True):
        first = services.key_revoke(
            authority=OPERATOR, tenant=acme.tenant, key_id=str(victim.key.id), actor="op"
        )
    with django_capture_on_commit_callbacks(execute=True):
        second = services.key_revoke(
            authority=OPERATOR, tenant=acme.tenant, key_id=str(victim.key.id), actor="op"
        )

    assert first.revoked_at is not None
    assert second.revoked_at == first.revoked_at
    events = AuditEvent.objects.for_tenant(acme.tenant).filter(action="key.revoke")
    assert [(e.actor, e.target_id, e.data) for e in events] == [
        ("op", str(victim.key.id), {"name": "victim"})
    ]
    cached = orjson.loads(get_redis().get(f"op:cache:apikey:{victim.key.prefix}"))
    assert cached["revoked"] is True


def test_key_revoke_of_another_tenants_key_is_not_found(acme: TenantCtx, globex: TenantCtx) -> None:
    """The tenant argument scopes the lookup: another tenant's key is NotFound and stays."""
    target = key_of(acme)

    with pytest.raises(NotFound):
        services.key_revoke(
            authority=OPERATOR, tenant=globex.tenant, key_id=str(target.id), actor="test"
        )

    target.refresh_from_db()
    assert target.revoked_at is None
    assert not AuditEvent.all_tenants.filter(action="key.revoke").exists()


# --- the caller's authority -------------------------------------------------------------------


ORDERS_KEY = Authority(scopes=frozenset({"manage"}), resources=("queue:orders",))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"scopes": ["publish", "consume", "manage"], "resources": ["queue:orders"]}, "scopes"),
        ({"scopes": ["manage"], "resources": []}, "resources"),
        ({"scopes": ["manage"], "resources": ["queue:*"]}, "resources"),
    ],
)
def test_key_create_beyond_the_callers_authority_stores_nothing(
    acme: TenantCtx, django_capture_on_commit_callbacks, options: dict, field: str
) -> None:
    """A key beyond the caller's authority raises Forbidden naming the field; no key, no
    audit event, nothing pushed to the hot cache even once the transaction is over."""
    before = counts()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(Forbidden) as raised,
    ):
        services.key_create(
            tenant=acme.tenant, name="k", actor="test", authority=ORDERS_KEY, **options
        )

    assert [error["field"] for error in raised.value.errors] == [field]
    assert callbacks == []
    assert counts() == before
    assert get_redis().keys("op:cache:apikey:*") == []


def test_key_create_within_the_callers_authority(acme: TenantCtx) -> None:
    created = services.key_create(
        tenant=acme.tenant,
        name="k",
        scopes=["manage"],
        resources=["queue:orders"],
        actor="test",
        authority=ORDERS_KEY,
    )
    assert (created.key.scopes, created.key.resources) == (["manage"], ["queue:orders"])


def test_key_revoke_beyond_the_callers_authority_is_not_found(
    acme: TenantCtx, django_capture_on_commit_callbacks
) -> None:
    """Revoking a key the caller does not cover is NotFound, as for a missing key: the key
    stays unrevoked, no event is written and its cached document is unchanged."""
    target = key_of(acme)
    authenticate(f"Bearer {acme.key}")  # fills the hot cache
    cache_key = f"op:cache:apikey:{target.prefix}"
    cached = get_redis().get(cache_key)
    assert cached is not None
    before = counts()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(NotFound, match=r"^No such API key\.$"),
    ):
        services.key_revoke(
            tenant=acme.tenant, key_id=str(target.id), actor="test", authority=ORDERS_KEY
        )

    assert callbacks == []
    target.refresh_from_db()
    assert target.revoked_at is None
    assert counts() == before
    assert get_redis().get(cache_key) == cached
    assert authenticate(f"Bearer {acme.key}").key_id == str(target.id)


def test_operators_are_bounded_by_nothing(acme: TenantCtx) -> None:
    """The default authority is OPERATOR: manage.py and the admin mint and revoke anything."""
    created = services.key_create(
        authority=OPERATOR,
        tenant=acme.tenant,
        name="root",
        scopes=list(ALL_SCOPES),
        actor="operator:cli",
    )
    revoked = services.key_revoke(
        tenant=acme.tenant, key_id=str(created.key.id), actor="operator:cli", authority=OPERATOR
    )
    assert revoked.revoked_at is not None
