"""The load generator: ``python -m bench.client`` reads one job (JSON) on stdin, runs it and
writes its result (JSON) on stdout.

It runs in its own process, away from the orchestrator's Django, so its CPU time can be told
apart from the server's: every job reports the client's CPU use beside that of the server's
workers and of Redis over the same window (percent of one core). It uses uvloop when it is
installed and the raw HTTP/1.1 client of :mod:`bench.httpclient`; every loop is bounded in
time and count.

Jobs (``kind``):

``http``      closed loop: N connections each sending the same request back to back
``xadd``      closed loop: N redis-py pipelines of XADD, the batch-publish reference
``pull_ack``  closed loop: N consumers each pulling up to k messages and acking them
``e2e``       open-loop publishing at a fixed rate while long-polling consumers receive
``longpoll``  N waiting pulls held, then single-message and burst wake-ups timed
``flat``      sequential publish → pull → ack latencies on alternating groups of queues
``bystander`` open-loop publishing and pulling at modest rates on several tenants' queues,
              every request's latency timed from its scheduled start (fairness)
``flood``     closed loop publishing (or pulling and acking) as fast as the connections go,
              every answer counted by status, 429s included (fairness)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
import psutil

from bench import payloads
from bench.httpclient import Connection, HTTPError, api_request, build_request, open_many
from bench.servers import raise_nofile_limit
from bench.stats import summarize_ms

HOST = "127.0.0.1"
#: The fields of psutil.cpu_times() that count as busy.
BUSY_CPU_TIMES = ("user", "nice", "system", "irq", "softirq", "steal")
Job = dict[str, Any]
Result = dict[str, Any]


# --- CPU accounting -----------------------------------------------------------------------------


class CpuMeter:
    """CPU used over a window by this process, by groups of other processes (by pid) and by
    the whole machine, as a percentage of one core."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self._groups: dict[str, list[psutil.Process]] = {}
        for name, pids in groups.items():
            procs = []
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    procs.append(psutil.Process(pid))
            self._groups[name] = procs
        self._start: dict[str, float] = {}
        self._wall = 0.0

    def _sample(self) -> dict[str, float]:
        machine = psutil.cpu_times()  # summed over every CPU
        sample = {
            "client": time.process_time(),
            "machine": sum(getattr(machine, name, 0.0) for name in BUSY_CPU_TIMES),
        }
        for name, procs in self._groups.items():
            total = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
            sample[name] = total
        return sample

    def start(self) -> None:
        self._start = self._sample()
        self._wall = time.perf_counter()

    def stop(self) -> dict[str, float]:
        """Percent of one core per group; ``machine`` is every process on the machine and
        ``other`` what is left when the measured processes are taken out: background load
        that competes with the measurement."""
        end = self._sample()
        wall = max(time.perf_counter() - self._wall, 1e-9)
        used = {name: round((end[name] - self._start[name]) / wall * 100, 1) for name in end}
        ours = sum(value for name, value in used.items() if name != "machine")
        used["other"] = round(max(used["machine"] - ours, 0.0), 1)
        return used


# --- helpers ------------------------------------------------------------------------------------


def _request_body(kind: str) -> bytes:
    if kind == "single":
        return payloads.single_message()
    if kind == "batch":
        return payloads.batch_messages()
    if kind == "none":
        return b""
    raise ValueError(f"unknown body kind {kind!r}")


def _sample_error(samples: list[str], status: int, body: bytes) -> None:
    if len(samples) < 5:
        samples.append(f"{status} {body[:300].decode(errors='replace')}")


