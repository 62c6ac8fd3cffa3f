"""Money in the saga, on real servers: the API as a Granian process serving the simulated
provider (its callbacks really go over HTTP, signed), PostgreSQL, the Redis Cluster and
the shared Kafka-protocol broker; the payments worker runs in this process.

Every payment ends in exactly one of {ticket + captured payment} or {no ticket + no
charge, or the charge refunded}: approve, decline, timeout, duplicate and late callbacks;
a forged or mismatched callback; refunds that free the seat for the next buyer; partial
refunds; an event's cancellation; 402 when the order endpoint is asked to sell a paid
hold without payment.

The persister's part is its own ``decide_and_write`` over the order's pending record (no
persister process runs here), then ``mark_sold`` as the persister does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from core.inventory import Inventory, partition_keys
from core.orders import TOPIC_NOTIFICATIONS, OrderPlaced, pending_orders_key, topic
from core.payments import SIM_SIGNATURE_HEADER, SimCallback, SimulatedProvider, sign
from core.settings import Settings
from tests.integration.api_servers import GranianServer, free_port, with_overrides
from tests.integration.catalog_seed import cluster_client, seed_test_event
from tests.integration.test_orders_support import TopicReader
from workers.payments import PaymentsWorker
from workers.persister import decide_and_write
from workers.runtime import ensure_topics

pytestmark = pytest.mark.slow

RUN = uuid.uuid4().hex[:8]
LATE_S = 2.0


class Ctx(msgspec.Struct):
    base: str
    http: Any
    pool: Any
    redis: Any
    inventory: Any
    worker: Any
    settings: Any
    event_id: int
    seats: dict[str, str]
    prices: dict[str, int]


@pytest.fixture(scope="module")
async def ctx(
    settings: Settings, pg_dsn: str, services: dict[str, str], tmp_path_factory: Any
) -> AsyncIterator[Ctx]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = with_overrides(
        settings,
        database={"url": pg_dsn},
        api={"rate_limit_enabled": False},
        payments={
            "required": True,
            "sim_url": base,
            "sim_callback_url": f"{base}/api/v1/payments/webhooks/simulated",
            "sim_late_s": LATE_S,
        },
    )
    redis = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    event_id, seats = await seed_test_event(
        pg_dsn,
        redis,
        name="Payments",
        address="Loopback 14",
        days_ahead=20,
        base_price_minor=5_000,
        capacity=60,
    )
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    prices = {
        r["code"]: r["price_minor"]
        for r in await pool.fetch(
            "SELECT code, price_minor FROM catalog.price_categories WHERE event_id = $1", event_id
        )
    }
    inventory = Inventory(redis, config.holds)
    await ensure_topics(config)
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap, acks="all")
    await producer.start()
    notifications = topic(config.kafka.topic_prefix, TOPIC_NOTIFICATIONS)

    async def publish(value: bytes, key: bytes) -> None:
        await producer.send_and_wait(notifications, value, key=key)

    worker = PaymentsWorker(
        config, pool, inventory, SimulatedProvider(base, config.payments.sim_secret), publish
    )
    log = Path(tmp_path_factory.mktemp("payments")) / "api.log"
    server = GranianServer(config, log, port=port)
    try:
        server.wait_ready()
        async with httpx.AsyncClient(base_url=base, timeout=15.0) as http:
            yield Ctx(base, http, pool, redis, inventory, worker, config, event_id, seats, prices)
    finally:
        server.stop()
        await producer.stop()
        inventory.close()
        await pool.close()
        for key in partition_keys(event_id, 0):
            await redis.delete(key)
        await redis.aclose()


async def bearer(
    ctx: Ctx, sub: str, roles: list[str] | None = None, org: str | None = None
) -> dict[str, str]:
    body: dict[str, Any] = {"sub": sub, "roles": roles or ["buyer"]}
    if org:
        body["org"] = org
    r = await ctx.http.post("/api/v1/auth/dev-token", json=body)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


_used: set[str] = set()


def fresh_seats(ctx: Ctx, n: int) -> list[str]:
    seats = [s for s in sorted(ctx.seats) if s not in _used][:n]
    _used.update(seats)
    return seats


async def hold(ctx: Ctx, who: dict[str, str], seats: list[str]) -> dict[str, Any]:
    r = await ctx.http.post(
        f"/api/v1/events/{ctx.event_id}/holds", json={"seats": seats}, headers=who
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def pay(ctx: Ctx, who: dict[str, str], hold_id: str) -> dict[str, Any]:
    r = await ctx.http.post(
        "/api/v1/payments",
        json={"hold_id": hold_id},
        headers={**who, "Idempotency-Key": f"pay-{hold_id}"},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def decide(ctx: Ctx, payment: dict[str, Any], decision: str, mode: str = "normal") -> None:
    intent = payment["checkout_url"].rsplit("/", 1)[1]
    r = await ctx.http.post(
        f"/sim-pay/checkout/{intent}/decision", json={"decision": decision, "mode": mode}
    )
    assert r.status_code == 200, r.text


async def payment_until(
    ctx: Ctx, who: dict[str, str], pid: str, done: Any, timeout_s: float = 15.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        r = await ctx.http.get(f"/api/v1/payments/{pid}", headers=who)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if done(body) or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.1)


async def persist(ctx: Ctx, buyer: str, order_id: str) -> str:
    """The persister's decision over the order's pending record, then mark_sold."""
    raw = await ctx.redis.hget(pending_orders_key(buyer), order_id)
    assert raw is not None, "the order left no pending record"
    order = msgspec.json.decode(raw, type=OrderPlaced)
    async with ctx.pool.acquire() as conn, conn.transaction():
        decision = (await decide_and_write(conn, [order]))[0]
    if decision.status == "confirmed":
        await ctx.inventory.mark_sold(
            order.event_id,
            order.partition,
            order.order_id,
            [s.seat_id for s in order.seats],
            order.buyer,
        )
    return str(decision.status)


async def seat_status(ctx: Ctx, seat: str) -> str:
    _, statuses = await ctx.inventory.seat_statuses(ctx.event_id)
    return str(statuses[seat]) if seat in statuses else "free"


async def bought(
    ctx: Ctx, sub: str, n: int = 2
) -> tuple[dict[str, str], dict[str, Any], list[str]]:
    """A paid, confirmed order of ``n`` fresh seats: (auth, payment, seats)."""
    who = await bearer(ctx, sub)
    seats = fresh_seats(ctx, n)
    h = await hold(ctx, who, seats)
    payment = await pay(ctx, who, h["hold_id"])
    await decide(ctx, payment, "approve")
    payment = await payment_until(ctx, who, payment["payment_id"], lambda p: p["order_id"])
    assert payment["status"] == "captured" and payment["order_id"], payment
    assert await persist(ctx, sub, payment["order_id"]) == "confirmed"
    return who, payment, seats


async def test_approved_payment_places_one_order_priced_by_the_catalog(ctx: Ctx) -> None:
    sub = f"pay-ok-{RUN}"
    who = await bearer(ctx, sub)
    seats = fresh_seats(ctx, 2)
    h = await hold(ctx, who, seats)
    # Without a payment the order endpoint refuses a paid hold.
    r = await ctx.http.post(
        "/api/v1/orders", json={"hold_id": h["hold_id"]}, headers={**who, "Idempotency-Key": "k1"}
    )
    assert r.status_code == 402, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("/payment_required")
    payment = await pay(ctx, who, h["hold_id"])
    assert payment["amount"] == sum(ctx.prices[ctx.seats[s]] for s in seats)
    assert payment["status"] == "pending" and payment["order_id"] is None
    # The same request again is the same payment.
    again = await ctx.http.post(
        "/api/v1/payments",
        json={"hold_id": h["hold_id"]},
        headers={**who, "Idempotency-Key": f"pay-{h['hold_id']}"},
    )
    assert again.status_code == 200 and again.json()["payment_id"] == payment["payment_id"]
    page = await ctx.http.get(payment["checkout_url"])
    assert page.status_code == 200 and "Approve" in page.text
    await decide(ctx, payment, "approve")
    done = await payment_until(ctx, who, payment["payment_id"], lambda p: p["order_id"])
    assert done["status"] == "captured" and done["order_id"]
    assert await persist(ctx, sub, done["order_id"]) == "confirmed"
    order = (await ctx.http.get(f"/api/v1/orders/{done['order_id']}", headers=who)).json()
    assert order["status"] == "confirmed" and order["total"] == payment["amount"]
    # Another buyer cannot read it.
    other = await bearer(ctx, f"pay-other-{RUN}")
    r = await ctx.http.get(f"/api/v1/payments/{payment['payment_id']}", headers=other)
    assert r.status_code == 404


async def test_declined_payment_places_nothing_and_keeps_the_hold(ctx: Ctx) -> None:
    sub = f"pay-decline-{RUN}"
    who = await bearer(ctx, sub)
    seats = fresh_seats(ctx, 1)
    h = await hold(ctx, who, seats)
    payment = await pay(ctx, who, h["hold_id"])
    await decide(ctx, payment, "decline")
    done = await payment_until(ctx, who, payment["payment_id"], lambda p: p["status"] != "pending")
    assert done["status"] == "declined" and done["order_id"] is None
    assert (await seat_status(ctx, seats[0])) == "held"
    assert await ctx.pool.fetchval("SELECT count(*) FROM orders.orders WHERE buyer = $1", sub) == 0


async def test_the_checkout_links_back_only_to_a_path_of_this_site(ctx: Ctx) -> None:
    """``?return=`` becomes a link after the decision only when it is a same-origin path:
    another host, a scheme, a backslash or an overlong value is no link at all."""
    who = await bearer(ctx, f"pay-return-{RUN}")
    payment = await pay(ctx, who, (await hold(ctx, who, fresh_seats(ctx, 1)))["hold_id"])
    page = payment["checkout_url"]
    for hostile in (
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
        " /#/x",
        "/#/x\n",
        '/"><script>alert(1)</script>',
        "/" + "a" * 300,
    ):
        r = await ctx.http.get(page, params={"return": hostile})
        assert r.status_code == 200, (hostile, r.text)
        assert 'id="back"' not in r.text and "evil" not in r.text and "<script>" not in r.text
        assert f'action="{page}"' in r.text, hostile
    back = f"/#/payments/{payment['payment_id']}?a=1&b=2"
    r = await ctx.http.get(page, params={"return": back})
    escaped = back.replace("&", "&amp;")
    assert f'<a id="back" href="{escaped}">' in r.text
    # The decision carries it on to the page that answers it.
    hostile = await ctx.http.post(
        page, params={"return": "//evil.example"}, data={"decision": "decline"}
    )
    assert hostile.status_code == 200 and "declined" in hostile.text
    assert 'id="return"' not in hostile.text and "evil" not in hostile.text
    again = await pay(ctx, who, (await hold(ctx, who, fresh_seats(ctx, 1)))["hold_id"])
    done = await ctx.http.post(
        again["checkout_url"], params={"return": back}, data={"decision": "decline"}
    )
    assert done.status_code == 200 and "declined" in done.text
    assert f'<a id="return" href="{escaped}">Return to TicketBuster</a>' in done.text


async def test_a_duplicate_callback_does_nothing_twice(ctx: Ctx) -> None:
    sub = f"pay-dup-{RUN}"
    who = await bearer(ctx, sub)
    h = await hold(ctx, who, fresh_seats(ctx, 2))
    payment = await pay(ctx, who, h["hold_id"])
    await decide(ctx, payment, "approve", mode="duplicate")
    intent = payment["checkout_url"].rsplit("/", 1)[1]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        delivered = await ctx.pool.fetchval(
            "SELECT count(*) FROM simpay.callbacks WHERE intent = $1 AND delivered_at IS NOT NULL",
            intent,
        )
        if delivered == 2:
            break
        await asyncio.sleep(0.1)
    assert delivered == 2
    done = await payment_until(ctx, who, payment["payment_id"], lambda p: p["order_id"])
    assert await persist(ctx, sub, done["order_id"]) == "confirmed"
    assert await ctx.pool.fetchval("SELECT count(*) FROM orders.orders WHERE buyer = $1", sub) == 1
    assert (
        await ctx.pool.fetchval(
            "SELECT count(*) FROM payments.refunds WHERE payment_id = $1",
            uuid.UUID(payment["payment_id"]),
        )
        == 0
    )


async def test_a_late_callback_for_a_gone_hold_is_refunded(ctx: Ctx) -> None:
    sub = f"pay-late-{RUN}"
    who = await bearer(ctx, sub)
    seats = fresh_seats(ctx, 1)
    h = await hold(ctx, who, seats)
    payment = await pay(ctx, who, h["hold_id"])
    await decide(ctx, payment, "approve", mode="late")
    # The hold ends before the provider's confirmation arrives.
    r = await ctx.http.delete(f"/api/v1/holds/{h['hold_id']}", headers=who)
    assert r.status_code in (200, 204), r.text
    done = await payment_until(
        ctx, who, payment["payment_id"], lambda p: p["status"] != "pending", LATE_S + 15
    )
    assert done["status"] == "refunding" and done["order_id"] is None, done
    await ctx.worker.run_once()
    done = await payment_until(ctx, who, payment["payment_id"], lambda p: True)
    assert done["status"] == "refunded"
    intent = payment["checkout_url"].rsplit("/", 1)[1]
    assert (
        await ctx.pool.fetchval("SELECT refunded FROM simpay.intents WHERE intent = $1", intent)
        == payment["amount"]
    )
    assert await ctx.pool.fetchval("SELECT count(*) FROM orders.orders WHERE buyer = $1", sub) == 0


async def test_a_payment_never_confirmed_expires_without_a_charge(ctx: Ctx) -> None:
    sub = f"pay-timeout-{RUN}"
    who = await bearer(ctx, sub)
    h = await hold(ctx, who, fresh_seats(ctx, 1))
    payment = await pay(ctx, who, h["hold_id"])
    await decide(ctx, payment, "approve", mode="timeout")
    soon = msgspec.structs.replace(
        ctx.settings,
        payments=msgspec.structs.replace(ctx.settings.payments, window_s=0, expire_grace_s=0),
    )
    worker = PaymentsWorker(soon, ctx.pool, ctx.inventory, ctx.worker.provider)
    await asyncio.sleep(0.05)
    await worker.expire_payments()
    done = await payment_until(ctx, who, payment["payment_id"], lambda p: True)
    assert done["status"] == "expired" and done["order_id"] is None
    intent = payment["checkout_url"].rsplit("/", 1)[1]
    row = await ctx.pool.fetchrow(
        "SELECT status, refunded FROM simpay.intents WHERE intent = $1", intent
    )
    assert row["status"] == "created" and row["refunded"] == 0  # nothing was charged


async def test_forged_and_mismatched_callbacks(ctx: Ctx) -> None:
    sub = f"pay-forged-{RUN}"
    who = await bearer(ctx, sub)
    h = await hold(ctx, who, fresh_seats(ctx, 1))
    payment = await pay(ctx, who, h["hold_id"])
    intent = payment["checkout_url"].rsplit("/", 1)[1]
    url = "/api/v1/payments/webhooks/simulated"
    body = msgspec.json.encode(
        SimCallback(
            id=f"se_{RUN}",
            type="payment.succeeded",
            intent=intent,
            amount=1,
            currency=payment["currency"],
        )
    )
    for header in (
        {},
        {SIM_SIGNATURE_HEADER: sign("not-the-secret", body)},
        {SIM_SIGNATURE_HEADER: sign(ctx.settings.payments.sim_secret, body, 1)},
    ):
        r = await ctx.http.post(
            url, content=body, headers={"content-type": "application/json", **header}
        )
        assert r.status_code == 400, r.text
        assert r.json()["type"].endswith("/invalid_signature")
    assert (await payment_until(ctx, who, payment["payment_id"], lambda p: True))[
        "status"
    ] == "pending"
    # Signed, but the provider captured another amount than the order's: refunded.
    r = await ctx.http.post(
        url,
        content=body,
        headers={
            "content-type": "application/json",
            SIM_SIGNATURE_HEADER: sign(ctx.settings.payments.sim_secret, body),
        },
    )
    assert r.status_code == 200 and r.json() == {"result": "refunded"}
    done = await payment_until(ctx, who, payment["payment_id"], lambda p: True)
    assert done["status"] == "refunding" and done["reason"] == "amount_mismatch"
    r = await ctx.http.post("/api/v1/payments/webhooks/stripe", content=body)
    assert r.status_code == 404


async def test_cancel_frees_the_seats_for_the_next_buyer_and_refunds(ctx: Ctx) -> None:
    sub = f"pay-cancel-{RUN}"
    who, payment, seats = await bought(ctx, sub)
    assert await seat_status(ctx, seats[0]) == "sold"
    r = await ctx.http.post(f"/api/v1/orders/{payment['order_id']}/cancel", headers=who)
    assert r.status_code == 202, r.text
    refund = r.json()
    assert refund["kind"] == "buyer_cancel" and refund["amount"] == payment["amount"]
    assert refund["status"] == "requested" and len(refund["ticket_ids"]) == 2
    assert [await seat_status(ctx, s) for s in seats] == ["free", "free"]
    revoked = await ctx.pool.fetchval(
        "SELECT count(*) FROM orders.tickets WHERE order_id = $1"
        " AND revoked_at IS NOT NULL AND refunded_at IS NOT NULL",
        uuid.UUID(payment["order_id"]),
    )
    assert revoked == 2
    # Again: the same refund (a retried cancel refunds nothing twice).
    r = await ctx.http.post(f"/api/v1/orders/{payment['order_id']}/cancel", headers=who)
    assert r.status_code == 202 and r.json()["refund_id"] == refund["refund_id"]
    # Another buyer holds and buys the same seats: the refunded tickets do not block it.
    next_sub = f"pay-next-{RUN}"
    other = await bearer(ctx, next_sub)
    h = await hold(ctx, other, seats)
    p2 = await pay(ctx, other, h["hold_id"])
    await decide(ctx, p2, "approve")
    p2 = await payment_until(ctx, other, p2["payment_id"], lambda p: p["order_id"])
    assert await persist(ctx, next_sub, p2["order_id"]) == "confirmed"
    await ctx.worker.run_once()
    listed = (
        await ctx.http.get(f"/api/v1/orders/{payment['order_id']}/refunds", headers=who)
    ).json()
    assert [x["status"] for x in listed["items"]] == ["refunded"]
    assert (await payment_until(ctx, who, payment["payment_id"], lambda p: True))[
        "status"
    ] == "refunded"
    assert (
        await ctx.pool.fetchval(
            "SELECT count(*) FROM orders.tickets WHERE event_id = $1 AND seat_id = ANY($2)"
            " AND refunded_at IS NULL",
            ctx.event_id,
            seats,
        )
        == 2
    )  # the new buyer's two tickets, and no seat sold twice
    # Each state of the refund was told once on the notifications topic, in order; another
    # pass tells it nothing again.
    await ctx.worker.run_once()
    name = topic(ctx.settings.kafka.topic_prefix, TOPIC_NOTIFICATIONS)

    def told(messages: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        return [
            m
            for _, m in messages
            if m.get("type") == "refund.status" and m["refund"]["refund_id"] == refund["refund_id"]
        ]

    async with TopicReader(ctx.settings.kafka.bootstrap, [name]) as reader:
        await reader.wait_for(lambda ms: len(told(ms)) >= 2, timeout_s=30)
        await reader.poll(0.5)
        states = told(reader.messages)
    assert [m["refund"]["status"] for m in states] == ["requested", "refunded"]
    assert {(m["buyer"], m["event_id"]) for m in states} == {(sub, ctx.event_id)}
    assert states[1]["refund"]["amount"] == payment["amount"]


async def test_partial_refund_by_an_admin_and_tenant_isolation(ctx: Ctx) -> None:
    sub = f"pay-partial-{RUN}"
    _, payment, _ = await bought(ctx, sub)
    tickets = await ctx.pool.fetch(
        "SELECT ticket_id::text AS id, seat_id, price_minor FROM orders.tickets"
        " WHERE order_id = $1 ORDER BY seat_id",
        uuid.UUID(payment["order_id"]),
    )
    url = f"/api/v1/organizer/orders/{payment['order_id']}/refunds"
    stranger = await bearer(ctx, f"org-{RUN}", ["organizer"], org=f"nobody{RUN}")
    r = await ctx.http.post(url, json={"ticket_ids": [tickets[0]["id"]]}, headers=stranger)
    assert r.status_code == 404, r.text
    admin = await bearer(ctx, f"admin-{RUN}", ["admin"])
    r = await ctx.http.post(url, json={"ticket_ids": ["not-a-uuid"]}, headers=admin)
    assert r.status_code == 422, r.text
    report_url = f"/api/v1/organizer/events/{payment['event_id']}/report"
    before = (await ctx.http.get(report_url, headers=admin)).json()
    r = await ctx.http.post(
        url, json={"ticket_ids": [tickets[0]["id"]], "reason": "view"}, headers=admin
    )
    assert r.status_code == 202, r.text
    part = r.json()
    price = tickets[0]["price_minor"]
    assert part["amount"] == price and part["ticket_ids"] == [tickets[0]["id"]]
    assert await seat_status(ctx, tickets[0]["seat_id"]) == "free"
    assert await seat_status(ctx, tickets[1]["seat_id"]) == "sold"
    # The organizer's report moves the ticket from sold to refunded, net of its price.
    after = (await ctx.http.get(report_url, headers=admin)).json()
    assert after["sold"] == before["sold"] - 1, (before, after)
    assert after["revenue_minor"] == before["revenue_minor"] - price
    assert (after["refunded"], after["refunded_minor"]) == (
        before["refunded"] + 1,
        before["refunded_minor"] + price,
    )
    assert after["refunds_open"] == before["refunds_open"] + 1
    # The buyer's order page shows the payment and what was refunded, ticket by ticket.
    who = await bearer(ctx, sub)
    order = (await ctx.http.get(f"/api/v1/orders/{payment['order_id']}", headers=who)).json()
    assert order["payment"] == {
        "payment_id": payment["payment_id"],
        "status": "captured",
        "amount": payment["amount"],
        "currency": payment["currency"],
        "provider": "simulated",
    }
    assert order["refunded"] == price
    refunded = {t["ticket_id"] for t in order["tickets"] if t["refunded_at"] is not None}
    assert refunded == {tickets[0]["id"]}
    assert all(t["revoked_at"] is not None for t in order["tickets"] if t["ticket_id"] in refunded)
    # The same request again answers the same refund.
    r = await ctx.http.post(
        url, json={"ticket_ids": [tickets[0]["id"]], "reason": "view"}, headers=admin
    )
    assert r.status_code == 202 and r.json()["refund_id"] == part["refund_id"]
    await ctx.worker.run_once()
    paid_back = (await ctx.http.get(report_url, headers=admin)).json()
    assert paid_back["refunds_open"] == before["refunds_open"]
    # A partial refund leaves the payment captured.
    assert (await payment_until(ctx, who, payment["payment_id"], lambda p: True))[
        "status"
    ] == "captured"
    # The rest of the order: the payment is refunded in full.
    r = await ctx.http.post(url, json={}, headers=admin)
    assert r.status_code == 202 and r.json()["ticket_ids"] == [tickets[1]["id"]]
    await ctx.worker.run_once()
    assert (await payment_until(ctx, who, payment["payment_id"], lambda p: True))[
        "status"
    ] == "refunded"
    intent = payment["checkout_url"].rsplit("/", 1)[1]
    assert (
        await ctx.pool.fetchval("SELECT refunded FROM simpay.intents WHERE intent = $1", intent)
        == payment["amount"]
    )


async def test_an_event_cancellation_refunds_every_order(ctx: Ctx) -> None:
    sub = f"pay-evcancel-{RUN}"
    who, payment, seats = await bought(ctx, sub)
    # What the organizer's cancel does to the orders (api/organizer/service.py).
    await ctx.pool.execute(
        "UPDATE orders.orders SET refund = 'due' WHERE order_id = $1",
        uuid.UUID(payment["order_id"]),
    )
    await ctx.worker.run_once()
    await ctx.worker.run_once()
    listed = (
        await ctx.http.get(f"/api/v1/orders/{payment['order_id']}/refunds", headers=who)
    ).json()
    assert [(x["kind"], x["status"]) for x in listed["items"]] == [("event_cancelled", "refunded")]
    assert (
        await ctx.pool.fetchval(
            "SELECT refund FROM orders.orders WHERE order_id = $1", uuid.UUID(payment["order_id"])
        )
        == "refunded"
    )
    assert [await seat_status(ctx, s) for s in seats] == ["free", "free"]


async def test_self_cancel_only_within_the_events_window(ctx: Ctx) -> None:
    sub = f"pay-window-{RUN}"
    who, payment, seats = await bought(ctx, sub, 1)
    # 20 days ahead; a window of 1,000 h before the event has passed already.
    await ctx.pool.execute(
        "UPDATE catalog.events SET refund_window_hours = 1000 WHERE id = $1", ctx.event_id
    )
    try:
        r = await ctx.http.post(f"/api/v1/orders/{payment['order_id']}/cancel", headers=who)
        assert r.status_code == 409 and r.json()["type"].endswith("/refund_refused"), r.text
        assert "1000 h" in r.json()["detail"]
        assert await seat_status(ctx, seats[0]) == "sold"
        stranger = await bearer(ctx, f"pay-stranger-{RUN}")
        r = await ctx.http.post(f"/api/v1/orders/{payment['order_id']}/cancel", headers=stranger)
        assert r.status_code == 404
        r = await ctx.http.post("/api/v1/orders/not-an-order/cancel", headers=who)
        assert r.status_code == 404
    finally:
        await ctx.pool.execute(
            "UPDATE catalog.events SET refund_window_hours = NULL WHERE id = $1", ctx.event_id
        )


async def test_the_reconciler_agrees_after_refunds_and_resales(ctx: Ctx) -> None:
    from workers.expirer import Reconciler

    reconciler = Reconciler(ctx.settings, None, ctx.pool, ctx.redis)  # type: ignore[arg-type]
    found = await reconciler.reconcile([(ctx.event_id, 0)])
    assert not any(found.values()), found
    oversold = await ctx.pool.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM orders.tickets WHERE event_id = $1"
        " AND refunded_at IS NULL GROUP BY seat_id HAVING count(*) > 1) d",
        ctx.event_id,
    )
    assert oversold == 0


async def test_a_capture_whose_order_the_persister_rejects_is_refunded(ctx: Ctx) -> None:
    sub = f"pay-rejected-{RUN}"
    who = await bearer(ctx, sub)
    h = await hold(ctx, who, fresh_seats(ctx, 1))
    payment = await pay(ctx, who, h["hold_id"])
    await decide(ctx, payment, "approve")
    payment = await payment_until(ctx, who, payment["payment_id"], lambda p: p["order_id"])
    # What the persister writes for an order whose seat PostgreSQL had sold already.
    await ctx.pool.execute(
        "INSERT INTO orders.orders (order_id, event_id, hold_id, buyer, status, reason,"
        " seats, total_minor, currency, placed_at)"
        " VALUES ($1, $2, $3, $4, 'rejected', 'seat_taken', '[]', $5, $6, now())",
        uuid.UUID(payment["order_id"]),
        ctx.event_id,
        h["hold_id"],
        sub,
        payment["amount"],
        payment["currency"],
    )
    await ctx.worker.run_once()
    done = await payment_until(ctx, who, payment["payment_id"], lambda p: True)
    assert done["status"] == "refunded" and done["reason"] == "order_rejected", done
    intent = payment["checkout_url"].rsplit("/", 1)[1]
    assert (
        await ctx.pool.fetchval("SELECT refunded FROM simpay.intents WHERE intent = $1", intent)
        == payment["amount"]
    )
    # A second pass refunds nothing again.
    await ctx.worker.run_once()
    assert (
        await ctx.pool.fetchval(
            "SELECT count(*) FROM simpay.refunds r JOIN simpay.intents i USING (intent)"
            " WHERE i.intent = $1",
            intent,
        )
        == 1
    )
