"""Queues, topics and subscriptions in the operators' admin (queues/admin.py): read-only lists
across tenants with a tenant filter; nothing is added, changed or deleted there (the Redis
state of a resource is the services' to clean), and nobody but staff sees them."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from queues.models import Queue, Subscription, Topic
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

MODELS = {"queue": Queue, "topic": Topic, "subscription": Subscription}


@pytest.fixture
def staff(db: Any) -> Client:
    return signed_in(User.objects.create_superuser("root@example.test", PASSWORD))


@pytest.fixture
def resources(acme: TenantCtx, globex: TenantCtx) -> dict[str, list[Any]]:
    """A queue, a topic and a subscription in each of two tenants, all named alike."""
    made: dict[str, list[Any]] = {"queue": [], "topic": [], "subscription": []}
    for ctx in (acme, globex):
        made["queue"].append(make_queue(tenant=ctx.tenant, name="orders"))
        made["topic"].append(make_topic(tenant=ctx.tenant, name="events"))
        made["subscription"].append(
            make_subscription(tenant=ctx.tenant, name="audit", topic="events")
        )
    return made


def _listed(response: Any) -> list[Any]:
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_lists_show_every_tenant_and_filter_by_tenant(
    staff: Client, acme: TenantCtx, resources: dict[str, list[Any]]
) -> None:
    for model, rows in resources.items():
        assert _listed(staff.get(f"/admin/queues/{model}/")) == rows  # by tenant slug
        only_acme = staff.get(f"/admin/queues/{model}/?tenant__id__exact={acme.tenant.pk}")
        assert _listed(only_acme) == [rows[0]]
        assert _listed(staff.get(f"/admin/queues/{model}/?q=globex")) == [rows[1]]


def test_each_resource_page_is_read_only(staff: Client, resources: dict[str, list[Any]]) -> None:
    for model, rows in resources.items():
        page = staff.get(f"/admin/queues/{model}/{rows[0].pk}/change/")
        assert page.status_code == 200, model
        assert 'name="_save"' not in page.content.decode()


def test_nothing_is_added_changed_or_deleted(
    staff: Client, resources: dict[str, list[Any]]
) -> None:
    """Each refusal is a 403, and every row is still there as it was."""
    for model, rows in resources.items():
        row = rows[0]
        assert staff.get(f"/admin/queues/{model}/add/").status_code == 403, model
        changed = staff.post(f"/admin/queues/{model}/{row.pk}/change/", {"name": "renamed"})
        assert changed.status_code == 403, model
        deleted = staff.post(f"/admin/queues/{model}/{row.pk}/delete/", {"post": "yes"})
        assert deleted.status_code == 403, model
        bulk = staff.post(
            f"/admin/queues/{model}/",
            {"action": "delete_selected", "_selected_action": [str(row.pk)], "post": "yes"},
        )
        assert bulk.status_code in (200, 302), model
        assert MODELS[model].all_tenants.filter(pk=row.pk, name=row.name).exists(), model  # type: ignore[attr-defined]
    for model, rows in resources.items():
        assert MODELS[model].all_tenants.count() == len(rows)  # type: ignore[attr-defined]


@pytest.mark.parametrize("who", ["member", "anonymous"])
def test_non_staff_are_sent_to_the_admin_login(
    who: str, acme: TenantCtx, resources: dict[str, list[Any]]
) -> None:
    client = signed_in(acme.owner) if who == "member" else Client()
    for model in MODELS:
        response = client.get(f"/admin/queues/{model}/")
        assert response.status_code == 302
        assert response["Location"] == f"/admin/login/?next=/admin/queues/{model}/"
        followed = client.get(f"/admin/queues/{model}/", follow=True).content.decode()
        assert "orders" not in followed
        assert "events" not in followed
