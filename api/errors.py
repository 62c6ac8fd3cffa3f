"""RFC 9457 problem details for every error the API answers.

One exception handler renders everything: ``core.errors.DomainError`` (with its
own status, code and extra members), Litestar's ``HTTPException`` family
(validation, 404, 405, 413...), dependency outages (503 + ``Retry-After``) and,
last, anything unexpected (a bare 500 with no details; the traceback goes to
the log, never to the client).

``type`` is always ``https://ticketbuster.dev/problems/<code>``; the codes are
stable and listed in docs/decisions/0302-problem-details.md.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import Send

from core.errors import DomainError

log = logging.getLogger("ticketbuster.api.errors")

PROBLEM_BASE = "https://ticketbuster.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

# Stable codes for statuses raised by the framework (not by the domain).
_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}
# What to say when the framework refuses a request without saying why.
_DEFAULT_DETAILS: dict[int, str] = {
    404: "Nothing is at this path (no such route, or no such resource).",
    405: "This method is not allowed at this path (see the Allow header).",
}
# Default pause a client should take before retrying, when the error names none.
_DEFAULT_RETRY_AFTER_S = {429: 1, 503: 2}


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details (extension members such as ``seats`` may follow)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None


class FieldError(msgspec.Struct):
    """One invalid field of a 422 problem."""

    field: str
    message: str
    source: str | None = None


class ValidationProblem(Problem):
    """422: ``field`` names the first invalid field, ``errors`` lists them all."""

    field: str | None = None
    errors: list[FieldError] = msgspec.field(default_factory=list)


def problem_type(code: str) -> str:
    return PROBLEM_BASE + code


def _code_for(status: int) -> str:
    if status in _CODES:
        return _CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _title_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _dependency_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning 'a backing service is down or slow': 503, not 500."""
    errors: list[type[BaseException]] = [asyncio.TimeoutError, ConnectionError]
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisClusterException
        from redis.exceptions import TimeoutError as RedisTimeoutError

        errors += [RedisConnectionError, RedisTimeoutError, RedisClusterException]
    except ImportError:  # pragma: no cover - redis is a hard dependency
        pass
    try:
        import asyncpg

        errors += [
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.TooManyConnectionsError,
            asyncpg.exceptions.CannotConnectNowError,
            asyncpg.exceptions.InterfaceError,
        ]
    except ImportError:  # pragma: no cover
        pass
    try:
        from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

        errors += [KafkaConnectionError, KafkaTimeoutError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


DEPENDENCY_ERRORS = _dependency_errors()


def _field_errors(extra: Any) -> list[FieldError]:
    """Litestar's validation ``extra`` -> field errors (``$.seats[0]`` -> ``seats[0]``)."""
    items = extra if isinstance(extra, list) else [extra] if isinstance(extra, dict) else []
    out: list[FieldError] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", "invalid value"))
        key = item.get("key")
        if key == "data":  # Litestar names the whole body "data"
            key = None
        if not key and " - at `$." in message:
            key = message.rpartition(" - at `$.")[2].rstrip("`")
        marker = next((m for m in ("unknown field `", "required field `") if m in message), None)
        if marker:
            # "Object contains unknown field `z` - at `$.x`" -> "x.z"; likewise
            # "Object missing required field `z`".
            name = message.partition(marker)[2].partition("`")[0]
            prefix = (
                message.rpartition(" - at `$.")[2].rstrip("`") if " - at `$." in message else ""
            )
            key = f"{prefix}.{name}" if prefix else name
        if not key and " - at `$`" in message:
            key = "body"
        source = item.get("source")
        out.append(
            FieldError(
                field=str(key) if key else "body",
                message=message.partition(" - at `")[0],
                source=str(source) if source else None,
            )
        )
    return out


def build_problem(
    exc: BaseException, *, instance: str | None = None, request_id: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Map any exception to (status, problem body, extra headers)."""
    headers: dict[str, str] = {}
    body: dict[str, Any]
    if isinstance(exc, DomainError):
        status = exc.status
        extra = {k: v for k, v in exc.extra.items() if k not in Problem.__struct_fields__}
        body = msgspec.to_builtins(
            Problem(
                type=problem_type(exc.code),
                title=exc.title,
                status=status,
                detail=exc.detail,
                instance=instance,
                request_id=request_id,
            )
        )
        try:
            body.update(msgspec.to_builtins(extra, enc_hook=str))
        except (TypeError, ValueError):  # an extra member that cannot be JSON is dropped
            log.warning("problem extras of %s not serialisable", type(exc).__name__)
        retry_after = getattr(exc, "retry_after_s", None) or exc.extra.get("retry_after_s")
        if retry_after is None and status in _DEFAULT_RETRY_AFTER_S:
            retry_after = _DEFAULT_RETRY_AFTER_S[status]
        if retry_after is not None:
            headers["Retry-After"] = str(max(0, int(retry_after)))
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="ticketbuster", error="invalid_token"'
    elif isinstance(exc, ValidationException):
        # Bad input is never a 500: 422 naming the field(s).
        status = 422
        errors = _field_errors(exc.extra)
        detail = errors[0].message if errors else str(exc.detail)
        if detail.startswith("Validation failed for"):
            detail = f"Invalid value for '{errors[0].field}'" if errors else "Invalid input"
        body = msgspec.to_builtins(
            ValidationProblem(
                type=problem_type("invalid_input"),
                title="Invalid input",
                status=status,
                detail=detail,
                instance=instance,
                request_id=request_id,
                field=errors[0].field if errors else None,
                errors=errors,
            )
        )
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        http_detail: str | None = exc.detail
        if not http_detail or http_detail == _title_for(status) or status >= 500:
            # Framework 5xx details may describe internals.
            http_detail = _DEFAULT_DETAILS.get(status)
        body = msgspec.to_builtins(
            Problem(
                type=problem_type(_code_for(status)),
                title=_title_for(status),
                status=status,
                detail=http_detail,
                instance=instance,
                request_id=request_id,
            )
        )
        headers.update(exc.headers or {})
        if status == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="ticketbuster"')
        if status in _DEFAULT_RETRY_AFTER_S:
            headers.setdefault("Retry-After", str(_DEFAULT_RETRY_AFTER_S[status]))
    elif isinstance(exc, DEPENDENCY_ERRORS):
        status = 503
        body = msgspec.to_builtins(
            Problem(
                type=problem_type("unavailable"),
                title="Service unavailable",
                status=status,
                detail="A backing service is unavailable; retry shortly.",
                instance=instance,
                request_id=request_id,
            )
        )
        headers["Retry-After"] = str(_DEFAULT_RETRY_AFTER_S[503])
    else:
        status = 500
        body = msgspec.to_builtins(
            Problem(
                type=problem_type("internal_error"),
                title="Internal server error",
                status=status,
                instance=instance,
                request_id=request_id,
            )
        )
    return status, body, headers


def _request_id(request: Request[Any, Any, Any]) -> str | None:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else None


def problem_response(
    exc: BaseException, *, instance: str | None = None, request_id: str | None = None
) -> Response[bytes]:
    """The ``Response`` for ``exc`` (``application/problem+json``)."""
    status, body, headers = build_problem(exc, instance=instance, request_id=request_id)
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def log_failure(exc: BaseException, status: int, request_id: str | None, path: str) -> None:
    """Log what the client sees as a 5xx that the domain did not raise on purpose."""
    if status < 500 or isinstance(exc, DomainError):
        return
    if isinstance(exc, DEPENDENCY_ERRORS):
        log.warning(
            "dependency unavailable: %s: %s",
            type(exc).__name__,
            exc,
            extra={"request_id": request_id, "path": path},
        )
    else:
        log.error(
            "unhandled exception", exc_info=exc, extra={"request_id": request_id, "path": path}
        )


def exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """The app's single exception handler (registered for ``Exception``)."""
    request_id = _request_id(request)
    status, body, headers = build_problem(exc, instance=request.url.path, request_id=request_id)
    log_failure(exc, status, request_id, request.url.path)
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


async def send_problem(
    send: Send,
    exc: BaseException,
    *,
    instance: str | None = None,
    request_id: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> None:
    """Answer with a problem from plain ASGI code (middleware outside Litestar's handler)."""
    status, body, headers = build_problem(exc, instance=instance, request_id=request_id)
    await _send(send, status, body, {**headers, **(extra_headers or {})})


async def send_exception(
    send: Send,
    exc: BaseException,
    *,
    instance: str,
    request_id: str | None,
    extra_headers: dict[str, str] | None = None,
) -> None:
    """What ``exception_handler`` answers and logs, for a route served outside Litestar."""
    status, body, headers = build_problem(exc, instance=instance, request_id=request_id)
    log_failure(exc, status, request_id, instance)
    await _send(send, status, body, {**headers, **(extra_headers or {})})


async def _send(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    payload = msgspec.json.encode(body)
    raw_headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(payload)).encode()),
    ]
    for name, value in headers.items():
        raw_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
