"""The catalog as the API serves it: PostgreSQL facts merged with the live inventory.

One ``Catalog`` per process (``api/catalog/deps.py``) keeps small caches:

- price categories per event (TTL ``PRICE_TTL_S``): ``price_minor(event_id, category)``
  answers the hold and order paths without a PostgreSQL query per request;
- seat-map layouts (TTL ``LAYOUT_TTL_S``): the static part of ``GET .../seats``;
- the last rendered seat map per event, reused while the inventory version is unchanged;
- events (TTL ``EVENT_TTL_S``), so an event page read by a crowd is one query per process,
  and the hold path checks the sale window (``on_sale``) without a query per hold;
- one in-flight load per key, so a burst of requests for one stadium makes one query.

Partition plans: the inventory routes seats by the API's partition plans (``plans``, read
from the catalog at startup and in the background). When a loaded event record says the
event has another number of partitions than its plan (split, or created, since the last
read), the plans are re-read before the record is used: a split event is served right
from its first request (holds in each partition, a seat map of all of them).

A layout or price change reaches every process within its TTL; nothing else changes
them at runtime (the catalog is written by the seed / back office). While PostgreSQL is
unreachable, an entry past its TTL is served for up to ``STALE_IF_ERROR_S`` more
(stale-if-error), so a database restart does not stop holds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, TypeVar, cast

import msgspec

from api.catalog.repository import CatalogRepository, EventRecord, LayoutSection, ListFilters
from core.breaker import pg_outages
from core.errors import InvalidInput, NotFound, Unavailable
from core.events import (
    SEAT_STATUS_CODES,
    SEAT_STATUS_LEGEND,
    Category,
    CategoryAvailability,
    Event,
    EventPage,
    EventSummary,
    PriceCategory,
    SeatMap,
    SeatRow,
    SeatSection,
    ensure_on_sale,
)
from core.inventory import PartitionPlan, stream_key
from core.seats import SeatStatus, seat_row_and_number

log = logging.getLogger("ticketbuster.api.catalog")

PRICE_TTL_S = 60.0
# A rendered seat map is reused while the inventory version is unchanged, for at most this
# long: a hold that expired lazily (no delta until the sweep) shows as free after it.
SEAT_MAP_MAX_AGE_S = 5.0
LAYOUT_TTL_S = 300.0
CATEGORIES_TTL_S = 300.0
# An event page in a flash sale is read by everyone at once: one query per process per TTL.
EVENT_TTL_S = 10.0
# "No such event" is remembered briefly: absorbs floods for one bad id, heals fast.
NEGATIVE_TTL_S = 5.0
# When a reload fails because PostgreSQL is unreachable (a restart, a switchover), an
# expired entry is served for up to this long past its TTL, a reload being tried again
# every STALE_RETRY_S: holds and prices keep working through the outage.
STALE_IF_ERROR_S = 300.0
STALE_RETRY_S = 1.0
_OUTAGES: Final[tuple[type[BaseException], ...]] = (Unavailable, *pg_outages())
MAX_CACHE_ENTRIES = 10_000
# Largest event id PostgreSQL's bigint holds; larger ids cannot exist.
MAX_EVENT_ID = 2**63 - 1

T = TypeVar("T")


class InventoryView(Protocol):
    """The read side of ``core.inventory.Inventory`` the catalog uses."""

    async def availability(self, event_id: int) -> dict[str, int]: ...

    async def seat_statuses(self, event_id: int) -> tuple[str, Mapping[str, SeatStatus]]: ...


class PlanSource(Protocol):
    """The API's partition plans (``api.partitions.PartitionPlans``): the lookup the
    inventory routes by, and a re-read of the catalog's plans."""

    def __call__(self, event_id: int) -> PartitionPlan: ...

    async def refresh(self) -> None: ...


class StreamReader(Protocol):
    """The one Redis command the catalog issues itself (a ``RedisCluster`` has it)."""

    async def xrevrange(
        self, name: str, max: str = "+", min: str = "-", count: int | None = None
    ) -> Any: ...


class RenderedSeatMap(msgspec.Struct, frozen=True):
    """A seat map encoded once, with its ETag."""

    etag: str
    version: str
    body: bytes
    layout_digest: str = ""
    rendered_at: float = 0.0
    # gzip of ``body``, made once per version (~95% smaller for a stadium).
    gzipped: bytes = b""


