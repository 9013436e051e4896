"""Account pages: sign-up and email verification, password change and reset, two-factor
sign-in with its backup codes, the members of a tenant and invitations to join one.

Every change goes through a service of ``tenants.services`` (which writes the audit trail);
the views here send the emails, since only they know the site's address.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, cast

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.core.mail import send_mail
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse, reverse_lazy
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.generic import FormView, TemplateView
from django_otp import login as otp_login

from console.account_forms import (
    CodeForm,
    InvitedSignupForm,
    InviteForm,
    LoginCodeForm,
    PasswordCheckForm,
    RoleForm,
    SignupForm,
)
from console.forms import add_platform_error
from console.lockout import code_step_failed, code_step_refusal
from console.views import SESSION_SECOND_STEP, TenantMixin, WriterMixin, after_sign_in
from kernel.errors import Conflict, Forbidden, NotFound, PlatformError, Unavailable
from tenants import selectors as tenant_selectors
from tenants import services as tenant_services
from tenants.models import Invitation, User
from tenants.principals import address_bucket, request_address
from tenants.selectors import SESSION_TENANT

#: How long a password stays good for the code step of a two-factor sign-in.
SECOND_STEP_SECONDS = 300
#: The session entry holding new backup codes until their page is first shown.
NEW_BACKUP_CODES = "new_backup_codes"
#: With this many unused backup codes or fewer, signing in with one also says to make new ones.
BACKUP_CODES_LOW = 2
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


def _send(request: HttpRequest, *, to: str, subject: str, template: str, **context: Any) -> None:
    body = render_to_string(template, context, request=request)
    send_mail(subject, body, None, [to])


def _link(request: HttpRequest, name: str, **kwargs: Any) -> str:
    return request.build_absolute_uri(reverse(f"console:{name}", kwargs=kwargs))


def send_verification(request: HttpRequest, user: User) -> None:
    token = tenant_services.verification_token(user=user)
    _send(
        request,
        to=user.email,
        subject="Confirm your email address for OpenPlatform",
        template="console/accounts/verify_email.txt",
        user=user,
        link=_link(request, "verify", token=token),
        days=settings.EMAIL_VERIFICATION_MAX_AGE_SECONDS // 86400,
    )


# --- sign-up and verification ------------------------------------------------------------------


@method_decorator(never_cache, name="dispatch")
class SignupView(FormView):  # type: ignore[type-arg]  # generic only in the stubs
    """Anyone may make an account with a tenant of their own (unless SIGNUP_OPEN is off). The
    new owner is signed in at once, but the tenant stays read-only until the address is
    confirmed from the emailed link."""

    form_class = SignupForm
    template_name = "registration/signup.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.SIGNUP_OPEN:
            raise Http404("Sign-up is closed.")
        return cast(HttpResponse, super().dispatch(request, *args, **kwargs))

    def form_valid(self, form: SignupForm) -> HttpResponse:
        data = form.cleaned_data
        try:
            signed_up = tenant_services.account_signup(
                email=data["email"],
                password=data["password"],
                tenant_name=data["tenant_name"],
                address=address_bucket(request_address(self.request)),
            )
        except PlatformError as exc:
            add_platform_error(form, exc)
            return self.form_invalid(form)
        auth_login(self.request, signed_up.user, backend=MODEL_BACKEND)
        after_sign_in(self.request, signed_up.user)
        try:
            send_verification(self.request, signed_up.user)
        except OSError:  # smtplib's errors too: the account exists, the link can follow
            messages.error(
                self.request,
                "We could not send the confirmation email; ask for it again from your "
                "account page in a few minutes.",
            )
        return redirect("console:dashboard")


class VerifyView(View):
    """The link of the verification email. Following it twice is harmless."""

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        try:
            user = tenant_services.account_verify(token=token)
        except PlatformError as exc:
            return render(
                request, "console/accounts/verify_failed.html", {"error": exc.detail}, status=400
            )
        messages.success(request, f"{user.email} is confirmed.")
        return redirect("console:dashboard" if request.user.is_authenticated else "console:login")


class VerifyResendView(LoginRequiredMixin, View):
    """POST: send the verification email again (at most once per SIGNUP_RESEND_SECONDS)."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        user: User = request.user  # type: ignore[assignment]
        if tenant_services.verification_resend(user=user):
            send_verification(request, user)
            messages.info(request, f"We sent a new link to {user.email}.")
        else:
            messages.info(
                request,
                "No new link was sent: the address is confirmed, or a link "
                "went out a few minutes ago.",
            )
        return redirect("console:account")


