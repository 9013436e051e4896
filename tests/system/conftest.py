"""The platform as production runs it: gunicorn serving the ASGI app, a Celery worker and Celery
beat, each its own process (and process group) with the production settings, on the suite's
test database and a Redis database of their own. Tests talk to it over HTTP only, like a
tenant's integration, and create tenants with the operators' ``manage.py tenant_create``.

One platform per test module. When the module ends, each main process gets SIGTERM (as
deploy/systemd's KillMode=mixed does); the module fails if one needs SIGKILL, exits with a
non-zero status, or logged a traceback, an ERROR or CRITICAL line, or the same message over
and over. Then the platform's Redis database is emptied and every table it wrote to is
truncated, so the rest of the suite sees empty tables.

The platform's Redis database is not the suite's (REDIS_TEST_DB): the autouse ``clean_redis``
empties that one around every test, which would wipe the Celery broker's bindings under the
running worker. It is SYSTEM_TEST_REDIS_DB (default 14) on the suite's Redis server.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils.text import slugify

from devtools.processes import group_members
from devtools.supervisor import platform_commands
from tests.factories import api_headers

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
#: A message logged more often than this (timestamps, pids and ids aside) is a loop of
#: complaints, not start-up or shutdown chatter (which comes once per process).
MAX_REPEATS = 3

#: Short beat intervals (the settings read them in openplatform/settings/base.py), so every
#: piece of background work runs within seconds.
BEAT_INTERVALS = {
    "HOUSEKEEPING_INTERVAL_SECONDS": "1",
    "KEY_LAST_USED_FLUSH_SECONDS": "2",
    "USAGE_ROLLUP_SECONDS": "2",
    "RETENTION_TRIM_SECONDS": "5",
    "POSITIONS_SNAPSHOT_SECONDS": "5",
}

# --- what a clean log looks like ---------------------------------------------------------------

SEVERE = re.compile(r"Traceback|\b(?:ERROR|CRITICAL)\b")
# Variable parts of a line, replaced in this order before lines are compared: timestamps,
# task ids, addresses, then any number (pids, durations, counts).
VARIABLE = [
    (
        re.compile(
            r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?: ?(?:[+-]\d{2}:?\d{2}|Z))?"
        ),
        "<time>",
    ),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<id>"),
    (re.compile(r"0x[0-9a-fA-F]+"), "<addr>"),
    (re.compile(r"\d+(?:\.\d+)?(?:e-?\d+)?"), "<n>"),
]
# What beat and the worker say for every task they send and run, and the web's line for every
# sign-in: expected to repeat, so not a loop of complaints.
ROUTINE = re.compile(
    r"Scheduler: Sending due task [\w.-]+ \([\w.]+\)"
    r"|Task [\w.]+\[<id>\] (?:received|succeeded in <n>s: .*)$"
    # django-axes at every sign-in: it drops failed attempts older than its cool-off.
    r"|AXES: Cleaned up <n> expired access attempts from database"
)


def normalized(line: str) -> str:
    """``line`` with its variable parts replaced, so repeats of one message compare equal."""
    for pattern, placeholder in VARIABLE:
        line = pattern.sub(placeholder, line)
    return line.strip()


def log_problems(name: str, text: str) -> list[str]:
    """What is wrong with a process's log: severe lines, and messages repeated more than
    MAX_REPEATS times (apart from the routine task lines)."""
    problems = [f"{name}: {line}" for line in text.splitlines() if SEVERE.search(line)]
    counts = Counter(normalized(line) for line in text.splitlines() if line.strip())
    problems += [
        f"{name}: logged {count} times: {line}"
        for line, count in counts.items()
        if count > MAX_REPEATS and not ROUTINE.search(line)
    ]
    return problems


# --- the processes -----------------------------------------------------------------------------


@dataclass
class Child:
    """One process of the platform, leader of its own process group."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"---- {self.name} ({self.log}) ----\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class ApiTenant:
    """A tenant made by ``tenant_create``, and an HTTP client that sends its owner key."""

    slug: str
    id: str
    key: str
    key_id: str
    http: httpx.Client


