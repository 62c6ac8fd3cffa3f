"""Holds: a buyer's temporary claim on seats, and the rules around it.

A hold lives in one inventory partition of one event. Its id encodes both, so
any request carrying it can be routed without a lookup:
``"h<event_id>.<partition>.<16 hex>"``, e.g. ``"h5.0.9f8a7b6c5d4e3f21"``.

Times are ms since the epoch, from Redis server time (never the client's).
"""

from __future__ import annotations

import math
import re
import secrets
import uuid
from typing import Final

import msgspec

from core.errors import InvalidInput
from core.settings import HoldSettings

HOLD_ID_RE: Final = re.compile(
    r"^h(?P<event>[1-9][0-9]{0,18})\.(?P<partition>[0-9]{1,2})\.[0-9a-f]{16}$"
)
MAX_EVENT_ID: Final = 2**63 - 1
MAX_PARTITIONS: Final = 64
# Shortest TTL accepted (tests use short ones); the longest is HoldSettings.ttl_s.
MIN_TTL_MS: Final = 100
MAX_BUYER_LEN: Final = 200


class Hold(msgspec.Struct, frozen=True, kw_only=True):
    """A live hold. ``categories`` maps each seat to its price category."""

    hold_id: str
    event_id: int
    partition: int
    buyer: str
    seats: list[str]
    categories: dict[str, str]
    created_at: int
    expires_at: int
    # The latest expires_at that extending can reach (created_at + lifetime cap).
    max_expires_at: int


class ConfirmedHold(msgspec.Struct, frozen=True, kw_only=True):
    """A hold turned into a pending order: its seats are sold-pending under order_id."""

    hold_id: str
    order_id: str
    event_id: int
    partition: int
    buyer: str
    seats: list[str]
    categories: dict[str, str]
    confirmed_at: int
    # Version (stream id) of the delta that marked the seats pending.
    version: str


def validate_event_id(event_id: object) -> int:
    if (
        not isinstance(event_id, int)
        or isinstance(event_id, bool)
        or not 0 < event_id <= MAX_EVENT_ID
    ):
        raise InvalidInput(f"{event_id!r} is not an event id", field="event_id")
    return event_id


def validate_partition(partition: object) -> int:
    if (
        not isinstance(partition, int)
        or isinstance(partition, bool)
        or not 0 <= partition < MAX_PARTITIONS
    ):
        raise InvalidInput(f"{partition!r} is not a partition", field="partition")
    return partition


def new_hold_id(event_id: int, partition: int) -> str:
    return f"h{event_id}.{partition}.{secrets.token_hex(8)}"


def parse_hold_id(hold_id: object) -> tuple[int, int]:
    """The (event_id, partition) a hold id routes to; InvalidInput if malformed."""
    match = HOLD_ID_RE.fullmatch(hold_id) if isinstance(hold_id, str) else None
    if match is None or int(match["event"]) > MAX_EVENT_ID:
        raise InvalidInput(f"{hold_id!r} is not a hold id", field="hold_id")
    return int(match["event"]), validate_partition(int(match["partition"]))


def validate_buyer(buyer: object) -> str:
    """A buyer is the authenticated subject: 1..200 printable characters."""
    if not isinstance(buyer, str) or not 0 < len(buyer) <= MAX_BUYER_LEN or not buyer.isprintable():
        raise InvalidInput("buyer must be 1-200 printable characters", field="buyer")
    return buyer


def validate_order_id(order_id: object) -> str:
    """Order ids are UUIDs in canonical form."""
    try:
        parsed = uuid.UUID(order_id) if isinstance(order_id, str) else None
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != order_id:
        raise InvalidInput(f"{order_id!r} is not an order id (UUID)", field="order_id")
    return order_id


def validate_quantity(quantity: object, settings: HoldSettings) -> int:
    if not isinstance(quantity, int) or isinstance(quantity, bool):
        raise InvalidInput("quantity must be an integer", field="quantity")
    if not 1 <= quantity <= settings.max_seats_per_hold:
        raise InvalidInput(f"quantity must be 1..{settings.max_seats_per_hold}", field="quantity")
    return quantity


def hold_ttl_ms(ttl_s: float | None, settings: HoldSettings) -> int:
    """The TTL of a new hold in ms: the default, or a shorter requested one.

    A TTL longer than the configured default is refused: the default is also
    the most a buyer may keep seats from others without extending.
    """
    if ttl_s is None:
        return settings.ttl_s * 1000
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not math.isfinite(ttl_s):
        raise InvalidInput("ttl must be a number of seconds", field="ttl_s")
    ttl_ms = round(ttl_s * 1000)
    if not MIN_TTL_MS <= ttl_ms <= settings.ttl_s * 1000:
        raise InvalidInput(
            f"ttl must be {MIN_TTL_MS / 1000:g}..{settings.ttl_s} seconds", field="ttl_s"
        )
    return ttl_ms


def max_lifetime_ms(ttl_ms: int, settings: HoldSettings) -> int:
    """The total lifetime cap of a hold: ``max_lifetime_factor x ttl`` (at least the ttl)."""
    return max(ttl_ms, round(ttl_ms * settings.max_lifetime_factor))


class AttemptBudget(msgspec.Struct, frozen=True):
    """How many hold attempts a buyer may make in one event: ``per_minute`` on average,
    at most ``burst`` at once (enforced inside the hold script, in the event's slot)."""

    per_minute: int
    burst: int

    def __post_init__(self) -> None:
        if not 0 < self.per_minute <= 60_000 or not 0 < self.burst <= self.per_minute:
            raise InvalidInput("a hold budget needs 0 < burst <= per_minute <= 60000")

    @property
    def interval_ms(self) -> int:
        return 60_000 // self.per_minute
