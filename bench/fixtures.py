"""What the benchmark needs in PostgreSQL and Redis, made in-process through Django.

Tenants, keys and the measured queues are created by the project's own services
(tenants.services, queues.services), exactly as the API would. Only the bulk steps take a
shortcut, for setup time: the thousands of extra queues of the many-queue tenant are inserted
with ``bulk_create`` and then get what ``queue_create`` gives a queue (its consumer group and
its hot-cache document), and the backlogs are written with pipelined XADD straight into the
queue's stream, in the engine's entry layout. :func:`cleanup` removes all of it again.

Import this module only after ``django.setup()``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis
from django.db import connection, transaction

from bench import payloads
from kernel.redis_client import get_redis
from kernel.redis_keys import LAST_USED, cache_key, cache_scan_pattern, tenant_scan_pattern
from queues import selectors, services
from queues.engine import streams
from queues.engine.targets import queue_keys
from queues.models import Queue
from tenants import services as tenant_services
from tenants.authority import OPERATOR
from tenants.models import ALL_SCOPES, Plan, Tenant, User

ACTOR = "operator:bench"
PLAN_SLUG = "bench"
FILL_BATCH = 10_000


@dataclass
class BenchTenant:
    """A tenant made for one run: its API key (all scopes) and its queues (name → id)."""

    id: str
    slug: str
    key: str
    key_prefix: str
    owner_email: str
    queues: dict[str, str] = field(default_factory=dict)

    def stream(self, queue: str) -> str:
        return queue_keys(self.id, self.queues[queue])["stream"]


def bench_plan(max_queues: int) -> Plan:
    """A plan with room for the many-queue tenant and no rate limit."""
    plan, _ = Plan.objects.update_or_create(
        slug=PLAN_SLUG,
        defaults={
            "name": "Benchmark",
            "max_queues": max_queues,
            "max_message_bytes": 256 * 1024,
            "monthly_messages": None,
            "publish_rate_per_second": None,
        },
    )
    return plan


def limited_plan(slug: str, publish_rate_per_second: int) -> Plan:
    """A plan like :func:`bench_plan` but with a publish rate limit (messages per second,
    the tenant's total): the flooding tenant's plan of the fairness measurement."""
    plan, _ = Plan.objects.update_or_create(
        slug=slug,
        defaults={
            "name": f"Benchmark, {publish_rate_per_second:,} msg/s",
            "max_queues": 10,
            "max_message_bytes": 256 * 1024,
            "monthly_messages": None,
            "publish_rate_per_second": publish_rate_per_second,
        },
    )
    return plan


def create_tenant(label: str, stamp: str, plan: Plan, queue_names: list[str]) -> BenchTenant:
    """A tenant with an all-scopes key and ``queue_names`` made by queues.services."""
    slug = f"bench-{label}-{stamp}"
    email = f"{slug}@bench.invalid"
    with transaction.atomic():
        created = tenant_services.tenant_create(
            name=f"Benchmark {label} {stamp}", owner_email=email, plan=plan, slug=slug, actor=ACTOR
        )
        key = tenant_services.key_create(
            authority=OPERATOR,
            tenant=created.tenant,
            name="bench",
            scopes=list(ALL_SCOPES),
            actor=ACTOR,
        )
    tenant = BenchTenant(
        id=str(created.tenant.id),
        slug=slug,
        key=key.secret,
        key_prefix=key.key.prefix,
        owner_email=email,
    )
    for name in queue_names:
        queue = services.queue_create(tenant=created.tenant, actor=ACTOR, name=name)
        tenant.queues[name] = str(queue.id)
    return tenant


def add_queues_bulk(tenant: BenchTenant, count: int, prefix: str = "q") -> float:
    """Give the tenant ``count`` more queues; returns the seconds it took."""
    started = time.perf_counter()
    row = Tenant.objects.get(pk=tenant.id)
    client = get_redis()
    for start in range(0, count, 1000):
        names = [f"{prefix}{i:05d}" for i in range(start, min(start + 1000, count))]
        created = Queue.all_tenants.bulk_create([Queue(tenant=row, name=n) for n in names])
        pipe = client.pipeline(transaction=False)
        for queue in created:
            keys = queue_keys(tenant.id, str(queue.id))
            pipe.xgroup_create(keys["stream"], "q", "0", mkstream=True)
            ident = selectors.resource_ident(tenant.id, "queue", queue.name)
            doc = selectors.queue_document(queue)
            value, ttl = selectors.resource_cache._encode(doc)
            pipe.set(cache_key(selectors.resource_cache.namespace, ident), value, ex=ttl)
            tenant.queues[queue.name] = str(queue.id)
        pipe.execute()
    return time.perf_counter() - started


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def fill_queue(tenant: BenchTenant, queue: str, count: int) -> float:
    """Append ``count`` 1 KiB messages (100 distinct bodies, each entry with its own id) to
    the queue's stream with pipelined XADD, 10,000 commands per round trip; returns the
    seconds it took. The commands are encoded here rather than by redis-py's pipeline,
    whose per-command Python cost would make a million-message fill take half a minute."""
    started = time.perf_counter()
    client = get_redis()
    head = b"*11\r\n" + _bulk(b"XADD") + _bulk(tenant.stream(queue).encode()) + _bulk(b"*")
    head += _bulk(b"i")
    written = 0
    conn = client.connection_pool.get_connection()
    try:
        while written < count:
            n = min(FILL_BATCH, count - written)
            now = int(time.time() * 1000)
            tail = [
                _bulk(b"b") + _bulk(entry["b"]) + _bulk(b"e") + _bulk(b"j") + _bulk(b"t")
                + _bulk(str(now).encode())
                for entry in payloads.stream_fields(100)
            ]  # fmt: skip
            commands = b"".join(
                head + _bulk(payloads.message_id(now).encode()) + tail[i % 100] for i in range(n)
            )
            conn.send_packed_command([commands], check_health=False)
            for _ in range(n):
                conn.read_response()
            written += n
    finally:
        client.connection_pool.release(conn)
    return time.perf_counter() - started


def queue_length(tenant: BenchTenant, queue: str) -> int:
    return int(get_redis().xlen(tenant.stream(queue)))


def empty_queue(tenant: BenchTenant, queue: str) -> None:
    """Drop every message of a queue (and recreate its consumer group)."""
    client = get_redis()
    keys = queue_keys(tenant.id, tenant.queues[queue])
    client.unlink(keys["stream"], keys["delay"], keys["lease"], keys["retry"])
    streams.queue_create(client, tenant.id, tenant.queues[queue])


def _unlink_matching(client: redis.Redis, pattern: str) -> int:
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=10_000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += client.unlink(*batch)
            batch = []
    if batch:
        removed += client.unlink(*batch)
    return removed


def cleanup(tenant: BenchTenant) -> None:
    """Remove the tenant's Redis keys, hot-cache entries and rows (cascading to its keys,
    queues and audit records) and its owner."""
    client = get_redis()
    _unlink_matching(client, tenant_scan_pattern(tenant.id))
    _unlink_matching(
        client, cache_scan_pattern(selectors.resource_cache.namespace, f"{tenant.id}:")
    )
    client.unlink(cache_key("tenant", tenant.id), cache_key("apikey", tenant.key_prefix))
    client.hdel(LAST_USED, tenant.key_prefix)
    with transaction.atomic():
        Queue.all_tenants.filter(tenant_id=tenant.id).delete()
        Tenant.objects.filter(pk=tenant.id).delete()
        User.objects.filter(email=tenant.owner_email).delete()


def versions() -> dict[str, str]:
    """PostgreSQL's and Redis's versions, as the servers report them."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = str(cursor.fetchone()[0])
    info = get_redis().info("server")
    redis_version = str(info.get("valkey_version") or info.get("redis_version"))
    name = "Valkey" if "valkey_version" in info or info.get("server_name") == "valkey" else "Redis"
    return {"postgresql": postgres, "redis": f"{name} {redis_version}"}


def redis_pid() -> int | None:
    """The Redis server's pid when it runs on this machine (for its CPU use), else None."""
    info = get_redis().info("server")
    pid = info.get("process_id")
    return int(pid) if pid else None
