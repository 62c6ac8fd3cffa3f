"""Placing and reading orders: the API's half of the purchase saga.

``place`` runs the saga's first steps (docs/decisions/0401-purchase-saga.md):

1. idempotency: ``lua/order_claim.lua`` claims ``{user:<sub>}:idem:<key digest>`` with the
   request fingerprint and a fencing token (a concurrent duplicate waits for the first
   one's answer, then 409 + Retry-After; a different body -> 422), and in the same round
   trip finds an order an earlier attempt recorded. The claim is settled (answer stored,
   or dropped) only while it is still this request's (``lua/order_settle.lua``);
2. the order id is derived from (buyer, key, fingerprint), so every attempt of one request
   names the same order: a retry whose first attempt died after recording it answers
   that order;
3. confirm: ``Inventory.confirm`` turns the hold into a sold-pending order. If it refuses
   (the hold is gone), the durable copy of the key in PostgreSQL is asked whether this
   request was placed before Redis forgot the key, and a retry gets that order;
4. price it from the catalog (never from the client), record it as pending for the
   buyer (``{user:<sub>}:orders``, ``lua/order_pending.lua``, so GET can answer before
   the persister writes it);
5. publish ``OrderPlaced`` (key = event id, acks=all). A definite failure (the record
   was never queued, or the broker refused it) is compensated by ``Inventory.revert``
   (the hold comes back) and 503 + Retry-After. An unknown outcome (the producer or
   our wait timed out, the request was cancelled) is not a failure: the record may
   land, so the order stays pending, the answer is 202 and the reconciler re-publishes
   it if it never arrived (the persister is idempotent by order id);
6. 202 ``{order_id, status: "pending"}``, stored under the key for replays.

Reads come from PostgreSQL (decided orders, tickets) and the buyer's pending record.

The Redis steps of placing an order travel on the inventory's script link
(``core/inventory_link.py``): pipelined EVALSHA, never re-sent once sent (a claim or a
pending record that ran twice is harmless, but a settle must not overwrite a retry's).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import asyncpg
import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    BrokerResponseError,
    NotEnoughReplicasAfterAppendError,
    RequestTimedOutError,
)
from redis.asyncio.cluster import RedisCluster

from api.catalog.service import Catalog
from api.metrics import ORDERS, TALLY
from core.breaker import Breaker
from core.clock import epoch_ms, epoch_ms_or_none
from core.errors import Conflict, DomainError, InvalidInput, NotFound, Unavailable
from core.faults import reach
from core.holds import parse_hold_id
from core.inventory import Inventory
from core.inventory_link import LinkError, Route, Script
from core.orders import (
    TOPIC_PLACED,
    OrderAccepted,
    OrderPayment,
    OrderPlaced,
    OrderSeat,
    OrderView,
    TicketView,
    build_order,
    canonical_uuid,
    encode,
    order_id_for,
    order_key,
    pending_orders_key,
    publish_wait_s,
    topic,
)
from core.payments import PaymentRequired
from core.settings import Settings

log = logging.getLogger("ticketbuster.api.orders")

# Who may buy: buyers (and admins acting as one), or partner clients with "orders".
ROLES: Final = ("buyer", "admin")
SCOPES: Final = ("orders",)
IDEMPOTENCY_TTL_S: Final = 86_400
PENDING_TTL_S: Final = 7 * 86_400
# A duplicate waits this long for the first request's answer, then gets 409 + Retry-After.
WAIT_FOR_DUPLICATE_S: Final = 5.0
# What a duplicate that waited in vain is told to wait before its next try.
IN_PROGRESS_RETRY_AFTER_S: Final = 2
LUA_DIR: Final = Path(__file__).resolve().parents[2] / "lua"
CLAIM: Final = Script((LUA_DIR / "order_claim.lua").read_text(encoding="utf-8"))
SETTLE: Final = Script((LUA_DIR / "order_settle.lua").read_text(encoding="utf-8"))
PENDING: Final = Script((LUA_DIR / "order_pending.lua").read_text(encoding="utf-8"))


class IdempotencyKeyReused(DomainError):
    """The Idempotency-Key was already used with a different request body."""

    status = 422
    code = "idempotency_key_reused"
    title = "Idempotency-Key reused with another request"


class RequestInProgress(Conflict):
    """Another request with this Idempotency-Key is still running; retry after a pause."""

    code = "request_in_progress"
    title = "Request still in progress"

    def __init__(self, detail: str, retry_after_s: int = IN_PROGRESS_RETRY_AFTER_S) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class _Claim(msgspec.Struct, frozen=True):
    fp: str
    state: Literal["in_progress", "done"]
    status: int = 0
    body: str = ""
    # Fences the claim: only the request holding this token may settle it.
    token: str = ""


def publish_is_definite_failure(exc: BaseException) -> bool:
    """True when ``OrderPlaced`` certainly did not land: the broker refused the record.

    Timeouts (ours, the producer's, the broker's), cancellation, lost connections and
    "written but not replicated" leave the outcome unknown: the record may still be on
    the log, so the order must not be undone.
    """
    if isinstance(exc, (RequestTimedOutError, NotEnoughReplicasAfterAppendError)):
        return False
    return isinstance(exc, BrokerResponseError) and not exc.retriable


def idempotency_redis_key(sub: str, key: str) -> str:
    """The claim of (buyer, key); in the buyer's slot, beside their pending orders."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{{user:{sub}}}:idem:{digest}"


