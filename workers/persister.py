"""Order persister: ``orders.placed`` -> PostgreSQL, in batches, exactly one decision per order.

One Kafka batch (up to ``batch_max_records`` messages or ``batch_timeout_ms``) is written
in ONE transaction: COPY into session staging tables, then one ``INSERT ... SELECT ... ON
CONFLICT DO NOTHING`` into orders, idempotency keys and tickets. After the commit, Redis
is handed the decisions (``RedisBacklog``: ``mark_sold_many`` / ``reject_many`` in the
background, retried while Redis is away, never holding PostgreSQL back), and the batch
settles while the next one is written (``BatchPipeline``): ``OrderConfirmed`` /
``OrderRejected`` are published and then exactly this batch's offsets are committed. A
crash anywhere before that offset commit redelivers the batch; the persister is
idempotent on order id (an order already in PostgreSQL keeps its decision, which is
published again), so every accepted order ends decided exactly once. Seats whose Redis
update was lost (a crash, a long outage) are repaired by the reconciler
(workers/expirer.py). See docs/decisions/0402-*.md and 0804-*.md.

Conflicts: UNIQUE (event_id, seat_id) on tickets is the final arbiter. Within a batch the
earlier offset wins (one event is one partition, so offset order is placement order).

Errors (``is_transient``): connection loss, timeouts, a read-only primary, cancelled
statements, admin shutdown, serialization failures, deadlocks and too many connections
are transient: the batch is rewound and retried with backoff, never dead-lettered. Any
other error fails the same way every time: the batch is bisected (halves in offset order)
so that only the failing order is isolated; it is tried alone ``dlq_after_attempts``
times, then rejected (``invalid_order``, recorded when the rejection row can be written),
its seats released in Redis, and its message copied to ``orders.dlq`` with the error. A
value that does not decode goes to ``orders.dlq`` at once (there is no order to decide).

Run: ``uv run python -m workers.persister``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from core.clock import now_ms
from core.errors import Conflict, NotFound
from core.orders import (
    TOPIC_CONFIRMED,
    TOPIC_DLQ,
    TOPIC_PLACED,
    TOPIC_REJECTED,
    DeadLetter,
    OrderConfirmed,
    OrderPlaced,
    OrderRejected,
    RejectReason,
    TicketRef,
    encode,
    order_key,
    ticket_id_for,
    topic,
)
from core.settings import Settings, load_settings
from workers import metrics
from workers.runtime import (
    attach_probes,
    create_broker,
    create_pg_pool,
    create_redis,
    ensure_topics,
    observe_lag,
    pg_ready,
    rewind,
    run,
)

log = logging.getLogger("ticketbuster.persister")

GROUP = "persister"


class SeatLedger(Protocol):
    """The part of the inventory gateway (core.inventory.Inventory) the persister needs.

    One call per (event, partition) per batch; per order (in order) the result is the
    seats changed or the NotFound / Conflict the single-order call would have raised.
    """

    async def mark_sold_many(
        self,
        event_id: int,
        partition: int,
        orders: Sequence[tuple[str, Sequence[str], str]],
    ) -> Sequence[Any]: ...

    async def reject_many(
        self, event_id: int, partition: int, order_ids: Sequence[str]
    ) -> Sequence[Any]: ...


# (topic, value, key) -> a future that resolves when the broker acknowledged the record.
Send = Callable[[str, bytes, bytes | None], Awaitable[Any]]


class TransientError(Exception):
    """A dependency failed or a race was lost; the whole batch is retried."""


class Decision(msgspec.Struct, frozen=True):
    order: OrderPlaced
    status: Literal["confirmed", "rejected"]
    reason: RejectReason | None = None
    conflicting: tuple[str, ...] = ()
    decided_at: int = 0
    recorded: bool = (
        True  # False: rejected without a row (unknown event), decided again on redelivery
    )
    # Of a confirmed order: its ticket ids in seat order (derived once, written and published).
    tickets: tuple[str, ...] = ()

    def ticket_ids(self) -> tuple[str, ...]:
        if self.tickets or self.status != "confirmed":
            return self.tickets
        return tuple(ticket_id_for(self.order.order_id, s.seat_id) for s in self.order.seats)

    def outcome(self) -> OrderConfirmed | OrderRejected:
        o = self.order
        if self.status == "confirmed":
            return OrderConfirmed(
                order_id=o.order_id,
                event_id=o.event_id,
                partition=o.partition,
                buyer=o.buyer,
                tickets=tuple(
                    TicketRef(ticket_id=t, seat_id=s.seat_id)
                    for t, s in zip(self.ticket_ids(), o.seats, strict=True)
                ),
                placed_at=o.placed_at,
                confirmed_at=self.decided_at,
            )
        return OrderRejected(
            order_id=o.order_id,
            event_id=o.event_id,
            partition=o.partition,
            buyer=o.buyer,
            reason=self.reason or "invalid_order",
            seats=self.conflicting,
            placed_at=o.placed_at,
            rejected_at=self.decided_at,
        )


# SQLSTATE classes a retry can cure: connection exception (08), transaction rollback
# (40: serialization failure, deadlock), insufficient resources (53: too many
# connections), operator intervention (57: query_canceled, admin_shutdown,
# cannot_connect_now), system error (58).
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# And single states of other classes that a switchover or a lock wait causes.
_TRANSIENT_STATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: a primary became a replica
        "55P03",  # lock_not_available
        "55006",  # object_in_use
    }
)


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same write later can succeed (never dead-letter those).

    Connection loss, timeouts, switchovers, cancelled statements, serialization
    failures, deadlocks and exhausted connections are transient. Everything else
    (data errors, constraint violations, a value the driver cannot encode) fails the
    same way every time: the batch is bisected and only the failing order is rejected.
    """
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, asyncpg.DataError):  # the driver refused a value: the data is bad
        return False
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
    return isinstance(
        exc, (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)
    )


