"""The measurements. Each function runs its client jobs (every subject right next to its
reference) and returns the rows of the results table with the raw figures behind them.

Throughput subjects and references alternate in rounds (subject, reference, reference,
subject, ...), so a slow drift of the machine weighs on both alike; the figure of each is
its total count over its total measured time.
"""

from __future__ import annotations

import contextlib
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
from bench.stats import summarize_ms

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
    #: Fairness: the tenant whose plan has a publish rate limit, the tenants without one,
    #: and a tenant whose plan allows 1 message/s (nearly every publish refused).
    flooder: BenchTenant | None = None
    bystanders: list[BenchTenant] = field(default_factory=list)
    refused: BenchTenant | None = None

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

    def recording(self, server: Server, label: str) -> contextlib.AbstractContextManager[None]:
        """With --profile, sample ``server`` for the duration of the block."""
        if self.profiler is None:
            return contextlib.nullcontext()
        return self.profiler.record(server, label)


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


# --- fairness -----------------------------------------------------------------------------------

#: Seconds the flood runs before the bystanders' window opens (and goes on after it closes).
FLOOD_LEAD = 1.0
#: The goal: a bystander's p99 under flood at most this many times its p99 alone.
FAIRNESS_GOAL = 2.0


def _bystander_job(ctx: Context) -> dict[str, Any]:
    p = ctx.profile
    return {
        "kind": "bystander",
        "port": ctx.api.port,
        "tenants": [{"key": t.key, "queue": "fair"} for t in ctx.bystanders],
        "publish_rate": p.fairness_publish_rate,
        "pull_rate": p.fairness_pull_rate,
        "max_messages": 10,
        "seconds": p.fairness_seconds,
        "warmup": 0.5,
        # pools larger than the rates need, so that a slower answer does not make the
        # schedule wait for a free connection (it would still count, as send lag)
        "publish_connections": 8,
        "pull_connections": 8,
        "raw": True,
        "cpu_pids": ctx.cpu_pids(ctx.api),
    }


def _flood_job(ctx: Context, mode: str, connections: int, start_at: float) -> dict[str, Any]:
    assert ctx.flooder is not None
    return {
        "kind": "flood",
        "mode": mode,
        "port": ctx.api.port,
        "key": ctx.flooder.key,
        "queue": "flood",
        "max_messages": 10,
        "connections": connections,
        "start_at": start_at,
        "warmup": FLOOD_LEAD,
        # whole seconds: the limit's windows are seconds of the clock, so a window of
        # n.5 s would hold n or n + 1 of them and bias the accepted rate
        "duration": ctx.profile.fairness_seconds + 1.0,
        "cpu_pids": ctx.cpu_pids(ctx.api),
    }


def _combined(phases: list[dict[str, Any]], op: str) -> dict[str, Any]:
    """The latency summary of ``op`` over every phase's samples together."""
    return summarize_ms([v for phase in phases for v in phase["samples"][op]])


def _fairness_cpu(phases: list[dict[str, Any]]) -> dict[str, float]:
    """CPU over the phases (weighted by length), the client being every load process: the
    bystanders' and, under flood, the flooding ones; "other" what no measured process used."""
    cpu = _cpu([{"elapsed": p["elapsed"], "cpu": p["cpu"]} for p in phases])
    total = sum(p["elapsed"] for p in phases) or 1.0
    cpu["client"] = round(sum(p["client_cpu"] * p["elapsed"] for p in phases) / total, 1)
    if "machine" in cpu:
        measured = cpu["client"] + cpu.get("server", 0.0) + cpu.get("redis", 0.0)
        cpu["other"] = round(max(cpu["machine"] - measured, 0.0), 1)
    return cpu