async def _bounded(tasks: list[asyncio.Task[Any]], timeout: float) -> None:
    """Wait for ``tasks``; cancel whatever is still running after ``timeout`` seconds."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def _workers(job: Job) -> list[int]:
    """The pids of the target server's workers (the job's ``cpu_pids["server"]``)."""
    return list(job.get("cpu_pids", {}).get("server", []))


def _server_ends(port: int, local_ports: set[int]) -> dict[int, int]:
    """For our connections to ``port`` (by local port): the pid of the server process that
    accepted each one."""
    owners = {}
    for c in psutil.net_connections(kind="tcp"):
        if c.pid and c.laddr and c.laddr.port == port and c.raddr and c.raddr.port in local_ports:
            owners[c.raddr.port] = c.pid
    return owners


async def open_balanced(port: int, count: int, workers: list[int]) -> list[Connection]:
    """``count`` connections spread evenly over the server's ``workers``.

    The workers share one listening socket and whichever is awake first accepts, so a burst
    of a few connections often lands on one worker, which then does all the work while the
    other idles. Like a load balancer in front of many clients, this keeps the split even:
    it opens connections, asks the kernel's socket table which worker holds the other end
    of each, keeps the ones a worker still needs and closes the rest."""
    if len(workers) < 2:
        return await open_many(HOST, port, count)
    share, extra = divmod(count, len(workers))
    quota = {pid: share + (1 if i < extra else 0) for i, pid in enumerate(workers)}
    kept: dict[int, list[Connection]] = {pid: [] for pid in workers}
    for _ in range(50):
        missing = sum(quota[pid] - len(kept[pid]) for pid in workers)
        if missing == 0:
            break
        fresh = await open_many(HOST, port, missing + min(missing, 100))
        await asyncio.sleep(0.05)  # let the workers accept them
        owners = _server_ends(port, {c.local_port for c in fresh})
        for conn in fresh:
            pid = owners.get(conn.local_port)
            if pid in kept and len(kept[pid]) < quota[pid]:
                kept[pid].append(conn)
            else:
                conn.close()
    else:
        raise HTTPError(f"could not spread {count} connections over workers {workers}")
    # interleaved, so that a prefix of the list is balanced too
    return [conn for group in zip(*kept.values(), strict=False) for conn in group] + [
        conn for pid in workers for conn in kept[pid][share:]
    ]


class ClosedLoop:
    """The window of a closed-loop measurement: ``warmup`` seconds unrecorded, then
    ``duration`` seconds recorded, while ``workers`` run until :attr:`stop` is set. With
    ``start_at`` (epoch seconds) the workers start then, so that the windows of several
    client processes coincide."""

    def __init__(self, job: Job) -> None:
        self.warmup = float(job.get("warmup", 0.0))
        self.duration = float(job["duration"])
        self.start_at = float(job.get("start_at", 0.0))
        self.meter = CpuMeter(job.get("cpu_pids", {}))
        self.recording = False
        self.stop = False
        self.elapsed = 0.0
        self.cpu: dict[str, float] = {}
        self.ended_early = False
        self._started = 0.0

    async def run(self, workers: list[Coroutine[Any, Any, None]]) -> None:
        if self.start_at:  # several processes measuring together start together
            await asyncio.sleep(max(self.start_at - time.time(), 0.0))
        tasks = [asyncio.create_task(w) for w in workers]
        try:
            await self._window(tasks)
        finally:
            self.stop = True
            await _bounded(tasks, 30.0)

    async def _window(self, tasks: list[asyncio.Task[Any]]) -> None:
        await asyncio.wait(tasks, timeout=self.warmup)
        self.recording = True
        self.meter.start()
        self._started = time.perf_counter()
        done, _ = await asyncio.wait(tasks, timeout=self.duration)
        # Workers end by themselves only when there is nothing left to do (a drained queue).
        self.ended_early = bool(done)
        self.finish()

    def finish(self) -> None:
        if self.recording:
            self.elapsed = time.perf_counter() - self._started
            self.cpu = self.meter.stop()
            self.recording = False
        self.stop = True


# --- jobs ---------------------------------------------------------------------------------------


async def job_http(job: Job) -> Result:
    """Closed loop of one request. Result: requests/s, messages/s, latency, CPU."""
    port = job["port"]
    raw = api_request(
        job.get("method", "POST"),
        job["path"],
        port=port,
        key=job.get("key"),
        body=_request_body(job.get("body", "single")),
    )
    expect = int(job.get("expect", 201))
    #: answers neither counted nor errors (the odd 201 of a tenant refused all but 1/s)
    tolerate = {int(status) for status in job.get("tolerate", ())}
    connections = await open_balanced(port, int(job["connections"]), _workers(job))
    window = ClosedLoop(job)
    latencies: list[float] = []
    errors: list[str] = []
    counts = {"ok": 0, "errors": 0, "tolerated": 0}

    async def worker(conn: Connection) -> None:
        while not window.stop:
            started = time.perf_counter()
            status, body = await conn.request(raw)
            if not window.recording:
                continue
            if status == expect:
                counts["ok"] += 1
                latencies.append(conn.received_at - started)
            elif status in tolerate:
                counts["tolerated"] += 1
            else:
                counts["errors"] += 1
                _sample_error(errors, status, body)

    await window.run([worker(c) for c in connections])
    for conn in connections:
        conn.close()
    per_request = int(job.get("messages_per_request", 1))
    return {
        "requests": counts["ok"],
        "errors": counts["errors"],
        "tolerated": counts["tolerated"],
        "error_samples": errors,
        "elapsed": round(window.elapsed, 3),
        "requests_per_s": round(counts["ok"] / window.elapsed, 1),
        "messages_per_s": round(counts["ok"] * per_request / window.elapsed, 1),
        "latency": summarize_ms(latencies),
        "cpu": window.cpu,
    }


def _hiredis_connection_class() -> type:
    """redis-py's async connection with hiredis's C command packer, the packer redis-py's
    sync connection uses by default (the async one packs in Python, which would make the
    reference measure Python rather than Redis)."""
    import hiredis
    import redis.asyncio as aioredis

    class HiredisPackedConnection(aioredis.Connection):
        def pack_command(self, *args: Any) -> list[bytes]:
            if isinstance(args[0], str) and " " in args[0]:
                args = (*args[0].split(), *args[1:])
            return [hiredis.pack_command(args)]

    return HiredisPackedConnection


async def job_xadd(job: Job) -> Result:
    """Closed loop of redis-py pipelines, each XADDing the same ``batch`` entries of the
    engine's layout to one stream: what a publish of a batch does to Redis, minus the API."""
    import redis.asyncio as aioredis

    batch = int(job.get("batch", payloads.BATCH_SIZE))
    stream = job["stream"]
    fields = payloads.stream_fields(batch)
    n = int(job["connections"])
    pool = aioredis.ConnectionPool.from_url(
        job["redis_url"], max_connections=n + 2, connection_class=_hiredis_connection_class()
    )
    client = aioredis.Redis(connection_pool=pool)
    await client.ping()
    window = ClosedLoop(job)
    latencies: list[float] = []
    counts = {"batches": 0}

    async def worker() -> None:
        while not window.stop:
            started = time.perf_counter()
            pipe = client.pipeline(transaction=False)
            for entry in fields:
                pipe.xadd(stream, entry)  # type: ignore[arg-type]
            await pipe.execute()
            if window.recording:
                counts["batches"] += 1
                latencies.append(time.perf_counter() - started)

    try:
        await window.run([worker() for _ in range(n)])
    finally:
        await client.unlink(stream)
        await client.aclose()
    return {
        "requests": counts["batches"],
        "errors": 0,
        "elapsed": round(window.elapsed, 3),
        "requests_per_s": round(counts["batches"] / window.elapsed, 1),
        "messages_per_s": round(counts["batches"] * batch / window.elapsed, 1),
        "latency": summarize_ms(latencies),
        "cpu": window.cpu,
    }


