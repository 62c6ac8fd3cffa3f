"""Catalog endpoints: thin handlers over ``api.catalog.service.Catalog``.

Browsing is public. ``GET /events/{id}/seats`` answers ``If-None-Match`` with 304: its
ETag covers the bytes: it changes with every seat change (inventory version) and layout.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter, QueryParameter

from api.catalog.deps import CATALOG_DEPENDENCY
from api.catalog.schemas import DEFAULT_LIMIT, MAX_LIMIT, MAX_QUERY_LENGTH, list_filters
from api.catalog.service import Catalog
from api.errors import PROBLEM_MEDIA_TYPE, Problem, ValidationProblem
from core.events import Category, Event, EventPage, SeatMap

# No upper bound in the schema: 2**63-1 does not survive as a JSON number (it becomes a
# float); larger ids are simply not found (404).
EventId = Annotated[int, PathParameter(ge=1, description="The event's id.")]


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of an ``If-None-Match`` header against ``etag``.

    The gzip variant's tag (``"...-gz"``) matches too: same content, other coding.
    """
    if not if_none_match:
        return False
    bare = etag.strip('"')
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        tag = candidate.removeprefix("W/").strip('"').removesuffix("-gz")
        if tag == bare:
            return True
    return False


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True if ``Accept-Encoding`` allows gzip (``q=0`` refuses it)."""
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().removeprefix("q=").strip() if "q=" in params else "1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


def _problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem responses a handler can answer."""
    described = {
        404: "Unknown event",
        422: "A parameter is invalid (`field` names it)",
        429: "Rate limited (see `Retry-After`)",
        503: "A backing service is unavailable (see `Retry-After`)",
    }
    return {
        status: ResponseSpec(
            data_container=ValidationProblem if status == 422 else Problem,
            description=described[status],
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for status in statuses
    }


class CatalogController(Controller):
    path = "/api/v1"
    tags = ["catalog"]
    dependencies = {"catalog": CATALOG_DEPENDENCY}

    @get("/categories", summary="Event categories", responses=_problems(429, 503))
    async def list_categories(self, catalog: NamedDependency[Catalog]) -> list[Category]:
        """Every event category (CONCERT, SPORTS...), in display order."""
        return await catalog.categories()

    @get("/events", summary="Search events", responses=_problems(422, 429, 503))
    async def list_events(
        self,
        catalog: NamedDependency[Catalog],
        category: Annotated[
            str | None,
            QueryParameter(
                max_length=32,
                pattern=r"^[A-Z][A-Z_]{1,31}$",
                description="A category code (GET /api/v1/categories).",
            ),
        ] = None,
        q: Annotated[
            str | None,
            QueryParameter(
                min_length=1,
                max_length=MAX_QUERY_LENGTH,
                description="Text in the title or the venue's name (case and accents ignored).",
            ),
        ] = None,
        starts_after: Annotated[
            datetime | None,
            QueryParameter(description="Only events starting after this time (default: now)."),
        ] = None,
        starts_before: Annotated[
            datetime | None, QueryParameter(description="Only events starting before this time.")
        ] = None,
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_LIMIT, description="Page size.")
        ] = DEFAULT_LIMIT,
        cursor: Annotated[
            str | None,
            QueryParameter(
                max_length=64,
                pattern=r"^[A-Za-z0-9_-]+$",
                description="`next_cursor` of the previous page.",
            ),
        ] = None,
    ) -> EventPage:
        """Published events by start time, with the seats still free per price category.

        Pages follow `next_cursor` (null on the last page).
        """
        filters = list_filters(
            category=category,
            q=q,
            starts_after=starts_after,
            starts_before=starts_before,
            cursor=cursor,
        )
        return await catalog.list_events(filters, limit)

    @get("/events/{event_id:int}", summary="One event", responses=_problems(404, 422, 429, 503))
    async def get_event(self, catalog: NamedDependency[Catalog], event_id: EventId) -> Event:
        """An event with its price categories and the seats still free in each."""
        return await catalog.event(event_id)

    @get(
        "/events/{event_id:int}/seats",
        summary="Seat map with live statuses",
        responses={
            200: ResponseSpec(data_container=SeatMap, description="The seat map"),
            304: ResponseSpec(data_container=None, description="Not modified (ETag matched)"),
            **_problems(404, 422, 429, 503),
        },
    )
    async def get_seat_map(
        self, request: Request[Any, Any, Any], catalog: NamedDependency[Catalog], event_id: EventId
    ) -> Response[bytes]:
        """Every seat of the event: sections -> rows of runs, one status letter per seat.

        `version` is the change-stream id the map includes; follow the live deltas after
        it. Send the `ETag` back in `If-None-Match` to get 304 when nothing changed.
        """
        rendered = await catalog.seat_map(event_id)
        gzipped = bool(rendered.gzipped) and accepts_gzip(request.headers.get("accept-encoding"))
        # The gzip variant has its own strong tag (RFC 9110 8.8.3); both revalidate.
        etag = rendered.etag[:-1] + '-gz"' if gzipped else rendered.etag
        headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
        if etag_matches(request.headers.get("if-none-match"), rendered.etag):
            return Response(content=b"", status_code=304, headers=headers)
        if gzipped:
            headers["Content-Encoding"] = "gzip"
            return Response(
                content=rendered.gzipped, media_type="application/json", headers=headers
            )
        return Response(content=rendered.body, media_type="application/json", headers=headers)


# Collected by api/app.py (DOMAIN_ROUTE_MODULES).
route_handlers = [CatalogController]
