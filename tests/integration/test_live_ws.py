"""The live WebSocket channels, end to end, on two real API processes.

Two Granian processes (``python -m api``) on their own loopback ports share the real
Redis Cluster and the session's PostgreSQL; WebSocket clients connect to both. The
cross-replica test holds seats through one replica's HTTP API (a catalog event seeded
for it); the other tests change seats through the inventory gateway (what the hold
endpoints call) on events that exist only in Redis, which is quicker. Order
notifications are written in the notifier's format (core/orders.py:
``{user:<sub>}:events``, ``type`` + ``data``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from core.inventory import Inventory, partition_keys, stream_key
from core.live import (
    CLOSE_BAD_FRAME,
    CLOSE_FORBIDDEN,
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_LARGE,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNKNOWN_EVENT,
    SUBPROTOCOL_MSGPACK,
    Deltas,
    EventServerFrame,
    Hello,
    Resync,
    UserServerFrame,
)
from core.orders import USER_EVENT_TYPE, OrderStatusChanged, encode, user_events_key
from core.settings import HoldSettings
from migrations.seed import SeedEvent, seed
from tests.conftest import fresh_event_id
from tests.integration.catalog_seed import cluster_client, restart_event_ids

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

# Short timings so heartbeats, auth timeouts, hold warnings and drops show in seconds.
LIVE_ENV = {
    "TB_LIVE_HEARTBEAT_S": "1",
    "TB_LIVE_HEARTBEAT_TIMEOUT_S": "10",
    "TB_LIVE_AUTH_TIMEOUT_S": "1",
    "TB_LIVE_QUEUE_FRAMES": "16",
    "TB_LIVE_HOLD_WARNING_S": "2",
    "TB_LIVE_USER_POLL_MS": "100",
}

_event_decoder = msgspec.json.Decoder(EventServerFrame)
_user_decoder = msgspec.json.Decoder(UserServerFrame)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_api(env: dict[str, str], port: int, dsn: str) -> subprocess.Popen[bytes]:
    proc_env = {
        **os.environ,
        **env,
        **LIVE_ENV,
        "TB_API_PORT": str(port),
        "TB_ENV": "test",
        "TB_DATABASE_URL": dsn,
        "TB_API_RATE_LIMIT_ENABLED": "false",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "api"],
        env=proc_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"API on port {port} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"API on port {port} did not become healthy")


@pytest.fixture(scope="module")
def apis(services: dict[str, str], pg_dsn: str) -> Iterator[list[str]]:
    """Two API processes on the session database; yields their ``host:port``."""
    ports = [_free_port(), _free_port()]
    procs = [_start_api(services, port, pg_dsn) for port in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            _wait_healthy(port, proc)
        yield [f"127.0.0.1:{port}" for port in ports]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


# A third replica with a small per-address socket cap and replay budget.
CAPPED_ENV = {
    "TB_LIVE_MAX_CONNECTIONS_PER_IP": "3",
    "TB_LIVE_REPLAY_MAX_ENTRIES": "5",
    "TB_API_WORKERS": "1",  # the cap is per process
}


@pytest.fixture(scope="module")
def capped_api(services: dict[str, str], pg_dsn: str) -> Iterator[str]:
    port = _free_port()
    proc = _start_api({**services, **CAPPED_ENV}, port, pg_dsn)
    try:
        _wait_healthy(port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
async def catalog_event(pg_dsn: str, services: dict[str, str]) -> AsyncIterator[int]:
    """An event in the catalog (PostgreSQL) with its inventory loaded, for HTTP holds."""
    await restart_event_ids(pg_dsn)
    client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await client.initialize()
    event = SeedEvent(
        slug=f"live-{fresh_event_id()}",
        title="Live map test",
        category="CONCERT",
        venue="Test Hall",
        address="Loopback 1",
        starts_at=datetime.now(UTC) + timedelta(days=30),
        base_price_minor=10_000,
        capacity=200,
    )
    report = await seed(pg_dsn, Inventory(client), [event])
    event_id = report.created[0][0]
    yield event_id
    for key in partition_keys(event_id, 0):
        await client.delete(key)
    await client.aclose()


async def _catalog_seats(pg_dsn: str, event_id: int) -> list[str]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT seat_id FROM catalog.seats WHERE event_id = $1 ORDER BY seat_id", event_id
        )
    finally:
        await conn.close()
    return [r["seat_id"] for r in rows]


@pytest.fixture
async def inventory(redis_cluster: Any) -> Inventory:
    return Inventory(redis_cluster, HoldSettings(max_seats_per_buyer=50, max_seats_per_hold=6))


async def _loaded_event(inventory: Inventory, seats: int = 60) -> int:
    event_id = fresh_event_id()
    layout = [(f"A-{1 + i // 20}-{1 + i % 20}", "GENERAL") for i in range(seats)]
    await inventory.load(event_id, 0, layout, {})
    return event_id


async def _token(base: str, sub: str) -> str:
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"http://{base}/api/v1/auth/dev-token", json={"sub": sub})
        resp.raise_for_status()
        return str(resp.json()["access_token"])


class Client:
    """A WebSocket client that answers pings and decodes frames."""

    def __init__(self, ws: ClientConnection, user: bool = False) -> None:
        self.ws = ws
        self.decoder = _user_decoder if user else _event_decoder

    async def frame(self, timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.ws.recv()
                frame = self.decoder.decode(raw)
                if type(frame).__name__ == "Ping":
                    await self.ws.send('{"type":"pong"}')
                    continue
                return frame

    async def changes(self, count: int, timeout: float = 10.0) -> list[tuple[str, str, str]]:
        """(version, seats, status) of the next ``count`` seat changes."""
        out: list[tuple[str, str, str]] = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                frame = await self.frame(timeout)
                assert isinstance(frame, Deltas), frame
                out.extend((c.version, ",".join(c.seats), c.status) for c in frame.changes)
        return out

    async def closed(self, timeout: float = 10.0) -> tuple[int, str]:
        """Read (answering nothing) until the server closes; its code and reason."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code, exc.rcvd.reason
        raise AssertionError("unreachable")


