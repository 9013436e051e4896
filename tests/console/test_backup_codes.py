"""Backup codes of two-factor sign-in (django-otp's static devices): made when two-factor is
turned on and shown once, each signs in once in place of an authenticator code, the account
page counts them and makes new ones (the old ones stop working), and turning two-factor off
deletes them."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from kernel.errors import InvalidRequest
from tenants import services
from tenants.models import AuditEvent, Role, User
from tests.factories import PASSWORD, TenantCtx, make_member, signed_in

EMAIL = "ada@acme.test"
PAGE = "/account/two-factor/backup-codes/"
SHOWN_CODE = re.compile(r"<li><code>([a-z2-7]{4}-[a-z2-7]{4})</code></li>")
ONLY_NOW = "Save these codes now: this is the only time they are shown."


@pytest.fixture
def ada(acme: TenantCtx) -> User:
    """A developer of Acme with a password (and, so far, no two-factor)."""
    return make_member(tenant=acme.tenant, email=EMAIL, role=Role.DEVELOPER)


def code_of(device: TOTPDevice, *, ahead: int = 0) -> str:
    """The authenticator's code ``ahead`` steps from now."""
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + ahead * device.step
    return f"{totp.token():0{device.digits}d}"


def two_factor_on(user: User) -> tuple[TOTPDevice, list[str]]:
    """Turn two-factor on with the services; the device and the backup codes."""
    device = services.totp_start(user=user)
    enabled = services.totp_confirm(user=user, code=code_of(device))
    device.refresh_from_db()
    return device, enabled.backup_codes


