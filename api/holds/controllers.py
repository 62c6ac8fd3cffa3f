"""Holds endpoints: thin handlers over ``core.inventory.Inventory``.

``POST /api/v1/events/{event_id}/holds`` places a hold (explicit seats, or the best
adjacent seats of a category); ``GET``/``DELETE /api/v1/holds/{hold_id}`` read and
release it; ``POST /api/v1/holds/{hold_id}/extend`` extends it up to its lifetime cap.
The caller is the buyer: a hold is visible only to the token's subject (others get
404). Every hold attempt is counted in ``ticketbuster_holds_total{result}`` and timed
in ``ticketbuster_hold_duration_seconds``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from api.auth.principal import Principal, require_principal, requires_role_or_scope
from api.catalog.deps import CATALOG_DEPENDENCY, catalog_from_state
from api.catalog.service import Catalog
from api.edge import BUDGET_SPENT_KEY
from api.holds.deps import HOLD_INVENTORY_DEPENDENCY, provide_hold_inventory
from api.holds.schemas import HoldRequest, HoldView, hold_view
from api.metrics import HOLD_DURATION, HOLDS
from core.errors import DomainError, InvalidInput, LimitExceeded, RateLimited, SeatUnavailable
from core.holds import AttemptBudget
from core.inventory import Inventory

EventId = Annotated[int, PathParameter(ge=1, description="The event's id.")]
HoldId = Annotated[
    str, PathParameter(max_length=64, description='A hold id, e.g. "h5.0.9f8a7b6c5d4e3f21".')
]

# Buyers (and admins acting as one), or partner clients with the "holds" scope.
BUYERS = requires_role_or_scope(("buyer", "admin"), ("holds",))


def _result(exc: BaseException | None) -> str:
    """The bounded ``result`` label of a hold attempt."""
    if exc is None:
        return "ok"
    if isinstance(exc, SeatUnavailable):
        return "unavailable"
    if isinstance(exc, LimitExceeded):
        return "limit"
    if isinstance(exc, RateLimited):
        return "budget"
    if isinstance(exc, InvalidInput):
        return "invalid"
    if isinstance(exc, DomainError) and exc.status < 500:
        return "rejected"
    return "error"


# Pre-bound children: a labels() lookup per request costs more than the increment.
_HOLD_RESULTS = {
    r: HOLDS.labels(result=r)
    for r in ("ok", "unavailable", "limit", "budget", "invalid", "rejected", "error")
}


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
        started = time.perf_counter()
        failure: BaseException | None = None
        # The guard checked the caller; reading it from the scope spares a dependency.
        principal = require_principal(request.scope)
        try:
            # The hot path reads the gateways straight from app.state: resolving them as
            # Litestar dependencies costs a task group per request (8-20% of a hold's CPU
            # in loadtest/hold_path_ab.py runs).
            state = request.app.state
            inventory = await provide_hold_inventory(state)
            catalog = catalog_from_state(state)
            mode = data.mode()
            # Both cached: no PostgreSQL query on a warm path, one Redis call below.
            await catalog.on_sale(event_id)  # 404 unknown, 409 outside the sale window
            prices = await catalog.prices(event_id)
            budget: AttemptBudget | None = getattr(state, "hold_budget", None)
            if mode == "seats":
                assert data.seats is not None
                seats = data.seats
                request.scope["state"][BUDGET_SPENT_KEY] = True  # the script spends it
                hold = await inventory.hold(event_id, seats, principal.sub, budget=budget)
            else:
                assert data.quantity is not None and data.category is not None
                if data.category not in prices:
                    raise InvalidInput(
                        f"event {event_id} has no price category {data.category!r}",
                        field="category",
                    )
                request.scope["state"][BUDGET_SPENT_KEY] = True
                hold = await inventory.hold_best(
                    event_id, data.category, data.quantity, principal.sub, budget=budget
                )
            view = hold_view(hold, prices)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            _HOLD_RESULTS[_result(failure)].inc()
            HOLD_DURATION.observe(time.perf_counter() - started)
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


route_handlers = [HoldController]
