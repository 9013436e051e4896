"""Sign-up and email verification, password change and reset, and two-factor sign-in, through
the console with Django's test client and its mail outbox."""

from __future__ import annotations

import re
import time
from typing import Any

from django.core import mail
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from queues.models import Queue
from tenants.models import AccountVerification, AuditEvent, Membership, Tenant, User
from tests.factories import PASSWORD, TenantCtx, make_tenant, signed_in

NEW_PASSWORD = "another-horse-staple-8"
VERIFY_LINK = re.compile(r"http://testserver(/verify/[^/\s]+/)")
RESET_LINK = re.compile(r"http://testserver(/password-reset/[^/\s]+/[^/\s]+/)")
SIGNUP = {"email": "Ada@Example.Test", "password": PASSWORD, "tenant_name": "Analytical"}


def _link(pattern: re.Pattern[str], body: str) -> str:
    match = pattern.search(body)
    assert match is not None, body
    return match.group(1)


def _code(device: TOTPDevice, *, ahead: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + ahead * device.step
    return f"{totp.token():0{device.digits}d}"


def test_signup_signs_in_sends_the_link_and_keeps_the_tenant_read_only(db: Any) -> None:
    """A sign-up makes the account and its tenant (owner, default plan), signs in, emails one
    verification link to the address; writes are refused until the link is followed."""
    client = Client()
    response = client.post("/signup/", SIGNUP)
    assert response.status_code == 302
    assert response["Location"] == "/"
    user = User.objects.get(email="ada@example.test")
    tenant = Tenant.objects.get(slug="analytical")
    assert Membership.objects.for_tenant(tenant).get(user=user).role == "owner"
    assert tenant.plan.slug == "developer"
    assert tenant.is_active is False
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ada@example.test"]
    assert mail.outbox[0].subject == "Confirm your email address for OpenPlatform"
    dashboard = client.get("/")
    assert dashboard.status_code == 200
    assert "Confirm your address" in dashboard.content.decode()
    assert client.post("/new/queue/", {"name": "orders"}).status_code == 403
    assert not Queue.objects.for_tenant(tenant).exists()

    landed = client.get(_link(VERIFY_LINK, mail.outbox[0].body))
    assert landed.status_code == 302
    assert landed["Location"] == "/"
    tenant.refresh_from_db()
    assert tenant.is_active is True
    assert AccountVerification.objects.get(user=user).verified_at is not None
    assert client.get("/new/queue/").status_code == 200
    actions = AuditEvent.objects.for_tenant(tenant).order_by("id").values_list("action", flat=True)
    assert list(actions) == ["tenant.create", "account.signup", "account.verify"]


def test_signup_refuses_a_taken_address_and_a_weak_password(acme: TenantCtx) -> None:
    taken = Client().post("/signup/", {**SIGNUP, "email": "owner@acme.test"})
    assert taken.status_code == 200
    assert "An account with this email address exists" in taken.content.decode()
    weak = Client().post("/signup/", {**SIGNUP, "password": "12345678"})
    assert weak.status_code == 200
    assert weak.context["form"].errors["password"]
    assert not Tenant.objects.filter(slug="analytical").exists()
    assert mail.outbox == []


def test_signups_are_limited_per_client_address(db: Any, settings: Any) -> None:
    settings.SIGNUPS_PER_ADDRESS_PER_HOUR = 2
    for n in range(2):
        data = {**SIGNUP, "email": f"p{n}@example.test", "tenant_name": f"Co {n}"}
        assert Client().post("/signup/", data).status_code == 302
    refused = Client().post(
        "/signup/", {**SIGNUP, "email": "p2@example.test", "tenant_name": "Co 2"}
    )
    assert refused.status_code == 200
    assert "Too many sign-ups from your address" in refused.content.decode()
    assert not User.objects.filter(email="p2@example.test").exists()
    assert len(mail.outbox) == 2


def test_a_new_verification_email_waits_for_the_resend_interval(db: Any) -> None:
    client = Client()
    client.post("/signup/", SIGNUP)
    client.post("/verify/")
    assert len(mail.outbox) == 1  # the sign-up's own, a moment ago
    AccountVerification.objects.update(last_sent_at="2000-01-01T00:00:00Z")
    client.post("/verify/")
    assert len(mail.outbox) == 2
    assert mail.outbox[1].to == ["ada@example.test"]


def test_a_forged_verification_link_verifies_nothing(db: Any) -> None:
    client = Client()
    client.post("/signup/", SIGNUP)
    response = client.get("/verify/not-a-token/")
    assert response.status_code == 400
    assert AccountVerification.objects.get().verified_at is None
    assert Tenant.objects.get(slug="analytical").is_active is False


def test_password_change(acme: TenantCtx) -> None:
    user = acme.owner
    user.set_password(PASSWORD)
    user.save()
    client = signed_in(user)
    wrong = client.post(
        "/account/password/",
        {"old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert wrong.status_code == 200
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    done = client.post(
        "/account/password/",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert done.status_code == 302
    assert done["Location"] == "/account/password/done/"
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert client.get("/").status_code == 200  # still signed in
    assert (
        AuditEvent.objects.for_tenant(acme.tenant).filter(action="account.password_change").count()
        == 1
    )


def test_password_reset_by_email(db: Any) -> None:
    ctx = make_tenant(name="Initech", owner_email="peter@initech.test", owner_password=PASSWORD)
    client = Client()
    sent = client.post("/password-reset/", {"email": "peter@initech.test"})
    assert sent.status_code == 302
    assert sent["Location"] == "/password-reset/sent/"
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["peter@initech.test"]
    assert mail.outbox[0].subject == "Reset your OpenPlatform password"
    link = _link(RESET_LINK, mail.outbox[0].body)
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200
    assert form_page.context["validlink"] is True
    set_url = form_page.redirect_chain[-1][0]
    done = client.post(set_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302
    assert done["Location"] == "/password-reset/done/"
    assert User.objects.get(email="peter@initech.test").check_password(NEW_PASSWORD)
    reused = Client().get(link, follow=True)
    assert reused.context["validlink"] is False
    assert (
        AuditEvent.objects.for_tenant(ctx.tenant).filter(action="account.password_reset").count()
        == 1
    )


def test_password_reset_of_an_unknown_address_sends_nothing(db: Any) -> None:
    response = Client().post("/password-reset/", {"email": "nobody@example.test"})
    assert response.status_code == 302
    assert mail.outbox == []


def _enroll(client: Client, user: User) -> TOTPDevice:
    assert client.post("/account/two-factor/", {"start": "1"}).status_code == 302
    page = client.get("/account/two-factor/")
    body = page.content.decode()
    assert '<img src="data:image/svg+xml;base64,' in body
    device = TOTPDevice.objects.get(user=user)
    assert device.confirmed is False
    return device


def test_two_factor_enrol_with_a_wrong_then_a_right_code(acme: TenantCtx) -> None:
    client = signed_in(acme.owner)
    device = _enroll(client, acme.owner)
    wrong = client.post(
        "/account/two-factor/", {"code": "000000" if _code(device) != "000000" else "111111"}
    )
    assert wrong.status_code == 200
    assert "That code is not right" in wrong.content.decode()
    device.refresh_from_db()
    assert device.confirmed is False
    assert device.throttling_failure_count == 1  # django-otp's back-off after a wrong code
    device.throttle_reset()  # the back-off is 1 s after one failure: skip the wait
    confirmed = client.post("/account/two-factor/", {"code": _code(device)})
    assert confirmed.status_code == 302
    assert confirmed["Location"] == "/account/two-factor/backup-codes/"  # shown once there
    device.refresh_from_db()
    assert device.confirmed is True
    assert (
        AuditEvent.objects.for_tenant(acme.tenant).filter(action="account.totp_enable").count() == 1
    )


def test_two_factor_enrolment_waits_out_the_back_off_after_a_wrong_code(
    acme: TenantCtx, settings: Any
) -> None:
    """django-otp backs off after a wrong code at set-up too: the right code sent meanwhile is
    refused with a message that says how long to wait; nothing is turned on, no codes made."""
    settings.OTP_TOTP_THROTTLE_FACTOR = 60
    client = signed_in(acme.owner)
    device = _enroll(client, acme.owner)
    client.post(
        "/account/two-factor/", {"code": "000000" if _code(device) != "000000" else "111111"}
    )

    slowed = client.post("/account/two-factor/", {"code": _code(device)})

    assert slowed.status_code == 200
    wait = re.search(
        r"Too many wrong codes: wait (\d+) seconds, then enter the code the app shows\.",
        slowed.content.decode(),
    )
    assert wait is not None
    assert 58 <= int(wait.group(1)) <= 60
    device.refresh_from_db()
    assert device.confirmed is False
    assert not StaticDevice.objects.filter(user=acme.owner).exists()
    assert not AuditEvent.objects.for_tenant(acme.tenant).filter(action="account.totp_enable")


def _two_factor_user(ctx: TenantCtx) -> TOTPDevice:
    ctx.owner.set_password(PASSWORD)
    ctx.owner.save()
    client = signed_in(ctx.owner)
    device = _enroll(client, ctx.owner)
    client.post("/account/two-factor/", {"code": _code(device)})
    device.refresh_from_db()
    return device


def test_login_with_two_factor_asks_for_the_code(acme: TenantCtx) -> None:
    device = _two_factor_user(acme)
    client = Client()
    step = client.post("/login/", {"username": "owner@acme.test", "password": PASSWORD})
    assert step.status_code == 302
    assert step["Location"] == "/login/code/"
    assert client.get("/").status_code == 302  # not signed in yet
    wrong = client.post(
        "/login/code/", {"code": "000000" if _code(device, ahead=1) != "000000" else "111111"}
    )
    assert wrong.status_code == 200
    assert "That code is not right" in wrong.content.decode()
    assert "_auth_user_id" not in client.session
    device.refresh_from_db()
    assert device.throttling_failure_count == 1  # django-otp's back-off after a wrong code
    device.throttle_reset()  # the back-off is 1 s after one failure: skip the wait
    right = client.post("/login/code/", {"code": _code(device, ahead=1)})
    assert right.status_code == 302
    assert right["Location"] == "/"
    assert client.session["_auth_user_id"] == str(acme.owner.pk)
    assert client.session["tenant_id"] == str(acme.tenant.id)
    assert client.get("/").status_code == 200


def test_the_code_step_needs_the_password_step(acme: TenantCtx) -> None:
    _two_factor_user(acme)
    response = Client().post("/login/code/", {"code": "123456"})
    assert response.status_code == 302
    assert response["Location"] == "/login/"


def test_turning_two_factor_off_needs_the_password(acme: TenantCtx) -> None:
    _two_factor_user(acme)
    client = signed_in(acme.owner)
    refused = client.post("/account/two-factor/disable/", {"password": "wrong"})
    assert refused.status_code == 200
    assert TOTPDevice.objects.filter(user=acme.owner, confirmed=True).count() == 1
    assert client.post("/account/two-factor/disable/", {"password": PASSWORD}).status_code == 302
    assert not TOTPDevice.objects.filter(user=acme.owner).exists()
    assert not StaticDevice.objects.filter(user=acme.owner).exists()  # the backup codes too
    login = Client().post("/login/", {"username": "owner@acme.test", "password": PASSWORD})
    assert login["Location"] == "/"


def test_account_pages_render_without_inline_style_or_handlers(acme: TenantCtx) -> None:
    """Every page of this area answers 200 and keeps to the CSP: no style="" or on...=""."""
    anonymous = ["/signup/", "/password-reset/", "/password-reset/sent/", "/password-reset/done/"]
    signed = [
        "/account/",
        "/account/password/",
        "/account/password/done/",
        "/account/two-factor/",
        "/account/two-factor/disable/",
        "/members/",
        "/invitations/",
    ]
    owner = signed_in(acme.owner)
    for client, paths in ((Client(), anonymous), (owner, signed)):
        for path in paths:
            response = client.get(path)
            assert response.status_code == 200, path
            body = response.content.decode()
            assert re.search(r"\sstyle=\"|\son[a-z]+=\"", body) is None, path