def _valid_shape(order: OrderPlaced) -> bool:
    seat_ids = [s.seat_id for s in order.seats]
    return (
        bool(seat_ids)
        and len(set(seat_ids)) == len(seat_ids)
        and order.event_id > 0
        and all(s.price >= 0 for s in order.seats)
        and order.total == sum(s.price for s in order.seats)
    )


async def decide_and_write(
    conn: asyncpg.Connection, orders: Sequence[OrderPlaced]
) -> list[Decision]:
    """Decide every order of the batch and write the decisions; call inside a transaction.

    Orders already in PostgreSQL keep their recorded decision (redelivery). New orders
    are decided greedily in batch order against the tickets already sold.
    """
    by_id: dict[str, OrderPlaced] = {}
    for order in orders:
        by_id.setdefault(order.order_id, order)  # a re-published order: first copy wins
    unique = list(by_id.values())
    decided_at = now_ms()

    existing = {
        str(r["order_id"]): r
        for r in await conn.fetch(
            "SELECT order_id, status, reason, conflicting_seats FROM orders.orders"
            " WHERE order_id = ANY($1::uuid[])",
            [o.order_id for o in unique],
        )
    }
    fresh = [o for o in unique if o.order_id not in existing]
    ev = [o.event_id for o in fresh for _ in o.seats]
    st = [s.seat_id for o in fresh for s in o.seats]
    taken: set[tuple[int, str]] = set()
    # Each seat's category and catalog price: the message's are checked against them, so
    # a forged or stale OrderPlaced cannot sell a seat at another price (issue 20.8).
    known: dict[tuple[int, str], tuple[str, int]] = {}
    events: set[int] = set()
    if fresh:
        rows = await conn.fetch(
            "SELECT s.event_id, s.seat_id, c.category, p.price_minor,"
            " (t.ticket_id IS NOT NULL) AS sold"
            " FROM unnest($1::bigint[], $2::text[]) AS s(event_id, seat_id)"
            " JOIN catalog.seats c ON c.event_id = s.event_id AND c.seat_id = s.seat_id"
            " JOIN catalog.price_categories p ON p.event_id = c.event_id AND p.code = c.category"
            " LEFT JOIN orders.tickets t ON t.event_id = s.event_id AND t.seat_id = s.seat_id"
            " AND t.refunded_at IS NULL",
            ev,
            st,
        )
        for r in rows:
            known[(r["event_id"], r["seat_id"])] = (r["category"], r["price_minor"])
            if r["sold"]:
                taken.add((r["event_id"], r["seat_id"]))
        events = {
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM catalog.events WHERE id = ANY($1::bigint[])",
                list({o.event_id for o in fresh}),
            )
        }
    decisions: list[Decision] = []
    for order in unique:
        row = existing.get(order.order_id)
        if row is not None:
            decisions.append(
                Decision(
                    order=order,
                    status=row["status"],
                    reason=row["reason"],
                    conflicting=tuple(row["conflicting_seats"]),
                    decided_at=decided_at,
                )
            )
            continue
        seats = [(order.event_id, s.seat_id) for s in order.seats]
        if order.event_id not in events:
            decisions.append(
                Decision(order, "rejected", "invalid_order", (), decided_at, recorded=False)
            )
        elif not _valid_shape(order) or any(
            known.get((order.event_id, s.seat_id)) != (s.category, s.price) for s in order.seats
        ):
            # An unknown seat, or a category or price that is not the catalog's.
            decisions.append(Decision(order, "rejected", "invalid_order", (), decided_at))
        else:
            lost = tuple(seat for event_id, seat in seats if (event_id, seat) in taken)
            if lost:
                decisions.append(Decision(order, "rejected", "seat_taken", lost, decided_at))
            else:
                taken.update(seats)
                tickets = tuple(ticket_id_for(order.order_id, s.seat_id) for s in order.seats)
                decisions.append(
                    Decision(order, "confirmed", None, (), decided_at, tickets=tickets)
                )

    new = [d for d in decisions if d.order.order_id not in existing and d.recorded]
    if new:
        await _insert(conn, new)
    return decisions


