"""The orders API without the workers: intake, pending reads, validation, ownership.

The API runs in-process with its real lifespan (Redis Cluster, PostgreSQL, Tansu). No
persister runs in this module, so a placed order stays pending here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest

from core.inventory import partition_keys
from core.orders import OrderPlaced
from core.settings import Settings
from tests.integration.api_servers import api_client, with_overrides
from tests.integration.catalog_seed import cluster_client, seed_test_event
from tests.integration.test_orders_support import TopicReader

# Buyers unique to this run: Redis (shared between runs) keeps per-user records.
RUN = uuid.uuid4().hex[:8]


class Ctx(msgspec.Struct):
    http: Any
    event_id: int
    seats: dict[str, str]
    prices: dict[str, int]
    settings: Any


@pytest.fixture(scope="module")
async def ctx(settings: Settings, pg_dsn: str, services: dict[str, str]) -> AsyncIterator[Ctx]:
    config = with_overrides(settings, database={"url": pg_dsn}, api={"rate_limit_enabled": False})
    redis = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    event_id, seats = await seed_test_event(
        pg_dsn,
        redis,
        name="Orders API",
        address="Loopback 2",
        days_ahead=20,
        base_price_minor=12_345,
        capacity=60,
    )
    conn = await asyncpg.connect(pg_dsn)
    try:
        prices = {
            r["code"]: r["price_minor"]
            for r in await conn.fetch(
                "SELECT code, price_minor FROM catalog.price_categories WHERE event_id = $1",
                event_id,
            )
        }
    finally:
        await conn.close()
    try:
        async with api_client(config) as http:
            yield Ctx(http=http, event_id=event_id, seats=seats, prices=prices, settings=config)
    finally:
        for key in partition_keys(event_id, 0):
            await redis.delete(key)
        await redis.aclose()


async def auth(http: Any, sub: str) -> dict[str, str]:
    r = await http.post("/api/v1/auth/dev-token", json={"sub": sub})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


_used: set[str] = set()


async def hold(ctx: Ctx, headers: dict[str, str], n: int) -> dict[str, Any]:
    seats = [s for s in sorted(ctx.seats) if s not in _used][:n]
    _used.update(seats)
    r = await ctx.http.post(
        f"/api/v1/events/{ctx.event_id}/holds", json={"seats": seats}, headers=headers
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_order_is_pending_priced_by_the_catalog_and_published(ctx: Ctx) -> None:
    ana = await auth(ctx.http, f"ana-orders-{RUN}")
    held = await hold(ctx, ana, 3)
    r = await ctx.http.post(
        "/api/v1/orders",
        json={"hold_id": held["hold_id"]},
        headers={**ana, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 202, r.text
    order_id = r.json()["order_id"]
    assert r.json() == {"order_id": order_id, "status": "pending"}
    assert r.headers["location"] == f"/api/v1/orders/{order_id}"  # where to poll

    view = (await ctx.http.get(f"/api/v1/orders/{order_id}", headers=ana)).json()
    assert view["status"] == "pending"
    expected = {s["seat_id"]: ctx.prices[ctx.seats[s["seat_id"]]] for s in held["seats"]}
    assert {s["seat_id"]: s["price"] for s in view["seats"]} == expected
    assert view["total"] == sum(expected.values()) and view["currency"] == "PEN"
    mine = (await ctx.http.get("/api/v1/me/orders", headers=ana)).json()["items"]
    assert [o["order_id"] for o in mine] == [order_id]

    # Not visible to anyone else; unknown ids are 404 too.
    ben = await auth(ctx.http, f"ben-orders-{RUN}")
    assert (await ctx.http.get(f"/api/v1/orders/{order_id}", headers=ben)).status_code == 404
    assert (await ctx.http.get("/api/v1/orders/not-a-uuid", headers=ana)).status_code == 404

    # The OrderPlaced on the wire: key = event id, catalog prices.
    placed = ctx.settings.kafka.topic_prefix + "orders.placed"
    async with TopicReader(ctx.settings.kafka.bootstrap, [placed]) as reader:
        messages = await reader.wait_for(
            lambda m: any(d.get("order_id") == order_id for _, d in m), 30
        )
    doc = next(d for _, d in messages if d.get("order_id") == order_id)
    event = msgspec.convert(doc, OrderPlaced)
    assert event.v == 1 and event.buyer == f"ana-orders-{RUN}" and event.total == view["total"]

    # The hold is consumed: buying it again is refused.
    again = await ctx.http.post(
        "/api/v1/orders",
        json={"hold_id": held["hold_id"]},
        headers={**ana, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert again.status_code in (404, 409, 410), again.text


async def test_idempotency_key_is_required_and_body_is_strict(ctx: Ctx) -> None:
    cy = await auth(ctx.http, f"cy-orders-{RUN}")
    held = await hold(ctx, cy, 1)
    r = await ctx.http.post("/api/v1/orders", json={"hold_id": held["hold_id"]}, headers=cy)
    assert r.status_code == 422
    r = await ctx.http.post(
        "/api/v1/orders",
        json={"hold_id": held["hold_id"], "price": 1},
        headers={**cy, "Idempotency-Key": "x"},
    )
    assert r.status_code in (400, 422)
    r = await ctx.http.post("/api/v1/orders", json={"hold_id": held["hold_id"]})
    assert r.status_code == 401


async def test_someone_elses_hold_cannot_be_bought(ctx: Ctx) -> None:
    dee = await auth(ctx.http, f"dee-orders-{RUN}")
    eve = await auth(ctx.http, f"eve-orders-{RUN}")
    held = await hold(ctx, dee, 1)
    r = await ctx.http.post(
        "/api/v1/orders",
        json={"hold_id": held["hold_id"]},
        headers={**eve, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 404, r.text
    r = await ctx.http.post(
        "/api/v1/orders",
        json={"hold_id": "h1.0.0123456789abcdef"},
        headers={**eve, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code in (404, 410), r.text


# -- the edge's direct order route (api/direct.py) ---------------------------------------


async def test_the_direct_order_route_answers_as_litestar_does(ctx: Ctx) -> None:
    """The same order requests to an API with the direct route (the default) and to one
    without (``TB_API_DIRECT_ROUTES=false``): the same answers, ids aside; the direct one
    served the well-formed requests itself (``ticketbuster_direct_route_total``)."""
    from tests.integration.test_inventory_api import answer, direct_counts

    litestar_settings = with_overrides(ctx.settings, api={"direct_routes": False})

    async def sequence(http: Any, who: str) -> list[tuple[str, dict[str, Any]]]:
        buyer = await auth(http, f"eq-{who}-{RUN}")
        other = await auth(http, f"eq-other-{who}-{RUN}")
        r = await http.post(
            "/api/v1/auth/dev-token", json={"sub": f"eq-scan-{who}-{RUN}", "roles": ["scanner"]}
        )
        scanner = {"Authorization": f"Bearer {r.json()['access_token']}"}
        on = Ctx(http=http, event_id=ctx.event_id, seats=ctx.seats, prices=ctx.prices,
                 settings=ctx.settings)  # fmt: skip
        first, second, theirs = [await hold(on, h, 1) for h in (buyer, buyer, other)]
        key = f"eq-key-{who}-{RUN}"
        out: list[tuple[str, dict[str, Any]]] = []

        async def post(name: str, headers: Any, **kw: Any) -> None:
            response = await http.post("/api/v1/orders", headers=headers, **kw)
            got = answer(response)
            if isinstance(got["body"], dict):
                if "order_id" in got["body"]:
                    got["body"]["order_id"] = "*"
                if isinstance(got["body"].get("detail"), str):  # hold ids differ per run
                    got["body"]["detail"] = re.sub(r"h\d+\.\d+\.\w+", "h*", got["body"]["detail"])
            out.append((name, got))

        ok = {"hold_id": first["hold_id"]}
        await post("order", {**buyer, "Idempotency-Key": key}, json=ok)
        await post("replay", {**buyer, "Idempotency-Key": key}, json=ok)
        await post(
            "key reused", {**buyer, "Idempotency-Key": key}, json={"hold_id": second["hold_id"]}
        )
        await post("no key", buyer, json={"hold_id": second["hold_id"]})
        await post("key too long", {**buyer, "Idempotency-Key": "k" * 201}, json=ok)
        await post(
            "two keys",
            [*buyer.items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
            json={"hold_id": second["hold_id"]},
        )
        await post(
            "someone else's hold",
            {**buyer, "Idempotency-Key": f"{key}-2"},
            json={"hold_id": theirs["hold_id"]},
        )
        await post("not a hold id", {**buyer, "Idempotency-Key": f"{key}-3"}, json={"hold_id": "x"})
        await post("malformed json", {**buyer, "Idempotency-Key": f"{key}-4"}, content=b"{")
        await post(
            "unknown field",
            {**buyer, "Idempotency-Key": f"{key}-5"},
            json={"hold_id": second["hold_id"], "price": 1},
        )
        await post("no token", {"Idempotency-Key": f"{key}-6"}, json=ok)
        await post("wrong role", {**scanner, "Idempotency-Key": f"{key}-7"}, json=ok)
        return out

    before = await direct_counts(ctx.http, "/api/v1/orders")
    direct = await sequence(ctx.http, "d")
    after = await direct_counts(ctx.http, "/api/v1/orders")
    async with api_client(litestar_settings) as http:
        litestar = await sequence(http, "l")

    for (name, one), (_, two) in zip(direct, litestar, strict=True):
        assert one == two, f"{name}: direct {one} != litestar {two}"
    statuses = {name: a["status"] for name, a in direct}
    assert statuses["order"] == statuses["replay"] == 202, statuses
    answers = dict(direct)
    assert answers["order"]["headers"]["location"] == "/api/v1/orders/*"
    assert answers["replay"]["headers"]["location"] == "/api/v1/orders/*"
    assert statuses["key reused"] == statuses["no key"] == 422, statuses
    assert statuses["no token"] == 401 and statuses["wrong role"] == 403, statuses
    served = after["served"] - before["served"]
    handed_on = after["handed_on"] - before["handed_on"]
    # Served: order, replay, key reused, no key, key too long, two keys (the in-process
    # client folds repeated headers into one "a, b"), someone else's, not a hold id.
    assert (served, handed_on) == (8, 4), (served, handed_on, statuses)


async def test_a_retry_after_redis_forgot_the_key_gets_the_persisted_order(ctx: Ctx) -> None:
    """The durable copy of the key answers a retry once Redis no longer has the claim
    (expired after 24 h, or lost in a failover): the same order, not an error. A key used
    again for another hold after that names a new order, never the first one's id."""
    from api.orders.service import idempotency_redis_key
    from core.inventory import Inventory
    from core.orders import pending_orders_key
    from workers.persister import decide_and_write

    sub = f"cleo-orders-{RUN}"
    cleo = await auth(ctx.http, sub)
    key = uuid.uuid4().hex
    held = await hold(ctx, cleo, 2)
    first = await ctx.http.post(
        "/api/v1/orders",
        json={"hold_id": held["hold_id"]},
        headers={**cleo, "Idempotency-Key": key},
    )
    assert first.status_code == 202, first.text
    order_id = first.json()["order_id"]

    # What the persister does with it: the order and its key in PostgreSQL, Redis told.
    redis = cluster_client(ctx.settings.redis.cluster_nodes)
    await redis.initialize()
    try:
        raw = await redis.hget(pending_orders_key(sub), order_id)
        placed = msgspec.json.decode(raw, type=OrderPlaced)
        conn = await asyncpg.connect(ctx.settings.database.url)
        try:
            async with conn.transaction():
                [decision] = await decide_and_write(conn, [placed])
            assert decision.status == "confirmed", decision
        finally:
            await conn.close()
        await Inventory(redis).mark_sold(placed.event_id, placed.partition, order_id)
        # Redis forgets the key and the pending record.
        await redis.delete(idempotency_redis_key(sub, key), pending_orders_key(sub))
    finally:
        await redis.aclose()

    again = await ctx.http.post(
        "/api/v1/orders",
        json={"hold_id": held["hold_id"]},
        headers={**cleo, "Idempotency-Key": key},
    )
    assert again.status_code == 202, again.text
    assert again.json() == {"order_id": order_id, "status": "pending"}

    # The same key for another (dead) hold: the durable copy says it was used otherwise.
    gone = f"h{ctx.event_id}.0.{uuid.uuid4().hex[:16]}"
    redis = cluster_client(ctx.settings.redis.cluster_nodes)
    await redis.initialize()
    try:
        await redis.delete(idempotency_redis_key(sub, key))
    finally:
        await redis.aclose()
    reused = await ctx.http.post(
        "/api/v1/orders", json={"hold_id": gone}, headers={**cleo, "Idempotency-Key": key}
    )
    assert reused.status_code in (404, 422), reused.text

    # ... and for another live hold: a new order under a new id.
    other = await hold(ctx, cleo, 1)
    redis = cluster_client(ctx.settings.redis.cluster_nodes)
    await redis.initialize()
    try:
        await redis.delete(idempotency_redis_key(sub, key))
    finally:
        await redis.aclose()
    new = await ctx.http.post(
        "/api/v1/orders",
        json={"hold_id": other["hold_id"]},
        headers={**cleo, "Idempotency-Key": key},
    )
    assert new.status_code == 202, new.text
    assert new.json()["order_id"] != order_id
