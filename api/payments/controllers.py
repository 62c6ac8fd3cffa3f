"""Payment and refund endpoints.

- ``POST /api/v1/payments`` (buyer): pay for a hold; 201 with the provider's checkout.
- ``GET /api/v1/payments/{id}`` (its buyer): pending, captured (with the order), declined,
  expired, refunding or refunded.
- ``POST /api/v1/payments/webhooks/{provider}``: the provider's signed notification.
- ``POST /api/v1/orders/{id}/cancel`` (its buyer, within the event's window) and
  ``GET /api/v1/orders/{id}/refunds``.
- ``POST /api/v1/organizer/orders/{id}/refunds`` (organizer of the event's organization,
  or admin): the whole order or some tickets.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import HeaderParameter, JSONBody, Parameter

from api.auth.principal import Principal, requires_role, requires_role_or_scope
from api.orders.deps import provide_order_service
from api.orders.service import ROLES, SCOPES
from api.organizer.service import tenant_of
from api.payments.service import PaymentService
from core.errors import Unavailable
from core.payments import (
    PaymentCreate,
    PaymentView,
    RefundCreate,
    RefundList,
    RefundView,
    provider_for,
)

BUYERS = requires_role_or_scope(ROLES, SCOPES)
MAX_WEBHOOK_BYTES = 256 * 1024


async def provide_payment_service(state: State) -> PaymentService:
    pool = getattr(state, "db_pool", None)
    if pool is None:
        raise Unavailable("payments are not ready, retry shortly")
    provider = getattr(state, "payment_provider", None)
    if provider is None:
        provider = state.payment_provider = provider_for(state.settings.payments)
    return PaymentService(state.settings, pool, provider, await provide_order_service(state))


PAYMENTS = Provide(provide_payment_service)


class PaymentController(Controller):
    path = "/api/v1/payments"
    tags = ["payments"]
    dependencies = {"payments": PAYMENTS}

    @post("/", summary="Pay for a hold", guards=[BUYERS], status_code=201)
    async def create_payment(
        self,
        data: JSONBody[PaymentCreate],
        payments: NamedDependency[PaymentService],
        principal: NamedDependency[Principal],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(name="Idempotency-Key", required=False, description="Required."),
        ] = None,
        admission: Annotated[
            str | None,
            HeaderParameter(name="X-Admission", required=False, description="Waiting room."),
        ] = None,
    ) -> Response[PaymentView]:
        """Start paying for one of your holds. The amount comes from the catalog; the hold
        is extended to cover the payment window. Open ``checkout_url`` (the simulated
        provider) or use ``client_secret`` with Stripe.js; once the provider confirms, the
        order is placed and the payment shows its ``order_id``. The same key again
        answers the same payment (200)."""
        status, view = await payments.create(
            principal.sub, idempotency_key, data.hold_id, admission
        )
        return Response(
            view, status_code=status, headers={"Location": f"/api/v1/payments/{view.payment_id}"}
        )

    @get("/{payment_id:str}", summary="Read a payment", guards=[BUYERS], cache_control=None)
    async def get_payment(
        self,
        payment_id: Annotated[str, Parameter(max_length=64)],
        payments: NamedDependency[PaymentService],
        principal: NamedDependency[Principal],
    ) -> PaymentView:
        return await payments.payment(principal.sub, payment_id)

    @post(
        "/webhooks/{provider:str}",
        summary="A payment provider's notification",
        status_code=200,
        request_max_body_size=MAX_WEBHOOK_BYTES,
    )
    async def webhook(
        self,
        provider: Annotated[str, Parameter(max_length=20)],
        request: Request[None, None, State],
        payments: NamedDependency[PaymentService],
    ) -> dict[str, str]:
        """Verified by its signature (400 ``invalid_signature`` otherwise); a duplicate
        does nothing again. 404 for another provider than the configured one."""
        if provider != payments.provider.name:
            from core.errors import NotFound

            raise NotFound(f"no payment provider {provider!r} here")
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        return {"result": await payments.webhook(headers, body)}


class OrderRefundController(Controller):
    path = "/api/v1/orders"
    tags = ["payments"]
    guards = [BUYERS]
    dependencies = {"payments": PAYMENTS}

    @post("/{order_id:str}/cancel", summary="Cancel your order", status_code=202)
    async def cancel(
        self,
        order_id: Annotated[str, Parameter(max_length=64)],
        payments: NamedDependency[PaymentService],
        principal: NamedDependency[Principal],
    ) -> RefundView:
        """Cancel a whole order within the event's cancellation window: its tickets are
        revoked at once, its seats go back on sale, the payment is refunded (the refund's
        status goes ``requested`` → ``refunded``). 409 ``refund_refused`` outside the
        window or for an order already refunded or admitted."""
        return await payments.cancel(principal.sub, order_id)

    @get("/{order_id:str}/refunds", summary="An order's refunds", cache_control=None)
    async def refunds(
        self,
        order_id: Annotated[str, Parameter(max_length=64)],
        payments: NamedDependency[PaymentService],
        principal: NamedDependency[Principal],
    ) -> RefundList:
        who = None if principal.has_role("admin") else principal.sub
        return RefundList(items=tuple(await payments.refunds_of(who, order_id)))


class OrganizerRefundController(Controller):
    path = "/api/v1/organizer/orders"
    tags = ["organizer"]
    guards = [requires_role("organizer", "admin")]
    dependencies = {"payments": PAYMENTS}

    @post("/{order_id:str}/refunds", summary="Refund an order or some tickets", status_code=202)
    async def refund(
        self,
        order_id: Annotated[str, Parameter(max_length=64)],
        data: JSONBody[RefundCreate],
        payments: NamedDependency[PaymentService],
        principal: NamedDependency[Principal],
    ) -> RefundView:
        """Refund the whole order (no ``ticket_ids``) or the tickets named (a partial
        refund). Tickets are revoked at once and their seats go back on sale; the money
        is paid back by the payments worker. The same request again answers the same
        refund."""
        return await payments.refund(
            principal.sub, order_id, tenant_of(principal), data.ticket_ids, data.reason
        )


route_handlers = [PaymentController, OrderRefundController, OrganizerRefundController]
