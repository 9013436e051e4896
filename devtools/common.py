"""What every part of the runner shares: where the checkout is, the developer-facing error,
and line-wise output that never interleaves with a child's lines."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import IO

#: The checkout: where manage.py is and where every child runs.
ROOT = Path(__file__).resolve().parent.parent
#: The data of the persistent embedded servers, demo.json and the beat schedule.
STATE_DIR = ROOT / ".openplatform"
#: The interpreter of every child (the .venv's when ./dev runs us).
PYTHON = sys.executable

# Reentrant: the signal handler of `up` prints, and may run while the main thread is printing.
_print_lock = threading.RLock()


class DevError(Exception):
    """A failure with a message meant for the developer; the command exits 1."""


def say(message: str, *, prefix: str = "dev", stream: IO[str] | None = None) -> None:
    """Print one line, never interleaved with a child's output lines."""
    out = stream or sys.stdout
    with _print_lock:
        for line in message.splitlines() or [""]:
            out.write(f"{prefix:<6} | {line}\n" if prefix else f"{line}\n")
        out.flush()
