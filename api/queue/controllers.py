"""Waiting-room endpoints: thin handlers over ``api.queue.service.QueueService``.

- ``GET  /api/v1/events/{id}/queue``: the queue (public): state, seed commitment (and the
  seed once the sale opened), waiting, admitted, rate, the fairness log's head hash;
- ``POST /api/v1/events/{id}/queue``: join (buyers only: a partner client cannot queue
  on a fan's behalf); idempotent, a second join answers the same place;
- ``GET  /api/v1/events/{id}/queue/position``: the caller's place, or the admission
  token once admitted (polling; the PWA polls every few seconds);
- ``GET  /api/v1/events/{id}/fairness-log?after=&limit=``: the hash-chained log (public);
- ``GET  /api/v1/queue/jwks.json``: the admission tokens' public keys.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.params import PathParameter, QueryParameter

from api.auth.principal import require_principal, requires_role_or_scope
from api.queue.service import MAX_LOG_PAGE, queue_service
from api.ratelimit import address_key, client_ip
from api.startup import parse_trusted_proxies
from core.queue import LogPage, PositionView, QueueView
from core.tickets import Jwks

EventId = Annotated[int, PathParameter(ge=1, description="The event's id.")]

# Fans only: no partner scope joins a queue.
FANS = requires_role_or_scope(("buyer", "admin"), ())


class QueueController(Controller):
    path = "/api/v1"
    tags = ["queue"]

    @get("/events/{event_id:int}/queue", summary="The event's waiting room", cache_control=None)
    async def queue(self, request: Request[Any, Any, Any], event_id: EventId) -> QueueView:
        """State (``pre``, ``open``, ``sold_out``, ``closed``), fans waiting and admitted,
        the admission rate, the seed commitment and, once the sale opened, the seed."""
        return await queue_service(request.app.state).view(event_id)

    @post(
        "/events/{event_id:int}/queue",
        summary="Join the waiting room",
        guards=[FANS],
        status_code=200,
    )
    async def join(self, request: Request[Any, Any, Any], event_id: EventId) -> PositionView:
        """Join once per account (again: the same place). 409 ``queue_not_open`` before the
        queue opens or after the sale, 409 ``sold_out``, 429 ``queue_join_limit`` when the
        address used up its joins, 403 ``proof_of_work_required`` when proof of work is on
        and the ``Proof-Of-Work: <challenge>:<nonce>`` header is missing or wrong."""
        principal = require_principal(request.scope)
        settings = request.app.state.settings
        ip = address_key(
            client_ip(request.scope, parse_trusted_proxies(settings.api.trusted_proxies))
        )
        proof = request.headers.get("proof-of-work")
        return await queue_service(request.app.state).join(principal.sub, event_id, ip, proof)

    @get(
        "/events/{event_id:int}/queue/position",
        summary="Your place in the waiting room",
        guards=[FANS],
        cache_control=None,
    )
    async def position(self, request: Request[Any, Any, Any], event_id: EventId) -> PositionView:
        """``waiting`` with position, fans ahead and the estimated wait (none yet in the
        pre-queue: the order is drawn at the opening), ``admitted`` with the admission
        token to send with holds and orders, or ``sold_out``. 404 ``not_queued``."""
        principal = require_principal(request.scope)
        return await queue_service(request.app.state).position(principal.sub, event_id)

    @get(
        "/events/{event_id:int}/fairness-log",
        summary="The waiting room's fairness log",
        cache_control=None,
    )
    async def fairness_log(
        self,
        request: Request[Any, Any, Any],
        event_id: EventId,
        after: Annotated[int, QueryParameter(ge=0, description="Entries after this seq.")] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LOG_PAGE)] = 500,
    ) -> LogPage:
        """Entries in order, each with the hash of the one before; ``head`` is the hash of
        the last entry. ``python -m workers.admitter verify-fairness <event>`` checks it."""
        return await queue_service(request.app.state).log_page(event_id, after, limit)

    @get("/queue/jwks.json", summary="Admission token keys (JWKS)", cache_control=None)
    async def jwks(self, request: Request[Any, Any, Any]) -> Response[Jwks]:
        """The public keys of admission tokens (EdDSA)."""
        keys = queue_service(request.app.state).jwks
        return Response(keys, headers={"Cache-Control": "public, max-age=300"})


route_handlers = [QueueController]
