"""Forms of the account pages: sign-up, invitations, members, two-factor sign-in."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.password_validation import validate_password

from tenants.models import Role, User


class SignupForm(forms.Form):
    email = forms.EmailField(
        label="Email",
        max_length=254,
        widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"}),
    )
    password = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    tenant_name = forms.CharField(
        label="Organisation", max_length=100, help_text="The tenant your queues will live in."
    )

    def clean_email(self) -> str:
        return str(self.cleaned_data["email"]).strip().lower()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        password = data.get("password")
        if password and data.get("email"):
            try:
                validate_password(password, User(email=data["email"]))
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return data


class InvitedSignupForm(forms.Form):
    """The password of a new account made from an invitation link (its address is the
    invitation's)."""

    password = forms.CharField(
        label="Choose a password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args: Any, email: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.email = email

    def clean_password(self) -> str:
        password = str(self.cleaned_data["password"])
        validate_password(password, User(email=self.email))
        return password


def _role_choices(roles: frozenset[str]) -> list[tuple[str, str]]:
    return [(value, label) for value, label in Role.choices if value in roles]


class InviteForm(forms.Form):
    email = forms.EmailField(label="Email", max_length=254)
    role = forms.ChoiceField(label="Role")

    def __init__(self, *args: Any, roles: frozenset[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = _role_choices(roles)  # type: ignore[attr-defined]
        if Role.DEVELOPER in roles:
            self.fields["role"].initial = Role.DEVELOPER.value

    def clean_email(self) -> str:
        return str(self.cleaned_data["email"]).strip().lower()


class RoleForm(forms.Form):
    """Any known role: whether the member may give it is the service's call (a 403)."""

    role = forms.ChoiceField(label="Role", choices=Role.choices)


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code from your authenticator app",
        max_length=12,
        widget=forms.TextInput(
            attrs={
                "autofocus": True,
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "pattern": "[0-9 ]*",
            }
        ),
    )

    def clean_code(self) -> str:
        return str(self.cleaned_data["code"]).replace(" ", "")


class LoginCodeForm(forms.Form):
    """The code step of a sign-in: the authenticator's 6 digits, or a backup code (letters
    and digits; spaces, dashes and case do not matter: the service compares it normalised)."""

    code = forms.CharField(
        label="Code from your authenticator app, or a backup code",
        max_length=20,
        widget=forms.TextInput(
            attrs={
                "autofocus": True,
                "autocomplete": "one-time-code",
                "autocapitalize": "none",
                "spellcheck": "false",
            }
        ),
    )


class PasswordCheckForm(forms.Form):
    """The account's current password, asked before a security setting is weakened."""

    password = forms.CharField(
        label="Your password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_password(self) -> str:
        password = str(self.cleaned_data["password"])
        if not self.user.check_password(password):
            raise forms.ValidationError("That is not your password.")
        return password
