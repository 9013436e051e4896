"""Settings fail closed: with no DJANGO_SETTINGS_MODULE every entry point loads the production
settings (which refuse the dev secret), and the test settings refuse a Redis URL that names no
database. Each case runs in a fresh interpreter, since settings are read once per process."""

from __future__ import annotations

import secrets

import pytest

from tests.openplatform.settings.test_production import REFUSAL, production_env, run

PRINT_SETTINGS = (
    "import os; from django.conf import settings; "
    "print(os.environ['DJANGO_SETTINGS_MODULE'], settings.DEBUG)"
)


@pytest.mark.parametrize(
    "entry",
    ["import openplatform.asgi", "import openplatform.wsgi", "import openplatform.celery"],
    ids=["asgi", "wsgi", "celery"],
)
def test_an_entry_point_without_a_settings_module_runs_production(entry: str) -> None:
    """Importing the ASGI, WSGI or Celery app with no DJANGO_SETTINGS_MODULE and no
    SECRET_KEY stops with the production refusal (never the dev settings and their secret);
    with a real key it runs production with DEBUG off."""
    code = f"{entry}; {PRINT_SETTINGS}"
    refused = run(["-c", code], production_env(DJANGO_SETTINGS_MODULE=None, SECRET_KEY=None))

    assert refused.returncode != 0
    assert REFUSAL in refused.stderr

    env = production_env(DJANGO_SETTINGS_MODULE=None, SECRET_KEY=secrets.token_urlsafe(64))
    started = run(["-c", code], env)

    assert started.returncode == 0, started.stderr
    assert started.stdout.split() == ["openplatform.settings.production", "False"]


def test_manage_py_without_a_settings_module_runs_production() -> None:
    """manage.py with no DJANGO_SETTINGS_MODULE refuses to start without a SECRET_KEY."""
    result = run(
        ["manage.py", "check"], production_env(DJANGO_SETTINGS_MODULE=None, SECRET_KEY=None)
    )

    assert result.returncode != 0
    assert REFUSAL in result.stderr


def test_the_dev_secret_is_refused_by_production() -> None:
    """The dev settings' fixed key does not start production."""
    result = run(
        ["-c", "import openplatform.asgi"],
        production_env(SECRET_KEY="dev-only-insecure-key-never-used-in-production"),
    )

    assert result.returncode != 0
    assert REFUSAL in result.stderr


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379", "redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/x"]
)
def test_test_settings_refuse_a_redis_url_without_a_database(url: str) -> None:
    """The suite empties its Redis database: a URL that names none is refused at start-up,
    so `redis://host:6379` can never make it flush database 0."""
    env = production_env(DJANGO_SETTINGS_MODULE="openplatform.settings.test", REDIS_URL=url)
    result = run(["-c", "import django; django.setup()"], env)

    assert result.returncode != 0
    assert "names no database" in result.stderr


def test_test_settings_use_their_own_database_of_the_named_server() -> None:
    """redis://host:port/0 becomes database REDIS_TEST_DB (15 by default) of that server,
    for the data and for Celery's broker alike."""
    env = production_env(
        DJANGO_SETTINGS_MODULE="openplatform.settings.test",
        REDIS_URL="redis://10.1.2.3:6380/0",
        REDIS_TEST_DB=None,
    )
    code = "from django.conf import settings; print(settings.REDIS_URL, settings.CELERY_BROKER_URL)"
    result = run(["-c", code], env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["redis://10.1.2.3:6380/15", "redis://10.1.2.3:6380/15"]
