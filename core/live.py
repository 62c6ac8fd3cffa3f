"""Live channels: the WebSocket frames, their close codes and the stream-id rules.

Two channels (served by ``api/live/``, design in docs/decisions/0701-live-seat-map.md):

- ``/api/v1/events/{event_id}/live`` (public): a ``Hello`` with the event's current
  version per partition, then ``Deltas`` frames (about 100 ms of seat changes each,
  in stream order), ``Resync`` when the server cannot prove the client missed
  nothing (the client refetches the seat map), ``Ping`` heartbeats.
- ``/api/v1/me/live`` (token): a ``UserHello``, then ``OrderUpdate`` (the buyer's
  order status changes) and ``HoldExpiring`` (a warning shortly before one of the
  buyer's holds expires).

A version is a Redis stream id (``"<ms>-<seq>"``) of the partition's change stream
``{ev:<event_id>:<partition>}:stream``; it only grows, so clients keep the largest one
they saw per partition and resume with ``?since=``.

Pure: no I/O here. Frames are msgspec Structs tagged by ``type``; JSON on the wire by
default, MessagePack when the client asks for the ``tb.msgpack`` subprotocol.
"""

from __future__ import annotations

import re
from typing import Final, Literal, cast

import msgspec

from core.seats import SEAT_STATUSES, SeatStatus

# Subprotocols a client may ask for in Sec-WebSocket-Protocol.
SUBPROTOCOL_JSON: Final = "tb.json"
SUBPROTOCOL_MSGPACK: Final = "tb.msgpack"

# Close codes (4000-4999 are the application's; they mirror HTTP statuses).
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001  # the server is shutting down; reconnect elsewhere
CLOSE_TRY_AGAIN: Final = 1013  # this replica is at capacity; reconnect with backoff
CLOSE_BAD_FRAME: Final = 4400  # unparsable or unexpected client frame, bad query
CLOSE_UNAUTHORIZED: Final = 4401  # missing, invalid or expired token
CLOSE_FORBIDDEN: Final = 4403  # a token of another user on an authenticated channel
CLOSE_UNKNOWN_EVENT: Final = 4404  # no such event (or not on sale)
CLOSE_HEARTBEAT_TIMEOUT: Final = 4408  # the client stopped answering pings
CLOSE_TOO_LARGE: Final = 4413  # a client frame over the size limit
CLOSE_SLOW_CONSUMER: Final = 4429  # the client reads too slowly; its send queue filled up
CLOSE_TOO_MANY_CONNECTIONS: Final = 4429  # this address holds too many sockets here

# Largest client frame we parse; clients only send small control frames.
MAX_CLIENT_FRAME: Final = 4096

# ASCII digits only (``\d`` and ``str.isdigit`` also take other scripts' digits and
# superscripts), each part at most a Redis stream id's 64 bits.
_VERSION_RE: Final = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_MAX_ID_PART: Final = 2**64 - 1
_SUB_RE: Final = re.compile(r"^[\x21-\x7e]{1,200}$")

ZERO_VERSION: Final = "0-0"


class BadVersion(ValueError):
    """A ``since`` value that is not a stream id."""


