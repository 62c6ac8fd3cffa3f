"""Dependency providers of the holds API.

The inventory gateway comes from the app's lifespan (``app.state.inventory``);
prices come from the catalog's cached price lookup (``api.catalog.deps``), so
placing a hold makes no PostgreSQL query while the cache is warm.
"""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide

from core.errors import Unavailable
from core.inventory import Inventory


async def provide_hold_inventory(state: State) -> Inventory:
    inventory = getattr(state, "inventory", None)
    if not isinstance(inventory, Inventory):
        raise Unavailable("the seat inventory is not ready, retry shortly")
    return inventory


HOLD_INVENTORY_DEPENDENCY = Provide(provide_hold_inventory)
