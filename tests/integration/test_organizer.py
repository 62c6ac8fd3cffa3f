"""The organizer API on real servers: the app in process with its real lifespan (Redis
Cluster, PostgreSQL, Kafka) and the real persister, so an order placed on an event made
through the API ends as tickets in PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from core.errors import SaleClosed
from core.inventory import Inventory, partition_keys
from core.settings import Settings
from migrations.inventory import rebuild_inventory
from tests.integration.api_servers import api_client, with_overrides
from tests.integration.catalog_seed import cluster_client, restart_event_ids
from workers.expirer import Reconciler
from workers.persister import create_persister
from workers.runtime import ensure_topics

pytestmark = pytest.mark.slow


@dataclass
class Ctx:
    http: Any
    dsn: str
    redis: Any
    events: list[int]
    settings: Settings

    async def token(self, sub: str, roles: list[str], org: str | None = None) -> dict[str, str]:
        body: dict[str, Any] = {"sub": sub, "roles": roles}
        if org is not None:
            body["org"] = org
        r = await self.http.post("/api/v1/auth/dev-token", json=body)
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture(scope="module")
async def ctx(settings: Settings, pg_dsn: str, services: dict[str, str]) -> AsyncIterator[Ctx]:
    config = with_overrides(settings, database={"url": pg_dsn}, api={"rate_limit_enabled": False})
    await restart_event_ids(pg_dsn)  # event ids no other run uses in the shared Redis
    await ensure_topics(config)
    redis = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    persister = create_persister(with_overrides(config, workers={"persister_port": 0}))
    await persister.start()
    events: list[int] = []
    try:
        async with api_client(config) as http:
            yield Ctx(http=http, dsn=pg_dsn, redis=redis, events=events, settings=config)
    finally:
        await persister.stop()
        for event_id in events:
            for partition in range(4):
                for key in partition_keys(event_id, partition):
                    await redis.delete(key)
        await redis.aclose()


def seat_map(categories: tuple[str, str] = ("FRONT", "BACK")) -> dict[str, Any]:
    """Two sections; numbering with gaps; wheelchair spaces with companions."""
    front, back = categories
    return {
        "sections": [
            {
                "code": "A",
                "name": "Stalls",
                "rows": [
                    {
                        "label": "1",
                        "seats": [
                            {"number": 1, "category": front, "wheelchair": True},
                            {"number": 2, "category": front, "companion": True},
                            *({"number": n, "category": front} for n in (3, 4, 5, 7, 8)),
                        ],
                    },
                    {
                        "label": "2",
                        "seats": [{"number": n, "category": front} for n in range(1, 9)],
                    },
                ],
            },
            {
                "code": "B",
                "name": "Balcony",
                "rows": [
                    {"label": "1", "seats": [{"number": n, "category": back} for n in range(1, 11)]}
                ],
            },
        ]
    }


async def make_org(ctx: Ctx, admin: dict[str, str]) -> str:
    code = f"org-{uuid.uuid4().hex[:8]}"
    r = await ctx.http.post(
        "/api/v1/organizer/organizations", json={"code": code, "name": code}, headers=admin
    )
    assert r.status_code == 201, r.text
    return code


async def make_venue(ctx: Ctx, who: dict[str, str]) -> int:
    r = await ctx.http.post(
        "/api/v1/organizer/venues",
        json={"name": f"Hall {uuid.uuid4().hex[:8]}", "address": "Av. Loopback 1"},
        headers=who,
    )
    assert r.status_code == 201, r.text
    venue_id = int(r.json()["id"])
    r = await ctx.http.put(
        f"/api/v1/organizer/venues/{venue_id}/seatmap", json=seat_map(), headers=who
    )
    assert r.status_code == 200, r.text
    assert r.json()["seats"] == 25 and r.json()["wheelchair"] == 1
    return venue_id


def event_body(venue_id: int, **extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "venue_id": venue_id,
        "title": "Organizer test night",
        "category": "CONCERT",
        "starts_at": (now + timedelta(days=30)).isoformat(),
        "sale_opens_at": (now - timedelta(minutes=5)).isoformat(),
        "sale_closes_at": (now + timedelta(days=29)).isoformat(),
        "price_categories": [
            {"code": "FRONT", "name": "Front", "price_minor": 25_000},
            {"code": "BACK", "name": "Back", "price_minor": 9_000},
        ],
        "buyer_limit": 4,
        "hold_ttl_s": 300,
        **extra,
    }


async def make_event(ctx: Ctx, who: dict[str, str], venue_id: int, **extra: Any) -> int:
    r = await ctx.http.post(
        "/api/v1/organizer/events", json=event_body(venue_id, **extra), headers=who
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "draft" and r.json()["capacity"] == 25
    event_id = int(r.json()["id"])
    ctx.events.append(event_id)
    return event_id


async def act(ctx: Ctx, who: dict[str, str], event_id: int, action: str) -> dict[str, Any]:
    r = await ctx.http.post(f"/api/v1/organizer/events/{event_id}/{action}", headers=who)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def buy(ctx: Ctx, buyer: dict[str, str], event_id: int, seats: list[str]) -> str:
    r = await ctx.http.post(
        f"/api/v1/events/{event_id}/holds", json={"seats": seats}, headers=buyer
    )
    assert r.status_code == 201, r.text
    r = await ctx.http.post(
        "/api/v1/orders",
        json={"hold_id": r.json()["hold_id"]},
        headers={**buyer, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 202, r.text
    return str(r.json()["order_id"])


async def order_status(ctx: Ctx, order_id: str) -> tuple[str, str | None]:
    """Wait for the persister's decision on the order (it is asynchronous)."""
    conn = await asyncpg.connect(ctx.dsn)
    try:
        for _ in range(300):
            row = await conn.fetchrow(
                "SELECT status, refund FROM orders.orders WHERE order_id = $1", uuid.UUID(order_id)
            )
            if row is not None:
                return row["status"], row["refund"]
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise AssertionError(f"order {order_id} was not persisted")