async def _connect(url: str, user: bool = False, **kwargs: Any) -> Client:
    return Client(await websockets.connect(url, **kwargs), user=user)


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        await client.ws.close()


async def _stream_tail(redis: Any, event_id: int) -> list[tuple[str, str, str]]:
    entries = await redis.xrange(stream_key(event_id, 0))
    return [
        (eid.decode(), f[b"seats"].decode(), f[b"status"].decode())
        for eid, f in entries
        if f[b"status"] in (b"free", b"held", b"pending", b"sold")
    ]


async def test_a_hold_through_one_replica_shows_up_on_both_in_order(
    apis: list[str],
    catalog_event: int,
    pg_dsn: str,
    redis_cluster: Any,
    clients: list[Client],
) -> None:
    event_id = catalog_event
    seats = (await _catalog_seats(pg_dsn, event_id))[:12]
    a = await _connect(f"ws://{apis[0]}/api/v1/events/{event_id}/live")
    b = await _connect(f"ws://{apis[1]}/api/v1/events/{event_id}/live")
    clients += [a, b]
    hello_a, hello_b = await a.frame(), await b.frame()
    assert isinstance(hello_a, Hello) and isinstance(hello_b, Hello)
    assert hello_a.versions == hello_b.versions

    before = len(await _stream_tail(redis_cluster, event_id))
    async with httpx.AsyncClient(base_url=f"http://{apis[0]}", timeout=10) as http:
        holds = []
        for i, seat in enumerate(seats):
            auth = {"Authorization": f"Bearer {await _token(apis[0], f'live-buyer-{i % 4}')}"}
            resp = await http.post(
                f"/api/v1/events/{event_id}/holds", json={"seats": [seat]}, headers=auth
            )
            assert resp.status_code == 201, resp.text
            holds.append((resp.json()["hold_id"], auth))
        resp = await http.delete(f"/api/v1/holds/{holds[0][0]}", headers=holds[0][1])
        assert resp.status_code == 204, resp.text
    expected = (await _stream_tail(redis_cluster, event_id))[before:]
    assert len(expected) == len(seats) + 1

    got_a = await a.changes(len(expected))
    got_b = await b.changes(len(expected))
    assert got_a == expected  # every change, in the stream's order
    assert got_b == expected
    assert [g[1:] for g in got_a] == [(s, "held") for s in seats] + [(seats[0], "free")]


