"""The organizer API under ``/api/v1/organizer``: thin handlers over ``OrganizerService``.

Roles ``organizer`` (with an organization claim, its own organization only: another's
venue or event is 404) and ``admin`` (everything). Edits take ``If-Match`` (428 without,
412 when stale); seat maps are JSON (``application/json``) or CSV (``text/csv``) both
ways (``?format=csv`` or ``Accept: text/csv`` to export).
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import msgspec
from litestar import Controller, Request, Response, Router, get, patch, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.types import ControllerRouterHandler

from api.auth.principal import Principal, requires_role
from api.catalog.deps import catalog_from_state
from api.organizer.schemas import (
    AuditPage,
    EventAdminView,
    EventCreate,
    EventPatch,
    Organization,
    OrganizationCreate,
    SalesReport,
    SeatMapView,
    VenueCreate,
    VenuePatch,
    VenueView,
)
from api.organizer.service import OrganizerService, etag, report_csv
from core.errors import InvalidInput
from core.settings import Settings
from core.venues import TRANSITIONS, Action, SeatMapDoc, map_from_csv, map_to_csv

Id = Annotated[int, PathParameter(ge=1, le=2**53)]
IfMatch = Annotated[str | None, HeaderParameter(name="If-Match", required=False)]
Format = Annotated[str | None, QueryParameter(pattern="^(json|csv)$", required=False)]
CSV = "text/csv"


def service_from_state(state: State) -> OrganizerService:
    service = getattr(state, "organizer", None)
    if isinstance(service, OrganizerService):
        return service
    kafka = getattr(state, "kafka", None)
    settings: Settings = state.settings
    service = OrganizerService(
        state.db_pool,
        state.inventory,
        catalog=catalog_from_state(state),
        plans=getattr(state, "partition_plans", None),
        kafka=kafka.producer() if kafka is not None and kafka.started else None,
        topic_prefix=settings.kafka.topic_prefix,
        max_hold_ttl_s=settings.holds.ttl_s,
    )
    state.organizer = service
    return service


async def provide_organizer(state: State) -> OrganizerService:
    return service_from_state(state)


def _wants_csv(request: Request[Any, Any, Any], fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    return "text/csv" in request.headers.get("accept", "")


async def _read_map(request: Request[Any, Any, Any]) -> SeatMapDoc:
    body = await request.body()
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if kind == "text/csv":
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput("the CSV is not UTF-8", field="body") from None
        return map_from_csv(text)
    if kind != "application/json":
        raise InvalidInput(
            f"send the seat map as application/json or text/csv, not {kind}",
            field="content-type",
        )
    try:
        return msgspec.json.decode(body, type=SeatMapDoc)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = message.rpartition("at `$.")[2].rstrip("`") if "at `$." in message else "body"
        raise InvalidInput(message, field=field) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}", field="body") from None


def _map_response(doc: SeatMapDoc, tag: str, as_csv: bool, name: str) -> Response[Any]:
    if as_csv:
        return Response(
            map_to_csv(doc).encode(),
            media_type=CSV,
            headers={"ETag": tag, "Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return Response(msgspec.json.encode(doc), media_type="application/json", headers={"ETag": tag})


class OrganizationController(Controller):
    path = "/organizations"

    @post("/", status_code=201, summary="Create an organization (admin)")
    async def create(
        self,
        data: JSONBody[OrganizationCreate],
        principal: NamedDependency[Principal],
        organizer: NamedDependency[OrganizerService],
    ) -> Organization:
        return await organizer.create_organization(principal, data)

    @get("/", summary="Organizations the caller manages")
    async def list(
        self, principal: NamedDependency[Principal], organizer: NamedDependency[OrganizerService]
    ) -> list[Organization]:
        return await organizer.organizations(principal)


class VenueController(Controller):
    path = "/venues"

    @post("/", status_code=201, summary="Create a venue")
    async def create(
        self,
        data: JSONBody[VenueCreate],
        principal: NamedDependency[Principal],
        organizer: NamedDependency[OrganizerService],
    ) -> Response[VenueView]:
        view = await organizer.create_venue(principal, data)
        return Response(view, status_code=201, headers={"ETag": etag("v", view.version)})

    @get("/", summary="Venues of the caller's organization")
    async def list(
        self, principal: NamedDependency[Principal], organizer: NamedDependency[OrganizerService]
    ) -> list[VenueView]:
        return await organizer.venues(principal)

    @get("/{venue_id:int}", summary="One venue (ETag for edits)")
    async def read(
        self,
        venue_id: Id,
        principal: NamedDependency[Principal],
        organizer: NamedDependency[OrganizerService],
    ) -> Response[VenueView]:
        view = await organizer.venue(principal, venue_id)
        return Response(view, headers={"ETag": etag("v", view.version)})

    @patch("/{venue_id:int}", summary="Edit a venue (If-Match)")
    async def edit(
        self,
        venue_id: Id,
        data: JSONBody[VenuePatch],
        principal: NamedDependency[Principal],
        organizer: NamedDependency[OrganizerService],
        if_match: IfMatch = None,
    ) -> Response[VenueView]:
        view = await organizer.edit_venue(principal, venue_id, data, if_match)
        return Response(view, headers={"ETag": etag("v", view.version)})

    @get(
        "/{venue_id:int}/seatmap",
        summary="Export the venue's seat map (JSON or CSV)",
        opt={"csv": True},
    )
    async def export_map(
        self,
        request: Request[Any, Any, Any],
        venue_id: Id,
        principal: NamedDependency[Principal],
        organizer: NamedDependency[OrganizerService],
        format: Format = None,
    ) -> Response[SeatMapDoc]:
        doc, version = await organizer.venue_map(principal, venue_id)
        return _map_response(
            doc, etag("m", version), _wants_csv(request, format), f"venue-{venue_id}"
        )

    @put("/{venue_id:int}/seatmap", summary="Import the venue's seat map (JSON or CSV)")
    async def import_map(
        self,
        request: Request[Any, Any, Any],
        venue_id: Id,
        principal: NamedDependency[Principal],
        organizer: NamedDependency[OrganizerService],
        if_match: IfMatch = None,
    ) -> Response[SeatMapView]:
        doc = await _read_map(request)
        view = await organizer.put_venue_map(principal, venue_id, doc, if_match)
        return Response(view, headers={"ETag": etag("m", view.version)})


class EventAdminController(Controller):
    path = "/events"

    @post("/", status_code=201, summary="Create a draft event on a venue's seat map")
    async def create(
        self,
        data: JSONBody[EventCreate],
        principal: NamedDependency[Principal],
        organizer: NamedDependency[OrganizerService],
    ) -> Response[EventAdminView]:
        view = await organizer.create_event(principal, data)
        return Response(view, status_code=201, headers={"ETag": etag("e", view.version)})

    @get("/", summary="Events of the caller's organization, every state")
    async def list(
        self, principal: NamedDependency[Principal], organizer: NamedDependency[OrganizerService]
    ) -> list[EventAdminView]:
        return await organizer.events(principal)

    @get("/{event_id:int}", summary="One event (ETag for edits)")
    async def read(
        self,
        event_id: Id,
        principal: NamedDependency[Principal],
        organizer: NamedDependency[OrganizerService],
    ) -> Response[EventAdminView]:
        view = await organizer.event(principal, event_id)
        return Response(view, headers={"ETag": etag("e", view.version)})

    @patch("/{event_id:int}", summary="Edit an event (If-Match)")
    async def edit(
        self,
        event_id: Id,
        data: JSONBody[EventPatch],
        principal: NamedDependency[Principal],
        organizer: NamedDependency[OrganizerService],
        if_match: IfMatch = None,
    ) -> Response[EventAdminView]:
        view = await organizer.edit_event(principal, event_id, data, if_match)
        return Response(view, headers={"ETag": etag("e", view.version)})

    @post(
        [f"/{{event_id:int}}/{action}" for action in TRANSITIONS],
        status_code=200,
        summary="Lifecycle: publish, pause, resume, close or cancel",
    )
    async def transition(
        self,
        request: Request[Any, Any, Any],
        event_id: Id,
        principal: NamedDependency[Principal],
        organizer: NamedDependency[OrganizerService],
        if_match: IfMatch = None,
    ) -> Response[EventAdminView]:
        action = cast(Action, request.url.path.rstrip("/").rpartition("/")[2])
        view = await organizer.transition(principal, event_id, action, if_match)
        return Response(view, headers={"ETag": etag("e", view.version)})

    @get(
        "/{event_id:int}/seatmap",
        summary="Export the event's seat map (JSON or CSV)",
        opt={"csv": True},
    )
    async def export_map(
        self,
        request: Request[Any, Any, Any],
        event_id: Id,
        principal: NamedDependency[Principal],
        organizer: NamedDependency[OrganizerService],
        format: Format = None,
    ) -> Response[SeatMapDoc]:
        doc, version = await organizer.event_map(principal, event_id)
        return _map_response(
            doc, etag("e", version), _wants_csv(request, format), f"event-{event_id}"
        )

    @put("/{event_id:int}/seatmap", summary="Replace a draft event's seat map (If-Match)")
    async def import_map(
        self,
        request: Request[Any, Any, Any],
        event_id: Id,
        principal: NamedDependency[Principal],
        organizer: NamedDependency[OrganizerService],
        if_match: IfMatch = None,
    ) -> Response[SeatMapView]:
        doc = await _read_map(request)
        view = await organizer.put_event_map(principal, event_id, doc, if_match)
        return Response(view, headers={"ETag": etag("e", view.version)})

    @get("/{event_id:int}/report", summary="Live sales report (JSON or CSV)", opt={"csv": True})
    async def report(
        self,
        request: Request[Any, Any, Any],
        event_id: Id,
        principal: NamedDependency[Principal],
        organizer: NamedDependency[OrganizerService],
        format: Format = None,
    ) -> Response[SalesReport]:
        report: SalesReport = await organizer.report(principal, event_id)
        if _wants_csv(request, format):
            return Response(report_csv(report).encode(), media_type=CSV)  # type: ignore[arg-type]
        return Response(report)


@get("/audit", summary="Audit log of organizer and admin actions, newest first")
async def audit_log(
    principal: NamedDependency[Principal],
    organizer: NamedDependency[OrganizerService],
    resource: Annotated[
        str | None, QueryParameter(pattern=r"^[a-z]+:[a-z0-9-]+$", required=False)
    ] = None,
    before: Annotated[int | None, QueryParameter(ge=1, le=2**53, required=False)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
) -> AuditPage:
    return await organizer.audit_log(principal, resource, before, limit)


def create_route_handlers(settings: Settings) -> list[ControllerRouterHandler]:
    """One router: the role guard, the service, and a body limit fit for a stadium map."""
    return [
        Router(
            "/api/v1/organizer",
            route_handlers=[
                OrganizationController,
                VenueController,
                EventAdminController,
                audit_log,
            ],
            guards=[requires_role("organizer", "admin")],
            dependencies={"organizer": Provide(provide_organizer)},
            request_max_body_size=settings.organizer.max_map_bytes,
            tags=["organizer"],
        )
    ]
