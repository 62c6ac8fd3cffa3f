"""Check-in at the gate against the real API, PostgreSQL and Redis Cluster: a scanner
session bound to an event and a gate, the refusals (another event, cancelled, over,
revoked), the scan log, per-gate counts, the offline snapshot and the metric."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.inventory import partition_keys
from core.settings import Settings
from tests.integration.api_servers import api_client, with_overrides
from tests.integration.catalog_seed import cluster_client, seed_test_event
from tests.integration.sold_tickets import SoldTicket, move_event_to_the_past, sell, signing_pem

RUN = uuid.uuid4().hex[:6]


@dataclass
class Gate:
    http: Any
    dsn: str
    pem: bytes
    redis: Any
    seats: dict[int, list[str]]  # event id -> its free seats
    events: list[int]

    async def event(self) -> int:
        event_id, seats = await seed_test_event(
            self.dsn,
            self.redis,
            name="Gate test",
            address="Loopback 2",
            days_ahead=1,
            base_price_minor=5_000,
            capacity=40,
        )
        self.seats[event_id] = sorted(seats)
        self.events.append(event_id)
        return event_id

    async def sell(self, event_id: int, n: int = 1, buyer: str = "") -> list[SoldTicket]:
        seats, self.seats[event_id] = self.seats[event_id][:n], self.seats[event_id][n:]
        return await sell(self.dsn, event_id, seats, buyer or f"fan-{RUN}", self.pem)


@pytest.fixture(scope="module")
async def gate(
    settings: Settings, pg_dsn: str, services: dict[str, str], tmp_path_factory: Any
) -> AsyncIterator[Gate]:
    key_path = Path(tmp_path_factory.mktemp("gate-keys")) / "signing.pem"
    pem = signing_pem(key_path)
    config = with_overrides(
        settings,
        database={"url": pg_dsn},
        api={"rate_limit_enabled": False},
        tickets={"signing_key_path": str(key_path)},
    )
    redis = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    state = Gate(None, pg_dsn, pem, redis, {}, [])
    try:
        async with api_client(config) as http:
            state.http = http
            yield state
    finally:
        for event_id in state.events:
            for key in partition_keys(event_id, 0):
                await redis.delete(key)
        await redis.aclose()


async def bearer(http: Any, sub: str, roles: list[str]) -> dict[str, str]:
    r = await http.post("/api/v1/auth/dev-token", json={"sub": sub, "roles": roles})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def scan(
    gate: Gate, headers: dict[str, str], token: str, event_id: int, at: str = "north-1"
) -> Any:
    return await gate.http.post(
        "/api/v1/checkins",
        json={"token": token, "event_id": event_id, "gate": at},
        headers=headers,
    )


async def sql(dsn: str, query: str, *args: Any) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(query, *args)
    finally:
        await conn.close()


async def test_admits_once_and_names_the_first_gate(gate: Gate) -> None:
    event_id = await gate.event()
    ticket = (await gate.sell(event_id))[0]
    staff = await bearer(gate.http, f"ana-{RUN}", ["scanner"])
    first = await scan(gate, staff, ticket.token, event_id, "north-1")
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["ticket_id"], body["gate"], body["status"]) == (
        ticket.ticket_id,
        "north-1",
        "admitted",
    )
    again = await scan(gate, staff, ticket.token, event_id, "south-2")
    assert again.status_code == 409
    problem = again.json()
    assert problem["type"].endswith("/already_used")
    assert problem["gate"] == "north-1"
    assert problem["checked_in_at"] == body["checked_in_at"]


async def test_concurrent_scans_at_two_gates_admit_once(gate: Gate) -> None:
    event_id = await gate.event()
    ticket = (await gate.sell(event_id))[0]
    staff = await bearer(gate.http, f"bea-{RUN}", ["scanner"])
    answers = await asyncio.gather(
        *(scan(gate, staff, ticket.token, event_id, f"g{i % 2}") for i in range(10))
    )
    assert sorted(a.status_code for a in answers) == [201] + [409] * 9


async def test_a_ticket_of_another_event_is_refused_and_not_admitted(gate: Gate) -> None:
    concert, other = await gate.event(), await gate.event()
    ticket = (await gate.sell(concert))[0]
    staff = await bearer(gate.http, f"carla-{RUN}", ["scanner"])
    wrong = await scan(gate, staff, ticket.token, other)
    assert wrong.status_code == 409
    problem = wrong.json()
    assert problem["type"].endswith("/wrong_event")
    assert (problem["ticket_event_id"], problem["event_id"]) == (concert, other)
    assert str(concert) in problem["detail"]
    # Refused, not spent: at its own event's gate it enters.
    assert (await scan(gate, staff, ticket.token, concert)).status_code == 201


async def test_cancelled_over_and_revoked_tickets_are_refused(gate: Gate) -> None:
    staff = await bearer(gate.http, f"dora-{RUN}", ["scanner"])
    cancelled = await gate.event()
    ticket = (await gate.sell(cancelled))[0]
    await sql(gate.dsn, "UPDATE catalog.events SET status = 'cancelled' WHERE id = $1", cancelled)
    r = await scan(gate, staff, ticket.token, cancelled)
    assert r.status_code == 409 and r.json()["type"].endswith("/event_cancelled"), r.text

    over = await gate.event()
    ticket = (await gate.sell(over))[0]
    await move_event_to_the_past(gate.dsn, over, days=3)
    r = await scan(gate, staff, ticket.token, over)
    assert r.status_code == 409 and r.json()["type"].endswith("/event_over"), r.text
    assert r.json()["admits_until"] > 0

    live = await gate.event()
    revoked, kept = await gate.sell(live, 2)
    await sql(
        gate.dsn,
        "UPDATE orders.tickets SET revoked_at = now() WHERE ticket_id = $1",
        revoked.ticket_id,
    )
    r = await scan(gate, staff, revoked.token, live)
    assert r.status_code == 409 and r.json()["type"].endswith("/ticket_revoked"), r.text
    assert (await scan(gate, staff, kept.token, live)).status_code == 201


async def test_the_session_must_name_its_event_and_gate(gate: Gate) -> None:
    event_id = await gate.event()
    ticket = (await gate.sell(event_id))[0]
    staff = await bearer(gate.http, f"eva-{RUN}", ["scanner"])
    missing = await gate.http.post("/api/v1/checkins", json={"token": ticket.token}, headers=staff)
    assert missing.status_code == 422
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["field"] == "event_id"
    for bad in ("", "x" * 41, "north/1", " lead"):
        r = await scan(gate, staff, ticket.token, event_id, bad)
        assert r.status_code == 422, bad
        assert r.json()["field"] == "gate"
    # Refused requests did not admit it.
    assert (await scan(gate, staff, ticket.token, event_id)).status_code == 201


async def test_scan_log_counts_and_metric(gate: Gate) -> None:
    event_id = await gate.event()
    a, b, c = await gate.sell(event_id, 3)
    ana = await bearer(gate.http, f"ana-{RUN}", ["scanner"])
    ben = await bearer(gate.http, f"ben-{RUN}", ["scanner"])
    assert (await scan(gate, ana, a.token, event_id, "north-1")).status_code == 201
    assert (await scan(gate, ana, a.token, event_id, "north-1")).status_code == 409
    assert (await scan(gate, ben, b.token, event_id, "south-2")).status_code == 201
    assert (await scan(gate, ben, "not.a.ticket", event_id, "south-2")).status_code == 422
    assert (await scan(gate, ben, c.token, event_id, "south-2")).status_code == 201

    log = await gate.http.get(f"/api/v1/events/{event_id}/scans", headers=ana)
    assert log.status_code == 200, log.text
    items = log.json()["items"]
    assert [(i["gate"], i["scanner"], i["result"], i["ticket_id"]) for i in items] == [
        ("south-2", f"ben-{RUN}", "admitted", c.ticket_id),
        ("south-2", f"ben-{RUN}", "invalid_ticket", None),
        ("south-2", f"ben-{RUN}", "admitted", b.ticket_id),
        ("north-1", f"ana-{RUN}", "already_used", a.ticket_id),
        ("north-1", f"ana-{RUN}", "admitted", a.ticket_id),
    ]
    assert all(i["scanned_at"] > 0 for i in items)

    # Filtered by gate, and paged.
    north = await gate.http.get(
        f"/api/v1/events/{event_id}/scans", params={"gate": "north-1", "limit": 1}, headers=ana
    )
    page = north.json()
    assert [i["result"] for i in page["items"]] == ["already_used"]
    rest = await gate.http.get(
        f"/api/v1/events/{event_id}/scans",
        params={"gate": "north-1", "cursor": page["next_cursor"]},
        headers=ana,
    )
    assert [i["result"] for i in rest.json()["items"]] == ["admitted"]
    assert rest.json()["next_cursor"] is None
    for bad in ("³", "-1", "x", "9" * 20):
        r = await gate.http.get(
            f"/api/v1/events/{event_id}/scans", params={"cursor": bad}, headers=ana
        )
        assert r.status_code == 422 and r.json()["field"] == "cursor", bad

    counts = (await gate.http.get(f"/api/v1/events/{event_id}/gates", headers=ana)).json()
    assert (counts["sold"], counts["admitted"]) == (3, 3)
    assert [(g["gate"], g["admitted"], g["refused"]) for g in counts["gates"]] == [
        ("north-1", 1, 1),
        ("south-2", 2, 1),
    ]

    metrics = (await gate.http.get("/metrics")).text
    assert 'ticketbuster_gate_scans_total{gate="south-2",result="admitted"}' in metrics
    assert 'ticketbuster_gate_scans_total{gate="north-1",result="already_used"}' in metrics


async def test_scans_judged_offline_join_the_log(gate: Gate) -> None:
    event_id = await gate.event()
    ticket = (await gate.sell(event_id))[0]
    staff = await bearer(gate.http, f"gus-{RUN}", ["scanner"])
    scanned = 1_795_000_000_000
    report = await gate.http.post(
        f"/api/v1/events/{event_id}/scans",
        json=[
            {"gate": "east", "result": "wrong_event", "scanned_at": scanned},
            {
                "gate": "east",
                "result": "already_used",
                "scanned_at": scanned + 1,
                "ticket_id": ticket.ticket_id,
                "seat_id": ticket.seat_id,
            },
        ],
        headers=staff,
    )
    assert report.status_code == 201, report.text
    assert report.json() == {"recorded": 2}
    log = (await gate.http.get(f"/api/v1/events/{event_id}/scans", headers=staff)).json()
    assert [(i["result"], i["ticket_id"], i["device_at"], i["scanner"]) for i in log["items"]] == [
        ("already_used", ticket.ticket_id, scanned + 1, f"gus-{RUN}"),
        ("wrong_event", None, scanned, f"gus-{RUN}"),
    ]
    # They admit nothing: the ticket still enters.
    assert (await scan(gate, staff, ticket.token, event_id, "east")).status_code == 201
    # Only refusals: an "admitted" report is not a check-in.
    bad = await gate.http.post(
        f"/api/v1/events/{event_id}/scans",
        json=[{"gate": "east", "result": "admitted", "scanned_at": scanned}],
        headers=staff,
    )
    assert bad.status_code == 422, bad.text
    assert bad.json()["type"].endswith("/invalid_input") and "admitted" in bad.json()["detail"]
    buyer = await bearer(gate.http, f"hal-{RUN}", ["buyer"])
    assert (
        await gate.http.post(f"/api/v1/events/{event_id}/scans", json=[], headers=buyer)
    ).status_code == 403


async def test_snapshot_for_offline_scanners(gate: Gate) -> None:
    event_id = await gate.event()
    first, second, revoked = await gate.sell(event_id, 3)
    staff = await bearer(gate.http, f"flor-{RUN}", ["scanner"])
    assert (await scan(gate, staff, first.token, event_id, "east")).status_code == 201
    snap = (await gate.http.get(f"/api/v1/events/{event_id}/gate", headers=staff)).json()
    assert snap["event"]["event_id"] == event_id and snap["event"]["status"] == "published"
    assert snap["event"]["admits_until"] > snap["event"]["starts_at"]
    assert [(a["ticket_id"], a["gate"]) for a in snap["admitted"]] == [(first.ticket_id, "east")]
    assert snap["revoked"] == []

    # Only what changed since the last pull (plus a few seconds of overlap).
    await sql(
        gate.dsn,
        "UPDATE orders.tickets SET revoked_at = now() WHERE ticket_id = $1",
        revoked.ticket_id,
    )
    assert (await scan(gate, staff, second.token, event_id, "west")).status_code == 201
    changes = (
        await gate.http.get(
            f"/api/v1/events/{event_id}/gate", params={"since": snap["as_of"]}, headers=staff
        )
    ).json()
    assert second.ticket_id in {a["ticket_id"] for a in changes["admitted"]}
    assert changes["revoked"] == [revoked.ticket_id]
    later = (
        await gate.http.get(
            f"/api/v1/events/{event_id}/gate",
            params={"since": changes["as_of"] + 60_000},
            headers=staff,
        )
    ).json()
    assert later["admitted"] == [] and later["revoked"] == []

    missing = await gate.http.get("/api/v1/events/999999999/gate", headers=staff)
    assert missing.status_code == 404


async def test_buyers_cannot_scan_or_read_the_log(gate: Gate) -> None:
    event_id = await gate.event()
    ticket = (await gate.sell(event_id))[0]
    buyer = await bearer(gate.http, f"gil-{RUN}", ["buyer"])
    assert (await scan(gate, buyer, ticket.token, event_id)).status_code == 403
    for path in ("scans", "gates", "gate"):
        r = await gate.http.get(f"/api/v1/events/{event_id}/{path}", headers=buyer)
        assert r.status_code == 403, path
    assert (await gate.http.get(f"/api/v1/events/{event_id}/scans")).status_code == 401


async def test_a_refunded_ticket_is_refused_online_and_listed_for_offline_scanners(
    gate: Gate,
) -> None:
    event_id = await gate.event()
    refunded, kept = await gate.sell(event_id, 2)
    staff = await bearer(gate.http, f"gus-{RUN}", ["scanner"])
    before = (await gate.http.get(f"/api/v1/events/{event_id}/gate", headers=staff)).json()
    admin = await bearer(gate.http, f"ada-{RUN}", ["admin"])
    r = await gate.http.post(
        f"/api/v1/organizer/orders/{refunded.order_id}/refunds",
        json={"ticket_ids": [refunded.ticket_id], "reason": "gate test"},
        headers=admin,
    )
    assert r.status_code == 202, r.text
    r = await scan(gate, staff, refunded.token, event_id)
    assert r.status_code == 409 and r.json()["type"].endswith("/ticket_revoked"), r.text
    changes = (
        await gate.http.get(
            f"/api/v1/events/{event_id}/gate", params={"since": before["as_of"]}, headers=staff
        )
    ).json()
    assert changes["revoked"] == [refunded.ticket_id]
    assert (await scan(gate, staff, kept.token, event_id)).status_code == 201
    # An admitted ticket is not refundable any more.
    r = await gate.http.post(
        f"/api/v1/organizer/orders/{kept.order_id}/refunds",
        json={"ticket_ids": [kept.ticket_id]},
        headers=admin,
    )
    assert r.status_code == 409 and r.json()["type"].endswith("/refund_refused"), r.text
