"""Domain errors. Each carries its HTTP status and a stable problem type.

The API renders every ``DomainError`` as RFC 9457 ``application/problem+json``:
``type`` is ``https://ticketbuster.dev/problems/<code>``, ``title`` the class's
title, ``detail`` the message, plus the error's ``extra`` members.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every expected failure; never rendered as a 500."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(DomainError):
    """The request is well-formed JSON but asks for something impossible."""

    status = 422
    code = "invalid_input"
    title = "Invalid input"


class NotFound(DomainError):
    status = 404
    code = "not_found"
    title = "Not found"


class NotOwner(NotFound):
    """Someone else's hold or order: answered like a missing one so existence is not leaked."""


class SeatUnavailable(DomainError):
    """One or more seats are held or sold. ``extra['seats']`` names them."""

    status = 409
    code = "seat_unavailable"
    title = "Seats unavailable"


class HoldExpired(DomainError):
    status = 410
    code = "hold_expired"
    title = "Hold expired"


class LimitExceeded(DomainError):
    """The buyer's per-event seat limit would be exceeded."""

    status = 429
    code = "limit_exceeded"
    title = "Seat limit reached"


class NotOnSale(DomainError):
    """The event's seats cannot be held now: its sale window is not open.

    409: the request conflicts with the event's current state (not with the caller's
    rights, which 403 is for). Subclasses name which side of the window the event is on.
    """

    status = 409
    code = "not_on_sale"
    title = "Not on sale"


class SaleNotOpen(NotOnSale):
    """The sale has not opened yet; ``extra['sale_opens_at']`` says when it does."""

    code = "sale_not_open"
    title = "Sale not open yet"


class SaleClosed(NotOnSale):
    """The sale is over (closed, the event started) or the event is cancelled;
    ``extra['reason']`` says which."""

    code = "sale_closed"
    title = "Sale closed"


class Conflict(DomainError):
    status = 409
    code = "conflict"
    title = "Conflict"


class SoldSeatsKept(Conflict):
    """A seat map edit would remove or renumber seats with sold tickets; ``extra['seats']``
    names them."""

    code = "sold_seats"
    title = "Seats already sold"


class PreconditionFailed(DomainError):
    """``If-Match`` names a version that is no longer current (someone else edited)."""

    status = 412
    code = "precondition_failed"
    title = "Edited by someone else"


class PreconditionRequired(DomainError):
    """An edit came without ``If-Match``; the caller must say which version it edits."""

    status = 428
    code = "precondition_required"
    title = "If-Match required"


class Unavailable(DomainError):
    """A dependency is down or overloaded; the client should retry after a pause."""

    status = 503
    code = "unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, retry_after_s: int = 2, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after_s = retry_after_s


class Unauthorized(DomainError):
    """No bearer token, or one that fails validation (expired, wrong issuer, bad signature...)."""

    status = 401
    code = "unauthorized"
    title = "Authentication required"


class Forbidden(DomainError):
    """The caller is known but lacks the role or scope the operation needs."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class RateLimited(DomainError):
    """Too many requests from one client (IP or user); retry after ``retry_after_s``."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str, retry_after_s: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after_s = retry_after_s