# Staging tables: one pair per PostgreSQL session, emptied by every commit (ON COMMIT
# DELETE ROWS) and by every rollback (the rows belong to the transaction). A batch is
# COPYed into them (binary, one round trip each) and moved into the real tables by one
# INSERT ... SELECT ... ON CONFLICT statement. COPY alone cannot say ON CONFLICT. The
# CREATE ... IF NOT EXISTS runs in every batch's own transaction, not once per session, so
# the write holds behind PgBouncer in transaction mode (any server connection will do).
_STAGING_DDL = """
SET LOCAL client_min_messages = warning;
CREATE TEMP TABLE IF NOT EXISTS persister_orders (
    order_id uuid, event_id bigint, partition smallint, hold_id text, buyer text,
    status text, reason text, conflicting_seats text[], seats jsonb, total_minor bigint,
    currency text, placed_at bigint, decided_at bigint, idempotency_key text,
    fingerprint text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS persister_tickets (
    ticket_id uuid, order_id uuid, event_id bigint, seat_id text, holder text,
    category text, price_minor bigint, currency text
) ON COMMIT DELETE ROWS;
"""
_ORDER_COLUMNS = (
    "order_id", "event_id", "partition", "hold_id", "buyer", "status", "reason",
    "conflicting_seats", "seats", "total_minor", "currency", "placed_at", "decided_at",
    "idempotency_key", "fingerprint",
)  # fmt: skip
_TICKET_COLUMNS = (
    "ticket_id", "order_id", "event_id", "seat_id", "holder", "category", "price_minor",
    "currency",
)  # fmt: skip
# One statement: the orders, their idempotency records and their tickets. The foreign
# keys of the last two onto orders.orders are checked at the end of the statement, when
# the orders are in. Returns how many tickets were written.
_MOVE_STAGED = """
WITH new_orders AS (
    INSERT INTO orders.orders (order_id, event_id, partition, hold_id, buyer, status, reason,
                               conflicting_seats, seats, total_minor, currency, placed_at,
                               decided_at)
    SELECT order_id, event_id, partition, hold_id, buyer, status, reason, conflicting_seats,
           seats, total_minor, currency, to_timestamp(placed_at / 1000.0),
           to_timestamp(decided_at / 1000.0)
    FROM persister_orders
    ON CONFLICT (order_id) DO NOTHING
), new_keys AS (
    INSERT INTO orders.idempotency_keys (buyer, key, fingerprint, order_id)
    SELECT buyer, idempotency_key, fingerprint, order_id
    FROM persister_orders WHERE idempotency_key IS NOT NULL
    ON CONFLICT DO NOTHING
), new_tickets AS (
    INSERT INTO orders.tickets (ticket_id, order_id, event_id, seat_id, holder, category,
                                price_minor, currency)
    SELECT ticket_id, order_id, event_id, seat_id, holder, category, price_minor, currency
    FROM persister_tickets
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM new_tickets
"""


