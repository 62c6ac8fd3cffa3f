"""Wire types of the organizer API (requests reject unknown fields)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from core.events import EventStatus
from core.venues import CategoryCode, SectionCode

OrgCode = Annotated[str, msgspec.Meta(max_length=64, pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")]
# Printable text: PostgreSQL text and jsonb cannot hold NUL, and no name needs a control
# character.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Address = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$")]
Slug = Annotated[str, msgspec.Meta(max_length=120, pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]


class OrganizationCreate(msgspec.Struct, forbid_unknown_fields=True):
    code: OrgCode
    name: Name


class Organization(msgspec.Struct):
    code: str
    name: str


class VenueCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    address: Address
    # Admins name the owner; an organizer's venue is always its own organization's.
    organization: OrgCode | None = None


class VenuePatch(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | None = None
    address: Address | None = None


class VenueView(msgspec.Struct):
    id: int
    organization: str
    name: str
    address: str
    version: int
    # The venue's seat map, if it has one: its version and size.
    map_version: int | None = None
    seats: int | None = None


class SeatMapView(msgspec.Struct):
    """What a seat-map import wrote (the map itself is ``GET .../seatmap``)."""

    version: int
    seats: int
    categories: list[str]
    wheelchair: int
    companion: int
    venue_id: int | None = None
    event_id: int | None = None


class PriceCategoryIn(msgspec.Struct, forbid_unknown_fields=True):
    code: CategoryCode
    name: Name
    price_minor: Annotated[int, msgspec.Meta(ge=0, le=10**12)]


class EventCreate(msgspec.Struct, forbid_unknown_fields=True):
    venue_id: Annotated[int, msgspec.Meta(ge=1)]
    title: Name
    category: Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Z_]{1,31}$")]
    starts_at: datetime
    sale_opens_at: datetime
    sale_closes_at: datetime
    price_categories: Annotated[list[PriceCategoryIn], msgspec.Meta(min_length=1, max_length=32)]
    currency: Currency = "PEN"
    slug: Slug | None = None
    buyer_limit: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    hold_ttl_s: Annotated[int, msgspec.Meta(ge=30, le=3600)] | None = None
    # Section code -> inventory partition (0..63); sections not named go to partition 0.
    partitions: dict[SectionCode, Annotated[int, msgspec.Meta(ge=0, le=63)]] = {}


class EventPatch(msgspec.Struct, forbid_unknown_fields=True):
    title: Name | None = None
    starts_at: datetime | None = None
    sale_opens_at: datetime | None = None
    sale_closes_at: datetime | None = None
    buyer_limit: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    hold_ttl_s: Annotated[int, msgspec.Meta(ge=30, le=3600)] | None = None


class PriceCategoryView(msgspec.Struct):
    code: str
    name: str
    price_minor: int
    currency: str


class EventAdminView(msgspec.Struct):
    id: int
    organization: str
    venue_id: int
    slug: str
    title: str
    category: str
    status: EventStatus
    # status, plus "on_sale" for a published event inside its sale window.
    state: str
    starts_at: datetime
    sale_opens_at: datetime
    sale_closes_at: datetime
    capacity: int
    currency: str
    partitions: int
    version: int
    prices: list[PriceCategoryView]
    buyer_limit: int | None = None
    hold_ttl_s: int | None = None
    refunds_due: int | None = None


class CategoryReport(msgspec.Struct):
    code: str
    name: str
    price_minor: int
    seats: int
    sold: int
    held: int
    pending: int
    free: int
    # Net: the prices of sold tickets that were not refunded.
    revenue_minor: int
    # Tickets refunded (their seats went back on sale) and the money returned for them.
    refunded: int = 0
    refunded_minor: int = 0


class SalesReport(msgspec.Struct):
    event_id: int
    status: EventStatus
    state: str
    currency: str
    at: datetime
    categories: list[CategoryReport]
    sold: int
    held: int
    pending: int
    free: int
    revenue_minor: int
    orders_confirmed: int
    orders_rejected: int
    # Confirmed orders per minute over the last ``window_minutes`` (0 if none).
    orders_per_minute: float
    window_minutes: int
    # Confirmed orders / (confirmed + rejected + live holds), None before any hold.
    hold_to_order: float | None
    # Confirmed orders per minute bucket, oldest first, for a sparkline.
    timeline: list[int]
    refunded: int = 0
    refunded_minor: int = 0
    # Refunds not paid back yet (requested, or failed and being retried).
    refunds_open: int = 0


class AuditEntry(msgspec.Struct):
    id: int
    at: datetime
    actor: str
    roles: list[str]
    organization: str
    action: str
    resource: str
    before: Any = None
    after: Any = None


class AuditPage(msgspec.Struct):
    items: list[AuditEntry]
    next_before: int | None = None


ReportFormat = Literal["json", "csv"]
