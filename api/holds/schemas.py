"""Wire types of the holds API.

A hold request names seats, or asks for the best ``quantity`` adjacent seats of a
price ``category``. The answer carries every seat with its category and price, the
total in minor units and ``expires_at`` (ms since the epoch, Redis server time).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from core.errors import InvalidInput
from core.events import CURRENCY, PriceCategory
from core.holds import Hold

# The body's own bound; the configured per-hold limit is checked by the inventory.
MAX_SEATS_IN_BODY = 64


class HoldRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Either ``seats`` or ``quantity`` + ``category``."""

    seats: Annotated[list[str], msgspec.Meta(max_length=MAX_SEATS_IN_BODY)] | None = None
    quantity: int | None = None
    category: str | None = None
    # Best available among wheelchair spaces and companion seats only.
    accessible: bool = False
    # The admission token of a queued on-sale (api/queue); ignored for other events.
    admission: str | None = None

    def mode(self) -> str:
        """ "seats" or "best"; InvalidInput when the body mixes or lacks both."""
        best = self.quantity is not None or self.category is not None
        if self.seats is not None and not best:
            if self.accessible:
                raise InvalidInput(
                    "accessible applies to best available (quantity + category)",
                    field="accessible",
                )
            return "seats"
        if self.seats is None and self.quantity is not None and self.category is not None:
            return "best"
        raise InvalidInput(
            'send either {"seats": [...]} or {"quantity": n, "category": "..."}', field="body"
        )


class HeldSeat(msgspec.Struct, frozen=True):
    seat_id: str
    category: str
    price_minor: int


class HoldView(msgspec.Struct, frozen=True, kw_only=True):
    """A live hold as the API shows it to its owner."""

    hold_id: str
    event_id: int
    seats: list[HeldSeat]
    created_at: int
    expires_at: int
    # The latest expires_at that extending can reach.
    max_expires_at: int
    total_minor: int
    currency: str = CURRENCY


def hold_view(hold: Hold, prices: dict[str, PriceCategory]) -> HoldView:
    """The hold with the catalog's price of each seat's category."""
    seats = []
    for seat in hold.seats:
        category = hold.categories[seat]
        price = prices.get(category)
        if price is None:
            # The inventory and the catalog disagree: not the buyer's fault, not a 500.
            raise InvalidInput(f"seat {seat} has no price in category {category}", field="seats")
        seats.append(HeldSeat(seat, category, price.price_minor))
    currencies = {prices[s.category].currency for s in seats}
    return HoldView(
        hold_id=hold.hold_id,
        event_id=hold.event_id,
        seats=seats,
        created_at=hold.created_at,
        expires_at=hold.expires_at,
        max_expires_at=hold.max_expires_at,
        total_minor=sum(s.price_minor for s in seats),
        currency=currencies.pop() if len(currencies) == 1 else CURRENCY,
    )
