"""Hostile input on the cheap paths answers a 4xx problem+json (HTTP) or closes 4400
(WebSocket), never 500 or 1011.

One real Granian server (``python -m api``) on the session database, as ``make dev``
runs it. The inputs are the kind that pass one parser and trip the layer behind it:
ids that Python's UUID parser accepts and PostgreSQL refuses (``urn:uuid:``, braces),
file names longer than the file system allows, stream ids made of Unicode digits or
over 64 bits, NUL bytes and trailing newlines.
"""

from __future__ import annotations

import asyncio
import http.client
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from core.inventory import Inventory, partition_keys
from core.live import CLOSE_BAD_FRAME
from core.settings import HoldSettings, Settings
from tests.conftest import fresh_event_id
from tests.integration.api_servers import GranianServer, granian_server, with_overrides
from tests.integration.catalog_seed import cluster_client

PROBLEM = "application/problem+json"
UUID = str(uuid.uuid4())
# Forms of one UUID other than the canonical one, as they appear in the URL; uuid.UUID()
# accepts the first four, PostgreSQL refuses the first three.
ODD_UUIDS = [
    f"urn:uuid:{UUID}",
    f"{{{UUID}}}",
    f"%7B{UUID}%7D",
    UUID.replace("-", ""),
    f"{UUID}%0A",
    f"{UUID[:8]}-{UUID[9:]}",
]


@pytest.fixture(scope="module")
def server(pg_dsn: str, settings: Settings, tmp_path_factory: Any) -> Iterator[GranianServer]:
    s = with_overrides(settings, database={"url": pg_dsn}, api={"rate_limit_enabled": False})
    log = Path(tmp_path_factory.mktemp("hostile")) / "granian.log"
    with granian_server(s, log) as running:
        yield running


@pytest.fixture(scope="module")
def token(server: GranianServer) -> str:
    response = httpx.post(
        server.base_url + "/api/v1/auth/dev-token",
        json={"sub": f"hostile-{uuid.uuid4().hex[:8]}", "roles": ["buyer"]},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def _assert_problem(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, (response.request.url, response.text[:300])
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code and body["detail"], body
    return body


@pytest.mark.parametrize("odd", ODD_UUIDS)
@pytest.mark.parametrize(
    "template",
    [
        "/api/v1/orders/{}",
        "/api/v1/tickets/{}",
        "/api/v1/tickets/{}/qr.svg",
        "/api/v1/tickets/{}/qr.png",
    ],
)
def test_uuid_forms_other_than_the_canonical_one_are_404(
    server: GranianServer, token: str, template: str, odd: str
) -> None:
    path = template.format(odd)
    response = httpx.get(server.base_url + path, headers={"Authorization": f"Bearer {token}"})
    _assert_problem(response, 404)


def test_a_canonical_uuid_that_is_nobodys_is_404(server: GranianServer, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    for id_ in (UUID, UUID.upper()):  # upper-case hex is the same UUID
        for path in (f"/api/v1/orders/{id_}", f"/api/v1/tickets/{id_}"):
            _assert_problem(httpx.get(server.base_url + path, headers=auth), 404)


@pytest.mark.parametrize("folder", ["js", "css", "icons", "vendor", "i18n"])
@pytest.mark.parametrize(
    "name", ["a" * 300, "%C3%A9" * 200, "a/" * 2100, "%00x", "..%2f..%2fpyproject.toml"]
)
def test_static_names_the_file_system_refuses_are_404(
    server: GranianServer, folder: str, name: str
) -> None:
    response = httpx.get(f"{server.base_url}/{folder}/{name}")
    _assert_problem(response, 404)


async def _close_code(url: str, timeout_s: float = 10.0) -> tuple[int, str]:
    """The server's close code and reason; (0, "open") if it kept the socket open."""
    async with websockets.connect(url) as ws:
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    frame = await ws.recv()
                    if '"ping"' in str(frame):
                        await ws.send('{"type":"pong"}')
        except TimeoutError:
            return 0, "open"
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("unreachable")


BAD_SINCE = [
    "²",  # str.isdigit() says yes, int() says no
    "²-0",
    "١٢-٣",  # Arabic-Indic digits: \d matches them
    "99999999999999999999-0",  # over 2**64 - 1: Redis refuses the stream id
    "18446744073709551616",
    "1-2-3",
    "%00",
]


@pytest.fixture(scope="module")
async def live_event(services: dict[str, str]) -> AsyncIterator[int]:
    """An event that exists only in Redis (what the live channel looks for)."""
    client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await client.initialize()
    event_id = fresh_event_id()
    try:
        inventory = Inventory(client, HoldSettings())
        await inventory.load(event_id, 0, [("A-1-1", "GENERAL"), ("A-1-2", "GENERAL")], {})
        yield event_id
    finally:
        for key in partition_keys(event_id, 0):
            await client.delete(key)
        await client.aclose()


@pytest.mark.parametrize("since", BAD_SINCE)
async def test_a_bad_since_closes_4400_on_the_event_channel(
    server: GranianServer, live_event: int, since: str
) -> None:
    ws = server.base_url.replace("http://", "ws://")
    code, reason = await _close_code(f"{ws}/api/v1/events/{live_event}/live?since={since}")
    assert code == CLOSE_BAD_FRAME and "since" in reason, (code, reason)


@pytest.mark.parametrize("since", BAD_SINCE)
async def test_a_bad_since_closes_4400_on_the_user_channel(
    server: GranianServer, token: str, since: str
) -> None:
    ws = server.base_url.replace("http://", "ws://")
    code, reason = await _close_code(f"{ws}/api/v1/me/live?token={token}&since={since}")
    assert code == CLOSE_BAD_FRAME and "since" in reason, (code, reason)


@pytest.mark.parametrize(
    "query",
    [
        "q=%00",
        "q=a%00b",
        "category=CONCERT%0A",
        "cursor=AAAA%0A",
        "starts_after=0001-01-01T00:00:00",
        "starts_after=0001-01-01T00:00:00%2B14:00",
        "starts_before=9999-12-31T23:59:59-14:00",
        "starts_after=%C2%B2",
        "limit=%C2%B2",
        "limit=%D9%A1",
        "limit=99999999999999999999999",
    ],
)
def test_odd_event_search_queries_are_not_server_errors(server: GranianServer, query: str) -> None:
    response = httpx.get(f"{server.base_url}/api/v1/events?{query}")
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        _assert_problem(response, response.status_code)


def test_a_content_length_of_thousands_of_digits_is_a_4xx(server: GranianServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("POST", "/api/v1/auth/dev-token", skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", "0" * 5000 + "2")
        conn.endheaders(b"{}")
        response = conn.getresponse()
        status = response.status
    finally:
        conn.close()
    assert 400 <= status < 500, status