async def test_full_lifecycle_from_venue_to_tickets_and_report(ctx: Ctx) -> None:
    admin = await ctx.token("root", ["admin"])
    org = await make_org(ctx, admin)
    alice = await ctx.token("alice", ["organizer"], org)
    buyer = await ctx.token(f"fan-{uuid.uuid4().hex[:6]}", ["buyer"])
    venue_id = await make_venue(ctx, alice)
    event_id = await make_event(ctx, alice, venue_id, partitions={"A": 0, "B": 1})

    # A draft is not for sale, and not in the public catalog.
    r = await ctx.http.get(f"/api/v1/events/{event_id}")
    assert r.status_code == 404
    published = await act(ctx, alice, event_id, "publish")
    assert published["status"] == "published" and published["state"] == "on_sale"
    r = await ctx.http.get(f"/api/v1/events/{event_id}")
    assert r.status_code == 200, r.text
    r = await ctx.http.get(f"/api/v1/events/{event_id}/seats")
    assert r.status_code == 200
    assert sum(len(row["status"]) for s in r.json()["sections"] for row in s["rows"]) == 25

    order_id = await buy(ctx, buyer, event_id, ["A-1-3", "A-1-4"])
    assert await order_status(ctx, order_id) == ("confirmed", None)
    # Balcony is the second partition of the plan: a hold there works as well.
    r = await ctx.http.post(
        f"/api/v1/events/{event_id}/holds", json={"seats": ["B-1-5"]}, headers=buyer
    )
    assert r.status_code == 201, r.text

    r = await ctx.http.get(f"/api/v1/organizer/events/{event_id}/report", headers=alice)
    assert r.status_code == 200, r.text
    report = r.json()
    front = next(c for c in report["categories"] if c["code"] == "FRONT")
    back = next(c for c in report["categories"] if c["code"] == "BACK")
    assert (front["sold"], front["held"], front["free"], front["revenue_minor"]) == (
        2, 0, 13, 50_000,
    )  # fmt: skip
    assert (back["sold"], back["held"], back["free"]) == (0, 1, 9)
    assert report["orders_confirmed"] == 1 and report["hold_to_order"] == 0.5
    assert report["timeline"][-1] == 1
    r = await ctx.http.get(f"/api/v1/organizer/events/{event_id}/report?format=csv", headers=alice)
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("category,name,price_minor,seats,sold,held")
    assert lines[-1] == "TOTAL,,,25,2,1,0,22,50000,0,0"

    # Pause: holds refused at once; resume: on sale again; close: over.
    await act(ctx, alice, event_id, "pause")
    r = await ctx.http.post(
        f"/api/v1/events/{event_id}/holds", json={"seats": ["A-2-1"]}, headers=buyer
    )
    assert r.status_code == 409 and r.json()["type"].endswith("/sale_closed"), r.text
    assert r.json()["reason"] == "paused"
    await act(ctx, alice, event_id, "resume")
    r = await ctx.http.post(
        f"/api/v1/events/{event_id}/holds", json={"seats": ["A-2-1"]}, headers=buyer
    )
    assert r.status_code == 201, r.text
    closed = await act(ctx, alice, event_id, "close")
    assert closed["status"] == "closed"
    r = await ctx.http.post(f"/api/v1/organizer/events/{event_id}/resume", headers=alice)
    assert r.status_code == 409 and "closed" in r.json()["detail"]

    # Every action is in the audit log, with who did it and the state before and after.
    r = await ctx.http.get(f"/api/v1/organizer/audit?resource=event:{event_id}", headers=alice)
    assert r.status_code == 200
    actions = [e["action"] for e in r.json()["items"]]
    assert actions == [
        "event.close", "event.resume", "event.pause", "event.publish", "event.create",
    ]  # fmt: skip
    close = r.json()["items"][0]
    assert close["actor"] == "alice" and close["before"]["status"] == "published"
    assert close["after"]["status"] == "closed"


