"""Order events and rules: pricing from the catalog, status transitions, wire shapes."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from core.errors import InvalidInput
from core.orders import (
    OrderConfirmed,
    OrderPlaced,
    OrderRejected,
    PlaceOrderRequest,
    TicketRef,
    build_order,
    can_transition,
    canonical_uuid,
    encode,
    order_id_for,
    status_change,
    ticket_id_for,
    topic,
    user_events_key,
)


def _order() -> OrderPlaced:
    return build_order(
        order_id="o-1",
        event_id=7,
        partition=0,
        hold_id="h7.0.9f8a7b6c5d4e3f21",
        buyer="user-1",
        seats=["101-C-14", "101-C-15"],
        categories=["VIP", "GENERAL"],
        prices={"VIP": 25000, "GENERAL": 9950},
        placed_at=1,
    )


def test_order_is_priced_from_the_catalog_in_minor_units() -> None:
    order = _order()
    assert [s.price for s in order.seats] == [25000, 9950]
    assert order.total == 34950
    assert order.currency == "PEN"


def test_unknown_category_price_is_refused() -> None:
    with pytest.raises(InvalidInput):
        build_order(
            order_id="o",
            event_id=1,
            partition=0,
            hold_id="h",
            buyer="b",
            seats=["1-A-1"],
            categories=["NOPE"],
            prices={"VIP": 1},
            placed_at=1,
        )


def test_events_are_versioned_and_round_trip() -> None:
    order = _order()
    raw = encode(order)
    assert msgspec.json.decode(raw)["v"] == 1
    assert msgspec.json.decode(raw, type=OrderPlaced) == order


def test_events_are_frozen() -> None:
    with pytest.raises(AttributeError):
        _order().total = 0  # type: ignore[misc]


def test_status_rules_allow_only_one_terminal_outcome() -> None:
    assert can_transition("pending", "confirmed")
    assert can_transition("pending", "rejected")
    assert not can_transition("confirmed", "rejected")
    assert not can_transition("rejected", "confirmed")
    assert not can_transition("confirmed", "pending")


def test_ticket_ids_are_deterministic_per_order_and_seat() -> None:
    assert ticket_id_for("o-1", "101-C-14") == ticket_id_for("o-1", "101-C-14")
    assert ticket_id_for("o-1", "101-C-14") != ticket_id_for("o-2", "101-C-14")
    assert ticket_id_for("o-1", "101-C-14") != ticket_id_for("o-1", "101-C-15")


def test_ticket_ids_are_the_uuid5_of_order_and_seat() -> None:
    # Tickets already in PostgreSQL were named by uuid.uuid5: a replay must map onto them.
    namespace = uuid.UUID("6f1c2e0a-4b1d-5e7a-9c3f-0d2b8a7e5f41")
    for i in range(200):
        order_id, seat_id = str(uuid.UUID(int=i * 7919 + 1)), f"{i % 7}-R{i}-ñ{i}"
        expected = str(uuid.uuid5(namespace, f"{order_id}/{seat_id}"))
        assert ticket_id_for(order_id, seat_id) == expected


def test_place_order_request_rejects_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"hold_id":"h","price":1}', type=PlaceOrderRequest)


def test_status_change_for_each_outcome() -> None:
    confirmed = OrderConfirmed(
        order_id="o",
        event_id=1,
        partition=0,
        buyer="b",
        tickets=(TicketRef(ticket_id="t", seat_id="1-A-1"),),
        placed_at=1,
        confirmed_at=2,
    )
    rejected = OrderRejected(
        order_id="o",
        event_id=1,
        partition=0,
        buyer="b",
        reason="seat_taken",
        seats=("1-A-1",),
        placed_at=1,
        rejected_at=3,
    )
    assert status_change(confirmed).status == "confirmed"
    assert status_change(confirmed).tickets == ("t",)
    assert status_change(rejected).reason == "seat_taken"
    assert status_change(_order()).status == "pending"


def test_names() -> None:
    assert topic("tb.", "orders.placed") == "tb.orders.placed"
    assert user_events_key("user-1") == "{user:user-1}:events"


def test_only_the_hyphenated_form_is_a_canonical_uuid() -> None:
    u = "4467b4a9-9836-420f-a844-9c49634a6d35"
    assert canonical_uuid(u) == u
    assert canonical_uuid(u.upper()) == u
    for odd in (
        f"urn:uuid:{u}",
        f"{{{u}}}",
        u.replace("-", ""),
        f"{u}\n",
        f" {u}",
        u[:8] + u[9:],
        u.replace("4", "٤"),
        "",
        "a" * 300,
    ):
        assert canonical_uuid(odd) is None, odd


def test_order_ids_are_the_uuid5_of_buyer_key_and_fingerprint() -> None:
    namespace = uuid.UUID("2b7f9d64-1c3e-5a8b-9e0f-7d4c6a1b3e52")
    for i in range(200):
        buyer, key, fp = f"buyer-ñ{i}", f"key-{i * 31}", f"{i:064x}"
        assert order_id_for(buyer, key, fp) == str(uuid.uuid5(namespace, f"{buyer}\n{key}\n{fp}"))
    # Every attempt of one request names one order; another hold under the key, another.
    assert order_id_for("ana", "k1", "f1") == order_id_for("ana", "k1", "f1")
    assert order_id_for("ana", "k1", "f1") != order_id_for("ana", "k1", "f2")
    assert order_id_for("ana", "k1", "f1") != order_id_for("bea", "k1", "f1")


def test_a_split_event_spreads_its_orders_over_kafka_partitions() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from core.orders import event_key, order_key
    from core.settings import KafkaSettings

    lanes = list(range(KafkaSettings().partitions))
    choose = DefaultPartitioner()
    # Unsplit: the event's key as before. Split: one key per inventory partition (each
    # seat's orders stay on one Kafka partition), and they land on several.
    assert order_key(77, 0) == event_key(77) == b"77"
    keys = [order_key(77, p) for p in range(8)]
    assert len(set(keys)) == 8
    assert len({choose(k, lanes, lanes) for k in keys}) >= 3
    assert all(order_key(77, p) == k for p, k in enumerate(keys))  # stable
