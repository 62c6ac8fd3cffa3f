"""Rebuild an event's Redis inventory from PostgreSQL (cold start, seed, recovery).

Redis is fast, not durable. PostgreSQL holds the truth for what a seat map is
(``catalog.seats``) and what was sold (``orders.tickets``); this module reads both and
hands them to ``core.inventory.Inventory.load`` one partition at a time.

Any process with an asyncpg connection (or pool) and an ``Inventory`` can call
``rebuild_inventory``: the seed does after writing the catalog, and a worker or the API
can after a Redis failover. It never imports ``api`` or ``workers``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from core.inventory import PartitionPlan
from core.venues import GATES

_SEATS_SQL = """
SELECT sec.partition, st.seat_id, st.category, st.wheelchair, st.companion
FROM catalog.seats st
JOIN catalog.sections sec ON sec.event_id = st.event_id AND sec.code = st.section
JOIN catalog.rows r
  ON r.event_id = st.event_id AND r.section = st.section AND r.label = st.row_label
WHERE st.event_id = $1
ORDER BY sec.position, r.position, st.number
"""

_SOLD_SQL = """
SELECT seat_id, order_id::text AS order_id, holder FROM orders.tickets
WHERE event_id = $1 AND refunded_at IS NULL
"""


class InventoryLoader(Protocol):
    """The part of ``core.inventory.Inventory`` this module needs."""

    async def load(
        self,
        event_id: int,
        partition: int,
        seats: list[tuple[str, str]],
        sold: dict[str, tuple[str, str]],
        *,
        access: dict[str, str] | None = None,
    ) -> Any: ...


class Queryable(Protocol):
    """An asyncpg ``Connection`` or ``Pool``."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


class PartitionInventory(msgspec.Struct):
    """What PostgreSQL says one partition of an event holds."""

    # (seat_id, price category) in layout order: section, row, number — so neighbours in
    # the list are neighbours in the venue (best-available picks adjacent runs).
    seats: list[tuple[str, str]] = msgspec.field(default_factory=list)
    # seat_id -> (order_id, buyer) of every ticket already persisted; the buyer lets the
    # inventory count the seat against the buyer's per-event limit.
    sold: dict[str, tuple[str, str]] = msgspec.field(default_factory=dict)
    # seat_id -> "w" (wheelchair space) or "c" (companion seat).
    access: dict[str, str] = msgspec.field(default_factory=dict)


class RebuildReport(msgspec.Struct, frozen=True):
    event_id: int
    partitions: int
    seats: int
    sold: int


async def read_inventory(db: Queryable, event_id: int) -> dict[int, PartitionInventory]:
    """The seats (and sold seats) of ``event_id`` per partition, from PostgreSQL."""
    parts: dict[int, PartitionInventory] = {}
    for record in await db.fetch(_SEATS_SQL, event_id):
        part = parts.get(record["partition"])
        if part is None:
            part = parts[record["partition"]] = PartitionInventory()
        part.seats.append((record["seat_id"], record["category"]))
        if record["wheelchair"] or record["companion"]:
            part.access[record["seat_id"]] = "w" if record["wheelchair"] else "c"
    if parts and await db.fetchval("SELECT to_regclass('orders.tickets') IS NOT NULL"):
        where = {seat: p for p, part in parts.items() for seat, _ in part.seats}
        for record in await db.fetch(_SOLD_SQL, event_id):
            partition = where.get(record["seat_id"])
            if partition is not None:
                parts[partition].sold[record["seat_id"]] = (record["order_id"], record["holder"])
    return parts


async def rebuild_inventory(
    db: Queryable, inventory: InventoryLoader, event_id: int
) -> RebuildReport:
    """Load ``event_id``'s seats and sold seats from PostgreSQL into Redis.

    Calls ``inventory.load(event_id, partition, seats, sold)`` for every partition of the
    event's seat map (``catalog.sections.partition``), then sets the sale gate from the
    event's status (``core.venues.GATES``). ``load`` replaces the partition:
    live holds and pending orders there are dropped (core/inventory.py), so call this on
    a cold start or after a Redis failover, not on a healthy inventory. The Inventory's
    partition plan must agree with ``catalog.sections.partition`` (one partition each
    for the seeded events).
    """
    parts = await read_inventory(db, event_id)
    for partition, part in sorted(parts.items()):
        if part.access:
            await inventory.load(event_id, partition, part.seats, part.sold, access=part.access)
        else:
            await inventory.load(event_id, partition, part.seats, part.sold)
    # The sale gate follows the event's state in PostgreSQL, so a rebuild after Redis
    # lost everything leaves a paused, closed or cancelled sale shut.
    set_gate = getattr(inventory, "set_gate", None)
    status = await db.fetchval("SELECT status FROM catalog.events WHERE id = $1", event_id)
    if parts and set_gate is not None and status in GATES:
        await set_gate(event_id, GATES[status])
    return RebuildReport(
        event_id=event_id,
        partitions=len(parts),
        seats=sum(len(p.seats) for p in parts.values()),
        sold=sum(len(p.sold) for p in parts.values()),
    )


async def read_partition_plans(db: Queryable) -> dict[int, PartitionPlan]:
    """The partition plan of every event split into more than one partition.

    For ``Inventory(client, plans=...)``: events not in the result are one partition
    (``SINGLE_PARTITION``). Sections map to ``catalog.sections.partition``.
    """
    rows = await db.fetch(
        "SELECT e.id, e.partitions, s.code, s.partition FROM catalog.events e"
        " JOIN catalog.sections s ON s.event_id = e.id WHERE e.partitions > 1"
    )
    sections: dict[int, dict[str, int]] = {}
    counts: dict[int, int] = {}
    for r in rows:
        counts[r["id"]] = r["partitions"]
        sections.setdefault(r["id"], {})[r["code"]] = r["partition"]
    return {e: PartitionPlan(count=counts[e], sections=sections[e]) for e in counts}


async def rebuild_all(
    db: Queryable, inventory: InventoryLoader, event_ids: Sequence[int] | None = None
) -> list[RebuildReport]:
    """``rebuild_inventory`` for the given events (default: every published or paused
    event)."""
    if event_ids is None:
        rows = await db.fetch(
            "SELECT id FROM catalog.events WHERE status IN ('published', 'paused') ORDER BY id"
        )
        event_ids = [r["id"] for r in rows]
    return [await rebuild_inventory(db, inventory, e) for e in event_ids]
