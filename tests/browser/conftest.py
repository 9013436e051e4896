"""Browser tests: Debian's Chromium, driven by Playwright, against the platform as production
runs it.

The server is the system suite's ``platform`` (tests/system/conftest.py): gunicorn serving the
ASGI app, a Celery worker and beat, with the production settings, on the suite's test database.
So a browser test sees what a user sees: the production CSP and cookies, static files served
by openplatform/asgi.py from a real ``collectstatic`` (fingerprinted, compressed), the 404
page. Django's live server would be quicker to start but runs WSGI with the test settings,
and neither the static serving nor the production headers would be what the test looked at.

One platform and one Chromium per module, a new context (cookies, storage) per test. Every
test here carries the ``browser`` marker (``./dev test -m browser`` runs only these;
``./dev test`` and CI run them with the rest) and is skipped, saying why, when
/usr/bin/chromium is not installed (``apt-get install -y chromium``; .ci/run does that).
Playwright never downloads a browser here.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.db import connections
from django.utils.text import slugify

from tests.factories import PASSWORD
from tests.system.conftest import PYTHON, ROOT, ApiTenant, Platform, platform  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
#: The width of a phone (an iPhone 12 to 15) in CSS pixels.
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
HERE = Path(__file__).resolve().parent
MISSING = f"{CHROMIUM} is missing: apt-get install -y chromium"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Chromium against the running platform")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``browser`` (and django_db: the platform runs on the
    test database); skip them all when there is no Chromium to drive, unless BROWSER_REQUIRED
    is set (CI sets it): then they fail."""
    missing = pytest.mark.skip(reason=MISSING)
    for item in items:
        if HERE not in Path(str(item.fspath)).resolve().parents:
            continue
        item.add_marker(pytest.mark.browser)
        item.add_marker(pytest.mark.django_db)
        if not CHROMIUM.exists() and not os.environ.get("BROWSER_REQUIRED"):
            item.add_marker(missing)


