"""The admitter: paces the waiting rooms and writes their fairness logs.

Every ``TB_QUEUE_ADMIT_INTERVAL_MS``, for every queued event whose sale has not ended:

1. **admit**: ``lua/queue_admit.lua`` with the seats left (the inventory's free seats):
   the script admits the next fans at the queue's rate (a token bucket in the queue), only
   for the holder of the pacing lease, so two admitters never admit twice or faster;
   with no seats left the queue turns ``sold_out`` and resumes when seats come back;
2. **log**: copies the queue's log stream (entries the scripts appended atomically with
   each join, admission, opening...) into ``queue.fairness_log``, each entry chained to
   the one before by its hash, in one transaction with the stream cursor; then trims the
   copied entries from Redis.

``python -m workers.admitter verify-fairness <event_id>`` recomputes an event's chain,
checks the revealed seed against its commitment, that fans were admitted in the order
the seed and the joins imply and never faster than the rate; exit status 1 if not.

Run: ``uv run python -m workers.admitter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from typing import Any

import asyncpg
import msgspec
from redis.asyncio.cluster import RedisCluster

from core.inventory import Inventory, stream_key
from core.queue import (
    CONFIG_SQL,
    GENESIS_HASH,
    AdmitPass,
    LogEntry,
    QueueConfig,
    QueueGateway,
    Verdict,
    config_of,
    delta_fields,
    entry_body,
    queue_keys,
    seal,
    shoppers_cap,
    stored_entry,
    stream_fields,
    verify_log,
)
from core.settings import Settings, load_settings
from workers.metrics import (
    QUEUE_ADMITTED,
    QUEUE_LOG_ENTRIES,
    QUEUE_RATE,
    QUEUE_SOLD_OUT,
    QUEUE_WAITING,
)
from workers.runtime import ProbeServer, configure_logging, create_pg_pool, create_redis, pg_ready

log = logging.getLogger("ticketbuster.admitter")


class Admitter:
    """One admitter process's passes (see the module docstring)."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, redis: RedisCluster, name: str = ""
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.inventory = Inventory(redis, settings.holds)
        self.gateway = QueueGateway(self.inventory.link)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"

    def close(self) -> None:
        self.inventory.close()

    async def configs(self) -> list[QueueConfig]:
        rows = await self.pool.fetch(
            CONFIG_SQL + " AND least(e.sale_closes_at, e.starts_at) > now()"
        )
        return [config_of(r) for r in rows]

    async def run_once(self) -> dict[int, AdmitPass]:
        """One pass over every queued event; the admission outcome per event."""
        outcomes: dict[int, AdmitPass] = {}
        for config in await self.configs():
            try:
                outcomes[config.event_id] = await self.admit(config)
                await self.copy_log(config.event_id, config.partitions)
            except Exception:
                log.exception("queue pass of event %s failed", config.event_id)
        return outcomes

    async def admit(self, config: QueueConfig) -> AdmitPass:
        seats_left = sum((await self.inventory.availability(config.event_id)).values())
        cap = (
            shoppers_cap(seats_left, self.settings.holds.max_seats_per_buyer)
            if config.rate_auto
            else 0
        )
        outcome = await self.gateway.admit(
            config.event_id,
            self.name,
            self.settings.queue.lease_ms,
            seats_left,
            self.settings.queue.admit_max_batch,
            cap,
        )
        label = str(config.event_id)
        QUEUE_RATE.labels(label).set(config.rate_per_min)
        if outcome.outcome == "admitted":
            QUEUE_WAITING.labels(label).set(outcome.waiting)
            QUEUE_ADMITTED.labels(label).set(outcome.admitted_total)
        QUEUE_SOLD_OUT.labels(label).set(1 if outcome.outcome == "sold_out" else 0)
        return outcome

    async def copy_log(self, event_id: int, partitions: int = 1) -> int:
        """Append what happened since the last copy to the event's fairness log: the
        queue's log stream, and the holds and sales from each partition's seat-delta
        stream, in time order. One transaction with the cursors; how many stream entries
        it read (0: nothing new)."""
        log_key = queue_keys(event_id)[KEY_LOG]
        batch = self.settings.queue.log_batch
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT log_cursor, delta_cursors FROM queue.settings WHERE event_id = $1"
                " FOR UPDATE",
                event_id,
            )
            if row is None:
                return 0
            cursor = row["log_cursor"]
            deltas: dict[str, str] = msgspec.json.decode(row["delta_cursors"])
            # (at, source order, stream id, fields) of every new entry
            found: list[tuple[int, int, str, dict[str, Any]]] = []
            raw: list[Any] = list(
                await self.redis.xrange(log_key, min=f"({cursor}", count=batch) or []
            )
            for n, (entry_id, fields) in enumerate(raw):
                queued = stream_fields(dict(fields or {}))
                found.append((queued["at"], n, _text(entry_id), queued))
            last_id = _text(raw[-1][0]) if raw else cursor
            consumed = len(raw)
            for p in range(partitions):
                since = deltas.get(str(p), "0-0")
                entries: list[Any] = list(
                    await self.redis.xrange(stream_key(event_id, p), min=f"({since}", count=batch)
                    or []
                )
                for n, (entry_id, fields) in enumerate(entries):
                    seat = delta_fields(entry_id, dict(fields or {}))
                    if seat is not None:
                        found.append((seat["at"], len(raw) + n, _text(entry_id), seat))
                if entries:
                    deltas[str(p)] = _text(entries[-1][0])
                consumed += len(entries)
            if not consumed:
                return 0
            head = await conn.fetchrow(
                "SELECT seq, hash FROM queue.fairness_log WHERE event_id = $1"
                " ORDER BY seq DESC LIMIT 1",
                event_id,
            )
            seq, prev = (0, GENESIS_HASH) if head is None else (head["seq"], head["hash"])
            rows = []
            # Queue entries keep their own order (a stable sort on time, then source).
            for _, _, _, body in sorted(found, key=lambda f: (f[0], f[1])):
                seq += 1
                entry = seal({"seq": seq, **body}, prev)
                prev = entry.hash
                rows.append((event_id, seq, entry_body(entry).decode(), entry.prev, entry.hash))
            if rows:
                await conn.copy_records_to_table(
                    "fairness_log",
                    schema_name="queue",
                    columns=("event_id", "seq", "body", "prev", "hash"),
                    records=rows,
                )
            await conn.execute(
                "UPDATE queue.settings SET log_cursor = $2, delta_cursors = $3::jsonb"
                " WHERE event_id = $1",
                event_id,
                last_id,
                msgspec.json.encode(deltas).decode(),
            )
        if raw:
            # Copied and committed: Redis may forget them (a crash before this keeps them,
            # and the cursor skips them next time). The seat deltas are the live map's.
            await self.redis.xtrim(log_key, minid=last_id)
        QUEUE_LOG_ENTRIES.inc(len(rows))
        return consumed


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


