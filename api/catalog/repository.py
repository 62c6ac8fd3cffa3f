"""PostgreSQL queries of the catalog (asyncpg). Read-only: the catalog is written by the seed.

Every query is parameterised; the event list is assembled from fixed fragments so that
only the filters in use reach the planner (indexes: migrations/0001_catalog.sql).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from core.events import Category, EventStatus, PriceCategory, Venue


class EventRecord(msgspec.Struct, frozen=True):
    """An event row joined with its venue."""

    id: int
    title: str
    category: str
    venue: Venue
    starts_at: datetime
    sale_opens_at: datetime
    sale_closes_at: datetime
    status: EventStatus
    capacity: int
    partitions: int
    # The organizer's per-event rules (None: the API's TB_HOLDS_* defaults).
    buyer_limit: int | None = None
    hold_ttl_s: int | None = None
    # Sold through a waiting room (a row in queue.settings): holds and orders need an
    # admission token (api/queue/service.py).
    queued: bool = False


class LayoutRun(msgspec.Struct, frozen=True):
    """Consecutive seats of one row and one price category."""

    row: str
    first: int
    count: int
    category: str


class LayoutSection(msgspec.Struct, frozen=True):
    code: str
    name: str
    partition: int
    runs: list[LayoutRun]


class ListFilters(msgspec.Struct, frozen=True):
    category: str | None = None
    q: str | None = None
    starts_after: datetime | None = None
    starts_before: datetime | None = None
    # Keyset: the (starts_at, id) of the last event of the previous page.
    after: tuple[datetime, int] | None = None


_EVENT_COLUMNS = """
    e.id, e.title, e.category, v.name AS venue_name, v.address AS venue_address,
    e.starts_at, e.sale_opens_at, e.sale_closes_at, e.status, e.capacity, e.partitions,
    e.buyer_limit, e.hold_ttl_s,
    EXISTS (SELECT 1 FROM queue.settings q WHERE q.event_id = e.id) AS queued
"""

# One row per run of consecutive seat numbers with one category, in layout order.
# (number - row_number) is constant along a run of consecutive numbers.
_LAYOUT_SQL = """
WITH numbered AS (
    SELECT st.section, st.row_label, st.number, st.category,
           sec.position AS sec_pos, r.position AS row_pos,
           st.number - row_number() OVER (
               PARTITION BY st.section, st.row_label, st.category ORDER BY st.number
           ) AS run
    FROM catalog.seats st
    JOIN catalog.sections sec ON sec.event_id = st.event_id AND sec.code = st.section
    JOIN catalog.rows r
      ON r.event_id = st.event_id AND r.section = st.section AND r.label = st.row_label
    WHERE st.event_id = $1
)
SELECT section, row_label, category, min(number) AS first, count(*) AS count
FROM numbered
GROUP BY sec_pos, section, row_pos, row_label, category, run
ORDER BY sec_pos, row_pos, first
"""


def _event(record: Any) -> EventRecord:
    return EventRecord(
        id=record["id"],
        title=record["title"],
        category=record["category"],
        venue=Venue(name=record["venue_name"], address=record["venue_address"]),
        starts_at=record["starts_at"],
        sale_opens_at=record["sale_opens_at"],
        sale_closes_at=record["sale_closes_at"],
        status=record["status"],
        capacity=record["capacity"],
        partitions=record["partitions"],
        buyer_limit=record["buyer_limit"],
        hold_ttl_s=record["hold_ttl_s"],
        queued=record["queued"],
    )


def like_pattern(text: str) -> str:
    """Escape LIKE's wildcards so user text matches literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class CatalogRepository:
    """The catalog's queries on an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def categories(self) -> list[Category]:
        rows = await self._pool.fetch("SELECT code, name FROM catalog.categories ORDER BY position")
        return [Category(code=r["code"], name=r["name"]) for r in rows]

    async def list_events(self, filters: ListFilters, limit: int) -> list[EventRecord]:
        """Published events matching ``filters``, by (starts_at, id), at most ``limit``."""
        where = ["e.status = 'published'"]
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if filters.category is not None:
            where.append(f"e.category = {arg(filters.category)}")
        if filters.q is not None:
            pattern = arg(like_pattern(filters.q))
            # Trigram indexes on both generated search columns; accents and case ignored.
            contains = f"LIKE '%' || catalog.search_key({pattern}) || '%'"
            where.append(
                f"(e.search {contains} OR e.venue_id IN"  # noqa: S608 - fixed fragments
                f" (SELECT id FROM catalog.venues WHERE search {contains}))"
            )
        if filters.starts_after is not None:
            where.append(f"e.starts_at > {arg(filters.starts_after)}")
        if filters.starts_before is not None:
            where.append(f"e.starts_at < {arg(filters.starts_before)}")
        if filters.after is not None:
            after_at, after_id = filters.after
            where.append(f"(e.starts_at, e.id) > ({arg(after_at)}, {arg(after_id)})")
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM catalog.events e"  # noqa: S608 - fixed fragments
            " JOIN catalog.venues v ON v.id = e.venue_id"
            f" WHERE {' AND '.join(where)}"
            f" ORDER BY e.starts_at, e.id LIMIT {arg(limit)}"
        )
        return [_event(r) for r in await self._pool.fetch(sql, *args)]

    async def event(self, event_id: int) -> EventRecord | None:
        """A published or cancelled event (drafts are not public)."""
        record = await self._pool.fetchrow(
            f"SELECT {_EVENT_COLUMNS} FROM catalog.events e"  # noqa: S608 - fixed fragment
            " JOIN catalog.venues v ON v.id = e.venue_id"
            " WHERE e.id = $1 AND e.status <> 'draft'",
            event_id,
        )
        return None if record is None else _event(record)

    async def price_categories(self, event_ids: list[int]) -> dict[int, list[PriceCategory]]:
        rows = await self._pool.fetch(
            "SELECT event_id, code, name, price_minor, currency FROM catalog.price_categories"
            " WHERE event_id = ANY($1::bigint[]) ORDER BY event_id, position",
            event_ids,
        )
        out: dict[int, list[PriceCategory]] = {e: [] for e in event_ids}
        for r in rows:
            out[r["event_id"]].append(
                PriceCategory(
                    code=r["code"],
                    name=r["name"],
                    price_minor=r["price_minor"],
                    currency=r["currency"].strip(),
                )
            )
        return out

    async def layout(self, event_id: int) -> list[LayoutSection]:
        """The seat map of an event as sections of runs, front of the venue first."""
        async with self._pool.acquire() as conn:
            sections = await conn.fetch(
                "SELECT code, name, partition FROM catalog.sections"
                " WHERE event_id = $1 ORDER BY position",
                event_id,
            )
            runs = await conn.fetch(_LAYOUT_SQL, event_id)
        by_code = {
            s["code"]: LayoutSection(s["code"], s["name"], s["partition"], []) for s in sections
        }
        for r in runs:
            by_code[r["section"]].runs.append(
                LayoutRun(
                    row=r["row_label"], first=r["first"], count=r["count"], category=r["category"]
                )
            )
        return list(by_code.values())