# --- the account page, password change and reset -----------------------------------------------


@method_decorator(never_cache, name="dispatch")
class AccountView(LoginRequiredMixin, TemplateView):
    template_name = "console/accounts/account.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user: User = self.request.user  # type: ignore[assignment]
        two_factor = tenant_selectors.has_two_factor(user)
        context.update(
            verified=tenant_selectors.is_verified(user),
            two_factor=two_factor,
            backup_codes_left=tenant_selectors.backup_codes_left(user=user) if two_factor else 0,
        )
        return context


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "registration/password_change_form.html"
    success_url = reverse_lazy("console:password-change-done")

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        tenant_services.account_password_changed(user=form.user, reset=False)
        return response


class PasswordChangeDoneView(auth_views.PasswordChangeDoneView):
    template_name = "registration/password_change_done.html"


class PasswordResetView(auth_views.PasswordResetView):
    """Sends the link only to an active account with a usable password; the answer is the
    same whether or not the address has an account."""

    template_name = "registration/password_reset_form.html"
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    success_url = reverse_lazy("console:password-reset-done")


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "registration/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "registration/password_reset_confirm.html"
    success_url = reverse_lazy("console:password-reset-complete")

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        tenant_services.account_password_changed(user=form.user, reset=True)
        return response


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "registration/password_reset_complete.html"


# --- two-factor sign-in ------------------------------------------------------------------------


def _qr_data_url(config_url: str) -> str:
    """The otpauth:// URL as an SVG QR code in a data: URL (the CSP allows data: images)."""
    svg = segno.make(config_url, error="m").svg_inline(scale=4, dark="#1b2130")
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


@method_decorator(never_cache, name="dispatch")
class TwoFactorSetupView(LoginRequiredMixin, FormView):  # type: ignore[type-arg]
    """GET shows the pending authenticator (QR code and secret) and asks for its code; POST
    with ``start`` makes a new pending one; POST with ``code`` confirms it."""

    form_class = CodeForm
    template_name = "console/accounts/two_factor_setup.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user: User = self.request.user  # type: ignore[assignment]
        device = tenant_selectors.totp_pending(user=user)
        if device is not None:
            secret = base64.b32encode(device.bin_key).decode()
            context.update(qr=_qr_data_url(device.config_url), secret=secret)
        context["device"] = device
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if "start" in request.POST:
            tenant_services.totp_start(user=request.user)  # type: ignore[arg-type]
            return redirect("console:two-factor-setup")
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: CodeForm) -> HttpResponse:
        try:
            enabled = tenant_services.totp_confirm(
                user=self.request.user,  # type: ignore[arg-type]
                code=form.cleaned_data["code"],
            )
        except PlatformError as exc:
            add_platform_error(form, exc)
            return self.form_invalid(form)
        _show_backup_codes_once(self.request, enabled.backup_codes)
        messages.success(self.request, "Two-factor sign-in is on.")
        return redirect("console:two-factor-backup-codes")


def _show_backup_codes_once(request: HttpRequest, codes: list[str]) -> None:
    """Keep new backup codes in the session until BackupCodesView first shows them, so the
    POST that made them can redirect (POST, redirect, GET) and a reload shows them no more."""
    request.session[NEW_BACKUP_CODES] = {"user": str(request.user.pk), "codes": codes}


def _readable(code: str) -> str:
    """A backup code as shown: two groups of four (the dash is ignored when typed back)."""
    return f"{code[:4]}-{code[4:]}"