async def job_pull_ack(job: Job) -> Result:
    """Consumers pulling up to ``max_messages`` and acking what they got, until the window
    ends or the queue is drained."""
    port, key, queue = job["port"], job["key"], job["queue"]
    pull_raw = api_request(
        "POST",
        f"/v1/queues/{queue}/pull",
        port=port,
        key=key,
        body=orjson.dumps({"max_messages": int(job["max_messages"])}),
    )
    ack_path = f"/v1/queues/{queue}/ack"
    connections = await open_balanced(port, int(job["connections"]), _workers(job))
    window = ClosedLoop(job)
    pull_latency: list[float] = []
    ack_latency: list[float] = []
    errors: list[str] = []
    counts = {"acked": 0, "pulls": 0, "errors": 0}

    async def worker(conn: Connection) -> None:
        while not window.stop:
            started = time.perf_counter()
            status, body = await conn.request(pull_raw)
            pulled = conn.received_at
            if status != 200:
                counts["errors"] += 1
                _sample_error(errors, status, body)
                continue
            messages = orjson.loads(body)["messages"]
            if not messages:
                return  # drained: the window ends early
            ack_body = orjson.dumps({"ack_ids": [m["ack_id"] for m in messages]})
            status, body = await conn.request(
                api_request("POST", ack_path, port=port, key=key, body=ack_body)
            )
            if status != 200:
                counts["errors"] += 1
                _sample_error(errors, status, body)
                continue
            if window.recording:
                counts["pulls"] += 1
                counts["acked"] += orjson.loads(body)["acked"]
                pull_latency.append(pulled - started)
                ack_latency.append(conn.received_at - pulled)

    await window.run([worker(c) for c in connections])
    for conn in connections:
        conn.close()
    return {
        "messages": counts["acked"],
        "pulls": counts["pulls"],
        "errors": counts["errors"],
        "error_samples": errors,
        "drained": window.ended_early,
        "elapsed": round(window.elapsed, 3),
        "messages_per_s": round(counts["acked"] / window.elapsed, 1),
        "pull_latency": summarize_ms(pull_latency),
        "ack_latency": summarize_ms(ack_latency),
        "cpu": window.cpu,
    }


