"""Every limit, default and identifier format of the public contract (../shared/API.md), once.

Models (validators, defaults), serializers (and so the OpenAPI schema), services, the
console's forms and the engine's validation all read these, so what the schema says and what
the platform does cannot drift apart. Durations are in seconds.
"""

from __future__ import annotations

import re
from typing import Final

# --- names ------------------------------------------------------------------------------------
#: Topics, queues and subscriptions. \A and \Z, not ^ and $: "$" would also accept a trailing
#: newline. The OpenAPI schema states it with ^ and $ (what JSON Schema's regexes mean).
NAME_PATTERN: Final = r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z"
NAME_MAX_LENGTH: Final = 128

# --- messages ---------------------------------------------------------------------------------
MAX_BATCH: Final = 100  # messages per publish
MAX_ATTRIBUTES: Final = 32
MAX_ATTRIBUTE_NAME: Final = 128
MAX_KEY_LENGTH: Final = 1024
MAX_DEDUP_ID: Final = 128
DEDUP_WINDOW_SECONDS: Final = 300
MAX_DELAY_SECONDS: Final = 900
#: Attribute names starting with it are the platform's (dead-letter provenance and the like).
RESERVED_ATTRIBUTE_PREFIX: Final = "op-"

# --- pulling and settling ---------------------------------------------------------------------
MAX_PULL: Final = 100
DEFAULT_PULL: Final = 10
MAX_WAIT_SECONDS: Final = 20
MAX_ACK_IDS: Final = 1000
MAX_VISIBILITY_TIMEOUT: Final = 43200  # also the longest nack delay and lease extension
DEFAULT_VISIBILITY_TIMEOUT: Final = 30
MAX_BACKOFF_SECONDS: Final = 43200
DEFAULT_BACKOFF_MIN: Final = 0
DEFAULT_BACKOFF_MAX: Final = 600
MAX_DELIVERY_ATTEMPTS: Final = 1000

# --- retention and partitions -----------------------------------------------------------------
MIN_RETENTION_SECONDS: Final = 60
MAX_RETENTION_SECONDS: Final = 1209600  # 14 days
DEFAULT_QUEUE_RETENTION: Final = 345600  # 4 days
DEFAULT_TOPIC_RETENTION: Final = 604800  # 7 days
MAX_PARTITIONS: Final = 64
DEFAULT_PARTITIONS: Final = 1

# --- lists and log reads ----------------------------------------------------------------------
DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 200
DEFAULT_LOG_READ: Final = 100
MAX_LOG_READ: Final = 1000


# --- identifiers ------------------------------------------------------------------------------


def _decimal_at_most(top: int) -> str:
    """A regex of the decimals 0..``top`` in canonical form (ASCII digits, no leading zeros),
    so that one pattern can both validate and be published in the OpenAPI schema."""
    digits = str(top)
    alternatives = ["0"]
    if len(digits) > 1:
        alternatives.append(f"[1-9][0-9]{{0,{len(digits) - 2}}}")
    for i, digit in enumerate(digits):
        low, high = (1 if i == 0 else 0), int(digit) - 1
        if high >= low:
            span = str(low) if low == high else f"[{low}-{high}]"
            rest = len(digits) - i - 1
            alternatives.append(digits[:i] + span + (f"[0-9]{{{rest}}}" if rest else ""))
    alternatives.append(digits)
    return "(?:" + "|".join(alternatives) + ")"


#: A stream id (a message's offset), ``<ms>-<seq>``: each part below 2**64, as Redis requires.
#: Anchored with ^ and $ for the OpenAPI schema (ECMA 262); always matched with re.fullmatch,
#: so a trailing newline does not slip through $.
_U64: Final = _decimal_at_most(2**64 - 1)
STREAM_ID_PATTERN: Final = f"^{_U64}-{_U64}$"
#: An ack id as pull hands it out: ``<partition>.<offset>.<delivery attempt>``.
ACK_ID_PATTERN: Final = rf"^(0|[1-9][0-9]?)\.({_U64}-{_U64})\.([1-9][0-9]{{0,18}})$"
_STREAM_ID = re.compile(STREAM_ID_PATTERN)


def is_stream_id(value: object) -> bool:
    """Whether ``value`` is a stream id Redis accepts (an offset to read after)."""
    return isinstance(value, str) and _STREAM_ID.fullmatch(value) is not None


#: How long the per-minute resource metrics (the console's charts) are kept.
METRIC_RETENTION_HOURS: Final = 48
