"""Operators' quota overrides: tenants.services.tenant_quotas_set (validated, audited with
before and after, pushed to the hot cache on commit) and ./dev manage tenant_quotas."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from kernel.errors import InvalidRequest
from kernel.redis_client import get_redis
from tenants import services
from tenants.models import AuditEvent, Tenant
from tenants.principals import tenant_document
from tenants.quotas import QUOTAS, effective_quotas
from tests.factories import TenantCtx, make_plan

pytestmark = pytest.mark.django_db


def cached_tenant(ctx: TenantCtx) -> Any:
    raw = get_redis().get(f"op:cache:tenant:{ctx.tenant.id}")
    return None if raw is None else orjson.loads(raw)


def quota_events(ctx: TenantCtx) -> list[tuple[str, str, str, dict[str, Any]]]:
    return list(
        AuditEvent.objects.for_tenant(ctx.tenant)
        .filter(action="tenant.quotas_set")
        .order_by("id")
        .values_list("actor", "target_type", "target_id", "data")
    )


def fresh(ctx: TenantCtx) -> Tenant:
    return Tenant.objects.select_related("plan").get(pk=ctx.tenant.pk)


# --- the service ------------------------------------------------------------------------------


def test_set_saves_audits_and_pushes_on_commit(
    acme: TenantCtx, django_capture_on_commit_callbacks: Any
) -> None:
    """The overrides are stored, the change is audited with before and after, and the
    tenant's hot-cache document is replaced only once the transaction commits."""
    get_redis().delete(f"op:cache:tenant:{acme.tenant.id}")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        saved = services.tenant_quotas_set(
            tenant=acme.tenant,
            actor="operator:alice",
            overrides={"max_queues": 50, "monthly_messages": None},
        )
    assert cached_tenant(acme) is None  # nothing before the commit
    for callback in callbacks:
        callback()

    assert saved.quota_overrides == {"max_queues": 50, "monthly_messages": None}
    assert fresh(acme).quota_overrides == {"max_queues": 50, "monthly_messages": None}
    assert quota_events(acme) == [
        (
            "operator:alice",
            "tenant",
            str(acme.tenant.id),
            {"before": {}, "after": {"max_queues": 50, "monthly_messages": None}},
        )
    ]
    assert cached_tenant(acme) == orjson.loads(orjson.dumps(tenant_document(fresh(acme))))
    limits = effective_quotas(fresh(acme))
    assert (limits["max_queues"].value, limits["max_queues"].source) == (50, "tenant")
    assert (limits["max_topics"].value, limits["max_topics"].source) == (1000, "plan")


def test_set_replaces_the_whole_set(acme: TenantCtx) -> None:
    """A quota left out of the new set follows the plan again."""
    make_plan(tenant=acme.tenant, max_topics=7)
    services.tenant_quotas_set(
        tenant=acme.tenant, actor="op", overrides={"max_queues": 5, "max_topics": 9}
    )

    services.tenant_quotas_set(tenant=acme.tenant, actor="op", overrides={"max_queues": 6})

    assert fresh(acme).quota_overrides == {"max_queues": 6}
    limits = effective_quotas(fresh(acme))
    assert (limits["max_topics"].value, limits["max_topics"].source) == (7, "plan")
    assert [event[3] for event in quota_events(acme)] == [
        {"before": {}, "after": {"max_queues": 5, "max_topics": 9}},
        {"before": {"max_queues": 5, "max_topics": 9}, "after": {"max_queues": 6}},
    ]


def test_setting_the_same_overrides_changes_nothing(acme: TenantCtx) -> None:
    services.tenant_quotas_set(tenant=acme.tenant, actor="op", overrides={"max_queues": 5})

    services.tenant_quotas_set(tenant=acme.tenant, actor="op", overrides={"max_queues": 5})

    assert len(quota_events(acme)) == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_queues": 5, "max_queue": 3}, "max_queue"),
        ({"max_queues": -1}, "max_queues"),
        ({"max_topics": True}, "max_topics"),
        ({"monthly_messages": "1000"}, "monthly_messages"),
        ({"publish_rate_per_second": 1.5}, "publish_rate_per_second"),
    ],
)
def test_bad_overrides_are_refused_and_change_nothing(
    acme: TenantCtx, globex: TenantCtx, overrides: dict[str, Any], field: str
) -> None:
    services.tenant_quotas_set(tenant=acme.tenant, actor="op", overrides={"max_queues": 2})
    cached = cached_tenant(acme)

    with pytest.raises(InvalidRequest) as refused:
        services.tenant_quotas_set(tenant=acme.tenant, actor="op", overrides=overrides)

    assert refused.value.status == 400
    assert refused.value.errors is not None
    assert [error["field"] for error in refused.value.errors] == [field]
    assert refused.value.detail.startswith(f"{field}: ")
    assert fresh(acme).quota_overrides == {"max_queues": 2}
    assert len(quota_events(acme)) == 1
    assert cached_tenant(acme) == cached
    assert Tenant.objects.get(pk=globex.tenant.pk).quota_overrides == {}


