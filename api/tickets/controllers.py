"""Ticket endpoints: one ticket with its token, its QR code (SVG, PNG), and the JWKS.

``GET /api/v1/tickets/jwks.json`` is public: gate scanners download it once and verify
ticket tokens offline (``core.tickets.verify_ticket``). The QR code encodes the token
itself, nothing else.
"""

from __future__ import annotations

import asyncio
import io
from typing import Annotated, Any

import qrcode
import qrcode.image.svg
from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import Parameter

from api.auth.principal import Principal, requires_auth
from api.orders.deps import ORDER_SERVICE_DEPENDENCY
from api.orders.service import OrderService, ticket_view
from api.tickets.keys import ticket_jwks
from core.errors import NotFound, Unavailable
from core.orders import TicketView, canonical_uuid
from core.tickets import Jwks

TicketId = Annotated[str, Parameter(max_length=64, description="The ticket's id (UUID).")]


def render_svg(token: str) -> bytes:
    image = qrcode.make(
        token,
        image_factory=qrcode.image.svg.SvgPathImage,
        error_correction=qrcode.constants.ERROR_CORRECT_M,
    )
    data: bytes = image.to_string(encoding="unicode").encode()
    return data


def render_png(token: str) -> bytes:
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=6, border=4)
    qr.add_data(token)
    qr.make(fit=True)
    buf = io.BytesIO()
    qr.make_image().save(buf)
    return buf.getvalue()


async def _owned_ticket(orders: OrderService, sub: str, ticket_id: str) -> Any:
    canonical = canonical_uuid(ticket_id)
    if canonical is None:
        raise NotFound("no such ticket (ticket ids are UUIDs)")
    ticket_id = canonical
    row = await orders.pool.fetchrow(
        "SELECT t.*, c.checked_in_at FROM orders.tickets t"
        " LEFT JOIN orders.checkins c USING (ticket_id)"
        " WHERE t.ticket_id = $1 AND t.holder = $2",
        ticket_id,
        sub,
    )
    if row is None:
        raise NotFound(f"ticket {ticket_id} not found")
    return row


async def _token(orders: OrderService, sub: str, ticket_id: str) -> str:
    row = await _owned_ticket(orders, sub, ticket_id)
    if row["token"] is None:
        raise Unavailable("the ticket is being issued, retry in a moment", retry_after_s=1)
    token: str = row["token"]
    return token


class TicketController(Controller):
    path = "/api/v1/tickets"
    tags = ["tickets"]
    dependencies = {"orders": ORDER_SERVICE_DEPENDENCY}

    @get("/jwks.json", summary="Ticket verification keys (JWKS)", cache_control=None)
    async def jwks(self, state: State) -> Response[Jwks]:
        """Public keys that sign ticket tokens (EdDSA), for offline verification at the gate."""
        return Response(ticket_jwks(state), headers={"Cache-Control": "public, max-age=300"})

    @get("/{ticket_id:str}", summary="One of my tickets", guards=[requires_auth()])
    async def get_ticket(
        self,
        ticket_id: TicketId,
        orders: NamedDependency[OrderService],
        principal: NamedDependency[Principal],
    ) -> TicketView:
        """The ticket with its signed token (owner only; 404 otherwise)."""
        return ticket_view(await _owned_ticket(orders, principal.sub, ticket_id), with_token=True)

    @get(
        "/{ticket_id:str}/qr.svg",
        summary="QR code (SVG)",
        guards=[requires_auth()],
        media_type="image/svg+xml",
    )
    async def qr_svg(
        self,
        ticket_id: TicketId,
        orders: NamedDependency[OrderService],
        principal: NamedDependency[Principal],
    ) -> Response[bytes]:
        """The ticket's token as an SVG QR code (owner only)."""
        token = await _token(orders, principal.sub, ticket_id)
        body = await asyncio.to_thread(render_svg, token)
        return Response(body, media_type="image/svg+xml", headers={"Cache-Control": "private"})

    @get(
        "/{ticket_id:str}/qr.png",
        summary="QR code (PNG)",
        guards=[requires_auth()],
        media_type="image/png",
    )
    async def qr_png(
        self,
        ticket_id: TicketId,
        orders: NamedDependency[OrderService],
        principal: NamedDependency[Principal],
    ) -> Response[bytes]:
        """The ticket's token as a PNG QR code (owner only)."""
        token = await _token(orders, principal.sub, ticket_id)
        body = await asyncio.to_thread(render_png, token)
        return Response(body, media_type="image/png", headers={"Cache-Control": "private"})


route_handlers = [TicketController]