async def job_e2e(job: Job) -> Result:
    """Open-loop publishing of one message per request at ``rate``/s while consumers long
    poll (up to 100 messages per pull) and ack in batches every ``ack_every`` seconds, as an
    efficient SDK would. Each body carries its scheduled send time, so a late send (a busy
    client or a slow server) counts against the latency instead of hiding it."""
    port, key, queue = job["port"], job["key"], job["queue"]
    rate, seconds = float(job["rate"]), float(job["seconds"])
    warmup = float(job.get("warmup", 1.0))
    ack_every = float(job.get("ack_every", 0.05))
    total = int(rate * seconds)
    pad = "x" * 200
    publish_path = f"/v1/queues/{queue}/messages"
    pull_raw = api_request(
        "POST",
        f"/v1/queues/{queue}/pull",
        port=port,
        key=key,
        body=orjson.dumps({"max_messages": 100, "wait_seconds": 20}),
    )
    ack_path = f"/v1/queues/{queue}/ack"
    publishers = await open_balanced(port, int(job.get("publish_connections", 16)), _workers(job))
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for conn in publishers:
        free.put_nowait(conn)
    consumers = await open_many(HOST, port, int(job.get("consumers", 1)))
    acker = await Connection.open(HOST, port)
    meter = CpuMeter(job.get("cpu_pids", {}))
    latency: list[tuple[float, float]] = []  # (scheduled send time, latency)
    publish_latency: list[float] = []
    errors: list[str] = []
    pending_acks: list[str] = []
    counts = dict.fromkeys(
        ("published", "received", "acked", "pulls", "empty_pulls", "errors", "late_sends"), 0
    )
    state = {"stop": False}

    async def consume(conn: Connection) -> None:
        while not state["stop"]:
            status, body = await conn.request(pull_raw)
            now = conn.received_at
            if status != 200:
                counts["errors"] += 1
                _sample_error(errors, status, body)
                await asyncio.sleep(0.01)
                continue
            messages = orjson.loads(body)["messages"]
            counts["pulls"] += 1
            if not messages:
                counts["empty_pulls"] += 1
            for message in messages:
                sent = message["body"]["t"]
                latency.append((sent, now - sent))
                pending_acks.append(message["ack_id"])
            counts["received"] += len(messages)

    async def ack_batches() -> None:
        while True:
            await asyncio.sleep(ack_every)
            if not pending_acks:
                if state["stop"]:
                    return
                continue
            batch = pending_acks[:1000]
            del pending_acks[:1000]
            body = orjson.dumps({"ack_ids": batch})
            status, answer = await acker.request(
                api_request("POST", ack_path, port=port, key=key, body=body)
            )
            if status == 200:
                counts["acked"] += orjson.loads(answer)["acked"]
            else:
                counts["errors"] += 1
                _sample_error(errors, status, answer)

    async def publish_one(conn: Connection, scheduled: float, n: int) -> None:
        body = orjson.dumps({"body": {"t": scheduled, "n": n, "pad": pad}})
        status, answer = await conn.request(
            api_request("POST", publish_path, port=port, key=key, body=body)
        )
        free.put_nowait(conn)
        if status == 201:
            counts["published"] += 1
            publish_latency.append(conn.received_at - scheduled)
        else:
            counts["errors"] += 1
            _sample_error(errors, status, answer)

    consumer_tasks = [asyncio.create_task(consume(conn)) for conn in consumers]
    acker_task = asyncio.create_task(ack_batches())
    await asyncio.sleep(0.5)  # the consumers are waiting before the first publish
    meter.start()
    start = time.perf_counter() + 0.01
    sends: list[asyncio.Task[None]] = []
    for n in range(total):
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            counts["late_sends"] += 1
        conn = await free.get()
        sends.append(asyncio.create_task(publish_one(conn, scheduled, n)))
    await _bounded(sends, 10.0)
    deadline = time.perf_counter() + 10.0
    while counts["received"] < counts["published"] and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    cpu = meter.stop()
    state["stop"] = True
    for task in consumer_tasks:
        task.cancel()
    await asyncio.gather(*consumer_tasks, return_exceptions=True)
    await _bounded([acker_task], 10.0)
    for conn in [*publishers, *consumers, acker]:
        conn.close()
    measured = [lat for sent, lat in latency if sent >= start + warmup]
    return {
        "rate": rate,
        "published": counts["published"],
        "received": counts["received"],
        "acked": counts["acked"],
        "pulls": counts["pulls"],
        "empty_pulls": counts["empty_pulls"],
        "errors": counts["errors"],
        "error_samples": errors,
        "late_sends": counts["late_sends"],
        "elapsed": round(elapsed, 3),
        "warmup_excluded_s": warmup,
        "latency": summarize_ms(measured),
        "publish_latency": summarize_ms(publish_latency),
        "cpu": cpu,
    }


