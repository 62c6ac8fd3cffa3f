"""The organizer's side: organizations, venues, seat maps, events and their lifecycle,
sales reports and the audit log (docs/decisions/0901-0903).

Every write runs in one PostgreSQL transaction together with its audit entry; an edit
names the version it edits (``If-Match``), and the ``UPDATE ... WHERE version = $n``
decides between two organizers editing at once (the loser gets 412).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from api.auth.principal import Principal
from api.organizer import repository as repo
from api.organizer.schemas import (
    AuditEntry,
    AuditPage,
    CategoryReport,
    EventAdminView,
    EventCreate,
    EventPatch,
    Organization,
    OrganizationCreate,
    PriceCategoryView,
    SalesReport,
    SeatMapView,
    VenueCreate,
    VenuePatch,
    VenueView,
)
from core.clock import now_ms
from core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    SoldSeatsKept,
)
from core.events import CURRENCY, EventStatus
from core.inventory import Inventory, PartitionPlan
from core.orders import TOPIC_NOTIFICATIONS, topic
from core.venues import (
    GATES,
    Action,
    SeatMapDoc,
    lost_seats,
    next_status,
    validate_map,
)
from migrations.inventory import rebuild_inventory

# The currencies orders can be placed in (core.orders.Currency).
SUPPORTED_CURRENCIES = frozenset({CURRENCY})
REPORT_WINDOW_MINUTES = 15
TIMELINE_MINUTES = 60


class EventCancelled(msgspec.Struct, frozen=True):
    """Published to the ``notifications`` topic, one per buyer with orders, on cancel."""

    event_id: int
    buyer: str
    orders: list[str]
    at: int
    refund: str = "due"
    type: str = "event.cancelled"
    v: int = 1


def tenant_of(principal: Principal) -> str | None:
    """The organization the caller may manage (None: every one, for an admin)."""
    if principal.has_role("admin"):
        return None
    if principal.has_role("organizer"):
        if principal.org:
            return principal.org
        raise Forbidden("An organizer token must name its organization (claim org).")
    raise Forbidden("This operation needs the role organizer or admin.")


def etag(kind: str, version: int) -> str:
    return f'"{kind}{version}"'


def check_if_match(if_match: str | None, kind: str, version: int) -> None:
    """428 without ``If-Match``, 412 when it names another version than ``version``."""
    if if_match is None or not if_match.strip():
        raise PreconditionRequired(
            "Send If-Match with the ETag you read, so an edit cannot overwrite another's."
        )
    tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
    if "*" in tags or etag(kind, version) in tags:
        return
    raise PreconditionFailed(
        f"This was edited since you read it (current ETag {etag(kind, version)}).",
        etag=etag(kind, version),
    )


def _state(status: EventStatus, opens: datetime, closes: datetime, now: datetime) -> str:
    if status == "published" and opens <= now < closes:
        return "on_sale"
    return status


def _venue(r: Any) -> VenueView:
    return VenueView(
        id=r["id"],
        organization=r["organization"],
        name=r["name"],
        address=r["address"],
        version=r["version"],
        map_version=r["map_version"],
        seats=r["seats"],
    )


def _jsonable(view: msgspec.Struct) -> Any:
    return msgspec.to_builtins(view)


class OrganizerService:
    def __init__(
        self,
        pool: Any,
        inventory: Inventory,
        *,
        catalog: Any = None,
        plans: Any = None,
        kafka: Any = None,
        topic_prefix: str = "tb.",
        max_hold_ttl_s: int = 600,
    ) -> None:
        self.pool = pool
        self.inventory = inventory
        self.catalog = catalog
        self.plans = plans
        self.kafka = kafka
        self.topic_prefix = topic_prefix
        self.max_hold_ttl_s = max_hold_ttl_s

    # -- audit -----------------------------------------------------------------------------

    @staticmethod
    async def _audit(
        conn: asyncpg.Connection,
        who: Principal,
        organization: str,
        action: str,
        resource: str,
        before: Any = None,
        after: Any = None,
    ) -> None:
        await repo.audit(
            conn,
            actor=who.sub,
            roles=sorted(who.roles),
            organization=organization,
            action=action,
            resource=resource,
            before=before,
            after=after,
        )

    async def audit_log(
        self, who: Principal, resource: str | None, before: int | None, limit: int
    ) -> AuditPage:
        org = tenant_of(who)
        rows = await self.pool.fetch(
            "SELECT id, at, actor, roles, organization, action, resource, before, after"
            " FROM catalog.audit_log a WHERE ($1::text IS NULL OR a.organization = $1)"
            " AND ($2::text IS NULL OR resource = $2) AND ($3::bigint IS NULL OR id < $3)"
            " ORDER BY id DESC LIMIT $4",
            org,
            resource,
            before,
            limit + 1,
        )
        items = [
            AuditEntry(
                id=r["id"],
                at=r["at"],
                actor=r["actor"],
                roles=list(r["roles"]),
                organization=r["organization"],
                action=r["action"],
                resource=r["resource"],
                before=None if r["before"] is None else json.loads(r["before"]),
                after=None if r["after"] is None else json.loads(r["after"]),
            )
            for r in rows[:limit]
        ]
        return AuditPage(items, items[-1].id if len(rows) > limit else None)

    # -- organizations ---------------------------------------------------------------------

    async def create_organization(self, who: Principal, data: OrganizationCreate) -> Organization:
        if not who.has_role("admin"):
            raise Forbidden("Only an admin creates organizations.")
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(
                "INSERT INTO catalog.organizations (code, name) VALUES ($1, $2)"
                " ON CONFLICT (code) DO NOTHING RETURNING code",
                data.code,
                data.name,
            )
            if done is None:
                raise Conflict(f"organization {data.code!r} exists already", field="code")
            org = Organization(data.code, data.name)
            await self._audit(
                conn, who, data.code, "organization.create", f"organization:{data.code}",
                after=_jsonable(org),
            )  # fmt: skip
        return org

    async def organizations(self, who: Principal) -> list[Organization]:
        org = tenant_of(who)
        rows = await self.pool.fetch(
            "SELECT code, name FROM catalog.organizations"
            " WHERE ($1::text IS NULL OR code = $1) ORDER BY code",
            org,
        )
        return [Organization(r["code"], r["name"]) for r in rows]

    # -- venues ----------------------------------------------------------------------------

    async def _venue_row(self, conn: Any, org: str | None, venue_id: int) -> Any:
        row = await conn.fetchrow(
            repo.VENUE_SQL + " WHERE v.id = $1 AND ($2::text IS NULL OR v.organization = $2)",
            venue_id,
            org,
        )
        if row is None:
            raise NotFound(f"venue {venue_id} not found")
        return row

    async def create_venue(self, who: Principal, data: VenueCreate) -> VenueView:
        org = tenant_of(who)
        owner = data.organization or org
        if owner is None:
            raise InvalidInput("An admin names the venue's organization.", field="organization")
        if org is not None and owner != org:
            raise Forbidden("An organizer creates venues of its own organization only.")
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM catalog.organizations WHERE code = $1)", owner
            ):
                raise InvalidInput(f"no organization {owner!r}", field="organization")
            venue_id = await conn.fetchval(
                "INSERT INTO catalog.venues (name, address, organization) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO NOTHING RETURNING id",
                data.name,
                data.address,
                owner,
            )
            if venue_id is None:
                raise Conflict(f"a venue named {data.name!r} exists already", field="name")
            view = _venue(await self._venue_row(conn, None, venue_id))
            await self._audit(
                conn, who, owner, "venue.create", f"venue:{venue_id}", after=_jsonable(view)
            )
        return view

    async def venues(self, who: Principal) -> list[VenueView]:
        org = tenant_of(who)
        rows = await self.pool.fetch(
            repo.VENUE_SQL + " WHERE ($1::text IS NULL OR v.organization = $1) ORDER BY v.id", org
        )
        return [_venue(r) for r in rows]

    async def venue(self, who: Principal, venue_id: int) -> VenueView:
        return _venue(await self._venue_row(self.pool, tenant_of(who), venue_id))

    async def edit_venue(
        self, who: Principal, venue_id: int, data: VenuePatch, if_match: str | None
    ) -> VenueView:
        org = tenant_of(who)
        async with self.pool.acquire() as conn, conn.transaction():
            before = _venue(await self._venue_row(conn, org, venue_id))
            check_if_match(if_match, "v", before.version)
            try:
                done = await conn.fetchval(
                    "UPDATE catalog.venues SET name = coalesce($3, name),"
                    " address = coalesce($4, address), version = version + 1"
                    " WHERE id = $1 AND version = $2 RETURNING id",
                    venue_id,
                    before.version,
                    data.name,
                    data.address,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(
                    f"a venue named {data.name!r} exists already", field="name"
                ) from None
            if done is None:
                raise PreconditionFailed("This venue was edited since you read it.")
            after = _venue(await self._venue_row(conn, None, venue_id))
            await self._audit(
                conn, who, before.organization, "venue.edit", f"venue:{venue_id}",
                before=_jsonable(before), after=_jsonable(after),
            )  # fmt: skip
        return after

    # -- seat maps -------------------------------------------------------------------------

    async def venue_map(self, who: Principal, venue_id: int) -> tuple[SeatMapDoc, int]:
        org = tenant_of(who)
        await self._venue_row(self.pool, org, venue_id)
        row = await self.pool.fetchrow(
            "SELECT layout, version FROM catalog.venue_seat_maps WHERE venue_id = $1", venue_id
        )
        if row is None:
            raise NotFound(f"venue {venue_id} has no seat map yet")
        return msgspec.json.decode(row["layout"], type=SeatMapDoc), row["version"]

    async def put_venue_map(
        self, who: Principal, venue_id: int, doc: SeatMapDoc, if_match: str | None
    ) -> SeatMapView:
        """Replace the venue's seat map, all or nothing.

        The first map needs no ``If-Match``; every later one does. A map that would lose
        (or renumber) a seat sold in an event made from this venue's map is refused with
        409 ``sold_seats`` naming those seats."""
        stats = validate_map(doc)
        org = tenant_of(who)
        async with self.pool.acquire() as conn, conn.transaction():
            venue = await self._venue_row(conn, org, venue_id)
            current = await conn.fetchrow(
                "SELECT layout, version FROM catalog.venue_seat_maps WHERE venue_id = $1"
                " FOR UPDATE",
                venue_id,
            )
            sold = [
                r["seat_id"]
                for r in await conn.fetch(
                    "SELECT DISTINCT t.seat_id FROM orders.tickets t"
                    " JOIN catalog.events e ON e.id = t.event_id"
                    " WHERE e.venue_id = $1 AND e.venue_map_version IS NOT NULL",
                    venue_id,
                )
            ]
            lost = lost_seats(doc, sold)
            if current is not None:
                check_if_match(if_match, "m", current["version"])
            if lost:
                raise SoldSeatsKept(
                    f"{len(lost)} seat(s) of this map have sold tickets and must stay:"
                    f" {', '.join(lost[:20])}{' ...' if len(lost) > 20 else ''}",
                    seats=lost,
                )
            layout = msgspec.json.encode(doc).decode()
            version = await conn.fetchval(
                "INSERT INTO catalog.venue_seat_maps (venue_id, layout, seats)"
                " VALUES ($1, $2::jsonb, $3)"
                " ON CONFLICT (venue_id) DO UPDATE SET layout = excluded.layout,"
                " seats = excluded.seats, version = catalog.venue_seat_maps.version + 1,"
                " updated_at = now() RETURNING version",
                venue_id,
                layout,
                stats.seats,
            )
            view = SeatMapView(
                version=version,
                seats=stats.seats,
                categories=stats.categories,
                wheelchair=stats.wheelchair,
                companion=stats.companion,
                venue_id=venue_id,
            )
            await self._audit(
                conn, who, venue["organization"], "venue.seatmap.put", f"venue:{venue_id}",
                before=None if current is None else {"version": current["version"]},
                after=_jsonable(view),
            )  # fmt: skip
        return view

    async def event_map(self, who: Principal, event_id: int) -> tuple[SeatMapDoc, int]:
        event = await self._event_row(self.pool, tenant_of(who), event_id)
        doc = await repo.event_map(self.pool, event_id)
        if doc is None:
            raise NotFound(f"event {event_id} has no seats")
        return doc, event["version"]

    async def put_event_map(
        self, who: Principal, event_id: int, doc: SeatMapDoc, if_match: str | None
    ) -> SeatMapView:
        """Replace a draft event's seats (its map is frozen once published)."""
        stats = validate_map(doc)
        org = tenant_of(who)
        async with self.pool.acquire() as conn, conn.transaction():
            event = await self._event_row(conn, org, event_id, lock=True)
            check_if_match(if_match, "e", event["version"])
            sold = [
                r["seat_id"]
                for r in await conn.fetch(
                    "SELECT seat_id FROM orders.tickets WHERE event_id = $1", event_id
                )
            ]
            lost = lost_seats(doc, sold)
            if lost:
                raise SoldSeatsKept(
                    f"{len(lost)} seat(s) have sold tickets and must stay: {', '.join(lost[:20])}",
                    seats=lost,
                )
            if event["status"] != "draft":
                raise Conflict(
                    f"event {event_id} is {event['status']}: its seat map is frozen"
                    " (edit it while the event is a draft)",
                    status=event["status"],
                )
            prices = await self._price_codes(conn, event_id)
            self._check_categories(stats.categories, prices)
            partitions = {
                r["code"]: r["partition"]
                for r in await conn.fetch(
                    "SELECT code, partition FROM catalog.sections WHERE event_id = $1", event_id
                )
            }
            seats = await repo.write_event_map(conn, event_id, doc, partitions)
            version = await conn.fetchval(
                "UPDATE catalog.events SET capacity = $2, version = version + 1"
                " WHERE id = $1 RETURNING version",
                event_id,
                seats,
            )
            view = SeatMapView(
                version=version,
                seats=stats.seats,
                categories=stats.categories,
                wheelchair=stats.wheelchair,
                companion=stats.companion,
                event_id=event_id,
            )
            await self._audit(
                conn, who, event["organization"], "event.seatmap.put", f"event:{event_id}",
                before={"version": event["version"], "capacity": event["capacity"]},
                after=_jsonable(view),
            )  # fmt: skip
        return view

    @staticmethod
    async def _price_codes(conn: Any, event_id: int) -> set[str]:
        rows = await conn.fetch(
            "SELECT code FROM catalog.price_categories WHERE event_id = $1", event_id
        )
        return {r["code"] for r in rows}

    @staticmethod
    def _check_categories(used: list[str], priced: set[str]) -> None:
        missing = [c for c in used if c not in priced]
        if missing:
            raise InvalidInput(
                f"the seat map uses categories without a price: {', '.join(missing)}",
                field="price_categories",
                categories=missing,
            )

    # -- events ----------------------------------------------------------------------------

    async def _event_row(
        self, conn: Any, org: str | None, event_id: int, lock: bool = False
    ) -> Any:
        row = await conn.fetchrow(
            repo.EVENT_SQL
            + " WHERE e.id = $1 AND ($2::text IS NULL OR e.organization = $2)"
            + (" FOR UPDATE OF e" if lock else ""),
            event_id,
            org,
        )
        if row is None:
            raise NotFound(f"event {event_id} not found")
        return row

    async def _event_view(self, conn: Any, row: Any) -> EventAdminView:
        prices = await conn.fetch(
            "SELECT code, name, price_minor, currency FROM catalog.price_categories"
            " WHERE event_id = $1 ORDER BY position",
            row["id"],
        )
        return EventAdminView(
            id=row["id"],
            organization=row["organization"],
            venue_id=row["venue_id"],
            slug=row["slug"],
            title=row["title"],
            category=row["category"],
            status=row["status"],
            state=_state(
                row["status"], row["sale_opens_at"], row["sale_closes_at"], datetime.now(UTC)
            ),
            starts_at=row["starts_at"],
            sale_opens_at=row["sale_opens_at"],
            sale_closes_at=row["sale_closes_at"],
            capacity=row["capacity"],
            currency=row["currency"].strip(),
            partitions=row["partitions"],
            version=row["version"],
            prices=[
                PriceCategoryView(p["code"], p["name"], p["price_minor"], p["currency"].strip())
                for p in prices
            ],
            buyer_limit=row["buyer_limit"],
            hold_ttl_s=row["hold_ttl_s"],
            refunds_due=row["refunds_due"],
        )

    def _check_ttl(self, hold_ttl_s: int | None) -> None:
        if hold_ttl_s is not None and hold_ttl_s > self.max_hold_ttl_s:
            raise InvalidInput(
                f"hold_ttl_s may be at most {self.max_hold_ttl_s} (TB_HOLDS_TTL_S)",
                field="hold_ttl_s",
            )

    @staticmethod
    def _check_times(starts: datetime, opens: datetime, closes: datetime) -> None:
        for name, value in (
            ("starts_at", starts),
            ("sale_opens_at", opens),
            ("sale_closes_at", closes),
        ):
            if value.tzinfo is None:
                raise InvalidInput(f"{name} needs a time zone (e.g. Z or -05:00)", field=name)
        if not opens < closes:
            raise InvalidInput("the sale must open before it closes", field="sale_closes_at")
        if closes > starts:
            raise InvalidInput(
                "the sale must close by the time the event starts", field="sale_closes_at"
            )

    async def create_event(self, who: Principal, data: EventCreate) -> EventAdminView:
        """A draft event on the venue's seat map (copied), with its prices and rules."""
        org = tenant_of(who)
        self._check_times(data.starts_at, data.sale_opens_at, data.sale_closes_at)
        self._check_ttl(data.hold_ttl_s)
        if data.currency not in SUPPORTED_CURRENCIES:
            raise InvalidInput(
                f"orders are taken in {', '.join(sorted(SUPPORTED_CURRENCIES))} only",
                field="currency",
            )
        codes = [p.code for p in data.price_categories]
        if len(set(codes)) != len(codes):
            raise InvalidInput("price category codes must be unique", field="price_categories")
        base = max(p.price_minor for p in data.price_categories)
        if base <= 0:
            raise InvalidInput("at least one price must be above zero", field="price_categories")
        async with self.pool.acquire() as conn, conn.transaction():
            venue = await self._venue_row(conn, org, data.venue_id)
            layout = await conn.fetchrow(
                "SELECT layout, version FROM catalog.venue_seat_maps WHERE venue_id = $1",
                data.venue_id,
            )
            if layout is None:
                raise InvalidInput(
                    f"venue {data.venue_id} has no seat map yet (PUT its seatmap first)",
                    field="venue_id",
                )
            doc = msgspec.json.decode(layout["layout"], type=SeatMapDoc)
            stats = validate_map(doc)
            self._check_categories(stats.categories, set(codes))
            sections = {s.code for s in doc.sections}
            unknown = sorted(set(data.partitions) - sections)
            if unknown:
                raise InvalidInput(
                    f"the partition plan names sections the map does not have: {unknown}",
                    field="partitions",
                )
            used = set(data.partitions.values()) | (
                {0} if sections - set(data.partitions) else set()
            )
            count = max(used) + 1
            if used != set(range(count)):
                raise InvalidInput(
                    f"partitions must be numbered 0..{count - 1} without an empty one",
                    field="partitions",
                )
            if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM catalog.categories WHERE code = $1)", data.category
            ):
                raise InvalidInput(f"unknown category {data.category!r}", field="category")
            slug = data.slug or f"{_slug(data.title)}-{secrets.token_hex(3)}"
            try:
                event_id = await conn.fetchval(
                    """
                    INSERT INTO catalog.events (slug, title, category, venue_id, starts_at,
                        sale_opens_at, sale_closes_at, status, capacity, base_price_minor,
                        currency, partitions, organization, buyer_limit, hold_ttl_s,
                        venue_map_version)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, 'draft', $8, $9, $10, $11, $12, $13,
                        $14, $15)
                    RETURNING id
                    """,
                    slug,
                    data.title,
                    data.category,
                    data.venue_id,
                    data.starts_at,
                    data.sale_opens_at,
                    data.sale_closes_at,
                    stats.seats,
                    base,
                    data.currency,
                    count,
                    venue["organization"],
                    data.buyer_limit,
                    data.hold_ttl_s,
                    layout["version"],
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(
                    f"an event with slug {slug!r} exists already", field="slug"
                ) from None
            await conn.executemany(
                "INSERT INTO catalog.price_categories"
                " (event_id, code, name, price_minor, currency, position)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                [
                    (event_id, p.code, p.name, p.price_minor, data.currency, i)
                    for i, p in enumerate(data.price_categories)
                ],
            )
            await repo.write_event_map(conn, event_id, doc, data.partitions)
            view = await self._event_view(conn, await self._event_row(conn, None, event_id))
            await self._audit(
                conn, who, venue["organization"], "event.create", f"event:{event_id}",
                after=_jsonable(view),
            )  # fmt: skip
        return view

    async def events(self, who: Principal) -> list[EventAdminView]:
        org = tenant_of(who)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                repo.EVENT_SQL
                + " WHERE ($1::text IS NULL OR e.organization = $1) ORDER BY e.starts_at, e.id",
                org,
            )
            return [await self._event_view(conn, r) for r in rows]

    async def event(self, who: Principal, event_id: int) -> EventAdminView:
        async with self.pool.acquire() as conn:
            return await self._event_view(
                conn, await self._event_row(conn, tenant_of(who), event_id)
            )

    async def edit_event(
        self, who: Principal, event_id: int, data: EventPatch, if_match: str | None
    ) -> EventAdminView:
        org = tenant_of(who)
        self._check_ttl(data.hold_ttl_s)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._event_row(conn, org, event_id, lock=True)
            check_if_match(if_match, "e", row["version"])
            if row["status"] in ("closed", "cancelled"):
                raise Conflict(f"event {event_id} is {row['status']}", status=row["status"])
            before = await self._event_view(conn, row)
            starts = data.starts_at or row["starts_at"]
            opens = data.sale_opens_at or row["sale_opens_at"]
            closes = data.sale_closes_at or row["sale_closes_at"]
            self._check_times(starts, opens, closes)
            await conn.execute(
                "UPDATE catalog.events SET title = coalesce($2, title), starts_at = $3,"
                " sale_opens_at = $4, sale_closes_at = $5,"
                " buyer_limit = coalesce($6, buyer_limit), hold_ttl_s = coalesce($7, hold_ttl_s),"
                " version = version + 1 WHERE id = $1",
                event_id,
                data.title,
                starts,
                opens,
                closes,
                data.buyer_limit,
                data.hold_ttl_s,
            )
            after = await self._event_view(conn, await self._event_row(conn, None, event_id))
            await self._audit(
                conn, who, row["organization"], "event.edit", f"event:{event_id}",
                before=_jsonable(before), after=_jsonable(after),
            )  # fmt: skip
        self._forget(event_id)
        return after

    def _forget(self, event_id: int) -> None:
        if self.catalog is not None:
            self.catalog.invalidate(event_id)

    async def transition(
        self, who: Principal, event_id: int, action: Action, if_match: str | None = None
    ) -> EventAdminView:
        """Move the event through its lifecycle (core.venues.TRANSITIONS).

        Shutting a sale (pause, close, cancel) closes the inventory's gate *first*, in
        every partition, then commits the new state: from the moment the gate script
        returns, no hold in flight can pass (hold.lua reads the gate in the same atomic
        script). Opening it (publish, resume) commits first and opens the gate last, so
        a failure leaves the sale shut, never open against a shut catalog.
        """
        org = tenant_of(who)
        row = await self._event_row(self.pool, org, event_id)
        if if_match is not None:
            check_if_match(if_match, "e", row["version"])
        target = next_status(event_id, row["status"], action)
        await self._follow_plan(event_id, row["partitions"])
        gate = GATES[target]
        if action == "publish":
            async with self.pool.acquire() as conn:
                await self.inventory.set_gate(event_id, "draft")
                await rebuild_inventory(conn, self.inventory, event_id)
        elif gate is not None:
            await self.inventory.set_gate(event_id, gate)
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await self._event_row(conn, None, event_id, lock=True)
            if locked["status"] != row["status"]:
                raise Conflict(
                    f"event {event_id} changed to {locked['status']} meanwhile; read it again",
                    status=locked["status"],
                )
            before = await self._event_view(conn, locked)
            await conn.execute(
                "UPDATE catalog.events SET status = $2, version = version + 1,"
                " published_at = CASE WHEN $2 = 'published' THEN coalesce(published_at, now())"
                " ELSE published_at END,"
                " cancelled_at = CASE WHEN $2 = 'cancelled' THEN now() ELSE cancelled_at END"
                " WHERE id = $1",
                event_id,
                target,
            )
            refunds: list[Any] = []
            if target == "cancelled":
                refunds = await conn.fetch(
                    "UPDATE orders.orders SET refund = 'due' WHERE event_id = $1"
                    " AND status = 'confirmed' AND refund IS NULL RETURNING order_id, buyer",
                    event_id,
                )
            after = await self._event_view(conn, await self._event_row(conn, None, event_id))
            await self._audit(
                conn, who, row["organization"], f"event.{action}", f"event:{event_id}",
                before={"status": before.status, "version": before.version},
                after={"status": after.status, "version": after.version,
                       **({"refunds_due": len(refunds)} if target == "cancelled" else {})},
            )  # fmt: skip
        if gate is None:
            await self.inventory.set_gate(event_id, None)
        self._forget(event_id)
        if refunds:
            await self._notify_cancelled(event_id, refunds)
        return after

    async def _follow_plan(self, event_id: int, partitions: int) -> None:
        """Make the inventory route a split event's seats before it is loaded."""
        if partitions > 1 and self.inventory.plan(event_id).count != partitions:
            if self.plans is not None:
                await self.plans.refresh()
            if self.inventory.plan(event_id).count != partitions:
                rows = await self.pool.fetch(
                    "SELECT code, partition FROM catalog.sections WHERE event_id = $1", event_id
                )
                raise Conflict(
                    f"the API does not route event {event_id}'s {partitions} partitions yet",
                    plan=msgspec.to_builtins(
                        PartitionPlan(partitions, {r["code"]: r["partition"] for r in rows})
                    ),
                )

    async def _notify_cancelled(self, event_id: int, refunds: list[Any]) -> None:
        """One ``EventCancelled`` per buyer on the notifications topic (key = buyer)."""
        if self.kafka is None:
            return
        by_buyer: dict[str, list[str]] = {}
        for r in refunds:
            by_buyer.setdefault(r["buyer"], []).append(str(r["order_id"]))
        name = topic(self.topic_prefix, TOPIC_NOTIFICATIONS)
        at = now_ms()
        sends = [
            self.kafka.send_and_wait(
                name,
                msgspec.json.encode(EventCancelled(event_id, buyer, orders, at)),
                key=buyer.encode(),
            )
            for buyer, orders in by_buyer.items()
        ]
        await asyncio.gather(*sends)

    # -- reports ---------------------------------------------------------------------------

    async def report(self, who: Principal, event_id: int) -> SalesReport:
        """Sold, held, pending and free seats, revenue, order rate and conversion."""
        org = tenant_of(who)
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn:
            row = await self._event_row(conn, org, event_id)
            cats = await conn.fetch(
                "SELECT p.code, p.name, p.price_minor, count(s.seat_id) AS seats"
                " FROM catalog.price_categories p LEFT JOIN catalog.seats s"
                " ON s.event_id = p.event_id AND s.category = p.code"
                " WHERE p.event_id = $1 GROUP BY p.code, p.name, p.price_minor, p.position"
                " ORDER BY p.position",
                event_id,
            )
            # A refunded ticket's seat may be sold again: it counts as refunded, not sold.
            sold = await conn.fetch(
                "SELECT t.category,"
                " count(*) FILTER (WHERE t.refunded_at IS NULL) AS n,"
                " sum(t.price_minor) FILTER (WHERE t.refunded_at IS NULL) AS revenue,"
                " count(*) FILTER (WHERE t.refunded_at IS NOT NULL) AS refunded,"
                " sum(t.price_minor) FILTER (WHERE t.refunded_at IS NOT NULL) AS refunded_minor"
                " FROM orders.tickets t JOIN orders.orders o ON o.order_id = t.order_id"
                " WHERE t.event_id = $1 GROUP BY t.category",
                event_id,
            )
            refunds_open = await conn.fetchval(
                "SELECT count(*) FROM payments.refunds r JOIN orders.orders o USING (order_id)"
                " WHERE o.event_id = $1 AND r.status <> 'refunded'",
                event_id,
            )
            orders = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE status = 'confirmed') AS confirmed,"
                " count(*) FILTER (WHERE status = 'rejected') AS rejected,"
                " count(*) FILTER (WHERE status = 'confirmed' AND placed_at >= $2) AS recent"
                " FROM orders.orders WHERE event_id = $1",
                event_id,
                now - timedelta(minutes=REPORT_WINDOW_MINUTES),
            )
            buckets = await conn.fetch(
                "SELECT floor(extract(epoch FROM ($2 - placed_at)) / 60)::int AS ago,"
                " count(*) AS n FROM orders.orders WHERE event_id = $1"
                " AND status = 'confirmed' AND placed_at > $2 - interval '60 minutes'"
                " GROUP BY 1",
                event_id,
                now,
            )
            seat_category = {
                r["seat_id"]: r["category"]
                for r in await conn.fetch(
                    "SELECT seat_id, category FROM catalog.seats WHERE event_id = $1", event_id
                )
            }
        held: dict[str, int] = {}
        pending: dict[str, int] = {}
        live_sold: dict[str, int] = {}
        if row["status"] != "draft":
            await self._follow_plan(event_id, row["partitions"])
            _, statuses = await self.inventory.seat_statuses(event_id)
            for seat, status in statuses.items():
                category = seat_category.get(seat)
                if category is None:
                    continue
                target = {"held": held, "pending": pending, "sold": live_sold}[status]
                target[category] = target.get(category, 0) + 1
        sold_by = {
            r["category"]: (
                int(r["n"]),
                int(r["revenue"] or 0),
                int(r["refunded"]),
                int(r["refunded_minor"] or 0),
            )
            for r in sold
        }
        categories = []
        for c in cats:
            n_sold, revenue, n_refunded, refunded_minor = sold_by.get(c["code"], (0, 0, 0, 0))
            # Redis marks a seat sold when the persister's decision reaches it; PostgreSQL
            # is the arbiter of what was sold, so a seat counts once, as PostgreSQL says.
            n_pending = pending.get(c["code"], 0) + max(0, live_sold.get(c["code"], 0) - n_sold)
            n_held = held.get(c["code"], 0)
            seats = int(c["seats"])
            categories.append(
                CategoryReport(
                    code=c["code"],
                    name=c["name"],
                    price_minor=c["price_minor"],
                    seats=seats,
                    sold=n_sold,
                    held=n_held,
                    pending=n_pending,
                    free=max(0, seats - n_sold - n_held - n_pending),
                    revenue_minor=revenue,
                    refunded=n_refunded,
                    refunded_minor=refunded_minor,
                )
            )
        confirmed, rejected = int(orders["confirmed"]), int(orders["rejected"])
        live_holds = sum(held.values())
        attempts = confirmed + rejected + live_holds
        timeline = [0] * TIMELINE_MINUTES
        for b in buckets:
            ago = int(b["ago"])
            if 0 <= ago < TIMELINE_MINUTES:
                timeline[TIMELINE_MINUTES - 1 - ago] = int(b["n"])
        return SalesReport(
            event_id=event_id,
            status=row["status"],
            state=_state(row["status"], row["sale_opens_at"], row["sale_closes_at"], now),
            currency=row["currency"].strip(),
            at=now,
            categories=categories,
            sold=sum(c.sold for c in categories),
            held=sum(c.held for c in categories),
            pending=sum(c.pending for c in categories),
            free=sum(c.free for c in categories),
            revenue_minor=sum(c.revenue_minor for c in categories),
            orders_confirmed=confirmed,
            orders_rejected=rejected,
            orders_per_minute=round(int(orders["recent"]) / REPORT_WINDOW_MINUTES, 3),
            window_minutes=REPORT_WINDOW_MINUTES,
            hold_to_order=round(confirmed / attempts, 4) if attempts else None,
            timeline=timeline,
            refunded=sum(c.refunded for c in categories),
            refunded_minor=sum(c.refunded_minor for c in categories),
            refunds_open=int(refunds_open),
        )


def report_csv(report: SalesReport) -> str:
    """The report's categories as CSV, with a TOTAL line."""
    lines = [
        "category,name,price_minor,seats,sold,held,pending,free,revenue_minor,refunded,"
        "refunded_minor"
    ]

    def q(text: str) -> str:
        return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text

    for c in report.categories:
        lines.append(
            f"{c.code},{q(c.name)},{c.price_minor},{c.seats},{c.sold},{c.held},{c.pending},"
            f"{c.free},{c.revenue_minor},{c.refunded},{c.refunded_minor}"
        )
    seats = sum(c.seats for c in report.categories)
    lines.append(
        f"TOTAL,,,{seats},{report.sold},{report.held},{report.pending},{report.free},"
        f"{report.revenue_minor},{report.refunded},{report.refunded_minor}"
    )
    return "\r\n".join(lines) + "\r\n"


def _slug(title: str) -> str:
    import re
    import unicodedata

    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:100] or "event"
