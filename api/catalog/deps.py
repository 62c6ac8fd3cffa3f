"""Dependency providers of the catalog.

The app's lifespan (api/app.py) puts the asyncpg pool on ``app.state.db_pool``, the
inventory gateway on ``app.state.inventory`` and its partition plans on
``app.state.partition_plans``. The ``Catalog`` (with its caches) is made
once per process from them, on first use, and kept on ``app.state.catalog``.

Other controllers (holds, orders) reach prices through the same dependency::

    async def create_hold(..., catalog: Catalog) -> ...:
        price = await catalog.price_minor(event_id, category)

by adding ``"catalog": CATALOG_DEPENDENCY`` to their ``dependencies``.
"""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide

from api.catalog.repository import CatalogRepository
from api.catalog.service import Catalog


def catalog_from_state(state: State) -> Catalog:
    """The process's ``Catalog``, made on first use from the lifespan's pool and inventory."""
    catalog = getattr(state, "catalog", None)
    if isinstance(catalog, Catalog):
        return catalog
    pool = getattr(state, "db_pool", None)
    inventory = getattr(state, "inventory", None)
    if pool is None or inventory is None:
        raise RuntimeError("app.state needs db_pool and inventory (see api/app.py lifespan)")
    # The cluster client lets seat-map requests check the inventory version cheaply; the
    # partition plans (api.partitions, made by the lifespan) are the inventory's routing.
    catalog = Catalog(
        CatalogRepository(pool),
        inventory,
        streams=getattr(state, "redis", None),
        plans=getattr(state, "partition_plans", None),
    )
    state.catalog = catalog
    return catalog


async def provide_catalog(state: State) -> Catalog:
    return catalog_from_state(state)


CATALOG_DEPENDENCY = Provide(provide_catalog)
