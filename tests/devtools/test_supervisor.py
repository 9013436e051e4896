"""``./dev up``'s supervisor, with real processes: once the platform is up, a child that exits
on its own is restarted like systemd's ``Restart=always`` (same command, growing delay, new pid
in services.json), and a stop request stops every child, a pending restart included.

The children are small Python programs instead of gunicorn and Celery; everything else
(process groups, output pumps, the registry, the restart bookkeeping) is the real code."""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from devtools.common import DevError
from devtools.embedded import ServiceRegistry
from devtools.supervisor import Platform, RestartPolicy

T = TypeVar("T")

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
#: Starts a grandchild in its own process group, names it, and sleeps: what a Celery worker
#: or gunicorn master leaves behind when it is killed.
PARENT = [
    sys.executable,
    "-c",
    "import subprocess, sys, time\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print('grandchild', p.pid, flush=True)\n"
    "time.sleep(600)",
]
FAST = RestartPolicy(delay=0.1, max_delay=0.4, reset_after=60.0)


def wait_until(condition: Callable[[], T | None], *, what: str, timeout: float = 10.0) -> T:
    """Poll ``condition`` until it returns something truthy (returned); fail after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def gone(proc: psutil.Process) -> bool:
    """True once ``proc`` has exited (a zombie counts: an orphan may wait for init to reap
    it); ``is_running`` also compares creation times, so a reused pid is not mistaken."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Supervisor(Platform):
    """``Platform`` with the given children and restart policy."""

    def __init__(
        self, commands: dict[str, list[str]], policy: RestartPolicy, registry: ServiceRegistry
    ) -> None:
        super().__init__(0, registry=registry)
        self.commands = commands
        self.restart_policy = policy

    def child_commands(self) -> dict[str, list[str]]:
        return self.commands


@dataclass
class Running:
    """A supervisor running ``run_children`` in a thread, and what it printed so far."""

    platform: Supervisor
    registry: ServiceRegistry
    capsys: pytest.CaptureFixture[str]
    thread: threading.Thread | None = None
    errors: list[BaseException] = field(default_factory=list)
    text: str = ""

    def output(self) -> str:
        self.text += self.capsys.readouterr().out
        return self.text

    def line(self, pattern: str) -> re.Match[str] | None:
        return re.search(pattern, self.output(), re.MULTILINE)

    def recorded(self) -> dict[str, int]:
        """The children's pids as services.json records them."""
        return dict(json.loads(self.registry.path.read_text())["up"]["processes"])

    def pid(self, name: str) -> int:
        """The pid of the running child ``name`` once it has been recorded."""
        return wait_until(lambda: self.recorded().get(name), what=f"{name}'s pid")

    def stop(self) -> None:
        """Request a stop, as SIGTERM does, and wait for the supervisor to finish."""
        self.platform.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "the supervisor did not return after a stop request"
        assert self.errors == []


@pytest.fixture
def supervise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., Running]]:
    """Start a supervisor of ``commands`` (``policy``: :data:`FAST`) in a thread; whatever it
    still runs is stopped after the test."""
    started: list[Running] = []

    def start(commands: dict[str, list[str]], policy: RestartPolicy = FAST) -> Running:
        registry = ServiceRegistry(tmp_path)
        registry.claim_up("http://127.0.0.1:0/")
        running = Running(Supervisor(commands, policy, registry), registry, capsys)

        def target() -> None:
            try:
                running.platform.run_children(ready=lambda: None)
            except BaseException as exc:  # reported by Running.stop
                running.errors.append(exc)

        running.thread = threading.Thread(target=target, daemon=True)
        running.thread.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.platform.stop.set()
        if running.thread is not None:
            running.thread.join(timeout=15)


def test_a_killed_child_is_restarted_and_recorded(supervise: Callable[..., Running]) -> None:
    """A worker killed with SIGKILL is reported, started again with a new pid that
    services.json records, and the other children are left alone; a stop request then stops
    every child, the old and the new generation alike."""
    running = supervise({"web": SLEEPER, "worker": SLEEPER, "beat": SLEEPER})
    wait_until(lambda: len(running.recorded()) == 3, what="three recorded children")
    before = running.recorded()
    first_worker = psutil.Process(before["worker"])

    first_worker.send_signal(signal.SIGKILL)

    restarted = wait_until(
        lambda: running.line(r"^dev {4}\| worker restarted \(pid (\d+)\)$"), what="the restart"
    )
    assert re.search(
        r"^dev {4}\| worker killed by SIGKILL; restarting it in 0\.1 s \(restart 1\)$",
        running.output(),
        re.MULTILINE,
    )
    new_pid = int(restarted.group(1))
    assert new_pid != before["worker"]
    new_worker = psutil.Process(new_pid)
    assert not gone(new_worker)
    assert new_worker.cmdline() == SLEEPER
    assert running.recorded() == {**before, "worker": new_pid}

    others = [psutil.Process(before[name]) for name in ("web", "beat")]
    running.stop()

    assert all(gone(proc) for proc in [first_worker, new_worker, *others])
    assert "dev    | stopping web, worker and beat" in running.output()
    assert "restarting it" not in running.output().split("stopping web")[1]


