"""``--profile``: sample the API server's workers with py-spy while a measurement runs.

py-spy is not one of the project's dependencies; install it into the virtualenv for a look
(``.venv/bin/pip install py-spy``). It attaches to the gunicorn master and its workers
(``--subprocesses``) without pausing them (``--nonblocking``) and writes folded stacks to
``<out>/<stamp>-<measurement>.prof`` (load them into speedscope or flamegraph.pl). The summary
kept in the results is the share of CPU samples per function: where the time goes itself
(self) and what it is spent under (total, for the project's and Django's functions).
Profiling costs the server some CPU: figures of a profiled run are not the ones to publish.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.servers import Server

#: Frames from these packages are listed in the "total" summary.
INTERESTING = ("api/", "queues/", "tenants/", "openplatform/", "django/", "asgiref/", "redis/")


def find_py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def _function(frame: str) -> str:
    """``name (path:line)`` → ``name (path)``: samples of one function add up."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_function(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n

    def share(counter: Counter[str], keep: Any) -> list[list[Any]]:
        rows = [(f, n) for f, n in counter.most_common() if keep(f)][:top]
        return [[f, round(n / total * 100, 1)] for f, n in rows] if total else []

    return {
        "samples": total,
        "self_percent": share(own, lambda _f: True),
        "total_percent": share(inclusive, lambda f: any(p in f for p in INTERESTING)),
    }


class Profiler:
    """Records one py-spy profile of a server per measurement."""

    def __init__(self, out_dir: Path, stamp: str) -> None:
        executable = find_py_spy()
        if executable is None:
            raise SystemExit(
                "bench: --profile needs py-spy: .venv/bin/pip install py-spy (not part of the lock)"
            )
        self.executable = executable
        self.out_dir = out_dir
        self.stamp = stamp
        self.summaries: dict[str, dict[str, Any]] = {}

    @contextlib.contextmanager
    def record(self, server: Server, label: str) -> Iterator[None]:
        assert server.process is not None
        taken = sum(1 for name in self.summaries if name.split("#")[0] == label)
        label = f"{label}#{taken + 1}" if taken else label
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{self.stamp}-{label.replace('#', '-')}.prof"
        proc = subprocess.Popen(
            [
                self.executable, "record", "--pid", str(server.process.pid), "--subprocesses",
                "--nonblocking", "--gil", "--rate", "250", "--format", "raw", "--output", str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if path.exists():
            self.summaries[label] = {"file": str(path), **summarize(path)}
