"""Which events are split into several inventory partitions (decision 0102), for the API.

``Inventory`` routes a seat to its partition with a ``PartitionPlan``; the plans live
in the catalog (``catalog.events.partitions``, ``catalog.sections.partition``). The API
reads the plans of the events that have more than one partition at startup and every
``refresh_s`` after, so splitting a stadium before its sale needs no restart. Until the
first read succeeds (or if the catalog cannot be read) every event is one partition,
which is what the seed writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from core.inventory import SINGLE_PARTITION, PartitionPlan

log = logging.getLogger("ticketbuster.api.partitions")

_PLANS_SQL = """
SELECT e.id, e.partitions, s.code, s.partition
FROM catalog.events e JOIN catalog.sections s ON s.event_id = e.id
WHERE e.partitions > 1
"""


class PartitionPlans:
    """A cached ``event_id -> PartitionPlan`` lookup, refreshed in the background."""

    def __init__(self, pool: asyncpg.Pool, refresh_s: float = 60.0) -> None:
        self.pool = pool
        self.refresh_s = refresh_s
        self._plans: dict[int, PartitionPlan] = {}
        self._task: asyncio.Task[None] | None = None

    def __call__(self, event_id: int) -> PartitionPlan:
        return self._plans.get(event_id, SINGLE_PARTITION)

    async def refresh(self) -> None:
        rows = await self.pool.fetch(_PLANS_SQL, timeout=5)
        counts: dict[int, int] = {}
        sections: dict[int, dict[str, int]] = {}
        for row in rows:
            counts[row["id"]] = row["partitions"]
            sections.setdefault(row["id"], {})[row["code"]] = row["partition"]
        self._plans = {e: PartitionPlan(count=counts[e], sections=sections[e]) for e in counts}

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:  # keep the last good plans
            log.warning("partition plans not refreshed: %s: %s", type(exc).__name__, exc)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self._refresh_quietly()

    async def start(self) -> None:
        await self._refresh_quietly()
        self._task = asyncio.create_task(self._loop(), name="partition-plans")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
