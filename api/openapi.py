"""OpenAPI 3.1 that tells the truth about errors.

Litestar documents a 400 with its own ``ValidationException`` JSON body; this
API answers ``application/problem+json`` (422 naming the field, 400 for
unparseable bodies). ``document_problems`` rewrites the generated document once,
at startup, so that clients and the schemathesis run see:

- ``Problem`` / ``ValidationProblem`` components;
- ``400`` and ``422`` where a handler validates input;
- ``401`` (and ``security: BearerToken``) where a handler takes ``principal`` or
  an auth guard, ``403`` where a guard checks a role or scope;
- ``429`` with ``Retry-After`` on ``/api/`` (rate limits), ``503`` with
  ``Retry-After`` on ``/api/`` and ``/readyz``;
- ``4XX``: any other client error is a ``Problem`` too;
- ``text/csv`` beside JSON for a 200 of handlers marked ``opt={"csv": True}``.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)
from litestar.routes import HTTPRoute

from api.errors import PROBLEM_MEDIA_TYPE

log = logging.getLogger("ticketbuster.api")

_STRING = Schema(type=OpenAPIType.STRING)
_PROBLEM_PROPERTIES: dict[str, Schema | Reference] = {
    "type": Schema(
        type=OpenAPIType.STRING,
        description="Stable problem type: https://ticketbuster.dev/problems/<code>",
    ),
    "title": _STRING,
    "status": Schema(type=OpenAPIType.INTEGER),
    "detail": _STRING,
    "instance": _STRING,
    "request_id": _STRING,
}
PROBLEM = Schema(
    type=OpenAPIType.OBJECT,
    title="Problem",
    description="RFC 9457 problem details; extension members (e.g. `seats`) may follow.",
    required=["type", "title", "status"],
    properties=_PROBLEM_PROPERTIES,
)
VALIDATION_PROBLEM = Schema(
    type=OpenAPIType.OBJECT,
    title="ValidationProblem",
    description="422: `field` names the first invalid field; `errors` lists them all.",
    required=["type", "title", "status"],
    properties={
        **_PROBLEM_PROPERTIES,
        "field": _STRING,
        "errors": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["field", "message"],
                properties={"field": _STRING, "message": _STRING, "source": _STRING},
            ),
        ),
    },
)
_RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER), description="Seconds to wait before retrying"
)


def _problem(description: str, ref: str = "Problem", retry_after: bool = False) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={
            PROBLEM_MEDIA_TYPE: OpenAPIMediaType(schema=Reference(f"#/components/schemas/{ref}"))
        },
        headers={"Retry-After": _RETRY_AFTER} if retry_after else None,
    )


def _guard_kinds(handler: HTTPRouteHandler) -> set[str]:
    """'auth' if the handler needs a token, 'forbidden' if a guard checks roles or scopes."""
    kinds: set[str] = set()
    if "principal" in handler.parsed_fn_signature.parameters:
        kinds.add("auth")
    for guard in handler.resolve_guards():
        fn = getattr(guard, "func", guard)  # Litestar wraps guards in AsyncCallable
        qualname = getattr(fn, "__qualname__", "")
        if qualname.startswith("requires_"):
            kinds.add("auth")
            if not qualname.startswith("requires_auth"):
                kinds.add("forbidden")
    return kinds


def _handlers_by_operation(app: Litestar) -> dict[tuple[str, str], HTTPRouteHandler]:
    index: dict[tuple[str, str], HTTPRouteHandler] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                for method in handler.http_methods:
                    index[(route.path_format or "/", method.lower())] = handler
    return index


def document_problems(app: Litestar) -> None:
    """Rewrite the generated OpenAPI document's error responses (see module docstring)."""
    try:
        openapi = app.openapi_schema
    except Exception:  # a broken handler annotation must not stop the API from serving
        log.exception("OpenAPI generation failed")
        return
    schemas: dict[str, Any] = openapi.components.schemas or {}
    schemas["Problem"] = PROBLEM
    schemas["ValidationProblem"] = VALIDATION_PROBLEM
    openapi.components.schemas = schemas
    handlers = _handlers_by_operation(app)
    for path, item in (openapi.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            operation: Operation | None = getattr(item, method, None)
            if operation is None:
                continue
            responses: dict[str, Any] = dict(operation.responses or {})
            if "400" in responses:
                responses["400"] = _problem("Malformed request (e.g. unparseable JSON)")
                responses.setdefault("422", _problem("Invalid input", "ValidationProblem"))
            handler = handlers.get((path, method))
            kinds = _guard_kinds(handler) if handler is not None else set()
            if "auth" in kinds:
                responses.setdefault("401", _problem("Missing or invalid bearer token"))
                operation.security = operation.security or [{"BearerToken": []}]
            if "forbidden" in kinds:
                responses.setdefault("403", _problem("The caller lacks the role or scope"))
            if path.startswith("/api/"):
                responses.setdefault("429", _problem("Too many requests", retry_after=True))
            if path.startswith("/api/") or path == "/readyz":
                responses.setdefault(
                    "503", _problem("A dependency is unavailable", retry_after=True)
                )
            responses.setdefault("4XX", _problem("Client error"))
            ok = responses.get("200")
            if handler is not None and handler.opt.get("csv") and isinstance(ok, OpenAPIResponse):
                # Handlers that also answer text/csv (?format=csv or Accept: text/csv).
                ok.content = {**(ok.content or {}), "text/csv": OpenAPIMediaType(schema=_STRING)}
            operation.responses = responses