def parse_version(value: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``; a bare ``"17"`` means ``"17-0"``."""
    match = _VERSION_RE.fullmatch(value)
    if match is None:
        raise BadVersion(f"not a stream id: {value[:40]!r}")
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    if ms > _MAX_ID_PART or seq > _MAX_ID_PART:
        raise BadVersion(f"not a stream id (over 64 bits): {value[:40]!r}")
    return ms, seq


def format_version(version: tuple[int, int]) -> str:
    return f"{version[0]}-{version[1]}"


def parse_since(value: str, partitions: int) -> list[str | None]:
    """Per-partition resume points from ``?since=``.

    One stream id applies to partition 0 of a one-partition event; an event with
    several partitions takes a comma list in partition order, where an empty item
    means "no resume point for this partition" (start from the current version).
    """
    items = value.split(",")
    if len(items) != partitions:
        raise BadVersion(f"expected {partitions} comma-separated versions, got {len(items)}")
    out: list[str | None] = []
    for item in items:
        item = item.strip()
        if not item:
            out.append(None)
            continue
        out.append(format_version(parse_version(item)))
    return out


def stream_key(event_id: int, partition: int) -> str:
    """The partition's change stream (same hash slot as its inventory keys)."""
    return f"{{ev:{event_id}:{partition}}}:stream"


def valid_subject(sub: str) -> bool:
    """A token subject we are willing to use in a Redis key (printable, bounded)."""
    return bool(_SUB_RE.match(sub))


# -- the change stream ----------------------------------------------------------------------


class SeatChange(msgspec.Struct, frozen=True):
    """One entry of a partition's change stream, as the public sees it.

    Hold and order ids are in the stream but never on the public channel: a
    hold id is a handle on somebody's purchase.
    """

    version: str
    seats: list[str]
    status: SeatStatus


_STATUSES: Final[frozenset[str]] = frozenset(SEAT_STATUSES)


def seat_change_from_stream(entry_id: bytes | str, fields: dict[bytes, bytes]) -> SeatChange | None:
    """Decode one XREAD/XRANGE entry (fields ``seats`` comma list and ``status``).

    Returns None for an entry that is not a seat change (for example a marker an
    operator wrote); the version still advances past it.
    """
    version = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    raw_seats = fields.get(b"seats")
    raw_status = fields.get(b"status")
    if raw_seats is None or raw_status is None:
        return None
    status = raw_status.decode()
    if status not in _STATUSES:
        return None
    seats = [s for s in raw_seats.decode().split(",") if s]
    if not seats:
        return None
    return SeatChange(version=version, seats=seats, status=status)  # type: ignore[arg-type]


# -- frames, server -> client: event channel ------------------------------------------------


class Frame(msgspec.Struct, frozen=True, tag_field="type"):
    """Base of every server frame; ``type`` names it on the wire."""


class Hello(Frame, frozen=True, tag="hello"):
    """First frame on the event channel: where the client stands, per partition."""

    event_id: int
    versions: list[str]
    heartbeat_s: float


class Deltas(Frame, frozen=True, tag="deltas"):
    """Seat changes of one partition in stream order; ``version`` is the last one's."""

    event_id: int
    partition: int
    version: str
    changes: list[SeatChange]


class Resync(Frame, frozen=True, tag="resync"):
    """The server cannot replay the gap: refetch ``GET /events/{id}/seats`` and apply
    only deltas whose version is newer than the map's."""

    event_id: int
    partition: int
    version: str
    reason: Literal["gap_trimmed", "unknown_version", "stream_lost", "rebuilt", "too_far_behind"]


class Ping(Frame, frozen=True, tag="ping"):
    """Heartbeat; the client answers ``{"type": "pong"}`` (any frame counts)."""

    t: int


class Pong(Frame, frozen=True, tag="pong"):
    t: int = 0


# -- frames, server -> client: user channel -------------------------------------------------


class UserHello(Frame, frozen=True, tag="hello"):
    """First frame on the user channel after authentication."""

    sub: str
    version: str
    heartbeat_s: float


class OrderUpdate(Frame, frozen=True, tag="order"):
    """One status change of one of the buyer's orders (from the notifier's stream)."""

    version: str
    order_id: str
    event_id: int
    status: Literal["pending", "confirmed", "rejected"]
    at: int
    reason: str | None = None
    seats: list[str] = []
    tickets: list[str] = []


class HoldWatched(Frame, frozen=True, tag="hold_watched"):
    """The server will warn before this hold expires."""

    hold_id: str
    event_id: int
    expires_at: int


class HoldExpiring(Frame, frozen=True, tag="hold_expiring"):
    """One of the buyer's holds expires soon; extend it or buy."""

    hold_id: str
    event_id: int
    expires_at: int
    seconds_left: int


class HoldGone(Frame, frozen=True, tag="hold_gone"):
    """A watched hold ended (expired, released, bought); no more warnings for it."""

    hold_id: str
    reason: Literal["expired", "ended"]


class QueueUpdate(Frame, frozen=True, tag="queue", kw_only=True):
    """The fan's place in an event's waiting room (after ``watch_queue``; then each time it
    changes, at most once a second): ``waiting`` with the position (none in the
    pre-queue), ``admitted`` with the admission token, or ``sold_out``."""

    event_id: int
    status: Literal["waiting", "admitted", "sold_out"]
    pre_queue: bool = False
    position: int | None = None
    waiting: int = 0
    eta_s: int | None = None
    admission: str | None = None
    admission_expires_at: int | None = None


class ErrorFrame(Frame, frozen=True, tag="error"):
    """A recoverable problem with one client request (the connection stays open)."""

    code: str
    detail: str


# What a client decodes on each channel (the two hellos share the tag "hello").
EventServerFrame = Hello | Deltas | Resync | Ping | Pong | ErrorFrame
UserServerFrame = (
    UserHello
    | OrderUpdate
    | HoldWatched
    | HoldExpiring
    | HoldGone
    | QueueUpdate
    | Ping
    | Pong
    | ErrorFrame
)


# -- frames, client -> server ---------------------------------------------------------------


class ClientFrame(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True):
    """Base of every client frame."""


class ClientPing(ClientFrame, frozen=True, tag="ping"):
    t: int = 0


class ClientPong(ClientFrame, frozen=True, tag="pong"):
    t: int = 0


class Auth(ClientFrame, frozen=True, tag="auth"):
    """First frame on ``/me/live`` when the token is not in the query string."""

    token: str


class WatchHold(ClientFrame, frozen=True, tag="watch_hold"):
    """Ask for a warning before this hold (of the caller's) expires."""

    hold_id: str


class WatchQueue(ClientFrame, frozen=True, tag="watch_queue"):
    """Push my place in this event's waiting room (joined with POST .../queue)."""

    event_id: int


EventClientFrame = ClientPing | ClientPong
UserClientFrame = ClientPing | ClientPong | Auth | WatchHold | WatchQueue


class FrameError(ValueError):
    """A client frame we refuse; ``code`` is the close code to use."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


_event_decoder = msgspec.json.Decoder(EventClientFrame)
_user_decoder = msgspec.json.Decoder(UserClientFrame)
_event_mp_decoder = msgspec.msgpack.Decoder(EventClientFrame)
_user_mp_decoder = msgspec.msgpack.Decoder(UserClientFrame)


def decode_client_frame(
    data: str | bytes, *, user_channel: bool, msgpack: bool = False
) -> EventClientFrame | UserClientFrame:
    """Parse one client frame or raise ``FrameError`` with the close code to use."""
    if len(data) > MAX_CLIENT_FRAME:
        raise FrameError(CLOSE_TOO_LARGE, f"frame over {MAX_CLIENT_FRAME} bytes")
    try:
        if msgpack:
            raw = data.encode() if isinstance(data, str) else data
            decoded = (_user_mp_decoder if user_channel else _event_mp_decoder).decode(raw)
        else:
            decoded = (_user_decoder if user_channel else _event_decoder).decode(data)
        return cast(EventClientFrame | UserClientFrame, decoded)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        # msgspec messages are short and name the field; safe to echo (no input echoed).
        raise FrameError(CLOSE_BAD_FRAME, f"bad frame: {str(exc)[:100]}") from None


class FrameEncoder:
    """Encodes a frame once per wire format; JSON goes out as text, MessagePack as binary."""

    def __init__(self) -> None:
        self._json = msgspec.json.Encoder()
        self._msgpack = msgspec.msgpack.Encoder()

    def json(self, frame: Frame) -> str:
        return self._json.encode(frame).decode()

    def msgpack(self, frame: Frame) -> bytes:
        return self._msgpack.encode(frame)


# -- notifications (written by the notifier, see core/orders.py) ----------------------------


def order_update_from_stream(
    entry_id: bytes | str, fields: dict[bytes, bytes]
) -> OrderUpdate | None:
    """Decode one entry of ``{user:<sub>}:events`` (``type`` = ``order.status``,
    ``data`` = JSON of ``core.orders.OrderStatusChanged``); None if it is anything else."""
    version = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if fields.get(b"type") != b"order.status":
        return None
    data = fields.get(b"data")
    if data is None:
        return None
    try:
        raw = msgspec.json.decode(data, type=_OrderStatusPayload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return OrderUpdate(
        version=version,
        order_id=raw.order_id,
        event_id=raw.event_id,
        status=raw.status,
        at=raw.at,
        reason=raw.reason,
        seats=list(raw.seats),
        tickets=list(raw.tickets),
    )


class _OrderStatusPayload(msgspec.Struct, frozen=True):
    # A tolerant reader of core.orders.OrderStatusChanged (unknown fields ignored, so a
    # v2 payload with extra members still reaches the buyer).
    order_id: str
    event_id: int
    status: Literal["pending", "confirmed", "rejected"]
    at: int
    reason: str | None = None
    seats: list[str] = []
    tickets: list[str] = []


def hold_warning_at(expires_at_ms: int, lead_s: float) -> int:
    """When (ms since epoch) to warn about a hold that expires at ``expires_at_ms``."""
    return expires_at_ms - int(lead_s * 1000)
