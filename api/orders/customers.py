"""A partner's customer reference on its orders: ``PUT /api/v1/orders/{id}/customer``.

A partner (``client:<id>``, scope ``orders``) buys for its end customers; it labels each
order with its own reference for the customer (its customer id, a booking code) once
the order is accepted (202), pending or decided. The confirmation e-mail, the PDF
tickets and the support search name the customer by it. Kept beside the order
(``orders.order_customers``), so the order intake itself is unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from api.auth.principal import Principal, requires_scope
from api.orders.deps import ORDER_SERVICE_DEPENDENCY
from api.orders.service import OrderService
from core.errors import Forbidden

CustomerRef = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:@#/-]*$",
        description="The partner's own reference for its customer.",
    ),
]


class CustomerLabel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    customer_ref: CustomerRef


class OrderCustomer(msgspec.Struct, frozen=True):
    order_id: str
    partner: str
    customer_ref: str


class OrderCustomerController(Controller):
    path = "/api/v1/orders"
    tags = ["orders"]
    guards = [requires_scope("orders")]
    dependencies = {"orders": ORDER_SERVICE_DEPENDENCY}

    @put("/{order_id:str}/customer", summary="Name the partner's customer of an order")
    async def label(
        self,
        order_id: Annotated[str, Parameter(max_length=64)],
        data: JSONBody[CustomerLabel],
        orders: NamedDependency[OrderService],
        principal: NamedDependency[Principal],
    ) -> OrderCustomer:
        """The partner's own orders only (404 otherwise); setting it again replaces it."""
        if not principal.is_client:
            raise Forbidden("Only a partner client labels its orders with a customer.")
        view = await orders.order(principal.sub, order_id)  # 404 unless the caller's
        pool: Any = orders.pool
        await pool.execute(
            """
            INSERT INTO orders.order_customers (order_id, partner, customer_ref)
            VALUES ($1, $2, $3)
            ON CONFLICT (order_id) DO UPDATE
            SET customer_ref = EXCLUDED.customer_ref, updated_at = now()
            """,
            view.order_id,
            principal.sub,
            data.customer_ref,
        )
        return OrderCustomer(view.order_id, principal.sub, data.customer_ref)


route_handlers = [OrderCustomerController]