@method_decorator(never_cache, name="dispatch")
class BackupCodesView(LoginRequiredMixin, FormView):  # type: ignore[type-arg]
    """The backup codes of two-factor sign-in. GET right after they were made (by turning
    two-factor on, or by a POST here) shows them, once; afterwards only how many are unused.
    POST with the account's password makes a new set (the old codes stop working) and
    redirects here to show it. Without two-factor on there are none: back to the account."""

    form_class = PasswordCheckForm
    template_name = "console/accounts/backup_codes.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        if user.is_authenticated and not tenant_selectors.has_two_factor(user):
            messages.info(request, "Backup codes come with two-factor sign-in: turn it on first.")
            return redirect("console:account")
        return cast(HttpResponse, super().dispatch(request, *args, **kwargs))

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "user": self.request.user}

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        pending = request.session.pop(NEW_BACKUP_CODES, None)
        codes = None
        if isinstance(pending, dict) and pending.get("user") == str(request.user.pk):
            codes = [_readable(code) for code in pending.get("codes", [])]
        return self.render_to_response(self.get_context_data(codes=codes))

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user: User = self.request.user  # type: ignore[assignment]
        context.update(
            left=tenant_selectors.backup_codes_left(user=user),
            total=tenant_services.BACKUP_CODE_COUNT,
        )
        return context

    def form_valid(self, form: PasswordCheckForm) -> HttpResponse:
        try:
            codes = tenant_services.backup_codes_regenerate(user=form.user)
        except PlatformError as exc:
            add_platform_error(form, exc)
            return self.form_invalid(form)
        _show_backup_codes_once(self.request, codes)
        messages.success(self.request, "New backup codes are ready: the old ones no longer work.")
        return redirect("console:two-factor-backup-codes")


class TwoFactorDisableView(LoginRequiredMixin, FormView):  # type: ignore[type-arg]
    form_class = PasswordCheckForm
    template_name = "console/accounts/two_factor_disable.html"

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "user": self.request.user}

    def form_valid(self, form: PasswordCheckForm) -> HttpResponse:
        tenant_services.totp_disable(user=form.user)
        messages.success(self.request, "Two-factor sign-in is off; its backup codes are gone.")
        return redirect("console:account")


@method_decorator(never_cache, name="dispatch")
class LoginCodeView(FormView):  # type: ignore[type-arg]
    """The second step of signing in with two-factor on: the password was right (the login
    view noted the user in the session), and the authenticator's code, or one of the
    account's backup codes, signs in.

    Guessing is bounded twice over, and neither bound lives in the session, so starting the
    sign-in again resets nothing: django-otp backs the step off after each wrong code (1, 2,
    4, ... seconds; meanwhile every code is refused unchecked, with a 429 that says how long
    to wait), and each wrong code counts as a failed sign-in for django-axes, so after
    LOGIN_FAILURE_LIMIT of them (wrong passwords included) the account is locked out: the
    password step and this one are refused, the right code too, until the cool-off ends."""

    form_class = LoginCodeForm
    template_name = "registration/login_code.html"
    user: User  # the account whose password was right, and its pending sign-in (dispatch)
    pending: dict[str, Any]

    def pending_user(self) -> tuple[User, dict[str, Any]] | None:
        pending = self.request.session.get(SESSION_SECOND_STEP)
        if not isinstance(pending, dict):
            return None
        if timezone.now().timestamp() - pending.get("at", 0) > SECOND_STEP_SECONDS:
            return None
        user = User.objects.filter(pk=str(pending.get("user", "")), is_active=True).first()
        return (user, pending) if user is not None else None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        found = self.pending_user()
        if found is None:
            request.session.pop(SESSION_SECOND_STEP, None)
            messages.info(request, "Sign in with your password first.")
            return redirect("console:login")
        self.user, self.pending = found
        return cast(HttpResponse, super().dispatch(request, *args, **kwargs))

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refused = code_step_refusal(request, email=self.user.email)
        if refused is not None:
            # Locked out: this half-done sign-in is over; after the cool-off it starts anew.
            request.session.pop(SESSION_SECOND_STEP, None)
            return refused
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: LoginCodeForm) -> HttpResponse:
        user, pending = self.user, self.pending
        check = tenant_services.two_factor_verify(user=user, code=form.cleaned_data["code"])
        if check.retry_at is not None:
            wait = check.retry_seconds
            form.add_error(
                None,
                f"Too many wrong codes: wait {wait} second{'s' if wait != 1 else ''}, then "
                "try again. Until then every code is refused, the right one too.",
            )
            response = self.form_invalid(form)
            response.status_code = 429
            response["Retry-After"] = str(wait)
            return response
        if check.device is None:
            if code_step_failed(self.request, email=user.email):
                # AxesMiddleware answers the lock-out page instead of this one.
                self.request.session.pop(SESSION_SECOND_STEP, None)
            form.add_error("code", "That code is not right.")
            return self.form_invalid(form)
        del self.request.session[SESSION_SECOND_STEP]
        auth_login(self.request, user, backend=pending.get("backend") or MODEL_BACKEND)
        otp_login(self.request, check.device)
        after_sign_in(self.request, user)
        if check.backup_codes_left is not None:
            left = check.backup_codes_left
            note = f"You signed in with a backup code; {left} unused left."
            if left <= BACKUP_CODES_LOW:
                messages.warning(self.request, f"{note} Make new ones on your account page.")
            else:
                messages.info(self.request, note)
        return redirect(pending.get("next") or settings.LOGIN_REDIRECT_URL)


