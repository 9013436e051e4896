"""gunicorn processes for the benchmark: started the way production starts them, stopped
cleanly.

Each server is ``gunicorn -c deploy/gunicorn.conf.py`` (uvicorn workers, the production
configuration) with the worker count and a free 127.0.0.1 port given on the command line,
and the production settings in the environment. It runs in its own session, so stopping
it (SIGTERM to the master, then SIGKILL to the whole process group if it lingers) leaves no
worker behind, whether the benchmark ends normally, fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
API_APP = "openplatform.asgi:application"
BARE_APP = "bench.bare_app:application"
#: The environment that makes bench.bare_app Django's standard handler with every middleware.
DJANGO_HANDLER = {"BENCH_BARE_HANDLER": "django"}
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 40.0
#: Open files each process may hold: 1,000 waiting pulls need 1,000 sockets on each side.
NOFILE = 65536


class ServerError(Exception):
    """A server did not start or answer; the message says which and how."""


def raise_nofile_limit(wanted: int = NOFILE) -> int:
    """Raise this process's soft RLIMIT_NOFILE (children inherit it); return the new value."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def production_environment(workers: int) -> dict[str, str]:
    """What the production settings need, set for the benchmark (plain HTTP on loopback)."""
    return {
        "DJANGO_SETTINGS_MODULE": "openplatform.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "WEB_CONCURRENCY": str(workers),
        # Worker recycling (max_requests) restarts a worker every few seconds at benchmark
        # rates; a steady-state measurement turns it off. Everything else is deploy's.
        "GUNICORN_MAX_REQUESTS": "0",
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One gunicorn master and its workers."""

    name: str
    app: str
    workers: int
    log_path: Path
    #: Environment of this server on top of the one given to :meth:`start`.
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn",
            "-c", str(GUNICORN_CONF),
            "--workers", str(self.workers),
            "--bind", f"127.0.0.1:{self.port}",
            self.app,
        ]  # fmt: skip

    def start(self, env: dict[str, str]) -> None:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env={**os.environ, **env, **self.extra_env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def worker_pids(self) -> list[int]:
        if self.process is None:
            return []
        with contextlib.suppress(psutil.Error):
            return [child.pid for child in psutil.Process(self.process.pid).children()]
        return []

    def wait_ready(self, path: str = "/readyz") -> None:
        """Wait until ``path`` answers 200 and every worker is up."""
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        url = f"http://127.0.0.1:{self.port}{path}"
        while True:
            if self.process.poll() is not None:
                raise ServerError(f"{self.name} server exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServerError(f"{self.name} server not ready in {READY_TIMEOUT:.0f} s")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    ready = answer.status == 200
            except (urllib.error.URLError, OSError):
                ready = False
            if ready and len(self.worker_pids()) >= self.workers:
                return
            time.sleep(0.2)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the master (gunicorn stops its workers gracefully); SIGKILL the whole
        process group if anything is left after STOP_TIMEOUT seconds."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if self._log is not None:
            self._log.close()
        self.process = None
