"""The payments worker: the saga's timeouts and compensations, and refunds paid back.

One pass every ``TB_PAYMENTS_WORKER_INTERVAL_S``; every step is a conditional UPDATE or
an idempotent call, so two workers, or a pass cut short by a crash, do nothing twice:

1. a payment still pending after its window (plus a grace) expires: nothing was charged,
   and a capture that still arrives later is refunded (api/payments/service.py);
2. a capture whose order the persister rejected becomes a refund (kind ``rejected``);
3. every confirmed order of a cancelled event (``orders.refund = 'due'``) gets its refund
   (kind ``event_cancelled``): tickets revoked, seats returned, money paid back;
4. a refund whose seats are not back on sale yet returns them (lua/refund.lua);
5. a refund not paid back yet is paid through the provider, retried with exponential
   backoff (core.payments.refund_retry_delay_s) until it succeeds;
6. the reconciliation: captured payments with no order after 30 minutes are counted
   (``ticketbuster_payment_mismatches``) for an operator to look at.

Around step 5, each refund state not yet told (``payments.refunds.published_status``, an
outbox) is published to the ``notifications`` topic as a ``RefundChanged``, and marked
told once the broker has it: at least once, in order per refund.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from faststream.kafka import KafkaBroker

from core.clock import now_ms
from core.inventory import Inventory
from core.orders import TOPIC_NOTIFICATIONS, encode, event_key, topic
from core.payments import (
    PaymentProvider,
    RefundChanged,
    RefundRefused,
    provider_for,
    record_refund,
    refund_id_for,
    refund_retry_delay_s,
    refund_view,
)
from core.settings import Settings, load_settings
from workers import metrics
from workers.runtime import (
    ProbeServer,
    configure_logging,
    create_broker,
    create_pg_pool,
    create_redis,
    ensure_topics,
    pg_ready,
)

log = logging.getLogger("ticketbuster.payments")

BATCH = 200

# Publishes one message (value, key) to the notifications topic; returns once the broker
# has it.
Publish = Callable[[bytes, bytes], Awaitable[None]]


class PaymentsWorker:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        inventory: Inventory,
        provider: PaymentProvider,
        publish: Publish | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.inventory = inventory
        self.provider = provider
        # None: refunds are not told (a worker without a broker, in some tests).
        self.publish = publish

    async def run_once(self) -> dict[str, int]:
        done = {
            "expired": await self.expire_payments(),
            "rejected": await self.refund_rejected(),
            "cancelled": await self.refund_cancelled_events(),
            "seats": await self.return_seats(),
        }
        done["told"] = await self.publish_refunds()
        refunded, failed = await self.pay_back()
        done["refunded"], done["failed"] = refunded, failed
        done["told"] += await self.publish_refunds()
        done["orders_settled"] = await self.settle_orders()
        await self.reconcile()
        return done

    async def expire_payments(self) -> int:
        p = self.settings.payments
        status = await self.pool.execute(
            "UPDATE payments.payments SET status = 'expired', reason = 'timeout',"
            " updated_at = now() WHERE status = 'pending'"
            " AND created_at < now() - make_interval(secs => $1)",
            float(p.window_s + p.expire_grace_s),
        )
        return int(status.split()[-1])

    async def refund_rejected(self) -> int:
        rows = await self.pool.fetch(
            "SELECT p.* FROM payments.payments p JOIN orders.orders o ON o.order_id = p.order_id"
            " WHERE p.status = 'captured' AND o.status = 'rejected' LIMIT $1",
            BATCH,
        )
        for row in rows:
            async with self.pool.acquire() as conn, conn.transaction():
                changed = await conn.execute(
                    "UPDATE payments.payments SET status = 'refunding', reason = 'order_rejected',"
                    " updated_at = now() WHERE payment_id = $1 AND status = 'captured'",
                    row["payment_id"],
                )
                if not changed.endswith(" 1"):
                    continue
                await conn.execute(
                    "INSERT INTO payments.refunds (refund_id, order_id, payment_id, event_id,"
                    " kind, amount_minor, currency, seats_returned, reason, actor)"
                    " VALUES ($1, $2, $3, $4, 'rejected', $5, $6, true, 'order_rejected',"
                    " 'system') ON CONFLICT (refund_id) DO NOTHING",
                    uuid.UUID(refund_id_for("rejected", str(row["payment_id"]))),
                    row["order_id"],
                    row["payment_id"],
                    row["event_id"],
                    row["amount_minor"],
                    row["currency"],
                )
        return len(rows)

    async def refund_cancelled_events(self) -> int:
        """Orders due a refund because their event was cancelled (organizer/service.py
        marks them; a trigger marks those confirmed afterwards)."""
        rows = await self.pool.fetch(
            "SELECT o.order_id FROM orders.orders o WHERE o.refund = 'due'"
            " AND NOT EXISTS (SELECT 1 FROM payments.refunds r WHERE r.order_id = o.order_id"
            " AND r.kind = 'event_cancelled') LIMIT $1",
            BATCH,
        )
        made = 0
        for r in rows:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await record_refund(
                        conn,
                        order_id=str(r["order_id"]),
                        kind="event_cancelled",
                        actor="system",
                        reason="event cancelled",
                    )
                made += 1
            except RefundRefused:
                # Nothing left to refund (refunded or admitted before): settle the mark.
                await self.pool.execute(
                    "UPDATE orders.orders SET refund = 'refunded' WHERE order_id = $1"
                    " AND refund = 'due'",
                    r["order_id"],
                )
        return made

    async def return_seats(self) -> int:
        rows = await self.pool.fetch(
            "SELECT r.refund_id, r.order_id, o.event_id, o.partition,"
            " array_agg(t.seat_id) AS seats FROM payments.refunds r"
            " JOIN orders.orders o ON o.order_id = r.order_id"
            " JOIN orders.tickets t ON t.ticket_id = ANY(r.ticket_ids)"
            " WHERE NOT r.seats_returned GROUP BY r.refund_id, o.event_id, o.partition"
            " LIMIT $1",
            BATCH,
        )
        for r in rows:
            try:
                await self.inventory.refund(
                    r["event_id"], r["partition"], str(r["order_id"]), list(r["seats"])
                )
            except Exception as exc:  # Redis is away: next pass
                log.warning("refund %s: seats not returned: %s", r["refund_id"], exc)
                continue
            await self.pool.execute(
                "UPDATE payments.refunds SET seats_returned = true WHERE refund_id = $1",
                r["refund_id"],
            )
        return len(rows)

    async def pay_back(self) -> tuple[int, int]:
        rows = await self.pool.fetch(
            "SELECT r.*, p.provider_ref FROM payments.refunds r"
            " LEFT JOIN payments.payments p ON p.payment_id = r.payment_id"
            " WHERE r.status <> 'refunded' AND r.next_attempt_at <= now()"
            " ORDER BY r.next_attempt_at LIMIT $1",
            BATCH,
        )
        refunded = failed = 0
        for r in rows:
            if r["payment_id"] is None or r["amount_minor"] == 0:
                outcome_ok, ref, error = True, None, None  # nothing was charged
            elif r["provider_ref"] is None:
                outcome_ok, ref, error = False, None, "the payment has no provider reference"
            else:
                outcome = await self.provider.refund(
                    provider_ref=r["provider_ref"],
                    amount=r["amount_minor"],
                    currency=r["currency"],
                    idempotency_key=str(r["refund_id"]),
                )
                outcome_ok, ref, error = outcome.ok, outcome.provider_ref, outcome.error
            if outcome_ok:
                refunded += 1
                metrics.REFUNDS.labels(outcome="refunded", kind=r["kind"]).inc()
                await self._refunded(r, ref)
            else:
                failed += 1
                metrics.REFUNDS.labels(outcome="failed", kind=r["kind"]).inc()
                delay = refund_retry_delay_s(r["attempts"] + 1)
                log.warning("refund %s failed (%s); again in %.0f s", r["refund_id"], error, delay)
                await self.pool.execute(
                    "UPDATE payments.refunds SET status = 'failed', attempts = attempts + 1,"
                    " last_error = $2, next_attempt_at = now() + make_interval(secs => $3)"
                    " WHERE refund_id = $1 AND status <> 'refunded'",
                    r["refund_id"],
                    (error or "")[:500],
                    delay,
                )
        return refunded, failed

    async def _refunded(self, r: Any, ref: str | None) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE payments.refunds SET status = 'refunded', refunded_at = now(),"
                " attempts = attempts + 1, provider_ref = $2, last_error = NULL"
                " WHERE refund_id = $1 AND status <> 'refunded'",
                r["refund_id"],
                ref,
            )
            if r["payment_id"] is not None:
                # The payment is refunded when the money of every refund due is back.
                await conn.execute(
                    "UPDATE payments.payments p SET status = 'refunded', updated_at = now()"
                    " WHERE p.payment_id = $1 AND p.status = 'refunding' AND NOT EXISTS ("
                    " SELECT 1 FROM payments.refunds r WHERE r.payment_id = p.payment_id"
                    " AND r.status <> 'refunded')",
                    r["payment_id"],
                )

    async def publish_refunds(self) -> int:
        """Tell each refund state not told yet (the outbox in ``payments.refunds``)."""
        if self.publish is None:
            return 0
        rows = await self.pool.fetch(
            "SELECT r.*, coalesce(o.buyer, p.buyer) AS buyer FROM payments.refunds r"
            " LEFT JOIN orders.orders o ON o.order_id = r.order_id"
            " LEFT JOIN payments.payments p ON p.payment_id = r.payment_id"
            " WHERE r.published_status IS DISTINCT FROM r.status"
            " ORDER BY r.created_at LIMIT $1",
            BATCH,
        )
        name = topic(self.settings.kafka.topic_prefix, TOPIC_NOTIFICATIONS)
        told = 0
        for r in rows:
            change = RefundChanged(
                refund=refund_view(r), buyer=r["buyer"], event_id=r["event_id"], at=now_ms()
            )
            await self.publish(encode(change), event_key(r["event_id"]))
            # Told as of this status; a status that moved on since is told next pass.
            await self.pool.execute(
                "UPDATE payments.refunds SET published_status = $2"
                " WHERE refund_id = $1 AND status = $2",
                r["refund_id"],
                r["status"],
            )
            metrics.REFUND_NOTICES.labels(status=r["status"]).inc()
            told += 1
        log.debug("told %d refund states on %s", told, name)
        return told

    async def settle_orders(self) -> int:
        """A cancelled event's order is refunded once no ticket is left to refund and
        every refund of it is paid back."""
        status = await self.pool.execute(
            "UPDATE orders.orders o SET refund = 'refunded' WHERE o.refund = 'due'"
            " AND EXISTS (SELECT 1 FROM payments.refunds r WHERE r.order_id = o.order_id)"
            " AND NOT EXISTS (SELECT 1 FROM payments.refunds r WHERE r.order_id = o.order_id"
            " AND r.status <> 'refunded')"
            " AND NOT EXISTS (SELECT 1 FROM orders.tickets t LEFT JOIN orders.checkins c"
            " ON c.ticket_id = t.ticket_id WHERE t.order_id = o.order_id"
            " AND t.refunded_at IS NULL AND c.ticket_id IS NULL)"
        )
        return int(status.split()[-1])

    async def reconcile(self) -> None:
        n = await self.pool.fetchval(
            "SELECT count(*) FROM payments.payments WHERE status = 'captured'"
            " AND order_id IS NULL AND captured_at < now() - interval '30 minutes'"
        )
        metrics.PAYMENT_MISMATCHES.labels(kind="captured_without_order").set(n or 0)


def broker_publish(settings: Settings, broker: KafkaBroker) -> Publish:
    """``Publish`` to the notifications topic through ``broker`` (acks from all replicas)."""
    name = topic(settings.kafka.topic_prefix, TOPIC_NOTIFICATIONS)

    async def publish(value: bytes, key: bytes) -> None:
        await broker.publish(value, name, key=key)

    return publish


async def serve(settings: Settings) -> None:
    pool = await create_pg_pool(settings)
    redis = await create_redis(settings)
    await ensure_topics(settings)
    broker = create_broker(settings, "payments")
    await broker.start()
    worker = PaymentsWorker(
        settings,
        pool,
        Inventory(redis, settings.holds),
        provider_for(settings.payments),
        broker_publish(settings, broker),
    )
    probes = ProbeServer(
        settings.workers.http_host, settings.workers.payments_port, lambda: pg_ready(pool)
    )
    await probes.start()
    log.info("payments worker every %.1f s", settings.payments.worker_interval_s)
    try:
        while True:
            try:
                await worker.run_once()
            except Exception:
                log.exception("payments pass failed")
            await asyncio.sleep(settings.payments.worker_interval_s)
    finally:
        await probes.stop()
        await broker.stop()
        await worker.provider.aclose()
        worker.inventory.close()
        await redis.aclose()
        await pool.close()


def main(argv: list[str]) -> int:
    configure_logging()
    if argv:
        print("usage: python -m workers.payments", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(load_settings()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
