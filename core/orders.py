"""Orders: the purchase saga's events, wire types and status rules.

The saga (docs/decisions/0401-purchase-saga.md):

    hold -> confirm (Redis) -> publish OrderPlaced (Kafka) -> persist (PostgreSQL)
         -> OrderConfirmed | OrderRejected -> issue tickets -> notify the buyer

Every Kafka payload here is a frozen, versioned ``msgspec.Struct`` (``v: int = 1``)
encoded as JSON. The message key is the event id, so every order of one event
goes to one partition and is persisted in the order it was placed.

Topics (``settings.kafka.topic_prefix`` + name): ``orders.placed`` (OrderPlaced),
``orders.confirmed`` (OrderConfirmed), ``orders.rejected`` (OrderRejected),
``orders.dlq`` (DeadLetter), ``tickets.issued`` (TicketIssued),
``notifications`` (OrderStatusChanged).

Buyer notifications (the contract with the WebSocket layer): the notifier appends
every order status change to the Redis stream ``user_events_key(sub)``, i.e.
``{user:<sub>}:events`` (capped at about ``USER_EVENTS_MAXLEN`` entries), with the
fields ``type`` = ``b"order.status"`` and ``data`` = the JSON of ``OrderStatusChanged``.
The same payload is also published to the ``notifications`` topic.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Final, Literal

import msgspec

from core.errors import InvalidInput
from core.payments import PaymentStatus, ProviderName

OrderStatus = Literal["pending", "confirmed", "rejected"]
# Why an order was rejected; stable strings, shown to the buyer.
RejectReason = Literal["seat_taken", "invalid_order", "hold_expired"]
Currency = Literal["PEN"]

CURRENCY: Final[Currency] = "PEN"

TOPIC_PLACED: Final = "orders.placed"
TOPIC_CONFIRMED: Final = "orders.confirmed"
TOPIC_REJECTED: Final = "orders.rejected"
TOPIC_DLQ: Final = "orders.dlq"
TOPIC_TICKETS_ISSUED: Final = "tickets.issued"
TOPIC_NOTIFICATIONS: Final = "notifications"

USER_EVENTS_MAXLEN: Final = 200
USER_EVENT_TYPE: Final = b"order.status"

# Namespace for deterministic ticket ids: one seat of one order is one ticket,
# whoever computes it and however often (redelivery, restart).
_TICKET_NAMESPACE: Final = uuid.UUID("6f1c2e0a-4b1d-5e7a-9c3f-0d2b8a7e5f41")
_TICKET_PREFIX: Final = _TICKET_NAMESPACE.bytes

# Namespace for order ids derived from (buyer, Idempotency-Key): every attempt of one
# request names the same order, so a retry after a crash finds it instead of a new one.
_ORDER_NAMESPACE: Final = uuid.UUID("2b7f9d64-1c3e-5a8b-9e0f-7d4c6a1b3e52")
_ORDER_PREFIX: Final = _ORDER_NAMESPACE.bytes

_TRANSITIONS: Final[dict[OrderStatus, frozenset[OrderStatus]]] = {
    "pending": frozenset({"confirmed", "rejected"}),
    "confirmed": frozenset(),
    "rejected": frozenset(),
}


# -- Kafka events ---------------------------------------------------------------------------


class OrderSeat(msgspec.Struct, frozen=True):
    """One seat of an order, priced from the catalog when the order was placed."""

    seat_id: str
    category: str
    price: int  # minor units of the order's currency


class OrderPlaced(msgspec.Struct, frozen=True):
    """The API confirmed a hold in Redis (seats are sold-pending under ``order_id``)."""

    order_id: str
    event_id: int
    partition: int
    hold_id: str
    buyer: str
    seats: tuple[OrderSeat, ...]
    total: int
    placed_at: int  # ms since epoch
    currency: Currency = CURRENCY
    # The request's Idempotency-Key and body fingerprint, kept durably with the order.
    idempotency_key: str | None = None
    fingerprint: str | None = None
    v: int = 1


class TicketRef(msgspec.Struct, frozen=True):
    ticket_id: str
    seat_id: str


class OrderConfirmed(msgspec.Struct, frozen=True):
    """The persister committed the order and its tickets."""

    order_id: str
    event_id: int
    partition: int
    buyer: str
    tickets: tuple[TicketRef, ...]
    placed_at: int
    confirmed_at: int
    v: int = 1


class OrderRejected(msgspec.Struct, frozen=True):
    """The persister refused the order; ``seats`` names the seats already sold."""

    order_id: str
    event_id: int
    partition: int
    buyer: str
    reason: RejectReason
    seats: tuple[str, ...]
    placed_at: int
    rejected_at: int
    v: int = 1


class TicketIssued(msgspec.Struct, frozen=True):
    """The issuer signed a ticket and stored its token."""

    ticket_id: str
    order_id: str
    event_id: int
    seat_id: str
    holder: str
    kid: str
    issued_at: int
    v: int = 1


class OrderStatusChanged(msgspec.Struct, frozen=True):
    """What the buyer's WebSocket receives (see the module docstring for where)."""

    order_id: str
    event_id: int
    status: OrderStatus
    at: int
    reason: RejectReason | None = None
    seats: tuple[str, ...] = ()
    tickets: tuple[str, ...] = ()
    type: Literal["order.status"] = "order.status"
    v: int = 1


