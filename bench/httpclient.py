"""A minimal HTTP/1.1 keep-alive client on asyncio protocols: the load generator's transport.

A general client (httpx, aiohttp) spends more CPU per request than the server under test
spends on a small request, and on a two-core machine that CPU is taken from the server. This
one writes pre-built request bytes and parses only the status code and the body (by
Content-Length, or chunked without trailers), so a request costs the client a few
microseconds. One :class:`Connection` carries one
request at a time (no pipelining), like an SDK's pooled connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import cast


class HTTPError(Exception):
    """The connection broke, or the server sent something this client does not parse."""


def build_request(
    method: str,
    path: str,
    *,
    host: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The bytes of one request, ready to be sent again and again."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def api_request(method: str, path: str, *, port: int, key: str | None, body: bytes = b"") -> bytes:
    """A request to the platform's API with the bench key and a JSON body."""
    headers = {"Content-Type": "application/json"} if body else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return build_request(method, path, host=f"127.0.0.1:{port}", body=body, headers=headers)


class Connection(asyncio.Protocol):
    """One keep-alive connection. ``send(raw)`` returns a future of ``(status, body)``."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._status = 0
        self._body_start = -1
        self._total = -1
        self._error: Exception | None = None
        #: perf_counter() when the last complete response was parsed (before any callback).
        self.received_at = 0.0

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        _, protocol = await asyncio.get_running_loop().create_connection(cls, host, port)
        return protocol

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is not None:
            try:
                self._parse()
            except (ValueError, HTTPError) as exc:
                self._fail(HTTPError(f"unparsable response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(HTTPError(f"connection closed by the server ({exc})"))

    # --- requests -----------------------------------------------------------------------------

    @property
    def local_port(self) -> int:
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    @property
    def busy(self) -> bool:
        return self._waiter is not None

    def send(self, raw: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Write one request; the future resolves with the status and the body."""
        if self._error is not None:
            raise self._error
        if self._waiter is not None or self._transport is None:
            raise HTTPError("a request is already in flight on this connection")
        waiter = self._waiter = self._loop.create_future()
        self._transport.write(raw)
        return waiter

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        return await self.send(raw)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # --- parsing ------------------------------------------------------------------------------

    def _parse(self) -> None:
        buffer = self._buffer
        if self._total < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            self._status = int(head[9:12])
            self._body_start = end + 4
            start = head.find(b"\r\ncontent-length:")
            if start >= 0:
                stop = head.find(b"\r\n", start + 2)
                length = int(head[start + 17 : stop if stop >= 0 else len(head)])
                self._total = self._body_start + length
            elif b"\r\ntransfer-encoding: chunked" in head:
                self._total = 0  # chunked: complete once the last chunk arrived
            else:
                raise HTTPError("neither Content-Length nor chunked encoding")
        if self._total == 0:
            body = self._chunked_body()
            if body is None:
                return
        elif len(buffer) < self._total:
            return
        else:
            body = bytes(buffer[self._body_start : self._total])
            del buffer[: self._total]
        self.received_at = time.perf_counter()
        self._total = -1
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, body))

    def _chunked_body(self) -> bytes | None:
        """The body of a complete chunked response (consumed from the buffer), or None while
        the last chunk is still missing."""
        buffer = self._buffer
        position = self._body_start
        parts = []
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
            chunk_start = line_end + 2
            if len(buffer) < chunk_start + size + 2:
                return None
            if size == 0:
                del buffer[: chunk_start + 2]
                return b"".join(parts)
            parts.append(bytes(buffer[chunk_start : chunk_start + size]))
            position = chunk_start + size + 2

    def _fail(self, error: Exception) -> None:
        self._error = error
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


async def open_many(host: str, port: int, count: int, *, parallel: int = 100) -> list[Connection]:
    """``count`` connections, opened ``parallel`` at a time (a burst of thousands of SYNs
    would overflow the listen backlog)."""
    connections: list[Connection] = []
    for start in range(0, count, parallel):
        batch = min(parallel, count - start)
        connections += await asyncio.gather(*(Connection.open(host, port) for _ in range(batch)))
    return connections