def _server_sockets(port: int) -> int:
    """Established TCP connections whose local port is the server's."""
    return sum(
        1
        for c in psutil.net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def job_longpoll(job: Job) -> Result:
    """Hold ``waiters`` long polls on one queue, check that the server still holds all of
    them after ``hold`` seconds, then time wake-ups: ``samples`` single messages published
    one after the other (one waiter each), and a burst of one message per waiter."""
    port, key, queue = job["port"], job["key"], job["queue"]
    n, hold, samples = int(job["waiters"]), float(job["hold"]), int(job["samples"])
    pull_raw = api_request(
        "POST",
        f"/v1/queues/{queue}/pull",
        port=port,
        key=key,
        body=orjson.dumps({"max_messages": 1, "wait_seconds": 20}),
    )
    publish_path = f"/v1/queues/{queue}/messages"
    meter = CpuMeter(job.get("cpu_pids", {}))
    conns = await open_balanced(port, n, _workers(job))
    publisher = await Connection.open(HOST, port)
    completed: asyncio.Queue[Connection] = asyncio.Queue()
    futures: dict[Connection, asyncio.Future[tuple[int, bytes]]] = {}
    issued_at: dict[Connection, float] = {}

    def issue(conn: Connection) -> None:
        future = conn.send(pull_raw)
        future.add_done_callback(lambda _f, c=conn: completed.put_nowait(c))
        futures[conn] = future
        issued_at[conn] = time.perf_counter()

    async def publish(body: bytes) -> tuple[float, float]:
        sent = time.perf_counter()
        status, answer = await publisher.request(
            api_request("POST", publish_path, port=port, key=key, body=body)
        )
        if status != 201:
            raise HTTPError(f"publish failed: {status} {answer[:200]!r}")
        return sent, publisher.received_at

    for conn in conns:
        issue(conn)
    await asyncio.sleep(hold)
    returned_early = completed.qsize()
    sockets = _server_sockets(port)
    early: dict[str, int] = {}
    samples_early: list[str] = []
    while not completed.empty():  # what came back too early, and waits again
        conn = completed.get_nowait()
        try:
            status, body = futures[conn].result()
        except HTTPError as exc:
            status, body = 0, str(exc).encode()
        early[str(status)] = early.get(str(status), 0) + 1
        _sample_error(samples_early, status, body)
        issue(conn)
    result: Result = {
        "waiters": n,
        "hold_seconds": hold,
        "returned_before_publish": returned_early,
        "early_statuses": early,
        "early_samples": samples_early,
        "held": n - returned_early,
        "server_sockets": sockets,
    }
    meter.start()
    # 1. Single wake-ups: each publish wakes one of the n waiting pulls.
    wake: list[float] = []
    deliver: list[float] = []
    empty = 0
    for s in range(samples):
        if time.perf_counter() - min(issued_at.values()) > 17.0:
            break  # the oldest pulls near their 20 s wait: stop before they expire
        sent, answered = await publish(orjson.dumps({"body": {"s": s}}))
        while True:
            conn = await asyncio.wait_for(completed.get(), 5.0)
            status, body = futures[conn].result()
            got = orjson.loads(body)["messages"] if status == 200 else []
            issue(conn)  # back to waiting, so n pulls stay held
            if got:
                break
            empty += 1
        wake.append(conn.received_at - answered)
        deliver.append(conn.received_at - sent)
        await asyncio.sleep(0.005)  # the re-issued pull is waiting again
    result["single"] = {
        "wake_after_publish_response": summarize_ms(wake),
        "publish_sent_to_pull_response": summarize_ms(deliver),
        "empty_returns": empty,
    }
    # 2. A burst: one message for every waiter, in batches of 100.
    await asyncio.sleep(0.05)
    while not completed.empty():  # anything that expired meanwhile waits again first
        conn = completed.get_nowait()
        issue(conn)
    await asyncio.sleep(0.05)
    answered_at: list[float] = []
    for start in range(0, n, payloads.BATCH_SIZE):
        count = min(payloads.BATCH_SIZE, n - start)
        batch = orjson.dumps({"messages": [{"body": {"b": len(answered_at)}}] * count})
        answered_at.append((await publish(batch))[1])
    woken: list[float] = []
    deadline = time.perf_counter() + 10.0
    while len(woken) < n and time.perf_counter() < deadline:
        try:
            conn = await asyncio.wait_for(completed.get(), deadline - time.perf_counter())
        except TimeoutError:
            break
        status, body = futures[conn].result()
        got = orjson.loads(body)["messages"] if status == 200 else []
        if got:
            woken.append(conn.received_at - answered_at[got[0]["body"]["b"]])
        else:
            issue(conn)
    result["cpu"] = meter.stop()
    result["burst"] = {"messages": n, "woken": len(woken), "wake": summarize_ms(woken)}
    for conn in [*conns, publisher]:
        conn.close()
    return result


async def job_flat(job: Job) -> Result:
    """Sequential publish → pull(1) → ack on one connection, alternating between groups of
    queues in blocks (forwards, then backwards), so every group is measured under the same
    conditions. The first block of each group warms caches and is not recorded."""
    port = job["port"]
    groups: list[dict[str, Any]] = job["groups"]
    iterations, block = int(job["iterations"]), int(job.get("block", 100))
    body = payloads.single_message()
    pull_body = orjson.dumps({"max_messages": 1})
    conn = await Connection.open(HOST, port)
    lat: dict[str, dict[str, list[float]]] = {
        g["label"]: {"publish": [], "pull": [], "ack": []} for g in groups
    }
    empty = dict.fromkeys(lat, 0)
    errors: list[str] = []
    position = dict.fromkeys(lat, 0)
    meter = CpuMeter(job.get("cpu_pids", {}))
    meter.start()

    async def timed(raw: bytes, expect: int) -> tuple[float, bytes]:
        started = time.perf_counter()
        status, answer = await conn.request(raw)
        if status != expect:
            _sample_error(errors, status, answer)
            raise HTTPError(f"expected {expect}, got {status}: {answer[:200]!r}")
        return conn.received_at - started, answer

    blocks = max(iterations // block, 1) + 1
    for b in range(blocks):
        # A B C, C B A, ...: no group always follows the same other group
        for group in groups if b % 2 == 0 else groups[::-1]:
            label, key, queues = group["label"], group["key"], group["queues"]
            record = lat[label] if b > 0 else None
            for _ in range(block):
                queue = queues[position[label] % len(queues)]
                position[label] += 1
                base = f"/v1/queues/{queue}"
                t_pub, _ = await timed(
                    api_request("POST", f"{base}/messages", port=port, key=key, body=body), 201
                )
                t_pull, answer = await timed(
                    api_request("POST", f"{base}/pull", port=port, key=key, body=pull_body), 200
                )
                messages = orjson.loads(answer)["messages"]
                if not messages:
                    empty[label] += 1
                    continue
                ack = orjson.dumps({"ack_ids": [messages[0]["ack_id"]]})
                t_ack, _ = await timed(
                    api_request("POST", f"{base}/ack", port=port, key=key, body=ack), 200
                )
                if record is not None:
                    record["publish"].append(t_pub)
                    record["pull"].append(t_pull)
                    record["ack"].append(t_ack)
    conn.close()
    return {
        "groups": {
            label: {
                "queues": len(next(g for g in groups if g["label"] == label)["queues"]),
                "empty_pulls": empty[label],
                **{op: summarize_ms(values) for op, values in ops.items()},
            }
            for label, ops in lat.items()
        },
        "error_samples": errors,
        "cpu": meter.stop(),
    }


async def job_bystander(job: Job) -> Result:
    """Open-loop traffic of well-behaved tenants: single-message publishes at
    ``publish_rate``/s and pulls (up to ``max_messages``, no wait) at ``pull_rate``/s, each
    pull followed on its connection by the ack of what it got; the tenants (``tenants``:
    key and queue each) take turns. Every latency is timed from the request's scheduled
    start, so a request that waited for a free connection (or for this process to be
    scheduled) counts the wait; ``send_lag`` is that wait alone, the client's share. The first
    ``warmup`` seconds are not recorded. With ``start_at`` (epoch seconds) the schedule
    starts then. The process asks for a higher CPU priority when allowed: these clients
    stand for tenants on other machines, whose requests are not delayed by the load of
    the flooding processes on this one."""
    port = job["port"]
    tenants: list[dict[str, str]] = job["tenants"]
    seconds, warmup = float(job["seconds"]), float(job.get("warmup", 0.5))
    publish_rate, pull_rate = float(job["publish_rate"]), float(job["pull_rate"])
    prioritized = False
    with contextlib.suppress(OSError):
        os.nice(int(job.get("nice", -10)))
        prioritized = os.nice(0) < 0
    body = payloads.single_message()
    publish_raw = [
        api_request("POST", f"/v1/queues/{t['queue']}/messages", port=port, key=t["key"], body=body)
        for t in tenants
    ]
    pull_body = orjson.dumps({"max_messages": int(job.get("max_messages", 10))})
    pull_raw = [
        api_request(
            "POST", f"/v1/queues/{t['queue']}/pull", port=port, key=t["key"], body=pull_body
        )
        for t in tenants
    ]
    workers = _workers(job)
    pools: dict[str, asyncio.Queue[Connection]] = {}
    opened: list[Connection] = []
    for name, count in (
        ("publish", int(job.get("publish_connections", 8))),
        ("pull", int(job.get("pull_connections", 4))),
    ):
        pools[name] = asyncio.Queue()
        for conn in await open_balanced(port, count, workers):
            pools[name].put_nowait(conn)
            opened.append(conn)
    samples: dict[str, list[tuple[float, float]]] = {"publish": [], "pull": [], "ack": []}
    lag: list[tuple[float, float]] = []
    errors: list[str] = []
    counts = dict.fromkeys(("published", "pulled", "acked", "empty_pulls", "errors"), 0)

    def failed(status: int, answer: bytes) -> None:
        counts["errors"] += 1
        _sample_error(errors, status, answer)

    async def publish(n: int, scheduled: float) -> None:
        conn = await pools["publish"].get()
        lag.append((scheduled, time.perf_counter() - scheduled))
        try:
            status, answer = await conn.request(publish_raw[n % len(tenants)])
        finally:
            pools["publish"].put_nowait(conn)
        if status != 201:
            return failed(status, answer)
        counts["published"] += 1
        samples["publish"].append((scheduled, conn.received_at - scheduled))

    async def pull(n: int, scheduled: float) -> None:
        conn = await pools["pull"].get()
        lag.append((scheduled, time.perf_counter() - scheduled))
        try:
            tenant = tenants[n % len(tenants)]
            status, answer = await conn.request(pull_raw[n % len(tenants)])
            pulled = conn.received_at
            if status != 200:
                return failed(status, answer)
            samples["pull"].append((scheduled, pulled - scheduled))
            messages = orjson.loads(answer)["messages"]
            counts["pulled"] += len(messages)
            if not messages:
                counts["empty_pulls"] += 1
                return
            ack = orjson.dumps({"ack_ids": [m["ack_id"] for m in messages]})
            path = f"/v1/queues/{tenant['queue']}/ack"
            status, answer = await conn.request(
                api_request("POST", path, port=port, key=tenant["key"], body=ack)
            )
            if status != 200:
                return failed(status, answer)
            counts["acked"] += orjson.loads(answer)["acked"]
            samples["ack"].append((scheduled, conn.received_at - pulled))
        finally:
            pools["pull"].put_nowait(conn)

    async def schedule(
        rate: float, start: float, send: Callable[[int, float], Coroutine[Any, Any, None]]
    ) -> list[asyncio.Task[None]]:
        tasks = []
        for n in range(int(rate * seconds)):
            scheduled = start + n / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(n, scheduled)))
        return tasks

    if job.get("start_at"):
        await asyncio.sleep(max(float(job["start_at"]) - time.time(), 0.0))
    meter = CpuMeter(job.get("cpu_pids", {}))
    meter.start()
    start = time.perf_counter() + 0.01
    scheduled_tasks = await asyncio.gather(
        schedule(publish_rate, start, publish), schedule(pull_rate, start, pull)
    )
    await _bounded([task for tasks in scheduled_tasks for task in tasks], 15.0)
    elapsed = time.perf_counter() - start
    cpu = meter.stop()
    for conn in opened:
        conn.close()

    def kept(values: list[tuple[float, float]]) -> list[float]:
        return [v for at, v in values if at >= start + warmup]

    def measured(values: list[tuple[float, float]]) -> dict[str, Any]:
        return summarize_ms(kept(values))

    raw: Result = {}
    if job.get("raw"):  # the samples themselves, for percentiles over several phases
        raw = {f"raw_{op}": kept(samples[op]) for op in ("publish", "pull")}
    return {
        **raw,
        **counts,
        "tenants": len(tenants),
        "publish_rate": publish_rate,
        "pull_rate": pull_rate,
        "error_samples": errors,
        "elapsed": round(elapsed, 3),
        "warmup_excluded_s": warmup,
        "prioritized": prioritized,
        "publish_latency": measured(samples["publish"]),
        "pull_latency": measured(samples["pull"]),
        "ack_latency": measured(samples["ack"]),
        "send_lag": measured(lag),
        "cpu": cpu,
    }