# --- members and invitations -------------------------------------------------------------------


def _send_invitation(request: HttpRequest, created: tenant_services.InvitationCreated) -> None:
    invitation = created.invitation
    _send(
        request,
        to=invitation.email,
        subject=f"You are invited to {invitation.tenant.name} on OpenPlatform",
        template="console/accounts/invitation_email.txt",
        invitation=invitation,
        inviter=request.user,
        link=_link(request, "invitation", token=created.token),
    )


def _refuse(exc: PlatformError) -> None:
    """A service's refusal as the console's answer: 404 for what is not there (or another
    tenant's), 403 for what the role may not do; others become a message (the caller's)."""
    if isinstance(exc, NotFound):
        raise Http404(exc.detail) from exc
    if isinstance(exc, Forbidden):
        raise PermissionDenied(exc.detail) from exc


class MembersView(TenantMixin, TemplateView):
    """Every member sees the list; owners and admins also the forms for what they manage."""

    template_name = "console/accounts/members.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        roles = tenant_services.manageable_roles(self.membership.role) if self.can_write else set()
        members = list(tenant_selectors.member_list(tenant=self.tenant))
        invitations = tenant_selectors.invitation_list(tenant=self.tenant) if roles else []
        context.update(
            members=[(m, m.role in roles) for m in members],
            # (invitation, whether this member may revoke it: invite as its role)
            invitations=[(i, i.role in roles) for i in invitations],
            role_choices=[
                (value, label)
                for value, label in RoleForm.base_fields["role"].choices  # type: ignore[attr-defined]
                if value in roles
            ],
            invite_form=InviteForm(roles=frozenset(roles)) if roles else None,
        )
        return context


class _MemberWriteView(WriterMixin, View):
    http_method_names = ["post"]

    def finish(self, form: Form | None, call: Any, success: str) -> HttpResponse:
        if form is not None and not form.is_valid():
            messages.error(
                self.request, " ".join(str(e) for errs in form.errors.values() for e in errs)
            )
            return redirect("console:members")
        try:
            call()
        except PlatformError as exc:
            _refuse(exc)
            messages.error(self.request, exc.detail)
            return redirect("console:members")
        messages.success(self.request, success)
        return redirect("console:members")


class InviteView(_MemberWriteView):
    def post(self, request: HttpRequest) -> HttpResponse:
        roles = tenant_services.manageable_roles(self.membership.role)
        if not roles:
            raise PermissionDenied("Your role cannot invite members.")
        form = InviteForm(request.POST, roles=roles)

        def call() -> None:
            created = tenant_services.invitation_create(
                tenant=self.tenant,
                actor=request.user,  # type: ignore[arg-type]
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
            )
            try:
                _send_invitation(request, created)
            except OSError as exc:  # smtplib's errors too: the invitation is stored already
                raise Unavailable(
                    "The invitation is saved, but its email could not be sent: invite again "
                    "in a moment."
                ) from exc

        return self.finish(form, call, f"Invitation sent to {form.data.get('email', '')}.")