async def test_the_events_own_hold_ttl_and_buyer_limit_apply(ctx: Ctx) -> None:
    admin = await ctx.token("root", ["admin"])
    org = await make_org(ctx, admin)
    hana = await ctx.token("hana", ["organizer"], org)
    buyer = await ctx.token(f"fan-{uuid.uuid4().hex[:6]}", ["buyer"])
    event_id = await make_event(ctx, hana, await make_venue(ctx, hana), buyer_limit=3)
    await act(ctx, hana, event_id, "publish")
    url = f"/api/v1/events/{event_id}/holds"
    r = await ctx.http.post(url, json={"seats": ["A-2-1", "A-2-2"]}, headers=buyer)
    assert r.status_code == 201, r.text
    assert r.json()["expires_at"] - r.json()["created_at"] == 300_000  # hold_ttl_s 300
    r = await ctx.http.post(url, json={"seats": ["A-2-3", "A-2-4"]}, headers=buyer)
    assert r.status_code == 429 and r.json()["limit"] == 3, r.text
    r = await ctx.http.post(url, json={"quantity": 2, "category": "BACK"}, headers=buyer)
    assert r.status_code == 429 and r.json()["limit"] == 3, r.text
    r = await ctx.http.post(url, json={"seats": ["A-2-3"]}, headers=buyer)
    assert r.status_code == 201
    r = await ctx.http.post(
        "/api/v1/organizer/events", json=event_body(1, hold_ttl_s=3600), headers=hana
    )
    assert r.status_code == 422 and r.json()["field"] == "hold_ttl_s"
    await act(ctx, hana, event_id, "cancel")