class DeadLetter(msgspec.Struct, frozen=True):
    """A message a worker gave up on, with why; the raw value is kept verbatim."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: str  # the original bytes, decoded as UTF-8 with replacement
    error: str
    attempts: int
    group: str
    at: int
    v: int = 1


# -- HTTP wire types ------------------------------------------------------------------------


class PlaceOrderRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    hold_id: str
    # The admission token of a queued on-sale (api/queue); ignored for other events.
    admission: str | None = None


class OrderAccepted(msgspec.Struct, frozen=True):
    order_id: str
    status: OrderStatus = "pending"


class TicketView(msgspec.Struct, frozen=True):
    ticket_id: str
    order_id: str
    event_id: int
    seat_id: str
    category: str
    price: int
    currency: Currency
    issued: bool
    checked_in_at: int | None = None
    # Revoked (refunded, or by support): the gate refuses it; refunded_at when money went back.
    revoked_at: int | None = None
    refunded_at: int | None = None
    qr_svg: str | None = None
    qr_png: str | None = None
    # The signed token (compact JWS) itself, on the single-ticket endpoint only.
    token: str | None = None


class OrderPayment(msgspec.Struct, frozen=True):
    """The payment that placed an order (``GET /api/v1/payments/{payment_id}`` has it all)."""

    payment_id: str
    status: PaymentStatus
    amount: int
    currency: Currency
    provider: ProviderName


class OrderView(msgspec.Struct, frozen=True):
    order_id: str
    event_id: int
    status: OrderStatus
    seats: tuple[OrderSeat, ...]
    total: int
    currency: Currency
    placed_at: int
    reason: RejectReason | None = None
    conflicting_seats: tuple[str, ...] = ()
    tickets: tuple[TicketView, ...] = ()
    # Paid orders only; None for an order bought without the payment step.
    payment: OrderPayment | None = None
    # What has been refunded of ``total`` (minor units): the refunded tickets' prices.
    refunded: int = 0


class OrderList(msgspec.Struct, frozen=True):
    items: tuple[OrderView, ...]


class TicketList(msgspec.Struct, frozen=True):
    items: tuple[TicketView, ...]


# -- rules ----------------------------------------------------------------------------------


def topic(prefix: str, name: str) -> str:
    """Full topic name, e.g. ``topic("tb.", TOPIC_PLACED) == "tb.orders.placed"``."""
    return f"{prefix}{name}"


def can_transition(current: OrderStatus, new: OrderStatus) -> bool:
    """Pending ends confirmed or rejected, once; terminal states never change."""
    return new in _TRANSITIONS[current]


_CANONICAL_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_uuid(value: str) -> str | None:
    """``value`` as a lower-case UUID if it is one in the 36-character hyphenated form.

    Order and ticket ids only ever exist in that form. ``uuid.UUID()`` also takes
    ``urn:uuid:``, braces and bare hex, which PostgreSQL refuses; anything else is not
    an id of ours (None).
    """
    lowered = value.lower()
    return lowered if len(value) == 36 and _CANONICAL_UUID.fullmatch(lowered) else None


def _uuid5(prefix: bytes, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))`` for ``prefix = namespace.bytes``, from the SHA-1
    directly (the uuid module's objects cost three times the hash, on hot paths)."""
    digest = bytearray(hashlib.sha1(prefix + name.encode(), usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5, as RFC 4122
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def ticket_id_for(order_id: str, seat_id: str) -> str:
    """The deterministic ticket id of one seat of one order (UUIDv5).

    Equal to ``str(uuid.uuid5(_TICKET_NAMESPACE, f"{order_id}/{seat_id}"))``: the persister
    derives one per ticket, thousands per batch.
    """
    return _uuid5(_TICKET_PREFIX, f"{order_id}/{seat_id}")


def order_id_for(buyer: str, idempotency_key: str, fingerprint: str) -> str:
    """The order id of one purchase request: UUIDv5 of the buyer, the key and the request's
    fingerprint (``str(uuid.uuid5(_ORDER_NAMESPACE, f"{buyer}\n{key}\n{fingerprint}"))``).

    Deterministic, so that a retry of a request whose first attempt died after recording
    the order (and before answering) names that order rather than a second one. The
    fingerprint is part of it so that a key reused for another hold after the API forgot
    the key (24 h) names another order, never the first one's id for other seats.
    """
    return _uuid5(_ORDER_PREFIX, f"{buyer}\n{idempotency_key}\n{fingerprint}")


def publish_wait_s(request_timeout_s: float) -> float:
    """How long the API waits for the broker to acknowledge ``OrderPlaced``.

    Longer than the producer's own delivery timeout (aiokafka expires a batch after
    ``request_timeout`` and one produce request can take up to two of them), so the
    producer decides first: an acknowledgement, a definite refusal, or its own timeout.
    """
    return 2 * request_timeout_s + 1.0


def order_total(seats: tuple[OrderSeat, ...] | list[OrderSeat]) -> int:
    return sum(seat.price for seat in seats)


def build_order(
    *,
    order_id: str,
    event_id: int,
    partition: int,
    hold_id: str,
    buyer: str,
    seats: list[str] | tuple[str, ...],
    categories: list[str] | tuple[str, ...],
    prices: dict[str, int],
    placed_at: int,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> OrderPlaced:
    """Price a confirmed hold from the catalog's ``prices`` (category -> minor units)."""
    if not seats or len(seats) != len(categories):
        raise InvalidInput("the hold has no seats or no category per seat")
    priced = []
    for seat_id, category in zip(seats, categories, strict=True):
        price = prices.get(category)
        if price is None or price < 0:
            raise InvalidInput(f"no price for category {category!r}")
        priced.append(OrderSeat(seat_id=seat_id, category=category, price=price))
    items = tuple(priced)
    return OrderPlaced(
        order_id=order_id,
        event_id=event_id,
        partition=partition,
        hold_id=hold_id,
        buyer=buyer,
        seats=items,
        total=order_total(items),
        placed_at=placed_at,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )


def status_change(
    event: OrderPlaced | OrderConfirmed | OrderRejected,
) -> OrderStatusChanged:
    """The buyer-facing status change for a saga event."""
    if isinstance(event, OrderPlaced):
        return OrderStatusChanged(
            order_id=event.order_id,
            event_id=event.event_id,
            status="pending",
            at=event.placed_at,
            seats=tuple(s.seat_id for s in event.seats),
        )
    if isinstance(event, OrderConfirmed):
        return OrderStatusChanged(
            order_id=event.order_id,
            event_id=event.event_id,
            status="confirmed",
            at=event.confirmed_at,
            seats=tuple(t.seat_id for t in event.tickets),
            tickets=tuple(t.ticket_id for t in event.tickets),
        )
    return OrderStatusChanged(
        order_id=event.order_id,
        event_id=event.event_id,
        status="rejected",
        at=event.rejected_at,
        reason=event.reason,
        seats=event.seats,
    )


def pending_orders_key(sub: str) -> str:
    """The buyer's orders the persister has not decided yet (hash order_id -> OrderPlaced
    JSON), written by the API at intake (``lua/order_pending.lua``), read by GET
    /orders and the reconciler (which re-publishes an order from it)."""
    return f"{{user:{sub}}}:orders"


def user_events_key(sub: str) -> str:
    """Redis stream of one user's notifications (hash-tagged to one slot)."""
    return f"{{user:{sub}}}:events"


def user_notified_key(sub: str, order_id: str, status: str) -> str:
    """Marker that this status of this order is on the user's stream (``lua/notify.lua``)."""
    return f"{{user:{sub}}}:notified:{order_id}:{status}"


_encoder = msgspec.json.Encoder()


def encode(event: msgspec.Struct) -> bytes:
    """JSON bytes of a Kafka payload."""
    return _encoder.encode(event)


def event_key(event_id: int) -> bytes:
    """Kafka message key of an event's notifications: the event id, so one event's
    messages stay in order on one Kafka partition."""
    return str(event_id).encode()


def order_key(event_id: int, partition: int) -> bytes:
    """Kafka message key of an order's own messages (placed, confirmed, rejected): its
    event and inventory partition. A seat lives in one inventory partition, so the orders
    of each seat stay in order on one Kafka partition, while a stadium split into several
    inventory partitions spreads over as many persister lanes. Partition 0 keeps the plain
    event id: an unsplit event is keyed as before."""
    return event_key(event_id) if partition == 0 else f"{event_id}.{partition}".encode()
