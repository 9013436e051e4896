"""openplatform.settings.production refuses to start without a real SECRET_KEY and passes
Django's deployment checks when configured. Each case runs in a fresh interpreter, since
settings are read once per process."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings as django_settings

PRODUCTION = "openplatform.settings.production"
SETUP = "import django; django.setup()"
REFUSAL = "SECRET_KEY must be set to a random value of at least 50 characters in production"


def production_env(**overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SECRET_KEY"))}
    env["DJANGO_SETTINGS_MODULE"] = PRODUCTION
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed arguments, our own interpreter
        [sys.executable, *args],
        cwd=django_settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "secret_key",
    [
        None,
        "",
        "short",
        "a" * 64,
        "abcd" * 16,
        "django-insecure-" + secrets.token_urlsafe(48),
    ],
    ids=["unset", "empty", "short", "one-char", "four-chars", "insecure-marker"],
)
def test_production_refuses_a_missing_or_weak_secret_key(secret_key: str | None) -> None:
    """Start-up stops with ImproperlyConfigured and says how to make a good key."""
    result = run(["-c", SETUP], production_env(SECRET_KEY=secret_key))

    assert result.returncode != 0
    assert "django.core.exceptions.ImproperlyConfigured" in result.stderr
    assert REFUSAL in result.stderr
    assert "secrets.token_urlsafe(64)" in result.stderr


def test_production_passes_the_deployment_checks() -> None:
    """With a long random SECRET_KEY and ALLOWED_HOSTS, `check --deploy` reports nothing at
    WARNING level or above."""
    env = production_env(SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="example.com")

    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_production_values() -> None:
    """Debug is off even if DEBUG is set, HTTPS is enforced with HSTS, cookies are secure,
    the probes are exempt from the HTTPS redirect, and revocation stays under one second."""
    code = (
        f"{SETUP}; import json; from django.conf import settings as s; print(json.dumps(dict("
        "debug=s.DEBUG, hosts=s.ALLOWED_HOSTS, ssl=s.SECURE_SSL_REDIRECT,"
        " proxy=list(s.SECURE_PROXY_SSL_HEADER), exempt=s.SECURE_REDIRECT_EXEMPT,"
        " hsts=s.SECURE_HSTS_SECONDS, session=s.SESSION_COOKIE_SECURE,"
        " csrf=s.CSRF_COOKIE_SECURE, ttl=s.HOT_CACHE_TTL_SECONDS)))"
    )
    env = production_env(
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="example.com",
        DEBUG="true",
        SECURE_SSL_REDIRECT=None,
        SECURE_HSTS_SECONDS=None,
        HOT_CACHE_TTL_SECONDS=None,
    )

    result = run(["-c", code], env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "debug": False,
        "hosts": ["example.com"],
        "ssl": True,
        "proxy": ["HTTP_X_FORWARDED_PROTO", "https"],
        "exempt": [r"^healthz$", r"^readyz$"],
        "hsts": 31536000,
        "session": True,
        "csrf": True,
        "ttl": 0.5,
    }