def claim_lease_s(request_timeout_s: float) -> int:
    """How long an in-progress claim lives: longer than one request's steps, shorter than
    a pod restart matters. One request is bounded by the send (``request_timeout_s``), the
    delivery wait (``publish_wait_s``) and a few Redis/PostgreSQL round trips."""
    return int(publish_wait_s(request_timeout_s) + request_timeout_s + 5)


def validate_idempotency_key(key: str | None) -> str:
    if key is None or not key:
        raise InvalidInput("the Idempotency-Key header is required", field="Idempotency-Key")
    if len(key) > 200 or not key.isascii() or not key.isprintable():
        raise InvalidInput(
            "Idempotency-Key must be 1-200 printable ASCII characters", field="Idempotency-Key"
        )
    return key


def fingerprint(hold_id: str) -> str:
    """The request's identity for idempotency: what was asked, not how it was spelled."""
    return hashlib.sha256(msgspec.json.encode({"hold_id": hold_id})).hexdigest()


_T = TypeVar("_T")


async def _event_fact(hold_id: str, read: Callable[[int], Awaitable[_T]]) -> tuple[int, _T] | None:
    """(event id, what ``read`` says of the hold's event) for the order's gates, or None
    for a malformed hold id or an unknown event: the order's own steps answer those."""
    try:
        event_id, _ = parse_hold_id(hold_id)
        return event_id, await read(event_id)
    except (InvalidInput, NotFound):
        return None


_PLACED: Final = msgspec.json.Decoder(OrderPlaced)
_SEATS: Final = msgspec.json.Decoder(tuple[OrderSeat, ...])


async def place_order(
    service: OrderService,
    buyer: str,
    idempotency_key: str | None,
    hold_id: str,
    admission: str | None = None,
) -> tuple[int, bytes]:
    """POST /orders, whichever way it came in (the Litestar handler, the edge's direct
    route): (status, JSON body); counted in ``ticketbuster_orders_total{status}``.
    ``admission``: the fan's admission token, needed for an event with a waiting room."""
    key = validate_idempotency_key(idempotency_key)
    try:
        await service.check_payment_needed(hold_id)
        await service.check_admission(buyer, hold_id, admission)
        status, body = await service.place(buyer, key, hold_id)
    except DomainError as exc:
        _ORDER_RESULTS["unavailable" if exc.status == 503 else "refused"].inc()
        raise
    _ORDER_RESULTS["placed"].inc()
    return status, body


_ACCEPTED: Final = msgspec.json.Decoder(OrderAccepted)


def order_location(status: int, body: bytes) -> str | None:
    """The ``Location`` of a 202 (the order to poll), also for a replayed answer."""
    if status != 202:
        return None
    return f"/api/v1/orders/{_ACCEPTED.decode(body).order_id}"


_ORDER_RESULTS: Final = {
    s: TALLY.counter(ORDERS.labels(status=s)) for s in ("placed", "refused", "unavailable")
}


