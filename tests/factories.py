"""Factories: the tenants, people, keys, plans, queues, topics and subscriptions tests need,
and the clients that act as them.

Each factory takes keyword arguments with defaults and returns what it made. Rows are made by
the services a real caller goes through (``tenants.services``, ``queues.services``), so they
come with their audit events, quota checks and Redis structures; only users, memberships and
plans, which no service makes, are written with the ORM. A client that sends an API key is
made by :func:`api_client` (or :func:`async_api_client`), and the header itself by
:func:`api_headers` for clients of other kinds (httpx on the ASGI app).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.test import AsyncClient, Client
from django.utils.text import slugify

from queues import services as queue_services
from queues.models import Queue, Subscription, Topic
from tenants import services as tenant_services
from tenants.authority import OPERATOR, Authority
from tenants.models import ALL_SCOPES, Membership, Plan, Role, Tenant, User
from tenants.services import KeyCreated

#: Every user a factory makes has this console password unless told otherwise.
PASSWORD = "correct-horse-battery-7"
ACTOR = "test"

# --- tenants and people ----------------------------------------------------------------------


@dataclass
class TenantCtx:
    """A tenant, its owner, an all-scopes key (the token) and a client that sends it."""

    tenant: Tenant
    owner: User
    key: str
    client: Client


def make_tenant(
    *,
    name: str = "Acme",
    owner_email: str | None = None,
    owner_password: str | None = None,
    plan: Plan | None = None,
) -> TenantCtx:
    """A tenant made by ``tenant_create`` (owner ``owner@<slug>.test`` unless told otherwise,
    with an unusable password unless one is given) and its first key: "all", all scopes."""
    created = tenant_services.tenant_create(
        name=name,
        owner_email=owner_email or f"owner@{slugify(name)}.test",
        owner_password=owner_password,
        plan=plan,
    )
    key = make_key(tenant=created.tenant, name="all")
    return TenantCtx(
        tenant=created.tenant, owner=created.owner, key=key.secret, client=api_client(key)
    )


def make_user(*, email: str = "user@example.test", password: str = PASSWORD, **extra: Any) -> User:
    """A console user (``extra``: ``is_staff`` and the like) who belongs to no tenant."""
    return User.objects.create_user(email, password, **extra)


def make_membership(*, tenant: Tenant, user: User, role: Role = Role.DEVELOPER) -> Membership:
    return Membership.all_tenants.create(tenant=tenant, user=user, role=role)


def make_member(
    *,
    tenant: Tenant,
    email: str = "member@example.test",
    role: Role = Role.DEVELOPER,
    password: str = PASSWORD,
) -> User:
    """A user with ``role`` in ``tenant``: a new one with ``password``, or the existing user
    of that email, who joins ``tenant`` too."""
    user = User.objects.filter(email=email).first() or make_user(email=email, password=password)
    make_membership(tenant=tenant, user=user, role=role)
    return user


def make_plan(
    *, slug: str = "tiny", name: str = "Tiny", tenant: Tenant | None = None, **limits: Any
) -> Plan:
    """A plan with ``limits`` (Plan's fields: max_queues, publish_rate_per_second, ...);
    with ``tenant``, that tenant is moved onto it."""
    plan = Plan.objects.create(slug=slug, name=name, **limits)
    if tenant is not None:
        tenant.plan = plan
        tenant.save(update_fields=["plan"])
    return plan


# --- keys and clients ------------------------------------------------------------------------


def make_key(
    *,
    tenant: Tenant,
    name: str = "limited",
    scopes: list[str] | None = None,
    resources: list[str] | None = None,
    expires_at: datetime | None = None,
    authority: Authority = OPERATOR,
    actor: str = ACTOR,
) -> KeyCreated:
    """A key of ``tenant`` made by ``key_create`` with ``authority`` (an operator's unless
    told otherwise): all scopes and every resource unless told otherwise."""
    return tenant_services.key_create(
        authority=authority,
        tenant=tenant,
        name=name,
        scopes=list(ALL_SCOPES) if scopes is None else scopes,
        resources=resources or [],
        expires_at=expires_at,
        actor=actor,
    )


def api_headers(key: KeyCreated | str) -> dict[str, str]:
    """The header that sends ``key`` (a made key or a token) to the API."""
    token = key.secret if isinstance(key, KeyCreated) else key
    return {"Authorization": f"Bearer {token}"}


def api_client(key: KeyCreated | str, **options: Any) -> Client:
    """A test client that sends ``key`` with every request (``options``: Client's, such as
    REMOTE_ADDR)."""
    return Client(headers=api_headers(key), **options)


class _KeyAsyncClient(AsyncClient):
    # AsyncClient turns ``headers=`` given to its constructor into WSGI-style names, which
    # an ASGI request's headers never see; so the header goes with every request instead.
    def __init__(self, key: KeyCreated | str) -> None:
        super().__init__()
        self.key_headers = api_headers(key)

    async def post(  # type: ignore[override]
        self, path: str, data: Any = None, content_type: str = "application/json", **extra: Any
    ) -> Any:
        return await super().post(
            path, data=data, content_type=content_type, headers=self.key_headers, **extra
        )


def async_api_client(key: KeyCreated | str) -> AsyncClient:
    """An async test client whose POSTs (JSON by default) send ``key``."""
    return _KeyAsyncClient(key)


def signed_in(user: User, **options: Any) -> Client:
    """A test client with a console session of ``user`` (``options``: Client's, such as
    enforce_csrf_checks)."""
    client = Client(**options)
    client.force_login(user)
    return client


# --- queues, topics, subscriptions -----------------------------------------------------------


def make_queue(*, tenant: Tenant, name: str = "orders", **options: Any) -> Queue:
    """A queue made by ``queue_create`` (``options``: its settings, such as
    visibility_timeout or dead_letter_queue)."""
    return queue_services.queue_create(tenant=tenant, actor=ACTOR, name=name, **options)


def make_topic(*, tenant: Tenant, name: str = "events", **options: Any) -> Topic:
    """A topic made by ``topic_create`` (``options``: partitions, retention_seconds)."""
    return queue_services.topic_create(tenant=tenant, actor=ACTOR, name=name, **options)


def make_subscription(
    *, tenant: Tenant, name: str = "audit", topic: str = "events", **options: Any
) -> Subscription:
    """A subscription of the existing topic named ``topic``, made by
    ``subscription_create`` (``options``: its settings, such as filter or start_at)."""
    return queue_services.subscription_create(
        tenant=tenant, actor=ACTOR, name=name, topic=topic, **options
    )
