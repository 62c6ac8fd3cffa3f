"""Order endpoints: ``POST /api/v1/orders`` and ``GET /api/v1/orders/{order_id}``.

Thin handlers over ``api.orders.service.OrderService``; the buyer's lists
(``/api/v1/me/orders``, ``/api/v1/me/tickets``) live in ``api/me/``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody, Parameter

from api.auth.principal import Principal, requires_role_or_scope
from api.direct import DirectRoute, Headers, header
from api.me.controllers import MeController
from api.orders.deps import ORDER_SERVICE_DEPENDENCY, provide_order_service
from api.orders.service import ROLES, SCOPES, OrderService, order_location, place_order
from core.orders import OrderAccepted, OrderView, PlaceOrderRequest

BUYERS = requires_role_or_scope(ROLES, SCOPES)


class OrderController(Controller):
    path = "/api/v1/orders"
    tags = ["orders"]
    guards = [BUYERS]
    dependencies = {"orders": ORDER_SERVICE_DEPENDENCY}

    @post(
        "/",
        summary="Buy the seats of a hold",
        status_code=202,
        responses=None,
    )
    async def place_order(
        self,
        data: JSONBody[PlaceOrderRequest],
        orders: NamedDependency[OrderService],
        principal: NamedDependency[Principal],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(name="Idempotency-Key", required=False, description="Required."),
        ] = None,
    ) -> Response[OrderAccepted]:
        """Confirm the hold and queue the order: 202 ``{order_id, status: "pending"}`` with
        ``Location: /api/v1/orders/{order_id}`` (poll it for the outcome).

        The ``Idempotency-Key`` header is required: the same key with the same body gives
        the same answer (also while the first request runs); with another body, 422.
        Prices come from the catalog. 503 + Retry-After if the order cannot be queued;
        the hold is then kept and can be bought again.
        """
        status, body = await place_order(
            orders, principal.sub, idempotency_key, data.hold_id, data.admission
        )
        location = order_location(status, body)
        return Response(
            content=body,  # type: ignore[arg-type]
            status_code=status,
            media_type="application/json",
            headers={"Location": location} if location else None,
        )

    @get("/{order_id:str}", summary="Read an order", cache_control=None)
    async def get_order(
        self,
        order_id: Annotated[str, Parameter(max_length=64)],
        orders: NamedDependency[OrderService],
        principal: NamedDependency[Principal],
    ) -> OrderView:
        """Pending, then confirmed with its tickets or rejected with a reason (owner only)."""
        return await orders.order(principal.sub, order_id)


async def _serve(
    app_state: Any, scope: Any, principal: Principal, _: re.Match[str], data: PlaceOrderRequest
) -> tuple[int, bytes, Headers]:
    service = await provide_order_service(app_state)
    key = header(scope, b"idempotency-key")
    status, body = await place_order(service, principal.sub, key, data.hold_id, data.admission)
    location = order_location(status, body)
    return status, body, [(b"location", location.encode())] if location else []


# The edge's direct route for orders (api/direct.py).
DIRECT_ROUTE: Final = DirectRoute(
    method="POST",
    path=re.compile(r"^/api/v1/orders$"),
    template="/api/v1/orders",
    roles=ROLES,
    scopes=SCOPES,
    body_type=PlaceOrderRequest,
    serve=_serve,
)

route_handlers = [OrderController, MeController]
