"""The holds API over real HTTP: the API as a Granian process, a freshly seeded event in
the session database, the real Redis Cluster inventory and the catalog's prices."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from core.inventory import SINGLE_PARTITION, Inventory, partition_keys
from core.settings import Settings
from migrations.inventory import read_partition_plans, rebuild_inventory
from migrations.seed import SeedEvent, seed, seed_event
from tests.integration.api_servers import granian_server, with_overrides
from tests.integration.catalog_seed import cluster_client, restart_event_ids

pytestmark = pytest.mark.slow

BASE_PRICE = 10_000  # 100.00 PEN: VIP 200.00, PLATINUM 150.00, GENERAL 100.00


class Seeded:
    def __init__(self, event_id: int, seats: dict[str, str]) -> None:
        self.event_id = event_id
        self.seats = seats  # seat -> category

    def of(self, category: str) -> list[str]:
        return [s for s, c in self.seats.items() if c == category]


@pytest.fixture(scope="module")
async def seeded(pg_dsn: str, services: dict[str, str]) -> AsyncIterator[Seeded]:
    await restart_event_ids(pg_dsn)
    client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await client.initialize()
    event = SeedEvent(
        slug=f"holds-api-{datetime.now(UTC).timestamp():.0f}",
        title="Holds API test",
        category="CONCERT",
        venue="Test Hall",
        address="Loopback 1",
        starts_at=datetime.now(UTC) + timedelta(days=30),
        base_price_minor=BASE_PRICE,
        capacity=200,
    )
    report = await seed(pg_dsn, Inventory(client), [event])
    event_id = report.created[0][0]
    seats: dict[str, str] = {}
    conn = await asyncpg.connect(pg_dsn)
    try:
        for row in await conn.fetch(
            "SELECT seat_id, category FROM catalog.seats WHERE event_id = $1", event_id
        ):
            seats[row["seat_id"]] = row["category"]
    finally:
        await conn.close()
    yield Seeded(event_id, seats)
    for key in partition_keys(event_id, 0):
        await client.delete(key)
    await client.aclose()


class EventMaker:
    """Adds events to the session database after the API started (so the API learns of
    them only through its catalog), with their inventory loaded; cleans Redis up."""

    def __init__(self, dsn: str, client: Any) -> None:
        self.dsn = dsn
        self.client = client
        self.made: list[tuple[int, int]] = []  # (event id, partitions)

    async def add(
        self,
        name: str,
        *,
        sale_opens_in: timedelta = timedelta(days=-1),
        sale_closes_in: timedelta | None = None,
        status: str = "published",
        partition_of_section: dict[str, int] | None = None,
    ) -> Seeded:
        """A 200-seat event starting in 30 days; ``partition_of_section`` maps a section
        code's first digit (price level: "1" VIP, "2" PLATINUM, "3" GENERAL) to a partition."""
        now = datetime.now(UTC)
        event = SeedEvent(
            slug=f"{name}-{now.timestamp():.0f}-{len(self.made)}",
            title=f"Holds API {name}",
            category="CONCERT",
            venue="Test Hall",
            address="Loopback 1",
            starts_at=now + timedelta(days=30),
            base_price_minor=BASE_PRICE,
            capacity=200,
        )
        conn = await asyncpg.connect(self.dsn)
        try:
            event_id, _ = await seed_event(conn, event, now + sale_opens_in)
            closes = now + sale_closes_in if sale_closes_in is not None else event.starts_at
            await conn.execute(
                "UPDATE catalog.events SET sale_opens_at = $2, sale_closes_at = $3, status = $4"
                " WHERE id = $1",
                event_id,
                now + sale_opens_in,
                closes,
                status,
            )
            partitions = 1
            if partition_of_section:
                partitions = max(partition_of_section.values()) + 1
                await conn.execute(
                    "UPDATE catalog.events SET partitions = $2 WHERE id = $1", event_id, partitions
                )
                for level, partition in partition_of_section.items():
                    await conn.execute(
                        "UPDATE catalog.sections SET partition = $3"
                        " WHERE event_id = $1 AND left(code, 1) = $2",
                        event_id,
                        level,
                        partition,
                    )
            self.made.append((event_id, partitions))
            plans = await read_partition_plans(conn)
            inventory = Inventory(self.client, plans=lambda e: plans.get(e, SINGLE_PARTITION))
            report = await rebuild_inventory(conn, inventory, event_id)
            assert report.partitions == partitions and report.seats == 200
            rows = await conn.fetch(
                "SELECT seat_id, category FROM catalog.seats WHERE event_id = $1", event_id
            )
        finally:
            await conn.close()
        return Seeded(event_id, {r["seat_id"]: r["category"] for r in rows})

    async def drop(self) -> None:
        for event_id, partitions in self.made:
            for partition in range(partitions):
                for key in partition_keys(event_id, partition):
                    await self.client.delete(key)


