"""The gate: scanner sessions, the rules that admit or refuse a ticket, and the scan log.

A scanner session is bound to one event and one gate name (``north-1``). A ticket is
admitted at most once, and only when it belongs to the session's event, that event is
not cancelled and not over (``GateSettings.closes_after_start_s`` after it starts), and
the ticket is not revoked. The same rules run on the scanner device while it is offline
(``web/js/gate.js``) from the gate snapshot (``GateSnapshot``) it downloaded last.

Pure: the API reads the rows; these functions decide.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from core.errors import Conflict, DomainError

# A gate's name as staff type it: "north-1", "Puerta 3", "VIP". Kept short and plain:
# it is a label of the scan log and of a metric.
GATE_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}$"
GateName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=40,
        pattern=GATE_NAME_PATTERN,
        description="The gate's name: letters, digits, space, '.', '_' or '-', up to 40.",
    ),
]

# Results of a scan, as the scan log and the metrics name them.
ADMITTED: Final = "admitted"


class WrongEvent(Conflict):
    """The ticket is for another event than the one this scanner session is bound to."""

    code = "wrong_event"
    title = "Ticket for another event"


class EventCancelled(Conflict):
    """The ticket's event was cancelled: nobody is admitted."""

    code = "event_cancelled"
    title = "Event cancelled"


class EventOver(Conflict):
    """The event is over: its gate closed ``closes_after_start_s`` after it started."""

    code = "event_over"
    title = "Event over"


class TicketRevoked(Conflict):
    """The ticket was revoked (reissued, refunded or revoked by support)."""

    code = "ticket_revoked"
    title = "Ticket revoked"


# What a device may report of a scan it judged itself while offline (it admits nothing).
OfflineResult = Literal[
    "already_used",
    "wrong_event",
    "ticket_revoked",
    "event_cancelled",
    "event_over",
    "invalid_ticket",
]


class OfflineScan(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A refusal a scanner judged offline, sent to the scan log when it is back online."""

    gate: GateName
    result: OfflineResult
    scanned_at: Annotated[int, msgspec.Meta(ge=0, le=10**15)]
    ticket_id: (
        Annotated[
            str,
            msgspec.Meta(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
        ]
        | None
    ) = None
    seat_id: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\x00]+$")] | None
    ) = None


class GateEvent(msgspec.Struct, frozen=True):
    """What a scanner needs to know about its session's event to judge tickets offline."""

    event_id: int
    title: str
    status: str
    starts_at: int  # ms since epoch
    # No admission after this instant (ms since epoch).
    admits_until: int


class Admission(msgspec.Struct, frozen=True):
    ticket_id: str
    seat_id: str
    gate: str
    checked_in_at: int  # ms since epoch


class Reissued(msgspec.Struct, frozen=True):
    """A reissued ticket: its tokens of an older generation are refused."""

    ticket_id: str
    generation: int


class GateSnapshot(msgspec.Struct, frozen=True):
    """The event, the tickets admitted, revoked and reissued (since ``since``, when the
    device asked for the changes only); ``as_of`` is the ``since`` of the next pull."""

    event: GateEvent
    admitted: list[Admission]
    revoked: list[str]
    as_of: int
    reissued: list[Reissued] = msgspec.field(default_factory=list)


class ScanEntry(msgspec.Struct, frozen=True):
    """One line of the scan log: who scanned what, where, when, and the result."""

    scan_id: int
    event_id: int
    gate: str
    scanner: str
    ticket_id: str | None
    seat_id: str | None
    result: str
    scanned_at: int  # ms since epoch, server time
    # When the device scanned it, for a check-in queued offline and sent later.
    device_at: int | None = None


class ScanLogPage(msgspec.Struct, frozen=True):
    items: list[ScanEntry]
    next_cursor: str | None


class GateCount(msgspec.Struct, frozen=True):
    gate: str
    admitted: int
    refused: int
    last_scan_at: int | None


class GateCounts(msgspec.Struct, frozen=True):
    """Per-gate counts of an event's scans, and how many of its tickets are in."""

    event_id: int
    sold: int
    admitted: int
    gates: list[GateCount]


def admits_until(starts_at_ms: int, closes_after_start_s: int) -> int:
    """The last instant (ms) a ticket of an event starting at ``starts_at_ms`` is admitted."""
    return starts_at_ms + closes_after_start_s * 1000


def admission_refusal(
    *,
    session_event: int,
    ticket_event: int,
    event_status: str | None,
    starts_at_ms: int | None,
    revoked: bool,
    now_ms: int,
    closes_after_start_s: int,
) -> DomainError | None:
    """Why this ticket may not enter through a gate of ``session_event`` now, or None.

    The order of the checks is the order in which staff can act on them: another
    event's ticket is sent to its own gate first, whatever else is wrong with it.
    """
    if ticket_event != session_event:
        return WrongEvent(
            f"this ticket is for event {ticket_event}, this gate admits event {session_event}",
            ticket_event_id=ticket_event,
            event_id=session_event,
        )
    if revoked:
        return TicketRevoked("this ticket was revoked; the buyer has a newer one or none")
    if event_status == "cancelled":
        return EventCancelled("this event was cancelled; nobody is admitted")
    if starts_at_ms is not None:
        until = admits_until(starts_at_ms, closes_after_start_s)
        if now_ms > until:
            return EventOver("this event is over; its gates are closed", admits_until=until)
    return None