class _CompiledLayout(msgspec.Struct, frozen=True):
    sections: list[LayoutSection]
    # "<section>-<row>" -> [(run index, first number, count)], to place a seat id.
    rows: dict[str, list[tuple[int, int, int]]]
    run_count: int
    digest: str  # changes when the layout does


def _compile(sections: list[LayoutSection]) -> _CompiledLayout:
    rows: dict[str, list[tuple[int, int, int]]] = {}
    h = hashlib.blake2b(digest_size=6)
    index = 0
    for section in sections:
        h.update(f"{section.code}|{section.name}|".encode())
        for run in section.runs:
            rows.setdefault(f"{section.code}-{run.row}", []).append((index, run.first, run.count))
            h.update(f"{run.row},{run.first},{run.count},{run.category};".encode())
            index += 1
    return _CompiledLayout(sections, rows, index, h.hexdigest())


class _Cached(msgspec.Struct):
    expires: float
    value: Any
    stale_until: float = 0.0


class Catalog:
    """Catalog queries with caches; see the module docstring."""

    def __init__(
        self,
        repository: CatalogRepository,
        inventory: InventoryView,
        *,
        streams: StreamReader | None = None,
        plans: PlanSource | None = None,
        price_ttl_s: float = PRICE_TTL_S,
        layout_ttl_s: float = LAYOUT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.repository = repository
        self.inventory = inventory
        self._streams = streams
        self._plans = plans
        self._price_ttl_s = price_ttl_s
        self._layout_ttl_s = layout_ttl_s
        self._clock = clock  # monotonic, for cache ages
        self._now = now  # wall clock, for sale windows
        self._cache: dict[tuple[str, int], _Cached] = {}
        self._inflight: dict[tuple[str, int], asyncio.Future[Any]] = {}
        self._rendered: dict[int, RenderedSeatMap] = {}

    # -- caching --------------------------------------------------------------------------

    async def _cached(
        self, kind: str, key: int, ttl_s: float, load: Callable[[], Awaitable[T]]
    ) -> T:
        """``load()`` at most once per ``ttl_s`` and once at a time per (kind, key)."""
        now = self._clock()
        hit = self._cache.get((kind, key))
        if hit is not None and hit.expires > now:
            return cast(T, hit.value)
        try:
            return await self._single_flight((kind, key), ttl_s, load)
        except _OUTAGES:
            if hit is None or now > hit.stale_until:
                raise
            hit.expires = now + STALE_RETRY_S
            return cast(T, hit.value)

    async def _single_flight(
        self, key: tuple[str, int], ttl_s: float, load: Callable[[], Awaitable[T]]
    ) -> T:
        """Run ``load()`` once for all concurrent callers of ``key`` (and cache it).

        The load runs in its own task, so a caller that goes away (client disconnect,
        timeout) does not cancel it for the others.
        """
        task = self._inflight.get(key)
        if task is None:

            async def run() -> Any:
                try:
                    value = await load()
                    if ttl_s > 0:
                        self._store(key, ttl_s, value)
                    return value
                finally:
                    self._inflight.pop(key, None)

            task = asyncio.ensure_future(run())
            # Nobody may be left to read a failure; retrieve it so it is not logged.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._inflight[key] = task
        return cast(T, await asyncio.shield(task))

    def _store(self, key: tuple[str, int], ttl_s: float, value: Any) -> None:
        now = self._clock()
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            # Requests for ids that do not exist must not grow the cache without bound.
            for stale in [k for k, v in self._cache.items() if v.expires <= now]:
                del self._cache[stale]
            if len(self._cache) >= MAX_CACHE_ENTRIES:
                self._cache.clear()
        self._cache[key] = _Cached(now + ttl_s, value, now + ttl_s + STALE_IF_ERROR_S)

    def invalidate(self, event_id: int) -> None:
        """Forget everything cached about ``event_id`` (after a catalog change)."""
        for kind in ("prices", "layout", "event"):
            self._cache.pop((kind, event_id), None)
        self._rendered.pop(event_id, None)

    # -- categories and prices -------------------------------------------------------------

    async def categories(self) -> list[Category]:
        return await self._cached("categories", 0, CATEGORIES_TTL_S, self.repository.categories)

    async def category_codes(self) -> set[str]:
        return {c.code for c in await self.categories()}

    async def prices(self, event_id: int) -> dict[str, PriceCategory]:
        """The price categories of ``event_id`` by code (cached); NotFound if none."""

        async def load() -> dict[str, PriceCategory]:
            found = await self.repository.price_categories([event_id])
            return {p.code: p for p in found.get(event_id, [])}

        if not 0 < event_id <= MAX_EVENT_ID:
            raise NotFound(f"event {event_id} not found")
        prices = await self._cached("prices", event_id, self._price_ttl_s, load)
        if not prices:
            self._store(("prices", event_id), NEGATIVE_TTL_S, prices)  # remember briefly
            raise NotFound(f"event {event_id} not found")
        return prices

    async def price_minor(self, event_id: int, category: str) -> int:
        """Price of one seat of ``category`` at ``event_id``, in minor units (cached).

        For the hold and order paths: no PostgreSQL query while the cache is warm.
        Raises NotFound for an unknown event, InvalidInput for an unknown category.
        """
        prices = await self.prices(event_id)
        price = prices.get(category)
        if price is None:
            raise InvalidInput(
                f"event {event_id} has no price category {category!r}", field="category"
            )
        return price.price_minor

    async def _prices_for(self, event_ids: list[int]) -> dict[int, list[PriceCategory]]:
        """Price lists for a page of events: cache hits, then one query for the misses."""
        now = self._clock()
        out: dict[int, list[PriceCategory]] = {}
        missing: list[int] = []
        for event_id in event_ids:
            hit = self._cache.get(("prices", event_id))
            if hit is not None and hit.expires > now:
                out[event_id] = list(hit.value.values())
            else:
                missing.append(event_id)
        if missing:
            loaded = await self.repository.price_categories(missing)
            for event_id, prices in loaded.items():
                ttl_s = self._price_ttl_s if prices else NEGATIVE_TTL_S
                self._store(("prices", event_id), ttl_s, {p.code: p for p in prices})
                out[event_id] = prices
        return out

    # -- events ---------------------------------------------------------------------------

    async def _availability(self, event_id: int) -> dict[str, int] | None:
        """Free seats per category, or None when the inventory cannot tell.

        Browsing degrades instead of failing: a Redis outage shows "availability
        unknown", it does not take the catalog down.
        """
        try:
            free = await self.inventory.availability(event_id)
        except Exception:
            log.warning("availability of event %s unavailable", event_id, exc_info=True)
            return None
        return free or None

    @staticmethod
    def _merge(
        prices: list[PriceCategory], free: dict[str, int] | None
    ) -> list[CategoryAvailability]:
        return [
            CategoryAvailability(
                code=p.code,
                name=p.name,
                price_minor=p.price_minor,
                currency=p.currency,
                available=None if free is None else free.get(p.code, 0),
            )
            for p in prices
        ]

    async def list_events(self, filters: ListFilters, limit: int) -> EventPage:
        """A page of published events, each with live availability per price category."""
        if filters.category is not None and filters.category not in await self.category_codes():
            raise InvalidInput(f"unknown category {filters.category!r}", field="category")
        if filters.after is None and filters.starts_after is None:
            # Buyers browse what is still to come.
            filters = msgspec.structs.replace(filters, starts_after=datetime.now(UTC))
        records = await self.repository.list_events(filters, limit + 1)
        page, more = records[:limit], len(records) > limit
        await self._follow_partitions(page)  # availability reads every partition
        ids = [r.id for r in page]
        prices = await self._prices_for(ids)
        free = await asyncio.gather(*(self._availability(i) for i in ids))
        items = [
            EventSummary(
                id=r.id,
                title=r.title,
                category=r.category,
                venue=r.venue,
                starts_at=r.starts_at,
                sale_opens_at=r.sale_opens_at,
                sale_closes_at=r.sale_closes_at,
                status=r.status,
                capacity=r.capacity,
                prices=self._merge(prices.get(r.id, []), f),
            )
            for r, f in zip(page, free, strict=True)
        ]
        cursor = encode_cursor(page[-1].starts_at, page[-1].id) if more and page else None
        return EventPage(items=items, next_cursor=cursor)

    async def _follow_partitions(self, records: list[EventRecord]) -> None:
        """Re-read the partition plans if one of ``records`` disagrees with its plan.

        The plans are otherwise re-read in the background (every minute): an event split
        or created since then would be routed as one partition until that read. One
        re-read at a time, shared by concurrent callers.
        """
        plans = self._plans
        if plans is None or all(plans(r.id).count == r.partitions for r in records):
            return
        await self._single_flight(("plans", 0), 0, plans.refresh)

    async def _record(self, event_id: int) -> EventRecord:
        """The event (cached ``EVENT_TTL_S``; an unknown id ``NEGATIVE_TTL_S``), with the
        inventory's partition plan in agreement with it."""

        async def load() -> EventRecord | None:
            found = await self.repository.event(event_id)
            if found is not None:
                await self._follow_partitions([found])
            return found

        if not 0 < event_id <= MAX_EVENT_ID:
            raise NotFound(f"event {event_id} not found")
        record: EventRecord | None = await self._cached("event", event_id, EVENT_TTL_S, load)
        if record is None:
            self._store(("event", event_id), NEGATIVE_TTL_S, None)
            raise NotFound(f"event {event_id} not found")
        return record

    async def on_sale(self, event_id: int) -> EventRecord:
        """The event, if buyers may hold its seats now (for the hold path).

        The record is the cached one (``EVENT_TTL_S``): no PostgreSQL query while warm; a
        change of the window or a cancellation reaches every process within that TTL.
        NotFound for an unknown or draft event; SaleNotOpen / SaleClosed (409) outside the
        sale window (``core.events.ensure_on_sale``).
        """
        record = await self._record(event_id)
        ensure_on_sale(
            event_id,
            status=record.status,
            sale_opens_at=record.sale_opens_at,
            sale_closes_at=record.sale_closes_at,
            starts_at=record.starts_at,
            now=self._now(),
        )
        return record

    async def queued(self, event_id: int) -> bool:
        """Whether the event sells through a waiting room (cached with the event record)."""
        return (await self._record(event_id)).queued

    async def event(self, event_id: int) -> Event:
        record = await self._record(event_id)
        prices, free = await asyncio.gather(
            self._prices_for([event_id]), self._availability(event_id)
        )
        return Event(
            id=record.id,
            title=record.title,
            category=record.category,
            venue=record.venue,
            starts_at=record.starts_at,
            sale_opens_at=record.sale_opens_at,
            sale_closes_at=record.sale_closes_at,
            status=record.status,
            capacity=record.capacity,
            partitions=record.partitions,
            prices=self._merge(prices.get(event_id, []), free),
        )

    # -- seat map -------------------------------------------------------------------------

    async def _layout(self, event_id: int) -> _CompiledLayout:
        async def load() -> _CompiledLayout:
            await self._record(event_id)  # 404 for unknown or draft events
            return _compile(await self.repository.layout(event_id))

        if not 0 < event_id <= MAX_EVENT_ID:
            raise NotFound(f"event {event_id} not found")
        return await self._cached("layout", event_id, self._layout_ttl_s, load)

    async def _stream_version(self, event_id: int) -> str | None:
        """The inventory version from the change streams' last ids (cheap: one XREVRANGE
        per partition), in ``Inventory.seat_statuses``' format; None if unknown."""
        if self._streams is None:
            return None
        plan = getattr(self.inventory, "plan", None)
        count = int(plan(event_id).count) if plan is not None else 1
        versions: list[str] = []
        for partition in range(count):
            last = await self._streams.xrevrange(stream_key(event_id, partition), count=1)
            raw = last[0][0] if last else b"0-0"
            versions.append(raw.decode() if isinstance(raw, bytes) else str(raw))
        return ",".join(versions)

    async def seat_map(self, event_id: int) -> RenderedSeatMap:
        """The layout with the live status of every seat, encoded, with its ETag.

        While the inventory version is the one last rendered (and the rendering is younger
        than ``SEAT_MAP_MAX_AGE_S``), the cached bytes are served after one cheap
        XREVRANGE: a crowd polling a stadium's map costs one full read per change.
        """
        layout = await self._layout(event_id)
        last = self._rendered.get(event_id)
        if (
            last is not None
            and last.layout_digest == layout.digest
            and self._clock() - last.rendered_at < SEAT_MAP_MAX_AGE_S
        ):
            try:
                current = await self._stream_version(event_id)
            except Exception:
                log.warning("stream version of event %s unavailable", event_id, exc_info=True)
                current = None
            if current == last.version:
                return last
        return await self._single_flight(
            ("seat_map", event_id), 0, lambda: self._render(event_id, layout)
        )

    async def _render(self, event_id: int, layout: _CompiledLayout) -> RenderedSeatMap:
        version, statuses = await self.inventory.seat_statuses(event_id)
        if all(v == "0-0" for v in version.split(",")):
            # A loaded partition always has a stream entry (load appends a "reload" delta):
            # no entry means no inventory yet, and "every seat free" would be a lie.
            raise Unavailable(f"the seat inventory of event {event_id} is not loaded yet")
        seat_map = await self._build_seat_map(event_id, layout, version, statuses)
        body = msgspec.json.encode(seat_map)
        # The tag covers the bytes, not only the version: a hold that expired lazily
        # changes the map without a new stream entry.
        digest = hashlib.blake2b(body, digest_size=6).hexdigest()
        etag = f'"{event_id}-{version}-{digest}"'
        last = self._rendered.get(event_id)
        if last is not None and last.etag == etag:
            rendered = msgspec.structs.replace(last, rendered_at=self._clock())
        else:
            rendered = RenderedSeatMap(
                etag=etag,
                version=version,
                body=body,
                gzipped=gzip.compress(body, compresslevel=5, mtime=0),
                layout_digest=layout.digest,
                rendered_at=self._clock(),
            )
        self._rendered[event_id] = rendered
        return rendered

    async def _build_seat_map(
        self,
        event_id: int,
        layout: _CompiledLayout,
        version: str,
        statuses: Mapping[str, SeatStatus],
    ) -> SeatMap:
        free = SEAT_STATUS_CODES["free"].encode()
        runs: list[bytearray] = []
        for section in layout.sections:
            runs.extend(bytearray(free * run.count) for run in section.runs)
        for seat, status in statuses.items():
            code = SEAT_STATUS_CODES.get(status)
            place = seat_row_and_number(seat)  # the strict seat-id rule of core.seats
            if code is None or place is None:
                continue
            row_id, number = place
            for index, first, count in layout.rows.get(row_id, ()):
                if first <= number < first + count:
                    runs[index][number - first] = ord(code)
                    break
        prices = await self.prices(event_id)
        sections: list[SeatSection] = []
        index = 0
        for section in layout.sections:
            rows: list[SeatRow] = []
            for run in section.runs:
                rows.append(SeatRow(run.row, run.first, run.category, runs[index].decode()))
                index += 1
            sections.append(SeatSection(section.code, section.name, rows))
        return SeatMap(
            event_id=event_id,
            version=version,
            legend=dict(SEAT_STATUS_LEGEND),
            categories=list(prices.values()),
            sections=sections,
        )


# -- cursors ----------------------------------------------------------------------------------


class _Cursor(msgspec.Struct, array_like=True, frozen=True):
    starts_at_us: int  # microseconds since the epoch
    event_id: int


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(starts_at: datetime, event_id: int) -> str:
    """Opaque keyset cursor for the position after (starts_at, event_id)."""
    micros = (starts_at - _EPOCH) // timedelta(microseconds=1)
    raw = msgspec.json.encode(_Cursor(micros, event_id))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Inverse of ``encode_cursor``; InvalidInput naming ``cursor`` if it is not one."""
    try:
        if len(cursor) > 64:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parsed = msgspec.json.decode(raw, type=_Cursor)
        if not 0 < parsed.event_id <= MAX_EVENT_ID:
            raise ValueError("bad id")
        when = _EPOCH + timedelta(microseconds=parsed.starts_at_us)
    except (ValueError, binascii.Error, msgspec.DecodeError, OverflowError, OSError):
        raise InvalidInput("cursor is not valid; start again without one", field="cursor") from None
    return when, parsed.event_id
