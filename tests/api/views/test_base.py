"""The tenant gate cannot be overridden: a view declares what differs, never how it is checked."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from rest_framework.request import Request

from api.views.base import GATE_METHODS, AsyncTenantAPIView, TenantAPIView


@pytest.mark.parametrize("method", sorted(GATE_METHODS))
def test_a_control_plane_view_cannot_redefine_the_gate(method: str) -> None:
    def redefined(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    with pytest.raises(TypeError, match=f"overrides {method} of TenantAPIView"):
        type("Sneaky", (TenantAPIView,), {method: redefined})


@pytest.mark.parametrize("method", sorted(GATE_METHODS))
def test_a_data_plane_view_cannot_redefine_the_gate(method: str) -> None:
    async def redefined(self: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        return HttpResponse()

    with pytest.raises(TypeError, match=f"overrides {method} of AsyncTenantAPIView"):
        type("Sneaky", (AsyncTenantAPIView,), {method: redefined})


def test_a_grandchild_cannot_redefine_it_either() -> None:
    class Family(TenantAPIView):
        resource_kind = "queue"

    with pytest.raises(TypeError, match="overrides initial"):

        class Member(Family):
            def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
                pass


def test_declaring_what_differs_is_allowed() -> None:
    class Declared(TenantAPIView):
        scope_map = {"GET": "consume"}
        resource_kind = "topic"
        tenant_wide = "the audit trail"

        def get(self, request: HttpRequest, topic: Any) -> HttpResponse:
            return HttpResponse()

    assert Declared.resource_kind == "topic"
    assert Declared.tenant_wide == "the audit trail"
