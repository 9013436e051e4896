"""Sign-in throttling for the console and the admin: the django-axes hooks.

django-axes (database handler) counts failed sign-ins per account and per client address
(settings: LOGIN_FAILURE_LIMIT within LOGIN_COOLOFF_SECONDS) and refuses a locked-out account
or address before any password is checked. These are the two callables it is configured with:

- :func:`login_username` names the account an attempt is against: the typed email address in
  lower case, as accounts are stored, so ``Ann@X`` and ``ann@x`` count together on the admin's
  form (which does not lower-case) as on the console's.
- :func:`lockout_response` answers every refused sign-in: a 429 page with Retry-After that says
  when to try again, the same for an account and an address (it never tells whether the
  account exists). For the attempt that caused the lock-out it also logs a warning and writes a
  ``login.locked_out`` audit event to each tenant the account belongs to: the people who run
  those tenants are the ones who should know someone is guessing a member's password. An
  account with no tenant (an operator), or an address that matches no account, has no tenant
  trail to write to; the warning, and axes' own records in the admin, are its record.

The code step of a two-factor sign-in counts the same way: :func:`code_step_failed` reports a
wrong authenticator or backup code to axes as a failed sign-in of the account, and
:func:`code_step_refusal` refuses the code step of a locked-out account or address, the right
code included. So LOGIN_FAILURE_LIMIT bounds the guesses at the code too, across sessions and
restarts of the sign-in (a locked-out account's password step is refused as well), and the
audit event says which step (``"step": "password"`` or ``"code"``): a lock-out at the code
step means someone has the password.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.db import transaction
from django.db.models import Max, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from tenants import services as tenant_services
from tenants.models import Membership, User

logger = logging.getLogger(__name__)

LOCKED_OUT_TEMPLATE = "registration/locked_out.html"
USERNAME_MAX = 255  # what axes stores of a username


def login_username(request: HttpRequest, credentials: dict[str, Any] | None = None) -> str | None:
    """AXES_USERNAME_CALLABLE: the account a sign-in attempt names, normalised."""
    if credentials:
        raw = credentials.get("username")
    else:
        raw = getattr(request, "POST", {}).get("username")
    if not raw:
        return None
    return str(raw).strip().lower()[:USERNAME_MAX] or None


def _site(request: HttpRequest) -> str:
    return "admin" if request.path.startswith(reverse("admin:index")) else "console"


def _step(request: HttpRequest) -> str:
    return "code" if request.path == reverse("console:login-code") else "password"


def _lock_ends(username: str | None, address: str | None, cool_off: timedelta) -> datetime:
    """When the lock-out ends at the latest: a cool-off after the last counted failure of the
    account or the address (failures during a lock-out are not counted, so it does not move)."""
    match = Q(ip_address=address) if address else Q(pk__in=[])
    if username:
        match |= Q(username=username)
    last = AccessAttempt.objects.filter(match).aggregate(last=Max("attempt_time"))["last"]
    return (last or timezone.now()) + cool_off


def _record_lockout(request: HttpRequest, username: str | None, address: str | None) -> None:
    failures = getattr(request, "axes_failures_since_start", None)
    site = _site(request)
    logger.warning(
        "sign-in locked out after %s failed attempts: account %r from %s (%s)",
        failures,
        username,
        address,
        site,
    )
    user = User.objects.filter(email=username).first() if username else None
    if user is None:
        return
    memberships = Membership.all_tenants.filter(user=user).select_related("tenant")
    with transaction.atomic():
        for membership in memberships:
            tenant_services.audit(
                tenant=membership.tenant,
                actor=f"ip:{address}",
                action="login.locked_out",
                target_type="user",
                target_id=str(user.pk),
                data={
                    "email": user.email,
                    "address": address,
                    "site": site,
                    "step": _step(request),
                    "failures": failures,
                    "cool_off_seconds": int(get_cool_off(request).total_seconds()),
                },
            )


def lockout_response(request: HttpRequest, *_args: Any) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the answer to a refused sign-in (console or admin).

    axes calls it with ``(request, response, credentials)`` on a sync stack and with
    ``(request, credentials)`` under ASGI; neither is needed: the request carries what axes
    noted (``axes_credentials``, ``axes_ip_address``, and ``axes_failures_since_start``, which
    is set only when this very failure was counted, i.e. when it caused the lock-out)."""
    username = login_username(request, getattr(request, "axes_credentials", None))
    address = getattr(request, "axes_ip_address", None)
    if getattr(request, "axes_failures_since_start", None) is not None:
        _record_lockout(request, username, address)
    cool_off = get_cool_off(request)
    ends = _lock_ends(username, address, cool_off)
    seconds = max(1, math.ceil((ends - timezone.now()).total_seconds()))
    # Back to where the sign-in starts: the code step has nothing to offer without a password.
    login_url = reverse("console:login") if _step(request) == "code" else request.get_full_path()
    context = {"minutes": math.ceil(seconds / 60), "until": ends, "login_url": login_url}
    response = render(request, LOCKED_OUT_TEMPLATE, context, status=429)
    response["Retry-After"] = str(seconds)
    return response


def code_step_refusal(request: HttpRequest, *, email: str) -> HttpResponse | None:
    """The lock-out page if the account ``email`` or the client's address is locked out (by
    wrong passwords, wrong sign-in codes or both), else None. The code step asks before it
    checks any code, so a locked-out account's right code is refused like its right password.
    """
    if not getattr(settings, "AXES_ENABLED", True):
        return None
    credentials = {"username": email}
    if AxesProxyHandler.is_allowed(request, credentials):
        return None
    request.axes_credentials = credentials  # type: ignore[attr-defined]  # what lockout_response reads
    return lockout_response(request)


def code_step_failed(request: HttpRequest, *, email: str) -> bool:
    """Count a wrong sign-in code as a failed sign-in of the account ``email`` from the
    client's address; True when it is the failure that locks either out. Then AxesMiddleware
    answers the lock-out page (and :func:`lockout_response` writes the audit event) instead of
    the view's own answer.

    It goes through Django's ``user_login_failed``, the signal every failed ``authenticate()``
    sends: that is how django-axes learns of a failure, so a wrong code is counted exactly as
    a wrong password is (same limit, cool-off, records and admin pages)."""
    user_login_failed.send(sender=__name__, credentials={"username": email}, request=request)
    return bool(getattr(request, "axes_locked_out", False))
