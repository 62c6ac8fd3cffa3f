"""PostgreSQL queries of the waiting room: an event's queue settings and its fairness log."""

from __future__ import annotations

import asyncpg

from core.queue import CONFIG_SQL, GENESIS_HASH, LogEntry, QueueConfig, config_of, stored_entry


class QueueRepository:
    """The waiting room's queries on an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def config(self, event_id: int) -> QueueConfig | None:
        row = await self._pool.fetchrow(CONFIG_SQL + " AND q.event_id = $1", event_id)
        return None if row is None else config_of(row)

    async def page(self, event_id: int, after: int, limit: int) -> list[LogEntry]:
        rows = await self._pool.fetch(
            "SELECT body, prev, hash FROM queue.fairness_log WHERE event_id = $1 AND seq > $2"
            " ORDER BY seq LIMIT $3",
            event_id,
            after,
            limit,
        )
        return [stored_entry(r["body"], r["prev"], r["hash"]) for r in rows]

    async def head(self, event_id: int) -> tuple[int, str]:
        """(entries, hash of the last) of the event's log."""
        row = await self._pool.fetchrow(
            "SELECT seq, hash FROM queue.fairness_log WHERE event_id = $1"
            " ORDER BY seq DESC LIMIT 1",
            event_id,
        )
        return (0, GENESIS_HASH) if row is None else (row["seq"], row["hash"])