async def _insert(conn: asyncpg.Connection, new: list[Decision]) -> None:
    """Write decided orders (and the tickets of the confirmed ones); inside a transaction.

    The decisions were made against the tickets already sold; if the ticket insert writes
    fewer rows than decided, another writer sold one of the seats in between (two
    consumers during a rebalance): TransientError rolls back, and the retry sees that
    ticket and rejects the loser.
    """
    enc = msgspec.json.encode
    await conn.execute(_STAGING_DDL)
    await conn.copy_records_to_table(
        "persister_orders",
        columns=_ORDER_COLUMNS,
        records=[
            (
                d.order.order_id, d.order.event_id, d.order.partition, d.order.hold_id,
                d.order.buyer, d.status, d.reason, list(d.conflicting),
                enc(d.order.seats).decode(), d.order.total, d.order.currency,
                d.order.placed_at, d.decided_at, d.order.idempotency_key or None,
                d.order.fingerprint or "",
            )
            for d in new
        ],
    )  # fmt: skip
    tickets = [
        (t, d.order.order_id, d.order.event_id, s.seat_id, d.order.buyer, s.category, s.price,
         d.order.currency)
        for d in new if d.status == "confirmed"
        for t, s in zip(d.ticket_ids(), d.order.seats, strict=True)
    ]  # fmt: skip
    if tickets:
        await conn.copy_records_to_table(
            "persister_tickets", columns=_TICKET_COLUMNS, records=tickets
        )
    written = await conn.fetchval(_MOVE_STAGED)
    if written != len(tickets):
        raise TransientError(f"seat race: wrote {written} of {len(tickets)} tickets")


@dataclasses.dataclass(frozen=True, slots=True)
class Written:
    """One batch, committed to PostgreSQL: its decisions and dead letters, to be settled."""

    records: Sequence[ConsumerRecord[Any, Any]]
    decisions: list[Decision]
    dead: list[DeadLetter]
    started: float  # perf_counter() when the batch was taken


