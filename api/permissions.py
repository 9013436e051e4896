"""The gate every tenant endpoint shares: a caller must have been authenticated."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from kernel.errors import Unauthenticated
from tenants.principals import Principal


class HasTenant(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if not isinstance(request.auth, Principal):
            raise Unauthenticated(
                "Send the API key as 'Authorization: Bearer op_<prefix>_<secret>'."
            )
        return True
