"""The direct route for hold attempts: ``POST /api/v1/events/{id}/holds`` without Litestar.

In the on-sale minute nearly every request is a hold attempt, and a hold is one Redis
script: Litestar's per-route work (the request object, the signature model, body
extraction, dependency resolution, the response object; ~150 us of a ~250 us hold
in-process) cost more than the hold itself. The edge hands hold attempts here; this
module reads the body, decodes it with msgspec into the same ``HoldRequest`` and calls
the same ``place_hold`` as the Litestar handler, and writes the answer itself.

It serves only what it can answer exactly as Litestar would: a valid token with the
buyer role (or the ``holds`` scope), a canonical event id, and a body that decodes
strictly. Anything else - no or a bad token, a wrong role, an odd id, a body too large,
malformed or of another shape - goes on to Litestar with the body replayed, so every
401/403/413/422 is Litestar's own. Domain errors (404, 409, 429, 503) are rendered by
``api.errors`` as they are for every route. ``TB_API_DIRECT_HOLDS=false`` turns it off
(the A/B in ``loadtest/hold_path_ab.py`` and the equivalence test use it).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from api.auth.principal import PRINCIPAL_KEY, Principal
from api.errors import send_exception
from api.holds.schemas import HoldRequest
from api.holds.service import place_hold
from api.metrics import DIRECT_ROUTE

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]

# The Litestar route this stands in for (its template labels the request metrics).
TEMPLATE: Final = "/api/v1/events/{event_id:int}/holds"
# Canonical ids only ("007", "0", 19+ digits go to Litestar and its validation).
_PATH: Final = re.compile(r"^/api/v1/events/([1-9][0-9]{0,17})/holds$")
_ROLES: Final = ("buyer", "admin")
_SCOPES: Final = ("holds",)
_JSON: Final = (b"content-type", b"application/json")
_SERVED = DIRECT_ROUTE.labels(route=TEMPLATE, outcome="served")
_HANDED_ON = DIRECT_ROUTE.labels(route=TEMPLATE, outcome="handed_on")
_decode = msgspec.json.Decoder(HoldRequest).decode
_encode = msgspec.json.Encoder().encode


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


class DirectHolds:
    """``await direct(scope, receive, send)``: None once answered, else the ``receive`` to
    hand the request to Litestar with (its body replayed)."""

    def __init__(
        self,
        app_state: Any,
        *,
        max_body_bytes: int,
        cors_headers: Callable[[Any], dict[str, str]],
    ) -> None:
        self.app_state = app_state
        self.max_body_bytes = max_body_bytes
        self.cors_headers = cors_headers

    @staticmethod
    def matches(scope: Any) -> bool:
        return scope["method"] == "POST" and _PATH.match(scope["path"]) is not None

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> Receive | None:
        state: dict[str, Any] = scope["state"]
        principal = state.get(PRINCIPAL_KEY)
        match = _PATH.match(scope["path"])
        if (
            match is None
            or not isinstance(principal, Principal)
            or not (principal.has_role(*_ROLES) or principal.has_scope(*_SCOPES))
        ):
            _HANDED_ON.inc()
            return receive  # Litestar answers 401/403/404/422 as for any route
        # The body, bounded as Litestar bounds it (413 is Litestar's to answer, before the
        # body is read when Content-Length announces too much).
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_body_bytes:
                    _HANDED_ON.inc()
                    return receive
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                _HANDED_ON.inc()
                return _replay(chunks, False, receive)  # disconnected: Litestar's case
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                _HANDED_ON.inc()
                return _replay(chunks, more, receive)
            if not more:
                break
        try:
            data = _decode(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except (msgspec.DecodeError, msgspec.ValidationError):
            _HANDED_ON.inc()
            return _replay(chunks, False, receive)  # Litestar's 400/422 with its details
        _SERVED.inc()
        event_id = int(match.group(1))
        scope["path_template"] = TEMPLATE
        scope["path_params"] = {"event_id": event_id}
        cors = self.cors_headers(scope)
        try:
            view = await place_hold(self.app_state, state, principal.sub, event_id, data)
        except Exception as exc:
            await send_exception(
                send,
                exc,
                instance=scope["path"],
                request_id=state.get("request_id"),
                extra_headers=cors,
            )
            return None
        payload = _encode(view)
        headers = [
            _JSON,
            (b"content-length", str(len(payload)).encode()),
            (b"location", f"/api/v1/holds/{view.hold_id}".encode()),
        ]
        headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in cors.items())
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})
        return None
