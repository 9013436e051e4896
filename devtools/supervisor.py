"""``./dev up``: the setup steps (migrate, the demo tenant, static files), then web, worker and
beat as supervised children until a stop request.

Once the platform is ready, a child that exits on its own (a crash, ``kill -9``) is restarted
with the same command, like systemd's ``Restart=always``: after 1 s, doubled for every quick
exit in a row up to 30 s, and back to 1 s once it has stayed up for 60 s; what is left of its
process group is stopped first. A child that dies before ``/readyz`` answers fails start-up.
SIGINT, SIGTERM or SIGHUP stops every process it started, leader first (a second one kills at
once), cancels any pending restart, and ``run`` returns 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from devtools.common import PYTHON, ROOT, STATE_DIR, DevError, say
from devtools.embedded import ServiceRegistry, describe, embedded_services
from devtools.processes import (
    STOP_TIMEOUT_SECONDS,
    exit_description,
    group_members,
    signal_group,
    stop_process_groups,
)

#: How long ``up`` waits for ``/readyz`` before it gives up.
READY_TIMEOUT_SECONDS = 120.0


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived while ``up`` was still starting."""


@dataclass(frozen=True)
class RestartPolicy:
    """When ``up`` restarts a child that exited on its own, like systemd's ``Restart=always``
    with a growing ``RestartSec``: ``delay`` seconds after an exit, doubled for every quick
    exit in a row (a run shorter than ``reset_after`` seconds), at most ``max_delay``. A run of
    ``reset_after`` seconds or more counts as healthy and brings the delay back to ``delay``.
    """

    delay: float = 1.0
    max_delay: float = 30.0
    reset_after: float = 60.0

    def delay_after(self, quick_failures: int) -> float:
        """The restart delay after ``quick_failures`` quick exits in a row before this one."""
        # The exponent is capped so a child that crash-loops for days cannot overflow a float.
        return min(self.delay * 2.0 ** min(quick_failures, 32), self.max_delay)


@dataclass
class Child:
    """A long-running process of ``up``, leader of its own process group, with its restart
    bookkeeping. ``proc`` and ``pump`` are replaced on every restart; between an exit and the
    restart ``restart_at`` (monotonic seconds) is set and ``proc`` is the exited process."""

    name: str
    cmd: list[str]
    proc: subprocess.Popen[bytes]
    pump: threading.Thread
    started: float
    restarts: int = 0
    quick_failures: int = 0
    exited: float = 0.0
    restart_at: float | None = None
    waiting_noted: bool = False


def platform_commands(*, port: int, schedule: Path) -> dict[str, list[str]]:
    """The platform's processes as production runs them: gunicorn serving the ASGI app
    (deploy/gunicorn.conf.py) on 127.0.0.1:``port``, a Celery worker, and Celery beat keeping
    its schedule in ``schedule``. `./dev up` and the system tests both start exactly these."""
    return {
        "web": [PYTHON, "-m", "gunicorn", "openplatform.asgi:application",
                "-c", "deploy/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"],
        "worker": [PYTHON, "-m", "celery", "-A", "openplatform", "worker",
                   "--loglevel", "INFO", "--concurrency", "2"],
        "beat": [PYTHON, "-m", "celery", "-A", "openplatform", "beat", "--loglevel", "INFO",
                 "--schedule", str(schedule)],
    }  # fmt: skip