def password_step(email: str = EMAIL) -> Client:
    """A client whose right password has been taken: it is at the code step."""
    client = Client()
    response = client.post("/login/", {"username": email, "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/login/code/"
    return client


def unused(user: User) -> list[str]:
    return sorted(StaticToken.objects.filter(device__user=user).values_list("token", flat=True))


def account_events(ctx: TenantCtx) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (e.action, e.actor, e.data)
        for e in AuditEvent.objects.for_tenant(ctx.tenant)
        .filter(action__startswith="account.")
        .order_by("id")
    ]


def test_turning_two_factor_on_shows_ten_codes_once(acme: TenantCtx, ada: User) -> None:
    """Confirming the authenticator redirects to a page with 10 codes (POST, redirect, GET);
    they are the stored ones, the page is not cached, and a reload no longer shows them."""
    client = signed_in(ada)
    client.post("/account/two-factor/", {"start": "1"})
    device = TOTPDevice.objects.get(user=ada)

    confirmed = client.post("/account/two-factor/", {"code": code_of(device)})

    assert confirmed.status_code == 302
    assert confirmed["Location"] == PAGE
    page = client.get(PAGE)
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    body = page.content.decode()
    assert ONLY_NOW in body
    shown = SHOWN_CODE.findall(body)
    assert len(shown) == 10
    assert sorted(code.replace("-", "") for code in shown) == unused(ada)
    assert len(set(shown)) == 10
    assert '<span id="backup-codes-left">10 of 10</span>' in body

    reload = client.get(PAGE).content.decode()
    assert ONLY_NOW not in reload
    assert SHOWN_CODE.findall(reload) == []
    assert '<span id="backup-codes-left">10 of 10</span>' in reload
    assert StaticDevice.objects.filter(user=ada).count() == 1
    assert len(unused(ada)) == 10  # the reload made none
    assert account_events(acme) == [
        ("account.totp_enable", f"user:{EMAIL}", {"backup_codes": 10}),
    ]


def test_a_backup_code_signs_in_once(acme: TenantCtx, ada: User) -> None:
    """At the code step a backup code (any case, with or without its dash) signs in in place
    of the authenticator's code; it is used up, a second sign-in with it is refused, and the
    use is audited with how many are left."""
    _device, codes = two_factor_on(ada)
    code = codes[3]
    client = password_step()

    signed = client.post("/login/code/", {"code": f"{code[:4].upper()}-{code[4:]}"}, follow=True)

    assert signed.redirect_chain == [("/", 302)]
    assert client.session["_auth_user_id"] == str(ada.pk)
    backup = StaticDevice.objects.get(user=ada)
    assert client.session[DEVICE_ID_SESSION_KEY] == backup.persistent_id
    assert "You signed in with a backup code; 9 unused left." in signed.content.decode()
    assert code not in unused(ada)
    assert unused(ada) == sorted(c for c in codes if c != code)

    again = password_step()
    refused = again.post("/login/code/", {"code": code})
    assert refused.status_code == 200
    assert "That code is not right." in refused.content.decode()
    assert "_auth_user_id" not in again.session
    assert len(unused(ada)) == 9
    assert account_events(acme) == [
        ("account.totp_enable", f"user:{EMAIL}", {"backup_codes": 10}),
        ("account.backup_code_use", f"user:{EMAIL}", {"backup_codes_left": 9}),
    ]


def test_the_last_codes_come_with_a_warning(ada: User) -> None:
    _device, codes = two_factor_on(ada)
    StaticToken.objects.filter(device__user=ada).exclude(token__in=codes[:3]).delete()

    signed = password_step().post("/login/code/", {"code": codes[0]}, follow=True)

    assert (
        "You signed in with a backup code; 2 unused left. Make new ones on your account page."
        in (signed.content.decode())
    )


def test_the_authenticator_still_signs_in_and_leaves_the_codes_alone(ada: User) -> None:
    device, codes = two_factor_on(ada)
    client = password_step()

    assert client.post("/login/code/", {"code": code_of(device, ahead=1)}).status_code == 302

    assert client.session[DEVICE_ID_SESSION_KEY] == device.persistent_id
    assert unused(ada) == sorted(codes)


def test_the_account_page_counts_them_and_new_codes_replace_the_old(
    acme: TenantCtx, ada: User
) -> None:
    """The account page shows how many are unused; making new ones needs the password, shows
    10 new codes once, and every old code (used or not) stops working."""
    _device, old = two_factor_on(ada)
    password_step().post("/login/code/", {"code": old[0]})
    client = signed_in(ada)
    account = client.get("/account/").content.decode()
    assert '<span class="badge" id="backup-codes-left">9 unused</span>' in account
    assert f'href="{PAGE}"' in account

    wrong = client.post(PAGE, {"password": "not-it"})
    assert wrong.status_code == 200
    assert "That is not your password." in wrong.content.decode()
    assert unused(ada) == sorted(old[1:])

    made = client.post(PAGE, {"password": PASSWORD})
    assert made.status_code == 302
    assert made["Location"] == PAGE
    body = client.get(PAGE).content.decode()
    assert ONLY_NOW in body
    new = sorted(code.replace("-", "") for code in SHOWN_CODE.findall(body))
    assert len(new) == 10
    assert new == unused(ada)
    assert set(new).isdisjoint(old)
    assert "New backup codes are ready: the old ones no longer work." in body

    stale = password_step()
    assert (
        "That code is not right." in stale.post("/login/code/", {"code": old[1]}).content.decode()
    )
    assert "_auth_user_id" not in stale.session
    assert '<span class="badge" id="backup-codes-left">10 unused</span>' in (
        client.get("/account/").content.decode()
    )
    assert [e[0] for e in account_events(acme)] == [
        "account.totp_enable",
        "account.backup_code_use",
        "account.backup_codes_regenerate",
    ]
    assert account_events(acme)[-1] == (
        "account.backup_codes_regenerate",
        f"user:{EMAIL}",
        {"backup_codes": 10},
    )


def test_turning_two_factor_off_deletes_the_codes(acme: TenantCtx, ada: User) -> None:
    """With two-factor off no code is kept, the page has none to show (back to the account)
    and the password alone signs in again."""
    _device, codes = two_factor_on(ada)
    client = signed_in(ada)

    assert client.post("/account/two-factor/disable/", {"password": PASSWORD}).status_code == 302

    assert not StaticDevice.objects.filter(user=ada).exists()
    assert not StaticToken.objects.filter(token__in=codes).exists()
    page = client.get(PAGE, follow=True)
    assert page.redirect_chain == [("/account/", 302)]
    assert "Backup codes come with two-factor sign-in: turn it on first." in page.content.decode()
    assert "backup-codes-left" not in page.content.decode()
    assert client.post(PAGE, {"password": PASSWORD}).status_code == 302
    assert not StaticDevice.objects.filter(user=ada).exists()
    login = Client().post("/login/", {"username": EMAIL, "password": PASSWORD})
    assert login["Location"] == "/"
    assert [e[0] for e in account_events(acme)] == ["account.totp_enable", "account.totp_disable"]


def test_codes_cannot_be_made_without_two_factor(acme: TenantCtx, ada: User) -> None:
    with pytest.raises(InvalidRequest) as refused:
        services.backup_codes_regenerate(user=ada)
    assert refused.value.detail == "Turn on two-factor sign-in first."
    assert not StaticDevice.objects.filter(user=ada).exists()
    assert account_events(acme) == []


def test_codes_shown_to_one_account_are_not_shown_to_another(ada: User, acme: TenantCtx) -> None:
    """The show-once entry names its account: a session that changed hands shows nothing."""
    two_factor_on(ada)
    other = make_member(tenant=acme.tenant, email="bo@acme.test", role=Role.VIEWER)
    two_factor_on(other)
    client = signed_in(other)
    session = client.session
    session["new_backup_codes"] = {"user": str(ada.pk), "codes": ["aaaaaaaa"]}
    session.save()

    body = client.get(PAGE).content.decode()

    assert SHOWN_CODE.findall(body) == []
    assert "aaaa-aaaa" not in body


def test_the_page_keeps_to_the_csp(ada: User) -> None:
    two_factor_on(ada)
    client = signed_in(ada)
    client.post(PAGE, {"password": PASSWORD})
    for path in (PAGE, PAGE, "/account/"):
        body = client.get(path).content.decode()
        assert re.search(r"\sstyle=\"|\son[a-z]+=\"", body) is None, path