async def test_msgpack_subprotocol(
    apis: list[str], inventory: Inventory, clients: list[Client]
) -> None:
    event_id = await _loaded_event(inventory)
    ws = await websockets.connect(
        f"ws://{apis[0]}/api/v1/events/{event_id}/live", subprotocols=[SUBPROTOCOL_MSGPACK]
    )
    clients.append(Client(ws))
    assert ws.subprotocol == SUBPROTOCOL_MSGPACK
    decoder = msgspec.msgpack.Decoder(EventServerFrame)
    assert isinstance(decoder.decode(await ws.recv()), Hello)
    await inventory.hold(event_id, ["A-2-5"], "mp-buyer")
    frame = decoder.decode(await asyncio.wait_for(ws.recv(), 5))
    assert isinstance(frame, Deltas) and frame.changes[0].seats == ["A-2-5"]


async def test_resume_with_since_on_the_other_replica_sees_every_missed_delta(
    apis: list[str], inventory: Inventory, redis_cluster: Any, clients: list[Client]
) -> None:
    event_id = await _loaded_event(inventory)
    first = await _connect(f"ws://{apis[0]}/api/v1/events/{event_id}/live")
    await first.frame()  # hello
    await inventory.hold(event_id, ["A-1-1", "A-1-2"], "early")
    (seen,) = await first.changes(1)
    await first.ws.close()

    before = len(await _stream_tail(redis_cluster, event_id))
    for i in range(3, 11):
        await inventory.hold(event_id, [f"A-1-{i}"], f"while-away-{i}")
    missed = (await _stream_tail(redis_cluster, event_id))[before:]

    again = await _connect(f"ws://{apis[1]}/api/v1/events/{event_id}/live?since={seen[0]}")
    clients.append(again)
    hello = await again.frame()
    assert isinstance(hello, Hello) and hello.versions == [missed[-1][0]]
    assert await again.changes(len(missed)) == missed
    # ...and live changes keep coming after the replayed ones, without duplicates.
    await inventory.hold(event_id, ["A-2-1"], "after")
    (live,) = await again.changes(1)
    assert live[1:] == ("A-2-1", "held") and live[0] > missed[-1][0]


async def test_a_gap_older_than_the_stream_asks_the_client_to_refetch(
    apis: list[str], inventory: Inventory, redis_cluster: Any, clients: list[Client]
) -> None:
    event_id = await _loaded_event(inventory)
    await inventory.hold(event_id, ["A-1-1"], "old")
    (old, *_) = await _stream_tail(redis_cluster, event_id)
    for i in range(2, 8):
        await inventory.hold(event_id, [f"A-1-{i}"], f"b{i}")
    await redis_cluster.xtrim(stream_key(event_id, 0), maxlen=2, approximate=False)
    client = await _connect(f"ws://{apis[0]}/api/v1/events/{event_id}/live?since={old[0]}")
    clients.append(client)
    hello = await client.frame()
    resync = await client.frame()
    assert isinstance(resync, Resync)
    assert resync.reason == "gap_trimmed" and resync.version == hello.versions[0]


async def test_unknown_event_and_bad_input_get_close_codes(
    apis: list[str], inventory: Inventory
) -> None:
    unknown = await _connect(f"ws://{apis[0]}/api/v1/events/{fresh_event_id()}/live")
    code, reason = await unknown.closed()
    assert code == CLOSE_UNKNOWN_EVENT and "unknown event" in reason

    event_id = await _loaded_event(inventory, seats=4)
    bad_since = await _connect(f"ws://{apis[0]}/api/v1/events/{event_id}/live?since=yesterday")
    assert (await bad_since.closed())[0] == CLOSE_BAD_FRAME

    for payload in ("not json", b"\x00\x01binary", '{"type":"subscribe","event":1}'):
        client = await _connect(f"ws://{apis[1]}/api/v1/events/{event_id}/live")
        assert isinstance(await client.frame(), Hello)
        await client.ws.send(payload)
        code, reason = await client.closed()
        assert code == CLOSE_BAD_FRAME, (payload, code, reason)
        assert reason

    big = await _connect(f"ws://{apis[1]}/api/v1/events/{event_id}/live")
    await big.frame()
    await big.ws.send('{"type":"pong","t":' + "1" * 5000 + "}")
    assert (await big.closed())[0] == CLOSE_TOO_LARGE

    # The replica is still serving after all that.
    ok = await _connect(f"ws://{apis[1]}/api/v1/events/{event_id}/live")
    assert isinstance(await ok.frame(), Hello)
    await ok.ws.send('{"type":"ping","t":7}')
    pong = await ok.frame()
    assert type(pong).__name__ == "Pong" and pong.t == 7
    await ok.ws.close()


