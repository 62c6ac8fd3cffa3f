"""The catalog API over real HTTP: the API process (Granian) on the session database, the
full seed, and the real Redis Cluster inventory."""

from __future__ import annotations

import dataclasses
import gzip
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from api.catalog.repository import CatalogRepository
from api.catalog.service import Catalog
from core.errors import InvalidInput, NotFound
from core.events import plan_seat_map
from core.inventory import Inventory
from migrations.seed import seed_event
from tests.integration.catalog_seed import SeededCatalog, cluster_client, seeded_catalog

__all__ = ["seeded_catalog"]

pytestmark = pytest.mark.slow

CONCERTS = {
    "coldplay-music-of-the-spheres-tour",
    "bad-bunny-most-wanted-tour-2026",
    "karol-g-manana-sera-bonito-tour",
    "the-weeknd-after-hours-tour",
    "imagine-dragons-mercury-world-tour",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def api_url(seeded_catalog: SeededCatalog, services: dict[str, str]) -> Iterator[str]:
    """``python -m api`` (Granian) on a free loopback port, on the seeded session database."""
    port = _free_port()
    env = {
        **os.environ,
        **services,
        "TB_ENV": "test",
        "TB_DATABASE_URL": seeded_catalog.dsn,
        "TB_API_HOST": "127.0.0.1",
        "TB_API_PORT": str(port),
        "TB_API_WORKERS": "1",
        "TB_API_RATE_LIMIT_ENABLED": "false",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "api"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"API exited with {proc.returncode}: {err[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("API did not answer /healthz within 60s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


@pytest.fixture
async def inventory(services: dict[str, str]) -> AsyncIterator[Inventory]:
    client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await client.initialize()
    yield Inventory(client)
    await client.aclose()


def _problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://ticketbuster.dev/problems/")
    if field is not None:
        assert body.get("field") == field, body
    return body


async def _all_events(http: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/events", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    items: list[dict[str, Any]] = page["items"]
    return items


# -- categories -----------------------------------------------------------------------------


async def test_categories(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/categories")
    assert response.status_code == 200
    codes = [c["code"] for c in response.json()]
    assert codes == ["CONCERT", "SPORTS", "FESTIVAL", "THEATER", "CONFERENCE", "OTHER"]


# -- event list -----------------------------------------------------------------------------


async def test_list_has_every_event_in_start_order_with_availability(
    http: httpx.AsyncClient, seeded_catalog: SeededCatalog
) -> None:
    items = await _all_events(http)
    assert {e["id"] for e in items} == set(seeded_catalog.ids.values())
    starts = [datetime.fromisoformat(e["starts_at"]) for e in items]
    assert starts == sorted(starts)
    capacity = {seeded_catalog.ids[e.slug]: e.capacity for e in seeded_catalog.events}
    for event in items:
        assert [p["code"] for p in event["prices"]] == ["VIP", "PLATINUM", "GENERAL"]
        assert all(p["currency"] == "PEN" for p in event["prices"])
        # Fresh inventory (other tests may hold a seat or two).
        free = sum(p["available"] for p in event["prices"])
        assert capacity[event["id"]] - 10 <= free <= capacity[event["id"]]
    coldplay = next(e for e in items if e["title"].startswith("Coldplay"))
    assert coldplay["venue"] == {"name": "Estadio Nacional", "address": "Av. José Díaz s/n, Lima"}
    assert [p["price_minor"] for p in coldplay["prices"]] == [39998, 29999, 19999]


async def test_cursor_pages_cover_the_list_once(http: httpx.AsyncClient) -> None:
    everything = [e["id"] for e in await _all_events(http)]
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        response = await http.get("/api/v1/events", params=params)
        assert response.status_code == 200
        page = response.json()
        assert len(page["items"]) <= 7
        seen += [e["id"] for e in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    assert pages == 3


async def test_filter_by_category(http: httpx.AsyncClient, seeded_catalog: SeededCatalog) -> None:
    items = await _all_events(http, category="CONCERT")
    assert {e["id"] for e in items} == {seeded_catalog.ids[s] for s in CONCERTS}
    assert {e["category"] for e in items} == {"CONCERT"}


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("estadio nacional", 5),  # venue name
        ("ESTADIO NACIONAL", 5),  # case
        ("opera", 1),  # title
        ("manana sera", 1),  # accents ignored: "Mañana Será"
        ("perú", 1),
        ("%", 0),  # LIKE wildcards are literal
        ("no such show", 0),
    ],
)
async def test_text_search(http: httpx.AsyncClient, q: str, expected: int) -> None:
    assert len(await _all_events(http, q=q)) == expected


async def test_date_window(http: httpx.AsyncClient) -> None:
    everything = await _all_events(http)
    starts = sorted(datetime.fromisoformat(e["starts_at"]) for e in everything)
    after, before = starts[4], starts[10]
    items = await _all_events(
        http, starts_after=after.isoformat(), starts_before=before.isoformat()
    )
    got = [datetime.fromisoformat(e["starts_at"]) for e in items]
    assert got == [s for s in starts if after < s < before]
    assert len(got) == 5
    # Naive datetimes are UTC; a window in the past is empty.
    past = await _all_events(http, starts_before="2000-01-01T00:00:00")
    assert past == []


async def test_combined_filters(http: httpx.AsyncClient) -> None:
    items = await _all_events(http, category="SPORTS", q="monumental")
    assert sorted(e["title"] for e in items) == [
        "Copa América 2026: Semifinal",
        "Final Copa Libertadores 2026",
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "W1sxLDJdXQ"}, "cursor"),  # valid base64, wrong shape
        ({"category": "NOPE"}, "category"),
        ({"category": "concert"}, "category"),
        ({"cursor": "a+b/c="}, "cursor"),
        ({"starts_after": "yesterday"}, "starts_after"),
        ({"starts_before": "2030-13-45"}, "starts_before"),
        (
            {"starts_after": "2030-01-02T00:00:00Z", "starts_before": "2030-01-01T00:00:00Z"},
            "starts_before",
        ),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "x" * 101}, "q"),
    ],
)
async def test_bad_list_parameters_are_422_naming_the_field(
    http: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    _problem(await http.get("/api/v1/events", params=params), 422, field)


# -- one event ------------------------------------------------------------------------------


async def test_get_event(http: httpx.AsyncClient, seeded_catalog: SeededCatalog) -> None:
    event_id = seeded_catalog.ids["torneo-atp-250-lima"]
    response = await http.get(f"/api/v1/events/{event_id}")
    assert response.status_code == 200
    event = response.json()
    assert event["id"] == event_id
    assert event["title"] == "Torneo ATP 250 Lima"
    assert event["category"] == "SPORTS"
    assert event["capacity"] == 3500
    assert event["partitions"] == 1
    assert event["status"] == "published"
    assert [(p["code"], p["price_minor"]) for p in event["prices"]] == [
        ("VIP", 15000),
        ("PLATINUM", 11250),
        ("GENERAL", 7500),
    ]
    opens = datetime.fromisoformat(event["sale_opens_at"])
    assert opens <= datetime.now(UTC) < datetime.fromisoformat(event["sale_closes_at"])


async def test_every_seeded_event_is_on_sale(http: httpx.AsyncClient) -> None:
    """The seed opens every sale: each of the 20 events takes a hold (then released)."""
    token = await http.post("/api/v1/auth/dev-token", json={"sub": "seed-sale-check"})
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    events = await _all_events(http)
    assert len(events) == 20
    now = datetime.now(UTC)
    for event in events:
        assert event["status"] == "published"
        assert datetime.fromisoformat(event["sale_opens_at"]) <= now
        assert now < datetime.fromisoformat(event["sale_closes_at"])
        held = await http.post(
            f"/api/v1/events/{event['id']}/holds",
            json={"quantity": 1, "category": "GENERAL"},
            headers=headers,
        )
        assert held.status_code == 201, (event["id"], held.text)
        released = await http.delete(f"/api/v1/holds/{held.json()['hold_id']}", headers=headers)
        assert released.status_code == 204


@pytest.mark.parametrize("event_id", ["1", "999999999", str(2**63 - 1), str(2**63), "9" * 40])
async def test_unknown_event_is_404(http: httpx.AsyncClient, event_id: str) -> None:
    _problem(await http.get(f"/api/v1/events/{event_id}"), 404)
    _problem(await http.get(f"/api/v1/events/{event_id}/seats"), 404)


@pytest.mark.parametrize("event_id", ["0", "-3", "12abc", "1.5"])
async def test_impossible_event_id_is_4xx(http: httpx.AsyncClient, event_id: str) -> None:
    for path in (f"/api/v1/events/{event_id}", f"/api/v1/events/{event_id}/seats"):
        response = await http.get(path)
        assert response.status_code in (404, 422), response.text
        _problem(response, response.status_code)


# -- seat map -------------------------------------------------------------------------------


def _seat_status(seat_map: dict[str, Any], seat: str) -> str:
    section, row, number = seat.split("-")
    for sec in seat_map["sections"]:
        if sec["code"] != section:
            continue
        for run in sec["rows"]:
            if run["row"] == row and run["first"] <= int(number) < run["first"] + len(
                run["status"]
            ):
                status: str = run["status"][int(number) - run["first"]]
                return status
    raise AssertionError(f"{seat} not in the map")


async def test_seat_map_of_a_stadium(
    http: httpx.AsyncClient, seeded_catalog: SeededCatalog
) -> None:
    event_id = seeded_catalog.ids["copa-america-2026-semifinal"]
    response = await http.get(f"/api/v1/events/{event_id}/seats")
    assert response.status_code == 200
    assert response.headers["etag"].startswith('"')
    body = response.json()
    assert body["event_id"] == event_id
    assert body["version"]
    assert body["legend"] == {"f": "free", "h": "held", "p": "pending", "s": "sold"}
    assert [c["code"] for c in body["categories"]] == ["VIP", "PLATINUM", "GENERAL"]
    runs = [run for sec in body["sections"] for run in sec["rows"]]
    assert sum(len(r["status"]) for r in runs) == 80_000
    assert len(body["sections"]) == len(plan_seat_map(80_000))
    assert body["sections"][0]["code"] == "101"
    assert {r["category"] for r in body["sections"][0]["rows"]} == {"VIP"}
    # Compact: well under 3 bytes per seat.
    assert len(response.content) < 240_000


async def test_seat_map_etag_304_and_live_change(
    http: httpx.AsyncClient, seeded_catalog: SeededCatalog, inventory: Inventory
) -> None:
    event_id = seeded_catalog.ids["festival-de-cine-de-lima"]
    first = await http.get(f"/api/v1/events/{event_id}/seats")
    assert first.status_code == 200
    etag = first.headers["etag"]

    cached = await http.get(f"/api/v1/events/{event_id}/seats", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    weak = await http.get(
        f"/api/v1/events/{event_id}/seats", headers={"If-None-Match": f'"other", W/{etag}'}
    )
    assert weak.status_code == 304

    seat = "101-A-3"
    assert _seat_status(first.json(), seat) == "f"
    before = (await http.get(f"/api/v1/events/{event_id}")).json()
    hold = await inventory.hold(event_id, [seat], "catalog-test-buyer")
    try:
        changed = await http.get(
            f"/api/v1/events/{event_id}/seats", headers={"If-None-Match": etag}
        )
        assert changed.status_code == 200
        assert changed.headers["etag"] != etag
        assert changed.json()["version"] != first.json()["version"]
        assert _seat_status(changed.json(), seat) == "h"
        after = (await http.get(f"/api/v1/events/{event_id}")).json()
        vip_before = next(p for p in before["prices"] if p["code"] == "VIP")["available"]
        vip_after = next(p for p in after["prices"] if p["code"] == "VIP")["available"]
        assert vip_after == vip_before - 1
    finally:
        await inventory.release(hold.hold_id, "catalog-test-buyer")
    released = await http.get(f"/api/v1/events/{event_id}/seats")
    assert _seat_status(released.json(), seat) == "f"


async def test_seat_map_is_gzipped_for_clients_that_accept_it(
    http: httpx.AsyncClient, seeded_catalog: SeededCatalog
) -> None:
    event_id = seeded_catalog.ids["final-copa-libertadores-2026"]
    path = f"/api/v1/events/{event_id}/seats"
    plain = await http.get(path, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert "content-encoding" not in plain.headers
    async with http.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as zipped:
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.headers["vary"] == "Accept-Encoding"
        raw = b"".join([chunk async for chunk in zipped.aiter_raw()])
    assert len(raw) < len(plain.content) // 10
    assert gzip.decompress(raw) == plain.content
    # Either tag revalidates the other representation.
    for tag in (plain.headers["etag"], zipped.headers["etag"]):
        assert (await http.get(path, headers={"If-None-Match": tag})).status_code == 304


async def test_event_without_inventory(
    http: httpx.AsyncClient, seeded_catalog: SeededCatalog
) -> None:
    """In PostgreSQL but not (yet) in Redis: no availability, and no seat map (503) rather
    than a map of free seats that cannot be held."""
    base = seeded_catalog.events[0]
    event = dataclasses.replace(base, slug="not-loaded", title="Not loaded yet")
    conn = await asyncpg.connect(seeded_catalog.dsn)
    event_id = 0
    try:
        event_id, _ = await seed_event(conn, event, datetime.now(UTC))
        detail = await http.get(f"/api/v1/events/{event_id}")
        assert detail.status_code == 200
        assert {p["available"] for p in detail.json()["prices"]} == {None}
        body = _problem(await http.get(f"/api/v1/events/{event_id}/seats"), 503)
        assert "not loaded" in body["detail"]
    finally:
        await conn.execute("DELETE FROM catalog.events WHERE id = $1", event_id)
        await conn.close()


async def test_openapi_documents_the_catalog(http: httpx.AsyncClient) -> None:
    response = await http.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/v1/categories",
        "/api/v1/events",
        "/api/v1/events/{event_id}",
        "/api/v1/events/{event_id}/seats",
    ):
        assert "get" in paths[path], path


# -- price lookup for the hold path ---------------------------------------------------------


async def test_price_lookup_is_cached(seeded_catalog: SeededCatalog, inventory: Inventory) -> None:
    pool = await asyncpg.create_pool(seeded_catalog.dsn, min_size=1, max_size=2)
    catalog = Catalog(CatalogRepository(pool), inventory)
    event_id = seeded_catalog.ids["coldplay-music-of-the-spheres-tour"]
    try:
        assert await catalog.price_minor(event_id, "VIP") == 39998
        with pytest.raises(InvalidInput):
            await catalog.price_minor(event_id, "BALCONY")
        with pytest.raises(NotFound):
            await catalog.price_minor(1, "VIP")
    finally:
        await pool.close()
    # Warm entries answer without PostgreSQL (the pool is closed now).
    assert await catalog.price_minor(event_id, "GENERAL") == 19999


async def test_list_answers_when_starts_after_is_in_the_future(http: httpx.AsyncClient) -> None:
    soon = (datetime.now(UTC) + timedelta(days=3650)).isoformat()
    assert await _all_events(http, starts_after=soon) == []