class MemberRoleView(_MemberWriteView):
    def post(self, request: HttpRequest, membership_id: int) -> HttpResponse:
        form = RoleForm(request.POST)

        def call() -> None:
            tenant_services.membership_role_change(
                tenant=self.tenant,
                actor=request.user,  # type: ignore[arg-type]
                membership_id=membership_id,
                role=form.cleaned_data["role"],
            )

        return self.finish(form, call, "Role changed.")


class MemberRemoveView(_MemberWriteView):
    def post(self, request: HttpRequest, membership_id: int) -> HttpResponse:
        def call() -> None:
            tenant_services.membership_remove(
                tenant=self.tenant,
                actor=request.user,  # type: ignore[arg-type]
                membership_id=membership_id,
            )

        return self.finish(None, call, "Member removed.")


class InvitationRevokeView(_MemberWriteView):
    """POST: revoke a pending invitation (whoever may invite as its role); its link then says
    it is no longer valid. Another tenant's invitation is a 404, one beyond the role a 403."""

    def post(self, request: HttpRequest, invitation_id: uuid.UUID) -> HttpResponse:
        def call() -> None:
            tenant_services.invitation_revoke(
                tenant=self.tenant,
                actor=request.user,  # type: ignore[arg-type]
                invitation_id=invitation_id,
            )

        return self.finish(None, call, "Invitation revoked: its link no longer works.")


class LeaveView(TenantMixin, View):
    """POST: leave the session's tenant (any role, also a viewer; not the last owner)."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        try:
            tenant_services.membership_leave(tenant=self.tenant, user=request.user)  # type: ignore[arg-type]
        except Conflict as exc:
            messages.error(request, exc.detail)
            return redirect("console:members")
        request.session.pop(SESSION_TENANT, None)
        messages.success(request, f"You left {self.tenant.name}.")
        return redirect("console:dashboard")


@method_decorator(never_cache, name="dispatch")
class InvitationView(View):
    """The link of an invitation email. GET shows it: signed in as its address, with an
    Accept button; signed out, with sign-in and sign-up. POST (signed in) accepts it."""

    def invitation(self, token: str) -> Invitation:
        invitation = tenant_selectors.invitation_by_token(token=token)
        if invitation is None:
            raise Http404("No such invitation.")
        return invitation

    def get(self, request: HttpRequest, token: str, form: Form | None = None) -> HttpResponse:
        invitation = self.invitation(token)
        has_account = User.objects.filter(email=invitation.email).exists()
        context = {
            "invitation": invitation,
            "token": token,
            "has_account": has_account,
            "signup_form": form
            or (None if has_account else InvitedSignupForm(email=invitation.email)),
            "login_url": f"{reverse('console:login')}?next={request.path}",
        }
        return render(
            request, "console/accounts/invitation.html", context, status=400 if form else 200
        )

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect(f"{reverse('console:login')}?next={request.path}")
        try:
            membership = tenant_services.invitation_accept(token=token, user=request.user)
        except PlatformError as exc:
            _refuse(exc)
            messages.error(request, exc.detail)
            return redirect("console:invitation", token=token)
        request.session[SESSION_TENANT] = str(membership.tenant_id)
        messages.success(request, f"Welcome to {membership.tenant.name}.")
        return redirect("console:dashboard")


class InvitationSignupView(InvitationView):
    """POST password: a new account for the invitation's address, which joins at once."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        invitation = self.invitation(token)
        form = InvitedSignupForm(request.POST, email=invitation.email)
        if not form.is_valid():
            return self.get(request, token, form=form)
        try:
            membership = tenant_services.account_signup_invited(
                token=token, password=form.cleaned_data["password"]
            )
        except PlatformError as exc:
            _refuse(exc)
            messages.error(request, exc.detail)
            return redirect("console:invitation", token=token)
        auth_login(request, membership.user, backend=MODEL_BACKEND)
        request.session[SESSION_TENANT] = str(membership.tenant_id)
        messages.success(request, f"Welcome to {membership.tenant.name}.")
        return redirect("console:dashboard")


