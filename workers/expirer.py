"""Hold expirer and reconciler: the saga's safety net.

Two loops over the events past their draft (``catalog.events``, each of its partitions):

- **sweep** (every ``sweep_interval_s``): ``Inventory.sweep`` releases expired holds
  (with seat deltas, so live seat maps update).
- **reconcile** (every ``reconcile_interval_s``): compares the sold and sold-pending
  seats in Redis with the tickets and decided orders in PostgreSQL, per seat:

  ==========================  =====================================================
  kind                        action
  ==========================  =====================================================
  ``ticket_not_sold``         PG has a ticket, Redis does not say sold under its
                              order (lost after a failover): ``mark_sold`` with the
                              seats (PostgreSQL is the arbiter)
  ``pending_decided``         Redis pending, PG decided: ``mark_sold`` / ``reject``
  ``pending_stuck``           Redis pending past ``reconcile_grace_s``, no PG row:
                              re-publish ``OrderPlaced`` from the buyer's pending
                              record (the persister is idempotent), or ``reject``
                              (free the seats) when no record is left
  ``sold_without_ticket``     Redis sold, no ticket in PG: reported only (a human
                              decides; the seat stays unsellable, the safe side)
  ``repair_failed``           seats whose repair failed this pass (logged; the pass
                              goes on with the other orders)
  ``partition_failed``        partitions whose pass failed (Redis or PG away)
  ==========================  =====================================================

  A ticket in PG whose order Redis rejected (released as stuck while the persister
  was only late) counts as ``ticket_not_sold``: ``mark_sold`` with its seats sells them
  under the order, as for an order Redis lost. A lasting ``repair_failed`` or
  ``partition_failed`` keeps the mismatch gauge up, so TicketBusterReconcilerMismatch
  fires.

  Exports ``ticketbuster_reconciler_mismatches{kind}`` (seats found at the last pass),
  ``ticketbuster_seats{event,status}`` (free/held/pending/sold per event) and
  ``ticketbuster_oversold_seats`` (seats with more than one ticket in PG, counted
  without trusting the UNIQUE constraint; must stay 0).

Reads the partition's ``state`` and ``orders`` hashes directly (data model in
``lua/lib/prelude.lua``); every change goes through ``core.inventory.Inventory``.

Run: ``uv run python -m workers.expirer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import msgspec
from faststream import FastStream
from faststream.kafka import KafkaBroker
from redis.asyncio.cluster import RedisCluster

from core.clock import now_ms
from core.errors import DomainError
from core.inventory import (
    KEY_NAMES,
    SINGLE_PARTITION,
    Inventory,
    PartitionPlan,
    partition_keys,
)
from core.orders import TOPIC_PLACED, OrderPlaced, order_key, pending_orders_key, topic
from core.settings import Settings, load_settings
from workers import metrics
from workers.runtime import (
    attach_probes,
    create_broker,
    create_pg_pool,
    create_redis,
    ensure_topics,
    pg_ready,
    run,
)

log = logging.getLogger("ticketbuster.expirer")

KINDS = (
    "ticket_not_sold",
    "pending_decided",
    "pending_stuck",
    "sold_without_ticket",
    # Seats whose repair failed at the last pass, and partitions whose pass failed: both
    # keep ticketbuster_reconciler_mismatches up, so the mismatch alert fires.
    "repair_failed",
    "partition_failed",
)
_SEATS = KEY_NAMES.index("seats")
_STATE = KEY_NAMES.index("state")
_ORDERS = KEY_NAMES.index("orders")


class _RedisOrder(msgspec.Struct):
    b: str = ""
    p: int = 0  # pending since (ms)
    st: str = ""


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        broker: KafkaBroker,
        pool: asyncpg.Pool,
        redis: RedisCluster,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.pool = pool
        self.redis = redis
        self.plans: dict[int, PartitionPlan] = {}
        self._seat_counts: dict[tuple[int, int], dict[str, int]] = {}
        # When each stuck order was last re-published (ms): once per grace period, not on
        # every pass. While the persister is away (a restart, a group rebalance) a re-publish
        # on every pass would put the same order on the topic again and again, and each copy
        # comes back as one more OrderConfirmed, ticket reissue check and notification.
        self._republished: dict[str, int] = {}
        self.inventory = Inventory(redis, settings.holds, plans=self.plan)

    async def partitions(self) -> list[tuple[int, int]]:
        """(event, partition) of every event past its draft that has not been over for a day;
        refreshes the plans."""
        rows = await self.pool.fetch(
            "SELECT e.id, e.partitions,"
            " coalesce(jsonb_object_agg(s.code, s.partition)"
            "          FILTER (WHERE s.code IS NOT NULL), '{}') AS sections"
            " FROM catalog.events e LEFT JOIN catalog.sections s ON s.event_id = e.id"
            # Paused, closed and cancelled events keep holds to expire and orders to
            # settle, so they are swept and reconciled as long as published ones.
            " WHERE e.status <> 'draft' AND e.starts_at > now() - interval '1 day'"
            " GROUP BY e.id"
        )
        for r in rows:
            sections = msgspec.json.decode(r["sections"], type=dict[str, int])
            self.plans[r["id"]] = PartitionPlan(count=r["partitions"], sections=sections)
        return [(r["id"], p) for r in rows for p in range(r["partitions"])]

    def plan(self, event_id: int) -> PartitionPlan:
        return self.plans.get(event_id, SINGLE_PARTITION)

    async def sweep(self) -> int:
        swept = 0
        for event_id, partition in await self.partitions():
            try:
                swept += await self.inventory.sweep(event_id, partition)
            except DomainError as exc:
                log.warning("sweep of %d/%d failed: %s", event_id, partition, exc)
        if swept:
            metrics.HOLDS_SWEPT.inc(swept)
        return swept

    async def reconcile(self, events: list[tuple[int, int]] | None = None) -> dict[str, int]:
        """One pass; returns seats found per kind (also exported as the gauge)."""
        found = dict.fromkeys(KINDS, 0)
        forget = now_ms() - 10 * int(self.settings.workers.reconcile_grace_s * 1000)
        self._republished = {o: t for o, t in self._republished.items() if t > forget}
        for event_id, partition in events or await self.partitions():
            try:
                counts = await self._reconcile_partition(event_id, partition)
            except (DomainError, OSError) as exc:
                log.warning("reconcile of %d/%d failed: %s", event_id, partition, exc)
                found["partition_failed"] += 1
                continue
            for kind, n in counts.items():
                found[kind] += n
        for kind, n in found.items():
            metrics.RECONCILER_MISMATCHES.labels(kind=kind).set(n)
        per_event: dict[int, dict[str, int]] = {}
        for (event_id, _), counts in self._seat_counts.items():
            into = per_event.setdefault(event_id, dict.fromkeys(counts, 0))
            for status, n in counts.items():
                into[status] += n
        for event_id, counts in per_event.items():
            for status, n in counts.items():
                metrics.SEATS.labels(event=str(event_id), status=status).set(n)
        oversold = await self.pool.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM orders.tickets WHERE refunded_at IS NULL"
            " GROUP BY event_id, seat_id HAVING count(*) > 1) d"
        )
        metrics.OVERSOLD_SEATS.set(oversold or 0)
        return found

    async def _reconcile_partition(self, event_id: int, partition: int) -> dict[str, int]:
        keys = partition_keys(event_id, partition)
        raw_state = await self.redis.hgetall(keys[_STATE])
        total = int(await self.redis.hlen(keys[_SEATS]))
        redis_seats: dict[str, tuple[str, str]] = {}  # seat -> (kind "p"/"s", order)
        held = 0
        now = now_ms()
        for seat, value in raw_state.items():
            v = value.decode() if isinstance(value, bytes) else value
            if v[:2] in ("p|", "s|"):
                redis_seats[seat.decode() if isinstance(seat, bytes) else seat] = (v[0], v[2:])
            elif v.startswith("h|") and int(v.split("|")[1]) > now:
                held += 1
        sold = sum(1 for kind, _ in redis_seats.values() if kind == "s")
        pending = len(redis_seats) - sold
        self._seat_counts[(event_id, partition)] = {
            "free": max(0, total - held - len(redis_seats)),
            "held": held,
            "pending": pending,
            "sold": sold,
        }
        tickets = {
            r["seat_id"]: (str(r["order_id"]), r["holder"])
            for r in await self.pool.fetch(
                "SELECT seat_id, order_id, holder FROM orders.tickets"
                " WHERE event_id = $1 AND refunded_at IS NULL",
                event_id,
            )
        }
        counts = dict.fromkeys(KINDS, 0)
        # PG sold it, Redis does not say so: force sold (per order).
        to_mark: dict[str, tuple[str, list[str]]] = {}
        for seat, (order_id, holder) in tickets.items():
            if self._partition_of(event_id, seat) != partition:
                continue
            if redis_seats.get(seat) != ("s", order_id):
                to_mark.setdefault(order_id, (holder, []))[1].append(seat)
                counts[
                    "pending_decided"
                    if redis_seats.get(seat) == ("p", order_id)
                    else "ticket_not_sold"
                ] += 1
        for seat, (kind, _order) in redis_seats.items():
            if kind == "s" and seat not in tickets:
                counts["sold_without_ticket"] += 1
        for order_id, (holder, seats) in to_mark.items():
            # One order that cannot be repaired must not stop the others' repairs.
            try:
                await self.inventory.mark_sold(event_id, partition, order_id, seats, holder)
            except DomainError as exc:
                log.error(
                    "reconcile %d/%d: order %s committed in PostgreSQL but not sold in Redis,"
                    " and the repair failed: %s",
                    event_id,
                    partition,
                    order_id,
                    exc,
                )
                counts["repair_failed"] += len(seats)
                continue
            metrics.STUCK_ORDERS.labels(action="mark_sold").inc()

        stuck = {o for kind, o in redis_seats.values() if kind == "p"} - set(to_mark)
        if stuck:
            counts_p = await self._settle_pending(event_id, partition, keys, sorted(stuck))
            for kind, n in counts_p.items():
                counts[kind] += n
        return counts

    def _partition_of(self, event_id: int, seat: str) -> int:
        return self.plan(event_id).partition_of(seat)

    async def _settle_pending(
        self, event_id: int, partition: int, keys: list[str], pending: list[str]
    ) -> dict[str, int]:
        counts = {"pending_decided": 0, "pending_stuck": 0}
        rows = {
            str(r["order_id"]): r["status"]
            for r in await self.pool.fetch(
                "SELECT order_id, status FROM orders.orders WHERE order_id = ANY($1::uuid[])",
                pending,
            )
        }
        raw_orders = await self.redis.hmget(keys[_ORDERS], pending)
        grace_ms = int(self.settings.workers.reconcile_grace_s * 1000)
        now = now_ms()
        for order_id, raw in zip(pending, raw_orders, strict=True):
            order = msgspec.json.decode(raw, type=_RedisOrder) if raw else _RedisOrder()
            status = rows.get(order_id)
            if status == "rejected":
                counts["pending_decided"] += 1
                await self.inventory.reject(event_id, partition, order_id)
                metrics.STUCK_ORDERS.labels(action="reject").inc()
                continue
            if now - order.p < grace_ms:
                continue  # still in flight
            counts["pending_stuck"] += 1
            if now - self._republished.get(order_id, 0) < grace_ms:
                continue  # re-published within the grace period: give that copy its time
            if await self._unstick(event_id, partition, order_id, order.b):
                self._republished[order_id] = now
        return counts

    async def _unstick(self, event_id: int, partition: int, order_id: str, buyer: str) -> bool:
        """Re-publish the order from its pending record (True), or release it without one."""
        record = await self.redis.hget(pending_orders_key(buyer), order_id) if buyer else None
        if record is not None:
            placed = msgspec.json.decode(record, type=OrderPlaced)
            # Bounded: a broker that does not answer must not stall the whole pass (the
            # partition's pass fails and the next one tries again).
            await asyncio.wait_for(
                self.broker.publish(
                    record,
                    topic(self.settings.kafka.topic_prefix, TOPIC_PLACED),
                    key=order_key(placed.event_id, placed.partition),
                ),
                timeout=self.settings.kafka.request_timeout_s,
            )
            log.warning("re-published stuck order %s", order_id)
            metrics.STUCK_ORDERS.labels(action="republish").inc()
            return True
        await self.inventory.reject(event_id, partition, order_id)
        log.warning("released stuck order %s (no record to re-publish)", order_id)
        metrics.STUCK_ORDERS.labels(action="release").inc()
        return False


async def _every(interval_s: float, step: Any, name: str) -> None:
    while True:
        try:
            await step()
        except Exception:
            log.exception("%s pass failed", name)
        await asyncio.sleep(interval_s)


def create_expirer(settings: Settings | None = None) -> FastStream:
    settings = settings or load_settings()
    broker = create_broker(settings, "expirer")
    state: dict[str, Any] = {}

    async def startup() -> None:
        await ensure_topics(settings)
        state["pool"] = await create_pg_pool(settings)
        state["redis"] = await create_redis(settings)
        state["reconciler"] = Reconciler(settings, broker, state["pool"], state["redis"])

    async def after_startup() -> None:
        reconciler: Reconciler = state["reconciler"]
        state["tasks"] = [
            asyncio.create_task(
                _every(settings.workers.sweep_interval_s, reconciler.sweep, "sweep")
            ),
            asyncio.create_task(
                _every(settings.workers.reconcile_interval_s, reconciler.reconcile, "reconcile")
            ),
        ]

    async def shutdown() -> None:
        for task in state.get("tasks", []):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if "pool" in state:
            await state["pool"].close()
        if "redis" in state:
            await state["redis"].aclose()

    async def ready() -> bool:
        return await pg_ready(state.get("pool")) and await broker.ping(timeout=2)

    app = FastStream(broker, logger=log)
    attach_probes(app, settings.workers.expirer_port, settings.workers.http_host, ready)
    app.on_startup(startup)
    app.after_startup(after_startup)
    app.on_shutdown(shutdown)
    return app


if __name__ == "__main__":
    run(create_expirer())
