"""The purchase saga end to end: hold -> order -> persisted -> ticket -> QR -> gate.

The API runs in-process with its real lifespan (Redis Cluster, PostgreSQL, the Tansu
broker); the persister, ticket issuer and notifier run in-process as FastStream apps on
the session's topic prefix. Nothing is faked.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import zxingcpp
from litestar import post
from litestar.datastructures import State
from litestar.params import FromPath
from PIL import Image

from core.inventory import Inventory, partition_keys
from core.orders import user_events_key
from core.settings import Settings
from core.tickets import (
    TicketClaims,
    generate_private_key_pem,
    sign_ticket,
    signing_key,
    verify_ticket,
)
from tests.integration.api_servers import api_client, with_overrides
from tests.integration.catalog_seed import cluster_client, seed_test_event
from workers.issuer import create_issuer
from workers.notifier import create_notifier
from workers.persister import create_persister
from workers.runtime import ensure_topics

pytestmark = pytest.mark.slow

# Buyers unique to this run: Redis (shared between runs) keeps per-user records.
RUN = uuid.uuid4().hex[:8]


@post("/test-only/kafka/{action:str}", status_code=200)
async def kafka_switch(action: FromPath[str], state: State) -> dict[str, bool]:
    """Runs in the app's own event loop: cut the API's producer off, or bring it back."""
    kafka = state.kafka
    if action == "cut":
        await kafka.producer().stop()  # the handle still thinks it is connected
    else:
        await kafka.stop()
        await kafka.start()
    return {"ok": True}


@dataclass
class Stack:
    http: Any  # litestar AsyncTestClient
    settings: Settings
    dsn: str
    event_id: int
    seats: dict[str, str]  # seat -> category
    redis: Any

    def free_seats(self, n: int) -> list[str]:
        taken = self.__dict__.setdefault("_used", set())
        out = [s for s in sorted(self.seats) if s not in taken][:n]
        taken.update(out)
        assert len(out) == n, "the test event ran out of seats"
        return out


@pytest.fixture(scope="module")
async def stack(
    settings: Settings, pg_dsn: str, services: dict[str, str], tmp_path_factory: Any
) -> AsyncIterator[Stack]:
    key_dir = Path(tmp_path_factory.mktemp("ticket-keys"))
    config = with_overrides(
        settings,
        database={"url": pg_dsn},
        api={"rate_limit_enabled": False},
        tickets={"signing_key_path": str(key_dir / "signing.pem")},
        workers={"persister_port": 0, "issuer_port": 0, "notifier_port": 0},
    )
    redis = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    event_id, seats = await seed_test_event(
        pg_dsn,
        redis,
        name="Purchase e2e",
        address="Loopback 1",
        days_ahead=30,
        base_price_minor=10_000,
        capacity=120,
    )
    await ensure_topics(config)
    apps = [create_persister(config), create_issuer(config), create_notifier(config)]
    for app in apps:
        await app.start()
    try:
        async with api_client(config, extra_route_handlers=[kafka_switch]) as http:
            yield Stack(http, config, pg_dsn, event_id, seats, redis)
    finally:
        for app in apps:
            await app.stop()
        for key in partition_keys(event_id, 0):
            await redis.delete(key)
        await redis.aclose()


async def auth(http: Any, sub: str, roles: list[str] | None = None) -> dict[str, str]:
    body: dict[str, Any] = {"sub": sub}
    if roles is not None:
        body["roles"] = roles
    response = await http.post("/api/v1/auth/dev-token", json=body)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def hold(stack: Stack, headers: dict[str, str], n: int = 2) -> dict[str, Any]:
    seats = stack.free_seats(n)
    response = await stack.http.post(
        f"/api/v1/events/{stack.event_id}/holds", json={"seats": seats}, headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def place(stack: Stack, headers: dict[str, str], hold_id: str, key: str) -> httpx.Response:
    response: httpx.Response = await stack.http.post(
        "/api/v1/orders", json={"hold_id": hold_id}, headers={**headers, "Idempotency-Key": key}
    )
    return response


async def until(probe: Any, timeout_s: float = 30.0, every_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every_s)


async def confirmed_order(stack: Stack, headers: dict[str, str], order_id: str) -> Any:
    async def probe() -> Any:
        r = await stack.http.get(f"/api/v1/orders/{order_id}", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        return body if body["status"] != "pending" else None

    return await until(probe)


async def test_hold_to_gate(stack: Stack) -> None:
    alice = await auth(stack.http, f"alice-e2e-{RUN}")
    held = await hold(stack, alice, 2)
    response = await place(stack, alice, held["hold_id"], "k-" + uuid.uuid4().hex)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "pending"
    order_id = accepted["order_id"]

    # Pending until the persister decides; then confirmed with one ticket per seat.
    order = await confirmed_order(stack, alice, order_id)
    assert order["status"] == "confirmed"
    assert sorted(t["seat_id"] for t in order["tickets"]) == sorted(
        s["seat_id"] for s in held["seats"]
    )
    assert order["total"] == held["total_minor"]  # priced by the catalog, as the hold showed
    # Someone else cannot see it.
    bob = await auth(stack.http, f"bob-e2e-{RUN}")
    assert (await stack.http.get(f"/api/v1/orders/{order_id}", headers=bob)).status_code == 404

    ticket_id = order["tickets"][0]["ticket_id"]

    async def qr() -> bytes | None:
        r = await stack.http.get(f"/api/v1/tickets/{ticket_id}/qr.png", headers=alice)
        if r.status_code == 503:  # still being issued
            return None
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        content: bytes = r.content
        return content

    png = await until(qr)
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(decoded) == 1
    token = decoded[0].text
    svg = await stack.http.get(f"/api/v1/tickets/{ticket_id}/qr.svg", headers=alice)
    assert svg.status_code == 200 and svg.text.lstrip().startswith("<")
    assert (
        await stack.http.get(f"/api/v1/tickets/{ticket_id}/qr.png", headers=bob)
    ).status_code == 404

    # A scanner verifies it offline with the published keys.
    jwks = (await stack.http.get("/api/v1/tickets/jwks.json")).json()
    claims = verify_ticket(token, jwks)
    assert (claims.ticket, claims.event, claims.holder) == (
        ticket_id,
        stack.event_id,
        f"alice-e2e-{RUN}",
    )

    gate = await auth(stack.http, "gate-1", roles=["scanner"])
    first = await stack.http.post(
        "/api/v1/checkins",
        json={"token": token, "event_id": stack.event_id, "gate": "main"},
        headers=gate,
    )
    assert first.status_code == 201, first.text
    second = await stack.http.post(
        "/api/v1/checkins",
        json={"token": token, "event_id": stack.event_id, "gate": "main"},
        headers=gate,
    )
    assert second.status_code == 409
    problem = second.json()
    assert problem["type"].endswith("/already_used")
    assert problem["checked_in_at"] == first.json()["checked_in_at"]
    # Buyers cannot scan.
    assert (
        await stack.http.post(
            "/api/v1/checkins",
            json={"token": token, "event_id": stack.event_id, "gate": "main"},
            headers=alice,
        )
    ).status_code == 403

    # The buyer's lists and notification stream.
    mine = (await stack.http.get("/api/v1/me/tickets", headers=alice)).json()["items"]
    assert {t["ticket_id"] for t in mine} == {t["ticket_id"] for t in order["tickets"]}
    assert any(t["checked_in_at"] for t in mine)
    orders = (await stack.http.get("/api/v1/me/orders", headers=alice)).json()["items"]
    assert [o["order_id"] for o in orders] == [order_id]

    async def notified() -> bool:
        entries = await stack.redis.xrange(user_events_key(f"alice-e2e-{RUN}"))
        docs = [msgspec.json.decode(f[b"data"]) for _, f in entries]
        return any(d["order_id"] == order_id and d["status"] == "confirmed" for d in docs)

    await until(notified)


async def test_forged_and_malformed_tokens_are_refused(stack: Stack) -> None:
    gate = await auth(stack.http, "gate-2", roles=["scanner"])
    forged = sign_ticket(
        TicketClaims(
            ticket=str(uuid.uuid4()),
            event=stack.event_id,
            seat="1-A-1",
            holder="x",
            order="o",
            iat=1,
        ),
        signing_key(generate_private_key_pem()),
    )
    for token in (forged, "garbage", "a.b.c"):
        r = await stack.http.post(
            "/api/v1/checkins",
            json={"token": token, "event_id": stack.event_id, "gate": "main"},
            headers=gate,
        )
        assert r.status_code == 422, r.text
        assert r.json()["type"].endswith("/invalid_ticket")


async def test_concurrent_scans_admit_exactly_once(stack: Stack) -> None:
    carol = await auth(stack.http, f"carol-e2e-{RUN}")
    held = await hold(stack, carol, 1)
    order_id = (await place(stack, carol, held["hold_id"], uuid.uuid4().hex)).json()["order_id"]
    order = await confirmed_order(stack, carol, order_id)
    ticket_id = order["tickets"][0]["ticket_id"]

    async def token() -> str | None:
        r = await stack.http.get(f"/api/v1/tickets/{ticket_id}", headers=carol)
        value: str | None = r.json()["token"]
        return value

    signed = await until(token)
    gate = await auth(stack.http, "gate-3", roles=["scanner"])
    results = await asyncio.gather(
        *(
            stack.http.post(
                "/api/v1/checkins",
                json={"token": signed, "event_id": stack.event_id, "gate": "main"},
                headers=gate,
            )
            for _ in range(12)
        )
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [409] * 11


async def test_idempotency_key_under_concurrency(stack: Stack) -> None:
    dave = await auth(stack.http, f"dave-e2e-{RUN}")
    held = await hold(stack, dave, 2)
    key = "same-" + uuid.uuid4().hex
    responses = await asyncio.gather(*(place(stack, dave, held["hold_id"], key) for _ in range(8)))
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1  # byte-identical answers
    order_id = responses[0].json()["order_id"]
    # Later retry: same answer. Another body with the key: 422.
    again = await place(stack, dave, held["hold_id"], key)
    assert again.status_code == 202 and again.json()["order_id"] == order_id
    other = await hold(stack, dave, 1)
    reused = await place(stack, dave, other["hold_id"], key)
    assert reused.status_code == 422
    assert reused.json()["type"].endswith("/idempotency_key_reused")
    await confirmed_order(stack, dave, order_id)
    orders = (await stack.http.get("/api/v1/me/orders", headers=dave)).json()["items"]
    assert [o["order_id"] for o in orders] == [order_id]
    missing = await stack.http.post(
        "/api/v1/orders", json={"hold_id": other["hold_id"]}, headers=dave
    )
    assert missing.status_code == 422


async def test_broker_unreachable_at_publish_gives_503_and_keeps_the_hold(stack: Stack) -> None:
    erin = await auth(stack.http, f"erin-e2e-{RUN}")
    held = await hold(stack, erin, 2)
    assert (await stack.http.post("/test-only/kafka/cut")).status_code == 200
    try:
        response = await place(stack, erin, held["hold_id"], "k1-" + uuid.uuid4().hex)
    finally:
        assert (await stack.http.post("/test-only/kafka/restore")).status_code == 200
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    # The hold is back, whole, and can be bought.
    again = await stack.http.get(f"/api/v1/holds/{held['hold_id']}", headers=erin)
    assert again.status_code == 200, again.text
    assert [s["seat_id"] for s in again.json()["seats"]] == [s["seat_id"] for s in held["seats"]]
    inventory = Inventory(stack.redis)
    _, statuses = await inventory.seat_statuses(stack.event_id)
    assert {statuses[s["seat_id"]] for s in held["seats"]} == {"held"}
    retry = await place(stack, erin, held["hold_id"], "k2-" + uuid.uuid4().hex)
    assert retry.status_code == 202, retry.text
    order = await confirmed_order(stack, erin, retry.json()["order_id"])
    assert order["status"] == "confirmed"


async def test_after_drain_tickets_equal_sold_seats(stack: Stack) -> None:
    buyers = [await auth(stack.http, f"drain-{i}-{RUN}") for i in range(6)]
    placed = []
    for headers in buyers:
        held = await hold(stack, headers, 3)
        r = await place(stack, headers, held["hold_id"], uuid.uuid4().hex)
        assert r.status_code == 202
        placed.append((headers, r.json()["order_id"]))
    for headers, order_id in placed:
        await confirmed_order(stack, headers, order_id)
    inventory = Inventory(stack.redis)

    async def drained() -> bool:
        _, statuses = await inventory.seat_statuses(stack.event_id)
        return "pending" not in statuses.values()

    await until(drained)
    _, statuses = await inventory.seat_statuses(stack.event_id)
    sold = {s for s, st in statuses.items() if st == "sold"}
    conn = await asyncpg.connect(stack.dsn)
    try:
        tickets = {
            r["seat_id"]
            for r in await conn.fetch(
                "SELECT seat_id FROM orders.tickets WHERE event_id = $1", stack.event_id
            )
        }
    finally:
        await conn.close()
    assert tickets == sold
    assert len(tickets) >= 18