class OrderService:
    """The order endpoints' logic over Redis, the inventory, the catalog, Kafka and PostgreSQL."""

    def __init__(
        self,
        settings: Settings,
        redis: RedisCluster,
        pool: asyncpg.Pool,
        inventory: Inventory | None = None,
        catalog: Catalog | None = None,
        producer: Callable[[], AIOKafkaProducer] | None = None,
        broker_breaker: Breaker | None = None,
        admission: Callable[[str | None, str, int], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.pool = pool
        self.inventory = inventory
        self.catalog = catalog
        self.producer = producer
        # The Kafka producer's breaker (api/kafka.py checks it in producer()).
        self.broker_breaker = broker_breaker
        # The waiting room's check (api.queue.service.require_admission), if any.
        self.admission = admission

    async def check_payment_needed(self, hold_id: str) -> None:
        """402 ``payment_required`` when payments are required and the event charges:
        such a hold is bought through ``POST /api/v1/payments`` (core/payments.py)."""
        if not self.settings.payments.required or self.catalog is None:
            return
        fact = await _event_fact(hold_id, self.catalog.prices)
        if fact is not None and any(p.price_minor > 0 for p in fact[1].values()):
            raise PaymentRequired(
                "this event's seats are paid for: start a payment with POST /api/v1/payments"
            )

    async def check_admission(self, sub: str, hold_id: str, token: str | None) -> None:
        """403 ``admission_required`` for an event with a waiting room and no valid token
        of this fan; nothing for other events (the event record is the catalog's cache)."""
        if self.admission is None or self.catalog is None:
            return
        fact = await _event_fact(hold_id, self.catalog.queued)
        if fact is not None and fact[1]:
            self.admission(token, sub, fact[0])

    # -- placing ----------------------------------------------------------------------------

    async def place(self, sub: str, key: str, hold_id: str) -> tuple[int, bytes]:
        """(status, JSON body) of POST /orders, the same for every retry of the same key."""
        if self.inventory is None:
            raise Unavailable("order intake is not ready, retry shortly")
        fp = fingerprint(hold_id)
        rkey = idempotency_redis_key(sub, key)
        order_id = order_id_for(sub, key, fp)
        route = Route([rkey, pending_orders_key(sub)])
        token = uuid.uuid4().hex
        replay, earlier = await self._claim(route, fp, token, order_id)
        if replay is not None:
            return replay
        # Once the key is ours, finish the saga step even if the client goes away: a
        # half-done confirm/publish is what the compensations are for, not a disconnect.
        task = asyncio.ensure_future(
            self._run_claimed(route, fp, token, sub, key, hold_id, earlier)
        )
        return await asyncio.shield(task)

    async def _run_claimed(
        self,
        route: Route,
        fp: str,
        token: str,
        sub: str,
        key: str,
        hold_id: str,
        earlier: bytes | None,
    ) -> tuple[int, bytes]:
        try:
            replay = None if earlier is None else await self._earlier_attempt(earlier, fp)
            if replay is not None:
                status, body = replay
            else:
                status, body = await self._place_or_replay(sub, key, fp, hold_id)
        except BaseException:
            # Nothing to replay: a retry with this key runs again (and gets the same error
            # for a dead hold, or succeeds once the dependency is back).
            await self._settle(route, token, None)
            raise
        done = _Claim(fp=fp, state="done", status=status, body=body.decode(), token=token)
        await self._settle(route, token, done)
        reach(self.settings.faults, "crash_before_reply")
        return status, body

    @property
    def _link(self) -> Any:
        assert self.inventory is not None
        return self.inventory.link

    async def _claim(
        self, route: Route, fp: str, token: str, order_id: str
    ) -> tuple[tuple[int, bytes] | None, bytes | None]:
        """Claim the key: (None, the order an earlier attempt recorded, if any); or
        (the stored response of an earlier identical request, None)."""
        mine = msgspec.json.encode(_Claim(fp=fp, state="in_progress", token=token))
        lease_s = claim_lease_s(self.settings.kafka.request_timeout_s)
        deadline = time.monotonic() + WAIT_FOR_DUPLICATE_S
        delay = 0.02
        while True:
            try:
                won, value = await self._link.run(CLAIM, route, (mine, lease_s, order_id))
            except LinkError as exc:
                raise Unavailable("order intake is unavailable, retry shortly") from exc
            if won:
                return None, value or None
            claim = msgspec.json.decode(value, type=_Claim)
            if claim.fp != fp:
                raise IdempotencyKeyReused("this Idempotency-Key was used for a different request")
            if claim.state == "done":
                return (claim.status, claim.body.encode()), None
            if time.monotonic() > deadline:
                raise RequestInProgress(
                    "a request with this Idempotency-Key is still in progress; retry shortly"
                )
            await asyncio.sleep(delay)
            delay = min(0.2, delay * 2)

    async def _settle(self, route: Route, token: str, done: _Claim | None) -> None:
        """Store the answer (or drop the claim) only if the claim is still ours."""
        value = b"" if done is None else msgspec.json.encode(done)
        try:
            # The claim is KEYS[1] of the claim's route (the pending orders ride along).
            mine = await self._link.run(SETTLE, route, (token, value, IDEMPOTENCY_TTL_S))
        except LinkError as exc:  # the order stands; the durable copy answers replays
            log.warning("could not settle idempotency claim: %s", exc)
            return
        if not mine:
            log.warning("idempotency claim %r was taken over by a retry; left alone", route.keys[0])

    async def _earlier_attempt(self, raw: bytes, fp: str) -> tuple[int, bytes] | None:
        """The order an earlier attempt of this request recorded before it died.

        Its pending record exists, so the seats are sold-pending under it: answer it, and
        publish it again now rather than after the reconciler's grace (the persister is
        idempotent by order id, so a copy that did land is harmless).
        """
        placed = _PLACED.decode(raw)
        if placed.fingerprint is not None and placed.fingerprint != fp:
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different request")
        if self.producer is not None:
            try:
                await self._publish(self.producer(), placed, encode(placed))
            except BaseException as exc:  # the reconciler re-publishes it after its grace
                log.warning("re-publish of order %s failed: %s", placed.order_id, exc)
        return 202, msgspec.json.encode(OrderAccepted(order_id=placed.order_id))

    async def _place_or_replay(
        self, sub: str, key: str, fp: str, hold_id: str
    ) -> tuple[int, bytes]:
        """Place the order; if the hold cannot be confirmed, the durable copy of the key
        may say why: this very request was placed before Redis forgot the key (its claim
        expired after 24 h, or a failover lost it), and the retry gets that order.

        PostgreSQL is asked only then, not for every order: a live hold is never one that
        an earlier attempt already bought (confirming it sold it), and a key reused for
        another hold names another order id (``order_id_for`` includes the fingerprint).
        """
        try:
            accepted = await self._place(sub, key, fp, hold_id)
        except DomainError as exc:
            if exc.status not in (404, 409, 410):  # not about the hold (e.g. a 503)
                raise
            durable = await self._durable_replay(sub, key, fp)
            if durable is None:
                raise
            return durable
        return 202, msgspec.json.encode(accepted)

    async def _durable_replay(self, sub: str, key: str, fp: str) -> tuple[int, bytes] | None:
        """The persisted copy of the key, for a retry that comes after Redis forgot it."""
        try:
            row = await self.pool.fetchrow(
                "SELECT fingerprint, order_id FROM orders.idempotency_keys"
                " WHERE buyer = $1 AND key = $2",
                sub,
                key,
                timeout=1.0,  # a slow database must not stall order intake
            )
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            # A connection a restart or a timed-out query left mid-protocol ("cannot switch
            # to state ..."): as unreachable as the others.
            asyncpg.InternalClientError,
            Unavailable,  # the PostgreSQL breaker is open
        ) as exc:
            log.warning("idempotency lookup in PostgreSQL failed: %s", exc)
            return None  # Redis claimed the key; go on
        if row is None:
            return None
        if row["fingerprint"] != fp:
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different request")
        return 202, msgspec.json.encode(OrderAccepted(order_id=str(row["order_id"])))

    async def _place(self, sub: str, key: str, fp: str, hold_id: str) -> OrderAccepted:
        if self.inventory is None or self.catalog is None or self.producer is None:
            raise Unavailable("order intake is not ready, retry shortly")
        event_id, _ = parse_hold_id(hold_id)
        # Prices first (cached): a missing price must not leave a confirmed hold behind.
        prices = {code: p.price_minor for code, p in (await self.catalog.prices(event_id)).items()}
        producer = self.producer()  # 503 before touching the hold if Kafka is down
        order_id = order_id_for(sub, key, fp)
        confirmed = await self.inventory.confirm(hold_id, sub, order_id)
        try:
            order = build_order(
                order_id=order_id,
                event_id=confirmed.event_id,
                partition=confirmed.partition,
                hold_id=hold_id,
                buyer=sub,
                seats=confirmed.seats,
                categories=[confirmed.categories[s] for s in confirmed.seats],
                prices=prices,
                placed_at=confirmed.confirmed_at,
                idempotency_key=key,
                fingerprint=fp,
            )
            payload = encode(order)
            reach(self.settings.faults, "crash_after_confirm")
            await self._record_pending(sub, order_id, payload)
            reach(self.settings.faults, "crash_after_pending_record")
            try:
                delivery = await asyncio.wait_for(
                    producer.send(
                        topic(self.settings.kafka.topic_prefix, TOPIC_PLACED),
                        value=payload,
                        key=order_key(order.event_id, order.partition),
                    ),
                    timeout=self.settings.kafka.request_timeout_s,
                )
            except Exception:
                self._broker_failed()
                raise
        except BaseException as exc:
            # Not queued for the broker: the record cannot land, so undo the confirm.
            await self._compensate(sub, confirmed.event_id, confirmed.partition, order_id)
            if isinstance(exc, DomainError):
                raise
            log.warning("OrderPlaced %s not published: %s: %s", order_id, type(exc).__name__, exc)
            raise Unavailable(
                "the order could not be placed; your hold is kept, retry shortly",
                retry_after_s=2,
            ) from exc
        try:
            await asyncio.wait_for(
                asyncio.shield(delivery),
                timeout=publish_wait_s(self.settings.kafka.request_timeout_s),
            )
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._broker_failed()
            if not publish_is_definite_failure(exc):
                # Unknown outcome: the order stays pending; the persister or, if the record
                # never landed, the reconciler's re-publish decides it.
                log.warning(
                    "OrderPlaced %s outcome unknown (%s: %s); kept pending",
                    order_id,
                    type(exc).__name__,
                    exc,
                )
                return OrderAccepted(order_id=order_id)
            await self._compensate(sub, confirmed.event_id, confirmed.partition, order_id)
            log.warning("OrderPlaced %s refused by the broker: %s", order_id, exc)
            raise Unavailable(
                "the order could not be placed; your hold is kept, retry shortly",
                retry_after_s=2,
            ) from exc
        if self.broker_breaker is not None:
            self.broker_breaker.success()
        return OrderAccepted(order_id=order_id)

    def _broker_failed(self) -> None:
        if self.broker_breaker is not None:
            self.broker_breaker.failure()

    async def _publish(
        self, producer: AIOKafkaProducer, order: OrderPlaced, payload: bytes
    ) -> None:
        await asyncio.wait_for(
            producer.send_and_wait(
                topic(self.settings.kafka.topic_prefix, TOPIC_PLACED),
                value=payload,
                key=order_key(order.event_id, order.partition),
            ),
            timeout=publish_wait_s(self.settings.kafka.request_timeout_s),
        )

    async def _record_pending(self, sub: str, order_id: str, payload: bytes) -> None:
        route = Route([pending_orders_key(sub)])
        await self._link.run(PENDING, route, (order_id, payload, PENDING_TTL_S))

    async def _compensate(self, sub: str, event_id: int, partition: int, order_id: str) -> None:
        """Undo the confirm: the seats go back to the hold (or free if it has expired)."""
        assert self.inventory is not None
        try:
            await self.inventory.revert(event_id, partition, order_id)
        except Exception as exc:
            # The reconciler finds the pending order (and its record) after the grace period.
            log.error("revert of order %s failed: %s", order_id, exc)
            return
        try:
            await self.redis.hdel(pending_orders_key(sub), order_id)
        except Exception as exc:
            log.warning("pending record of %s not removed: %s", order_id, exc)

    # -- reading ----------------------------------------------------------------------------

    async def order(self, sub: str, order_id: str) -> OrderView:
        """The caller's order: decided (PostgreSQL) or pending (Redis); 404 otherwise."""
        canonical = canonical_uuid(order_id)
        if canonical is None:
            raise NotFound("no such order (order ids are UUIDs)")
        order_id = canonical
        row = await self.pool.fetchrow(
            _ORDERS_SELECT + "WHERE o.order_id = $1 AND o.buyer = $2", order_id, sub
        )
        if row is not None:
            tickets = await self._tickets("order", order_id)
            return _order_view(row, tickets)
        raw = await self.redis.hget(pending_orders_key(sub), order_id)
        if raw is None:
            raise NotFound(f"order {order_id} not found")
        return _pending_view(_PLACED.decode(raw))

    async def orders_of(self, sub: str, limit: int = 100) -> list[OrderView]:
        rows = await self.pool.fetch(
            _ORDERS_SELECT + "WHERE o.buyer = $1 ORDER BY o.placed_at DESC, o.order_id LIMIT $2",
            sub,
            limit,
        )
        ids = [r["order_id"] for r in rows]
        by_order: dict[str, list[TicketView]] = {}
        for t in await self._tickets("orders", ids):
            by_order.setdefault(t.order_id, []).append(t)
        views = [_order_view(r, by_order.get(str(r["order_id"]), [])) for r in rows]
        decided = {str(i) for i in ids}
        pending = await self.redis.hgetall(pending_orders_key(sub))
        stale = []
        for oid, raw in pending.items():
            order_id = oid.decode() if isinstance(oid, bytes) else oid
            if order_id in decided:
                stale.append(oid)
                continue
            views.append(_pending_view(_PLACED.decode(raw)))
        if stale:
            await self.redis.hdel(pending_orders_key(sub), *stale)
        views.sort(key=lambda v: (v.placed_at, v.order_id), reverse=True)
        return views[:limit]

    async def tickets_of(self, sub: str, limit: int = 500) -> list[TicketView]:
        return await self._tickets("holder", sub, limit=limit)

    async def _tickets(
        self, where: Literal["order", "orders", "holder"], arg: Any, limit: int = 1000
    ) -> list[TicketView]:
        rows = await self.pool.fetch(_TICKETS_SQL[where], arg, limit)
        return [ticket_view(r) for r in rows]


# An order with the payment that placed it (at most one is captured per order).
_ORDERS_SELECT: Final = (
    "SELECT o.*, p.payment_id AS pay_id, p.status AS pay_status, p.amount_minor AS pay_amount,"
    " p.currency AS pay_currency, p.provider AS pay_provider FROM orders.orders o"
    " LEFT JOIN LATERAL (SELECT * FROM payments.payments WHERE order_id = o.order_id"
    " ORDER BY created_at DESC LIMIT 1) p ON true "
)
_TICKETS_BASE: Final = (
    "SELECT t.ticket_id, t.order_id, t.event_id, t.seat_id, t.category, t.price_minor,"
    " t.currency, t.issued_at, t.token, t.revoked_at, t.refunded_at, c.checked_in_at"
    " FROM orders.tickets t LEFT JOIN orders.checkins c USING (ticket_id) WHERE "
)
_TICKETS_ORDER: Final = " ORDER BY t.created_at DESC, t.seat_id LIMIT $2"
_TICKETS_SQL: Final = {
    "order": _TICKETS_BASE + "t.order_id = $1::uuid" + _TICKETS_ORDER,
    "orders": _TICKETS_BASE + "t.order_id = ANY($1::uuid[])" + _TICKETS_ORDER,
    "holder": _TICKETS_BASE + "t.holder = $1" + _TICKETS_ORDER,
}


def ticket_view(row: Any, with_token: bool = False) -> TicketView:
    tid = str(row["ticket_id"])
    issued = row["issued_at"] is not None
    return TicketView(
        ticket_id=tid,
        order_id=str(row["order_id"]),
        event_id=row["event_id"],
        seat_id=row["seat_id"],
        category=row["category"],
        price=row["price_minor"],
        currency=row["currency"],
        issued=issued,
        checked_in_at=epoch_ms_or_none(row["checked_in_at"]),
        revoked_at=epoch_ms_or_none(row["revoked_at"]),
        refunded_at=epoch_ms_or_none(row["refunded_at"]),
        qr_svg=f"/api/v1/tickets/{tid}/qr.svg" if issued else None,
        qr_png=f"/api/v1/tickets/{tid}/qr.png" if issued else None,
        token=row["token"] if with_token else None,
    )


def _order_view(row: Any, tickets: list[TicketView]) -> OrderView:
    return OrderView(
        order_id=str(row["order_id"]),
        event_id=row["event_id"],
        status=row["status"],
        seats=_SEATS.decode(row["seats"]),
        total=row["total_minor"],
        currency=row["currency"],
        placed_at=epoch_ms(row["placed_at"]),
        reason=row["reason"],
        conflicting_seats=tuple(row["conflicting_seats"]),
        tickets=tuple(tickets),
        payment=None
        if row["pay_id"] is None
        else OrderPayment(
            str(row["pay_id"]),
            row["pay_status"],
            row["pay_amount"],
            row["pay_currency"],
            row["pay_provider"],
        ),
        refunded=sum(t.price for t in tickets if t.refunded_at is not None),
    )


def _pending_view(order: OrderPlaced) -> OrderView:
    return OrderView(
        order_id=order.order_id,
        event_id=order.event_id,
        status="pending",
        seats=order.seats,
        total=order.total,
        currency=order.currency,
        placed_at=order.placed_at,
    )
