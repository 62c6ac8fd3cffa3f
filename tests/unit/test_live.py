"""core/live.py: versions, client frames, stream decoding (no I/O)."""

from __future__ import annotations

import msgspec
import pytest

from core import inventory
from core.live import (
    CLOSE_BAD_FRAME,
    CLOSE_TOO_LARGE,
    Auth,
    BadVersion,
    ClientPong,
    Deltas,
    EventServerFrame,
    FrameEncoder,
    FrameError,
    SeatChange,
    WatchHold,
    decode_client_frame,
    order_update_from_stream,
    parse_since,
    parse_version,
    seat_change_from_stream,
    stream_key,
    valid_subject,
)
from core.orders import USER_EVENT_TYPE, OrderStatusChanged, encode


def test_versions_compare_as_stream_ids() -> None:
    assert parse_version("1700000000000-3") == (1700000000000, 3)
    assert parse_version("17") == (17, 0)
    assert parse_version("9-10") > parse_version("9-9")  # not string order
    for bad in ("", "abc", "1-", "-1", "1-2-3", "1 - 2", "9" * 21):
        with pytest.raises(BadVersion):
            parse_version(bad)


def test_versions_are_ascii_digits_within_64_bits() -> None:
    top = 2**64 - 1
    assert parse_version(f"{top}-{top}") == (top, top)
    # str.isdigit() and \d take these; int() or Redis does not (or reads another number).
    for bad in (
        "²",
        "1-²",
        "١٢-٣",
        "١٢",
        "\uff11\uff12",
        f"{top + 1}",
        f"1-{top + 1}",
        "12\n",
        "1-2\n",
    ):
        with pytest.raises(BadVersion):
            parse_version(bad)


def test_since_has_one_version_per_partition() -> None:
    assert parse_since("5-1", 1) == ["5-1"]
    assert parse_since("5-1,,7", 3) == ["5-1", None, "7-0"]
    with pytest.raises(BadVersion):
        parse_since("5-1,6-1", 1)
    with pytest.raises(BadVersion):
        parse_since("x", 1)


def test_stream_key_matches_the_inventory() -> None:
    assert stream_key(5, 2) == inventory.stream_key(5, 2) == "{ev:5:2}:stream"


def test_seat_changes_from_the_stream_hide_hold_and_order_ids() -> None:
    fields = {b"seats": b"A-1-1,A-1-2", b"status": b"held", b"op": b"hold", b"hold": b"h5.0.x"}
    change = seat_change_from_stream(b"10-0", fields)
    assert change == SeatChange(version="10-0", seats=["A-1-1", "A-1-2"], status="held")
    encoded = FrameEncoder().json(Deltas(event_id=5, partition=0, version="10-0", changes=[change]))
    assert b"h5.0" not in encoded.encode()
    decoded = msgspec.json.decode(encoded, type=EventServerFrame)
    assert isinstance(decoded, Deltas) and decoded.changes == [change]
    # A reload marker or garbage is not a seat change.
    assert seat_change_from_stream(b"11-0", {b"seats": b"", b"status": b"reload"}) is None
    assert seat_change_from_stream(b"12-0", {b"seats": b"A-1-1", b"status": b"lost"}) is None


def test_client_frames_are_strict() -> None:
    assert decode_client_frame('{"type":"pong"}', user_channel=False) == ClientPong()
    assert decode_client_frame('{"type":"auth","token":"t"}', user_channel=True) == Auth(token="t")
    frame = decode_client_frame(
        msgspec.msgpack.encode({"type": "watch_hold", "hold_id": "h1.0.aa"}),
        user_channel=True,
        msgpack=True,
    )
    assert frame == WatchHold(hold_id="h1.0.aa")
    bad = [
        "nope",
        '{"type":"auth","token":"t"}',  # auth is not an event-channel frame
        '{"type":"pong","extra":1}',  # unknown fields are refused
        '{"type":"subscribe"}',
        "[]",
    ]
    for data in bad:
        with pytest.raises(FrameError) as caught:
            decode_client_frame(data, user_channel=False)
        assert caught.value.code == CLOSE_BAD_FRAME and caught.value.reason
    with pytest.raises(FrameError) as caught:
        decode_client_frame("x" * 5000, user_channel=True)
    assert caught.value.code == CLOSE_TOO_LARGE


def test_order_updates_read_the_notifiers_format() -> None:
    change = OrderStatusChanged(
        order_id="o1", event_id=7, status="rejected", at=5, reason="seat_taken", seats=("A-1-1",)
    )
    update = order_update_from_stream(b"3-0", {b"type": USER_EVENT_TYPE, b"data": encode(change)})
    assert update is not None
    assert (update.version, update.order_id, update.status, update.reason) == (
        "3-0",
        "o1",
        "rejected",
        "seat_taken",
    )
    assert order_update_from_stream(b"4-0", {b"type": b"other", b"data": b"{}"}) is None
    assert order_update_from_stream(b"5-0", {b"type": USER_EVENT_TYPE, b"data": b"{"}) is None


def test_subjects_usable_in_keys() -> None:
    assert valid_subject("alice") and valid_subject("client:partner-1")
    assert not valid_subject("") and not valid_subject("a b") and not valid_subject("x" * 201)


def test_live_sockets_count_per_address_and_ipv6_per_64() -> None:
    from types import SimpleNamespace
    from typing import Any

    from api.live.controllers import client_key
    from core.settings import Settings

    def key(peer: str, *headers: tuple[bytes, bytes], proxies: str = "") -> str:
        settings = msgspec.structs.replace(
            Settings(), api=msgspec.structs.replace(Settings().api, trusted_proxies=proxies)
        )
        socket: Any = SimpleNamespace(
            scope={"client": (peer, 5000), "headers": list(headers)},
            app=SimpleNamespace(state=SimpleNamespace(settings=settings)),
        )
        return client_key(socket)

    assert key("192.0.2.7") == "192.0.2.7"
    assert key("2001:db8:1:2::5") == key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert key("2001:db8:1:3::5") != key("2001:db8:1:2::5")
    # X-Forwarded-For counts only from a trusted proxy.
    forwarded = (b"x-forwarded-for", b"198.51.100.9")
    assert key("10.0.0.1", forwarded) == "10.0.0.1"
    assert key("10.0.0.1", forwarded, proxies="10.0.0.0/8") == "198.51.100.9"