@pytest.fixture
async def events(pg_dsn: str, services: dict[str, str]) -> AsyncIterator[EventMaker]:
    client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await client.initialize()
    maker = EventMaker(pg_dsn, client)
    try:
        yield maker
    finally:
        await maker.drop()
        await client.aclose()


@pytest.fixture(scope="module")
def api_url(
    seeded: Seeded, settings: Settings, pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    config = with_overrides(
        settings,
        database={"url": pg_dsn},
        api={"rate_limit_enabled": False},
        holds={"ttl_s": 600, "max_seats_per_buyer": 6, "max_seats_per_hold": 6},
    )
    log = Path(tmp_path_factory.mktemp("holds-api")) / "api.log"
    with granian_server(config, log) as server:
        yield server.base_url


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


async def token(
    http: httpx.AsyncClient, sub: str, roles: list[str] | None = None
) -> dict[str, str]:
    body: dict[str, Any] = {"sub": sub}
    if roles is not None:
        body["roles"] = roles
    response = await http.post("/api/v1/auth/dev-token", json=body)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://ticketbuster.dev/problems/{code}", body
    return body


async def test_hold_explicit_seats_with_prices(http: httpx.AsyncClient, seeded: Seeded) -> None:
    alice = await token(http, "alice-api")
    vip, general = seeded.of("VIP")[0], seeded.of("GENERAL")[0]
    response = await http.post(
        f"/api/v1/events/{seeded.event_id}/holds", json={"seats": [vip, general]}, headers=alice
    )
    assert response.status_code == 201, response.text
    hold = response.json()
    assert response.headers["location"] == f"/api/v1/holds/{hold['hold_id']}"
    assert hold["event_id"] == seeded.event_id
    assert hold["seats"] == [
        {"seat_id": vip, "category": "VIP", "price_minor": 20_000},
        {"seat_id": general, "category": "GENERAL", "price_minor": 10_000},
    ]
    assert hold["total_minor"] == 30_000 and hold["currency"] == "PEN"
    assert hold["expires_at"] - hold["created_at"] == 600_000
    assert hold["max_expires_at"] - hold["created_at"] == 1_200_000

    got = await http.get(f"/api/v1/holds/{hold['hold_id']}", headers=alice)
    assert got.status_code == 200 and got.json() == hold

    # Someone else: the seats are taken (409 naming them) and the hold is not theirs (404).
    bob = await token(http, "bob-api")
    taken = await http.post(
        f"/api/v1/events/{seeded.event_id}/holds", json={"seats": [general]}, headers=bob
    )
    assert problem(taken, 409, "seat_unavailable")["seats"] == [general]
    problem(await http.get(f"/api/v1/holds/{hold['hold_id']}", headers=bob), 404, "not_found")
    problem(await http.delete(f"/api/v1/holds/{hold['hold_id']}", headers=bob), 404, "not_found")

    extended = await http.post(f"/api/v1/holds/{hold['hold_id']}/extend", headers=alice)
    assert extended.status_code == 200, extended.text
    assert hold["expires_at"] <= extended.json()["expires_at"] <= hold["max_expires_at"]

    released = await http.delete(f"/api/v1/holds/{hold['hold_id']}", headers=alice)
    assert released.status_code == 204
    problem(await http.get(f"/api/v1/holds/{hold['hold_id']}", headers=alice), 404, "not_found")
    again = await http.post(
        f"/api/v1/events/{seeded.event_id}/holds", json={"seats": [general]}, headers=bob
    )
    assert again.status_code == 201
    await http.delete(f"/api/v1/holds/{again.json()['hold_id']}", headers=bob)


async def test_hold_best_available(http: httpx.AsyncClient, seeded: Seeded) -> None:
    carol = await token(http, "carol-api")
    response = await http.post(
        f"/api/v1/events/{seeded.event_id}/holds",
        json={"quantity": 3, "category": "PLATINUM"},
        headers=carol,
    )
    assert response.status_code == 201, response.text
    hold = response.json()
    assert [s["category"] for s in hold["seats"]] == ["PLATINUM"] * 3
    assert hold["total_minor"] == 3 * 15_000
    rows = {s["seat_id"].rsplit("-", 1)[0] for s in hold["seats"]}
    numbers = [int(s["seat_id"].rsplit("-", 1)[1]) for s in hold["seats"]]
    assert len(rows) == 1 and numbers == list(range(numbers[0], numbers[0] + 3))
    await http.delete(f"/api/v1/holds/{hold['hold_id']}", headers=carol)


async def test_bad_requests(http: httpx.AsyncClient, seeded: Seeded) -> None:
    dave = await token(http, "dave-api")
    url = f"/api/v1/events/{seeded.event_id}/holds"
    seat = seeded.of("GENERAL")[5]
    for body in (
        {},
        {"seats": []},
        {"seats": [seat], "quantity": 1, "category": "VIP"},
        {"quantity": 2},
        {"seats": ["not a seat"]},
        # Loose spellings of a real seat: one seat has one id (core.seats).
        {"seats": [seat + "\n"]},
        {"seats": ["{}-0{}".format(*seat.rsplit("-", 1))]},
        {"seats": [seat] * 2},
        {"seats": seeded.of("GENERAL")[:7]},
        {"quantity": 0, "category": "VIP"},
        {"quantity": 2, "category": "NOPE"},
    ):
        problem(await http.post(url, json=body, headers=dave), 422, "invalid_input")
    unknown = await http.post(url, json={"seats": ["ZZ-Z-1"]}, headers=dave)
    assert problem(unknown, 422, "invalid_input")["seats"] == ["ZZ-Z-1"]
    extra = await http.post(url, json={"seats": [seat], "price": 1}, headers=dave)
    problem(extra, 422, "invalid_input")  # unknown fields are refused
    problem(await http.post(url, json={"seats": [seat]}), 401, "unauthorized")
    problem(
        await http.post(
            "/api/v1/events/999999999999999/holds", json={"seats": [seat]}, headers=dave
        ),
        404,
        "not_found",
    )
    problem(await http.get("/api/v1/holds/not-a-hold", headers=dave), 422, "invalid_input")
    problem(
        await http.get(f"/api/v1/holds/h{seeded.event_id}.0.0123456789abcdef", headers=dave),
        404,
        "not_found",
    )


async def test_buyer_limit_is_429(http: httpx.AsyncClient, seeded: Seeded) -> None:
    erin = await token(http, "erin-api")
    url = f"/api/v1/events/{seeded.event_id}/holds"
    general = seeded.of("GENERAL")
    first = await http.post(url, json={"seats": general[20:26]}, headers=erin)
    assert first.status_code == 201, first.text
    over = await http.post(url, json={"seats": general[30:31]}, headers=erin)
    body = problem(over, 429, "limit_exceeded")
    assert body["limit"] == 6 and body["used"] == 6
    await http.delete(f"/api/v1/holds/{first.json()['hold_id']}", headers=erin)


async def test_many_buyers_race_for_one_seat_over_http(
    http: httpx.AsyncClient, seeded: Seeded
) -> None:
    seat = seeded.of("GENERAL")[40]
    headers = await asyncio.gather(*(token(http, f"racer-{i}") for i in range(40)))
    responses = await asyncio.gather(
        *(
            http.post(f"/api/v1/events/{seeded.event_id}/holds", json={"seats": [seat]}, headers=h)
            for h in headers
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 39


async def test_hold_metrics_are_exported(http: httpx.AsyncClient, seeded: Seeded) -> None:
    frank = await token(http, "frank-api")
    ok = await http.post(
        f"/api/v1/events/{seeded.event_id}/holds",
        json={"seats": [seeded.of("VIP")[9]]},
        headers=frank,
    )
    assert ok.status_code == 201, ok.text
    await http.delete(f"/api/v1/holds/{ok.json()['hold_id']}", headers=frank)
    await http.post(
        f"/api/v1/events/{seeded.event_id}/holds", json={"seats": ["ZZ-Z-9"]}, headers=frank
    )
    text = (await http.get("/metrics")).text
    assert 'ticketbuster_holds_total{result="invalid"}' in text
    assert 'ticketbuster_holds_total{result="ok"}' in text
    assert "ticketbuster_hold_duration_seconds_bucket" in text


# -- the sale window ------------------------------------------------------------------------


async def test_seed_events_are_on_sale(http: httpx.AsyncClient, seeded: Seeded) -> None:
    event = (await http.get(f"/api/v1/events/{seeded.event_id}")).json()
    now = datetime.now(UTC)
    assert event["status"] == "published"
    assert datetime.fromisoformat(event["sale_opens_at"]) <= now
    assert now < datetime.fromisoformat(event["sale_closes_at"])
    gina = await token(http, "gina-api")
    held = await http.post(
        f"/api/v1/events/{seeded.event_id}/holds",
        json={"quantity": 1, "category": "GENERAL"},
        headers=gina,
    )
    assert held.status_code == 201, held.text
    await http.delete(f"/api/v1/holds/{held.json()['hold_id']}", headers=gina)


async def test_no_hold_before_the_sale_opens(http: httpx.AsyncClient, events: EventMaker) -> None:
    soon = await events.add("not-open", sale_opens_in=timedelta(days=2))
    hank = await token(http, "hank-api")
    url = f"/api/v1/events/{soon.event_id}/holds"
    opens = (await http.get(f"/api/v1/events/{soon.event_id}")).json()["sale_opens_at"]
    for body in ({"seats": soon.of("VIP")[:2]}, {"quantity": 2, "category": "GENERAL"}):
        refused = problem(await http.post(url, json=body, headers=hank), 409, "sale_not_open")
        assert refused["title"] == "Sale not open yet"
        assert datetime.fromisoformat(refused["sale_opens_at"]) == datetime.fromisoformat(opens)
        assert "opens at" in refused["detail"]
    # Nothing was held: every seat of the event is still free.
    seat_map = (await http.get(f"/api/v1/events/{soon.event_id}/seats")).json()
    assert {c for s in seat_map["sections"] for r in s["rows"] for c in r["status"]} == {"f"}


async def test_no_hold_after_the_sale_closes_or_when_cancelled(
    http: httpx.AsyncClient, events: EventMaker
) -> None:
    ended = await events.add(
        "ended", sale_opens_in=timedelta(days=-3), sale_closes_in=timedelta(minutes=-1)
    )
    cancelled = await events.add("cancelled", status="cancelled")
    ivan = await token(http, "ivan-api")
    for event, reason in ((ended, "ended"), (cancelled, "cancelled")):
        url = f"/api/v1/events/{event.event_id}/holds"
        for body in ({"seats": event.of("GENERAL")[:1]}, {"quantity": 1, "category": "VIP"}):
            refused = problem(await http.post(url, json=body, headers=ivan), 409, "sale_closed")
            assert refused["reason"] == reason


# -- events split over several inventory partitions -----------------------------------------


async def test_a_two_partition_event_end_to_end(
    http: httpx.AsyncClient, events: EventMaker
) -> None:
    # Created after the API started: it learns of the split from its catalog, not at startup.
    split = await events.add("split", partition_of_section={"1": 0, "2": 0, "3": 1})
    url = f"/api/v1/events/{split.event_id}/holds"
    event = (await http.get(f"/api/v1/events/{split.event_id}")).json()
    assert event["partitions"] == 2
    free = {p["code"]: p["available"] for p in event["prices"]}
    assert free == {"VIP": 20, "PLATINUM": 60, "GENERAL": 120}  # both partitions counted

    jane, kim = await token(http, "jane-api"), await token(http, "kim-api")
    vip, general = split.of("VIP")[0], split.of("GENERAL")[0]
    front = await http.post(url, json={"seats": [vip]}, headers=jane)
    assert front.status_code == 201, front.text
    assert front.json()["hold_id"].startswith(f"h{split.event_id}.0.")
    back = await http.post(url, json={"seats": [general]}, headers=kim)
    assert back.status_code == 201, back.text
    assert back.json()["hold_id"].startswith(f"h{split.event_id}.1.")
    best = await http.post(url, json={"quantity": 2, "category": "GENERAL"}, headers=jane)
    assert best.status_code == 201, best.text
    assert best.json()["hold_id"].startswith(f"h{split.event_id}.1.")
    best_seats = [s["seat_id"] for s in best.json()["seats"]]

    # Conflicts are found in the seat's own partition; one hold never spans two.
    taken = await http.post(url, json={"seats": [general]}, headers=jane)
    assert problem(taken, 409, "seat_unavailable")["seats"] == [general]
    across = await http.post(
        url, json={"seats": [split.of("VIP")[1], split.of("GENERAL")[5]]}, headers=kim
    )
    problem(across, 422, "invalid_input")

    # The seat map merges both partitions; so does availability.
    seat_map = (await http.get(f"/api/v1/events/{split.event_id}/seats")).json()
    assert len(seat_map["version"].split(",")) == 2
    held = {
        f"{section['code']}-{run['row']}-{run['first'] + i}"
        for section in seat_map["sections"]
        for run in section["rows"]
        for i, code in enumerate(run["status"])
        if code == "h"
    }
    assert held == {vip, general, *best_seats}
    event = (await http.get(f"/api/v1/events/{split.event_id}")).json()
    free = {p["code"]: p["available"] for p in event["prices"]}
    assert free == {"VIP": 19, "PLATINUM": 60, "GENERAL": 117}

    # Holds of either partition are read, extended and released by their id.
    for hold, owner in ((front, jane), (back, kim), (best, jane)):
        hold_url = f"/api/v1/holds/{hold.json()['hold_id']}"
        assert (await http.get(hold_url, headers=owner)).status_code == 200
        assert (await http.post(f"{hold_url}/extend", headers=owner)).status_code == 200
        assert (await http.delete(hold_url, headers=owner)).status_code == 204
    event = (await http.get(f"/api/v1/events/{split.event_id}")).json()
    assert {p["code"]: p["available"] for p in event["prices"]} == {
        "VIP": 20,
        "PLATINUM": 60,
        "GENERAL": 120,
    }


# -- the edge's direct hold route (api/direct.py) ----------------------------------------
#
# The edge's direct hold route answers exactly as the Litestar route does.
#
# Two real Granian APIs over the same database and Redis Cluster: one with the direct route
# (``api/direct.py``, the default), one with ``TB_API_DIRECT_ROUTES=false`` (every
# request through Litestar). The same sequence of hold attempts - good ones, taken seats,
# limits, bad bodies, odd ids, no token, a wrong role, a closed sale - goes to each in turn,
# and the answers must be the same: status, media type, the headers' names, the body (ids
# and times aside). The direct API's ``ticketbuster_direct_route_total`` shows which of the
# attempts it served itself, so the comparison is not between two Litestar answers.

# Headers whose values differ per request or per process; their presence still counts.
VOLATILE = {"date", "x-request-id", "server"}
# Body members that differ per attempt: ids, server times.
VOLATILE_BODY = {"hold_id", "created_at", "expires_at", "max_expires_at", "request_id"}


@pytest.fixture(scope="module")
def servers(
    seeded: Seeded, settings: Settings, pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    logs = Path(tmp_path_factory.mktemp("direct-holds"))
    urls: dict[str, str] = {}
    base = with_overrides(
        settings,
        database={"url": pg_dsn},
        api={"max_body_bytes": 2048},
        holds={"ttl_s": 600, "max_seats_per_buyer": 4, "max_seats_per_hold": 4},
    )
    direct = with_overrides(base, api={"direct_routes": True})
    litestar = with_overrides(base, api={"direct_routes": False})
    with (
        granian_server(direct, logs / "direct.log") as one,
        granian_server(litestar, logs / "litestar.log") as two,
    ):
        urls["direct"], urls["litestar"] = one.base_url, two.base_url
        yield urls


@pytest.fixture
async def clients(servers: dict[str, str]) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=servers["direct"], timeout=30) as direct,
        httpx.AsyncClient(base_url=servers["litestar"], timeout=30) as litestar,
    ):
        yield {"direct": direct, "litestar": litestar}


def answer(response: httpx.Response) -> dict[str, Any]:
    """What must be the same on both routes."""
    body: Any = None
    if response.content:
        body = response.json()
        if isinstance(body, dict):
            body = {k: ("*" if k in VOLATILE_BODY else v) for k, v in body.items()}
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE}
    if "location" in headers:
        headers["location"] = re.sub(r"/(holds|orders)/.+$", r"/\1/*", headers["location"])
    for name in ("ratelimit", "ratelimit-remaining", "ratelimit-reset", "retry-after"):
        if name in headers:
            headers[name] = "*"
    return {"status": response.status_code, "headers": headers, "body": body}


async def direct_counts(
    http: httpx.AsyncClient, route: str = "/api/v1/events/{event_id:int}/holds"
) -> dict[str, float]:
    """``ticketbuster_direct_route_total`` of one route, by outcome."""
    text = (await http.get("/metrics")).text
    counts = {"served": 0.0, "handed_on": 0.0}
    for line in text.splitlines():
        if line.startswith("ticketbuster_direct_route_total{") and f'route="{route}"' in line:
            outcome = line.partition('outcome="')[2].partition('"')[0]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    return counts


async def sequence(
    http: httpx.AsyncClient, seeded: Seeded, closed: Seeded, who: str
) -> list[tuple[str, dict[str, Any]]]:
    """The attempts, in order; every hold made is released at the end."""
    url = f"/api/v1/events/{seeded.event_id}/holds"
    vip, general = seeded.of("VIP")[:2], seeded.of("GENERAL")[:5]
    alice = await token(http, f"alice-{who}")
    bob = await token(http, f"bob-{who}")
    carol = await token(http, f"carol-{who}")
    staff = await token(http, f"staff-{who}", roles=["scanner"])
    out: list[tuple[str, dict[str, Any]]] = []
    made: list[tuple[str, dict[str, str]]] = []

    async def post(name: str, headers: dict[str, str], path: str = url, **kw: Any) -> None:
        response = await http.post(path, headers=headers, **kw)
        out.append((name, answer(response)))
        if response.status_code == 201:
            made.append((response.json()["hold_id"], headers))

    await post("seats", alice, json={"seats": [vip[0], general[0]]})
    await post("taken", bob, json={"seats": [general[0], general[1]]})
    await post("best", bob, json={"quantity": 2, "category": "PLATINUM"})
    await post("over the buyer's limit", bob, json={"seats": general[2:5]})
    await post("unknown category", carol, json={"quantity": 1, "category": "BALCONY"})
    await post("both shapes", carol, json={"seats": [general[3]], "quantity": 1})
    await post("neither shape", carol, json={})
    await post("unknown seat", carol, json={"seats": ["Z-99-99"]})
    await post("duplicate seats", carol, json={"seats": [vip[1], vip[1]]})
    await post("unknown field", carol, json={"seats": [vip[1]], "price": 1})
    await post("a string for a number", carol, json={"quantity": "2", "category": "VIP"})
    await post("malformed json", carol, content=b'{"seats": [')
    await post("too large", carol, content=b'{"seats": ["' + b"x" * 4096 + b'"]}')
    await post("no token", {}, json={"seats": [vip[1]]})
    await post("bad token", {"Authorization": "Bearer abc.def.ghi"}, json={"seats": [vip[1]]})
    await post("wrong role", staff, json={"seats": [vip[1]]})
    await post("unknown event", carol, f"/api/v1/events/{10**15}/holds", json={"seats": [vip[1]]})
    await post("leading zero", carol, f"/api/v1/events/0{seeded.event_id}/holds", json={})
    await post("event zero", carol, "/api/v1/events/0/holds", json={"seats": [vip[1]]})
    await post(
        "sale closed",
        carol,
        f"/api/v1/events/{closed.event_id}/holds",
        json={"seats": [closed.of("VIP")[0]]},
    )
    await post(
        "cross-origin",
        {**carol, "Origin": "http://localhost:8000"},
        json={"seats": [general[4]]},
    )
    await post(
        "foreign origin", {**alice, "Origin": "https://evil.example"}, json={"seats": [vip[0]]}
    )
    for hold_id, headers in made:
        released = await http.delete(f"/api/v1/holds/{hold_id}", headers=headers)
        assert released.status_code == 204, released.text
    return out


async def test_the_direct_route_answers_as_litestar_does(
    clients: dict[str, httpx.AsyncClient], seeded: Seeded, events: EventMaker
) -> None:
    closed = await events.add("closed", sale_closes_in=timedelta(minutes=-1))
    before = await direct_counts(clients["direct"])
    direct = await sequence(clients["direct"], seeded, closed, "d")
    after = await direct_counts(clients["direct"])
    litestar = await sequence(clients["litestar"], seeded, closed, "l")

    assert [name for name, _ in direct] == [name for name, _ in litestar]
    for (name, one), (_, two) in zip(direct, litestar, strict=True):
        assert one == two, f"{name}: direct {one} != litestar {two}"
    statuses = {name: a["status"] for name, a in direct}
    made = (statuses["seats"], statuses["best"], statuses["cross-origin"])
    assert made == (201, 201, 201), sorted(statuses.items())
    assert statuses["taken"] == 409 and statuses["over the buyer's limit"] == 429
    assert statuses["no token"] == 401 and statuses["wrong role"] == 403
    assert statuses["too large"] == 413 and statuses["sale closed"] == 409
    # The direct API served the well-formed attempts itself and handed on the rest.
    served = after["served"] - before["served"]
    handed_on = after["handed_on"] - before["handed_on"]
    assert served == 13, (served, statuses)
    assert handed_on == 7, (handed_on, statuses)
    litestar_counts = await direct_counts(clients["litestar"])
    assert litestar_counts == {"served": 0.0, "handed_on": 0.0}
