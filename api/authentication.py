"""Who is calling: an API key (``Authorization: Bearer``) or a console session."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.request import Request

from kernel.errors import Unauthenticated
from tenants.authority import role_permissions
from tenants.principals import Principal, authenticate, client_address, tenant_cache
from tenants.selectors import SESSION_TENANT, session_membership, user_memberships


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer op_<prefix>_<secret>`` → (None, Principal), from the hot cache.
    Refusals count against the client's address: past the limits they are 429s."""

    def authenticate(self, request: Request) -> tuple[None, Principal] | None:
        header = request.META.get("HTTP_AUTHORIZATION")
        if not header:
            return None  # let the session authenticator try; no credentials at all is a 401
        return None, authenticate(header, address=client_address(request.META))

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="openplatform"'


class ConsoleSessionAuthentication(SessionAuthentication):
    """A logged-in console user acts for the tenant chosen in the session (as the console
    chooses it), with the scopes of their role (tenants.authority.ROLE_PERMISSIONS). CSRF is
    enforced as for any session-authenticated write."""

    def authenticate(self, request: Request) -> tuple[Any, Principal] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user = result[0]
        membership = session_membership(
            list(user_memberships(user)), request._request.session.get(SESSION_TENANT)
        )
        if membership is None:
            raise Unauthenticated("This user belongs to no tenant.")
        tenant_doc = tenant_cache.get(str(membership.tenant_id))
        if tenant_doc is None or not tenant_doc["active"]:
            raise Unauthenticated("This tenant is not active.")
        principal = Principal(
            key_id="",
            prefix="",
            tenant_id=str(membership.tenant_id),
            scopes=role_permissions(membership.role).scopes,
            resources=(),
            tenant=tenant_doc,
            actor=f"user:{user.email}",
        )
        return user, principal