def fairness(ctx: Context) -> list[Row]:
    """Bystander tenants' latency alone and while another tenant floods the shared workers.

    Each phase runs the bystanders (open loop, :func:`bench.client.job_bystander`) in a
    process of their own; a flood phase adds two more processes for the flooding tenant, one
    publishing as fast as it can on several connections (far past its plan's limit, so most
    answers are 429) and one pulling and acking its own full queue as fast as it can. The
    phases alternate (alone, flood, flood, alone, ...) so that a drift of the machine weighs
    on both alike. Then, for the reason behind the figures, the worker CPU one refused
    publish costs next to one accepted publish, each at saturation."""
    p = ctx.profile
    assert ctx.flooder is not None
    assert ctx.refused is not None
    assert ctx.bystanders
    seconds = fixtures.fill_queue(ctx.flooder, "flood", p.fairness_fill)
    log(f"  filled the flooder's queue with {p.fairness_fill:,} messages in {seconds:.1f} s")
    timeout = p.fairness_seconds + 60

    def keep(result: dict[str, Any], label: str) -> dict[str, Any]:
        result["samples"] = {op: result.pop(f"raw_{op}") for op in ("publish", "pull")}
        for tenant in ctx.bystanders:
            fixtures.empty_queue(tenant, "fair")
        lag = result["send_lag"]
        log(
            f"  {label}: publish p50 {result['publish_latency']['p50_ms']} ms p99 "
            f"{result['publish_latency']['p99_ms']} ms; pull p50 "
            f"{result['pull_latency']['p50_ms']} ms p99 {result['pull_latency']['p99_ms']} ms "
            f"(client send lag p99 {lag['p99_ms']} ms; cpu {result['cpu']})"
        )
        return result

    def alone() -> dict[str, Any]:
        job = {**_bystander_job(ctx), "start_at": time.time() + 0.5}
        with ctx.recording(ctx.api, "fairness-alone"):
            result = run_client(job, timeout)
        result["client_cpu"] = result["cpu"]["client"]
        return keep(result, "alone")

    def flood() -> dict[str, Any]:
        start_at = time.time() + 1.5  # every process is up and connected by then
        jobs = [
            {**_bystander_job(ctx), "start_at": start_at + FLOOD_LEAD},
            _flood_job(ctx, "publish", p.fairness_flood_connections, start_at),
            _flood_job(ctx, "pull", p.fairness_flood_pull_connections, start_at),
        ]
        with ctx.recording(ctx.api, "fairness-flood"), ThreadPoolExecutor(len(jobs)) as pool:
            result, publisher, puller = pool.map(lambda job: run_client(job, timeout), jobs)
        result["flood_publish"], result["flood_pull"] = publisher, puller
        result["client_cpu"] = (
            result["cpu"]["client"] + publisher["cpu"]["client"] + puller["cpu"]["client"]
        )
        log(
            f"  flooder: {publisher['messages_per_s']:,.0f} msg/s accepted, "
            f"{publisher['rate_limited_per_s']:,.0f} 429/s ({publisher['statuses']}); pulled "
            f"{puller['messages_per_s']:,.0f} msg/s"
        )
        return keep(result, "under flood")

    results: dict[str, list[dict[str, Any]]] = {"alone": [], "flood": []}
    ran: list[str] = []
    for r in range(p.fairness_rounds):
        order = [("alone", alone), ("flood", flood)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            results[name].append(fn())
            ran.append(name)
    cost = _refusal_cost(ctx)

    publishers = [r["flood_publish"] for r in results["flood"]]
    pullers = [r["flood_pull"] for r in results["flood"]]
    accepted = _rate(publishers, "messages_per_s")
    refused_rate = _rate(publishers, "rate_limited_per_s")
    refused_count = sum(r["rate_limited"] for r in publishers)
    pulled = _rate(pullers, "messages_per_s")
    figures_common = {
        "bystander_tenants": len(ctx.bystanders),
        "bystander_publish_rate": p.fairness_publish_rate,
        "bystander_pull_rate": p.fairness_pull_rate,
        "phase_seconds": p.fairness_seconds,
        "rounds": p.fairness_rounds,
    }
    # The goal is about a flooder at its limit: if it never got a 429 (a machine too busy
    # to let it reach its limit), the figures are kept but give no verdict.
    at_limit = all(r["rate_limited"] > 0 for r in publishers)
    rows = []
    summaries: dict[str, dict[str, Any]] = {}
    cpu_figures: dict[str, dict[str, Any]] = {
        "publish": {
            "cpu": _fairness_cpu(results["flood"]),
            "reference_cpu": _fairness_cpu(results["alone"]),
        },
        "pull": {},  # the same phases: listed once in the CPU table
    }
    for op, title in (("publish", "publish (1 message)"), ("pull", "pull (up to 10) + ack")):
        a, f = _combined(results["alone"], op), _combined(results["flood"], op)
        summaries[op] = {"alone": a, "flood": f}
        ratio = f["p99_ms"] / a["p99_ms"] if a["p99_ms"] and f["p99_ms"] else None
        rows.append(
            Row(
                measurement=f"Fairness: bystander {title} latency, {len(ctx.bystanders)} "
                f"tenants at {getattr(p, f'fairness_{op}_rate')} req/s open loop, while one "
                f"tenant floods at its limit",
                result=f"p50 {_ms(f['p50_ms'])}, p99 {_ms(f['p99_ms'])} under flood"
                + ("" if at_limit else " (the flooder stayed below its limit: no verdict)"),
                reference=f"alone: p50 {_ms(a['p50_ms'])}, p99 {_ms(a['p99_ms'])}",
                ratio=None if ratio is None else round(ratio, 3),
                goal=f"p99 under flood ≤ {FAIRNESS_GOAL:g} x alone",
                met=(ratio is not None and ratio <= FAIRNESS_GOAL) if at_limit else None,
                figures={
                    **figures_common,
                    "flooder_at_limit": at_limit,
                    "alone": a,
                    "flood": f,
                    "p50_ratio": round(f["p50_ms"] / a["p50_ms"], 3)
                    if a["p50_ms"] and f["p50_ms"]
                    else None,
                    "errors_alone": sum(r["errors"] for r in results["alone"]),
                    "errors_flood": sum(r["errors"] for r in results["flood"]),
                    "send_lag_alone": _merge_lag(results["alone"]),
                    "send_lag_flood": _merge_lag(results["flood"]),
                    **cpu_figures[op],
                },
            )
        )
    limit = p.fairness_flood_limit
    rows.append(
        Row(
            measurement=f"Fairness: the flooding tenant (plan limit {limit:,} msg/s; "
            f"{p.fairness_flood_connections} connections publishing, "
            f"{p.fairness_flood_pull_connections} pulling + acking) (informational)",
            result=f"{_fmt(accepted, 'msg/s')} accepted, {_fmt(refused_rate, '429/s')} "
            f"({refused_count:,} answered 429); {_fmt(pulled, 'msg/s')} pulled",
            figures={
                "plan_publish_rate_per_second": limit,
                "accepted_messages_per_s": round(accepted, 1),
                "rate_limited_per_s": round(refused_rate, 1),
                "rate_limited": refused_count,
                "publish_statuses": _add_statuses(publishers),
                "pull_statuses": _add_statuses(pullers),
                "pulled_messages_per_s": round(pulled, 1),
                "at_limit": at_limit,
            },
        )
    )
    rows.append(cost)
    for phases in results.values():
        for phase in phases:
            del phase["samples"]
    ctx.details["fairness"] = {"latency": summaries, "order": ran, **results}
    return rows


def _merge_lag(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """The worst of the phases' client send lags: how late this process itself sent."""
    return {
        "p99_ms_max": max((ph["send_lag"]["p99_ms"] or 0.0) for ph in phases),
        "max_ms": max((ph["send_lag"]["max_ms"] or 0.0) for ph in phases),
    }


def _add_statuses(results: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in results:
        for status, n in r["statuses"].items():
            total[status] = total.get(status, 0) + n
    return total


def _refusal_cost(ctx: Context) -> Row:
    """Worker CPU per answer of a publish refused by the rate limit (429) and of one
    accepted (201), each a closed loop at saturation on the same connections: what a
    flooding tenant's refused requests take from everyone else."""
    assert ctx.refused is not None
    n = ctx.profile.fairness_flood_connections
    bystander = ctx.bystanders[0]

    def variant(
        tenant: BenchTenant | None, queue: str, expect: int
    ) -> Callable[[], dict[str, Any]]:
        server = ctx.api if tenant is not None else ctx.bare

        def run() -> dict[str, Any]:
            job = _closed_loop_job(
                ctx,
                kind="http",
                port=server.port,
                # the bare view too: a Bearer key routes it as the API's requests
                key=(tenant or bystander).key,
                path=f"/v1/queues/{queue}/messages" if tenant is not None else "/bare",
                body="single",
                expect=expect,
                tolerate=[201] if expect == 429 else [],
                connections=n,
                cpu_pids=ctx.cpu_pids(server),
            )
            result = ctx.run(job, _timeout(ctx), server, f"fairness-{server.name}-{expect}")
            if tenant is not None:
                fixtures.empty_queue(tenant, queue)
            used = result["cpu"].get("server", 0.0)
            rate = result["requests_per_s"]
            result["server_cpu_us_per_request"] = (
                round(used / 100 / rate * 1e6, 1) if rate else None
            )
            what = "bare view" if tenant is None else f"publish answered {expect}"
            log(
                f"  {what}: {rate:,.0f} req/s, "
                f"{result['server_cpu_us_per_request']} µs of worker CPU each"
            )
            return result

        return run

    rounds = max(ctx.profile.rounds // 2, 1)
    refused: list[dict[str, Any]] = []
    accepted: list[dict[str, Any]] = []
    bare: list[dict[str, Any]] = []
    for r in range(rounds):
        variants = [(refused, variant(ctx.refused, "refused", 429)),
                    (accepted, variant(bystander, "fair", 201)),
                    (bare, variant(None, "", 201))]  # fmt: skip
        for into, fn in variants if r % 2 == 0 else variants[::-1]:
            into.append(fn())
    rate_429, rate_201 = _rate(refused, "requests_per_s"), _rate(accepted, "requests_per_s")
    rate_bare = _rate(bare, "requests_per_s")
    cpu_429, cpu_201 = _cpu(refused), _cpu(accepted)

    def per_request(cpu: dict[str, float], rate: float) -> float | None:
        return round(cpu.get("server", 0.0) / 100 / rate * 1e6, 1) if rate else None

    us_429, us_201 = per_request(cpu_429, rate_429), per_request(cpu_201, rate_201)
    us_bare = per_request(_cpu(bare), rate_bare)
    share = us_429 / us_201 if us_429 and us_201 else None
    ctx.details["refusal_cost"] = {"refused": refused, "accepted": accepted, "bare": bare}
    return Row(
        measurement=f"Fairness: cost of a publish refused by the rate limit (429), {n} "
        "connections at saturation (informational)",
        result=f"{_fmt(rate_429, 'req/s')} answered 429, {us_429} µs of worker CPU each",
        reference=f"accepted (201): {_fmt(rate_201, 'req/s')}, {us_201} µs each; the bare "
        f"view behind the same entry point (the floor of any answer): "
        f"{_fmt(rate_bare, 'req/s')}, {us_bare} µs each",
        ratio=None if share is None else round(share, 3),
        figures={
            "refused_requests_per_s": round(rate_429, 1),
            "accepted_requests_per_s": round(rate_201, 1),
            "refused_server_cpu_us_per_request": us_429,
            "accepted_server_cpu_us_per_request": us_201,
            "bare_requests_per_s": round(rate_bare, 1),
            "bare_server_cpu_us_per_request": us_bare,
            "refused_latency": refused[-1]["latency"],
            "accepted_latency": accepted[-1]["latency"],
            "cpu": cpu_429,
            "reference_cpu": cpu_201,
        },
    )


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
    "fairness": fairness,
}
