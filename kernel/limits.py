"""Every limit and default of the public contract (../shared/API.md), defined once.

Models (validators, defaults), serializers (and so the OpenAPI schema), services, the
console's forms and the engine's validation all read these, so what the schema says and what
the platform does cannot drift apart. Durations are in seconds.
"""

from __future__ import annotations

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
