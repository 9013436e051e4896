"""Names are validated by the services too, not only by the API's serializers."""

from __future__ import annotations

import pytest

from kernel.errors import InvalidRequest
from queues import services
from queues.models import Queue
from tests.factories import TenantCtx


@pytest.mark.parametrize("name", ["orders\n", "-orders", "", "a" * 129, "with space", "ünï"])
def test_service_rejects_bad_names_and_stores_nothing(acme: TenantCtx, name: str) -> None:
    """A name outside ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ (a trailing newline included) is a
    400 naming the field, and no queue is stored."""
    with pytest.raises(InvalidRequest) as raised:
        services.queue_create(tenant=acme.tenant, actor="test", name=name)
    assert raised.value.errors is not None
    assert raised.value.errors[0]["field"] == "name"
    assert Queue.objects.for_tenant(acme.tenant).count() == 0
