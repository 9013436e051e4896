"""The measurements. Each function runs its client jobs (every subject right next to its
reference) and returns the rows of the results table with the raw figures behind them.

Throughput subjects and references alternate in rounds (subject, reference, reference,
subject, ...), so a slow drift of the machine weighs on both alike; the figure of each is
its total count over its total measured time.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench import fixtures
from bench.fixtures import BenchTenant
from bench.profiles import Profile
from bench.profiling import Profiler
from bench.servers import ROOT, Server

#: The queues of the main tenant, one per measurement so none disturbs another.
QUEUES = ["batch", "single", "pull10", "pull100", "e2e", "longpoll", "flat-empty", "flat-full"]


class BenchError(Exception):
    """A measurement could not be taken; the message says why."""


def log(message: str) -> None:
    print(f"bench | {message}", file=sys.stderr, flush=True)


@dataclass
class Row:
    """One line of the results table; ``figures`` keeps the numbers it was made from."""

    measurement: str
    result: str
    reference: str = "—"
    ratio: float | None = None
    goal: str = "—"
    met: bool | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "measurement": self.measurement,
            "result": self.result,
            "reference": self.reference,
            "ratio": self.ratio,
            "goal": self.goal,
            "met": self.met,
            "figures": self.figures,
        }


@dataclass
class Context:
    """What the measurements work with: the run's sizes, the servers (the platform, the
    bare view behind the project's entry point, the bare view behind Django's standard
    handler), the tenants and where Redis runs."""

    profile: Profile
    api: Server
    bare: Server
    bare_django: Server
    main: BenchTenant
    one: BenchTenant
    many: BenchTenant
    redis_url: str
    redis_pid: int | None
    profiler: Profiler | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def cpu_pids(self, server: Server | None) -> dict[str, list[int]]:
        pids: dict[str, list[int]] = {"redis": [self.redis_pid] if self.redis_pid else []}
        pids["server"] = server.worker_pids() if server is not None else []
        return pids

    def run(
        self,
        job: dict[str, Any],
        timeout: float,
        server: Server | None = None,
        label: str = "",
    ) -> dict[str, Any]:
        """Run a client job; with --profile, sample ``server`` meanwhile."""
        if self.profiler is None or server is None:
            return run_client(job, timeout)
        with self.profiler.record(server, label):
            return run_client(job, timeout)


def run_client(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one job in a fresh load-generator process and return its result."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.client"],
        input=orjson.dumps(job),
        capture_output=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(
            f"client job {job['kind']} failed (exit {proc.returncode}):\n"
            + proc.stderr.decode(errors="replace")[-3000:]
        )
    result: dict[str, Any] = orjson.loads(proc.stdout)
    if result.get("errors"):
        log(f"  {job['kind']}: {result['errors']} error answers, e.g. {result['error_samples']}")
    return result


def run_parallel(jobs: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
    """Run closed-loop jobs in as many processes at once, their windows aligned; return the
    combined result (rates and client CPU added up, the rest averaged)."""
    start_at = time.time() + 1.5  # every process is up and connected by then
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(
            pool.map(lambda job: run_client({**job, "start_at": start_at}, timeout), jobs)
        )
    n = len(results)
    cpu = {
        key: round(sum(r["cpu"][key] for r in results) / (1 if key == "client" else n), 1)
        for key in results[0]["cpu"]
    }
    if "machine" in cpu:
        cpu["other"] = round(max(cpu["machine"] - cpu["client"] - cpu.get("redis", 0.0), 0), 1)
    return {
        "processes": n,
        "requests": sum(r["requests"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "elapsed": round(sum(r["elapsed"] for r in results) / n, 3),
        "requests_per_s": round(sum(r["requests_per_s"] for r in results), 1),
        "messages_per_s": round(sum(r["messages_per_s"] for r in results), 1),
        "latency": results[0]["latency"],
        "cpu": cpu,
    }


def _fmt(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _alternate(
    ctx: Context, variants: list[Callable[[], dict[str, Any]]]
) -> list[list[dict[str, Any]]]:
    """Run every variant ``rounds`` times, forwards in even rounds and backwards in odd ones
    (A B B A ...), so that a drift of the machine weighs on all alike. Returns the results
    of each variant."""
    results: list[list[dict[str, Any]]] = [[] for _ in variants]
    for r in range(ctx.profile.rounds):
        order = list(range(len(variants)))
        for i in order if r % 2 == 0 else reversed(order):
            results[i].append(variants[i]())
    return results


def _rate(results: list[dict[str, Any]], field_name: str) -> float:
    """Total count over total measured time of several windows."""
    elapsed = sum(r["elapsed"] for r in results)
    return sum(r[field_name] * r["elapsed"] for r in results) / elapsed if elapsed else 0.0


def _cpu(results: list[dict[str, Any]]) -> dict[str, float]:
    """CPU use (percent of one core) averaged over windows, weighted by their length."""
    total = sum(r["elapsed"] for r in results) or 1.0
    keys = results[0]["cpu"].keys() if results else ()
    return {k: round(sum(r["cpu"][k] * r["elapsed"] for r in results) / total, 1) for k in keys}


def _closed_loop_job(ctx: Context, **job: Any) -> dict[str, Any]:
    return {
        "warmup": ctx.profile.warmup,
        "duration": ctx.profile.duration,
        **job,
    }


def _timeout(ctx: Context, extra: float = 0.0) -> float:
    return ctx.profile.warmup + ctx.profile.duration + 60 + extra


# --- batch publish ------------------------------------------------------------------------------


def batch_publish(ctx: Context) -> list[Row]:
    n = ctx.profile.batch_connections

    def api() -> dict[str, Any]:
        job = _closed_loop_job(
            ctx,
            kind="http",
            port=ctx.api.port,
            key=ctx.main.key,
            path="/v1/queues/batch/messages",
            body="batch",
            messages_per_request=100,
            connections=n,
            cpu_pids=ctx.cpu_pids(ctx.api),
        )
        result = ctx.run(job, _timeout(ctx), ctx.api, "batch-api")
        fixtures.empty_queue(ctx.main, "batch")
        log(f"  API batch publish: {result['messages_per_s']:,.0f} msg/s (cpu {result['cpu']})")
        return result

    processes = len(ctx.api.worker_pids())

    def ref() -> dict[str, Any]:
        jobs = [
            _closed_loop_job(
                ctx,
                kind="xadd",
                redis_url=ctx.redis_url,
                stream=f"{ctx.main.stream('batch')}:ref{i}",
                connections=max(n // processes, 1),
                cpu_pids=ctx.cpu_pids(None),
            )
            for i in range(processes)
        ]
        result = run_parallel(jobs, _timeout(ctx))
        log(
            f"  redis-py XADD x100 from {processes} processes: "
            f"{result['messages_per_s']:,.0f} msg/s (cpu {result['cpu']})"
        )
        return result

    subjects, references = _alternate(ctx, [api, ref])
    subject_rate = _rate(subjects, "messages_per_s")
    reference_rate = _rate(references, "messages_per_s")
    ratio = subject_rate / reference_rate if reference_rate else 0.0
    ctx.details["batch_publish"] = {"api": subjects, "reference": references}
    return [
        Row(
            measurement="Batch publish, 100 x 1 KiB per request",
            result=_fmt(subject_rate, "msg/s"),
            reference=f"redis-py pipelined XADD x100 (hiredis packer), {processes} processes: "
            f"{_fmt(reference_rate, 'msg/s')}",
            ratio=round(ratio, 3),
            goal="ratio ≥ 0.35",
            met=ratio >= 0.35,
            figures={
                "messages_per_s": round(subject_rate, 1),
                "reference_messages_per_s": round(reference_rate, 1),
                "connections": n,
                "reference_processes": processes,
                "latency": subjects[-1]["latency"],
                "cpu": _cpu(subjects),
                "reference_cpu": _cpu(references),
            },
        )
    ]


# --- single publish -----------------------------------------------------------------------------


def single_publish(ctx: Context) -> list[Row]:
    n = ctx.profile.single_connections

    def variant(server: Server, path: str, name: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            job = _closed_loop_job(
                ctx,
                kind="http",
                port=server.port,
                key=ctx.main.key,
                path=path,
                body="single",
                connections=n,
                cpu_pids=ctx.cpu_pids(server),
            )
            result = ctx.run(job, _timeout(ctx), server, f"single-{server.name}")
            if server is ctx.api:
                fixtures.empty_queue(ctx.main, "single")
            log(f"  {name}: {result['requests_per_s']:,.0f} req/s (cpu {result['cpu']})")
            return result

        return run

    subjects, references, django = _alternate(
        ctx,
        [
            variant(ctx.api, "/v1/queues/single/messages", "API single publish"),
            variant(ctx.bare, "/bare", "bare view, same entry point"),
            variant(ctx.bare_django, "/bare", "bare view, Django's handler + full middleware"),
        ],
    )
    subject_rate = _rate(subjects, "requests_per_s")
    reference_rate = _rate(references, "requests_per_s")
    django_rate = _rate(django, "requests_per_s")
    ratio = subject_rate / reference_rate if reference_rate else 0.0
    ctx.details["single_publish"] = {
        "api": subjects,
        "reference": references,
        "django_handler": django,
    }
    return [
        Row(
            measurement="Single publish, 1 x 1 KiB per request",
            result=_fmt(subject_rate, "req/s"),
            reference=f"bare Django view, same server and entry point: "
            f"{_fmt(reference_rate, 'req/s')}",
            ratio=round(ratio, 3),
            goal="ratio ≥ 0.6",
            met=ratio >= 0.6,
            figures={
                "requests_per_s": round(subject_rate, 1),
                "reference_requests_per_s": round(reference_rate, 1),
                "connections": n,
                "latency": subjects[-1]["latency"],
                "reference_latency": references[-1]["latency"],
                "cpu": _cpu(subjects),
                "reference_cpu": _cpu(references),
            },
        ),
        Row(
            measurement="Bare view through Django's ASGI handler and the full middleware "
            "stack (informational: the console's path)",
            result=_fmt(django_rate, "req/s"),
            figures={
                "requests_per_s": round(django_rate, 1),
                "latency": django[-1]["latency"],
                "cpu": _cpu(django),
            },
        ),
    ]


# --- pull + ack ---------------------------------------------------------------------------------


def pull_ack(ctx: Context) -> list[Row]:
    rows = []
    for k in (10, 100):
        queue = f"pull{k}"
        seconds = fixtures.fill_queue(ctx.main, queue, ctx.profile.pull_fill)
        log(f"  filled {queue} with {ctx.profile.pull_fill:,} messages in {seconds:.1f} s")
        duration = ctx.profile.duration * ctx.profile.rounds
        job = {
            "kind": "pull_ack",
            "port": ctx.api.port,
            "key": ctx.main.key,
            "queue": queue,
            "max_messages": k,
            "connections": ctx.profile.pull_connections,
            "warmup": ctx.profile.warmup,
            "duration": duration,
            "cpu_pids": ctx.cpu_pids(ctx.api),
        }
        result = ctx.run(job, _timeout(ctx, duration), ctx.api, f"pull{k}")
        fixtures.empty_queue(ctx.main, queue)
        log(f"  pull + ack x{k}: {result['messages_per_s']:,.0f} msg/s (cpu {result['cpu']})")
        ctx.details[f"pull_ack_{k}"] = result
        note = " (queue drained before the window ended)" if result["drained"] else ""
        rows.append(
            Row(
                measurement=f"Pull + ack, max_messages {k}",
                result=_fmt(result["messages_per_s"], "msg/s") + note,
                figures={
                    "messages_per_s": result["messages_per_s"],
                    "connections": ctx.profile.pull_connections,
                    "pull_latency": result["pull_latency"],
                    "ack_latency": result["ack_latency"],
                    "cpu": result["cpu"],
                },
            )
        )
    return rows


# --- end-to-end latency -------------------------------------------------------------------------


def end_to_end(ctx: Context) -> list[Row]:
    rows = []
    for rate in (ctx.profile.e2e_rate, ctx.profile.e2e_light_rate):
        job = {
            "kind": "e2e",
            "port": ctx.api.port,
            "key": ctx.main.key,
            "queue": "e2e",
            "rate": rate,
            "seconds": ctx.profile.e2e_seconds,
            "consumers": 1,
            "ack_every": 0.05,
            "publish_connections": 16,
            "warmup": 1.0,
            "cpu_pids": ctx.cpu_pids(ctx.api),
        }
        result = ctx.run(job, ctx.profile.e2e_seconds + 60, ctx.api, f"e2e-{rate}")
        fixtures.empty_queue(ctx.main, "e2e")
        ctx.details[f"end_to_end_{rate}"] = result
        lat = result["latency"]
        log(f"  e2e @{rate}/s: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms")
        p99 = lat["p99_ms"]
        complete = result["received"] >= result["published"] > 0
        figures = {
            "latency": lat,
            "published": result["published"],
            "received": result["received"],
            "late_sends": result["late_sends"],
            "publish_latency": result["publish_latency"],
            "cpu": result["cpu"],
        }
        if rate == ctx.profile.e2e_rate:
            rows.append(
                Row(
                    measurement=f"End-to-end latency publish → pull at {rate} msg/s",
                    result=f"p50 {_ms(lat['p50_ms'])}, p99 {_ms(p99)}",
                    goal="p99 ≤ 20 ms",
                    met=complete and p99 is not None and p99 <= 20.0,
                    figures=figures,
                )
            )
        else:
            rows.append(
                Row(
                    measurement=f"End-to-end latency at {rate} msg/s (informational)",
                    result=f"p50 {_ms(lat['p50_ms'])}, p99 {_ms(p99)}",
                    figures=figures,
                )
            )
    return rows


# --- long polling -------------------------------------------------------------------------------


def long_polling(ctx: Context) -> list[Row]:
    waiters = ctx.profile.longpoll_waiters
    job = {
        "kind": "longpoll",
        "port": ctx.api.port,
        "key": ctx.main.key,
        "queue": "longpoll",
        "waiters": waiters,
        "hold": ctx.profile.longpoll_hold,
        "samples": ctx.profile.longpoll_samples,
        "cpu_pids": ctx.cpu_pids(ctx.api),
    }
    result = ctx.run(job, ctx.profile.longpoll_hold + 90, ctx.api, "longpoll")
    fixtures.empty_queue(ctx.main, "longpoll")
    ctx.details["long_polling"] = result
    single = result["single"]["wake_after_publish_response"]
    delivered = result["single"]["publish_sent_to_pull_response"]
    burst = result["burst"]
    log(
        f"  long polling: {result['held']}/{waiters} held, {result['server_sockets']} server "
        f"sockets; wake p50 {single['p50_ms']} ms p99 {single['p99_ms']} ms; burst "
        f"{burst['woken']}/{burst['messages']} p50 {burst['wake']['p50_ms']} ms"
    )
    held_ok = result["held"] >= waiters and result["server_sockets"] >= waiters
    p50 = single["p50_ms"]
    return [
        Row(
            measurement=f"Long polling: waiting pulls held for {result['hold_seconds']:g} s",
            result=f"{result['held']:,} of {waiters:,} (server sockets: "
            f"{result['server_sockets']:,})",
            goal="1,000 held",
            met=held_ok and waiters >= 1000,
            figures={"held": result["held"], "server_sockets": result["server_sockets"]},
        ),
        Row(
            measurement=f"Long polling: wake-up after a publish, {waiters:,} waiting "
            f"({single['count']} single wake-ups)",
            result=f"p50 {_ms(p50)}, p99 {_ms(single['p99_ms'])} after the publish's answer "
            f"(p50 {_ms(delivered['p50_ms'])} from sending the publish)",
            goal="p50 ≤ 5 ms",
            met=p50 is not None and p50 <= 5.0,
            figures={
                "wake_after_publish_response": single,
                "publish_sent_to_pull_response": result["single"]["publish_sent_to_pull_response"],
                "cpu": result["cpu"],
            },
        ),
        Row(
            measurement=f"Long polling: burst of {burst['messages']:,} messages waking "
            f"every waiting pull",
            result=f"{burst['woken']:,} woken, p50 {_ms(burst['wake']['p50_ms'])}, "
            f"p99 {_ms(burst['wake']['p99_ms'])}",
            figures=burst,
        ),
    ]


# --- flatness -----------------------------------------------------------------------------------


def _flat_rows(
    title: str, small: dict[str, Any], large: dict[str, Any], small_label: str, large_label: str
) -> list[Row]:
    rows = []
    for op in ("publish", "pull"):
        a, b = small[op]["p50_ms"], large[op]["p50_ms"]
        ratio = b / a if a and b else None
        rows.append(
            Row(
                measurement=f"Flatness: {op} p50, {title}",
                result=f"{_ms(a)} ({small_label}) vs {_ms(b)} ({large_label})",
                ratio=None if ratio is None else round(ratio, 3),
                goal="within 10 %",
                met=ratio is not None and abs(ratio - 1) <= 0.10,
                figures={small_label: small[op], large_label: large[op]},
            )
        )
    return rows


def flat_messages(ctx: Context) -> list[Row]:
    count = ctx.profile.flat_messages
    seconds = fixtures.fill_queue(ctx.main, "flat-full", count)
    log(f"  filled flat-full with {count:,} messages in {seconds:.1f} s")
    label_full = f"{count:,} messages"
    job = {
        "kind": "flat",
        "port": ctx.api.port,
        "groups": [
            {"label": "0 messages", "key": ctx.main.key, "queues": ["flat-empty"]},
            {"label": label_full, "key": ctx.main.key, "queues": ["flat-full"]},
        ],
        "iterations": ctx.profile.flat_iterations,
        "block": ctx.profile.flat_block,
        "cpu_pids": ctx.cpu_pids(ctx.api),
    }
    result = ctx.run(job, 300, ctx.api, "flat-messages")
    held = fixtures.queue_length(ctx.main, "flat-full")
    fixtures.empty_queue(ctx.main, "flat-full")
    result["fill_seconds"] = round(seconds, 2)
    result["full_queue_length_after"] = held
    ctx.details["flat_messages"] = result
    groups = result["groups"]
    for label, g in groups.items():
        log(f"  {label}: publish p50 {g['publish']['p50_ms']} ms, pull p50 {g['pull']['p50_ms']}")
    return _flat_rows(
        f"queue holding 0 vs {count:,} messages",
        groups["0 messages"],
        groups[label_full],
        "0 messages",
        label_full,
    )


def flat_queues(ctx: Context) -> list[Row]:
    total = len(ctx.many.queues)
    many_label = f"{total:,} queues"
    spread_label = f"{total:,} queues, round-robin"
    job = {
        "kind": "flat",
        "port": ctx.api.port,
        "groups": [
            {"label": "1 queue", "key": ctx.one.key, "queues": ["only"]},
            {"label": many_label, "key": ctx.many.key, "queues": ["q00000"]},
            {"label": spread_label, "key": ctx.many.key, "queues": sorted(ctx.many.queues)},
        ],
        "iterations": ctx.profile.flat_iterations,
        "block": ctx.profile.flat_block,
        "cpu_pids": ctx.cpu_pids(ctx.api),
    }
    result = ctx.run(job, 300, ctx.api, "flat-queues")
    ctx.details["flat_queues"] = result
    groups = result["groups"]
    for label, g in groups.items():
        log(f"  {label}: publish p50 {g['publish']['p50_ms']} ms, pull p50 {g['pull']['p50_ms']}")
    rows = _flat_rows(
        f"tenant with 1 vs {total:,} queues (same queue)",
        groups["1 queue"],
        groups[many_label],
        "1 queue",
        many_label,
    )
    spread = groups[spread_label]
    one = groups["1 queue"]
    rows.append(
        Row(
            measurement=f"Flatness (informational): each request on the next of {total:,} queues",
            result=f"publish p50 {_ms(spread['publish']['p50_ms'])}, "
            f"pull p50 {_ms(spread['pull']['p50_ms'])}",
            reference=f"1 queue: publish {_ms(one['publish']['p50_ms'])}, "
            f"pull {_ms(one['pull']['p50_ms'])}",
            figures={"publish": spread["publish"], "pull": spread["pull"]},
        )
    )
    return rows


def failure_row(name: str, error: Exception, server_log: str) -> Row:
    """The row of a measurement that could not be taken, with the reason and the end of the
    API server's log."""
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return Row(
        measurement=f"{name}: measurement failed",
        result=reason[:200],
        met=False,
        figures={"error": str(error)[-3000:], "api_server_log": server_log},
    )


MEASUREMENTS: dict[str, Callable[[Context], list[Row]]] = {
    "batch": batch_publish,
    "single": single_publish,
    "pull": pull_ack,
    "e2e": end_to_end,
    "longpoll": long_polling,
    "flat-messages": flat_messages,
    "flat-queues": flat_queues,
}
