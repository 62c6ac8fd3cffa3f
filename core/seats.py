"""Seats: ids, statuses and the change-stream deltas of the live seat map.

A seat id is ``"<section>-<row>-<number>"`` (e.g. ``"101-C-14"``): section 1-8
alphanumerics, row 1-4 alphanumerics, number 1-4 digits. Seats are adjacent when
they share section and row and their numbers are consecutive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Literal

import msgspec

from core.errors import InvalidInput

# The one definition of the seat statuses (on the wire, in the seat map, in live frames).
SeatStatus = Literal["free", "held", "pending", "sold"]
SEAT_STATUSES: Final[tuple[SeatStatus, ...]] = ("free", "held", "pending", "sold")

# The one seat-id rule. Anchored with \A and \Z (not ^ and $: "$" also matches before a
# trailing newline), and the number has no leading zeros, so one seat has one id. Strict
# whichever of match/fullmatch/search is called on it.
SEAT_ID_RE: Final = re.compile(
    r"\A(?P<section>[A-Za-z0-9]{1,8})"
    r"-(?P<row>[A-Za-z0-9]{1,4})"
    r"-(?P<number>0|[1-9][0-9]{0,3})\Z"
)
# Price category codes (VIP, PLATINUM, GENERAL...), as in the catalog.
CATEGORY_RE: Final = re.compile(r"\A[A-Z][A-Z0-9_]{0,15}\Z")


class SeatRef(msgspec.Struct, frozen=True):
    """A seat id taken apart."""

    section: str
    row: str
    number: int

    @property
    def seat_id(self) -> str:
        return f"{self.section}-{self.row}-{self.number}"

    @property
    def row_id(self) -> str:
        """``"<section>-<row>"``: the row the seat is in."""
        return f"{self.section}-{self.row}"


def parse_seat_id(value: object) -> SeatRef:
    """``"101-C-14"`` -> ``SeatRef("101", "C", 14)``; InvalidInput if not a seat id.

    The number must be written without leading zeros, so one seat has one id.
    """
    match = SEAT_ID_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput(f"{value!r} is not a seat id (<section>-<row>-<number>)", field="seats")
    return SeatRef(match["section"], match["row"], int(match["number"]))


def is_seat_id(value: object) -> bool:
    """True if ``value`` is a well-formed seat id (the rule of ``parse_seat_id``)."""
    return isinstance(value, str) and SEAT_ID_RE.match(value) is not None


def seat_row_and_number(value: str) -> tuple[str, int] | None:
    """``"101-C-14"`` -> ``("101-C", 14)``; None if not a seat id.

    The cheap form of ``parse_seat_id`` for hot loops (placing thousands of statuses on
    a seat map): no exception, no Struct.
    """
    match = SEAT_ID_RE.match(value)
    if match is None:
        return None
    return value[: match.end("row")], int(match["number"])


def validate_seat_ids(seats: Iterable[object], max_seats: int) -> list[str]:
    """Check a hold request's seat list: 1..max_seats well-formed, distinct ids."""
    if isinstance(seats, str):
        raise InvalidInput("seats must be a list of seat ids", field="seats")
    out = [parse_seat_id(s).seat_id for s in seats]
    if not out:
        raise InvalidInput("at least one seat is needed", field="seats")
    if len(out) > max_seats:
        raise InvalidInput(f"at most {max_seats} seats per hold", field="seats")
    if len(set(out)) != len(out):
        raise InvalidInput("a seat is listed twice", field="seats")
    return out


def validate_category(value: object) -> str:
    if not isinstance(value, str) or CATEGORY_RE.fullmatch(value) is None:
        raise InvalidInput(f"{value!r} is not a price category code", field="category")
    return value


class SeatDelta(msgspec.Struct, frozen=True, kw_only=True):
    """One change-stream entry: seats that moved to ``status`` together.

    ``version`` is the stream entry id (``"<ms>-<seq>"``), increasing per partition.
    ``status`` is a seat status, or ``"reload"`` after a rebuild of the partition
    (seats is empty then; a client refetches the seat map).
    ``op`` names the operation: hold, release, expire, confirm, revert, sold, reject, load.
    """

    event_id: int
    partition: int
    version: str
    seats: list[str]
    status: str
    op: str
    hold_id: str | None = None
    order_id: str | None = None


class DeltaBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Deltas after a version. ``complete`` is False when the stream no longer holds
    the whole gap (trimmed or rebuilt): the client must refetch the seat map."""

    deltas: list[SeatDelta]
    last_version: str
    complete: bool


def version_key(version: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``, for comparing versions."""
    ms, _, seq = version.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        raise InvalidInput(f"{version!r} is not a version", field="version") from None
