"""BENCHMARK ONLY — the framework ceiling for ``make bench``.

An endpoint that does nothing, at the hold path's address, served by the same
stack with the same server settings as the real API (Litestar, Granian with
uvloop). Whatever the hold path costs beyond this is ours: auth, validation,
the Redis round trip, encoding, middleware.

Run: ``granian --interface asgi --factory --loop uvloop
loadtest.framework_ceiling:create_app``.
"""

from __future__ import annotations

from litestar import Litestar, get, post


@post("/api/v1/events/{event_id:int}/holds", status_code=201)
async def empty_hold(event_id: int) -> dict[str, int]:
    """Accept the request, read nothing, answer 201."""
    return {"event_id": event_id}


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_app() -> Litestar:
    return Litestar(route_handlers=[empty_hold, healthz], debug=False)
