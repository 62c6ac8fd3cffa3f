"""The order persister against the real broker (Tansu) and PostgreSQL.

Orders are put straight into ``orders.placed`` (as if Redis had forgotten the sales, so
the database is the only arbiter); the persister runs in-process with the real Redis
inventory. The full path through the API is in tests/e2e/test_purchase*.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from aiokafka import ConsumerRecord

from core.inventory import Inventory
from core.orders import OrderSeat, encode, event_key, topic
from core.settings import Settings
from tests.conftest import fresh_event_id
from tests.integration.catalog_seed import cluster_client
from tests.integration.test_orders_support import (
    TopicReader,
    create_catalog_event,
    decided,
    order_placed,
    produce,
    seat_ids,
)
from workers.persister import (
    Persister,
    TransientError,
    create_persister,
    decide_and_write,
    is_transient,
)
from workers.runtime import ensure_topics


@pytest.fixture(scope="module")
def worker_settings(db_settings: Settings) -> Settings:
    return msgspec.structs.replace(
        db_settings, workers=msgspec.structs.replace(db_settings.workers, persister_port=0)
    )


@pytest.fixture(scope="module")
async def persister(worker_settings: Settings) -> AsyncIterator[Any]:
    await ensure_topics(worker_settings)
    app = create_persister(worker_settings)
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def inventory(services: dict[str, str]) -> AsyncIterator[Inventory]:
    client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await client.initialize()
    yield Inventory(client)
    await client.aclose()


async def new_event(dsn: str, inventory: Inventory, n: int) -> tuple[int, list[str]]:
    """A catalog event with n seats, loaded into the Redis inventory (all free)."""
    event_id = fresh_event_id()
    seats = seat_ids(n)
    await create_catalog_event(dsn, event_id, seats)
    await inventory.load(event_id, 0, [(s, "GENERAL") for s in seats])
    return event_id, seats


async def statuses(inventory: Inventory, event_id: int) -> dict[str, str]:
    _, found = await inventory.seat_statuses(event_id)
    return dict(found)


@pytest.fixture
async def outcomes(worker_settings: Settings) -> AsyncIterator[TopicReader]:
    prefix = worker_settings.kafka.topic_prefix
    names = ["orders.confirmed", "orders.rejected", "orders.dlq"]
    async with TopicReader(worker_settings.kafka.bootstrap, [prefix + n for n in names]) as reader:
        yield reader


async def _put(settings: Settings, orders: list[Any]) -> None:
    await produce(
        settings.kafka.bootstrap,
        topic(settings.kafka.topic_prefix, "orders.placed"),
        [(event_key(o.event_id), encode(o)) for o in orders],
    )


async def test_orders_are_confirmed_with_one_ticket_per_seat(
    worker_settings: Settings,
    pg_dsn: str,
    persister: Any,
    outcomes: TopicReader,
    inventory: Inventory,
) -> None:
    event_id, seats = await new_event(pg_dsn, inventory, 60)
    orders = [order_placed(event_id, seats[i : i + 3], buyer=f"b{i}") for i in range(0, 60, 3)]
    await _put(worker_settings, orders)
    ids = {o.order_id for o in orders}
    await outcomes.wait_for(lambda m: len(decided(m, ids)) == len(ids))
    assert all(v[0] == "confirmed" for v in decided(outcomes.messages, ids).values())

    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT seat_id, holder, price_minor FROM orders.tickets WHERE event_id = $1", event_id
        )
        by_status = await conn.fetch(
            "SELECT status, count(*) FROM orders.orders WHERE event_id = $1 GROUP BY 1", event_id
        )
    finally:
        await conn.close()
    assert sorted(r["seat_id"] for r in rows) == sorted(seats)
    assert {r["price_minor"] for r in rows} == {9950}
    assert dict(by_status) == {"confirmed": 20}
    sold = await statuses(inventory, event_id)
    assert sold == dict.fromkeys(seats, "sold")


async def test_two_orders_for_the_same_seat_one_ticket_one_rejection(
    worker_settings: Settings,
    pg_dsn: str,
    persister: Any,
    outcomes: TopicReader,
    inventory: Inventory,
) -> None:
    event_id, seats = await new_event(pg_dsn, inventory, 4)
    first = order_placed(event_id, [seats[0], seats[1]], buyer="alice")
    second = order_placed(event_id, [seats[1], seats[2]], buyer="bob")
    await _put(worker_settings, [first, second])
    ids = {first.order_id, second.order_id}
    await outcomes.wait_for(lambda m: len(decided(m, ids)) == 2)
    got = decided(outcomes.messages, ids)
    assert got[first.order_id][0] == "confirmed"
    assert got[second.order_id][0] == "rejected"
    rejection = next(d for _, d in outcomes.messages if d.get("order_id") == second.order_id)
    assert rejection["reason"] == "seat_taken"
    assert rejection["seats"] == [seats[1]]

    conn = await asyncpg.connect(pg_dsn)
    try:
        tickets = await conn.fetch(
            "SELECT seat_id, order_id::text FROM orders.tickets WHERE event_id = $1", event_id
        )
        loser = await conn.fetchrow(
            "SELECT status, reason, conflicting_seats FROM orders.orders WHERE order_id = $1",
            second.order_id,
        )
    finally:
        await conn.close()
    assert sorted((t["seat_id"], t["order_id"]) for t in tickets) == sorted(
        [(seats[0], first.order_id), (seats[1], first.order_id)]
    )
    assert loser is not None
    assert (loser["status"], loser["reason"], loser["conflicting_seats"]) == (
        "rejected",
        "seat_taken",
        [seats[1]],
    )
    # Redis follows PostgreSQL: the winner's seats sold, the loser's other seat free.
    assert await statuses(inventory, event_id) == {seats[0]: "sold", seats[1]: "sold"}


async def test_a_redelivered_order_is_decided_once(
    worker_settings: Settings, pg_dsn: str, persister: Any, outcomes: TopicReader
) -> None:
    event_id = fresh_event_id()
    seats = seat_ids(2)
    await create_catalog_event(pg_dsn, event_id, seats)
    order = order_placed(event_id, seats)
    await _put(worker_settings, [order])
    await outcomes.wait_for(
        lambda m: len(decided(m, {order.order_id}).get(order.order_id, [])) == 1
    )
    await _put(worker_settings, [order, order])  # a producer retry, then a replay
    await outcomes.wait_for(
        lambda m: len(decided(m, {order.order_id}).get(order.order_id, [])) >= 2
    )
    assert set(decided(outcomes.messages, {order.order_id})[order.order_id]) == {"confirmed"}
    conn = await asyncpg.connect(pg_dsn)
    try:
        n_orders = await conn.fetchval(
            "SELECT count(*) FROM orders.orders WHERE order_id = $1", order.order_id
        )
        n_tickets = await conn.fetchval(
            "SELECT count(*) FROM orders.tickets WHERE order_id = $1", order.order_id
        )
    finally:
        await conn.close()
    assert (n_orders, n_tickets) == (1, 2)


async def test_poison_message_goes_to_the_dlq_and_the_partition_keeps_flowing(
    worker_settings: Settings, pg_dsn: str, persister: Any, outcomes: TopicReader
) -> None:
    event_id = fresh_event_id()
    seats = seat_ids(2)
    await create_catalog_event(pg_dsn, event_id, seats)
    good = order_placed(event_id, seats)
    poison = b'{"order_id": 12, "this is": "not an order"}'
    await produce(
        worker_settings.kafka.bootstrap,
        topic(worker_settings.kafka.topic_prefix, "orders.placed"),
        [(event_key(event_id), poison), (event_key(event_id), encode(good))],  # same partition
    )
    await outcomes.wait_for(lambda m: good.order_id in decided(m, {good.order_id}))
    letters = [
        d
        for name, d in outcomes.messages
        if name.endswith("orders.dlq") and d.get("key") == str(event_id)
    ]
    assert len(letters) == 1
    assert letters[0]["value"] == poison.decode()
    assert "undecodable" in letters[0]["error"]
    assert decided(outcomes.messages, {good.order_id})[good.order_id] == ["confirmed"]


async def test_order_for_unknown_seats_is_rejected_as_invalid(
    worker_settings: Settings, pg_dsn: str, persister: Any, outcomes: TopicReader
) -> None:
    event_id = fresh_event_id()
    await create_catalog_event(pg_dsn, event_id, seat_ids(2))
    order = order_placed(event_id, ["999-Z-1"])
    await _put(worker_settings, [order])
    await outcomes.wait_for(lambda m: order.order_id in decided(m, {order.order_id}))
    doc = next(d for _, d in outcomes.messages if d.get("order_id") == order.order_id)
    assert doc["reason"] == "invalid_order"


async def test_probes_and_metrics(persister: Any) -> None:
    server = persister.context.get("probes")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        body = (await client.get("/metrics")).text
    assert "ticketbuster_persister_batch_size" in body
    assert "ticketbuster_orders_total" in body


async def test_order_that_keeps_failing_is_rejected_and_dead_lettered_its_neighbours_commit(
    worker_settings: Settings,
    pg_dsn: str,
    persister: Any,
    outcomes: TopicReader,
    inventory: Inventory,
) -> None:
    event_id, seats = await new_event(pg_dsn, inventory, 5)
    # The poison order is pending in Redis like any accepted order: its 202 was given.
    hold = await inventory.hold(event_id, [seats[2]], "poison-buyer")
    poison_id = str(uuid.uuid4())
    await inventory.confirm(hold.hold_id, "poison-buyer", poison_id)
    neighbours = [order_placed(event_id, [seats[i]]) for i in (0, 1, 3, 4)]
    # Decodes fine, but PostgreSQL refuses the NUL in its text: it fails however often.
    poison = msgspec.structs.replace(
        order_placed(event_id, [seats[2]], buyer="poison-buyer", order_id=poison_id),
        idempotency_key="key\x00with-nul",
        fingerprint="f",
    )
    batch = [*neighbours[:2], poison, *neighbours[2:]]
    await _put(worker_settings, batch)
    ids = {o.order_id for o in batch}
    await outcomes.wait_for(
        lambda m: (
            len(decided(m, ids)) == len(ids)
            and any(d.get("value", "").find(poison.order_id) >= 0 for _, d in m)
        )
    )
    got = decided(outcomes.messages, ids)
    assert all(got[o.order_id] == ["confirmed"] for o in neighbours)
    assert got[poison.order_id] == ["rejected"]
    rejection = next(
        d
        for name, d in outcomes.messages
        if name.endswith("orders.rejected") and d.get("order_id") == poison.order_id
    )
    assert rejection["reason"] == "invalid_order"
    letter = next(d for _, d in outcomes.messages if poison.order_id in d.get("value", ""))
    assert letter["attempts"] == worker_settings.workers.dlq_after_attempts
    assert "0x00" in letter["error"] or "NUL" in letter["error"] or "null" in letter["error"]
    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT status, reason FROM orders.orders WHERE order_id = $1", poison.order_id
        )
        tickets = await conn.fetchval(
            "SELECT count(*) FROM orders.tickets WHERE order_id = $1", poison.order_id
        )
    finally:
        await conn.close()
    assert row is not None and (row["status"], row["reason"]) == ("rejected", "invalid_order")
    assert tickets == 0
    # Its seat is released in Redis; the neighbours' seats are sold.
    expected = {seats[i]: "sold" for i in (0, 1, 3, 4)}
    await wait_until(lambda: statuses(inventory, event_id), expected)


async def wait_until(read: Any, expected: Any, timeout_s: float = 30.0) -> None:
    """Poll ``read()`` until it returns ``expected`` (Redis follows PostgreSQL)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    got = await read()
    while got != expected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        got = await read()
    assert got == expected


