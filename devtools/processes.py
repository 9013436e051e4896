"""Process groups: who is in one, stopping them the way systemd's ``KillMode=mixed`` does, and
running a command in the foreground with signals passed on."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import psutil

from devtools.common import ROOT, say

#: How long a child gets between SIGTERM and SIGKILL. Longer than gunicorn's graceful_timeout
#: (30 s, see deploy/gunicorn.conf.py) so an in-flight long poll can finish.
STOP_TIMEOUT_SECONDS = 40.0


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to process group ``pgid``; a group that is gone already is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def exit_description(code: int | None) -> str:
    """``exit status 3`` or ``killed by SIGKILL`` for a Popen returncode."""
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


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
                    signal_group(proc.pid, signal.SIGTERM)
            remaining = [pgid for pgid in pgids if group_members(pgid)]
            if not remaining or time.monotonic() >= deadline or (abort and abort.is_set()):
                return remaining
            time.sleep(0.1)

    remaining = remaining_within(timeout, force)
    if remaining:
        say(f"killing what is left of process groups {remaining}")
        for pgid in remaining:
            signal_group(pgid, signal.SIGKILL)
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
