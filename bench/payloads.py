"""The messages the benchmark sends, shared by the client process and the fills.

A "1 KiB message" is a JSON string body whose encoded form (with its quotes) is exactly
1,024 bytes: that is what the engine stores in the ``b`` field of a stream entry. Fills written
straight into Redis use the engine's entry layout (see queues/engine/lua/_lib.lua): ``i`` the
message id, ``b`` the body's JSON text, ``e`` ``j`` for JSON, ``t`` the publish time in ms.
"""

from __future__ import annotations

import os
import random
import string
import time

import orjson

BODY_BYTES = 1024
BATCH_SIZE = 100


def body_text(size: int = BODY_BYTES, *, seed: int = 42) -> str:
    """A JSON string value whose encoded size is ``size`` bytes (quotes included)."""
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size - 2))


def single_message(size: int = BODY_BYTES) -> bytes:
    """The request body of a one-message publish."""
    return orjson.dumps({"body": body_text(size)})


def batch_messages(count: int = BATCH_SIZE, size: int = BODY_BYTES) -> bytes:
    """The request body of a batch publish of ``count`` distinct messages."""
    return orjson.dumps({"messages": [{"body": body_text(size, seed=i)} for i in range(count)]})


def message_id(now_ms: int) -> str:
    """An id of the engine's shape (queues.engine.messages.new_message_id)."""
    return f"{now_ms:011x}{os.urandom(8).hex()}"


def stream_fields(count: int, size: int = BODY_BYTES) -> list[dict[str, bytes]]:
    """``count`` stream entries of the engine's layout, as a publish of the same bodies
    would store them."""
    now = int(time.time() * 1000)
    stamp = str(now).encode()
    return [
        {
            "i": message_id(now).encode(),
            "b": orjson.dumps(body_text(size, seed=i)),
            "e": b"j",
            "t": stamp,
        }
        for i in range(count)
    ]
