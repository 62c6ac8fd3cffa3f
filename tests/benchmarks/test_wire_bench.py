"""pytest-benchmark: msgspec encoding and decoding of the hot wire types.

Marked ``bench``; nothing is asserted about time (timing goals live in
docs/BENCHMARKS.md). Every benchmark checks its round trip gives back what
went in, so a broken codec cannot pass as a fast one.

Run: ``uv run pytest tests/benchmarks/test_wire_bench.py --benchmark-enable -q``
(``make bench`` does, and copies the table into docs/BENCHMARKS.md).
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from api.holds.schemas import HoldRequest, HoldView, hold_view
from core import live, orders
from core.events import PriceCategory
from core.holds import Hold

pytestmark = pytest.mark.bench

PLACED_AT = 1_795_000_000_000


def _seats(n: int, section: str = "101", row: str = "C") -> list[str]:
    return [f"{section}-{row}-{i}" for i in range(1, n + 1)]


def _order_placed(i: int = 0, n_seats: int = 4) -> orders.OrderPlaced:
    return orders.build_order(
        order_id=str(uuid.UUID(int=i + 1)),
        event_id=5,
        partition=0,
        hold_id=f"h5.0.{i:016x}",
        buyer=f"buyer-{i}",
        seats=_seats(n_seats, row=f"R{i % 50}"),
        categories=["VIP"] * n_seats,
        prices={"VIP": 105_000},
        placed_at=PLACED_AT + i,
        idempotency_key=str(uuid.UUID(int=10_000 + i)),
        fingerprint="sha256:" + "ab" * 32,
    )


# -- HTTP: the hold, the hottest request of a sale -------------------------------------------


def test_hold_request_decode(benchmark: Any) -> None:
    decoder = msgspec.json.Decoder(HoldRequest)
    body = b'{"seats":["101-C-14","101-C-15","101-C-16","101-C-17"]}'
    request = benchmark(decoder.decode, body)
    assert request.mode() == "seats" and request.seats == _seats(17)[13:]


def test_hold_view_build_and_encode(benchmark: Any) -> None:
    """The 201 body: price every seat from the catalog, then encode."""
    encoder = msgspec.json.Encoder()
    seats = _seats(4)
    hold = Hold(
        hold_id="h5.0.9f8a7b6c5d4e3f21",
        event_id=5,
        partition=0,
        buyer="buyer-1",
        seats=seats,
        categories=dict.fromkeys(seats, "VIP"),
        created_at=PLACED_AT,
        expires_at=PLACED_AT + 600_000,
        max_expires_at=PLACED_AT + 1_200_000,
    )
    prices = {"VIP": PriceCategory("VIP", "VIP", 70_000)}
    raw = benchmark(lambda: encoder.encode(hold_view(hold, prices)))
    view = msgspec.json.decode(raw, type=HoldView)
    assert view.total_minor == 280_000 and [s.seat_id for s in view.seats] == seats


# -- HTTP: the purchase requests and answers -----------------------------------------------


def test_place_order_request_decode(benchmark: Any) -> None:
    decoder = msgspec.json.Decoder(orders.PlaceOrderRequest)
    body = b'{"hold_id":"h5.0.9f8a7b6c5d4e3f21"}'
    result = benchmark(decoder.decode, body)
    assert result.hold_id == "h5.0.9f8a7b6c5d4e3f21"


def test_order_accepted_encode(benchmark: Any) -> None:
    encoder = msgspec.json.Encoder()
    accepted = orders.OrderAccepted(order_id=str(uuid.UUID(int=7)))
    raw = benchmark(encoder.encode, accepted)
    assert msgspec.json.decode(raw, type=orders.OrderAccepted) == accepted


# -- Kafka: OrderPlaced out of the API, into the persister in batches -----------------------


def test_order_placed_encode(benchmark: Any) -> None:
    event = _order_placed()
    raw = benchmark(orders.encode, event)
    assert msgspec.json.decode(raw, type=orders.OrderPlaced) == event


def test_order_placed_decode(benchmark: Any) -> None:
    decoder = msgspec.json.Decoder(orders.OrderPlaced)
    event = _order_placed()
    raw = orders.encode(event)
    assert benchmark(decoder.decode, raw) == event


def test_order_placed_decode_batch_500(benchmark: Any) -> None:
    """One persister batch: 500 messages of 4 seats (2,000 tickets)."""
    decoder = msgspec.json.Decoder(orders.OrderPlaced)
    batch = [orders.encode(_order_placed(i)) for i in range(500)]

    def decode_batch() -> list[orders.OrderPlaced]:
        return [decoder.decode(raw) for raw in batch]

    decoded = benchmark(decode_batch)
    assert len(decoded) == 500
    assert sum(len(o.seats) for o in decoded) == 2000


def test_order_confirmed_encode(benchmark: Any) -> None:
    placed = _order_placed()
    confirmed = orders.OrderConfirmed(
        order_id=placed.order_id,
        event_id=placed.event_id,
        partition=placed.partition,
        buyer=placed.buyer,
        tickets=tuple(
            orders.TicketRef(orders.ticket_id_for(placed.order_id, s.seat_id), s.seat_id)
            for s in placed.seats
        ),
        placed_at=placed.placed_at,
        confirmed_at=placed.placed_at + 40,
    )
    raw = benchmark(orders.encode, confirmed)
    assert msgspec.json.decode(raw, type=orders.OrderConfirmed) == confirmed


def test_order_status_changed_encode(benchmark: Any) -> None:
    change = orders.status_change(_order_placed())
    raw = benchmark(orders.encode, change)
    assert msgspec.json.decode(raw, type=orders.OrderStatusChanged) == change


# -- WebSocket: seat deltas to every watcher of an event ------------------------------------


def _deltas(n_changes: int) -> live.Deltas:
    changes = [
        live.SeatChange(version=f"{PLACED_AT + i}-0", seats=_seats(4, row=f"R{i}"), status="held")
        for i in range(n_changes)
    ]
    return live.Deltas(event_id=5, partition=0, version=changes[-1].version, changes=changes)


@pytest.mark.parametrize("n_changes", [1, 100])
def test_deltas_frame_encode_json(benchmark: Any, n_changes: int) -> None:
    """One coalesced frame (100 ms of a hold storm is ~100 changes)."""
    encoder = live.FrameEncoder()
    frame = _deltas(n_changes)
    text = benchmark(encoder.json, frame)
    assert msgspec.json.decode(text, type=live.EventServerFrame) == frame


@pytest.mark.parametrize("n_changes", [1, 100])
def test_deltas_frame_encode_msgpack(benchmark: Any, n_changes: int) -> None:
    encoder = live.FrameEncoder()
    frame = _deltas(n_changes)
    raw = benchmark(encoder.msgpack, frame)
    assert msgspec.msgpack.decode(raw, type=live.EventServerFrame) == frame


def test_seat_change_from_stream(benchmark: Any) -> None:
    """Decoding one XREAD entry of the change stream into the public delta."""
    fields = {
        b"seats": b"101-C-1,101-C-2,101-C-3,101-C-4",
        b"status": b"held",
        b"op": b"hold",
        b"hold": b"h5.0.9f8a7b6c5d4e3f21",
    }
    change = benchmark(live.seat_change_from_stream, b"1795000000000-0", fields)
    assert change is not None and change.seats[3] == "101-C-4"


def test_client_frame_decode(benchmark: Any) -> None:
    frame = benchmark(live.decode_client_frame, '{"type":"pong","t":12}', user_channel=False)
    assert frame == live.ClientPong(t=12)