def test_another_tenant_is_unaffected(acme: TenantCtx, globex: TenantCtx) -> None:
    globex_doc = cached_tenant(globex)

    services.tenant_quotas_set(tenant=acme.tenant, actor="op", overrides={"max_queues": 1})

    assert Tenant.objects.get(pk=globex.tenant.pk).quota_overrides == {}
    assert not AuditEvent.objects.for_tenant(globex.tenant).filter(action="tenant.quotas_set")
    assert cached_tenant(globex) == globex_doc
    assert effective_quotas(Tenant.objects.get(pk=globex.tenant.pk))["max_queues"].value == 1000


# --- the management command -------------------------------------------------------------------


def run(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command("tenant_quotas", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_command_shows_every_effective_quota(acme: TenantCtx) -> None:
    make_plan(tenant=acme.tenant, max_queues=3, monthly_messages=1000)

    shown = run("acme")

    assert shown["tenant"] == "acme"
    assert shown["plan"] == "tiny"
    assert list(shown["quotas"]) == [quota.name for quota in QUOTAS]
    assert shown["quotas"]["max_queues"] == {"value": 3, "source": "plan"}
    assert shown["quotas"]["monthly_messages"] == {"value": 1000, "source": "plan"}
    assert quota_events(acme) == []


def test_command_sets_and_unsets(acme: TenantCtx) -> None:
    make_plan(tenant=acme.tenant, max_queues=3, monthly_messages=1000)

    shown = run("acme", "--set", "max_queues=40", "--set", "monthly_messages=unlimited")

    assert shown["quotas"]["max_queues"] == {"value": 40, "source": "tenant"}
    assert shown["quotas"]["monthly_messages"] == {"value": None, "source": "tenant"}
    assert fresh(acme).quota_overrides == {"max_queues": 40, "monthly_messages": None}

    shown = run("acme", "--unset", "max_queues")

    assert shown["quotas"]["max_queues"] == {"value": 3, "source": "plan"}
    assert fresh(acme).quota_overrides == {"monthly_messages": None}
    assert [(event[0], event[3]) for event in quota_events(acme)] == [
        (
            "operator:cli",
            {"before": {}, "after": {"max_queues": 40, "monthly_messages": None}},
        ),
        (
            "operator:cli",
            {
                "before": {"max_queues": 40, "monthly_messages": None},
                "after": {"monthly_messages": None},
            },
        ),
    ]


def test_command_prints_readable_lines(acme: TenantCtx) -> None:
    out = StringIO()
    call_command("tenant_quotas", "acme", "--set", "max_topics=2", stdout=out)

    lines = out.getvalue().splitlines()
    assert "max_topics               2 (tenant)" in lines
    assert "monthly_messages         unlimited (plan)" in lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody"], "No tenant 'nobody'."),
        (["acme", "--set", "max_queue=3"], "--set max_queue=3: not a quota"),
        (["acme", "--set", "max_queues"], "--set max_queues: expected NAME=VALUE."),
        (["acme", "--set", "max_queues=-3"], "--set max_queues=-3: a whole number"),
        (["acme", "--set", "max_queues=3.5"], "--set max_queues=3.5: a whole number"),
        (["acme", "--unset", "nothing"], "--unset nothing: not a quota"),
    ],
)
def test_command_refuses_bad_input_and_changes_nothing(
    acme: TenantCtx, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError) as refused:
        call_command("tenant_quotas", *args, stdout=StringIO())

    assert str(refused.value).startswith(message)
    assert fresh(acme).quota_overrides == {}
    assert quota_events(acme) == []
