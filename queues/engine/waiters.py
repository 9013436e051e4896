"""Long polling without a thread per waiting pull.

Each event loop (one per web worker process) keeps one Redis pub/sub connection. A pull that
finds nothing registers an asyncio.Event on its queue's (or topic's) channel and sleeps; the
publish script PUBLISHes how many messages became available, and the reader task wakes that
many waiters, oldest first. Waiting costs an Event and a timer, so thousands of pulls can wait
on one process, and each is woken within a Redis round trip of the publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kernel.redis_client import get_async_redis

logger = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_SECONDS = 2.0


class Waiter:
    """One waiting pull. ``mark()`` before pulling and ``changed(mark)`` after an empty pull
    close the race with a publish that lands while the pull runs: the pull goes again instead
    of parking. ``park(timeout)`` sleeps until woken or the timeout ends."""

    __slots__ = ("channel", "event", "notifier", "parked")

    def __init__(self, notifier: Notifier, channel: str) -> None:
        self.notifier = notifier
        self.channel = channel
        self.event = asyncio.Event()
        self.parked = False

    def mark(self) -> int:
        return self.notifier._generation.get(self.channel, 0)

    def changed(self, mark: int) -> bool:
        return self.mark() != mark

    async def park(self, timeout: float) -> bool:
        """Sleep until woken (True) or ``timeout`` seconds pass (False)."""
        self.parked = True
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self.parked = False
            self.event.clear()


class Notifier:
    """Wakes the pulls waiting on a channel when the publish script announces messages."""

    def __init__(self) -> None:
        self._pubsub = get_async_redis().pubsub()
        self._waiters: dict[str, list[Waiter]] = {}
        self._generation: dict[str, int] = {}
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    @contextlib.asynccontextmanager
    async def watch(self, channel: str) -> AsyncIterator[Waiter]:
        """Register a waiter on ``channel``. On entry the subscription is confirmed by Redis,
        so a publish after this point is never missed."""
        event = Waiter(self, channel)
        waiters = self._waiters.get(channel)
        if waiters is None:
            waiters = self._waiters[channel] = []
            confirmed = self._confirmed[channel] = asyncio.get_running_loop().create_future()
            await self._pubsub.subscribe(channel)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.get_running_loop().create_task(self._read())
        else:
            confirmed = self._confirmed[channel]
        waiters.append(event)
        try:
            try:
                await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT_SECONDS)
            except TimeoutError as exc:  # Redis never confirmed: unavailable (a 503), no bug
                raise RedisTimeoutError("Redis did not confirm the subscription") from exc
            yield event
        finally:
            waiters.remove(event)
            if not waiters and self._waiters.get(channel) is waiters:
                del self._waiters[channel]
                self._confirmed.pop(channel, None)
                self._generation.pop(channel, None)
                with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                    await self._pubsub.unsubscribe(channel)

    def _wake(self, channel: str, count: int) -> None:
        """Wake up to ``count`` parked waiters, oldest first; waiters busy pulling see the
        generation change and pull again."""
        self._generation[channel] = self._generation.get(channel, 0) + 1
        for waiter in self._waiters.get(channel, ()):
            if count <= 0:
                break
            if waiter.parked and not waiter.event.is_set():
                waiter.event.set()
                count -= 1

    def _wake_all(self) -> None:
        for channel, waiters in self._waiters.items():
            self._generation[channel] = self._generation.get(channel, 0) + 1
            for waiter in waiters:
                waiter.event.set()

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisConnectionError, RedisTimeoutError):
                # The connection broke: every waiter pulls again rather than sleeping through
                # a publish it could not hear; redis-py resubscribes on reconnect.
                logger.warning("pub/sub connection lost; waking all waiting pulls")
                self._wake_all()
                await asyncio.sleep(0.2)
                continue
            if message is None:
                if not self._waiters:
                    return
                continue
            kind = message["type"]
            channel = message["channel"].decode()
            if kind == "message":
                data = message["data"]
                self._wake(channel, 1 << 30 if data == b"all" else int(data))
            elif kind == "subscribe":
                confirmed = self._confirmed.get(channel)
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)


_notifiers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Notifier] = (
    weakref.WeakKeyDictionary()
)


def get_notifier() -> Notifier:
    loop = asyncio.get_running_loop()
    notifier = _notifiers.get(loop)
    if notifier is None:
        notifier = _notifiers[loop] = Notifier()
    return notifier
