"""SQL of the organizer API. Every query that reads or writes a venue or an event takes
the caller's tenant (``org``: an organization code, or None for an admin) and matches
nothing outside it, so another organization's resource is simply not found (404)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from core.venues import MapSeat, MapSection, SeatMapDoc


async def audit(
    conn: asyncpg.Connection,
    *,
    actor: str,
    roles: list[str],
    organization: str,
    action: str,
    resource: str,
    before: Any = None,
    after: Any = None,
) -> None:
    """One audit entry, in the caller's transaction (the action and its record commit
    together or not at all)."""
    await conn.execute(
        "INSERT INTO catalog.audit_log (actor, roles, organization, action, resource,"
        " before, after) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)",
        actor,
        roles,
        organization,
        action,
        resource,
        None if before is None else json.dumps(before, default=str),
        None if after is None else json.dumps(after, default=str),
    )


VENUE_SQL = """
SELECT v.id, v.organization, v.name, v.address, v.version,
       m.version AS map_version, m.seats
FROM catalog.venues v LEFT JOIN catalog.venue_seat_maps m ON m.venue_id = v.id
"""

EVENT_SQL = """
SELECT e.id, e.organization, e.venue_id, e.slug, e.title, e.category, e.status,
       e.starts_at, e.sale_opens_at, e.sale_closes_at, e.capacity, e.currency,
       e.partitions, e.version, e.buyer_limit, e.hold_ttl_s, e.venue_map_version,
       (SELECT count(*) FROM orders.orders o
         WHERE o.event_id = e.id AND o.refund = 'due') AS refunds_due
FROM catalog.events e
"""

_MAP_SQL = """
SELECT st.section, sec.name AS section_name, st.row_label, st.number, st.category,
       st.wheelchair, st.companion
FROM catalog.seats st
JOIN catalog.sections sec ON sec.event_id = st.event_id AND sec.code = st.section
JOIN catalog.rows r
  ON r.event_id = st.event_id AND r.section = st.section AND r.label = st.row_label
WHERE st.event_id = $1
ORDER BY sec.position, r.position, st.number
"""


async def event_map(conn: Any, event_id: int) -> SeatMapDoc | None:
    """An event's seat map from catalog.sections/rows/seats (None: it has no seats)."""
    sections: dict[str, tuple[str, dict[str, list[MapSeat]]]] = {}
    for r in await conn.fetch(_MAP_SQL, event_id):
        section = sections.get(r["section"])
        if section is None:
            section = sections[r["section"]] = (r["section_name"], {})
        section[1].setdefault(r["row_label"], []).append(
            MapSeat(r["number"], r["category"], r["wheelchair"], r["companion"])
        )
    if not sections:
        return None
    from core.venues import MapRow

    return SeatMapDoc(
        sections=[
            MapSection(code, name, [MapRow(label, seats) for label, seats in rows.items()])
            for code, (name, rows) in sections.items()
        ]
    )


async def write_event_map(
    conn: asyncpg.Connection, event_id: int, doc: SeatMapDoc, partitions: dict[str, int]
) -> int:
    """Replace the event's sections, rows and seats with ``doc`` (caller's transaction).

    Seats with tickets cannot be deleted (orders.tickets references them): the caller
    checks that first, so the foreign key is the last line, not the first."""
    await conn.execute("DELETE FROM catalog.sections WHERE event_id = $1", event_id)
    await conn.copy_records_to_table(
        "sections",
        schema_name="catalog",
        columns=["event_id", "code", "name", "position", "partition"],
        records=[
            (event_id, s.code, s.name, i, partitions.get(s.code, 0))
            for i, s in enumerate(doc.sections)
        ],
    )
    await conn.copy_records_to_table(
        "rows",
        schema_name="catalog",
        columns=["event_id", "section", "label", "position"],
        records=[
            (event_id, s.code, r.label, i) for s in doc.sections for i, r in enumerate(s.rows)
        ],
    )
    records = [
        (event_id, s.code, r.label, seat.number, seat.category, seat.wheelchair, seat.companion)
        for s in doc.sections
        for r in s.rows
        for seat in r.seats
    ]
    await conn.copy_records_to_table(
        "seats",
        schema_name="catalog",
        columns=[
            "event_id",
            "section",
            "row_label",
            "number",
            "category",
            "wheelchair",
            "companion",
        ],
        records=records,
    )
    return len(records)
