"""Process groups are stopped like systemd's ``KillMode=mixed``: SIGTERM to the leader only,
the rest of its group once the leader has exited, SIGKILL for what ignores SIGTERM; and a
foreground command's exit status reads as a shell reports it. Real processes throughout."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from devtools.processes import exit_description, run_foreground, stop_process_groups

#: A member of its parent's process group that logs when it is ready and when SIGTERM came.
CHILD = """
import signal, sys, time
log = sys.argv[1]
def term(*_):
    with open(log, "a") as f:
        f.write("child got SIGTERM\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
with open(log, "a") as f:
    f.write("child ready\\n")
time.sleep(600)
"""
#: A group leader with CHILD in its group that takes a moment to exit on SIGTERM, as a Celery
#: worker does while it hands back its tasks.
LEADER = f"""
import signal, subprocess, sys, time
log = sys.argv[1]
subprocess.Popen([sys.executable, "-c", {CHILD!r}, log])
def term(*_):
    with open(log, "a") as f:
        f.write("leader got SIGTERM\\n")
    time.sleep(0.3)
    with open(log, "a") as f:
        f.write("leader exits\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
time.sleep(600)
"""
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True);"
    " time.sleep(600)",
]


def spawn(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new session (and process group), as ``up`` does."""
    return subprocess.Popen(argv, start_new_session=True, **options)  # noqa: S603  # our own argv


def stubborn() -> subprocess.Popen[bytes]:
    """A group leader that ignores SIGTERM, once its handler is in place."""
    proc = spawn(STUBBORN, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for(path: Path, line: str) -> None:
    deadline = time.monotonic() + 10
    while line not in lines(path):
        if time.monotonic() >= deadline:
            pytest.fail(f"{line!r} never appeared in {path}")
        time.sleep(0.02)


def test_the_leader_is_stopped_first_and_its_group_after_it(tmp_path: Path) -> None:
    """SIGTERM reaches the group leader alone; the rest of its group gets SIGTERM only once
    the leader has exited, and nothing of the group is left afterwards."""
    log = tmp_path / "log"
    leader = spawn([sys.executable, "-c", LEADER, str(log)])
    wait_for(log, "child ready")
    members = [psutil.Process(leader.pid), *psutil.Process(leader.pid).children()]
    assert len(members) == 2

    stop_process_groups([leader], timeout=10)

    assert lines(log) == [
        "child ready",
        "leader got SIGTERM",
        "leader exits",
        "child got SIGTERM",
    ]
    assert leader.returncode == 0
    assert not any(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE for proc in members)


def test_a_group_that_ignores_sigterm_is_killed_after_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A leader that ignores SIGTERM is killed with SIGKILL once ``timeout`` has passed."""
    proc = stubborn()

    started = time.monotonic()
    stop_process_groups([proc], timeout=0.5)

    assert 0.5 <= time.monotonic() - started < 5
    assert proc.returncode == -signal.SIGKILL
    assert f"killing what is left of process groups [{proc.pid}]" in capsys.readouterr().out


def test_force_kills_at_once() -> None:
    """With ``force`` set, SIGKILL follows SIGTERM without waiting for the timeout."""
    proc = stubborn()
    force = threading.Event()
    force.set()

    started = time.monotonic()
    stop_process_groups([proc], timeout=40, force=force)

    assert time.monotonic() - started < 5
    assert proc.returncode == -signal.SIGKILL


def test_run_foreground_reports_exit_status_as_a_shell_does() -> None:
    """An exit status is returned as it is; death by signal N reads as 128 + N."""
    assert run_foreground([sys.executable, "-c", "raise SystemExit(3)"]) == 3
    killed = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    assert run_foreground([sys.executable, "-c", killed]) == 128 + signal.SIGKILL


def test_exit_description() -> None:
    """A Popen returncode in words."""
    assert exit_description(3) == "exit status 3"
    assert exit_description(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_description(None) == "exit status None"
