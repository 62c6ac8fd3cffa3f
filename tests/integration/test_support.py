"""Support tools for admins against the real API, PostgreSQL, broker and ticket issuer:
find orders, revoke, reissue (new token, old refused), admit by hand, resend, and the audit
log of each action."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.inventory import partition_keys
from core.settings import Settings
from core.tickets import jwks, verify_ticket
from tests.integration.api_servers import api_client, with_overrides
from tests.integration.catalog_seed import cluster_client, seed_test_event
from tests.integration.sold_tickets import SoldTicket, sell, signing_pem
from workers.issuer import create_issuer
from workers.runtime import ensure_topics

pytestmark = pytest.mark.slow

RUN = uuid.uuid4().hex[:6]


@dataclass
class Stack:
    http: Any
    dsn: str
    pem: bytes
    event_id: int
    seats: list[str]
    admin: dict[str, str]
    scanner: dict[str, str]

    async def sell(self, buyer: str, n: int = 1) -> list[SoldTicket]:
        seats, self.seats = self.seats[:n], self.seats[n:]
        return await sell(self.dsn, self.event_id, seats, buyer, self.pem)

    async def scan(self, token: str, gate: str = "main") -> Any:
        return await self.http.post(
            "/api/v1/checkins",
            json={"token": token, "event_id": self.event_id, "gate": gate},
            headers=self.scanner,
        )

    async def audit(self, **params: str) -> list[dict[str, Any]]:
        r = await self.http.get("/api/v1/support/audit", params=params, headers=self.admin)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items


async def bearer(http: Any, sub: str, roles: list[str]) -> dict[str, str]:
    r = await http.post("/api/v1/auth/dev-token", json={"sub": sub, "roles": roles})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture(scope="module")
async def stack(
    settings: Settings, pg_dsn: str, services: dict[str, str], tmp_path_factory: Any
) -> AsyncIterator[Stack]:
    key_path = Path(tmp_path_factory.mktemp("support-keys")) / "signing.pem"
    pem = signing_pem(key_path)
    config = with_overrides(
        settings,
        database={"url": pg_dsn},
        kafka={"topic_prefix": f"{settings.kafka.topic_prefix}support."},
        api={"rate_limit_enabled": False},
        tickets={"signing_key_path": str(key_path)},
        workers={"issuer_port": 0},
    )
    redis = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    event_id, seats = await seed_test_event(
        pg_dsn,
        redis,
        name="Support test",
        address="Loopback 5",
        days_ahead=5,
        base_price_minor=9_000,
        capacity=40,
    )
    await ensure_topics(config)
    issuer = create_issuer(config)
    await issuer.start()
    try:
        async with api_client(config) as http:
            yield Stack(
                http,
                pg_dsn,
                pem,
                event_id,
                sorted(seats),
                await bearer(http, f"agent-{RUN}", ["admin"]),
                await bearer(http, f"gate-{RUN}", ["scanner"]),
            )
    finally:
        await issuer.stop()
        for key in partition_keys(event_id, 0):
            await redis.delete(key)
        await redis.aclose()


async def test_find_orders_by_id_buyer_and_seat(stack: Stack) -> None:
    buyer = f"fan-{RUN}"
    first = await stack.sell(buyer, 2)
    second = await stack.sell(buyer, 1)
    assert (await stack.scan(first[0].token)).status_code == 201

    def find(**params: Any) -> Any:
        return stack.http.get("/api/v1/support/orders", params=params, headers=stack.admin)

    by_id = (await find(order_id=first[0].order_id)).json()["items"]
    assert [o["order_id"] for o in by_id] == [first[0].order_id]
    states = {t["seat_id"]: t["state"] for t in by_id[0]["tickets"]}
    assert states == {first[0].seat_id: "admitted", first[1].seat_id: "issued"}
    assert by_id[0]["buyer"] == buyer and by_id[0]["status"] == "confirmed"

    by_buyer = (await find(buyer=buyer)).json()["items"]
    assert {o["order_id"] for o in by_buyer} == {first[0].order_id, second[0].order_id}

    by_seat = (await find(event_id=stack.event_id, seat=second[0].seat_id)).json()["items"]
    assert [o["order_id"] for o in by_seat] == [second[0].order_id]

    for params, field in (({}, "order_id"), ({"seat": "1-A-1"}, "event_id")):
        r = await find(**params)
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert (await find(order_id="not-a-uuid")).json()["field"] == "order_id"
    for name in ("buyer", "customer_ref"):
        nul = await find(**{name: "a\x00b"})
        assert nul.status_code == 422 and nul.json()["field"] == name, nul.text
    buyer_token = await bearer(stack.http, buyer, ["buyer"])
    assert (
        await stack.http.get("/api/v1/support/orders", params={"buyer": buyer}, headers=buyer_token)
    ).status_code == 403
    assert (
        await stack.http.get(
            "/api/v1/support/orders", params={"buyer": buyer}, headers=stack.scanner
        )
    ).status_code == 403


async def test_a_revoked_ticket_is_refused_at_the_gate(stack: Stack) -> None:
    [ticket] = await stack.sell(f"gus-{RUN}")
    path = f"/api/v1/support/tickets/{ticket.ticket_id}/revoke"
    missing = await stack.http.post(path, json={}, headers=stack.admin)
    assert missing.status_code == 422 and missing.json()["field"] == "reason"
    revoked = await stack.http.post(path, json={"reason": "chargeback"}, headers=stack.admin)
    assert revoked.status_code == 200, revoked.text
    again = await stack.http.post(path, json={"reason": "twice"}, headers=stack.admin)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]

    refused = await stack.scan(ticket.token)
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/ticket_revoked")
    snapshot = await stack.http.get(f"/api/v1/events/{stack.event_id}/gate", headers=stack.scanner)
    assert ticket.ticket_id in snapshot.json()["revoked"]

    entries = await stack.audit(ticket_id=ticket.ticket_id)
    assert [(e["action"], e["actor"], e["reason"]) for e in entries] == [
        ("revoke", f"agent-{RUN}", "chargeback")
    ]
    assert (
        await stack.http.post(
            "/api/v1/support/tickets/00000000-0000-0000-0000-000000000000/revoke",
            json={"reason": "x"},
            headers=stack.admin,
        )
    ).status_code == 404


async def test_reissue_gives_a_new_token_and_refuses_the_old(stack: Stack) -> None:
    buyer = f"hugo-{RUN}"
    [ticket] = await stack.sell(buyer)
    reissue = await stack.http.post(
        f"/api/v1/support/tickets/{ticket.ticket_id}/reissue",
        json={"reason": "phone stolen"},
        headers=stack.admin,
    )
    assert reissue.status_code == 202, reissue.text
    assert reissue.json()["generation"] == 1
    # The old code is refused at once, before the new one exists.
    old = await stack.scan(ticket.token)
    assert old.status_code == 409 and old.json()["type"].endswith("/ticket_revoked")

    owner = await bearer(stack.http, buyer, ["buyer"])

    async def new_token() -> str | None:
        r = await stack.http.get(f"/api/v1/tickets/{ticket.ticket_id}", headers=owner)
        assert r.status_code == 200, r.text
        value: str | None = r.json()["token"]
        return value

    deadline = time.monotonic() + 30
    token = await new_token()
    while token is None:
        assert time.monotonic() < deadline, "the issuer did not sign the reissued ticket"
        await asyncio.sleep(0.1)
        token = await new_token()
    assert token != ticket.token
    claims = verify_ticket(token, jwks([stack.pem]))
    assert (claims.ticket, claims.seat, claims.holder, claims.gen) == (
        ticket.ticket_id,
        ticket.seat_id,
        buyer,
        1,
    )
    snapshot = await stack.http.get(f"/api/v1/events/{stack.event_id}/gate", headers=stack.scanner)
    assert {"ticket_id": ticket.ticket_id, "generation": 1} in snapshot.json()["reissued"]

    assert (await stack.scan(token)).status_code == 201
    assert (await stack.scan(ticket.token)).json()["type"].endswith("/ticket_revoked")
    # An admitted ticket is not reissued (it would enter twice).
    late = await stack.http.post(
        f"/api/v1/support/tickets/{ticket.ticket_id}/reissue",
        json={"reason": "again"},
        headers=stack.admin,
    )
    assert late.status_code == 409
    assert [e["action"] for e in await stack.audit(ticket_id=ticket.ticket_id)] == ["reissue"]


async def test_manual_admit_keeps_the_reason_and_admits_once(stack: Stack) -> None:
    [ticket] = await stack.sell(f"ines-{RUN}")
    path = f"/api/v1/support/tickets/{ticket.ticket_id}/admit"
    no_reason = await stack.http.post(path, json={"gate": "vip"}, headers=stack.admin)
    assert no_reason.status_code == 422 and no_reason.json()["field"] == "reason"
    admitted = await stack.http.post(
        path, json={"gate": "vip", "reason": "phone dead, ID checked"}, headers=stack.admin
    )
    assert admitted.status_code == 201, admitted.text
    assert admitted.json()["gate"] == "vip"
    used = await stack.scan(ticket.token)
    assert used.status_code == 409 and used.json()["gate"] == "vip"
    twice = await stack.http.post(
        path, json={"gate": "vip", "reason": "again"}, headers=stack.admin
    )
    assert twice.status_code == 409 and twice.json()["type"].endswith("/already_used")
    conn = await asyncpg.connect(stack.dsn)
    try:
        reason = await conn.fetchval(
            "SELECT manual_reason FROM orders.checkins WHERE ticket_id = $1", ticket.ticket_id
        )
    finally:
        await conn.close()
    assert reason == "phone dead, ID checked"
    entries = await stack.audit(ticket_id=ticket.ticket_id)
    assert [(e["action"], e["details"]) for e in entries] == [("manual_admit", {"gate": "vip"})]
    log = await stack.http.get(
        f"/api/v1/events/{stack.event_id}/scans", params={"gate": "vip"}, headers=stack.scanner
    )
    assert [(e["result"], e["scanner"]) for e in log.json()["items"]][-1] == (
        "admitted",
        f"agent-{RUN}",
    )


async def test_resend_by_support_is_audited(stack: Stack) -> None:
    buyer = f"juan-{RUN}"
    [ticket] = await stack.sell(buyer)
    path = f"/api/v1/support/orders/{ticket.order_id}/resend"
    no_address = await stack.http.post(path, json={"reason": "asked by phone"}, headers=stack.admin)
    assert no_address.status_code == 409
    owner = await bearer(stack.http, buyer, ["buyer"])
    await stack.http.put(
        "/api/v1/me/contact", json={"email": f"{buyer}@example.test"}, headers=owner
    )
    queued = await stack.http.post(path, json={"reason": "asked by phone"}, headers=stack.admin)
    assert queued.status_code == 202, queued.text
    [entry] = await stack.audit(order_id=ticket.order_id)
    assert (entry["action"], entry["reason"], entry["details"]) == (
        "resend",
        "asked by phone",
        {"request_id": queued.json()["request_id"]},
    )