async def test_a_client_that_stops_answering_pings_is_dropped(
    apis: list[str], inventory: Inventory
) -> None:
    event_id = await _loaded_event(inventory, seats=4)
    silent = await _connect(f"ws://{apis[0]}/api/v1/events/{event_id}/live")
    code, reason = await silent.closed(timeout=20)  # reads, never answers
    assert code == CLOSE_HEARTBEAT_TIMEOUT and "no frame" in reason


async def test_a_slow_reader_is_dropped_with_4429(
    apis: list[str], inventory: Inventory, redis_cluster: Any
) -> None:
    event_id = await _loaded_event(inventory, seats=4)
    # A tiny receive buffer and no reading: the server's sends back up quickly.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(apis[0].rsplit(":", 1)[1])))
    slow = Client(
        await websockets.connect(
            f"ws://{apis[0]}/api/v1/events/{event_id}/live",
            sock=sock,
            max_queue=1,
            max_size=None,
            ping_interval=None,  # its own keepalive would give up first
        )
    )
    watcher = await _connect(f"ws://{apis[0]}/api/v1/events/{event_id}/live")
    await watcher.frame()
    key = stream_key(event_id, 0)
    seats = ",".join(f"Z-{r}-{n}" for r in range(1, 9) for n in range(1, 60))  # ~4 kB
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        pipe = redis_cluster.pipeline()
        for _ in range(150):  # ~600 kB per coalesced frame
            pipe.xadd(
                key, {"seats": seats, "status": "held", "op": "test"}, maxlen=2000, approximate=True
            )
        await pipe.execute()
        await asyncio.sleep(0.11)  # one coalesced frame per window
        with contextlib.suppress(TimeoutError):
            await watcher.frame(timeout=0.01)  # the healthy client keeps reading
        if slow.ws.state.name == "CLOSED":
            break
        metrics = httpx.get(f"http://{apis[0]}/metrics").text
        if 'ticketbuster_ws_closed_total{channel="event",code="4429"}' in metrics:
            break
    code, reason = await slow.closed(timeout=30)
    assert code == CLOSE_SLOW_CONSUMER and "too slow" in reason
    await watcher.ws.close()


async def _order_event(redis: Any, sub: str, order_id: str, status: str) -> None:
    change = OrderStatusChanged(
        order_id=order_id,
        event_id=42,
        status=status,
        at=int(time.time() * 1000),  # type: ignore[arg-type]
        seats=("A-1-1",),
    )
    await redis.xadd(user_events_key(sub), {"type": USER_EVENT_TYPE, "data": encode(change)})


async def test_user_channel_needs_a_token(apis: list[str]) -> None:
    none = await _connect(f"ws://{apis[0]}/api/v1/me/live", user=True)
    code, reason = await none.closed()  # says nothing: the auth timeout closes it
    assert code == CLOSE_UNAUTHORIZED and "token" in reason

    not_auth = await _connect(f"ws://{apis[0]}/api/v1/me/live", user=True)
    await not_auth.ws.send('{"type":"pong"}')
    assert (await not_auth.closed())[0] == CLOSE_UNAUTHORIZED

    forged = await _connect(
        f"ws://{apis[0]}/api/v1/me/live?token=eyJhbGciOiJub25lIn0.e30.", user=True
    )
    assert (await forged.closed())[0] == CLOSE_UNAUTHORIZED


