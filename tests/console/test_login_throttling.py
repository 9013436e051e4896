"""Sign-in throttling (django-axes) on the console and the admin: after AXES_FAILURE_LIMIT
failures for one account, or from one address, even the right password is refused with a
clear 429 page until the cool-off has passed; the lock-out is logged and written to the audit
trail of each tenant the account belongs to. Wrong codes at the code step of a two-factor
sign-in count as failures too, and django-otp's back-off slows that step on its own."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from axes.models import AccessAttempt
from axes.utils import reset
from django.db import connections
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from openplatform.asgi import application
from tenants import services as tenant_services
from tenants.models import AuditEvent, Role, User
from tests.factories import (
    PASSWORD,
    TenantCtx,
    make_member,
    make_membership,
    make_tenant,
    make_user,
)

LIMIT = 3
EMAIL = "ann@example.test"
PAUSED = "Too many failed sign-in attempts for this account or from your network."


@pytest.fixture(autouse=True)
def throttle(settings: Any) -> Any:
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    return settings


@pytest.fixture
def ann(acme: TenantCtx, globex: TenantCtx) -> User:
    """A developer of Acme who is also a viewer of Globex."""
    user = make_member(tenant=acme.tenant, email=EMAIL, role=Role.DEVELOPER)
    make_membership(tenant=globex.tenant, user=user, role=Role.VIEWER)
    return user


def sign_in(address: str, password: str, email: str = EMAIL, path: str = "/login/") -> Any:
    client = Client(REMOTE_ADDR=address)
    response = client.post(path, {"username": email, "password": password})
    response.signed_in = "_auth_user_id" in client.session
    return response


def assert_paused(response: Any, cool_off_seconds: int = 900) -> None:
    """The lock-out page: 429, a message that says what happened and when to retry, and a
    Retry-After no longer than the cool-off; nobody signed in."""
    assert response.status_code == 429
    body = response.content.decode()
    assert PAUSED in body
    assert "even the right password is refused" in body
    assert 0 < int(response["Retry-After"]) <= cool_off_seconds
    assert not response.signed_in


def test_fewer_failures_than_the_limit_do_not_lock(ann: User) -> None:
    """The control case: LIMIT - 1 wrong passwords, then the right one signs in."""
    for _ in range(LIMIT - 1):
        wrong = sign_in("203.0.113.40", "wrong")
        assert wrong.status_code == 200
        assert "Please enter a correct email" in wrong.content.decode()

    right = sign_in("203.0.113.40", PASSWORD)

    assert right.status_code == 302
    assert right.signed_in


def test_the_account_is_locked_after_the_limit(ann: User) -> None:
    """LIMIT wrong passwords (from different addresses) lock the account: the failure that
    reaches the limit already answers the lock-out page, and then the right password is
    refused, from those addresses and from a new one."""
    for n in range(LIMIT - 1):
        assert sign_in(f"198.51.100.{n + 1}", "wrong").status_code == 200
    assert_paused(sign_in("198.51.100.9", "wrong"))

    assert_paused(sign_in("198.51.100.1", PASSWORD))
    assert_paused(sign_in("192.0.2.77", PASSWORD))
    assert_paused(sign_in("192.0.2.77", PASSWORD, email="ANN@Example.TEST"))


def test_the_address_is_locked_after_the_limit(ann: User, db: Any) -> None:
    """LIMIT failures from one address, at other accounts (existing or not), lock the address:
    Ann's right password is refused from there, and still works from elsewhere."""
    make_user(email="bob@example.test", password=PASSWORD)
    for email in ("bob@example.test", "nobody@example.test", "carol@example.test"):
        sign_in("203.0.113.41", "wrong", email=email)

    assert_paused(sign_in("203.0.113.41", PASSWORD))
    elsewhere = sign_in("203.0.113.42", PASSWORD)
    assert elsewhere.status_code == 302
    assert elsewhere.signed_in