async def job_flood(job: Job) -> Result:
    """A tenant hammering the API: ``connections`` closed loops of single-message publishes
    (``mode`` "publish", Retry-After ignored) or of pulls of up to ``max_messages`` each
    followed by the ack of what came back (``mode`` "pull"; an empty pull is simply repeated).
    Every answer is counted by status; nothing is an error but a broken connection."""
    port, key, queue = job["port"], job["key"], job["queue"]
    mode = job.get("mode", "publish")
    if mode == "publish":
        raw = api_request(
            "POST",
            f"/v1/queues/{queue}/messages",
            port=port,
            key=key,
            body=payloads.single_message(),
        )
    else:
        body = orjson.dumps({"max_messages": int(job.get("max_messages", 10))})
        raw = api_request("POST", f"/v1/queues/{queue}/pull", port=port, key=key, body=body)
    ack_path = f"/v1/queues/{queue}/ack"
    connections = await open_balanced(port, int(job["connections"]), _workers(job))
    window = ClosedLoop(job)
    statuses: dict[str, int] = {}
    samples: list[str] = []
    counts = {"messages": 0}

    def count(status: int, answer: bytes) -> None:
        if window.recording:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status >= 300 and status != 429:
                _sample_error(samples, status, answer)

    async def worker(conn: Connection) -> None:
        while not window.stop:
            status, answer = await conn.request(raw)
            count(status, answer)
            if mode == "publish":
                if status == 201 and window.recording:
                    counts["messages"] += 1
                continue
            if status != 200:
                continue
            messages = orjson.loads(answer)["messages"]
            if not messages:
                continue
            ack = orjson.dumps({"ack_ids": [m["ack_id"] for m in messages]})
            status, answer = await conn.request(
                api_request("POST", ack_path, port=port, key=key, body=ack)
            )
            count(status, answer)
            if status == 200 and window.recording:
                counts["messages"] += orjson.loads(answer)["acked"]

    await window.run([worker(c) for c in connections])
    for conn in connections:
        conn.close()
    elapsed = max(window.elapsed, 1e-9)
    requests = sum(statuses.values())
    return {
        "mode": mode,
        "connections": len(connections),
        "statuses": statuses,
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1),
        "messages": counts["messages"],
        "messages_per_s": round(counts["messages"] / elapsed, 1),
        "rate_limited": statuses.get("429", 0),
        "rate_limited_per_s": round(statuses.get("429", 0) / elapsed, 1),
        "error_samples": samples,
        "errors": sum(n for s, n in statuses.items() if int(s) >= 300 and s != "429"),
        "elapsed": round(window.elapsed, 3),
        "cpu": window.cpu,
    }