class Platform:
    """The ``up`` command: setup steps, then web, worker and beat until told to stop.

    Signals only set events (``stop``; a second one sets ``force``); every wait polls them, so
    shutdown always runs in order: children first (SIGTERM to each process group, SIGKILL after
    :data:`STOP_TIMEOUT_SECONDS`), then the embedded servers. Once the platform is ready, a
    child that exits on its own is restarted with the same command after the delay of
    ``restart_policy``; a stop request cancels every pending restart.

    ``registry`` is where the running ``up`` and its children's pids are recorded
    (``.openplatform/services.json`` unless a test passes another).
    """

    #: How often the supervisor looks at its children (and at the stop event).
    POLL_SECONDS = 0.2
    restart_policy = RestartPolicy()

    def __init__(self, port: int, *, registry: ServiceRegistry | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.registry = registry or ServiceRegistry(STATE_DIR)
        self.stop = threading.Event()
        self.force = threading.Event()
        self.children: list[Child] = []

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop.is_set():
            self.force.set()
            return
        self.stop.set()
        say(f"{signal.Signals(signum).name} received: stopping (again to kill at once)")

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        # The children read DJANGO_SETTINGS_MODULE from the environment they inherit: ./dev
        # exports the dev settings; run directly with none set, they fall back to their own
        # fail-closed default (production, set by manage.py and openplatform/celery.py).
        os.environ.setdefault("WEB_CONCURRENCY", "2")
        os.environ["PYTHONUNBUFFERED"] = "1"
        STATE_DIR.mkdir(exist_ok=True)
        self.registry.claim_up(self.url)
        try:
            with embedded_services(persistent=True) as services:
                say(f"using {describe(services)}")
                self._run_platform()
        except Interrupted:
            pass
        finally:
            self.registry.release_up()
        say("stopped")
        return 0

    def _run_platform(self) -> None:
        """Set up, then run the children until a stop request (returns); DevError if a setup
        step fails or a child dies before the platform is ready."""
        self._check_port_free()
        self._step("migrating", [PYTHON, "manage.py", "migrate", "--noinput"])
        demo = self._ensure_demo()
        self._step(
            "collecting static files",
            [PYTHON, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        )

        def ready() -> None:
            self._wait_until_ready()
            self._print_banner(demo)

        self.run_children(ready=ready)

    # -- setup steps -------------------------------------------------------------------------

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted

    def _step(self, title: str, cmd: Sequence[str], *, capture: bool = False) -> str:
        """Run a setup command to completion in its own process group (so Ctrl-C reaches only
        us and we stop it in order); return its stdout when ``capture``. DevError if it fails,
        Interrupted if a stop was requested meanwhile."""
        self._check_stop()
        say(f"{title}...")
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=out if capture else None, start_new_session=True
            )
            while proc.poll() is None:
                if self.stop.wait(0.1):
                    stop_process_groups([proc], timeout=10, force=self.force)
                    raise Interrupted
            if proc.returncode != 0:
                status = exit_description(proc.returncode)
                raise DevError(f"`{' '.join(cmd[1:])}` failed ({status})")
            out.seek(0)
            return out.read().decode(errors="replace")

    def _ensure_demo(self) -> dict[str, str]:
        """Run ``demo_setup``, reusing the saved password and key, and save the result to
        ``.openplatform/demo.json`` (mode 0600)."""
        demo_file = STATE_DIR / "demo.json"
        saved: dict[str, str] = {}
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(demo_file.read_text())
        password = saved.get("password") or secrets.token_urlsafe(12)
        cmd = [PYTHON, "manage.py", "demo_setup", "--json", "--password", password]
        if saved.get("api_key"):
            cmd += ["--reuse-key", saved["api_key"]]
        output = self._step("ensuring the demo tenant", cmd, capture=True)
        result: dict[str, str] | None = None
        for line in reversed(output.splitlines()):
            with contextlib.suppress(ValueError):
                candidate = json.loads(line)
                if isinstance(candidate, dict) and "api_key" in candidate:
                    result = candidate
                    break
        if result is None:
            raise DevError(f"demo_setup printed no JSON with an api_key:\n{output}")
        demo = {
            "url": self.url,
            "username": result["username"],
            "password": result.get("password") or password,
            "api_key": result["api_key"],
        }
        demo_file.touch(mode=0o600)
        demo_file.write_text(json.dumps(demo, indent=2) + "\n")
        return demo

    def _check_port_free(self) -> None:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError as exc:
                raise DevError(
                    f"port {self.port} is in use ({exc.strerror}); try ./dev up --port N"
                ) from exc

    # -- children ----------------------------------------------------------------------------

    def child_commands(self) -> dict[str, list[str]]:
        """The long-running children by name, in start order. Each is started, and restarted,
        with exactly this argv, in :data:`ROOT`, as the leader of a new session."""
        return platform_commands(port=self.port, schedule=STATE_DIR / "celerybeat-schedule")

    def run_children(self, *, ready: Callable[[], None]) -> None:
        """Start every child of :meth:`child_commands`, call ``ready`` (which raises to fail
        start-up, e.g. when a child died meanwhile), then restart each child that exits on
        its own until ``stop`` is set. Every child is stopped on the way out, whether this
        returns or raises; none is started or restarted once ``stop`` is set."""
        try:
            self._start_children()
            ready()
            self._supervise()
        finally:
            self._stop_children()

    def _spawn(self, name: str, cmd: list[str]) -> tuple[subprocess.Popen[bytes], threading.Thread]:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None
        pump = threading.Thread(target=_pump, args=(name, proc.stdout), daemon=True)
        pump.start()
        return proc, pump

    def _start_children(self) -> None:
        for name, cmd in self.child_commands().items():
            self._check_stop()
            proc, pump = self._spawn(name, cmd)
            self.children.append(Child(name, cmd, proc, pump, started=time.monotonic()))
        self._record_children()

    def _record_children(self) -> None:
        # .ci/run reads these pids to check that SIGTERM leaves nothing behind, so a restart
        # must be recorded at once.
        self.registry.record_up_processes({child.name: child.proc.pid for child in self.children})

    def _dead_child(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        say(f"waiting for {self.url}readyz")
        while time.monotonic() < deadline:
            self._check_stop()
            # No restarts yet: a child that cannot start (a port in use, a broken setting)
            # would otherwise be restarted forever.
            dead = self._dead_child()
            if dead is not None:
                status = exit_description(dead.proc.returncode)
                raise DevError(f"{dead.name} exited during start-up ({status})")
            try:
                with urllib.request.urlopen(f"{self.url}readyz", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            self.stop.wait(0.5)
        raise DevError(f"{self.url}readyz did not answer 200 within {READY_TIMEOUT_SECONDS:.0f} s")

    def _supervise(self) -> None:
        """Until a stop request: notice every child that exited on its own and restart it
        once its delay has passed and nothing of its old process group is left."""
        while not self.stop.wait(self.POLL_SECONDS):
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is None:
                    if child.proc.poll() is not None:
                        self._schedule_restart(child, now, exit_description(child.proc.returncode))
                        # Like systemd's KillMode=control-group: what the child left behind
                        # (Celery pool processes, gunicorn workers still holding the port) is
                        # stopped before it starts again, so two generations never overlap.
                        signal_group(child.proc.pid, signal.SIGTERM)
                elif now >= child.restart_at:
                    self._restart(child, now)

    def _schedule_restart(self, child: Child, now: float, reason: str) -> None:
        policy = self.restart_policy
        if now - child.started >= policy.reset_after:
            child.quick_failures = 0
        delay = policy.delay_after(child.quick_failures)
        child.quick_failures += 1
        child.restarts += 1
        child.exited = now
        child.restart_at = now + delay
        child.waiting_noted = False
        say(f"{child.name} {reason}; restarting it in {delay:g} s (restart {child.restarts})")

    def _restart(self, child: Child, now: float) -> None:
        if self.stop.is_set():
            return
        if group_members(child.proc.pid):
            if now - child.exited < STOP_TIMEOUT_SECONDS:
                if not child.waiting_noted:
                    child.waiting_noted = True
                    say(f"waiting for what is left of {child.name}'s process group to exit")
            else:
                say(f"killing what is left of {child.name}'s process group")
                signal_group(child.proc.pid, signal.SIGKILL)
            return
        try:
            child.proc, child.pump = self._spawn(child.name, child.cmd)
        except OSError as exc:
            child.started = now
            self._schedule_restart(child, now, f"cannot be started ({exc})")
            return
        child.started = now
        child.restart_at = None
        self._record_children()
        say(f"{child.name} restarted (pid {child.proc.pid})")

    def _stop_children(self) -> None:
        if not self.children:
            return
        names = [child.name for child in self.children]
        listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        say(f"stopping {listed}")
        # A child waiting for its restart counts while its old process group has members; once
        # that group is empty its id may be reused, so it is left alone.
        procs = [
            child.proc
            for child in self.children
            if child.proc.poll() is None or group_members(child.proc.pid)
        ]
        stop_process_groups(procs, force=self.force)
        for child in self.children:
            child.pump.join(timeout=5)

    def _print_banner(self, demo: dict[str, str]) -> None:
        key = demo["api_key"]
        lines = [
            "",
            "=" * 78,
            "  OpenPlatform is running",
            "",
            f"  Console   {self.url}",
            f"  Login     {demo['username']} / {demo['password']}",
            f"  API key   {key}",
            "",
            "  Try it:",
            f'    curl -H "Authorization: Bearer {key}" {self.url}v1/tenant',
            "",
            f"  Data in {STATE_DIR} (login and key saved in demo.json).",
            "  Press Ctrl-C to stop.",
            "=" * 78,
            "",
        ]
        say("\n".join(lines), prefix="")


def _pump(name: str, stream: IO[bytes]) -> None:
    """Copy a child's output to ours line by line, prefixed with its name."""
    with stream:
        for raw in iter(stream.readline, b""):
            say(raw.decode(errors="replace").rstrip("\r\n"), prefix=name)
