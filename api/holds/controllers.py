"""Holds endpoints: thin handlers over ``core.inventory.Inventory``.

``POST /api/v1/events/{event_id}/holds`` places a hold (explicit seats, or the best
adjacent seats of a category); ``GET``/``DELETE /api/v1/holds/{hold_id}`` read and
release it; ``POST /api/v1/holds/{hold_id}/extend`` extends it up to its lifetime cap.
The caller is the buyer: a hold is visible only to the token's subject (others get
404). Every hold attempt is counted in ``ticketbuster_holds_total{result}`` and timed
in ``ticketbuster_hold_duration_seconds``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from api.auth.principal import Principal, require_principal, requires_role_or_scope
from api.catalog.deps import CATALOG_DEPENDENCY
from api.catalog.service import Catalog
from api.direct import DirectRoute, Headers
from api.holds.deps import HOLD_INVENTORY_DEPENDENCY
from api.holds.schemas import HoldRequest, HoldView, hold_view
from api.holds.service import ROLES, SCOPES, place_hold
from core.inventory import Inventory

EventId = Annotated[int, PathParameter(ge=1, description="The event's id.")]
HoldId = Annotated[
    str, PathParameter(max_length=64, description='A hold id, e.g. "h5.0.9f8a7b6c5d4e3f21".')
]

# Buyers (and admins acting as one), or partner clients with the "holds" scope.
BUYERS = requires_role_or_scope(ROLES, SCOPES)


class HoldController(Controller):
    path = "/api/v1"
    tags = ["holds"]
    guards = [BUYERS]
    dependencies = {"inventory": HOLD_INVENTORY_DEPENDENCY, "catalog": CATALOG_DEPENDENCY}

    @post(
        "/events/{event_id:int}/holds",
        summary="Hold seats",
        status_code=HTTP_201_CREATED,
    )
    async def create_hold(
        self,
        request: Request[Any, Any, Any],
        event_id: EventId,
        data: JSONBody[HoldRequest],
    ) -> Response[HoldView]:
        """Hold explicit seats, or the best ``quantity`` adjacent seats of ``category``.

        All or nothing: 409 names the seats already taken, 429 when the buyer's
        per-event seat limit would be passed, 422 for unknown seats or a bad body.
        Only while the event is on sale: 409 ``sale_not_open`` before its sale window,
        ``sale_closed`` after it (or once the event started, or if it was cancelled).
        """
        # The guard checked the caller; reading it from the scope spares a dependency.
        principal = require_principal(request.scope)
        view = await place_hold(
            request.app.state, request.scope["state"], principal.sub, event_id, data
        )
        return Response(
            view,
            status_code=HTTP_201_CREATED,
            headers={"Location": f"/api/v1/holds/{view.hold_id}"},
        )

    @get("/holds/{hold_id:str}", summary="Read a hold", cache_control=None)
    async def get_hold(
        self,
        hold_id: HoldId,
        inventory: NamedDependency[Inventory],
        catalog: NamedDependency[Catalog],
        principal: NamedDependency[Principal],
    ) -> HoldView:
        """The caller's live hold. 404 if unknown or not theirs, 410 once expired."""
        hold = await inventory.get_hold(hold_id, principal.sub)
        return hold_view(hold, await catalog.prices(hold.event_id))

    @post("/holds/{hold_id:str}/extend", summary="Extend a hold", status_code=200)
    async def extend_hold(
        self,
        hold_id: HoldId,
        inventory: NamedDependency[Inventory],
        catalog: NamedDependency[Catalog],
        principal: NamedDependency[Principal],
    ) -> HoldView:
        """Push the expiry out by the hold's TTL, never past ``max_expires_at``."""
        hold = await inventory.extend(hold_id, principal.sub)
        return hold_view(hold, await catalog.prices(hold.event_id))

    @delete("/holds/{hold_id:str}", summary="Release a hold", status_code=HTTP_204_NO_CONTENT)
    async def release_hold(
        self,
        hold_id: HoldId,
        inventory: NamedDependency[Inventory],
        principal: NamedDependency[Principal],
    ) -> None:
        """Give the seats back. Releasing an expired hold succeeds too."""
        await inventory.release(hold_id, principal.sub)


_encode = msgspec.json.Encoder().encode


async def _serve(
    app_state: Any, scope: Any, principal: Principal, match: re.Match[str], data: HoldRequest
) -> tuple[int, bytes, Headers]:
    event_id = int(match.group(1))
    scope["path_params"] = {"event_id": event_id}
    view = await place_hold(app_state, scope["state"], principal.sub, event_id, data)
    return 201, _encode(view), [(b"location", f"/api/v1/holds/{view.hold_id}".encode())]


# The edge's direct route for hold attempts (api/direct.py). Canonical ids only ("007",
# "0", 19+ digits go to Litestar and its validation).
DIRECT_ROUTE: Final = DirectRoute(
    method="POST",
    path=re.compile(r"^/api/v1/events/([1-9][0-9]{0,17})/holds$"),
    template="/api/v1/events/{event_id:int}/holds",
    roles=ROLES,
    scopes=SCOPES,
    body_type=HoldRequest,
    serve=_serve,
)


route_handlers = [HoldController]