urlpatterns = [
    path("login/code/", LoginCodeView.as_view(), name="login-code"),
    path("signup/", SignupView.as_view(), name="signup"),
    path("verify/<str:token>/", VerifyView.as_view(), name="verify"),
    path("verify/", VerifyResendView.as_view(), name="verify-resend"),
    path("account/", AccountView.as_view(), name="account"),
    path("account/password/", PasswordChangeView.as_view(), name="password-change"),
    path("account/password/done/", PasswordChangeDoneView.as_view(), name="password-change-done"),
    path("account/two-factor/", TwoFactorSetupView.as_view(), name="two-factor-setup"),
    path("account/two-factor/disable/", TwoFactorDisableView.as_view(), name="two-factor-disable"),
    path(
        "account/two-factor/backup-codes/",
        BackupCodesView.as_view(),
        name="two-factor-backup-codes",
    ),
    path("password-reset/", PasswordResetView.as_view(), name="password-reset"),
    path("password-reset/sent/", PasswordResetDoneView.as_view(), name="password-reset-done"),
    path(
        "password-reset/<uidb64>/<token>/",
        PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
    path(
        "password-reset/done/",
        PasswordResetCompleteView.as_view(),
        name="password-reset-complete",
    ),
    path("members/", MembersView.as_view(), name="members"),
    path("members/invite/", InviteView.as_view(), name="member-invite"),
    path("members/leave/", LeaveView.as_view(), name="member-leave"),
    path("members/<int:membership_id>/role/", MemberRoleView.as_view(), name="member-role"),
    path("members/<int:membership_id>/remove/", MemberRemoveView.as_view(), name="member-remove"),
    path(
        "members/invitations/<uuid:invitation_id>/revoke/",
        InvitationRevokeView.as_view(),
        name="invitation-revoke",
    ),
    path("invitations/<str:token>/", InvitationView.as_view(), name="invitation"),
    path(
        "invitations/<str:token>/signup/",
        InvitationSignupView.as_view(),
        name="invitation-signup",
    ),
]


class MyInvitationsView(LoginRequiredMixin, TemplateView):
    """The pending invitations of the signed-in address (also for a person in no tenant)."""

    template_name = "console/accounts/my_invitations.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        email = self.request.user.email  # type: ignore[union-attr]
        context["invitations"] = list(tenant_selectors.invitations_for_email(email=email))
        return context


class InvitationAcceptView(LoginRequiredMixin, View):
    """POST: accept one of the signed-in address's invitations by its id."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, invitation_id: str) -> HttpResponse:
        try:
            membership = tenant_services.invitation_accept_own(
                invitation_id=invitation_id,
                user=request.user,  # type: ignore[arg-type]
            )
        except PlatformError as exc:
            _refuse(exc)
            messages.error(request, exc.detail)
            return redirect("console:my-invitations")
        request.session[SESSION_TENANT] = str(membership.tenant_id)
        messages.success(request, f"Welcome to {membership.tenant.name}.")
        return redirect("console:dashboard")


class TenantNewView(LoginRequiredMixin, View):
    """POST name: a new tenant on the default plan with the signed-in person as owner (for
    people who belong to none, or want another). Needs a confirmed address."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        user: User = request.user  # type: ignore[assignment]
        if not tenant_selectors.is_verified(user):
            raise PermissionDenied("Confirm your email address first.")
        try:
            created = tenant_services.tenant_create(
                name=request.POST.get("name", "").strip()[:100],
                owner_email=user.email,
                actor=f"user:{user.email}",
            )
        except PlatformError as exc:
            messages.error(request, exc.detail)
            return redirect("console:my-invitations")
        request.session[SESSION_TENANT] = str(created.tenant.id)
        messages.success(request, f"Tenant \u201c{created.tenant.name}\u201d created.")
        return redirect("console:dashboard")


urlpatterns += [
    path("invitations/", MyInvitationsView.as_view(), name="my-invitations"),
    path(
        "invitations/<uuid:invitation_id>/accept/",
        InvitationAcceptView.as_view(),
        name="invitation-accept",
    ),
    path("tenants/new/", TenantNewView.as_view(), name="tenant-new"),
]