async def test_best_available_keeps_wheelchair_and_companion_seats_for_those_who_ask(
    ctx: Ctx,
) -> None:
    """The map's A-1-1 is a wheelchair space and A-1-2 its companion seat (row A-1 is
    1 2 3 4 5 _ 7 8). The event starts in 30 days, far beyond the release time."""
    admin = await ctx.token("root", ["admin"])
    org = await make_org(ctx, admin)
    ivan = await ctx.token("ivan", ["organizer"], org)
    event_id = await make_event(ctx, ivan, await make_venue(ctx, ivan))
    await act(ctx, ivan, event_id, "publish")
    url = f"/api/v1/events/{event_id}/holds"
    fan = await ctx.token(f"fan-{uuid.uuid4().hex[:6]}", ["buyer"])
    r = await ctx.http.post(url, json={"quantity": 2, "category": "FRONT"}, headers=fan)
    assert r.status_code == 201, r.text
    assert [s["seat_id"] for s in r.json()["seats"]] == ["A-1-7", "A-1-8"]
    guest = await ctx.token(f"fan-{uuid.uuid4().hex[:6]}", ["buyer"])
    r = await ctx.http.post(
        url, json={"quantity": 3, "category": "FRONT", "accessible": True}, headers=guest
    )
    assert r.status_code == 409 and r.json()["type"].endswith("/seat_unavailable"), r.text
    r = await ctx.http.post(
        url, json={"quantity": 2, "category": "FRONT", "accessible": True}, headers=guest
    )
    assert r.status_code == 201, r.text
    assert [s["seat_id"] for s in r.json()["seats"]] == ["A-1-1", "A-1-2"]
    accessible_hold = r.json()["hold_id"]
    r = await ctx.http.post(url, json={"seats": ["A-2-1"], "accessible": True}, headers=guest)
    assert r.status_code == 422 and r.json()["field"] == "accessible"
    r = await ctx.http.delete(f"/api/v1/holds/{accessible_hold}", headers=guest)
    assert r.status_code == 204
    # While reserved, a request that did not ask skips them; once the release time has
    # passed (reserved_until 0), best available may hand them to anyone.
    inventory = Inventory(ctx.redis)
    reserved = int(time.time() * 1000) + 60_000
    kept = await inventory.hold_best(event_id, "FRONT", 2, "late-a", reserved_until_ms=reserved)
    assert kept.seats == ["A-2-1", "A-2-2"]  # A-1-3..5 would leave a single seat
    await inventory.release(kept.hold_id, "late-a")
    released = await inventory.hold_best(event_id, "FRONT", 2, "late-b", reserved_until_ms=0)
    assert released.seats == ["A-1-1", "A-1-2"]
    await act(ctx, ivan, event_id, "cancel")


async def test_pause_shuts_the_inventory_itself_not_only_the_catalog(ctx: Ctx) -> None:
    """The gate lives in the event's slot: a hold straight at the inventory (as every API
    process does once its catalog cache says "published") is refused from the moment
    pause returns."""
    admin = await ctx.token("root", ["admin"])
    org = await make_org(ctx, admin)
    bob = await ctx.token("bob", ["organizer"], org)
    event_id = await make_event(ctx, bob, await make_venue(ctx, bob))
    await act(ctx, bob, event_id, "publish")
    inventory = Inventory(ctx.redis)
    hold = await inventory.hold(event_id, ["A-2-2"], "buyer-x")
    await act(ctx, bob, event_id, "pause")
    with pytest.raises(SaleClosed) as refused:
        await inventory.hold(event_id, ["A-2-3"], "buyer-x")
    assert refused.value.extra["reason"] == "paused"
    with pytest.raises(SaleClosed):
        await inventory.hold_best(event_id, "FRONT", 2, "buyer-x")
    # A hold made before the pause may still be bought (the buyer was mid-checkout).
    confirmed = await inventory.confirm(hold.hold_id, "buyer-x", str(uuid.uuid4()))
    assert confirmed.seats == ["A-2-2"]
    # Redis loses everything; the rebuild from PostgreSQL keeps the paused sale shut.
    for key in partition_keys(event_id, 0):
        await ctx.redis.delete(key)
    conn = await asyncpg.connect(ctx.dsn)
    try:
        report = await rebuild_inventory(conn, inventory, event_id)
    finally:
        await conn.close()
    assert report.seats == 25
    with pytest.raises(SaleClosed):
        await inventory.hold(event_id, ["A-2-3"], "buyer-x")
    # The expirer and the reconciler keep watching a paused event (holds to expire,
    # orders to settle), and a cancelled one.
    pool = await asyncpg.create_pool(ctx.dsn, min_size=1, max_size=1)
    try:
        reconciler = Reconciler(ctx.settings, None, pool, ctx.redis)  # type: ignore[arg-type]
        assert (event_id, 0) in await reconciler.partitions()
        await act(ctx, bob, event_id, "resume")
        assert (await inventory.hold(event_id, ["A-2-3"], "buyer-x")).seats == ["A-2-3"]
        await act(ctx, bob, event_id, "cancel")
        assert (event_id, 0) in await reconciler.partitions()
    finally:
        await pool.close()


