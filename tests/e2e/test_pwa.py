"""The PWA in a real browser against the whole system.

Debian's Chromium (``/usr/bin/chromium``, installed by ``.ci/install-browser.sh``)
driven by Playwright, headless, no browser download. The API runs as a real
Granian process on a free loopback port against the session's database, the
Redis Cluster and the Kafka broker; the workers (persister, ticket issuer,
notifier) run as their own processes when their modules exist, so orders
really go pending -> confirmed.

Screenshots of every step go to ``test-artifacts/pwa/`` (git-ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import msgspec
import pytest

from core.settings import Settings
from tests.integration.api_servers import free_port, granian_server, settings_env

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
ARTIFACTS = REPO / "test-artifacts" / "pwa"
CHROMIUM = os.environ.get("TB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}
TABLET = {"width": 820, "height": 1180}
DESKTOP = {"width": 1366, "height": 900}
# Two small venues of the seed (quick, enough seats for every test) and one stadium.
STADIUM = "final-copa-libertadores-2026"  # 80,000 seats
PWA_EVENTS = ("stand-up-comedy-noche-de-risas", "obra-de-teatro-el-avaro-de-moliere", STADIUM)
# Worker modules started next to the API when they exist: module -> port setting.
WORKER_MODULES = {
    "workers.persister": "TB_WORKERS_PERSISTER_PORT",
    "workers.issuer": "TB_WORKERS_ISSUER_PORT",
    "workers.ticket_issuer": "TB_WORKERS_ISSUER_PORT",
    "workers.notifier": "TB_WORKERS_NOTIFIER_PORT",
    "workers.expirer": "TB_WORKERS_EXPIRER_PORT",
}
CONFIRM_WORKERS = ("workers.persister",)
CONFIRM_TIMEOUT_S = 45.0


# --------------------------------------------------------------------------- the system


@dataclass
class System:
    base_url: str
    event_ids: dict[str, int]
    workers: list[str]
    artifacts: Path

    @property
    def confirms(self) -> bool:
        """True when the workers that turn pending orders into confirmed ones run."""
        return all(m in self.workers for m in CONFIRM_WORKERS)

    @property
    def issues_tickets(self) -> bool:
        return any(m in self.workers for m in ("workers.issuer", "workers.ticket_issuer"))


def _ensure_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    subprocess.run([str(REPO / ".ci" / "install-browser.sh")], check=True)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    _ensure_chromium()
    return CHROMIUM


@pytest.fixture(scope="session")
async def pwa_events(pg_dsn: str, services: dict[str, str]) -> AsyncIterator[dict[str, int]]:
    """The small seed events in the session database and in Redis."""
    from core.inventory import Inventory, partition_keys
    from migrations.seed import read_csv, seed
    from tests.integration.catalog_seed import cluster_client, restart_event_ids

    client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await client.initialize()
    events = [e for e in read_csv() if e.slug in PWA_EVENTS]
    assert len(events) == len(PWA_EVENTS), "seed CSV changed: pick other small events"
    import asyncpg

    conn = await asyncpg.connect(pg_dsn)
    try:
        known = await conn.fetch(
            "SELECT slug, id FROM catalog.events WHERE slug = ANY($1::text[])", list(PWA_EVENTS)
        )
    finally:
        await conn.close()
    if not known:
        await restart_event_ids(pg_dsn)
    report = await seed(pg_dsn, Inventory(client), events)
    ids = {slug: event_id for event_id, slug, _ in report.created}
    ids.update({row["slug"]: row["id"] for row in known})
    yield ids
    for event_id in ids.values():
        for key in partition_keys(event_id, 0):
            await client.delete(key)
    await client.aclose()


class _Worker:
    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


@contextlib.contextmanager
def running_system(
    settings: Settings,
    pg_dsn: str,
    events: dict[str, int],
    topics: str = "pwa.",
    workers: dict[str, str] = WORKER_MODULES,
    port: int | None = None,
) -> Iterator[System]:
    """API (Granian) + those of ``workers`` that exist, on the session's database and on
    topics of their own (``topics`` is added to the prefix)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    run_dir = ARTIFACTS / f"run-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir()
    key_path = run_dir / "ticket-signing-key.pem"
    # Own topics: other suites may run their own workers in this session, and a
    # ticket signed by another issuer's key would not verify against our JWKS.
    test_settings = msgspec.structs.replace(
        settings,
        database=msgspec.structs.replace(settings.database, url=pg_dsn),
        kafka=msgspec.structs.replace(
            settings.kafka, topic_prefix=f"{settings.kafka.topic_prefix}{topics}"
        ),
    )
    extra = {"TB_TICKETS_SIGNING_KEY_PATH": str(key_path)}
    port = port or free_port()
    extra.update(
        {
            "TB_AUTH_ISSUER": f"http://127.0.0.1:{port}/dev-issuer",
            "TB_API_CORS_ORIGINS": f"http://127.0.0.1:{port}",
            # A browser test is one user clicking; keep the per-IP limit out of the way.
            "TB_API_RATE_LIMIT_PER_IP": "100000",
            "TB_API_RATE_LIMIT_PER_USER": "100000",
        }
    )
    running: list[_Worker] = []
    started: list[str] = []
    with granian_server(test_settings, run_dir / "api.log", extra, port=port) as api:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TB_")}
        env.update(settings_env(test_settings))
        env.update(extra)
        for module, port_var in workers.items():
            if importlib.util.find_spec(module) is None or port_var in {
                v for m, v in workers.items() if m in started
            }:
                continue
            worker_env = dict(env)
            worker_env[port_var] = str(free_port())
            running.append(_Worker(module, worker_env, run_dir / f"{module}.log"))
            started.append(module)
        time.sleep(1.0 if running else 0)
        for worker in running:
            if worker.proc.poll() is not None:
                raise RuntimeError(
                    f"{worker.module} exited: "
                    f"{(run_dir / f'{worker.module}.log').read_text()[-3000:]}"
                )
        try:
            yield System(api.base_url, events, started, run_dir)
        finally:
            for worker in running:
                worker.stop()
    with contextlib.suppress(OSError):
        key_path.unlink()


@pytest.fixture(scope="session")
def pwa_system(
    settings: Settings, pg_dsn: str, pwa_events: dict[str, int], chromium_path: str
) -> Iterator[System]:
    """API (Granian) + the workers that exist, on the session's database and topics."""
    with running_system(settings, pg_dsn, pwa_events) as system:
        yield system


# --------------------------------------------------------------------------- API helpers


def dev_token(system: System, sub: str, roles: list[str] | None = None) -> str:
    res = httpx.post(
        f"{system.base_url}/api/v1/auth/dev-token",
        json={"sub": sub, "roles": roles or ["buyer"]},
        timeout=10,
    )
    res.raise_for_status()
    return str(res.json()["access_token"])