@dataclass
class Platform:
    """The running platform: its base URL, the environment its processes share, and tenants."""

    url: str
    env: dict[str, str]
    children: list[Child]
    #: Where the processes write the emails they send (Django's file backend), one file each.
    mail_dir: Path
    clients: list[httpx.Client] = field(default_factory=list)

    def outbox(self, to: str) -> list[str]:
        """The emails sent to ``to`` so far, oldest first, each as its raw text."""
        files = sorted(self.mail_dir.glob("*.log"), key=lambda path: path.stat().st_mtime_ns)
        # One file per connection, which may hold several messages, each ending in a line of
        # dashes; a message is the recipient's when a To: header names them.
        messages = []
        for path in files:
            for message in path.read_text().split("-" * 79 + "\n"):
                if re.search(rf"^To: .*\b{re.escape(to)}\b", message, flags=re.MULTILINE):
                    messages.append(message)
        return messages

    def link_sent_to(self, to: str, path_prefix: str) -> str:
        """The last link sent to ``to`` whose path starts with ``path_prefix``."""
        links = [
            link
            for message in self.outbox(to)
            for link in re.findall(r"https?://\S+", message)
            if urlsplit(link).path.startswith(path_prefix)
        ]
        assert links, f"no email to {to} with a link to {path_prefix}"
        return links[-1]

    def tenant(self, name: str) -> ApiTenant:
        """A new tenant named ``name`` (owner owner@<slug>.test), made the way an operator
        makes one: ``manage.py tenant_create --json`` with the platform's settings."""
        slug = slugify(name)
        done = subprocess.run(  # noqa: S603
            [PYTHON, "manage.py", "tenant_create", name, "--owner", f"owner@{slug}.test", "--json"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"tenant_create {name!r} failed ({done.returncode}):\n{done.stderr}")
        created = json.loads(done.stdout)
        client = httpx.Client(
            base_url=self.url,
            headers=api_headers(created["api_key"]),
            timeout=10,
        )
        self.clients.append(client)
        return ApiTenant(
            slug=created["tenant"],
            id=created["tenant_id"],
            key=created["api_key"],
            key_id=created["api_key_id"],
            http=client,
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def platform_redis_url(suite_url: str, db: int) -> str:
    """The suite's Redis server (its host, port, credentials, TLS) with database ``db``."""
    parts = urlsplit(suite_url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def child_database_url(db: dict[str, Any]) -> str:
    """A DATABASE_URL for pytest-django's test database (``db`` is the connection settings
    after set-up). A unix-socket directory as host is percent-encoded, which dj-database-url
    and libpq both read as the socket directory."""
    user = quote(db.get("USER") or "", safe="")
    password = db.get("PASSWORD") or ""
    auth = f"{user}:{quote(password, safe='')}" if password else user
    host = quote(str(db.get("HOST") or ""), safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{quote(db['NAME'], safe='')}"


def start_child(name: str, cmd: list[str], env: dict[str, str], log: Path) -> Child:
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(name, proc, log)


def wait_until_ready(url: str, children: list[Child]) -> None:
    """Until /readyz answers 200 and the worker says it is ready; fails with the logs' tails
    when a process exits first or the deadline passes."""
    worker = next(child for child in children if child.name == "worker")
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        dead = [child for child in children if child.proc.poll() is not None]
        if dead:
            tails = "\n".join(child.tail() for child in children)
            names = ", ".join(f"{c.name} (status {c.proc.returncode})" for c in dead)
            pytest.fail(f"{names} exited during start-up\n{tails}")
        with contextlib.suppress(httpx.HTTPError):
            ready = httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            if ready and " ready." in worker.log.read_text(errors="replace"):
                return
        if time.monotonic() > deadline:
            tails = "\n".join(child.tail() for child in children)
            pytest.fail(f"not ready within {READY_TIMEOUT_SECONDS:.0f} s\n{tails}")
        time.sleep(0.2)


def _wait_group(child: Child, deadline: float) -> bool:
    """True once the child and every process of its group have exited; False at deadline."""
    while True:
        child.proc.poll()
        if child.proc.returncode is not None and not group_members(child.proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def stop_children(children: list[Child]) -> list[str]:
    """Stop as deploy/systemd does (KillMode=mixed): SIGTERM to each main process, which
    stops its own workers, then SIGKILL to the whole group of any that has not ended after
    STOP_TIMEOUT_SECONDS. Returns what went wrong (a SIGKILL that was needed, a non-zero exit
    status).

    Not SIGTERM to the whole group: that reaches the Celery worker's pool processes directly,
    and the worker logs their deaths as errors (WorkerLostError for a task that was running)."""
    problems = []
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for child in children:
        if not _wait_group(child, deadline):
            problems.append(
                f"{child.name}: still running {STOP_TIMEOUT_SECONDS:.0f} s after SIGTERM"
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            _wait_group(child, time.monotonic() + 10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(timeout=5)
        if child.proc.returncode != 0:
            problems.append(f"{child.name}: exit status {child.proc.returncode} after SIGTERM")
    return problems


# --- the database ------------------------------------------------------------------------------


def _row_counts() -> dict[str, int]:
    quote_name = connection.ops.quote_name
    with connection.cursor() as cursor:
        counts = {}
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT count(*) FROM {quote_name(table)}")  # noqa: S608
            counts[table] = cursor.fetchone()[0]
    return counts


def truncate_written(before: dict[str, int]) -> list[str]:
    """Empty every table that was empty in ``before`` and has rows now; returns what else
    differs from ``before`` afterwards (a table that had rows, such as the plans, changed)."""
    quote_name = connection.ops.quote_name
    written = [table for table, rows in _row_counts().items() if rows and not before.get(table)]
    if written:
        with connection.cursor() as cursor:
            names = ", ".join(quote_name(table) for table in written)
            cursor.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    after = _row_counts()
    return [
        f"table {table}: {before.get(table, 0)} rows before the platform ran, {rows} after"
        for table, rows in after.items()
        if rows != before.get(table, 0)
    ]


# --- the fixture -------------------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """pytest-django creates the test database only for a session with a test that declares
    it; the platform runs on it, so every test using the platform declares it."""
    for item in items:
        if "platform" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.django_db)


@pytest.fixture(scope="module")
def platform(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """Web, worker and beat running on the test database and Redis database
    SYSTEM_TEST_REDIS_DB, ready to serve; stopped and cleaned up after the module."""
    redis_db = int(os.environ.get("SYSTEM_TEST_REDIS_DB", "14"))
    suite_db = int(urlsplit(settings.REDIS_URL).path.lstrip("/") or 0)
    assert redis_db != suite_db, "SYSTEM_TEST_REDIS_DB must differ from the suite's Redis db"
    redis_url = platform_redis_url(settings.REDIS_URL, redis_db)
    store = redis.Redis.from_url(redis_url)
    store.flushdb()

    with django_db_blocker.unblock():
        rows_before = _row_counts()
        database_url = child_database_url(settings.DATABASES["default"])

    tmp = tmp_path_factory.mktemp("platform")
    mail_dir = tmp / "mail"
    mail_dir.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"CELERY_BROKER_URL", "REDIS_TEST_DB", "BIND", "ACCESS_LOG"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="openplatform.settings.production",
        SECRET_KEY=secrets.token_urlsafe(48),  # 64 characters
        SECURE_SSL_REDIRECT="false",
        WEB_CONCURRENCY="2",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        PYTHONUNBUFFERED="1",
        # gunicorn's control socket defaults to $HOME/.gunicorn/gunicorn.ctl, shared with any
        # other gunicorn of this user (a `./dev up`); this one gets its own.
        XDG_RUNTIME_DIR=str(tmp),
        # Mail goes to files a test can read, not to an SMTP server on localhost:25.
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(mail_dir),
        **BEAT_INTERVALS,
    )
    commands = platform_commands(port=port, schedule=tmp / "celerybeat-schedule")
    children: list[Child] = []
    running = Platform(url=url, env=env, children=children, mail_dir=mail_dir)
    problems: list[str] = []
    try:
        for name, cmd in commands.items():
            children.append(start_child(name, cmd, env, tmp / f"{name}.log"))
        wait_until_ready(url, children)
        yield running
    finally:
        for client in running.clients:
            client.close()
        problems += stop_children(children)
        for child in children:
            problems += log_problems(child.name, child.log.read_text(errors="replace"))
        store.flushdb()
        store.close()
        with django_db_blocker.unblock():
            problems += truncate_written(rows_before)
            connection.close()
    if problems:
        logs = ", ".join(str(child.log) for child in children)
        pytest.fail("the platform did not run cleanly:\n" + "\n".join(problems) + f"\nlogs: {logs}")