async def test_cancel_during_a_live_sale(ctx: Ctx) -> None:
    admin = await ctx.token("root", ["admin"])
    org = await make_org(ctx, admin)
    carol = await ctx.token("carol", ["organizer"], org)
    buyer = await ctx.token(f"fan-{uuid.uuid4().hex[:6]}", ["buyer"])
    event_id = await make_event(ctx, carol, await make_venue(ctx, carol))
    await act(ctx, carol, event_id, "publish")
    sold = await buy(ctx, buyer, event_id, ["B-1-1", "B-1-2"])
    assert (await order_status(ctx, sold))[0] == "confirmed"
    r = await ctx.http.post(
        f"/api/v1/events/{event_id}/holds", json={"seats": ["B-1-5"]}, headers=buyer
    )
    assert r.status_code == 201
    mid_checkout = r.json()["hold_id"]

    cancelled = await act(ctx, carol, event_id, "cancel")
    assert cancelled["status"] == "cancelled" and cancelled["refunds_due"] == 1
    # Sales stop at once: no hold, and no order of a hold made before.
    r = await ctx.http.post(
        f"/api/v1/events/{event_id}/holds", json={"seats": ["B-1-6"]}, headers=buyer
    )
    assert r.status_code == 409 and r.json()["reason"] == "cancelled", r.text
    r = await ctx.http.post(
        "/api/v1/orders",
        json={"hold_id": mid_checkout},
        headers={**buyer, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 409 and r.json()["reason"] == "cancelled", r.text
    assert await order_status(ctx, sold) == ("confirmed", "due")
    r = await ctx.http.post(f"/api/v1/organizer/events/{event_id}/publish", headers=carol)
    assert r.status_code == 409


async def test_map_edits_that_lose_sold_seats_are_refused(ctx: Ctx) -> None:
    admin = await ctx.token("root", ["admin"])
    org = await make_org(ctx, admin)
    dan = await ctx.token("dan", ["organizer"], org)
    buyer = await ctx.token(f"fan-{uuid.uuid4().hex[:6]}", ["buyer"])
    venue_id = await make_venue(ctx, dan)
    event_id = await make_event(ctx, dan, venue_id)
    await act(ctx, dan, event_id, "publish")
    order_id = await buy(ctx, buyer, event_id, ["A-1-7", "A-1-8"])
    assert (await order_status(ctx, order_id))[0] == "confirmed"

    r = await ctx.http.get(f"/api/v1/organizer/venues/{venue_id}/seatmap", headers=dan)
    tag = r.headers["etag"]
    layout = r.json()
    # Renumber row A-1 (7, 8 -> 6, 7) and drop nothing else: the sold A-1-8 would vanish.
    row = layout["sections"][0]["rows"][0]
    row["seats"] = [*row["seats"][:5], {"number": 6, "category": "FRONT"},
                    {"number": 7, "category": "FRONT"}]  # fmt: skip
    r = await ctx.http.put(
        f"/api/v1/organizer/venues/{venue_id}/seatmap",
        json=layout,
        headers={**dan, "If-Match": tag},
    )
    assert r.status_code == 409, r.text
    assert r.json()["type"].endswith("/sold_seats") and r.json()["seats"] == ["A-1-8"]
    # Nothing was written: the map and its ETag are as before.
    r = await ctx.http.get(f"/api/v1/organizer/venues/{venue_id}/seatmap", headers=dan)
    assert r.headers["etag"] == tag and r.json() == seat_map()
    # Adding seats keeps the sold ones: accepted.
    grown = seat_map()
    grown["sections"][1]["rows"].append(
        {"label": "2", "seats": [{"number": 1, "category": "BACK"}]}
    )
    r = await ctx.http.put(
        f"/api/v1/organizer/venues/{venue_id}/seatmap", json=grown, headers={**dan, "If-Match": tag}
    )
    assert r.status_code == 200 and r.json()["seats"] == 26
    # The event's own map is frozen once published.
    r = await ctx.http.get(f"/api/v1/organizer/events/{event_id}", headers=dan)
    r = await ctx.http.put(
        f"/api/v1/organizer/events/{event_id}/seatmap",
        json=seat_map(),
        headers={**dan, "If-Match": r.headers["etag"]},
    )
    assert r.status_code == 409 and "frozen" in r.json()["detail"]


async def test_stale_and_missing_etags_are_refused(ctx: Ctx) -> None:
    admin = await ctx.token("root", ["admin"])
    org = await make_org(ctx, admin)
    one = await ctx.token("erin", ["organizer"], org)
    two = await ctx.token("frank", ["organizer"], org)
    venue_id = await make_venue(ctx, one)
    r = await ctx.http.get(f"/api/v1/organizer/venues/{venue_id}", headers=one)
    tag = r.headers["etag"]
    url = f"/api/v1/organizer/venues/{venue_id}"
    r = await ctx.http.patch(url, json={"address": "Jr. Uno 1"}, headers=one)
    assert r.status_code == 428, r.text
    r = await ctx.http.patch(url, json={"address": "Jr. Uno 1"}, headers={**one, "If-Match": tag})
    assert r.status_code == 200 and r.headers["etag"] != tag
    r = await ctx.http.patch(url, json={"address": "Jr. Dos 2"}, headers={**two, "If-Match": tag})
    assert r.status_code == 412 and r.json()["type"].endswith("/precondition_failed")
    r = await ctx.http.get(url, headers=two)
    assert r.json()["address"] == "Jr. Uno 1"

    # Two imports of the map from the same read: one wins, the other gets 412.
    r = await ctx.http.get(f"{url}/seatmap", headers=one)
    map_tag = r.headers["etag"]
    results = await asyncio.gather(
        *(
            ctx.http.put(f"{url}/seatmap", json=seat_map(), headers={**who, "If-Match": map_tag})
            for who in (one, two)
        )
    )
    assert sorted(x.status_code for x in results) == [200, 412]
    r = await ctx.http.put(f"{url}/seatmap", json=seat_map(), headers=one)
    assert r.status_code == 428


async def test_tenant_isolation(ctx: Ctx) -> None:
    admin = await ctx.token("root", ["admin"])
    a, b = await make_org(ctx, admin), await make_org(ctx, admin)
    alice = await ctx.token("alice", ["organizer"], a)
    mallory = await ctx.token("mallory", ["organizer"], b)
    venue_id = await make_venue(ctx, alice)
    event_id = await make_event(ctx, alice, venue_id)
    r = await ctx.http.get(f"/api/v1/organizer/events/{event_id}", headers=alice)
    tag = r.headers["etag"]
    base = "/api/v1/organizer"
    attempts = [
        ctx.http.get(f"{base}/venues/{venue_id}", headers=mallory),
        ctx.http.get(f"{base}/venues/{venue_id}/seatmap", headers=mallory),
        ctx.http.patch(
            f"{base}/venues/{venue_id}", json={"name": "Mine"}, headers={**mallory, "If-Match": "*"}
        ),
        ctx.http.put(
            f"{base}/venues/{venue_id}/seatmap", json=seat_map(),
            headers={**mallory, "If-Match": "*"},
        ),
        ctx.http.get(f"{base}/events/{event_id}", headers=mallory),
        ctx.http.get(f"{base}/events/{event_id}/report", headers=mallory),
        ctx.http.get(f"{base}/events/{event_id}/seatmap", headers=mallory),
        ctx.http.patch(
            f"{base}/events/{event_id}", json={"title": "x"}, headers={**mallory, "If-Match": tag}
        ),
        ctx.http.post(f"{base}/events/{event_id}/publish", headers=mallory),
        ctx.http.post(f"{base}/events/{event_id}/cancel", headers=mallory),
        ctx.http.post(f"{base}/events", json=event_body(venue_id), headers=mallory),
    ]  # fmt: skip
    for response in await asyncio.gather(*attempts):
        assert response.status_code == 404, (response.request.url, response.text)
    for path in ("venues", "events", "audit"):
        r = await ctx.http.get(f"{base}/{path}", headers=mallory)
        assert r.status_code == 200
        assert str(venue_id) not in r.text.replace(" ", "") or path == "audit"
        items = r.json()["items"] if path == "audit" else r.json()
        assert all(i["organization"] == b for i in items)
    r = await ctx.http.get(f"{base}/events/{event_id}", headers=alice)
    assert r.json()["status"] == "draft"  # mallory's cancel changed nothing
    # The admin sees both organizations' resources.
    r = await ctx.http.get(f"{base}/events/{event_id}/report", headers=admin)
    assert r.status_code == 200
    # A buyer or an organizer without an organization is not an organizer.
    buyer = await ctx.token("fan", ["buyer"])
    assert (await ctx.http.get(f"{base}/venues", headers=buyer)).status_code == 403
    r = await ctx.http.post("/api/v1/auth/dev-token", json={"sub": "x", "roles": ["organizer"]})
    assert r.status_code == 422 and r.json()["field"] == "org"
    r = await ctx.http.post(
        f"{base}/organizations", json={"code": "sneaky", "name": "x"}, headers=alice
    )
    assert r.status_code == 403
    await act(ctx, alice, event_id, "cancel")


async def test_bad_input_names_the_field(ctx: Ctx) -> None:
    admin = await ctx.token("root", ["admin"])
    org = await make_org(ctx, admin)
    gina = await ctx.token("gina", ["organizer"], org)
    venue_id = await make_venue(ctx, gina)
    url = f"/api/v1/organizer/venues/{venue_id}/seatmap"
    bad = seat_map()
    bad["sections"][0]["rows"][1]["seats"][3]["number"] = 2  # 1, 2, 3, 2: not increasing
    r = await ctx.http.put(url, json=bad, headers={**gina, "If-Match": "*"})
    assert r.status_code == 422 and r.json()["field"] == "sections[0].rows[1].seats[3].number"
    bad = seat_map()
    bad["sections"][1]["rows"][0]["label"] = "too-long"
    r = await ctx.http.put(url, json=bad, headers={**gina, "If-Match": "*"})
    assert r.status_code == 422 and "sections[1].rows[0].label" in r.json()["field"], r.text
    csv_bad = "section,section_name,row,number,category,wheelchair,companion\r\nA,S,1,x,FRONT,,\r\n"
    r = await ctx.http.put(
        url, content=csv_bad, headers={**gina, "If-Match": "*", "Content-Type": "text/csv"}
    )
    assert r.status_code == 422 and r.json()["field"] == "line 2: number", r.text
    checks = [
        ({"currency": "USD"}, "currency"),
        ({"sale_closes_at": "2020-01-01T00:00:00Z"}, "sale_closes_at"),
        ({"partitions": {"Z": 1}}, "partitions"),
        ({"partitions": {"A": 2}}, "partitions"),
        ({"price_categories": [{"code": "FRONT", "name": "F", "price_minor": 1}]},
         "price_categories"),
        ({"buyer_limit": 0}, "buyer_limit"),
        ({"category": "NOPE"}, "category"),
    ]  # fmt: skip
    for change, field in checks:
        r = await ctx.http.post(
            "/api/v1/organizer/events", json=event_body(venue_id, **change), headers=gina
        )
        assert r.status_code == 422, (change, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert field in (r.json().get("field") or ""), (change, r.json())


async def test_seed_map_round_trips_through_the_api(ctx: Ctx) -> None:
    """A seeded event's map, exported as CSV, imported into a venue, exported again."""
    import dataclasses

    from migrations.seed import read_csv, seed_event

    admin = await ctx.token("root", ["admin"])
    seed = next(e for e in read_csv() if e.capacity <= 3000)
    event = dataclasses.replace(
        seed,
        slug=f"{seed.slug}-{uuid.uuid4().hex[:6]}",
        venue=f"{seed.venue} {uuid.uuid4().hex[:6]}",
    )
    conn = await asyncpg.connect(ctx.dsn)
    try:
        event_id, _ = await seed_event(conn, event, datetime.now(UTC))
    finally:
        await conn.close()
    url = f"/api/v1/organizer/events/{event_id}/seatmap"
    csv_export = await ctx.http.get(f"{url}?format=csv", headers=admin)
    assert csv_export.status_code == 200, csv_export.text
    assert csv_export.text.count("\n") == seed.capacity + 1
    json_export = (await ctx.http.get(url, headers=admin)).json()
    r = await ctx.http.post(
        "/api/v1/organizer/venues",
        json={"name": f"Copy {uuid.uuid4().hex[:8]}", "address": "x", "organization": "default"},
        headers=admin,
    )
    venue_id = r.json()["id"]
    r = await ctx.http.put(
        f"/api/v1/organizer/venues/{venue_id}/seatmap",
        content=csv_export.content,
        headers={**admin, "Content-Type": "text/csv"},
    )
    assert r.status_code == 200 and r.json()["seats"] == seed.capacity, r.text
    again = await ctx.http.get(f"/api/v1/organizer/venues/{venue_id}/seatmap", headers=admin)
    assert again.json() == json_export
    again_csv = await ctx.http.get(
        f"/api/v1/organizer/venues/{venue_id}/seatmap", headers={**admin, "Accept": "text/csv"}
    )
    assert again_csv.text == csv_export.text