class Persister:
    """Decides batches of OrderPlaced; the FastStream handler wraps ``handle``."""

    def __init__(
        self,
        settings: Settings,
        broker: KafkaBroker,
        pool: asyncpg.Pool,
        ledger: SeatLedger | None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.pool = pool
        self.ledger = ledger
        self.prefix = settings.kafka.topic_prefix
        self.max_attempts = max(1, settings.workers.dlq_after_attempts)
        self.send: Send = self._send_with_broker
        self.backlog = (
            RedisBacklog(ledger, settings.workers.redis_backlog_max) if ledger is not None else None
        )

    async def _send_with_broker(self, name: str, value: bytes, key: bytes | None) -> Any:
        return await self.broker.publish(value, name, key=key, no_confirm=True)

    async def handle(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Persist and publish one batch, and queue its Redis updates (one step after the
        other, as the pipeline does them); raises TransientError to retry the batch."""
        written = await self.write(records)
        self.tell_redis(written.decisions)
        await self.publish(written)

    async def write(self, records: Sequence[ConsumerRecord[Any, Any]]) -> Written:
        """Decode and decide the batch and commit it to PostgreSQL (TransientError: retry)."""
        started = time.perf_counter()
        orders: list[tuple[ConsumerRecord[Any, Any], OrderPlaced]] = []
        dead: list[DeadLetter] = []
        for record in records:
            try:
                orders.append((record, msgspec.json.decode(record.value, type=OrderPlaced)))
            except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
                dead.append(self._dead(record, f"undecodable OrderPlaced: {exc}", 1))
        decisions, more_dead = await self._write_split(orders)
        dead.extend(more_dead)
        return Written(records, decisions, dead, started)

    def tell_redis(self, decisions: Sequence[Decision]) -> list[_LedgerEntry]:
        """Queue the batch's Redis updates (pending -> sold or free); see RedisBacklog."""
        if self.backlog is None:
            return []
        return self.backlog.put(decisions)

    async def _write(self, orders: Sequence[OrderPlaced]) -> list[Decision]:
        if not orders:
            return []
        async with self.pool.acquire() as conn, conn.transaction():
            return await decide_and_write(conn, orders)

    async def _write_split(
        self, items: Sequence[tuple[ConsumerRecord[Any, Any], OrderPlaced]]
    ) -> tuple[list[Decision], list[DeadLetter]]:
        """Write the orders in one transaction; on a permanent error, bisect.

        Halves are written in offset order, so the greedy decision order is kept. A
        transient error anywhere raises TransientError (the batch is retried whole; the
        halves already committed are found again as existing orders). A single order
        that keeps failing is rejected (see ``_reject_poison``).
        """
        try:
            return await self._write([o for _, o in items]), []
        except Exception as exc:
            if is_transient(exc):
                raise TransientError(f"{type(exc).__name__}: {exc}") from exc
            if len(items) == 1:
                record, order = items[0]
                return await self._retry_alone(record, order, exc)
            log.warning(
                "batch of %d failed (%s: %s); bisecting", len(items), type(exc).__name__, exc
            )
        mid = len(items) // 2
        first, dead_first = await self._write_split(items[:mid])
        second, dead_second = await self._write_split(items[mid:])
        return first + second, dead_first + dead_second

    async def _retry_alone(
        self, record: ConsumerRecord[Any, Any], order: OrderPlaced, exc: Exception
    ) -> tuple[list[Decision], list[DeadLetter]]:
        """Try one failing order up to ``dlq_after_attempts`` times in all, then reject it."""
        error = f"{type(exc).__name__}: {exc}"
        for attempt in range(2, self.max_attempts + 1):
            log.warning("order %s failed (attempt %d): %s", order.order_id, attempt - 1, error)
            await asyncio.sleep(0.05 * attempt)
            try:
                return await self._write([order]), []
            except Exception as again:
                if is_transient(again):
                    raise TransientError(f"{type(again).__name__}: {again}") from again
                error = f"{type(again).__name__}: {again}"
        return [await self._reject_poison(order)], [self._dead(record, error, self.max_attempts)]

    async def _reject_poison(self, order: OrderPlaced) -> Decision:
        """The order cannot be written: it is rejected (invalid_order), never left pending.

        The rejection is recorded in PostgreSQL when the rejection row itself can be
        written (no tickets, no idempotency record: the bad value may be in either);
        otherwise it is decided unrecorded, and a redelivery decides it the same way.
        """
        decision = Decision(order, "rejected", "invalid_order", (), now_ms())
        # The row without the request's idempotency record (the key may be the bad value).
        row = msgspec.structs.replace(
            decision,
            order=msgspec.structs.replace(order, idempotency_key=None, fingerprint=None),
        )
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await _insert(conn, [row])
        except Exception as exc:
            if is_transient(exc):
                raise TransientError(f"{type(exc).__name__}: {exc}") from exc
            log.warning("rejection of %s not recorded: %s", order.order_id, exc)
            return msgspec.structs.replace(decision, recorded=False)
        return decision

    def _dead(self, record: ConsumerRecord[Any, Any], error: str, attempts: int) -> DeadLetter:
        raw = record.value if isinstance(record.value, bytes) else b""
        key = record.key.decode(errors="replace") if isinstance(record.key, bytes) else None
        return DeadLetter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=key,
            value=raw.decode(errors="replace"),
            error=error[:2000],
            attempts=attempts,
            group=GROUP,
            at=now_ms(),
        )

    async def publish(self, written: Written) -> None:
        """After the commit: publish the outcomes and dead letters, all awaited together."""
        decisions, dead = written.decisions, written.dead
        pending = []
        try:
            for d in decisions:
                name = TOPIC_CONFIRMED if d.status == "confirmed" else TOPIC_REJECTED
                value = encode(d.outcome())
                pending.append(
                    await self.send(
                        topic(self.prefix, name),
                        value,
                        order_key(d.order.event_id, d.order.partition),
                    )
                )
            for letter in dead:
                key = letter.key.encode() if letter.key else None
                pending.append(await self.send(topic(self.prefix, TOPIC_DLQ), encode(letter), key))
            await asyncio.gather(*pending)
        except Exception as exc:
            raise TransientError(f"publishing outcomes failed: {exc}") from exc
        now = now_ms()
        for d in decisions:
            metrics.ORDERS.labels(status=d.status).inc()
            metrics.PURCHASE_DURATION.observe(max(0, now - d.order.placed_at) / 1000)
            if d.status == "confirmed":
                metrics.TICKETS.inc(len(d.order.seats))
        if dead:
            metrics.DEAD_LETTERS.labels(worker=GROUP).inc(len(dead))
            for letter in dead:
                log.error(
                    "dead-lettered %s/%d@%d: %s",
                    letter.topic,
                    letter.partition,
                    letter.offset,
                    letter.error,
                )
        metrics.BATCH_SIZE.observe(len(written.records))
        metrics.BATCH_DURATION.observe(time.perf_counter() - written.started)


class RedisBacklog:
    """What PostgreSQL decided and Redis has still to hear, told in the background.

    PostgreSQL is the arbiter of what was sold; Redis follows it. So a batch never waits
    on Redis to be committed: its decisions are put here, one entry per (event,
    partition) and outcome (``mark_sold_many`` or ``reject_many``), and applied as soon
    as possible; an entry that fails (Redis or one shard away) is retried on its own with
    backoff, so one shard's outage holds back only its own events' entries. The backlog
    is bounded (``redis_backlog_max`` orders): beyond it the oldest entries are dropped,
    counted in ticketbuster_persister_redis_dropped_total and left to the reconciler
    (workers/expirer.py), which repairs Redis from PostgreSQL. A Conflict / NotFound for
    one order means Redis disagrees (failover, rebuild): logged and counted, not retried.
    """

    RETRY_FIRST_S = 0.1
    RETRY_MAX_S = 5.0
    CONCURRENT = 16  # entries applied at once

    def __init__(self, ledger: SeatLedger, max_orders: int) -> None:
        self.ledger = ledger
        self.max_orders = max(1, max_orders)
        self.orders = 0  # orders waiting, the gauge's value
        self.healthy = True  # the last attempt reached Redis
        self._entries: dict[int, _LedgerEntry] = {}  # insertion order: oldest first
        self._next = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def put(self, decisions: Sequence[Decision]) -> list[_LedgerEntry]:
        """Queue the Redis updates of a committed batch; returns its entries (to wait on)."""
        groups: dict[tuple[int, int, Literal["sold", "rejected"]], list[Decision]] = {}
        for d in decisions:
            kind: Literal["sold", "rejected"] = "sold" if d.status == "confirmed" else "rejected"
            groups.setdefault((d.order.event_id, d.order.partition, kind), []).append(d)
        entries = [
            _LedgerEntry(
                event_id,
                partition,
                kind,
                [
                    (d.order.order_id, [s.seat_id for s in d.order.seats], d.order.buyer)
                    for d in batch
                ],
            )
            for (event_id, partition, kind), batch in groups.items()
        ]
        for entry in entries:
            self._entries[self._next] = entry
            entry.key = self._next
            self._next += 1
            self.orders += len(entry.orders)
        while self.orders > self.max_orders and self._entries:
            self._drop(next(iter(self._entries.values())))
        metrics.REDIS_BACKLOG.set(self.orders)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="redis-backlog")
        self._wake.set()
        return entries

    async def wait(self, entries: Sequence[_LedgerEntry], timeout_s: float) -> None:
        """Wait, at most ``timeout_s``, until each entry reached Redis or failed once (so
        a batch never waits on a shard that is away, only on one that is answering)."""
        if entries and timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(e.tried.wait() for e in entries)), timeout=timeout_s
                )

    async def drain(self, timeout_s: float) -> None:
        """Wait, at most ``timeout_s``, until every entry reached Redis (or was dropped)."""
        entries = list(self._entries.values())
        if entries and timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(e.done.wait() for e in entries)), timeout=timeout_s
                )

    async def close(self, timeout_s: float) -> None:
        """Tell Redis what is left, for at most ``timeout_s``; the rest is the reconciler's."""
        await self.drain(timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._entries:
            log.warning(
                "%d orders not told to Redis at shutdown: left to the reconciler", self.orders
            )

    def _drop(self, entry: _LedgerEntry) -> None:
        if self._entries.pop(entry.key, None) is None:
            return
        self.orders -= len(entry.orders)
        metrics.REDIS_DROPPED.inc(len(entry.orders))
        log.warning(
            "redis backlog full: %d orders of event %d left to the reconciler",
            len(entry.orders),
            entry.event_id,
        )
        entry.tried.set()
        entry.done.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            now = loop.time()
            ready = [e for e in self._entries.values() if e.due <= now][: self.CONCURRENT]
            if ready:
                await asyncio.gather(*(self._apply(e) for e in ready), return_exceptions=True)
                continue
            if not self._entries:
                await self._wake.wait()
                continue
            soonest = min(e.due for e in self._entries.values())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, soonest - now))

    async def _apply(self, entry: _LedgerEntry) -> None:
        batch = entry.orders
        try:
            if entry.kind == "sold":
                results = await self.ledger.mark_sold_many(entry.event_id, entry.partition, batch)
            else:
                ids = [order_id for order_id, _, _ in batch]
                results = await self.ledger.reject_many(entry.event_id, entry.partition, ids)
        except Exception as exc:
            entry.attempts += 1
            wait = min(self.RETRY_MAX_S, self.RETRY_FIRST_S * 2 ** (entry.attempts - 1))
            entry.due = asyncio.get_running_loop().time() + wait
            if self.healthy or entry.attempts == 1:
                log.warning(
                    "telling Redis about %d orders of event %d failed (%s: %s); retrying",
                    len(batch),
                    entry.event_id,
                    type(exc).__name__,
                    exc,
                )
            self.healthy = False
            entry.tried.set()
            return
        self.healthy = True
        if self._entries.pop(entry.key, None) is not None:
            self.orders -= len(batch)
            metrics.REDIS_BACKLOG.set(self.orders)
        entry.tried.set()
        entry.done.set()
        for (order_id, _, _), result in zip(batch, results, strict=False):
            if isinstance(result, (Conflict, NotFound)):
                log.warning("redis disagrees about order %s: %s", order_id, result)
                metrics.RECONCILER_MISMATCHES.labels(kind="persister_redis_conflict").inc()


