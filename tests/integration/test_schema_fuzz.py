"""Property-based run against ``/schema``: schemathesis generates requests (valid and
invalid) for every documented operation of a real Granian server and checks that nothing
answers 5xx and that every response matches the schema (status, content type, body).

schemathesis draws path parameters from their schema (a string is any string), so the
forms that slip past a parser and trip the layer behind it (``urn:uuid:`` ids, names
too long for the file system, Unicode digits) come from a table instead: every odd
value goes into every path parameter of every route (GET, POST, DELETE), file mount
and WebSocket route of the app's route table, and into the live channels' query strings.

Marked slow. Its own database (migrated by the real runner, one small event seeded and
loaded into the Redis Cluster), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import secrets
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import websockets
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from litestar.routes import ASGIRoute, HTTPRoute, WebSocketRoute
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from core.live import CLOSE_BAD_FRAME, CLOSE_UNAUTHORIZED
from core.settings import Settings
from tests.integration.api_servers import (
    GranianServer,
    granian_server,
    one_event_catalog,
    with_overrides,
)

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("TB_FUZZ_EXAMPLES", "30"))  # more: a deeper search
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(
    services: dict[str, str], settings: Settings, tmp_path_factory: Any
) -> Iterator[GranianServer]:
    with one_event_catalog(services["TB_DATABASE_URL"], settings) as catalog:
        s = with_overrides(
            settings,
            database={"url": catalog.dsn},
            # Generous limits: the run must exercise handlers, not the limiter.
            api={"rate_limit_per_ip": 1_000_000, "rate_limit_per_user": 1_000_000},
        )
        log = Path(tmp_path_factory.mktemp("fuzz")) / "granian.log"
        with granian_server(s, log) as server:
            server.event_id = catalog.event_id  # type: ignore[attr-defined]
            yield server


@pytest.fixture(scope="module")
def fuzz_token(fuzz_server: GranianServer) -> str:
    response = httpx.post(
        fuzz_server.base_url + "/api/v1/auth/dev-token",
        json={"sub": f"fuzz-{secrets.token_hex(4)}", "roles": ["buyer", "scanner", "admin"]},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    server: GranianServer,
    token: str,
    statuses: Counter[int],
) -> None:
    event_id: int = server.event_id  # type: ignore[attr-defined]

    @given(case=operation.as_strategy(generation_mode=mode), real_event=st.booleans())
    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any, real_event: bool) -> None:
        # Random ids almost never name an event: half the valid cases use the seeded one,
        # so seat maps, holds and their conflicts are reached too.
        if (
            real_event
            and mode == GenerationMode.POSITIVE
            and "event_id" in (case.path_parameters or {})
        ):
            case.path_parameters["event_id"] = event_id
        response = case.call_and_validate(
            base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
        )
        statuses[response.status_code] += 1

    run()


NEEDS_A_REAL_RESOURCE = frozenset(
    {
        "POST /api/v1/payments",
        "GET /api/v1/payments/{payment_id}",
        "POST /api/v1/payments/webhooks/{provider}",
        "POST /api/v1/orders/{order_id}/cancel",
        "GET /api/v1/orders/{order_id}/refunds",
        "POST /api/v1/organizer/orders/{order_id}/refunds",
    }
)


def test_no_5xx_and_responses_match_the_schema(fuzz_server: GranianServer, fuzz_token: str) -> None:
    # (schemathesis' lazy pytest loader does not work with pytest 9, so the operations are
    # driven here; every failure is collected, then reported together.)
    schema = schemathesis.openapi.from_url(fuzz_server.base_url + "/schema/openapi.json")
    failures: list[str] = []
    statuses: dict[str, Counter[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        seen = statuses.setdefault(f"{operation.method.upper()} {operation.path}", Counter())
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz_operation(operation, mode, fuzz_server, fuzz_token, seen)
            except Unsatisfiable:
                continue  # no invalid input exists (an operation without parameters)
            except Exception as exc:
                failures.append(
                    f"{operation.method.upper()} {operation.path} [{mode.value}]: {exc}"
                )
    for name, seen in sorted(statuses.items()):
        print(f"{name}: {dict(sorted(seen.items()))}")
    # The run reached the handlers, not only the validators: most operations answered 2xx
    # at least once, and the catalog was really read.
    # The money operations act on a payment, an order or a provider's signed callback that
    # random input never names (no 2xx is possible there); they are fuzzed for 5xx and the
    # schema all the same, and left out of the ratio.
    reachable = {n: seen for n, seen in statuses.items() if n not in NEEDS_A_REAL_RESOURCE}
    answered = [name for name, seen in reachable.items() if any(200 <= c < 300 for c in seen)]
    assert len(reachable) >= 20 and len(answered) >= len(reachable) // 2, statuses
    assert statuses["GET /api/v1/events"][200] > 0
    assert statuses["GET /api/v1/events/{event_id}/seats"][200] > 0
    assert not failures, "\n\n".join(failures)


# -- path parameters and WebSocket query strings, from a table ---------------------------

_UUID = str(uuid.uuid4())
# As they go on the request line (percent-encoded where a URL needs it).
ODD_PATH_VALUES = [
    f"urn:uuid:{_UUID}",
    f"{{{_UUID}}}",
    f"%7B{_UUID}%7D",
    _UUID.replace("-", ""),
    _UUID.upper(),
    f"{_UUID}%0A",
    "a" * 300,
    "a/" * 200,
    "9" * 40,
    str(2**63),
    str(2**64),
    "-1",
    "0",
    "1.5",
    "1e3",
    "%D9%A1%D9%A2",  # Arabic-Indic digits
    "%C2%B2",  # superscript two
    "%EF%BC%91",  # full-width one
    "%00",
    "%ff",
    "%C0%AE%C0%AE",  # an overlong "..": not UTF-8
    "..",
    "%2e%2e",
    "..%2f..%2fpyproject.toml",
    "%20",
    "%25",
    "%3Cscript%3E",
]
ODD_SINCE = [
    "%C2%B2",
    "%C2%B2-0",
    "%D9%A1%D9%A2-%D9%A3",
    "%EF%BC%91-0",
    "99999999999999999999-0",
    str(2**64),
    f"1-{2**64}",
    "1-2-3",
    "-1",
    "1-",
    "%00",
    "a" * 5000,
    ",",
    "1-1,2-2",
]


def _fill(path_format: str, names: list[str], value: str) -> str:
    for name in names:
        path_format = path_format.replace("{" + name + "}", value)
    return path_format


def _raw_request(
    server: GranianServer, method: str, target: str, token: str
) -> tuple[int, str, bytes]:
    """``method target`` exactly as written (httpx would normalise "..", "%2e" and such);
    a body-taking method sends ``{}``."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {token}")
        body = b"{}" if method in ("POST", "PUT", "PATCH") else b""
        if body:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Idempotency-Key", secrets.token_hex(8))
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


