"""Direct routes: the two requests of the on-sale minute served without Litestar.

In a sale nearly every request is a hold attempt (``POST /api/v1/events/{id}/holds``) or
an order (``POST /api/v1/orders``), and each is a Redis script or two: Litestar's
per-route work (the request object, the signature model, body extraction, dependency
resolution in a task group, the response object) cost more than the work itself. The
edge hands these two here; a route reads the body, decodes it with msgspec into the same
wire type, calls the same function as the Litestar handler (``api.holds.service.
place_hold``, ``api.orders.service.place_order``) and writes the answer itself.

A route serves only what it can answer exactly as Litestar would: a valid token with the
route's role or scope, a canonical path, at most one ``Idempotency-Key``, and a body that
decodes strictly. Anything else - no or a bad token, a wrong role, an odd id, a body too
large, malformed or of another shape - goes on to Litestar with the body replayed, so
every 401/403/413/422 of that kind is Litestar's own. Domain errors (404, 409, 422, 429,
503) are rendered by ``api.errors`` as for every route, and the answers are compared with
Litestar's in tests/integration/test_inventory_api.py and test_orders.py.
``TB_API_DIRECT_ROUTES=false`` turns them off (every request through Litestar).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from api.auth.principal import PRINCIPAL_KEY, Principal
from api.errors import send_exception
from api.metrics import DIRECT_ROUTE, TALLY

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
# (app state, request scope, caller, path match, decoded body) -> (status, body, headers)
Serve = Callable[[Any, Any, Principal, "re.Match[str]", Any], Awaitable[tuple[int, bytes, Headers]]]

_JSON: Final = (b"content-type", b"application/json")


@dataclass(frozen=True)
class DirectRoute:
    """One route the edge serves itself; ``template`` is the Litestar route it stands in
    for (it labels the request metrics)."""

    method: str
    path: re.Pattern[str]
    template: str
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    body_type: type
    serve: Serve


def _replay(chunks: list[bytes], more: bool, receive: Receive) -> Receive:
    """A ``receive`` that gives the body read so far, then the rest from the client."""
    sent = False

    async def again() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": more}
        return await receive()

    return again


class DirectRoutes:
    """``await direct(scope, receive, send)``: None once answered, else the ``receive`` to
    hand the request to Litestar with (its body replayed, or untouched when the request
    is not for a direct route)."""

    def __init__(
        self,
        app_state: Any,
        routes: list[DirectRoute],
        *,
        max_body_bytes: int,
        cors_headers: Callable[[Any], dict[str, str]],
    ) -> None:
        self.app_state = app_state
        self.routes = routes
        self.max_body_bytes = max_body_bytes
        self.cors_headers = cors_headers
        self._decoders: dict[int, Callable[[bytes], Any]] = {
            id(r): msgspec.json.Decoder(r.body_type).decode for r in routes
        }
        self._served = {
            id(r): TALLY.counter(DIRECT_ROUTE.labels(r.template, "served")) for r in routes
        }
        self._handed_on = {
            id(r): TALLY.counter(DIRECT_ROUTE.labels(r.template, "handed_on")) for r in routes
        }

    def _route(self, scope: Any) -> tuple[DirectRoute, re.Match[str]] | None:
        method, path = scope["method"], scope["path"]
        for route in self.routes:
            if route.method == method:
                match = route.path.match(path)
                if match is not None:
                    return route, match
        return None

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> Receive | None:
        found = self._route(scope)
        if found is None:
            return receive
        route, match = found
        handed_on = self._handed_on[id(route)]
        principal = scope["state"].get(PRINCIPAL_KEY)
        if not isinstance(principal, Principal) or not (
            principal.has_role(*route.roles) or principal.has_scope(*route.scopes)
        ):
            handed_on.inc()
            return receive  # Litestar answers 401/403 as for any route
        # The body, bounded as Litestar bounds it (413 is Litestar's to answer, before the
        # body is read when Content-Length announces too much).
        idempotency_keys = 0
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or len(value) > 18 or int(value) > self.max_body_bytes:
                    handed_on.inc()
                    return receive
            elif name == b"idempotency-key":
                idempotency_keys += 1
        if idempotency_keys > 1:
            handed_on.inc()
            return receive  # which one counts is Litestar's to say
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                handed_on.inc()
                return _replay(chunks, False, receive)  # disconnected: Litestar's case
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                handed_on.inc()
                return _replay(chunks, more, receive)
            if not more:
                break
        try:
            data = self._decoders[id(route)](chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except (msgspec.DecodeError, msgspec.ValidationError):
            handed_on.inc()
            return _replay(chunks, False, receive)  # Litestar's 400/422 with its details
        self._served[id(route)].inc()
        scope["path_template"] = route.template
        cors = self.cors_headers(scope)
        try:
            status, payload, headers = await route.serve(
                self.app_state, scope, principal, match, data
            )
        except Exception as exc:
            await send_exception(
                send,
                exc,
                instance=scope["path"],
                request_id=scope["state"].get("request_id"),
                extra_headers=cors,
            )
            return None
        headers = [_JSON, (b"content-length", str(len(payload)).encode()), *headers]
        headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in cors.items())
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})
        return None


def header(scope: Any, name: bytes) -> str | None:
    """The first value of a request header (latin-1), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
