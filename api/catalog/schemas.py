"""Wire types of the catalog API that are not core types: query parsing and bounds.

The response bodies are ``core.events`` Structs (Category, EventPage, Event, SeatMap).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from api.catalog.repository import ListFilters
from api.catalog.service import decode_cursor
from core.errors import InvalidInput

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100
MAX_QUERY_LENGTH: Final = 100


def _aware(value: datetime | None, field: str) -> datetime | None:
    """Query datetimes without an offset are UTC; the result is in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"{field} is out of range", field=field) from None


def list_filters(
    *,
    category: str | None,
    q: str | None,
    starts_after: datetime | None,
    starts_before: datetime | None,
    cursor: str | None,
) -> ListFilters:
    """Check the event list's query parameters; InvalidInput names the bad one."""
    if q is not None:
        q = q.strip()
        if not q:
            raise InvalidInput("q must not be blank", field="q")
        if "\x00" in q:
            raise InvalidInput("q contains a NUL character", field="q")
    after = _aware(starts_after, "starts_after")
    before = _aware(starts_before, "starts_before")
    if after is not None and before is not None and before <= after:
        raise InvalidInput("starts_before must be later than starts_after", field="starts_before")
    return ListFilters(
        category=category,
        q=q or None,
        starts_after=after,
        starts_before=before,
        after=decode_cursor(cursor) if cursor is not None else None,
    )