async def job_get(job: Job) -> Result:
    """A few plain GETs (readiness, warm-up) on separate connections."""
    raw = build_request("GET", job["path"], host=f"{HOST}:{job['port']}")
    conns = await open_balanced(job["port"], int(job.get("connections", 1)), _workers(job))
    answers = await asyncio.gather(*(c.request(raw) for c in conns))
    for conn in conns:
        conn.close()
    return {"statuses": [status for status, _ in answers]}


JOBS: dict[str, Callable[[Job], Awaitable[Result]]] = {
    "http": job_http,
    "xadd": job_xadd,
    "pull_ack": job_pull_ack,
    "e2e": job_e2e,
    "longpoll": job_longpoll,
    "flat": job_flat,
    "bystander": job_bystander,
    "flood": job_flood,
    "get": job_get,
}


def _run(coro: Coroutine[Any, Any, Result]) -> tuple[Result, str]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(coro), "asyncio"
    return uvloop.run(coro), "uvloop"


def main() -> int:
    raise_nofile_limit()  # as many sockets as the long-polling job needs
    job: Job = orjson.loads(sys.stdin.buffer.read())
    handler = JOBS[job["kind"]]
    result, loop = _run(handler(job))
    result["client_loop"] = loop
    sys.stdout.buffer.write(orjson.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
