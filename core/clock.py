"""Milliseconds since the epoch, the one time unit on the wire (``*_ms`` fields, Redis
scores, Lua arguments): conversions of database timestamps and the process clock.

Holds and their expiry never use this clock: the Lua scripts read Redis ``TIME``
(docs/decisions/0101-inventory-data-model.md); these helpers serve reports and wire views.
"""

from __future__ import annotations

import time
from datetime import datetime


def epoch_ms(value: datetime) -> int:
    """A timezone-aware timestamp (an asyncpg ``timestamptz``) as epoch milliseconds."""
    return int(value.timestamp() * 1000)


def epoch_ms_or_none(value: datetime | None) -> int | None:
    """``epoch_ms`` of a nullable column."""
    return None if value is None else epoch_ms(value)


def now_ms() -> int:
    """This process's wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000
