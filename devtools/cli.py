"""The commands of ``python -m devtools`` (what ``./dev`` runs): ``up``, ``test``, ``manage``
and ``bench``, and :func:`main`, which dispatches to them.

Commands:

``up [--port N]``
    Data under ``.openplatform/`` (kept between runs); migrates, ensures the demo tenant,
    collects static files, starts gunicorn (the ASGI app), a Celery worker and Celery beat,
    waits for ``/readyz`` and prints the console URL, the login and an API key. From then on
    a child that exits on its own (a crash, ``kill -9``) is restarted with the same command,
    like systemd's ``Restart=always``: after 1 s, doubled for every quick exit in a row up to
    30 s, and back to 1 s once it has stayed up for 60 s; what is left of its process group
    is stopped first. A child that dies before ``/readyz`` answers fails start-up (exit 1).
    SIGINT, SIGTERM or SIGHUP stops every process it started (a second one kills at once),
    cancels any pending restart and exits 0.
``test [pytest args]``
    The test suite against servers in a temporary directory (deleted afterwards); exits with
    pytest's exit code.
``manage ARGS``
    ``manage.py ARGS`` against the servers of ``.openplatform/`` (shared with a running
    ``up``).
``bench ARGS``
    ``python -m bench ARGS`` against servers in a temporary directory.

When ``DATABASE_URL`` / ``REDIS_URL`` are set, those servers are used instead of embedded ones.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from devtools.common import PYTHON, ROOT, DevError, say
from devtools.embedded import Services, describe, embedded_services
from devtools.processes import run_foreground
from devtools.supervisor import Platform

DEFAULT_PORT = 8000
DEV_SETTINGS = "openplatform.settings.dev"
TEST_SETTINGS = "openplatform.settings.test"


def _with_services(persistent: bool, settings: str, cmd: Callable[[Services], list[str]]) -> int:
    """Run ``cmd`` in the foreground against (embedded) servers; return its exit status."""
    with embedded_services(persistent=persistent) as services:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings
        return run_foreground(cmd(services))


def cmd_test(args: Sequence[str]) -> int:
    """The test suite; the settings module is always the test one."""

    def command(services: Services) -> list[str]:
        say(f"tests use {describe(services)}")
        return [PYTHON, "-m", "pytest", *args]

    return _with_services(False, TEST_SETTINGS, command)


def cmd_manage(args: Sequence[str]) -> int:
    """manage.py against the servers of .openplatform/ (shared with a running ``up``)."""
    settings = os.environ.get("DJANGO_SETTINGS_MODULE", DEV_SETTINGS)
    return _with_services(True, settings, lambda _s: [PYTHON, "manage.py", *args])


def cmd_bench(args: Sequence[str]) -> int:
    """The benchmark harness against throwaway servers. DEBUG stays off so Django's query
    log does not distort the memory numbers."""
    settings = os.environ.get("DJANGO_SETTINGS_MODULE", DEV_SETTINGS)
    os.environ.setdefault("DEBUG", "false")

    def command(services: Services) -> list[str]:
        say(f"benchmarks use {describe(services)}")
        return [PYTHON, "-m", "bench", *args]

    return _with_services(False, settings, command)


def cmd_up(args: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="./dev up", description="Run the whole platform.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="web port (8000)")
    options = parser.parse_args(args)
    return Platform(options.port).run()


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "up": cmd_up,
    "test": cmd_test,
    "manage": cmd_manage,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv`` (default: sys.argv[1:]) to a command; return the exit status.

    A DevError is reported as one line on stderr and exit status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    if argv[0] not in COMMANDS:
        print(f"unknown command {argv[0]!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    os.chdir(ROOT)
    try:
        return COMMANDS[argv[0]](argv[1:])
    except DevError as exc:
        say(f"error: {exc}", stream=sys.stderr)
        return 1