async def test_a_transient_postgres_error_retries_and_never_dead_letters(
    worker_settings: Settings, pg_dsn: str
) -> None:
    """A read-only primary (a switchover in progress) is not the orders' fault."""
    event_id = fresh_event_id()
    seats = seat_ids(2)
    await create_catalog_event(pg_dsn, event_id, seats)
    orders = [order_placed(event_id, [s]) for s in seats]
    records = [
        ConsumerRecord("t", 0, i, 0, 0, event_key(event_id), encode(o), None, 0, 0, ())
        for i, o in enumerate(orders)
    ]
    sent: list[str] = []

    async def send(name: str, value: bytes, key: bytes | None) -> asyncio.Future[None]:
        sent.append(name)
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acked.set_result(None)  # as the producer's future once the broker acknowledged
        return acked

    read_only = await asyncpg.create_pool(
        pg_dsn, min_size=1, max_size=1, server_settings={"default_transaction_read_only": "on"}
    )
    assert read_only is not None
    try:
        p = Persister(worker_settings, None, read_only, None)  # type: ignore[arg-type]
        p.send = send
        with pytest.raises(TransientError, match="ReadOnlySQLTransaction"):
            await p.handle(records)
    finally:
        await read_only.close()
    assert sent == []  # nothing published, nothing dead-lettered: the batch is retried
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1)
    assert pool is not None
    try:
        p = Persister(worker_settings, None, pool, None)  # type: ignore[arg-type]
        p.send = send
        await p.handle(records)  # the retry, once the primary is writable again
        confirmed = await pool.fetchval(
            "SELECT count(*) FROM orders.orders WHERE event_id = $1 AND status = 'confirmed'",
            event_id,
        )
    finally:
        await pool.close()
    assert confirmed == 2
    assert not any(name.endswith("orders.dlq") for name in sent)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (asyncpg.ReadOnlySQLTransactionError("read only"), True),
        (asyncpg.QueryCanceledError("canceling statement"), True),
        (asyncpg.AdminShutdownError("terminating"), True),
        (asyncpg.ConnectionDoesNotExistError("closed"), True),
        (asyncpg.SerializationError("serialize"), True),
        (asyncpg.DeadlockDetectedError("deadlock"), True),
        (asyncpg.TooManyConnectionsError("too many"), True),
        (asyncpg.CannotConnectNowError("starting up"), True),
        (ConnectionResetError("reset"), True),
        (TimeoutError(), True),
        (asyncpg.CharacterNotInRepertoireError("0x00"), False),
        (asyncpg.NumericValueOutOfRangeError("out of range"), False),
        (asyncpg.CheckViolationError("check"), False),
        (asyncpg.DataError("cannot encode"), False),
        (ValueError("bad"), False),
    ],
)
def test_postgres_errors_are_classified(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


async def test_an_order_priced_otherwise_than_the_catalog_is_rejected(pg_dsn: str) -> None:
    """The persister checks each seat's category and price against the catalog: an
    OrderPlaced with another price (forged, or from a buggy producer) or another category
    sells nothing (issue 20.8)."""
    event_id = fresh_event_id()
    seats = seat_ids(3)
    await create_catalog_event(pg_dsn, event_id, seats)  # all GENERAL, priced from PRICES
    honest = order_placed(event_id, seats[:1])
    cheap = msgspec.structs.replace(
        order_placed(event_id, seats[1:2]),
        seats=(OrderSeat(seat_id=seats[1], category="GENERAL", price=1),),
        total=1,
    )
    relabelled = order_placed(event_id, seats[2:], category="VIP")  # VIP's price, a GENERAL seat
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with conn.transaction():
            decisions = await decide_and_write(conn, [honest, cheap, relabelled])
        sold = {
            r["seat_id"]
            for r in await conn.fetch(
                "SELECT seat_id FROM orders.tickets WHERE event_id = $1", event_id
            )
        }
    finally:
        await conn.close()
    assert [(d.status, d.reason) for d in decisions] == [
        ("confirmed", None),
        ("rejected", "invalid_order"),
        ("rejected", "invalid_order"),
    ]
    assert sold == {seats[0]}