@pytest.fixture(scope="session", autouse=True)
def collected_static(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``collectstatic`` with the production settings into a folder of this session, which the
    platform's processes serve (STATIC_ROOT in their environment, inherited from ours): the
    production storage needs its manifest before a template can name a static file."""
    root = tmp_path_factory.mktemp("staticfiles")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "openplatform.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "STATIC_ROOT": str(root),
    }
    done = subprocess.run(  # noqa: S603
        [PYTHON, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"collectstatic failed ({done.returncode}):\n{done.stderr}")
    before = os.environ.get("STATIC_ROOT")
    os.environ["STATIC_ROOT"] = str(root)
    yield root
    if before is None:
        os.environ.pop("STATIC_ROOT", None)
    else:
        os.environ["STATIC_ROOT"] = before


# --- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium(site: Site) -> Iterator[Any]:
    """A headless Chromium, started after the module's platform.

    Playwright's sync API keeps an event loop running in this thread, so Django would take
    the test's own ORM calls (fixtures, transactions) for calls from async code and refuse
    them. DJANGO_ALLOW_ASYNC_UNSAFE lets them through in this process only: the platform's
    processes, started before, do not inherit it."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():  # only with BROWSER_REQUIRED: the tests are skipped otherwise
        pytest.fail(MISSING)
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            yield browser
            browser.close()
            # While Playwright's event loop runs in this thread, Django keeps the thread's
            # database connections per context (asgiref's Local), so the tests' transactions
            # used connections of their own: closed here, or the test database could not be
            # dropped at the end ("being accessed by other users").
            connections.close_all()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@dataclass
class ConsoleLog:
    """What the pages of one test wrote to the browser's console."""

    messages: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return [text for text in self.messages if "Content Security Policy" in text]

    def errors(self) -> list[str]:
        return [text for text in self.messages if text.startswith("error:")]


@pytest.fixture
def console_log() -> ConsoleLog:
    return ConsoleLog()


def open_page(
    chromium: Any,
    base_url: str,
    log: ConsoleLog,
    viewport: dict[str, int],
    state: dict[str, Any] | None = None,
) -> Any:
    """A page in a new context (the cookies of ``state``, or none) whose console messages go to
    ``log``."""
    context = chromium.new_context(base_url=base_url, viewport=viewport, storage_state=state)
    page = context.new_page()
    page.on("console", lambda message: log.messages.append(f"{message.type}: {message.text}"))
    page.set_default_timeout(10_000)
    return page


@pytest.fixture(scope="module")
def sessions(site: Site, chromium: Any) -> dict[str, dict[str, Any]]:
    """The cookies of the owner and of the viewer, each signed in once per module (a sign-in
    through the form costs a few requests; the tests that are about signing in do it
    themselves)."""
    states = {}
    for who, email in (("owner", site.owner), ("viewer", site.viewer)):
        page = open_page(chromium, site.url, ConsoleLog(), DESKTOP)
        sign_in(page, email)
        states[who] = page.context.storage_state()
        page.context.close()
    return states


@pytest.fixture
def page(site: Site, chromium: Any, console_log: ConsoleLog) -> Iterator[Any]:
    """A desktop-sized page with nobody signed in."""
    page = open_page(chromium, site.url, console_log, DESKTOP)
    yield page
    page.context.close()


@pytest.fixture
def owner_page(
    site: Site, chromium: Any, sessions: dict[str, Any], console_log: ConsoleLog
) -> Iterator[Any]:
    """A desktop-sized page of the signed-in owner."""
    page = open_page(chromium, site.url, console_log, DESKTOP, sessions["owner"])
    yield page
    page.context.close()


@pytest.fixture
def viewer_page(
    site: Site, chromium: Any, sessions: dict[str, Any], console_log: ConsoleLog
) -> Iterator[Any]:
    """A desktop-sized page of the signed-in viewer."""
    page = open_page(chromium, site.url, console_log, DESKTOP, sessions["viewer"])
    yield page
    page.context.close()


@pytest.fixture
def owner_phone(
    site: Site, chromium: Any, sessions: dict[str, Any], console_log: ConsoleLog
) -> Iterator[Any]:
    """A page as wide as a phone, of the signed-in owner."""
    page = open_page(chromium, site.url, console_log, PHONE, sessions["owner"])
    yield page
    page.context.close()


def sign_in(page: Any, email: str, password: str = PASSWORD) -> None:
    """Sign in through the login form and wait for the dashboard."""
    page.goto("/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(at_path("/"))


def at_path(path: str) -> Any:
    """A URL test for ``page.wait_for_url``: the page's path is ``path``."""
    return lambda url: urlsplit(url).path == path


# --- the site ----------------------------------------------------------------------------------


@dataclass
class Site:
    """The running platform and one tenant in it: its owner (with a password) and a viewer."""

    url: str
    tenant: ApiTenant
    owner: str
    viewer: str
    platform: Platform


@pytest.fixture(scope="module")
def site(platform: Platform, django_db_blocker: Any) -> Site:  # noqa: F811
    """A tenant made by ``tenant_create``, whose owner can sign in with PASSWORD, with a
    viewer, and a queue ``orders`` holding three messages. Written outside any test's
    transaction so the platform's processes see it; the platform empties the tables after
    the module."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from tenants.models import Role, Tenant, User
    from tests.factories import make_member

    hasher = PBKDF2PasswordHasher()

    tenant = platform.tenant("Browser Co")
    owner = f"owner@{slugify('Browser Co')}.test"
    viewer = "viewer@browser-co.test"
    with django_db_blocker.unblock():
        make_member(tenant=Tenant.objects.get(id=tenant.id), email=viewer, role=Role.VIEWER)
        for user in User.objects.filter(email__in=[owner, viewer]):
            # The production settings check passwords with PBKDF2 only (the suite's MD5
            # hashes would not match there).
            user.password = hasher.encode(PASSWORD, hasher.salt())
            user.save(update_fields=["password"])
    assert tenant.http.post("/v1/queues", json={"name": "orders"}).status_code == 201
    batch = {"messages": [{"body": {"n": n}} for n in range(3)]}
    assert tenant.http.post("/v1/queues/orders/messages", json=batch).status_code == 201
    return Site(url=platform.url, tenant=tenant, owner=owner, viewer=viewer, platform=platform)
