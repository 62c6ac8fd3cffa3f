"""Ticket delivery: where the caller's tickets are e-mailed, and resending them.

``GET``/``PUT /api/v1/me/contact``: the address and language (es, en) of the caller's
ticket e-mails. ``POST /api/v1/orders/{order_id}/resend`` (the order's buyer, or an
admin): publishes a ``DeliveryRequested`` on the notifications topic and answers 202; the
mailer worker sends it (docs/decisions/1053). E-mail never leaves from a request handler.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from litestar import Controller, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from api.auth.principal import Principal, requires_auth
from core.clock import now_ms
from core.delivery import (
    Contact,
    ContactView,
    DeliveryRequested,
    NoDeliveryAddress,
    ResendAccepted,
)
from core.errors import Conflict, NotFound, NotOwner, Unavailable
from core.orders import (
    TOPIC_NOTIFICATIONS,
    canonical_uuid,
    encode,
    event_key,
    publish_wait_s,
    topic,
)
from core.settings import Settings

OrderId = Annotated[str, Parameter(max_length=64, description="The order's id (a UUID).")]


async def provide_delivery_pool(state: State) -> Any:
    """DI ``delivery_pool``: the PostgreSQL pool (503 while the app is starting)."""
    pool = getattr(state, "db_pool", None)
    if pool is None:
        raise Unavailable("delivery is not ready, retry shortly")
    return pool


async def request_resend(
    state: State, pool: Any, order_id: str, requested_by: str, *, owner: str | None
) -> ResendAccepted:
    """Queue a resend of a confirmed order's tickets. ``owner``: the caller must be the
    order's buyer (None: support, any order). 404 for an unknown or someone else's order,
    409 when it is not confirmed or its buyer gave no address."""
    canonical = canonical_uuid(order_id)
    if canonical is None:
        raise NotFound("no such order")
    row = await pool.fetchrow(
        """
        SELECT o.buyer, o.status, o.event_id, c.email IS NOT NULL AS has_contact
        FROM orders.orders o LEFT JOIN orders.contacts c ON c.buyer = o.buyer
        WHERE o.order_id = $1
        """,
        canonical,
    )
    if row is None or (owner is not None and row["buyer"] != owner):
        raise NotOwner("no such order")
    if row["status"] != "confirmed":
        raise Conflict(f"order {canonical} is {row['status']}: only confirmed orders have tickets")
    if not row["has_contact"]:
        raise NoDeliveryAddress("the buyer has not said where to send tickets (PUT /me/contact)")
    request = DeliveryRequested(
        request_id=str(uuid.uuid4()),
        order_id=canonical,
        event_id=row["event_id"],
        requested_by=requested_by,
        requested_at=now_ms(),
    )
    settings: Settings = state.settings
    kafka = getattr(state, "kafka", None)
    if kafka is None:
        raise Unavailable("delivery is not ready, retry shortly")
    producer = kafka.producer()  # 503 + Retry-After while Kafka is away
    try:
        await asyncio.wait_for(
            producer.send_and_wait(
                topic(settings.kafka.topic_prefix, TOPIC_NOTIFICATIONS),
                value=encode(request),
                key=event_key(row["event_id"]),
            ),
            timeout=publish_wait_s(settings.kafka.request_timeout_s),
        )
    except (TimeoutError, OSError) as exc:
        raise Unavailable("the resend could not be queued; retry shortly") from exc
    return ResendAccepted(request_id=request.request_id, order_id=canonical)


class ContactController(Controller):
    path = "/api/v1/me/contact"
    tags = ["delivery"]
    guards = [requires_auth()]
    dependencies = {"delivery_pool": provide_delivery_pool}

    @get("/", summary="Where my tickets are e-mailed", cache_control=None)
    async def get_contact(
        self, delivery_pool: NamedDependency[Any], principal: NamedDependency[Principal]
    ) -> ContactView:
        """The address and language of the caller's ticket e-mails (both null until set)."""
        row = await delivery_pool.fetchrow(
            "SELECT email, lang FROM orders.contacts WHERE buyer = $1", principal.sub
        )
        if row is None:
            return ContactView(email=None, lang=None)
        return ContactView(email=row["email"], lang=row["lang"])

    @put("/", summary="Set where my tickets are e-mailed")
    async def put_contact(
        self,
        data: JSONBody[Contact],
        delivery_pool: NamedDependency[Any],
        principal: NamedDependency[Principal],
    ) -> Contact:
        """``{"email", "lang": "es"|"en"}``: later confirmations and resends go there."""
        await delivery_pool.execute(
            """
            INSERT INTO orders.contacts (buyer, email, lang) VALUES ($1, $2, $3)
            ON CONFLICT (buyer) DO UPDATE
            SET email = EXCLUDED.email, lang = EXCLUDED.lang, updated_at = now()
            """,
            principal.sub,
            data.email,
            data.lang,
        )
        return data


class ResendController(Controller):
    path = "/api/v1/orders"
    tags = ["delivery"]
    guards = [requires_auth()]
    dependencies = {"delivery_pool": provide_delivery_pool}

    @post("/{order_id:str}/resend", summary="E-mail an order's tickets again", status_code=202)
    async def resend(
        self,
        order_id: OrderId,
        state: State,
        delivery_pool: NamedDependency[Any],
        principal: NamedDependency[Principal],
    ) -> ResendAccepted:
        """Queue a new e-mail of the order's tickets to the buyer's current address: the
        buyer's own orders, or any order for an admin."""
        owner = None if principal.has_role("admin") else principal.sub
        return await request_resend(state, delivery_pool, order_id, principal.sub, owner=owner)


route_handlers = [ContactController, ResendController]
