"""The caller's own orders and tickets: ``GET /api/v1/me/orders`` and ``/api/v1/me/tickets``.

Registered through ``api.orders.controllers.route_handlers``.
"""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency

from api.auth.principal import Principal, requires_auth
from api.orders.deps import ORDER_SERVICE_DEPENDENCY
from api.orders.service import OrderService
from core.orders import OrderList, TicketList


class MeController(Controller):
    path = "/api/v1/me"
    tags = ["orders"]
    guards = [requires_auth()]
    dependencies = {"orders": ORDER_SERVICE_DEPENDENCY}

    @get("/orders", summary="My orders", cache_control=None)
    async def my_orders(
        self, orders: NamedDependency[OrderService], principal: NamedDependency[Principal]
    ) -> OrderList:
        """The caller's orders, newest first (pending ones included)."""
        return OrderList(items=tuple(await orders.orders_of(principal.sub)))

    @get("/tickets", summary="My tickets", cache_control=None)
    async def my_tickets(
        self, orders: NamedDependency[OrderService], principal: NamedDependency[Principal]
    ) -> TicketList:
        """The caller's tickets, newest first, with their QR links once issued."""
        return TicketList(items=tuple(await orders.tickets_of(principal.sub)))