KEY_LOG = 4  # the log stream's index in core.queue.queue_keys


async def read_log(pool: asyncpg.Pool, event_id: int) -> list[LogEntry]:
    rows = await pool.fetch(
        "SELECT body, prev, hash FROM queue.fairness_log WHERE event_id = $1 ORDER BY seq",
        event_id,
    )
    return [stored_entry(r["body"], r["prev"], r["hash"]) for r in rows]


async def verify_fairness(settings: Settings, event_id: int) -> Verdict:
    pool = await create_pg_pool(settings)
    try:
        return verify_log(await read_log(pool, event_id))
    finally:
        await pool.close()


async def serve(settings: Settings) -> None:
    pool = await create_pg_pool(settings)
    redis = await create_redis(settings)
    admitter = Admitter(settings, pool, redis)
    probes = ProbeServer(
        settings.workers.http_host, settings.workers.admitter_port, lambda: pg_ready(pool)
    )
    await probes.start()
    log.info("admitter %s pacing every %d ms", admitter.name, settings.queue.admit_interval_ms)
    try:
        while True:
            try:
                await admitter.run_once()
            except Exception:
                log.exception("admitter pass failed")
            await asyncio.sleep(settings.queue.admit_interval_ms / 1000)
    finally:
        await probes.stop()
        admitter.close()
        await redis.aclose()
        await pool.close()


def main(argv: list[str]) -> int:
    configure_logging()
    settings = load_settings()
    if len(argv) == 2 and argv[0] == "verify-fairness":
        if not argv[1].isdigit():
            print(f"verify-fairness: {argv[1]!r} is not an event id", file=sys.stderr)
            return 2
        verdict = asyncio.run(verify_fairness(settings, int(argv[1])))
        for problem in verdict.problems:
            print(f"FAIL {problem}")
        state = "OK" if verdict.ok else "FAILED"
        print(f"{state}: event {argv[1]}, {verdict.entries} entries, head {verdict.head}")
        return 0 if verdict.ok else 1
    if argv:
        print("usage: python -m workers.admitter [verify-fairness <event_id>]", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