def test_quick_exits_in_a_row_double_the_delay_up_to_the_maximum(
    supervise: Callable[..., Running],
) -> None:
    """A child that exits at once is restarted after 0.1, 0.2, 0.4 and again 0.4 s (the
    maximum of the policy), each time with its exit status and the restart count."""
    running = supervise({"crasher": [sys.executable, "-c", "raise SystemExit(3)"]})

    wait_until(lambda: running.line(r"\(restart 4\)$"), what="the fourth restart")
    running.stop()

    scheduled = re.findall(r"^dev {4}\| (crasher .*; restarting .*)$", running.output(), re.M)
    assert scheduled[:4] == [
        "crasher exit status 3; restarting it in 0.1 s (restart 1)",
        "crasher exit status 3; restarting it in 0.2 s (restart 2)",
        "crasher exit status 3; restarting it in 0.4 s (restart 3)",
        "crasher exit status 3; restarting it in 0.4 s (restart 4)",
    ]


def test_a_child_that_stayed_up_long_enough_restarts_after_the_first_delay(
    supervise: Callable[..., Running],
) -> None:
    """Exits after runs longer than ``reset_after`` are not quick failures: the delay stays at
    its first value."""
    policy = RestartPolicy(delay=0.1, max_delay=0.4, reset_after=0.3)
    survivor = [sys.executable, "-c", "import time; time.sleep(0.5); raise SystemExit(1)"]
    running = supervise({"survivor": survivor}, policy)

    wait_until(lambda: running.line(r"\(restart 3\)$"), what="the third restart")
    running.stop()

    scheduled = re.findall(r"^dev {4}\| (survivor .*; restarting .*)$", running.output(), re.M)
    assert scheduled[:3] == [
        f"survivor exit status 1; restarting it in 0.1 s (restart {n})" for n in (1, 2, 3)
    ]


def test_what_a_dead_child_left_in_its_group_is_stopped_before_the_restart(
    supervise: Callable[..., Running],
) -> None:
    """When a child's leader is killed, the rest of its process group (here a grandchild) is
    stopped, and only then is the child started again."""
    running = supervise({"worker": PARENT})
    match = wait_until(lambda: running.line(r"^worker \| grandchild (\d+)$"), what="the grandchild")
    grandchild = psutil.Process(int(match.group(1)))
    psutil.Process(running.pid("worker")).send_signal(signal.SIGKILL)

    wait_until(lambda: running.line(r"worker restarted \(pid \d+\)$"), what="the restart")
    # No polling here: the restart is printed only after the old group is empty.
    assert gone(grandchild)
    second = wait_until(
        lambda: re.findall(r"^worker \| grandchild (\d+)$", running.output(), re.M)[1:],
        what="the new generation's grandchild",
    )
    new_grandchild = psutil.Process(int(second[0]))
    running.stop()

    assert gone(new_grandchild)


def test_a_stop_request_cancels_a_pending_restart(supervise: Callable[..., Running]) -> None:
    """A stop request while a child waits for its restart stops the others at once and never
    starts that child again."""
    slow = RestartPolicy(delay=30.0, max_delay=30.0, reset_after=60.0)
    running = supervise({"web": SLEEPER, "worker": SLEEPER}, slow)
    web = psutil.Process(running.pid("web"))
    worker = psutil.Process(running.pid("worker"))

    worker.send_signal(signal.SIGKILL)
    wait_until(
        lambda: running.line(r"worker killed by SIGKILL; restarting it in 30 s \(restart 1\)$"),
        what="the pending restart",
    )
    started = time.monotonic()
    running.stop()

    assert time.monotonic() - started < 10
    assert gone(web)
    assert gone(worker)
    assert "restarted" not in running.output()
    assert running.recorded() == {"web": web.pid, "worker": worker.pid}


def test_a_failed_start_up_stops_every_child(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """When ``ready`` raises (as it does when a child dies during start-up), ``run_children``
    stops every child and raises it; nothing is restarted."""
    registry = ServiceRegistry(tmp_path)
    registry.claim_up("http://127.0.0.1:0/")
    platform = Supervisor({"web": SLEEPER, "worker": SLEEPER}, FAST, registry)
    children: list[psutil.Process] = []

    def ready() -> None:
        children.extend(psutil.Process(child.proc.pid) for child in platform.children)
        raise DevError("web exited during start-up (exit status 1)")

    with pytest.raises(DevError, match="during start-up"):
        platform.run_children(ready=ready)

    assert len(children) == 2
    assert all(gone(proc) for proc in children)
    assert "restart" not in capsys.readouterr().out
