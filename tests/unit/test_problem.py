"""RFC 9457 rendering of every kind of error, without I/O."""

from __future__ import annotations

import pytest
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from api.errors import PROBLEM_BASE, build_problem, problem_response
from core.errors import (
    HoldExpired,
    LimitExceeded,
    NotOwner,
    RateLimited,
    SeatUnavailable,
    Unauthorized,
    Unavailable,
)


def test_domain_error_carries_status_type_and_extra_members() -> None:
    status, body, headers = build_problem(
        SeatUnavailable("2 seats are taken", seats=["101-A-1", "101-A-2"]), instance="/x"
    )
    assert status == 409
    assert body["type"] == PROBLEM_BASE + "seat_unavailable"
    assert body["title"] == "Seats unavailable"
    assert body["detail"] == "2 seats are taken"
    assert body["seats"] == ["101-A-1", "101-A-2"]
    assert body["instance"] == "/x"
    assert "Retry-After" not in headers


def test_extra_members_cannot_overwrite_standard_members() -> None:
    _, body, _ = build_problem(HoldExpired("gone", status=200, type="x", hold_id="h1.0.ab"))
    assert body["status"] == 410
    assert body["type"] == PROBLEM_BASE + "hold_expired"
    assert body["hold_id"] == "h1.0.ab"


def test_not_owner_is_indistinguishable_from_not_found() -> None:
    status, body, _ = build_problem(NotOwner("No such hold."))
    assert status == 404
    assert body["type"] == PROBLEM_BASE + "not_found"


@pytest.mark.parametrize(
    ("exc", "status", "retry_after"),
    [
        (Unavailable("down", retry_after_s=7), 503, "7"),
        (RateLimited("slow down", retry_after_s=3), 429, "3"),
        (LimitExceeded("6 seats max"), 429, "1"),
    ],
)
def test_429_and_503_carry_retry_after(exc: Exception, status: int, retry_after: str) -> None:
    got_status, body, headers = build_problem(exc)
    assert got_status == status == body["status"]
    assert headers["Retry-After"] == retry_after


def test_401_asks_for_a_bearer_token() -> None:
    status, _, headers = build_problem(Unauthorized("expired"))
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")


def test_validation_error_is_422_naming_the_field() -> None:
    exc = ValidationException(
        "Validation failed for POST /api/v1/events/1/holds",
        extra=[
            {
                "message": "Expected `int`, got `str` - at `$.quantity`",
                "key": "data",
                "source": "body",
            }
        ],
    )
    status, body, _ = build_problem(exc)
    assert status == 422
    assert body["type"] == PROBLEM_BASE + "invalid_input"
    assert body["field"] == "quantity"
    assert body["errors"][0]["message"] == "Expected `int`, got `str`"
    assert body["errors"][0]["source"] == "body"


def test_unknown_field_is_named() -> None:
    exc = ValidationException(
        "Validation failed",
        extra=[{"message": "Object contains unknown field `price`", "key": "data"}],
    )
    _, body, _ = build_problem(exc)
    assert body["field"] == "price"


def test_query_parameter_error_names_the_parameter() -> None:
    exc = ValidationException(
        "Validation failed",
        extra=[{"message": "Expected `int`", "key": "limit", "source": "query"}],
    )
    _, body, _ = build_problem(exc)
    assert body["field"] == "limit"
    assert body["errors"][0]["source"] == "query"


def test_framework_errors_get_stable_types_and_keep_their_headers() -> None:
    status, body, _ = build_problem(NotFoundException())
    assert (status, body["type"]) == (404, PROBLEM_BASE + "not_found")
    status, body, headers = build_problem(MethodNotAllowedException(headers={"Allow": "GET"}))
    assert (status, body["type"]) == (405, PROBLEM_BASE + "method_not_allowed")
    assert headers["Allow"] == "GET"
    status, body, _ = build_problem(HTTPException(status_code=413))
    assert (status, body["type"]) == (413, PROBLEM_BASE + "payload_too_large")


def test_unexpected_exception_is_a_bare_500() -> None:
    status, body, headers = build_problem(RuntimeError("password=hunter2 at /srv/app.py:12"))
    assert status == 500
    assert body["type"] == PROBLEM_BASE + "internal_error"
    assert "hunter2" not in str(body) and "detail" not in body
    assert headers == {}


@pytest.mark.parametrize(
    "exc", [RedisConnectionError("refused"), TimeoutError(), ConnectionRefusedError()]
)
def test_dependency_outage_is_503_not_500(exc: Exception) -> None:
    status, body, headers = build_problem(exc)
    assert status == 503
    assert body["type"] == PROBLEM_BASE + "unavailable"
    assert "refused" not in str(body)
    assert int(headers["Retry-After"]) > 0


def test_problem_response_uses_problem_media_type() -> None:
    response = problem_response(SeatUnavailable("taken", seats=["1-A-1"]), request_id="abc")
    assert response.status_code == 409
    assert response.media_type == "application/problem+json"


def test_extra_members_are_made_json_safe() -> None:
    import datetime

    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    _, body, _ = build_problem(HoldExpired("gone", expired_at=when, seats={"1-A-1"}, odd=object()))
    assert body["expired_at"].startswith("2026-01-02T03:04:05")
    assert body["seats"] == ["1-A-1"]
    assert isinstance(body["odd"], str)


def test_retry_after_can_come_from_the_error_extras() -> None:
    # e.g. the seat limit: retry when the buyer's oldest hold expires, not in 1 s.
    _, _, headers = build_problem(LimitExceeded("6 seats max", limit=6, retry_after_s=240))
    assert headers["Retry-After"] == "240"
