"""``python -m bench [--quick] [--workers N] [--out DIR] [--only NAMES]``: the whole run.

1. Production settings in the environment (a generated SECRET_KEY, loopback hosts, no SSL
   redirect), the open-files limit raised, ``manage.py migrate`` in a subprocess.
2. Django in-process: the bench plan, three tenants (the main one with one queue per
   measurement, one with a single queue, one with 10,000 queues) and their keys; for the
   fairness measurement, two plans with a publish rate limit, a flooding tenant, a tenant
   refused nearly everything and the bystander tenants.
3. Three gunicorn servers with the same configuration and worker count: the platform
   (``openplatform.asgi``), the reference (``bench.bare_app``: the same entry point in front of
   a one-view URLconf) and, for information, the bare view behind Django's standard handler
   and full middleware; wait for ``/readyz`` and warm every worker up.
4. The measurements (:mod:`bench.measure`), each in a separate load-generator process.
5. The report; then the servers are stopped and everything the run created is removed, also
   when it fails or is interrupted (Ctrl-C, SIGTERM).

``DATABASE_URL`` and ``REDIS_URL`` must be set: ``./dev bench`` sets them (starting embedded
servers when needed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench.profiles import FULL, QUICK, Profile
from bench.profiling import Profiler
from bench.servers import (
    API_APP,
    BARE_APP,
    DJANGO_HANDLER,
    ROOT,
    Server,
    ServerError,
    production_environment,
    raise_nofile_limit,
)

DEFAULT_OUT = ROOT / "bench" / "results"
#: The measurements in the order they run (bench.measure.MEASUREMENTS, importable only once
#: Django is set up).
MEASUREMENT_NAMES = (
    "batch",
    "single",
    "pull",
    "e2e",
    "longpoll",
    "flat-messages",
    "flat-queues",
    "fairness",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark the data plane against its references."
    )
    parser.add_argument("--quick", action="store_true", help="smaller and shorter (< 2 min)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the API workers with py-spy during each measurement (see bench/profiling.py)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=None,
        help="run the servers and load processes at this niceness (negative: ahead of other "
        "work on a shared machine; needs root); also the embedded Redis this run started",
    )
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated measurements to run (default all): {','.join(MEASUREMENT_NAMES)}",
    )
    return parser.parse_args(argv)


def _log(message: str) -> None:
    print(f"bench | {message}", file=sys.stderr, flush=True)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _migrate(env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench: migrate failed:\n{proc.stdout}\n{proc.stderr}")


def _renice_group(pid: int, niceness: int) -> int | None:
    """Give the scheduler autogroup of ``pid`` (its session) ``niceness``; returns the
    niceness it had (None: no autogroups). With autogroups on
    (``kernel.sched_autogroup_enabled``) the scheduler first shares the CPUs between sessions
    and applies a process's own niceness only inside its session, so a niceness alone would
    not put the run ahead of the other sessions' work."""
    path = Path(f"/proc/{pid}/autogroup")
    try:
        before = int(path.read_text().split()[-1])  # "/autogroup-123 nice 0"
        path.write_text(str(niceness))
    except (OSError, ValueError):
        return None
    return before