def test_a_lock_out_is_audited_in_each_tenant_of_the_account(
    ann: User, acme: TenantCtx, globex: TenantCtx, caplog: pytest.LogCaptureFixture
) -> None:
    """The failure that locks the account writes one login.locked_out event to each of Ann's
    tenants and logs a warning; refused attempts during the lock-out add nothing."""
    caplog.set_level(logging.WARNING, logger="console.lockout")
    for _ in range(LIMIT):
        sign_in("203.0.113.43", "wrong")
    sign_in("203.0.113.43", PASSWORD)
    sign_in("203.0.113.44", "wrong")

    events = AuditEvent.all_tenants.filter(action="login.locked_out").order_by("tenant__name")
    assert [(e.tenant_id, e.actor, e.target_type, e.target_id) for e in events] == [
        (acme.tenant.id, "ip:203.0.113.43", "user", str(ann.pk)),
        (globex.tenant.id, "ip:203.0.113.43", "user", str(ann.pk)),
    ]
    assert events[0].data == {
        "email": EMAIL,
        "address": "203.0.113.43",
        "site": "console",
        "step": "password",
        "failures": LIMIT,
        "cool_off_seconds": 900,
    }
    warnings = [r.getMessage() for r in caplog.records if r.name == "console.lockout"]
    assert warnings == [
        f"sign-in locked out after {LIMIT} failed attempts: account '{EMAIL}' from "
        "203.0.113.43 (console)"
    ]


def test_a_lock_out_of_an_unknown_account_is_only_logged(
    db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An address that names no account has no tenant trail: the warning is the record."""
    caplog.set_level(logging.WARNING, logger="console.lockout")
    for _ in range(LIMIT):
        response = sign_in("203.0.113.45", "wrong", email="ghost@example.test")

    assert_paused(response)
    assert not AuditEvent.all_tenants.filter(action="login.locked_out").exists()
    assert any("'ghost@example.test'" in r.getMessage() for r in caplog.records)


def test_the_right_password_works_after_the_cool_off(ann: User, throttle: Any) -> None:
    """With a one-second cool-off, the locked account signs in again a second later."""
    throttle.AXES_COOLOFF_TIME = timedelta(seconds=1)
    for _ in range(LIMIT):
        locked = sign_in("203.0.113.46", "wrong")
    assert_paused(locked, cool_off_seconds=1)
    assert_paused(sign_in("203.0.113.46", PASSWORD), cool_off_seconds=1)

    time.sleep(1.1)
    right = sign_in("203.0.113.46", PASSWORD)

    assert right.status_code == 302
    assert right.signed_in


def test_an_operator_can_lift_a_lock_out(ann: User) -> None:
    """Clearing the account's attempts (what the admin's Axes pages and `manage.py
    axes_reset_username` do) lets it sign in at once."""
    for _ in range(LIMIT):
        sign_in("203.0.113.47", "wrong")
    assert AccessAttempt.objects.filter(username=EMAIL).exists()

    reset(username=EMAIL)

    assert sign_in("203.0.113.48", PASSWORD).status_code == 302


# --- the admin ---------------------------------------------------------------------------------


@pytest.fixture
def operator(db: Any) -> User:
    return make_user(email="ops@example.test", password=PASSWORD, is_staff=True)


def test_the_admin_has_no_password_form_of_its_own(operator: User) -> None:
    """/admin/login/ signs nobody in, whatever is posted, and counts nothing: operators sign
    in through the console's form, so its throttling (above) and two-factor step hold."""
    for _ in range(LIMIT + 1):
        response = sign_in("203.0.113.49", PASSWORD, email="ops@example.test", path="/admin/login/")
        assert response.status_code == 302
        assert response["Location"] == "/login/"
        assert not response.signed_in
    after = sign_in("203.0.113.49", PASSWORD, email="ops@example.test")
    assert after.status_code == 302
    assert after.signed_in