class _LedgerEntry:
    """One script call's worth of a batch: its orders of one (event, partition), one outcome."""

    __slots__ = (
        "attempts", "done", "due", "event_id", "key", "kind", "orders", "partition", "tried",
    )  # fmt: skip

    def __init__(
        self,
        event_id: int,
        partition: int,
        kind: Literal["sold", "rejected"],
        orders: list[tuple[str, list[str], str]],
    ) -> None:
        self.event_id = event_id
        self.partition = partition
        self.kind = kind
        self.orders = orders  # (order_id, seat ids, buyer), in offset order
        self.attempts = 0
        self.due = 0.0
        self.key = 0
        self.tried = asyncio.Event()  # reached Redis, or failed once
        self.done = asyncio.Event()  # reached Redis, or dropped


class BatchPipeline:
    """Writes one batch while the batch before it settles; commits offsets batch by batch.

    The FastStream subscriber hands over one batch at a time (``feed``) and waits for it.
    ``feed`` commits the batch to PostgreSQL, then starts its settling in the background
    and returns, so the subscriber fetches and writes the next batch while this one's
    outcomes are published. A settling is: publish the outcomes (all acknowledged), wait
    a little for Redis (``redis_wait_ms``, and only while Redis answers), then commit
    **this batch's own offsets** with ``consumer.commit({partition: last offset + 1})``.

    Offsets are committed explicitly and never with ``msg.ack()``: under
    ``AckPolicy.MANUAL``, ``ack()`` commits the consumer's *current positions*, which by
    then are past the next batch (already fetched and maybe written, but not published).
    A crash after such a commit would skip that batch's outcomes. With explicit offsets
    a commit covers exactly the records whose decisions are in PostgreSQL and whose
    outcomes were acknowledged by the broker. At most one settling runs: ``feed`` awaits
    the previous one before starting its own, so commits go out in offset order and never
    move a partition backwards.

    Failures rewind. Every seek happens after the previous settling has finished, so two
    seeks never race: a failed settling seeks its own batch back (then the topic can be
    idle and still redeliver it); a ``feed`` that finds the previous settling failed
    seeks back both batches; a failed write seeks back its own batch. A redelivered
    batch is decided again from PostgreSQL (idempotent by order id).
    """

    def __init__(self, persister: Persister, group: str) -> None:
        self.persister = persister
        self.group = group
        self.redis_wait_s = max(0.0, persister.settings.workers.redis_wait_ms / 1000)
        self.failures = 0
        self._settling: tuple[asyncio.Task[bool], Sequence[ConsumerRecord[Any, Any]]] | None = None

    async def feed(
        self, consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[Any, Any]]
    ) -> None:
        previous, self._settling = self._settling, None
        if previous is not None and previous[0].done() and not _succeeded(previous[0]):
            # Its batch comes again (it seeked back); these records come after it.
            rewind(consumer, [*previous[1], *records])
            await self._backoff()
            return
        written: Written | None = None
        try:
            written = await self.persister.write(records)  # overlaps the previous settling
        except TransientError as exc:
            log.warning("batch of %d will be retried: %s", len(records), exc)
        except Exception:
            log.exception("batch of %d failed unexpectedly; retrying", len(records))
        if previous is not None and not await _finished(previous[0]):
            rewind(consumer, [*previous[1], *records])
            await self._backoff()
            return
        if written is None:
            rewind(consumer, records)  # nothing of it is committed: write it again shortly
            await self._backoff()
            return
        self.failures = 0
        # Redis hears of the decisions right after the commit, whatever Kafka does next.
        told = self.persister.tell_redis(written.decisions)
        task = asyncio.create_task(self._settle(consumer, written, told), name="settle-batch")
        self._settling = (task, records)

    async def flush(self) -> None:
        """Let the batch in flight finish settling (shutdown: its offsets get committed)."""
        previous, self._settling = self._settling, None
        if previous is not None:
            await _finished(previous[0])

    async def _settle(
        self, consumer: AIOKafkaConsumer, written: Written, told: Sequence[_LedgerEntry]
    ) -> bool:
        try:
            await self.persister.publish(written)
        except Exception as exc:
            log.warning("batch of %d will be retried: %s", len(written.records), exc)
            rewind(consumer, written.records)
            return False
        backlog = self.persister.backlog
        if backlog is not None and backlog.healthy:
            # While Redis answers, commit after it heard: a crash right after the commit
            # then leaves no seat pending. While it does not, PostgreSQL does not wait.
            await backlog.wait(told, self.redis_wait_s)
        offsets: dict[TopicPartition, int] = {}
        for r in written.records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        try:
            await consumer.commit(offsets)
            await observe_lag(consumer, self.group)
        except Exception as exc:
            # A rebalance took a partition away: its new owner decides the batch again from
            # PostgreSQL (the same decisions, published again). Nothing is lost.
            log.warning("offsets of a batch of %d not committed: %s", len(written.records), exc)
        return True

    async def _backoff(self) -> None:
        await asyncio.sleep(min(5.0, 0.5 * (1 + self.failures)))
        self.failures += 1