def _renice_embedded_redis(pid: int, niceness: int) -> None:
    """Give the Redis server ``niceness`` when it is the embedded one ``./dev bench`` started
    for this run (it runs detached, so: started after the ``./dev`` process that started
    this one); a server of REDIS_URL that was already running is left alone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.create_time() < psutil.Process(os.getppid()).create_time():
            return
        proc.nice(niceness)
    except psutil.Error:
        return
    _renice_group(pid, niceness)  # its own session: nothing to restore, it stops with the run
    _log(f"embedded Redis (pid {pid}) at niceness {niceness}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    profile = QUICK if args.quick else FULL
    missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
    if missing:
        print(
            f"bench: {' and '.join(missing)} not set; run ./dev bench (it starts embedded "
            "servers) or point them at a PostgreSQL database and a Redis database to use.",
            file=sys.stderr,
        )
        return 2
    only = [name for name in args.only.split(",") if name]
    unknown = sorted(set(only) - set(MEASUREMENT_NAMES))
    if unknown:
        print(f"bench: unknown measurements {unknown}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    if args.nice is not None:
        # Inherited by every process the run starts: migrate, the servers, the clients.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except PermissionError:
            print(f"bench: --nice {args.nice} needs root", file=sys.stderr)
            return 2
        # This process's session is the caller's (the shell's, ./dev's and the embedded
        # servers'): its autogroup gets the niceness for the run and its own back at the end.
        before = _renice_group(os.getpid(), args.nice)
        if before is not None:
            try:
                return _main(args, profile, only)
            finally:
                _renice_group(os.getpid(), before)
    return _main(args, profile, only)


def _main(args: argparse.Namespace, profile: Profile, only: list[str]) -> int:
    """The run proper, once the arguments are checked."""
    started, started_at = time.perf_counter(), datetime.now(UTC)
    nofile = raise_nofile_limit()
    env = production_environment(args.workers)
    os.environ.update(env)
    _log(
        f"{profile.name} run, {args.workers} workers, open-files limit {nofile}"
        + ("" if args.nice is None else f", niceness {args.nice}")
    )
    _migrate(env)

    import django

    django.setup()
    try:
        return _run(Run(args, profile, env, only, started, started_at))
    except KeyboardInterrupt:
        _log("interrupted; everything was stopped and removed")
        return 130


@dataclass(frozen=True)
class Run:
    """One invocation: its options and when it started."""

    args: argparse.Namespace
    profile: Profile
    env: dict[str, str]
    only: list[str]
    started: float
    started_at: datetime

    @property
    def stamp(self) -> str:
        return self.started_at.strftime("%Y%m%dT%H%M%SZ")


def _run(run: Run) -> int:
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for sig in (signal.SIGINT, signal.SIGTERM):  # restored once everything is cleaned up
            stack.callback(signal.signal, sig, signal.getsignal(sig))
        try:
            code = _measure(run, stack, Path(tmp))
        finally:
            # Another Ctrl-C or SIGTERM must not cut the clean-up short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            cleanup_started = time.perf_counter()
    cleanup = time.perf_counter() - cleanup_started
    total = time.perf_counter() - run.started
    _log(f"stopped the servers and removed the run's data in {cleanup:.1f} s; total {total:.0f} s")
    return code


def _measure(run: Run, stack: contextlib.ExitStack, tmp: Path) -> int:
    """Set up, measure and report; every clean-up step goes on ``stack``."""
    from bench import fixtures, report
    from bench.measure import (
        MEASUREMENTS,
        QUEUES,
        BenchError,
        Context,
        failure_row,
        run_client,
    )

    args, profile, only = run.args, run.profile, run.only

    assert tuple(MEASUREMENTS) == MEASUREMENT_NAMES
    phases: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    setup_started = time.perf_counter()
    plan = fixtures.bench_plan(max_queues=profile.flat_queues + 100)
    tenants = []
    for label, queues in (("main", QUEUES), ("one", ["only"]), ("many", [])):
        tenant = fixtures.create_tenant(label, run.stamp.lower(), plan, queues)
        stack.callback(fixtures.cleanup, tenant)
        tenants.append(tenant)
    main_tenant, one, many = tenants
    fair: dict[str, Any] = {}
    if not only or "fairness" in only:
        flood_plan = fixtures.limited_plan("bench-flood", profile.fairness_flood_limit)
        refused_plan = fixtures.limited_plan("bench-refused", 1)
        made = [
            ("flooder", flood_plan, ["flood"]),
            ("refused", refused_plan, ["refused"]),
            *((f"bystander{i}", plan, ["fair"]) for i in range(profile.fairness_bystanders)),
        ]
        for label, tenant_plan, queues in made:
            tenant = fixtures.create_tenant(label, run.stamp.lower(), tenant_plan, queues)
            stack.callback(fixtures.cleanup, tenant)
            fair[label] = tenant
    if not only or "flat-queues" in only:
        seconds = fixtures.add_queues_bulk(many, profile.flat_queues)
        _log(f"created {profile.flat_queues:,} queues in {seconds:.1f} s")
    servers = {
        name: Server(name, app, args.workers, tmp / f"{name}.log", extra_env=extra)
        for name, app, extra in (
            ("api", API_APP, {}),
            ("bare", BARE_APP, {}),
            ("bare-django", BARE_APP, DJANGO_HANDLER),
        )
    }
    for server in servers.values():
        stack.callback(server.stop)
        server.start(run.env)
        if args.nice is not None and server.process is not None:
            _renice_group(server.process.pid, args.nice)  # a session of its own
    try:
        for server in servers.values():
            server.wait_ready()
    except ServerError as exc:
        _log(str(exc))
        return 1
    for server in servers.values():
        # Every worker imports its URLconf and opens its pools on its first requests.
        warm = {"kind": "get", "port": server.port, "path": "/readyz", "connections": 16}
        run_client({**warm, "cpu_pids": {"server": server.worker_pids()}}, 60)
    phases["setup"] = round(time.perf_counter() - setup_started, 1)
    _log(
        "servers ready: "
        + ", ".join(f"{name} on :{server.port}" for name, server in servers.items())
        + f" (setup {phases['setup']} s)"
    )
    ctx = Context(
        profile=profile,
        api=servers["api"],
        bare=servers["bare"],
        bare_django=servers["bare-django"],
        main=main_tenant,
        one=one,
        many=many,
        redis_url=os.environ["REDIS_URL"],
        redis_pid=fixtures.redis_pid(),
        profiler=Profiler(args.out, run.stamp) if args.profile else None,
        flooder=fair.get("flooder"),
        refused=fair.get("refused"),
        bystanders=[t for label, t in fair.items() if label.startswith("bystander")],
    )
    if args.nice is not None and ctx.redis_pid:
        _renice_embedded_redis(ctx.redis_pid, args.nice)
    failed = []
    for name, fn in MEASUREMENTS.items():
        if only and name not in only:
            continue
        _log(f"{name} ...")
        started = time.perf_counter()
        try:
            measured = fn(ctx)
        except BenchError as exc:
            # The run goes on: one broken measurement must not cost the others.
            failed.append(name)
            _log(f"{name} failed: {exc}")
            log_tail = ctx.api.log_tail(12)
            _log(f"api server log:\n{log_tail}")
            measured = [failure_row(name, exc, log_tail)]
        phases[name] = round(time.perf_counter() - started, 1)
        rows += [row.as_dict() for row in measured]
    data = {
        "started_at": run.started_at.isoformat(timespec="seconds"),
        "command": report.command_line(),
        "code": report.code_version(ROOT),
        "profile": profile.name,
        "workers": args.workers,
        "duration_seconds": round(time.perf_counter() - run.started, 1),
        "phase_seconds": phases,
        "machine": report.machine(),
        "servers": fixtures.versions(),
        "profiled": args.profile,
        "niceness": args.nice,
        "rows": rows,
        "details": ctx.details,
    }
    if ctx.profiler is not None:
        data["profiles"] = ctx.profiler.summaries
    json_path, md_path = report.write(args.out, run.stamp, data)
    print(report.markdown(data))
    _log(f"wrote {json_path} and {md_path} (and latest.*)")
    if failed:
        _log(f"failed measurements: {', '.join(failed)}")
        return 1
    return 0