# --- under ASGI, as gunicorn serves it --------------------------------------------------------


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the ASGI app, from 203.0.113.60, keeping cookies like a browser."""
    transport = httpx.ASGITransport(app=application, client=("203.0.113.60", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client
    await sync_to_async(connections.close_all)()


async def post_login(client: httpx.AsyncClient, password: str) -> httpx.Response:
    page = await client.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None
    return await client.post(
        "/login/",
        data={"csrfmiddlewaretoken": token.group(1), "username": EMAIL, "password": password},
    )


@pytest.mark.django_db(transaction=True)
async def test_the_lock_out_works_under_asgi(browser: httpx.AsyncClient) -> None:
    """Through the ASGI app (axes' async middleware path, which calls the lock-out callable
    with other arguments): the same 429 page, Retry-After and audit event."""
    created = await sync_to_async(make_tenant)(
        name="Asgi", owner_email=EMAIL, owner_password=PASSWORD
    )
    for _ in range(LIMIT - 1):
        assert (await post_login(browser, "wrong")).status_code == 200
    locked = await post_login(browser, "wrong")
    refused = await post_login(browser, PASSWORD)

    for response in (locked, refused):
        assert response.status_code == 429
        assert PAUSED in response.text
        assert 0 < int(response.headers["retry-after"]) <= 900
        assert "content-security-policy" in response.headers
    events = await sync_to_async(list)(
        AuditEvent.all_tenants.filter(tenant=created.tenant, action="login.locked_out")
    )
    assert [e.actor for e in events] == ["ip:203.0.113.60"]


# --- the code step of a two-factor sign-in -----------------------------------------------------

SLOWED = "Too many wrong codes: wait"
EVERY_CODE = "Until then every code is refused, the right one too."


def _totp_code(device: TOTPDevice, *, ahead: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + ahead * device.step
    return f"{totp.token():0{device.digits}d}"


def _wrong_code(device: TOTPDevice) -> str:
    """A six-digit code the authenticator does not show now, nor one step either side."""
    valid = {_totp_code(device, ahead=n) for n in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in valid)


@pytest.fixture
def ann_2fa(ann: User) -> TOTPDevice:
    """Ann with two-factor sign-in on (and her ten backup codes)."""
    device = tenant_services.totp_start(user=ann)
    tenant_services.totp_confirm(user=ann, code=_totp_code(device))
    device.refresh_from_db()
    return device


def at_code_step(address: str) -> Client:
    """A fresh client from ``address`` that has passed the password step."""
    client = Client(REMOTE_ADDR=address)
    response = client.post("/login/", {"username": EMAIL, "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/login/code/"
    return client


def post_code(client: Client, code: str) -> Any:
    response = client.post("/login/code/", {"code": code})
    response.signed_in = "_auth_user_id" in client.session
    return response


def test_wrong_codes_lock_the_account_even_the_right_code_is_refused(
    ann_2fa: TOTPDevice, acme: TenantCtx, globex: TenantCtx, settings: Any
) -> None:
    """Each wrong code counts as a failed sign-in of the account, also when the sign-in is
    started again from the password each time (and from other addresses): the LIMIT-th
    answers the lock-out page, then the right code of a session that had already passed the
    password step is refused, the password step too. The lock-out is audited as one at the
    code step."""
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # django-otp's own back-off off: the lock-out alone
    last_t = ann_2fa.last_t  # the last authenticator step that signed in (the confirmation)
    waiting = at_code_step("192.0.2.90")  # passed the password before the guessing began
    for n in range(LIMIT - 1):
        wrong = post_code(at_code_step(f"198.51.100.{n + 1}"), _wrong_code(ann_2fa))
        assert wrong.status_code == 200
        assert "That code is not right." in wrong.content.decode()
        assert not wrong.signed_in

    guessing = at_code_step("198.51.100.9")
    locked = post_code(guessing, _wrong_code(ann_2fa))

    assert_paused(locked)
    assert 'href="/login/"' in locked.content.decode()
    assert "signin_second_step" not in guessing.session
    refused = post_code(waiting, _totp_code(ann_2fa, ahead=1))
    assert_paused(refused)
    assert "signin_second_step" not in waiting.session
    assert_paused(sign_in("192.0.2.91", PASSWORD))
    ann_2fa.refresh_from_db()
    assert ann_2fa.last_t == last_t  # the right code was refused unchecked, not used up
    attempts = AccessAttempt.objects.filter(username=EMAIL).order_by("ip_address")
    assert [(a.ip_address, a.path_info, a.failures_since_start) for a in attempts] == [
        ("198.51.100.1", "/login/code/", 1),
        ("198.51.100.2", "/login/code/", 1),
        ("198.51.100.9", "/login/code/", 1),
    ]
    events = AuditEvent.all_tenants.filter(action="login.locked_out").order_by("tenant__name")
    assert [(e.tenant_id, e.actor, e.target_id) for e in events] == [
        (acme.tenant.id, "ip:198.51.100.9", str(ann_2fa.user_id)),
        (globex.tenant.id, "ip:198.51.100.9", str(ann_2fa.user_id)),
    ]
    assert events[0].data == {
        "email": EMAIL,
        "address": "198.51.100.9",
        "site": "console",
        "step": "code",
        "failures": LIMIT,
        "cool_off_seconds": 900,
    }


def test_wrong_codes_and_wrong_passwords_count_together(ann_2fa: TOTPDevice, settings: Any) -> None:
    """One limit for the account: LIMIT - 1 wrong passwords and then one wrong code lock it."""
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    for _ in range(LIMIT - 1):
        assert sign_in("203.0.113.70", "wrong").status_code == 200

    assert_paused(post_code(at_code_step("203.0.113.71"), _wrong_code(ann_2fa)))


def test_the_code_step_works_again_after_the_cool_off(ann_2fa: TOTPDevice, throttle: Any) -> None:
    """The lock-out ends like a password lock-out: a second after it (a one-second cool-off)
    the password and the right code sign in."""
    throttle.OTP_TOTP_THROTTLE_FACTOR = 0
    throttle.AXES_COOLOFF_TIME = timedelta(seconds=1)
    for _ in range(LIMIT):
        locked = post_code(at_code_step("203.0.113.72"), _wrong_code(ann_2fa))
    assert_paused(locked, cool_off_seconds=1)

    time.sleep(1.1)
    right = post_code(at_code_step("203.0.113.72"), _totp_code(ann_2fa, ahead=1))

    assert right.status_code == 302
    assert right.signed_in


def test_django_otp_backs_off_after_a_wrong_code_even_for_the_right_one(
    ann_2fa: TOTPDevice, settings: Any
) -> None:
    """django-otp's back-off is honoured with a clear 429: after a wrong code every code is
    refused unchecked for the back-off (here 60 s after one failure), the right one too,
    also from a sign-in started again; such refusals do not count as failed sign-ins. Once
    the back-off has passed, the right code signs in."""
    settings.OTP_TOTP_THROTTLE_FACTOR = 60
    client = at_code_step("203.0.113.80")
    wrong = post_code(client, _wrong_code(ann_2fa))
    assert wrong.status_code == 200
    assert "That code is not right." in wrong.content.decode()

    for attempt in (client, at_code_step("203.0.113.81")):
        slowed = post_code(attempt, _totp_code(ann_2fa, ahead=1))
        assert slowed.status_code == 429
        body = slowed.content.decode()
        seconds = int(slowed["Retry-After"])
        assert 58 <= seconds <= 60
        assert f"{SLOWED} {seconds} seconds, then try again. {EVERY_CODE}" in body
        assert not slowed.signed_in
        assert "signin_second_step" in attempt.session  # slowed, not ended

    ann_2fa.refresh_from_db()
    assert ann_2fa.throttling_failure_count == 1  # the refusals were not checks
    assert [a.failures_since_start for a in AccessAttempt.objects.filter(username=EMAIL)] == [1]
    TOTPDevice.objects.filter(pk=ann_2fa.pk).update(
        throttling_failure_timestamp=ann_2fa.throttling_failure_timestamp - timedelta(seconds=61)
    )
    right = post_code(client, _totp_code(ann_2fa, ahead=1))
    assert right.status_code == 302
    assert right.signed_in
    ann_2fa.refresh_from_db()
    assert ann_2fa.throttling_failure_count == 0


def test_a_wrong_backup_code_backs_off_the_authenticator_too(
    ann_2fa: TOTPDevice, settings: Any
) -> None:
    """Switching from guessing authenticator codes to guessing backup codes buys nothing: a
    wrong backup code counts on the authenticator's counter, and the right code then waits."""
    settings.OTP_TOTP_THROTTLE_FACTOR = 60
    settings.OTP_STATIC_THROTTLE_FACTOR = 60
    client = at_code_step("203.0.113.82")
    assert "That code is not right." in post_code(client, "zzzz-zzzz").content.decode()

    slowed = post_code(client, _totp_code(ann_2fa, ahead=1))

    assert slowed.status_code == 429
    assert SLOWED in slowed.content.decode()
    assert not slowed.signed_in
    ann_2fa.refresh_from_db()
    assert ann_2fa.throttling_failure_count == 1
    backup = StaticDevice.objects.get(user=ann_2fa.user)
    assert backup.throttling_failure_count == 1
    assert StaticToken.objects.filter(device=backup).count() == 10
