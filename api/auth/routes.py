"""``GET /api/v1/me``: who the bearer token says you are (the PWA shows it; handy to debug)."""

from __future__ import annotations

import msgspec
from litestar import get
from litestar.di import NamedDependency

from api.auth.principal import Principal


class Me(msgspec.Struct):
    sub: str
    roles: list[str]
    scopes: list[str]


@get("/api/v1/me", tags=["auth"], summary="The caller", cache=False)
async def me(principal: NamedDependency[Principal]) -> Me:
    """The authenticated caller: subject, roles and scopes (401 without a valid token)."""
    return Me(sub=principal.sub, roles=sorted(principal.roles), scopes=sorted(principal.scopes))


route_handlers = [me]