def _succeeded(task: asyncio.Task[bool]) -> bool:
    """A finished settling's result; one that raised counts as failed (and is retried)."""
    if task.cancelled() or task.exception() is not None:
        return False
    return task.result()


async def _finished(task: asyncio.Task[bool]) -> bool:
    await asyncio.wait([task])
    return _succeeded(task)


async def _undecoded(msg: KafkaMessage) -> Any:
    """The batch's values as they came: the handler decodes the records with msgspec itself
    (FastStream's decoder would parse every value as JSON a first time, for nothing)."""
    return msg.body


def create_persister(
    settings: Settings | None = None, *, ledger: SeatLedger | None = None, with_ledger: bool = True
) -> FastStream:
    """The persister app. ``ledger`` overrides the Redis inventory (``with_ledger=False``: none)."""
    settings = settings or load_settings()
    prefix = settings.kafka.topic_prefix
    group = f"{prefix}{GROUP}"
    broker = create_broker(settings, "persister")
    state: dict[str, Any] = {}

    @broker.subscriber(
        topic(prefix, TOPIC_PLACED),
        group_id=group,
        batch=True,
        max_records=settings.workers.batch_max_records,
        batch_timeout_ms=settings.workers.batch_timeout_ms,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset="earliest",
        decoder=_undecoded,
    )
    async def persist(msg: KafkaMessage) -> None:
        records = msg.raw_message
        if not isinstance(records, tuple):
            records = (records,)
        # Commits this batch's own offsets once it is in PostgreSQL and its outcomes are
        # published, never msg.ack() (the consumer's positions): see BatchPipeline.
        pipeline: BatchPipeline = state["pipeline"]
        await pipeline.feed(msg.consumer, records)

    async def startup() -> None:
        await ensure_topics(settings)
        state["pool"] = await create_pg_pool(settings)
        chosen = ledger
        if chosen is None and with_ledger:
            from core.inventory import Inventory

            state["redis"] = await create_redis(settings)
            chosen = Inventory(state["redis"], settings.holds)
        persister = Persister(settings, broker, state["pool"], chosen)
        # A plain aiokafka producer for the outcomes: a third of the per-message cost of
        # broker.publish, which matters at 500 messages per batch (decision 0402).
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap,
            acks="all",
            enable_idempotence=settings.kafka.idempotent_producer,
            # A batch's outcomes leave as a few large produce requests, not dozens of 16 KiB
            # ones (500 outcomes are ~300 KiB); they settle while the next batch is written.
            linger_ms=5,
            max_batch_size=512 * 1024,
            client_id="persister",
        )
        await producer.start()
        state["producer"] = producer

        async def send(name: str, value: bytes, key: bytes | None) -> Any:
            return await producer.send(name, value=value, key=key)

        persister.send = send
        state["persister"] = persister
        state["pipeline"] = BatchPipeline(persister, group)

    async def finish_batches() -> None:
        # Before the broker stops: the batch in flight commits its offsets.
        if "pipeline" in state:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(state["pipeline"].flush(), timeout=10)

    async def shutdown() -> None:
        persister = state.get("persister")
        if persister is not None and persister.backlog is not None:
            await persister.backlog.close(timeout_s=5)
        if "producer" in state:
            await state["producer"].stop()
        if "pool" in state:
            await state["pool"].close()
        if "redis" in state:
            await state["redis"].aclose()

    async def ready() -> bool:
        return await pg_ready(state.get("pool")) and await broker.ping(timeout=2)

    app = FastStream(broker, logger=log)
    attach_probes(app, settings.workers.persister_port, settings.workers.http_host, ready)
    app.on_startup(startup)
    app.on_shutdown(finish_batches)
    app.after_shutdown(shutdown)
    return app


if __name__ == "__main__":
    run(create_persister())