def api_get(system: System, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{system.base_url}/api/v1{path}", headers=headers, timeout=10)


def my_orders(system: System, token: str) -> list[dict[str, Any]]:
    res = api_get(system, "/me/orders", token)
    res.raise_for_status()
    body = res.json()
    items = body if isinstance(body, list) else body.get("items", body.get("orders", []))
    return list(items)


def buy_via_api(system: System, event_id: int, token: str, quantity: int = 1) -> list[str]:
    """Hold, order and wait until the tickets are issued; returns their signed tokens."""
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{system.base_url}/api/v1", headers=auth, timeout=10) as api:
        hold = api.post(
            f"/events/{event_id}/holds", json={"quantity": quantity, "category": "GENERAL"}
        )
        assert hold.status_code == 201, hold.text
        order = api.post(
            "/orders",
            json={"hold_id": hold.json()["hold_id"]},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert order.status_code == 202, order.text
        order_id = order.json()["order_id"]
        deadline = time.monotonic() + CONFIRM_TIMEOUT_S
        tokens: list[str] = []
        while time.monotonic() < deadline:
            view = api.get(f"/orders/{order_id}").json()
            assert view["status"] != "rejected", view
            tickets = view.get("tickets") or []
            if view["status"] == "confirmed" and tickets:
                tokens = [
                    api.get(f"/tickets/{t['ticket_id']}").json().get("token") for t in tickets
                ]
                if all(tokens):
                    return [str(t) for t in tokens]
            time.sleep(0.3)
        raise AssertionError(f"order {order_id} not confirmed with issued tickets: {tokens}")


def new_buyer() -> str:
    return f"pwa-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- browser


@dataclass
class Page:
    """A Playwright page that records console errors and takes named screenshots."""

    page: Any
    context: Any
    name: str
    system: System
    errors: list[str] = field(default_factory=list)
    shots: int = 0

    async def shot(self, label: str, full_page: bool = False) -> Path:
        self.shots += 1
        path = ARTIFACTS / f"{self.name}-{self.shots:02d}-{label}.png"
        await self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def console_errors(self, allow: tuple[str, ...] = ()) -> list[str]:
        return [e for e in self.errors if not any(re.search(a, e) for a in allow)]


@pytest.fixture(scope="session")
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@contextlib.asynccontextmanager
async def open_page(
    browser: Any,
    system: System,
    name: str,
    viewport: dict[str, int] = PHONE,
    locale: str = "es-PE",
) -> AsyncIterator[Page]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = await browser.new_context(
        viewport=viewport,
        locale=locale,
        timezone_id="America/Lima",
        base_url=system.base_url,
        is_mobile=viewport["width"] < 600,
        has_touch=viewport["width"] < 600,
        service_workers="allow",
    )
    page = await context.new_page()
    wrapped = Page(page, context, name, system)

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            wrapped.errors.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: wrapped.errors.append(f"pageerror: {exc}"))
    try:
        yield wrapped
    except BaseException:
        # What the page looked like when the test gave up, and what it said.
        with contextlib.suppress(Exception):
            await wrapped.shot("FAILED", full_page=True)
        with contextlib.suppress(Exception):
            toasts = await page.locator("#toasts").inner_text()
            print(f"{name}: url={page.url} toasts={toasts!r} console={wrapped.errors!r}")
        raise
    finally:
        await context.close()


async def login(p: Page, sub: str, roles: tuple[str, ...] = ("buyer",)) -> None:
    await p.page.goto("/#/login")
    await p.page.fill("#login-name", sub)
    for role in ("scanner", "admin"):
        box = p.page.locator(f"input[name=roles][value={role}]")
        if role in roles:
            await box.check()
    await p.page.click("#login-submit")
    await p.page.wait_for_function("() => !!localStorage.getItem('tb.token')")


async def wait_service_worker(p: Page) -> None:
    await p.page.wait_for_function(
        "async () => !!(await navigator.serviceWorker.getRegistration())?.active", timeout=15000
    )
    # Controlled by it (clients.claim) so offline reloads are served from its cache.
    await p.page.wait_for_function("() => !!navigator.serviceWorker.controller", timeout=15000)


async def open_first_section(p: Page, event_id: int) -> None:
    await p.page.goto(f"/#/events/{event_id}")
    await p.page.wait_for_selector(".section-tile, .seat-canvas-wrap")
    if await p.page.locator(".seat-canvas-wrap").count() == 0:
        await p.page.locator(".section-tile:not([data-full=true])").first.click()
    await p.page.wait_for_selector(".seat-canvas-wrap")


async def cursor_seat(p: Page) -> tuple[str, str]:
    wrap = p.page.locator(".seat-canvas-wrap")
    return (
        await wrap.get_attribute("data-seat") or "",
        await wrap.get_attribute("data-status") or "",
    )


async def pick_seats_with_keyboard(p: Page, n: int) -> list[str]:
    """Focus the map, pick n free seats with Enter / ArrowRight; returns their ids."""
    wrap = p.page.locator(".seat-canvas-wrap")
    await wrap.focus()
    picked: list[str] = []
    for _ in range(200):
        seat, status = await cursor_seat(p)
        if status == "free":
            await p.page.keyboard.press("Enter")
            picked.append(seat)
            if len(picked) == n:
                break
        await p.page.keyboard.press("ArrowRight")
    assert len(picked) == n
    return picked


async def hold_selected(p: Page) -> str:
    await p.page.click("#hold-submit")
    await p.page.wait_for_url(re.compile(r"#/hold/"))
    await p.page.wait_for_selector("#hold-countdown")
    await p.page.wait_for_function(
        "() => /\\d+:\\d\\d/.test(document.querySelector('#hold-countdown').textContent)"
    )
    return unquote(p.page.url.split("#/hold/")[1])


async def hold_best(p: Page, quantity: int) -> None:
    """Best-available hold from the event page; fails with the API's answer if refused."""
    await p.page.wait_for_selector("#best-submit:not([disabled])")
    await p.page.select_option("#best-qty", str(quantity))
    async with p.page.expect_response(
        lambda r: r.url.endswith("/holds") and r.request.method == "POST", timeout=20000
    ) as answer:
        await p.page.click("#best-submit")
    response = await answer.value
    assert response.status == 201, f"{response.status} {await response.text()}"
    await p.page.wait_for_url(re.compile(r"#/hold/"))


async def wait_confirmed(p: Page) -> str:
    await p.page.wait_for_url(re.compile(r"#/orders/"), timeout=15000)
    order_id = p.page.url.split("#/orders/")[1]
    await p.page.wait_for_selector(
        "#order-status[data-status=confirmed]", timeout=CONFIRM_TIMEOUT_S * 1000
    )
    return order_id


# --------------------------------------------------------------------------- tests: serving


def test_shell_is_served_with_revalidation_headers(pwa_system: System) -> None:
    base = pwa_system.base_url
    with httpx.Client(base_url=base, timeout=10) as client:
        index = client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert index.headers["cache-control"] == "no-cache"
        etag = index.headers["etag"]
        again = client.get("/", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""

        script = client.get("/js/model.js", headers={"Accept-Encoding": "gzip"})
        assert script.headers["content-encoding"] == "gzip"
        assert script.headers["content-type"].startswith("text/javascript")
        assert (
            client.get(
                "/js/model.js", headers={"If-None-Match": script.headers["etag"]}
            ).status_code
            == 304
        )

        sw = client.get("/sw.js")
        assert sw.status_code == 200 and "javascript" in sw.headers["content-type"]
        manifest = client.get("/manifest.webmanifest")
        assert manifest.headers["content-type"] == "application/manifest+json"
        icons = manifest.json()["icons"]
        assert {"192x192", "512x512"} <= {i["sizes"] for i in icons}
        for icon in icons:
            res = client.get(icon["src"])
            assert res.status_code == 200, icon["src"]
        assert "max-age" in client.get("/icons/icon-192.png").headers["cache-control"]
        # The API keeps its own routes and its problem+json 404s.
        assert client.get("/api/v1/events").headers["content-type"].startswith("application/json")
        missing = client.get("/api/v1/no-such-thing")
        assert missing.status_code == 404 and "<html" not in missing.text.lower()
        assert client.get("/js/../pyproject.toml").status_code == 404
        config = client.get("/config.json").json()
        assert config["auth_mode"] == "dev"


# --------------------------------------------------------------------------- tests: browser


async def test_every_module_loads(browser: Any, pwa_system: System) -> None:
    """Each ES module parses and links (most are loaded lazily, per screen)."""
    files = [f for f in WEB.glob("**/*.js") if f.name != "sw.js"]
    modules = sorted("/" + str(f.relative_to(WEB)) for f in files)
    async with open_page(browser, pwa_system, "modules", DESKTOP) as p:
        await p.page.goto("/")
        await p.page.wait_for_selector(".event-card")
        failures = await p.page.evaluate(
            """async (mods) => {
                const bad = [];
                for (const m of mods) {
                    try { await import(m); } catch (e) { bad.push(`${m}: ${e}`); }
                }
                return bad;
            }""",
            modules,
        )
        assert failures == []
        assert p.console_errors() == []


async def test_catalog_in_spanish_and_english(browser: Any, pwa_system: System) -> None:
    async with open_page(browser, pwa_system, "catalog-es", PHONE, "es-PE") as p:
        await p.page.goto("/")
        await p.page.wait_for_selector(".event-card")
        assert await p.page.locator("html").get_attribute("lang") == "es"
        assert "Mis entradas" in await p.page.locator(".tabbar").inner_text()
        card = p.page.locator(".event-card").first
        assert re.search(r"Quedan [\d.,\s]+ asientos", await card.inner_text())
        await p.shot("catalog")
        # Search narrows the list.
        await p.page.fill("#catalog-q", "Avaro")
        await p.page.wait_for_function(
            "() => document.querySelectorAll('.event-card').length === 1"
            " && document.querySelector('.event-card').textContent.includes('Avaro')"
        )
        # Switch to English without a reload.
        await p.page.select_option("#lang-select", "en")
        await p.page.wait_for_function("() => document.documentElement.lang === 'en'")
        await p.page.wait_for_selector(".tabbar >> text=My tickets")
        await p.shot("catalog-en")
        assert p.console_errors() == []

    async with open_page(browser, pwa_system, "catalog-en", DESKTOP, "en-US") as p:
        await p.page.goto("/")
        await p.page.wait_for_selector(".event-card")
        assert await p.page.locator("html").get_attribute("lang") == "en"
        await p.page.locator(".chip", has_text="Theatre").click()
        await p.page.wait_for_function(
            "() => [...document.querySelectorAll('.event-card .cat-badge')]"
            ".every(b => b.textContent === 'Theatre')"
        )
        await p.shot("catalog-desktop", full_page=True)
        assert p.console_errors() == []


async def test_installable_with_manifest_and_service_worker(
    chromium_path: str, pwa_system: System, tmp_path: Path
) -> None:
    """Chromium's own installability check finds nothing missing.

    A persistent profile, because Playwright's ordinary contexts are incognito ones,
    where Chromium reports only "in-incognito" and checks nothing else.
    """
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium_path,
            headless=True,
            args=CHROMIUM_ARGS,
            base_url=pwa_system.base_url,
            locale="en-US",
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            await page.goto("/")
            await page.wait_for_selector(".event-card")
            await page.wait_for_function("() => !!navigator.serviceWorker.controller")
            cdp = await context.new_cdp_session(page)
            manifest = await cdp.send("Page.getAppManifest")
            assert not manifest.get("errors"), manifest.get("errors")
            installability = await cdp.send("Page.getInstallabilityErrors")
            assert installability["installabilityErrors"] == [], installability
        finally:
            await context.close()


@pytest.mark.parametrize("viewport", ["phone", "tablet", "desktop"])
async def test_full_purchase_flow(browser: Any, pwa_system: System, viewport: str) -> None:
    size = {"phone": PHONE, "tablet": TABLET, "desktop": DESKTOP}[viewport]
    event_id = pwa_system.event_ids["stand-up-comedy-noche-de-risas"]
    buyer = new_buyer()
    async with open_page(browser, pwa_system, f"purchase-{viewport}", size) as p:
        await login(p, buyer)
        await p.page.goto("/")
        await p.page.wait_for_selector(f".event-card[data-event-id='{event_id}']")
        await p.shot("catalog")
        await p.page.click(f".event-card[data-event-id='{event_id}']")
        await p.page.wait_for_selector(".section-tile")
        await p.shot("sections", full_page=True)
        await p.page.locator(".section-tile").nth(1).click()
        await p.page.wait_for_selector(".seat-canvas-wrap")
        seats = await pick_seats_with_keyboard(p, 2)
        assert "2 asientos" in await p.page.locator(".selection-bar .sel-seats").inner_text()
        await p.shot("seats-picked", full_page=True)

        await hold_selected(p)
        for seat in seats:
            assert await p.page.locator(f".seat-list li[data-seat='{seat}']").count() == 1
        assert "S/" in await p.page.locator("#hold-total").inner_text()
        await p.shot("hold")

        await p.page.click("#buy")
        await p.page.wait_for_url(re.compile(r"#/orders/"), timeout=15000)
        await p.page.wait_for_selector("#order-status")
        await p.shot("order-pending")
        token = await p.page.evaluate("() => localStorage.getItem('tb.token')")
        orders = my_orders(pwa_system, token)
        assert len(orders) == 1
        if not pwa_system.confirms:
            pytest.skip("the persister is not available yet: stopped at pending")
        await wait_confirmed(p)
        # The in-app notification of the confirmation.
        await p.page.wait_for_selector(".toast.ok:has-text('Compra confirmada')")
        await p.shot("order-confirmed")

        await p.page.click("#see-tickets")
        await p.page.wait_for_selector("#ticket-list .ticket")
        await p.page.wait_for_function(
            "() => document.querySelectorAll('#ticket-list .ticket').length === 2"
        )
        if pwa_system.issues_tickets:
            await p.page.wait_for_selector("#ticket-list .ticket-qr img")
        await p.shot("tickets", full_page=True)
        assert p.console_errors() == []


async def test_live_hold_by_someone_else_greys_the_seat(browser: Any, pwa_system: System) -> None:
    event_id = pwa_system.event_ids["obra-de-teatro-el-avaro-de-moliere"]
    async with open_page(browser, pwa_system, "live", DESKTOP) as p:
        await open_first_section(p, event_id)
        await p.page.wait_for_selector(".pill.ok:has-text('En vivo')")
        await p.page.locator(".seat-canvas-wrap").focus()
        seat, status = await cursor_seat(p)
        assert status == "free"
        before = await p.page.locator(".legend").inner_text()
        await p.shot("before")

        other = dev_token(pwa_system, new_buyer())
        res = httpx.post(
            f"{pwa_system.base_url}/api/v1/events/{event_id}/holds",
            json={"seats": [seat]},
            headers={"Authorization": f"Bearer {other}"},
            timeout=10,
        )
        assert res.status_code == 201, res.text

        await p.page.wait_for_function(
            "() => document.querySelector('.seat-canvas-wrap').dataset.status === 'taken'",
            timeout=10000,
        )
        await p.page.wait_for_function(
            "before => document.querySelector('.legend').innerText !== before", arg=before
        )
        await p.shot("after")
        # Picking it now is refused on the spot, without a round trip.
        await p.page.keyboard.press("Enter")
        assert (await cursor_seat(p))[1] == "taken"
        assert p.console_errors() == []


async def test_stadium_map_stays_small_in_the_page(browser: Any, pwa_system: System) -> None:
    """80,000 seats: a drawing of 80 sections, then one section on a canvas; the page
    never holds a node per seat."""
    event_id = pwa_system.event_ids[STADIUM]
    async with open_page(browser, pwa_system, "stadium", DESKTOP) as p:
        await p.page.goto(f"/#/events/{event_id}")
        await p.page.wait_for_selector(".venue-map .venue-sec")
        sections = await p.page.locator(".venue-map .venue-sec").count()
        assert sections == 80
        legend = await p.page.locator(".legend").inner_text()
        assert "48,000" in legend or "48.000" in legend or "48 000" in legend, legend
        await p.shot("overview")
        # Keyboard: into the drawing, one step outward, open it.
        await p.page.locator(".venue-sec[tabindex='0']").focus()
        await p.page.keyboard.press("ArrowDown")
        await p.page.keyboard.press("Enter")
        await p.page.wait_for_selector(".seat-canvas-wrap")
        assert "Platinum" in await p.page.locator("#map-title").inner_text()
        await p.page.locator(".seat-canvas-wrap").focus()
        await p.page.keyboard.press("ArrowDown")
        seat, status = await cursor_seat(p)
        assert re.fullmatch(r"2\d\d-B-\d+", seat) and status == "free", seat
        await p.shot("section")
        nodes = await p.page.evaluate("() => document.getElementsByTagName('*').length")
        assert nodes < 3000, nodes
        # Back to the overview with the browser's back button.
        await p.page.go_back()
        await p.page.wait_for_selector(".venue-map")
        assert p.console_errors() == []


NAMED_ROLES = {"button", "link", "textbox", "searchbox", "combobox", "checkbox", "application"}


async def unnamed_controls(p: Page) -> list[str]:
    """Controls in Chromium's accessibility tree that have no accessible name."""
    cdp = await p.context.new_cdp_session(p.page)
    tree = await cdp.send("Accessibility.getFullAXTree")
    await cdp.detach()
    bad = []
    for node in tree["nodes"]:
        role = (node.get("role") or {}).get("value")
        if node.get("ignored") or role not in NAMED_ROLES:
            continue
        if not str((node.get("name") or {}).get("value", "")).strip():
            bad.append(f"{role} #{node.get('backendDOMNodeId')}")
    return bad


async def test_every_control_has_an_accessible_name(browser: Any, pwa_system: System) -> None:
    event_id = pwa_system.event_ids["stand-up-comedy-noche-de-risas"]
    async with open_page(browser, pwa_system, "a11y", PHONE) as p:
        screens = {
            "/": ".event-card",
            f"/#/events/{event_id}": ".venue-map",
            f"/#/events/{event_id}/sections/201": ".seat-canvas-wrap",
            "/#/login": "#login-name",
        }
        for url, ready in screens.items():
            await p.page.goto(url)
            await p.page.wait_for_selector(ready)
            assert await unnamed_controls(p) == [], url
        await login(p, new_buyer(), roles=("scanner",))
        for url, ready in {"/#/tickets": "#notify-btn", "/#/scan": "#scan-token"}.items():
            await p.page.goto(url)
            await p.page.wait_for_selector(ready)
            assert await unnamed_controls(p) == [], url
        assert p.console_errors() == []


@pytest.fixture(scope="module")
def short_hold_base_url(
    settings: Settings, pg_dsn: str, pwa_events: dict[str, int], pwa_system: System
) -> Iterator[str]:
    """A second API whose holds last 12 s and warn 8 s before they end."""
    test_settings = msgspec.structs.replace(
        settings, database=msgspec.structs.replace(settings.database, url=pg_dsn)
    )
    port = free_port()
    extra = {
        "TB_HOLDS_TTL_S": "12",
        "TB_LIVE_HOLD_WARNING_S": "8",
        "TB_AUTH_ISSUER": f"http://127.0.0.1:{port}/dev-issuer",
        "TB_API_CORS_ORIGINS": f"http://127.0.0.1:{port}",
    }
    with granian_server(
        test_settings, pwa_system.artifacts / "api-short-holds.log", extra, port=port
    ) as api:
        yield api.base_url


async def test_hold_warns_before_it_expires(
    browser: Any, pwa_system: System, short_hold_base_url: str
) -> None:
    short = System(short_hold_base_url, pwa_system.event_ids, [], pwa_system.artifacts)
    event_id = short.event_ids["obra-de-teatro-el-avaro-de-moliere"]
    async with open_page(browser, short, "hold-expiry", PHONE) as p:
        await login(p, new_buyer())
        await p.page.goto(f"/#/events/{event_id}")
        await hold_best(p, 1)
        # The warning comes over the buyer's WebSocket channel (watch_hold).
        await p.page.wait_for_selector(".toast.warn:has-text('Tu reserva vence en')", timeout=15000)
        await p.shot("warning")
        await p.page.wait_for_selector(".error-box:has-text('venció')", timeout=20000)
        assert await p.page.locator("#buy").is_disabled()
        await p.shot("expired")
        assert p.console_errors() == []


async def test_hold_extend_and_release(browser: Any, pwa_system: System) -> None:
    event_id = pwa_system.event_ids["obra-de-teatro-el-avaro-de-moliere"]
    async with open_page(browser, pwa_system, "hold", PHONE) as p:
        await login(p, new_buyer())
        await p.page.goto(f"/#/events/{event_id}")
        await hold_best(p, 3)
        await p.page.wait_for_selector(".seat-list li >> nth=2")
        await p.page.click("#extend")
        await p.page.wait_for_selector(".toast.ok")
        await p.shot("hold-best-3")
        await p.page.click("#release")
        await p.page.wait_for_url(re.compile(rf"#/events/{event_id}$"))
        assert p.console_errors() == []


async def test_offline_tickets_survive_a_reload(browser: Any, pwa_system: System) -> None:
    if not pwa_system.confirms:
        pytest.skip("needs the persister to confirm an order")
    event_id = pwa_system.event_ids["stand-up-comedy-noche-de-risas"]
    async with open_page(browser, pwa_system, "offline-tickets", PHONE) as p:
        await login(p, new_buyer())
        await wait_service_worker(p)
        await open_first_section(p, event_id)
        await pick_seats_with_keyboard(p, 1)
        await hold_selected(p)
        await p.page.click("#buy")
        await wait_confirmed(p)
        await p.page.goto("/#/tickets")
        await p.page.wait_for_selector("#ticket-list .ticket")
        if pwa_system.issues_tickets:
            await p.page.wait_for_selector("#ticket-list .ticket-qr img")

        await p.context.set_offline(True)
        await p.page.reload()
        await p.page.wait_for_selector("#offline-banner:not([hidden])")
        await p.page.wait_for_selector("#ticket-list .ticket")
        if pwa_system.issues_tickets:
            await p.page.wait_for_selector("#ticket-list .ticket-qr img")
        await p.shot("offline-tickets")
        # The last catalog is there too, from the service worker's cache.
        await p.page.goto("/#/")
        await p.page.wait_for_selector(".event-card")
        await p.page.wait_for_selector(".notice:has-text('Catálogo guardado')")
        await p.shot("offline-catalog")
        await p.context.set_offline(False)
        # Offline, the browser logs the failed network requests; nothing else.
        assert p.console_errors(allow=(r"net::ERR_INTERNET_DISCONNECTED", r"Failed to fetch")) == []


async def test_offline_purchase_syncs_into_exactly_one_order(
    browser: Any, pwa_system: System
) -> None:
    event_id = pwa_system.event_ids["obra-de-teatro-el-avaro-de-moliere"]
    async with open_page(browser, pwa_system, "offline-buy", PHONE) as p:
        await login(p, new_buyer())
        await wait_service_worker(p)
        await open_first_section(p, event_id)
        await pick_seats_with_keyboard(p, 1)
        await hold_selected(p)
        token = await p.page.evaluate("() => localStorage.getItem('tb.token')")

        await p.context.set_offline(True)
        await p.page.click("#buy")
        await p.page.wait_for_selector("#order-queued")
        await p.shot("queued")
        # Reload while offline: the queued purchase is still there (IndexedDB).
        await p.page.reload()
        await p.page.wait_for_selector("#order-queued")
        assert my_orders(pwa_system, token) == []

        await p.context.set_offline(False)
        await p.page.wait_for_url(re.compile(r"#/orders/"), timeout=20000)
        await p.page.wait_for_selector("#order-status")
        await p.shot("synced")
        # Nudge the outbox again (a second 'online' and a tab refocus): still one order.
        await p.page.evaluate("() => window.dispatchEvent(new Event('online'))")
        await asyncio.sleep(1.0)
        orders = my_orders(pwa_system, token)
        assert len(orders) == 1, orders
        if pwa_system.confirms:
            await wait_confirmed(p)
            await p.shot("synced-confirmed")
        assert p.console_errors(allow=(r"net::ERR_INTERNET_DISCONNECTED", r"Failed to fetch")) == []


async def test_lost_answer_is_retried_with_the_same_key_into_one_order(
    browser: Any, pwa_system: System
) -> None:
    """The order reaches the API but its answer is lost: the retry carries the same
    Idempotency-Key and gets the same order back."""
    event_id = pwa_system.event_ids["obra-de-teatro-el-avaro-de-moliere"]
    async with open_page(browser, pwa_system, "lost-answer", PHONE) as p:
        await login(p, new_buyer())
        await open_first_section(p, event_id)
        await pick_seats_with_keyboard(p, 1)
        await hold_selected(p)
        token = await p.page.evaluate("() => localStorage.getItem('tb.token')")
        keys: list[str] = []
        answers: list[int] = []

        async def lose_first_answer(route: Any) -> None:
            keys.append(route.request.headers.get("idempotency-key", ""))
            response = await route.fetch()  # the API does receive it...
            answers.append(response.status)
            if len(keys) == 1:
                await route.abort("connectionreset")  # ...but the phone never hears back
            else:
                await route.fulfill(response=response)

        await p.context.route("**/api/v1/orders", lose_first_answer)
        await p.page.click("#buy")
        await p.page.wait_for_url(re.compile(r"#/orders/"), timeout=20000)
        assert len(keys) == 2 and keys[0] == keys[1] and keys[0], keys
        assert answers == [202, 202]
        assert len(my_orders(pwa_system, token)) == 1
        await p.shot("one-order")
        assert p.console_errors(allow=(r"net::ERR_CONNECTION_RESET", r"Failed to fetch")) == []


async def start_gate(p: Page, event_id: int, gate: str) -> None:
    """Bind the scanner to an event and a gate (the shift's session)."""
    await p.page.wait_for_selector("#gate-event, #gate-bound")
    if await p.page.locator("#gate-change").count():
        await p.page.click("#gate-change")
    await p.page.fill("#gate-event", str(event_id))
    await p.page.fill("#gate-name", gate)
    await p.page.click("#gate-start")
    await p.page.wait_for_selector(f"#gate-bound[data-event='{event_id}'][data-gate='{gate}']")


def scan_log(system: System, event_id: int) -> list[dict[str, Any]]:
    token = dev_token(system, f"auditor-{uuid.uuid4().hex[:6]}", ["scanner"])
    res = api_get(system, f"/events/{event_id}/scans", token)
    res.raise_for_status()
    return list(res.json()["items"])


async def test_gate_scanner_admits_once_then_says_used(browser: Any, pwa_system: System) -> None:
    if not (pwa_system.confirms and pwa_system.issues_tickets):
        pytest.skip("needs the persister and the ticket issuer")
    event_id = pwa_system.event_ids["obra-de-teatro-el-avaro-de-moliere"]
    other_event = pwa_system.event_ids["stand-up-comedy-noche-de-risas"]
    buyer_token = dev_token(pwa_system, new_buyer())
    ticket = buy_via_api(pwa_system, event_id, buyer_token)[0]
    elsewhere = buy_via_api(pwa_system, other_event, buyer_token)[0]
    header, claims, signature = ticket.split(".")
    forged_sig = ("A" if signature[0] != "A" else "B") + signature[1:]
    async with open_page(browser, pwa_system, "scanner", PHONE) as p:
        await login(p, new_buyer(), roles=("scanner",))
        await p.page.goto("/#/scan")
        await p.page.wait_for_selector("#scan-keys:has-text('clave')")
        await start_gate(p, event_id, "norte-1")
        assert "puerta norte-1" in await p.page.locator("#gate-bound").inner_text()

        async def scan(token: str, verdict: str) -> str:
            await p.page.fill("#scan-token", token)
            await p.page.click("#scan-submit")
            box = p.page.locator(f"#scan-verdict [data-verdict={verdict}]")
            await box.wait_for()
            return await box.inner_text()

        admitted = await scan(ticket, "admitted")
        assert "ADELANTE" in admitted
        # This gate's count, from the API.
        await p.page.wait_for_selector("#gate-counts[data-gate-admitted='1']")
        assert "Puerta norte-1: 1 ingresos" in await p.page.locator("#gate-counts").inner_text()
        await p.shot("admitted")
        used = await scan(ticket, "used")
        assert "YA USADA" in used and re.search(r"\d{1,2}:\d{2}", used), used
        assert "norte-1" in used
        await p.shot("used")
        # A valid ticket of another event is refused with the reason, and not spent.
        wrong = await scan(elsewhere, "refused")
        assert "OTRO EVENTO" in wrong and f"#{other_event}" in wrong, wrong
        await p.shot("wrong-event")
        checkins: list[str] = []
        p.page.on(
            "request",
            lambda r: checkins.append(r.url) if r.url.endswith("/api/v1/checkins") else None,
        )
        invalid = await scan(f"{header}.{claims}.{forged_sig}", "invalid")
        assert checkins == []
        assert "NO VÁLIDA" in invalid
        await p.shot("invalid")
        # A forged signature is caught on the device: it never reaches the API. The
        # browser itself logs the 409s (used, wrong event), which the page handled.
        assert p.console_errors(allow=(r"status of 409",)) == []
    log = scan_log(pwa_system, event_id)
    mine = [e for e in log if e["gate"] == "norte-1"]
    assert [e["result"] for e in mine][:4] == [
        "invalid_ticket",  # caught on the device, reported to the log
        "wrong_event",
        "already_used",
        "admitted",
    ]


async def test_gate_scanner_verifies_offline_and_checks_in_on_reconnect(
    browser: Any, pwa_system: System
) -> None:
    if not (pwa_system.confirms and pwa_system.issues_tickets):
        pytest.skip("needs the persister and the ticket issuer")
    event_id = pwa_system.event_ids["obra-de-teatro-el-avaro-de-moliere"]
    other_event = pwa_system.event_ids["stand-up-comedy-noche-de-risas"]
    buyer = dev_token(pwa_system, new_buyer())
    ticket = buy_via_api(pwa_system, event_id, buyer)[0]
    elsewhere = buy_via_api(pwa_system, other_event, buyer)[0]
    async with open_page(browser, pwa_system, "scanner-offline", PHONE, "en-US") as p:
        await login(p, new_buyer(), roles=("scanner",))
        await wait_service_worker(p)
        await p.page.goto("/#/scan")
        await p.page.wait_for_selector("#scan-keys:has-text('signing key')")  # JWKS cached
        await start_gate(p, event_id, "east")

        await p.context.set_offline(True)
        await p.page.reload()
        await p.page.wait_for_selector("#scan-keys:has-text('signing key')")
        await p.page.wait_for_selector(f"#gate-bound[data-event='{event_id}']")

        async def scan(token: str, verdict: str) -> str:
            await p.page.fill("#scan-token", token)
            await p.page.click("#scan-submit")
            box = p.page.locator(f"#scan-verdict [data-verdict={verdict}]")
            await box.wait_for()
            return await box.inner_text()

        assert "SIGNATURE VALID" in await scan(ticket, "queued")
        await p.shot("offline-valid")
        await p.page.wait_for_selector("#scan-pending[data-count='1']")
        # The same ticket again, still offline: this device admitted it already.
        again = await scan(ticket, "used")
        assert "ALREADY USED" in again and re.search(r"\d{1,2}:\d{2}", again), again
        # Another event's ticket: refused offline too, with the reason.
        wrong = await scan(elsewhere, "refused")
        assert "WRONG EVENT" in wrong and f"#{other_event}" in wrong, wrong
        await p.shot("offline-refusals")
        await p.page.wait_for_selector("#scan-pending[data-count='1']")

        await p.context.set_offline(False)
        await p.page.wait_for_selector("#scan-verdict [data-verdict=admitted]", timeout=20000)
        await p.page.wait_for_selector("#scan-pending", state="hidden")
        await p.shot("admitted-on-reconnect")
        # Recorded once: scanning it again now says it was used.
        await scan(ticket, "used")
        assert (
            p.console_errors(
                allow=(r"net::ERR_INTERNET_DISCONNECTED", r"Failed to fetch", r"status of 409")
            )
            == []
        )
    log = [e for e in scan_log(pwa_system, event_id) if e["gate"] == "east"]
    admitted = [e for e in log if e["result"] == "admitted"]
    assert len(admitted) == 1 and admitted[0]["device_at"] is not None, log
    # What the device refused offline reached the scan log too, with the device's time.
    offline = {
        (e["result"], e["ticket_id"]) for e in log if e["device_at"] and e["result"] != "admitted"
    }
    assert ("already_used", admitted[0]["ticket_id"]) in offline, log
    assert any(r == "wrong_event" for r, _ in offline), log


def qr_video(path: Path, text: str, frames: int = 8) -> Path:
    """A Y4M clip of ``text``'s QR code, for Chromium's fake camera."""
    import qrcode
    from PIL import Image

    width, height = 640, 480
    code = qrcode.make(text, box_size=4, border=4).get_image().convert("L")
    side = min(height - 40, max(code.size))
    frame = Image.new("L", (width, height), 255)
    frame.paste(code.resize((side, side), Image.NEAREST), ((width - side) // 2, 20))
    luma = frame.tobytes()
    chroma = bytes([128]) * (width // 2 * height // 2)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + luma + chroma + chroma)
    return path


async def test_camera_scans_without_barcode_detector(
    pwa_system: System, chromium_path: str, tmp_path: Path
) -> None:
    """Where the browser has no BarcodeDetector (Linux Chromium, iOS Safari) the camera
    still scans, with the vendored ZXing decoder (WebAssembly)."""
    if not (pwa_system.confirms and pwa_system.issues_tickets):
        pytest.skip("needs the persister and the ticket issuer")
    from playwright.async_api import async_playwright

    event_id = pwa_system.event_ids["obra-de-teatro-el-avaro-de-moliere"]
    ticket = buy_via_api(pwa_system, event_id, dev_token(pwa_system, new_buyer()))[0]
    video = qr_video(tmp_path / "ticket.y4m", ticket)
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]
    async with async_playwright() as pw:
        camera_browser = await pw.chromium.launch(
            executable_path=chromium_path, headless=True, args=args
        )
        try:
            async with open_page(camera_browser, pwa_system, "camera", PHONE, "en-US") as p:
                await p.context.grant_permissions(["camera"], origin=pwa_system.base_url)
                await login(p, new_buyer(), roles=("scanner",))
                await p.page.goto("/#/scan")
                await p.page.wait_for_selector("#scan-keys:has-text('signing key')")
                await start_gate(p, event_id, "camera-1")
                assert not await p.page.evaluate("'BarcodeDetector' in window")
                await p.page.click("#scan-camera")
                await p.page.wait_for_selector(
                    "#scan-verdict [data-verdict=admitted]", timeout=30000
                )
                assert await p.page.get_attribute("video", "data-detector") == "zxing"
                assert await p.page.input_value("#scan-token") == ticket
                await p.shot("camera-admitted")
                await p.page.click("#scan-camera")  # stop it
                assert p.console_errors() == []
        finally:
            await camera_browser.close()


async def test_offline_check_ins_survive_an_ended_session(browser: Any, pwa_system: System) -> None:
    """A sync refused with 401 keeps the queued check-ins, says how many wait, and sends
    them once the operator signs in again."""
    if not (pwa_system.confirms and pwa_system.issues_tickets):
        pytest.skip("needs the persister and the ticket issuer")
    event_id = pwa_system.event_ids["obra-de-teatro-el-avaro-de-moliere"]
    tickets = buy_via_api(pwa_system, event_id, dev_token(pwa_system, new_buyer()), quantity=2)
    operator = new_buyer()
    gate = f"west-{uuid.uuid4().hex[:4]}"
    async with open_page(browser, pwa_system, "scanner-relogin", PHONE, "en-US") as p:
        await login(p, operator, roles=("scanner",))
        await wait_service_worker(p)
        await p.page.goto("/#/scan")
        await p.page.wait_for_selector("#scan-keys:has-text('signing key')")
        await start_gate(p, event_id, gate)

        await p.context.set_offline(True)
        await p.page.reload()
        await p.page.wait_for_selector(f"#gate-bound[data-event='{event_id}']")
        for token in tickets:
            await p.page.fill("#scan-token", token)
            await p.page.click("#scan-submit")
            await p.page.wait_for_selector("#scan-verdict [data-verdict=queued]")
        await p.page.wait_for_selector("#scan-pending[data-count='2']")
        # The session ends while offline (here: a token the API no longer accepts).
        await p.page.evaluate(
            "() => { const t = localStorage.getItem('tb.token').split('.');"
            " localStorage.setItem('tb.token', `${t[0]}.${t[1]}.AAAA`); }"
        )
        await p.page.reload()
        await p.page.wait_for_selector("#scan-pending[data-count='2']")

        await p.context.set_offline(False)
        await p.page.wait_for_selector("#scan-relogin", timeout=20000)
        assert "2 check-ins waiting" in await p.page.locator("#scan-pending").inner_text()
        await p.shot("waiting-for-login")
        assert [e for e in scan_log(pwa_system, event_id) if e["gate"] == gate] == []

        await p.page.click("#scan-relogin")
        await p.page.fill("#login-name", operator)
        await p.page.locator("input[name=roles][value=scanner]").check()
        await p.page.click("#login-submit")
        await p.page.wait_for_url(re.compile(r"#/scan"))
        await p.page.wait_for_selector("#scan-pending", state="hidden", timeout=20000)
        await p.shot("sent-after-login")
        assert (
            p.console_errors(
                allow=(r"net::ERR_INTERNET_DISCONNECTED", r"Failed to fetch", r"status of 401")
            )
            == []
        )
    log = [e for e in scan_log(pwa_system, event_id) if e["gate"] == gate]
    assert sorted(e["result"] for e in log) == ["admitted", "admitted"]
    assert {e["scanner"] for e in log} == {operator}
    assert all(e["device_at"] is not None for e in log)


async def test_tickets_by_email_address_is_saved(browser: Any, pwa_system: System) -> None:
    buyer = new_buyer()
    async with open_page(browser, pwa_system, "contact", PHONE, "en-US") as p:
        await login(p, buyer)
        await p.page.goto("/#/tickets")
        await p.page.wait_for_selector("#contact-form")
        assert await p.page.input_value("#contact-lang") == "en"
        await p.page.fill("#contact-email", f"{buyer}@example.test")
        await p.page.click("#contact-save")
        await p.page.wait_for_selector("#contact-status[data-saved=true]")
        await p.shot("saved")
        # Shown again on the next visit.
        await p.page.reload()
        await p.page.wait_for_function(
            "v => document.querySelector('#contact-email')?.value === v",
            arg=f"{buyer}@example.test",
        )
        assert p.console_errors() == []
    res = api_get(pwa_system, "/me/contact", dev_token(pwa_system, buyer))
    assert res.json() == {"email": f"{buyer}@example.test", "lang": "en"}


async def test_notifications_permission(browser: Any, pwa_system: System) -> None:
    async with open_page(browser, pwa_system, "notify", DESKTOP, "en-US") as p:
        await login(p, new_buyer())
        await p.page.goto("/#/tickets")
        await p.page.wait_for_selector("#notify-btn")  # not asked yet: offered
        await p.context.grant_permissions(["notifications"])
        await p.page.reload()
        await p.page.wait_for_selector("text=Notifications are on.")
        assert await p.page.locator("#notify-btn").is_hidden()
        assert p.console_errors() == []


async def test_login_with_authorization_code_and_pkce(browser: Any, pwa_system: System) -> None:
    """With a real provider configured, sign-in is Authorization Code + PKCE (S256).

    The provider is simulated with routes: discovery, the authorization endpoint
    (redirects straight back with a code) and the token endpoint (checks the
    verifier against the challenge, then returns a token the dev issuer signed).
    """
    import base64
    import hashlib
    import json
    from urllib.parse import parse_qs, urlsplit

    # Same origin as the app: the API's CSP allows the configured issuer's origin only.
    issuer = f"{pwa_system.base_url}/fake-idp/realms/tb"
    access_token = dev_token(pwa_system, "oidc-user")
    seen: dict[str, Any] = {}

    async with open_page(browser, pwa_system, "pkce", PHONE, "en-US") as p:

        async def config(route: Any) -> None:
            body = {"auth_mode": "oidc", "issuer": issuer, "client_id": "ticketbuster-pwa"}
            await route.fulfill(json=body)

        async def discovery(route: Any) -> None:
            await route.fulfill(
                json={
                    "issuer": issuer,
                    "authorization_endpoint": f"{issuer}/auth",
                    "token_endpoint": f"{issuer}/token",
                },
                headers={"Access-Control-Allow-Origin": "*"},
            )

        async def authorize(route: Any) -> None:
            query = parse_qs(urlsplit(route.request.url).query)
            seen["authorize"] = query
            back = f"{query['redirect_uri'][0]}?code=the-code&state={query['state'][0]}"
            await route.fulfill(status=302, headers={"Location": back})

        async def token(route: Any) -> None:
            if route.request.method == "OPTIONS":
                await route.fulfill(
                    status=204,
                    headers={
                        "Access-Control-Allow-Origin": "*",
                        "Access-Control-Allow-Headers": "content-type",
                    },
                )
                return
            form = parse_qs(route.request.post_data or "")
            seen["token"] = form
            await route.fulfill(
                body=json.dumps({"access_token": access_token, "token_type": "Bearer"}),
                content_type="application/json",
                headers={"Access-Control-Allow-Origin": "*"},
            )

        # Context routes also see the requests the service worker makes.
        await p.context.route("**/config.json", config)
        await p.context.route(f"{issuer}/.well-known/openid-configuration", discovery)
        await p.context.route(f"{issuer}/auth?*", authorize)
        await p.context.route(f"{issuer}/token", token)

        await p.page.goto("/#/login")
        # With the service worker in control, as a returning user would be.
        await wait_service_worker(p)
        await p.page.click("text=Sign in with your account")
        await p.page.wait_for_function("() => !!localStorage.getItem('tb.token')")
        await p.page.wait_for_function("() => !location.search")

        auth = seen["authorize"]
        assert auth["response_type"] == ["code"]
        assert auth["code_challenge_method"] == ["S256"]
        assert auth["client_id"] == ["ticketbuster-pwa"]
        form = seen["token"]
        assert form["grant_type"] == ["authorization_code"]
        assert form["code"] == ["the-code"]
        verifier = form["code_verifier"][0]
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        assert auth["code_challenge"] == [challenge]
        await p.page.wait_for_selector(".tabbar >> text=oidc-user")


async def test_staff_session_is_renewed_with_rotating_refresh_tokens(
    browser: Any, pwa_system: System
) -> None:
    """A shift outlives its access token: the PWA renews it with the provider's refresh
    token before calling the API, and keeps the rotated refresh token each time."""
    import base64
    import json
    from urllib.parse import parse_qs, urlsplit

    issuer = f"{pwa_system.base_url}/fake-idp/realms/tb"

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    # What the provider first hands out: an access token that has already expired.
    expired = f"{b64({'alg': 'EdDSA'})}.{b64({'sub': 'staff-1', 'exp': 1, 'roles': ['scanner']})}.x"
    grants: list[tuple[str, str]] = []

    async with open_page(browser, pwa_system, "refresh", PHONE, "en-US") as p:

        async def config(route: Any) -> None:
            body = {"auth_mode": "oidc", "issuer": issuer, "client_id": "ticketbuster-pwa"}
            await route.fulfill(json=body)

        async def discovery(route: Any) -> None:
            await route.fulfill(
                json={
                    "issuer": issuer,
                    "authorization_endpoint": f"{issuer}/auth",
                    "token_endpoint": f"{issuer}/token",
                }
            )

        async def authorize(route: Any) -> None:
            query = parse_qs(urlsplit(route.request.url).query)
            back = f"{query['redirect_uri'][0]}?code=the-code&state={query['state'][0]}"
            await route.fulfill(status=302, headers={"Location": back})

        async def token(route: Any) -> None:
            form = parse_qs(route.request.post_data or "")
            grant = form["grant_type"][0]
            grants.append((grant, form.get("refresh_token", [""])[0]))
            if grant == "authorization_code":
                body = {"access_token": expired, "refresh_token": "r1", "token_type": "Bearer"}
            else:
                n = len(grants)
                fresh = dev_token(pwa_system, "staff-1", ["scanner"])
                body = {"access_token": fresh, "refresh_token": f"r{n}", "token_type": "Bearer"}
            await route.fulfill(body=json.dumps(body), content_type="application/json")

        await p.context.route("**/config.json", config)
        await p.context.route(f"{issuer}/.well-known/openid-configuration", discovery)
        await p.context.route(f"{issuer}/auth?*", authorize)
        await p.context.route(f"{issuer}/token", token)

        authorized: list[str] = []
        p.page.on(
            "request",
            lambda r: (
                authorized.append(r.headers.get("authorization", ""))
                if "/api/v1/me/" in r.url
                else None
            ),
        )
        await p.page.goto("/#/login")
        await p.page.click("text=Sign in with your account")
        await p.page.wait_for_function("() => !location.search")
        await p.page.goto("/#/tickets")
        await p.page.wait_for_selector("#contact-form")
        await p.page.wait_for_function(
            "() => JSON.parse(localStorage.getItem('tb.refresh') || '{}').token === 'r2'"
        )
        assert grants[:2] == [("authorization_code", ""), ("refresh_token", "r1")]
        # Every API call went with the renewed token, none with the expired one.
        assert authorized and all(a.startswith("Bearer ") for a in authorized)
        assert not any(expired in a for a in authorized)

        # Hours later (the access token expired again): the rotated refresh token renews it.
        await p.page.evaluate("t => localStorage.setItem('tb.token', t)", expired)
        await p.page.reload()
        await p.page.wait_for_selector("#contact-form")
        await p.page.wait_for_function(
            "() => JSON.parse(localStorage.getItem('tb.refresh') || '{}').token === 'r3'"
        )
        assert grants[2] == ("refresh_token", "r2")
        assert await p.page.locator(".tabbar >> text=staff-1").count() == 1
        assert p.console_errors() == []


def teardown_module() -> None:
    # Keep the screenshots; drop old run folders beyond the last eight.
    runs = sorted(ARTIFACTS.glob("run-*"), key=lambda d: d.stat().st_mtime)
    for old in runs[:-8]:
        shutil.rmtree(old, ignore_errors=True)


async def test_organizer_page_shows_sales_and_pauses_with_confirmation(
    browser: Any, pwa_system: System
) -> None:
    """An organizer's event made through the API: its state, sparkline and seat map in the
    page (es, then en); pause asks first, and a declined cancel changes nothing."""
    from datetime import UTC, datetime, timedelta

    from core.inventory import partition_keys
    from tests.integration.catalog_seed import cluster_client

    base = f"{pwa_system.base_url}/api/v1"
    admin = {"Authorization": f"Bearer {dev_token(pwa_system, 'pwa-admin', ['admin'])}"}
    org = f"pwa-{uuid.uuid4().hex[:8]}"
    assert (
        httpx.post(
            f"{base}/organizer/organizations",
            json={"code": org, "name": org},
            headers=admin,
            timeout=10,
        ).status_code
        == 201
    )
    boss = f"boss-{uuid.uuid4().hex[:6]}"
    res = httpx.post(
        f"{base}/auth/dev-token", json={"sub": boss, "roles": ["organizer"], "org": org}, timeout=10
    )
    organizer = {"Authorization": f"Bearer {res.json()['access_token']}"}
    with httpx.Client(base_url=f"{base}/organizer", headers=organizer, timeout=10) as api:
        venue = api.post("/venues", json={"name": f"Sala {org}", "address": "Jr. Prueba 1"})
        rows = [
            {"label": str(r), "seats": [{"number": n, "category": "GENERAL"} for n in range(1, 11)]}
            for r in (1, 2)
        ]
        assert (
            api.put(
                f"/venues/{venue.json()['id']}/seatmap",
                json={"sections": [{"code": "A", "name": "Platea", "rows": rows}]},
            ).status_code
            == 200
        )
        now = datetime.now(UTC)
        event = api.post(
            "/events",
            json={
                "venue_id": venue.json()["id"],
                "title": "Noche de prueba",
                "category": "THEATER",
                "starts_at": (now + timedelta(days=9)).isoformat(),
                "sale_opens_at": (now - timedelta(hours=1)).isoformat(),
                "sale_closes_at": (now + timedelta(days=8)).isoformat(),
                "price_categories": [{"code": "GENERAL", "name": "General", "price_minor": 5000}],
            },
        )
        assert event.status_code == 201, event.text
        event_id = event.json()["id"]
        assert api.post(f"/events/{event_id}/publish").status_code == 200
    redis = cluster_client(os.environ["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    try:
        buyer = dev_token(pwa_system, new_buyer())
        hold = httpx.post(
            f"{base}/events/{event_id}/holds",
            json={"seats": ["A-1-1", "A-1-2"]},
            headers={"Authorization": f"Bearer {buyer}"},
            timeout=10,
        )
        assert hold.status_code == 201, hold.text
        async with open_page(browser, pwa_system, "organizer", DESKTOP) as p:
            await p.page.goto("/#/login")
            await p.page.fill("#login-name", boss)
            await p.page.locator("input[name=roles][value=buyer]").uncheck()
            await p.page.locator("input[name=roles][value=organizer]").check()
            await p.page.fill("#login-org", org)
            await p.page.click("#login-submit")
            await p.page.wait_for_function("() => !!localStorage.getItem('tb.token')")
            await p.page.goto("/#/organizer")
            card = p.page.locator(f"[data-event-id='{event_id}']")
            await card.locator(".org-seat").first.wait_for()
            assert await card.locator(".org-state").inner_text() == "En venta"
            assert await card.locator(".org-seat").count() == 20
            assert await card.locator(".org-seat.held").count() == 2
            assert await card.locator("svg.sparkline polyline").count() == 1
            assert "2 reservados" in await card.locator(".org-figures").inner_text()
            await p.shot("on-sale")

            dialogs: list[str] = []

            async def answer(dialog: Any, accept: bool) -> None:
                dialogs.append(dialog.message)
                await (dialog.accept() if accept else dialog.dismiss())

            # A declined cancel does nothing.
            p.page.once("dialog", lambda d: asyncio.ensure_future(answer(d, False)))
            await card.locator("button[data-action=cancel]").click()
            for _ in range(100):  # the dialog handler runs as its own task
                if dialogs:
                    break
                await asyncio.sleep(0.05)
            assert "Cancelar" in dialogs[-1] or "¿Cancelar" in dialogs[-1]
            p.page.once("dialog", lambda d: asyncio.ensure_future(answer(d, True)))
            await card.locator("button[data-action=pause]").click()
            await p.page.locator(f"[data-event-id='{event_id}'][data-state=paused]").wait_for()
            assert "Pausar" in dialogs[-1]
            refused = httpx.post(
                f"{base}/events/{event_id}/holds",
                json={"seats": ["A-2-1"]},
                headers={"Authorization": f"Bearer {buyer}"},
                timeout=10,
            )
            assert refused.status_code == 409 and refused.json()["reason"] == "paused"
            status = httpx.get(f"{base}/organizer/events/{event_id}", headers=organizer, timeout=10)
            assert status.json()["status"] == "paused"  # the declined cancel did not happen
            await p.page.select_option("#lang-select", "en")
            await p.page.locator(
                f"[data-event-id='{event_id}'] .org-state:has-text('Paused')"
            ).wait_for()
            await p.page.locator(
                f"[data-event-id='{event_id}'] button[data-action=resume]"
            ).wait_for()
            await p.shot("paused-en")
            assert p.console_errors(allow=(r"status of 409",)) == []
    finally:
        for key in partition_keys(event_id, 0):
            await redis.delete(key)
        await redis.aclose()


async def test_waiting_room_page_joins_survives_reload_and_admits(
    browser: Any, pwa_system: System, pg_dsn: str, settings: Settings, services: dict[str, str]
) -> None:
    """A queued on-sale in the browser: the event page sends the fan to the waiting room,
    the place is announced (es), kept over a reload, and the admission lets the hold in."""
    from datetime import UTC, datetime, timedelta

    import asyncpg

    from core.inventory import SINGLE_PARTITION, Inventory
    from core.queue import new_seed
    from migrations.inventory import read_partition_plans, rebuild_inventory
    from migrations.seed import SeedEvent, seed_event
    from tests.integration.catalog_seed import cluster_client
    from workers.admitter import Admitter

    now = datetime.now(UTC)
    client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await client.initialize()
    conn = await asyncpg.connect(pg_dsn)
    try:
        event_id, _ = await seed_event(
            conn,
            SeedEvent(
                slug=f"pwa-queue-{uuid.uuid4().hex[:8]}",
                title="Waiting room in the browser",
                category="CONCERT",
                venue="Test Hall",
                address="Loopback 1",
                starts_at=now + timedelta(days=30),
                base_price_minor=10_000,
                capacity=200,
            ),
            now - timedelta(minutes=1),
        )
        await conn.execute("UPDATE catalog.events SET status = 'published' WHERE id = $1", event_id)
        seed, commit = new_seed()
        await conn.execute(
            "INSERT INTO queue.settings (event_id, queue_opens_at, rate_per_min, seed,"
            " seed_commitment) VALUES ($1, $2, 600, $3, $4)",
            event_id,
            now - timedelta(hours=1),
            seed,
            commit,
        )
        plans = await read_partition_plans(conn)
        inventory = Inventory(client, plans=lambda e: plans.get(e, SINGLE_PARTITION))
        await rebuild_inventory(conn, inventory, event_id)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    db = msgspec.structs.replace(
        settings, database=msgspec.structs.replace(settings.database, url=pg_dsn)
    )
    admitter = Admitter(db, pool, client, name="pwa-test")
    try:
        async with open_page(browser, pwa_system, "waiting-room", PHONE) as p:
            pushed: list[str] = []

            def on_socket(ws: Any) -> None:
                ws.on("framereceived", lambda payload: pushed.append(str(payload)))

            p.page.on("websocket", on_socket)
            await login(p, new_buyer())
            # Holding without an admission sends the fan to the waiting room.
            await p.page.goto(f"/#/events/{event_id}")
            await p.page.wait_for_selector("#best-submit:not([disabled])")
            await p.page.click("#best-submit")
            await p.page.wait_for_url(re.compile(rf"#/events/{event_id}/queue$"))
            await p.page.click("#queue-join")
            await p.page.wait_for_function(
                "() => document.querySelector('#queue-live').textContent.includes('fila: 1')"
            )
            assert await p.page.get_attribute("#queue-live", "aria-live") == "polite"
            await p.shot("queue-waiting")
            await p.page.reload()  # the place is the server's: still 1
            await p.page.wait_for_selector("#queue-position:has-text('Tu lugar en la fila: 1')")

            admitted: list[str] = []
            for _ in range(100):
                config = next(c for c in await admitter.configs() if c.event_id == event_id)
                outcome = await admitter.admit(config)
                admitted += outcome.admitted
                if admitted:
                    break
                await asyncio.sleep(0.05)
            assert len(admitted) == 1
            await p.page.wait_for_selector("#queue-in:not([hidden])", timeout=15000)
            assert "¡Ya entraste!" in await p.page.locator("#queue-in").inner_text()
            # The place came over the user channel too (polling is the fallback).
            frames = [f for f in pushed if '"type":"queue"' in f]
            assert any('"status":"waiting"' in f for f in frames), pushed[-5:]
            await p.shot("queue-admitted")
            await p.page.reload()
            await p.page.wait_for_selector("#queue-in:not([hidden])")
            await p.page.click("#queue-go")
            await hold_best(p, 2)  # 201: the admission travelled with the hold
            # The browser logs the API's answers before joining: the hold's 403
            # admission_required and the position's 404 not_queued.
            assert p.console_errors(allow=("status of 403", "status of 404")) == []
    finally:
        admitter.close()
        await pool.close()
        await client.aclose()