async def test_user_channel_delivers_only_the_buyers_own_orders(
    apis: list[str], redis_cluster: Any, clients: list[Client]
) -> None:
    alice, bob = f"alice-{fresh_event_id()}", f"bob-{fresh_event_id()}"
    alice_token = await _token(apis[0], alice)
    bob_token = await _token(apis[1], bob)
    # Alice: token in the first frame, on replica 0. Bob: token in the query, replica 1.
    a = await _connect(f"ws://{apis[0]}/api/v1/me/live", user=True)
    await a.ws.send(msgspec.json.encode({"type": "auth", "token": alice_token}))
    b = await _connect(f"ws://{apis[1]}/api/v1/me/live?token={bob_token}", user=True)
    clients += [a, b]
    hello_a, hello_b = await a.frame(), await b.frame()
    assert (hello_a.sub, hello_b.sub) == (alice, bob)
    # A non-browser client may use the Authorization header instead.
    c = await _connect(
        f"ws://{apis[1]}/api/v1/me/live",
        user=True,
        additional_headers={"Authorization": f"Bearer {bob_token}"},
    )
    clients.append(c)
    assert (await c.frame()).sub == bob

    await _order_event(redis_cluster, alice, "order-a1", "pending")
    await _order_event(redis_cluster, alice, "order-a1", "confirmed")
    first, second = await a.frame(), await a.frame()
    assert (first.order_id, first.status) == ("order-a1", "pending")
    assert (second.order_id, second.status) == ("order-a1", "confirmed")
    await _order_event(redis_cluster, bob, "order-b1", "rejected")
    got_b = await b.frame()
    assert (got_b.order_id, got_b.status) == ("order-b1", "rejected")  # not Alice's

    # Presenting another user's token on an open channel is refused.
    await b.ws.send(msgspec.json.encode({"type": "auth", "token": alice_token}))
    code, reason = await b.closed()
    assert code == CLOSE_FORBIDDEN and "another user" in reason

    # Reconnecting with since replays what was missed.
    await a.ws.close()
    await _order_event(redis_cluster, alice, "order-a2", "pending")
    again = await _connect(
        f"ws://{apis[1]}/api/v1/me/live?token={alice_token}&since={hello_a.version}", user=True
    )
    clients.append(again)
    await again.frame()  # hello
    replayed = [await again.frame() for _ in range(3)]
    assert [(f.order_id, f.status) for f in replayed] == [
        ("order-a1", "pending"),
        ("order-a1", "confirmed"),
        ("order-a2", "pending"),
    ]


async def test_hold_warning_before_expiry_only_for_the_holder(
    apis: list[str], inventory: Inventory, clients: list[Client]
) -> None:
    event_id = await _loaded_event(inventory, seats=4)
    owner, other = f"holder-{fresh_event_id()}", f"other-{fresh_event_id()}"
    hold = await inventory.hold(event_id, ["A-1-1"], owner, ttl_s=4)
    mine = await _connect(
        f"ws://{apis[0]}/api/v1/me/live?token={await _token(apis[0], owner)}", user=True
    )
    theirs = await _connect(
        f"ws://{apis[1]}/api/v1/me/live?token={await _token(apis[1], other)}", user=True
    )
    clients += [mine, theirs]
    await mine.frame(), await theirs.frame()

    await theirs.ws.send(msgspec.json.encode({"type": "watch_hold", "hold_id": hold.hold_id}))
    refused = await theirs.frame()
    assert type(refused).__name__ == "ErrorFrame" and refused.code == "hold_not_found"

    await mine.ws.send(msgspec.json.encode({"type": "watch_hold", "hold_id": hold.hold_id}))
    watched = await mine.frame()
    assert type(watched).__name__ == "HoldWatched" and watched.expires_at == hold.expires_at
    warning = await mine.frame(timeout=6)  # warning lead is 2 s in these instances
    assert type(warning).__name__ == "HoldExpiring" and warning.hold_id == hold.hold_id
    assert 0 <= warning.seconds_left <= 2
    assert time.time() * 1000 < hold.expires_at  # it came before the expiry
    gone = await mine.frame(timeout=6)
    assert type(gone).__name__ == "HoldGone" and gone.reason == "expired"


async def test_metrics_count_connections_and_frames(
    apis: list[str], inventory: Inventory, clients: list[Client]
) -> None:
    event_id = await _loaded_event(inventory, seats=4)
    client = await _connect(f"ws://{apis[0]}/api/v1/events/{event_id}/live")
    clients.append(client)
    await client.frame()
    text = httpx.get(f"http://{apis[0]}/metrics").text
    assert 'ticketbuster_ws_connections{channel="event"}' in text
    assert 'ticketbuster_ws_frames_total{channel="event"}' in text


