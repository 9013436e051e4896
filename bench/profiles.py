"""How big each measurement is: the full run and the ``--quick`` smoke run.

The full run takes the sizes the goals are stated for (1,000,000 messages, 10,000 queues,
1,000 waiting pulls); ``--quick`` shrinks the fills and the durations so the whole run fits
in under two minutes, which is enough to see that every measurement works.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    """Sizes and durations of one run. Durations are seconds."""

    name: str
    #: Closed-loop throughput: each subject and its reference run ``rounds`` times, alternating
    #: (subject, reference, reference, subject, ...), ``duration`` seconds each after
    #: ``warmup``; pull + ack runs ``rounds`` x ``duration`` seconds.
    rounds: int
    duration: float
    warmup: float
    #: Concurrent connections of the closed-loop throughput measurements, spread evenly over
    #: the workers (8 saturates two workers without queueing more than needed).
    single_connections: int
    batch_connections: int
    pull_connections: int
    #: Messages put into each pull + ack queue beforehand (the run stops early if drained).
    pull_fill: int
    #: End-to-end latency: open-loop publishing at ``e2e_rate`` messages/s (the goal's rate)
    #: and at ``e2e_light_rate`` (informational: the path's latency with the server far from
    #: saturation), ``e2e_seconds`` each.
    e2e_rate: int
    e2e_light_rate: int
    e2e_seconds: float
    #: Long polling: waiting pulls held, how long they are held before the check, and how many
    #: single-message wake-ups are timed.
    longpoll_waiters: int
    longpoll_hold: float
    longpoll_samples: int
    #: Flatness: messages in the full queue, queues in the many-queue tenant, sequential
    #: publish → pull → ack iterations per compared variant, taken in blocks of
    #: ``flat_block`` alternating between the variants (one more block each warms up).
    flat_messages: int
    flat_queues: int
    flat_iterations: int
    flat_block: int
    #: Fairness: ``fairness_bystanders`` tenants without limits publish (1 message per
    #: request) at ``fairness_publish_rate`` and pull at ``fairness_pull_rate`` requests/s in
    #: all, open loop, for ``fairness_seconds`` per phase; phases alone and under flood
    #: alternate, ``fairness_rounds`` of each (alone, flood, flood, alone, ...). The flooder's
    #: plan allows ``fairness_flood_limit`` messages/s; it publishes on
    #: ``fairness_flood_connections`` and pulls on ``fairness_flood_pull_connections``
    #: connections from a queue holding ``fairness_fill`` messages.
    fairness_bystanders: int
    fairness_publish_rate: int
    fairness_pull_rate: int
    fairness_seconds: float
    fairness_rounds: int
    fairness_flood_limit: int
    fairness_flood_connections: int
    fairness_flood_pull_connections: int
    fairness_fill: int


FULL = Profile(
    name="full",
    rounds=4,
    duration=3.0,
    warmup=1.0,
    single_connections=8,
    batch_connections=8,
    pull_connections=8,
    pull_fill=600_000,
    e2e_rate=500,
    e2e_light_rate=100,
    e2e_seconds=15.0,
    longpoll_waiters=1000,
    longpoll_hold=5.0,
    longpoll_samples=300,
    flat_messages=1_000_000,
    flat_queues=10_000,
    flat_iterations=5000,
    flat_block=100,
    fairness_bystanders=2,
    fairness_publish_rate=200,
    fairness_pull_rate=100,
    fairness_seconds=8.0,
    fairness_rounds=4,
    fairness_flood_limit=500,
    fairness_flood_connections=8,
    fairness_flood_pull_connections=4,
    fairness_fill=300_000,
)

QUICK = Profile(
    name="quick",
    rounds=2,
    duration=1.5,
    warmup=0.5,
    single_connections=8,
    batch_connections=8,
    pull_connections=8,
    pull_fill=150_000,
    e2e_rate=500,
    e2e_light_rate=100,
    e2e_seconds=3.0,
    longpoll_waiters=1000,
    longpoll_hold=2.0,
    longpoll_samples=100,
    flat_messages=100_000,
    flat_queues=1_000,
    flat_iterations=600,
    flat_block=50,
    fairness_bystanders=2,
    fairness_publish_rate=200,
    fairness_pull_rate=100,
    fairness_seconds=4.0,
    fairness_rounds=2,
    fairness_flood_limit=500,
    fairness_flood_connections=8,
    fairness_flood_pull_connections=4,
    fairness_fill=100_000,
)