def test_odd_path_parameters_on_every_route_are_4xx_problems(
    fuzz_server: GranianServer, fuzz_token: str, settings: Settings
) -> None:
    app = create_app(settings)  # its route table; the server runs the same app
    targets: list[tuple[str, str]] = []
    for route in app.routes:
        if isinstance(route, HTTPRoute) and route.path_parameters:
            names = list(route.path_parameters)
            for method in sorted(route.methods - {"OPTIONS", "HEAD"}):
                targets += [(method, _fill(route.path_format, names, v)) for v in ODD_PATH_VALUES]
        elif isinstance(route, ASGIRoute) and route.route_handler.is_mount:
            targets += [("GET", f"{route.path_format}/{v}") for v in ODD_PATH_VALUES]
    methods = {method for method, _ in targets}
    assert {"GET", "POST", "DELETE"} <= methods, methods
    assert any(t.startswith("/api/v1/orders/") for _, t in targets)
    assert any(t.startswith("/js/") for _, t in targets)
    docs = app.openapi_config.path if app.openapi_config else "/schema"
    failures = []
    for method, target in targets:
        status, content_type, body = _raw_request(fuzz_server, method, target, fuzz_token)
        # The docs UI answers its own 404s in HTML; everything else says what was wrong.
        problem = content_type.startswith("application/problem+json") and b'"detail"' in body
        if status >= 500 or (status >= 400 and not problem and not target.startswith(docs)):
            failures.append(f"{method} {target[:120]} -> {status} {content_type} {body[:120]!r}")
    assert not failures, "\n".join(failures)


async def _ws_outcome(url: str, timeout_s: float = 10.0) -> tuple[str, int]:
    """("http", status) if the upgrade was refused, ("close", code) once the server closed,
    ("open", 0) if the socket stayed open for ``timeout_s``."""
    try:
        ws = await websockets.connect(url, max_size=None)
    except websockets.InvalidStatus as exc:
        return "http", exc.response.status_code
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                frame = await ws.recv()
                if '"ping"' in str(frame):
                    await ws.send('{"type":"pong"}')
    except TimeoutError:
        return "open", 0
    except websockets.ConnectionClosed as exc:
        return "close", exc.rcvd.code if exc.rcvd is not None else 1006
    finally:
        await ws.close()


def _refused(outcome: tuple[str, int]) -> bool:
    """A 4xx upgrade refusal or an application close code (4000-4999)."""
    kind, code = outcome
    return (kind == "http" and 400 <= code < 500) or (kind == "close" and 4000 <= code < 5000)


async def test_odd_path_ids_and_query_strings_on_the_live_channels_are_4xxx_closes(
    fuzz_server: GranianServer, fuzz_token: str, settings: Settings
) -> None:
    ws_base = fuzz_server.base_url.replace("http://", "ws://")
    event_id: int = fuzz_server.event_id  # type: ignore[attr-defined]
    routes = [r for r in create_app(settings).routes if isinstance(r, WebSocketRoute)]
    assert len(routes) >= 2
    failures = []
    for route in routes:
        names = list(route.path_parameters)
        values = ODD_PATH_VALUES if names else []
        for value in values:
            outcome = await _ws_outcome(ws_base + _fill(route.path_format, names, value))
            if not _refused(outcome):
                failures.append(f"{route.path_format} with {value[:40]!r}: {outcome}")
        # A real event (or no path id) and an odd ?since=: 4400, whatever the channel.
        path = _fill(route.path_format, names, str(event_id))
        query = f"token={fuzz_token}&" if "/me/" in route.path_format else ""
        for since in ODD_SINCE:
            outcome = await _ws_outcome(f"{ws_base}{path}?{query}since={since}")
            if outcome != ("close", CLOSE_BAD_FRAME):
                failures.append(f"{path} since={since[:40]!r}: {outcome}")
    # An odd token on the user channel: 4401.
    for token in ("%C2%B2", "a" * 5000, "%00", "a.b.c", "e30.e30.e30"):
        outcome = await _ws_outcome(f"{ws_base}/api/v1/me/live?token={token}")
        if outcome != ("close", CLOSE_UNAUTHORIZED):
            failures.append(f"/api/v1/me/live token={token[:40]!r}: {outcome}")
    assert not failures, "\n".join(failures)
