"""Placing a hold: the one implementation behind ``POST /api/v1/events/{id}/holds``.

Both ways in call ``place_hold``: the Litestar handler (``api.holds.controllers``) and the
edge's direct route (``api.direct``), so the rules, the metrics and the answers are the
same whichever served the request.
"""

from __future__ import annotations

import time
from typing import Any, Final

from api.catalog.deps import catalog_from_state
from api.edge import BUDGET_SPENT_KEY
from api.holds.deps import provide_hold_inventory
from api.holds.schemas import HoldRequest, HoldView, hold_view
from api.metrics import HOLD_DURATION, HOLDS, TALLY
from api.queue.service import require_admission
from core.errors import DomainError, InvalidInput, LimitExceeded, RateLimited, SeatUnavailable
from core.holds import AttemptBudget

# Who may hold seats: buyers (and admins acting as one), or partner clients with "holds".
ROLES: Final = ("buyer", "admin")
SCOPES: Final = ("holds",)


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
    r: TALLY.counter(HOLDS.labels(result=r))
    for r in ("ok", "unavailable", "limit", "budget", "invalid", "rejected", "error")
}
_HOLD_DURATION = TALLY.histogram(HOLD_DURATION)


async def place_hold(
    app_state: Any, scope_state: dict[str, Any], buyer: str, event_id: int, data: HoldRequest
) -> HoldView:
    """Hold explicit seats, or the best ``quantity`` adjacent seats of ``category``.

    ``app_state`` is the app's state (the gateways from the lifespan), ``scope_state`` the
    request's (the edge learns there that the hold script spent the attempt budget).
    Counted in ``ticketbuster_holds_total{result}``, timed in
    ``ticketbuster_hold_duration_seconds``. Raises the domain's errors (404, 409, 422,
    429, 503); the caller renders them.
    """
    started = time.perf_counter()
    failure: BaseException | None = None
    try:
        # The gateways come straight from app.state: resolving them as Litestar
        # dependencies costs a task group per request.
        inventory = await provide_hold_inventory(app_state)
        catalog = catalog_from_state(app_state)
        mode = data.mode()
        # Both cached: no PostgreSQL query on a warm path, one Redis call below.
        event = await catalog.on_sale(event_id)  # 404 unknown, 409 outside the sale window
        if event.queued:  # a waiting room: the fan's admission token (no Redis call)
            require_admission(app_state, data.admission, buyer, event_id)
        prices = await catalog.prices(event_id)
        budget: AttemptBudget | None = getattr(app_state, "hold_budget", None)
        if mode == "seats":
            assert data.seats is not None
            scope_state[BUDGET_SPENT_KEY] = True  # the script spends it
            hold = await inventory.hold(
                event_id, data.seats, buyer, event.hold_ttl_s, budget, event.buyer_limit
            )
        else:
            assert data.quantity is not None and data.category is not None
            if data.category not in prices:
                raise InvalidInput(
                    f"event {event_id} has no price category {data.category!r}",
                    field="category",
                )
            scope_state[BUDGET_SPENT_KEY] = True
            # Accessible seats are kept for requests that ask until this long before
            # the start (TB_HOLDS_ACCESSIBLE_RELEASE_S; 0: never kept).
            release_s = inventory.settings.accessible_release_s
            hold = await inventory.hold_best(
                event_id,
                data.category,
                data.quantity,
                buyer,
                event.hold_ttl_s,
                budget,
                event.buyer_limit,
                data.accessible,
                int(event.starts_at.timestamp() - release_s) * 1000 if release_s else 0,
            )
        return hold_view(hold, prices)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        _HOLD_RESULTS[_result(failure)].inc()
        _HOLD_DURATION.observe(time.perf_counter() - started)
