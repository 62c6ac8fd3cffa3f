"""The payments and refunds endpoints' logic (core/payments.py has the rules).

A payment pays for one hold; the provider's signed webhook captures it and places the
order with ``OrderService.place`` (the same code as ``POST /api/v1/orders``), keyed by
the payment, so a redelivered webhook places nothing twice. What cannot become an order
is refunded (``payments.refunds`` kind ``unplaced``; the payments worker pays it back).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any, Final

import asyncpg
import msgspec

from api.orders.service import OrderService, validate_idempotency_key
from core.clock import epoch_ms, now_ms
from core.errors import DomainError, InvalidInput, NotFound, Unavailable
from core.inventory import Inventory
from core.orders import OrderAccepted
from core.payments import (
    PaymentEvent,
    PaymentProvider,
    PaymentView,
    RefundKind,
    RefundRecord,
    RefundRefused,
    RefundView,
    amount_of,
    may_self_cancel,
    order_key_for,
    payment_id_for,
    payment_view,
    record_refund,
    refund_id_for,
    refund_view,
)
from core.settings import Settings

log = logging.getLogger("ticketbuster.payments")


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} {value!r} not found") from None


class PaymentService:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        provider: PaymentProvider,
        orders: OrderService,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.provider = provider
        self.orders = orders

    @property
    def inventory(self) -> Inventory:
        if self.orders.inventory is None or self.orders.catalog is None:
            raise Unavailable("payments are not ready, retry shortly")
        return self.orders.inventory

    # -- paying --------------------------------------------------------------------------

    async def create(
        self, buyer: str, key: str | None, hold_id: str, admission: str | None
    ) -> tuple[int, PaymentView]:
        """Start paying for the caller's hold: (201 new | 200 the same request again)."""
        key = validate_idempotency_key(key)
        inventory = self.inventory
        assert self.orders.catalog is not None
        await self.orders.check_admission(buyer, hold_id, admission)
        pid = payment_id_for(buyer, key, hold_id)
        row = await self.pool.fetchrow(
            "SELECT * FROM payments.payments WHERE payment_id = $1", uuid.UUID(pid)
        )
        if row is not None and row["buyer"] == buyer and row["provider_ref"] is not None:
            return 200, payment_view(row)
        hold = await inventory.get_hold(hold_id, buyer)
        prices = await self.orders.catalog.prices(hold.event_id)
        amount = amount_of(
            [hold.categories[s] for s in hold.seats],
            {c: p.price_minor for c, p in prices.items()},
        )
        if amount <= 0:
            raise InvalidInput("this hold costs nothing: buy it with POST /api/v1/orders")
        currency = next(iter(prices.values())).currency
        if row is None:
            await self.pool.execute(
                "INSERT INTO payments.payments (payment_id, buyer, hold_id, event_id,"
                " amount_minor, currency, provider) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " ON CONFLICT (payment_id) DO NOTHING",
                uuid.UUID(pid),
                buyer,
                hold_id,
                hold.event_id,
                amount,
                currency,
                self.provider.name,
            )
        # The payment window is a hold: it lasts as long as the hold, extended now so
        # the buyer has the hold's full TTL to approve (within the lifetime cap).
        await inventory.extend(hold_id, buyer)
        checkout = await self.provider.create(
            payment_id=pid,
            amount=amount,
            currency=currency,
            description=f"TicketBuster event {hold.event_id}, {len(hold.seats)} seat(s)",
        )
        row = await self.pool.fetchrow(
            "UPDATE payments.payments SET provider_ref = $2, checkout_url = $3,"
            " client_secret = $4, updated_at = now() WHERE payment_id = $1 RETURNING *",
            uuid.UUID(pid),
            checkout.provider_ref,
            checkout.checkout_url,
            checkout.client_secret,
        )
        return 201, payment_view(row)

    async def payment(self, buyer: str, payment_id: str) -> PaymentView:
        row = await self.pool.fetchrow(
            "SELECT * FROM payments.payments WHERE payment_id = $1 AND buyer = $2",
            _uuid(payment_id, "payment"),
            buyer,
        )
        if row is None:
            raise NotFound(f"payment {payment_id} not found")
        return payment_view(row)

    # -- the provider's webhook ----------------------------------------------------------

    async def webhook(self, headers: Mapping[str, str], body: bytes) -> str:
        """Handle a verified notification; what it did ("ignored", "duplicate", ...).
        A 503 raised here makes the provider deliver it again."""
        event = self.provider.parse_webhook(headers, body)
        if event is None:
            return "ignored"
        if event.kind == "failed":
            done = await self.pool.execute(
                "UPDATE payments.payments SET status = 'declined', reason = 'declined',"
                " updated_at = now() WHERE provider = $1 AND provider_ref = $2"
                " AND status IN ('pending', 'expired')",
                self.provider.name,
                event.provider_ref,
            )
            return "declined" if done.endswith(" 1") else "duplicate"
        return await self._captured(event)

    async def _captured(self, event: PaymentEvent) -> str:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM payments.payments WHERE provider = $1 AND provider_ref = $2"
                " FOR UPDATE",
                self.provider.name,
                event.provider_ref,
            )
            if row is None:
                # Not (yet) ours: the provider tries again later.
                raise NotFound(f"no payment with provider reference {event.provider_ref!r}")
            if row["status"] in ("refunding", "refunded") or row["order_id"] is not None:
                return "duplicate"
            if (event.amount, event.currency.upper()) != (row["amount_minor"], row["currency"]):
                log.warning(
                    "payment %s captured %s %s, order is %s %s: refunded",
                    row["payment_id"],
                    event.amount,
                    event.currency,
                    row["amount_minor"],
                    row["currency"],
                )
                await self._unplaced(conn, row, "amount_mismatch", event.amount)
                return "refunded"
            await conn.execute(
                "UPDATE payments.payments SET status = 'captured', reason = NULL,"
                " captured_at = coalesce(captured_at, now()), updated_at = now()"
                " WHERE payment_id = $1",
                row["payment_id"],
            )
        pid = str(row["payment_id"])
        try:
            _, body = await self.orders.place(row["buyer"], order_key_for(pid), row["hold_id"])
        except DomainError as exc:
            if exc.status == 503:
                raise  # the webhook is delivered again; the place is idempotent
            # The hold is gone (expired, a late callback) or cannot be bought: no ticket,
            # so the money goes back.
            async with self.pool.acquire() as conn, conn.transaction():
                await self._unplaced(conn, row, exc.code, row["amount_minor"])
            return "refunded"
        order_id = uuid.UUID(_order_id(body))
        await self.pool.execute(
            "UPDATE payments.payments SET order_id = $2, updated_at = now()"
            " WHERE payment_id = $1 AND order_id IS NULL",
            row["payment_id"],
            order_id,
        )
        return "placed"

    @staticmethod
    async def _unplaced(conn: Any, row: Any, reason: str, amount: int) -> None:
        await conn.execute(
            "UPDATE payments.payments SET status = 'refunding', reason = $2, updated_at = now()"
            " WHERE payment_id = $1",
            row["payment_id"],
            reason,
        )
        await conn.execute(
            "INSERT INTO payments.refunds (refund_id, payment_id, event_id, kind, amount_minor,"
            " currency, seats_returned, reason, actor)"
            " VALUES ($1, $2, $3, 'unplaced', $4, $5, true, $6, 'system')"
            " ON CONFLICT (refund_id) DO NOTHING",
            uuid.UUID(refund_id_for("unplaced", str(row["payment_id"]))),
            row["payment_id"],
            row["event_id"],
            amount,
            row["currency"],
            reason,
        )

    # -- refunds -------------------------------------------------------------------------

    async def cancel(self, buyer: str, order_id: str) -> RefundView:
        """The buyer's own cancellation of a whole order, within the event's window."""
        oid = _uuid(order_id, "order")
        async with self.pool.acquire() as conn, conn.transaction():
            order = await conn.fetchrow(
                "SELECT o.buyer, e.starts_at, e.status, e.refund_window_hours"
                " FROM orders.orders o JOIN catalog.events e ON e.id = o.event_id"
                " WHERE o.order_id = $1",
                oid,
            )
            if order is None or order["buyer"] != buyer:
                raise NotFound(f"order {order_id} not found")
            if order["status"] == "cancelled":
                raise RefundRefused("the event is cancelled: the whole order is refunded already")
            hours = order["refund_window_hours"]
            if hours is None:
                hours = self.settings.payments.self_cancel_hours
            if not may_self_cancel(now_ms(), epoch_ms(order["starts_at"]), hours):
                raise RefundRefused(
                    "this order can no longer be cancelled"
                    + ("" if hours is None else f" (until {hours} h before the event)")
                )
            record = await record_refund(conn, order_id=str(oid), kind="buyer_cancel", actor=buyer)
        return await self._return_seats(record)

    async def refund(
        self,
        actor: str,
        order_id: str,
        organization: str | None,
        ticket_ids: tuple[str, ...] | None,
        reason: str | None,
        kind: RefundKind = "organizer",
    ) -> RefundView:
        """An organizer's (own organization's orders) or admin's (None) refund."""
        oid = _uuid(order_id, "order")
        if ticket_ids is not None:
            if not ticket_ids:
                raise InvalidInput("ticket_ids: name at least one ticket", field="ticket_ids")
            for t in ticket_ids:
                try:
                    uuid.UUID(t)
                except ValueError:
                    raise InvalidInput(f"{t!r} is not a ticket id", field="ticket_ids") from None
        if reason is not None and len(reason) > 500:
            raise InvalidInput("reason: at most 500 characters", field="reason")
        async with self.pool.acquire() as conn, conn.transaction():
            owner = await conn.fetchval(
                "SELECT v.organization FROM orders.orders o"
                " JOIN catalog.events e ON e.id = o.event_id"
                " JOIN catalog.venues v ON v.id = e.venue_id WHERE o.order_id = $1",
                oid,
            )
            if owner is None or (organization is not None and owner != organization):
                raise NotFound(f"order {order_id} not found")
            record = await record_refund(
                conn,
                order_id=str(oid),
                kind=kind,
                actor=actor,
                ticket_ids=ticket_ids,
                reason=reason,
            )
        return await self._return_seats(record)

    async def _return_seats(self, record: RefundRecord) -> RefundView:
        """After the commit: the seats go back on sale now (the worker retries if not)."""
        if record.seats and record.view.order_id is not None:
            try:
                await self.inventory.refund(
                    record.event_id, record.partition, record.view.order_id, record.seats
                )
                await self.pool.execute(
                    "UPDATE payments.refunds SET seats_returned = true WHERE refund_id = $1",
                    uuid.UUID(record.view.refund_id),
                )
            except Exception as exc:  # the payments worker returns them
                log.warning("refund %s: seats not returned yet: %s", record.view.refund_id, exc)
        return record.view

    async def refunds_of(self, buyer: str | None, order_id: str) -> list[RefundView]:
        """The order's refunds (its buyer's, or any for ``buyer`` None)."""
        oid = _uuid(order_id, "order")
        owner = await self.pool.fetchval("SELECT buyer FROM orders.orders WHERE order_id = $1", oid)
        if owner is None or (buyer is not None and owner != buyer):
            raise NotFound(f"order {order_id} not found")
        rows = await self.pool.fetch(
            "SELECT * FROM payments.refunds WHERE order_id = $1 ORDER BY created_at", oid
        )
        return [refund_view(r) for r in rows]


_ACCEPTED: Final = msgspec.json.Decoder(OrderAccepted)


def _order_id(body: bytes) -> str:
    """The order id of POST /orders' answer (202, or a replay of it)."""
    return _ACCEPTED.decode(body).order_id
