"""Dependency providers of the order, ticket and check-in endpoints.

One ``OrderService`` per request over the lifespan's clients (``api/app.py``): the
Redis Cluster client, the asyncpg pool, the inventory gateway, the catalog's cached
prices and the Kafka producer (reached lazily, so reads work while Kafka is down).
"""

from __future__ import annotations

import functools

from litestar.datastructures import State
from litestar.di import Provide

from api.catalog.deps import catalog_from_state
from api.orders.service import OrderService
from api.queue.service import require_admission
from core.errors import Unavailable
from core.inventory import Inventory
from core.settings import Settings


async def provide_order_service(state: State) -> OrderService:
    settings: Settings = state.settings
    redis = getattr(state, "redis", None)
    pool = getattr(state, "db_pool", None)
    if redis is None or pool is None:
        raise Unavailable("orders are not ready, retry shortly")
    inventory = getattr(state, "inventory", None)
    kafka = getattr(state, "kafka", None)
    return OrderService(
        settings,
        redis,
        pool,
        inventory if isinstance(inventory, Inventory) else None,
        catalog_from_state(state) if isinstance(inventory, Inventory) else None,
        kafka.producer if kafka is not None else None,
        kafka.breaker if kafka is not None else None,
        functools.partial(require_admission, state),
    )


ORDER_SERVICE_DEPENDENCY = Provide(provide_order_service)