async def test_user_channel_closes_when_the_token_expires(
    apis: list[str], redis_cluster: Any, settings: Any
) -> None:
    import jwt

    from api.auth.dev_issuer import ALGORITHM, DevIssuer, load_or_create_key

    issuer = DevIssuer(settings.auth, await load_or_create_key(redis_cluster))
    now = int(time.time())
    # Expired 29 s ago: still inside the verifier's 30 s leeway, out of it in a second.
    claims = {
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "sub": f"expiring-{fresh_event_id()}",
        "iat": now - 60,
        "exp": now - 29,
    }
    token = jwt.encode(
        claims, issuer._private_key, algorithm=ALGORITHM, headers={"kid": issuer.kid}
    )
    client = await _connect(f"ws://{apis[0]}/api/v1/me/live?token={token}", user=True)
    assert type(await client.frame()).__name__ == "UserHello"
    code, reason = await client.closed(timeout=10)
    assert code == CLOSE_UNAUTHORIZED and "expired" in reason


async def test_one_address_holds_at_most_its_cap_of_live_sockets(
    capped_api: str, inventory: Inventory, clients: list[Client]
) -> None:
    event_id = await _loaded_event(inventory, seats=4)
    url = f"ws://{capped_api}/api/v1/events/{event_id}/live"
    token = await _token(capped_api, f"capped-{fresh_event_id()}")
    # Every connection from one (loopback) address counts, on both channels.
    here = {"local_addr": ("127.0.0.2", 0)}
    held = [await _connect(url, **here) for _ in range(2)]
    user = await _connect(f"ws://{capped_api}/api/v1/me/live?token={token}", user=True, **here)
    clients += [*held, user]
    for client in held:
        assert isinstance(await client.frame(), Hello)
    assert type(await user.frame()).__name__ == "UserHello"

    over = await _connect(url, **here)
    code, reason = await over.closed()
    assert code == CLOSE_TOO_MANY_CONNECTIONS and "too many live connections" in reason
    over_user = await _connect(f"ws://{capped_api}/api/v1/me/live", user=True, **here)
    assert (await over_user.closed())[0] == CLOSE_TOO_MANY_CONNECTIONS
    # Another address is not affected, and the capped ones keep flowing.
    elsewhere = await _connect(url, local_addr=("127.0.0.4", 0))
    clients.append(elsewhere)
    assert isinstance(await elsewhere.frame(), Hello)
    await inventory.hold(event_id, ["A-1-1"], "cap-buyer")
    assert [c[1] for c in await held[1].changes(1)] == ["A-1-1"]

    # A socket that closes gives its place back.
    await held[0].ws.close()
    deadline = time.monotonic() + 5
    while True:
        again = await _connect(url, **here)
        try:
            assert isinstance(await again.frame(timeout=2), Hello)
            clients.append(again)
            break
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == CLOSE_TOO_MANY_CONNECTIONS
            assert time.monotonic() < deadline, "the closed socket's place was not freed"
            await asyncio.sleep(0.1)


async def test_a_reconnect_too_far_behind_gets_a_resync_not_the_whole_stream(
    capped_api: str, inventory: Inventory, clients: list[Client]
) -> None:
    event_id = await _loaded_event(inventory)
    url = f"ws://{capped_api}/api/v1/events/{event_id}/live"
    here = {"local_addr": ("127.0.0.3", 0)}
    first = await _connect(url, **here)
    hello = await first.frame()
    await first.ws.close()
    since = hello.versions[0]

    # Within the replay budget (5 entries): every missed change is replayed.
    for i in range(1, 5):
        await inventory.hold(event_id, [f"A-1-{i}"], f"near-{i}")
    near = await _connect(f"{url}?since={since}", **here)
    await near.frame()  # hello
    assert [c[1] for c in await near.changes(4)] == [f"A-1-{i}" for i in range(1, 5)]
    await near.ws.close()

    # Further behind: one resync at the current version, and no deltas before it.
    for i in range(5, 12):
        await inventory.hold(event_id, [f"A-1-{i}"], f"far-{i}")
    # The replica's room may still be open (it lingers): let its tailer dispatch them all,
    # or the hello's version (the end of the replay) would leave some for live frames.
    await asyncio.sleep(0.5)
    far = await _connect(f"{url}?since={since}", **here)
    clients.append(far)
    hello = await far.frame()
    resync = await far.frame()
    assert isinstance(resync, Resync), resync
    assert resync.reason == "too_far_behind" and resync.version == hello.versions[0]
    # ...and live changes follow it.
    await inventory.hold(event_id, ["A-3-1"], "after-resync")
    (live,) = await far.changes(1)
    assert live[1:] == ("A-3-1", "held") and live[0] > resync.version
