"""The API platform over HTTP against real Redis Cluster, PostgreSQL and Kafka:
probes, problem+json errors, DI, security headers, CORS, metrics, schema, Granian."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from redis.asyncio import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from api.app import create_app
from core.errors import SeatUnavailable, Unavailable
from core.settings import Settings, SettingsError
from core.tickets import generate_private_key_pem
from tests.integration.api_servers import api_client, granian_server, with_overrides

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def api_settings(pg_dsn: str, settings: Settings) -> Settings:
    return with_overrides(settings, database={"url": pg_dsn})


# Handlers only these tests register, to drive the error paths a user can meet.
class Body(msgspec.Struct, forbid_unknown_fields=True):
    quantity: int
    category: str


@post("/api/v1/test-platform/echo", status_code=200)
async def echo(data: JSONBody[Body]) -> Body:
    return data


@get("/api/v1/test-platform/items/{item_id:int}")
async def item(item_id: FromPath[int], limit: FromQuery[int] = 10) -> dict[str, int]:
    return {"item_id": item_id, "limit": limit}


@get("/api/v1/test-platform/boom")
async def boom() -> None:
    raise RuntimeError("secret internals: password=hunter2")


@get("/api/v1/test-platform/taken")
async def taken() -> None:
    raise SeatUnavailable("Seats are taken.", seats=["101-A-1"])


@get("/api/v1/test-platform/overloaded")
async def overloaded() -> None:
    raise Unavailable("Try later.", retry_after_s=4)


@get("/api/v1/test-platform/redis-down")
async def redis_down() -> None:
    raise RedisConnectionError("Error 111 connecting to 10.0.0.1:7101")


@get("/api/v1/test-platform/deps")
async def deps(
    settings: NamedDependency[Settings],
    redis: NamedDependency[RedisCluster],
    db_pool: NamedDependency[Any],
    inventory: NamedDependency[Any],
) -> dict[str, object]:
    pong = await redis.ping()
    async with db_pool.acquire() as conn:  # type: ignore[attr-defined]
        one = await conn.fetchval("SELECT 1")
    return {
        "env": settings.env,
        "redis": bool(pong),
        "postgres": one,
        "inventory": type(inventory).__name__,
    }


TEST_HANDLERS = [echo, item, boom, taken, overloaded, redis_down, deps]


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, object] = response.json()
    assert body["type"] == f"https://ticketbuster.dev/problems/{code}"
    assert body["status"] == status
    assert "Traceback" not in response.text
    return body


async def test_healthz_and_readyz_with_all_dependencies_up(api_settings: Settings) -> None:
    async with api_client(api_settings) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"redis": "ok", "postgres": "ok", "kafka": "ok"}


async def test_readyz_names_the_failing_dependencies(
    api_settings: Settings, free_tcp_port: int
) -> None:
    broken = with_overrides(
        api_settings,
        kafka={"bootstrap": f"127.0.0.1:{free_tcp_port}", "request_timeout_s": 1.0},
        database={"url": f"postgresql://postgres@127.0.0.1:{free_tcp_port}/nope"},
    )
    async with api_client(broken) as client:
        assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
        response = await client.get("/readyz")
        body = assert_problem(response, 503, "unavailable")
        assert body["failing"] == ["postgres"]  # the broker is reported, not required
        assert body["checks"]["redis"] == "ok"  # type: ignore[index]
        assert body["checks"]["kafka"].startswith("down")  # type: ignore[index]
        assert int(response.headers["retry-after"]) > 0


async def test_a_broker_outage_leaves_the_pod_in_rotation(
    api_settings: Settings, free_tcp_port: int
) -> None:
    """Browsing and holds need Redis and PostgreSQL only: with the broker away the pod is
    still ready, and /readyz says what is degraded."""
    no_broker = with_overrides(
        api_settings, kafka={"bootstrap": f"127.0.0.1:{free_tcp_port}", "request_timeout_s": 1.0}
    )
    async with api_client(no_broker) as client:
        response = await client.get("/readyz")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ok" and body["degraded"] == ["kafka"]
        assert body["checks"]["kafka"].startswith("down")
        assert body["checks"]["redis"] == body["checks"]["postgres"] == "ok"


@pytest.fixture
def free_tcp_port() -> int:
    from tests.integration.api_servers import free_port

    return free_port()


async def test_dependencies_are_injected(api_settings: Settings) -> None:
    async with api_client(api_settings, TEST_HANDLERS) as client:
        response = await client.get("/api/v1/test-platform/deps")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["env"] == "test" and body["redis"] is True and body["postgres"] == 1
        assert body["inventory"] == "Inventory"


async def test_errors_are_problem_json(api_settings: Settings) -> None:
    async with api_client(api_settings, TEST_HANDLERS) as client:
        body = assert_problem(await client.get("/api/v1/no-such-thing"), 404, "not_found")
        assert body["instance"] == "/api/v1/no-such-thing"

        response = await client.delete("/healthz")
        assert_problem(response, 405, "method_not_allowed")
        assert "GET" in response.headers["allow"]

        body = assert_problem(
            await client.post(
                "/api/v1/test-platform/echo", json={"quantity": "two", "category": "VIP"}
            ),
            422,
            "invalid_input",
        )
        assert body["field"] == "quantity"
        body = assert_problem(
            await client.post(
                "/api/v1/test-platform/echo", json={"quantity": 2, "category": "VIP", "price": 1}
            ),
            422,
            "invalid_input",
        )
        assert body["field"] == "price"
        body = assert_problem(
            await client.get("/api/v1/test-platform/items/1?limit=abc"), 422, "invalid_input"
        )
        assert body["field"] == "limit"
        # A path segment of the wrong type matches no route.
        assert_problem(await client.get("/api/v1/test-platform/items/abc"), 404, "not_found")
        assert_problem(
            await client.post(
                "/api/v1/test-platform/echo",
                content=b"{nope",
                headers={"content-type": "application/json"},
            ),
            400,
            "bad_request",
        )
        too_big = (
            b'{"quantity": 1, "category": "' + b"x" * (api_settings.api.max_body_bytes + 10) + b'"}'
        )
        assert_problem(
            await client.post(
                "/api/v1/test-platform/echo",
                content=too_big,
                headers={"content-type": "application/json"},
            ),
            413,
            "payload_too_large",
        )

        body = assert_problem(
            await client.get("/api/v1/test-platform/taken"), 409, "seat_unavailable"
        )
        assert body["seats"] == ["101-A-1"]

        response = await client.get("/api/v1/test-platform/overloaded")
        assert_problem(response, 503, "unavailable")
        assert response.headers["retry-after"] == "4"

        response = await client.get("/api/v1/test-platform/redis-down")
        body = assert_problem(response, 503, "unavailable")
        assert "10.0.0.1" not in response.text and int(response.headers["retry-after"]) > 0


async def test_unexpected_exception_is_500_without_details(
    api_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with api_client(api_settings, TEST_HANDLERS) as client:
        response = await client.get(
            "/api/v1/test-platform/boom", headers={"X-Request-ID": "req-boom-1"}
        )
    body = assert_problem(response, 500, "internal_error")
    assert "hunter2" not in response.text and "detail" not in body
    assert body["request_id"] == "req-boom-1"
    logged = [r for r in caplog.records if r.name == "ticketbuster.api.errors"]
    assert logged and logged[0].exc_info is not None  # the traceback goes to the log


async def test_request_id_and_security_headers(api_settings: Settings) -> None:
    async with api_client(api_settings) as client:
        response = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        assert response.headers["x-request-id"] == "abc-123"
        generated = (await client.get("/healthz", headers={"X-Request-ID": "bad id\x7f"})).headers
        assert re.fullmatch(r"[0-9a-f]{32}", generated["x-request-id"])
        headers = (await client.get("/nope")).headers  # unknown paths too
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "strict-transport-security" not in headers  # only in prod


async def test_hsts_in_prod_and_dev_issuer_refused_in_prod(
    api_settings: Settings, tmp_path: Path
) -> None:
    public = tmp_path / "public-keys.pem"
    public.write_bytes(_public_pem(generate_private_key_pem()))
    prod = with_overrides(
        msgspec.structs.replace(api_settings, env="prod"),
        auth={
            "dev_issuer_enabled": False,
            "issuer": "https://login.example/realms/tb",
            "jwks_url": "http://127.0.0.1:9/jwks.json",
        },
        # What prod must name (the API refuses to start without them).
        api={"trusted_proxies": "none", "cors_origins": "https://tickets.example"},
        tickets={"public_keys_path": str(public)},
    )
    async with api_client(prod) as client:
        response = await client.get("/healthz")
        assert "max-age=" in response.headers["strict-transport-security"]
        # The PWA may talk to the OIDC issuer (discovery, token endpoint), nothing else.
        csp = response.headers["content-security-policy"]
        assert "connect-src 'self' ws: wss: https://login.example;" in csp
        assert (await client.post("/api/v1/auth/dev-token", json={"sub": "x"})).status_code in (
            404,
            405,
        )
    with pytest.raises(SettingsError, match="TB_AUTH_DEV_ISSUER_ENABLED"):
        create_app(msgspec.structs.replace(api_settings, env="prod"))


async def test_cors_allows_only_configured_origins(api_settings: Settings) -> None:
    s = with_overrides(api_settings, api={"cors_origins": "https://shop.example"})
    async with api_client(s) as client:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }
        ok = await client.options(
            "/api/v1/me", headers={"Origin": "https://shop.example", **preflight}
        )
        assert ok.headers.get("access-control-allow-origin") == "https://shop.example"
        bad = await client.options(
            "/api/v1/me", headers={"Origin": "https://evil.example", **preflight}
        )
        assert bad.headers.get("access-control-allow-origin") is None
        simple = await client.get("/healthz", headers={"Origin": "https://shop.example"})
        assert simple.headers.get("access-control-allow-origin") == "https://shop.example"


async def test_metrics_group_paths_and_list_domain_metrics(api_settings: Settings) -> None:
    async with api_client(api_settings, TEST_HANDLERS) as client:
        for item_id in (101, 202, 303):
            assert (await client.get(f"/api/v1/test-platform/items/{item_id}")).status_code == 200
        response = await client.get("/metrics")
        # Through the public ingress (which adds X-Forwarded-For) the metrics are not served.
        proxied = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"})
        assert_problem(proxied, 404, "not_found")
    assert response.status_code == 200
    text = response.text
    assert 'app_name="ticketbuster"' in text
    assert 'path="/api/v1/test-platform/items/{item_id}"' in text
    assert "/api/v1/test-platform/items/101" not in text  # ids never become series
    for name in (
        "ticketbuster_holds_total",
        "ticketbuster_hold_duration_seconds",
        "ticketbuster_ws_connections",
    ):
        assert name in text


async def test_openapi_31_schema_and_interactive_ui(api_settings: Settings) -> None:
    async with api_client(api_settings) as client:
        schema = (await client.get("/schema/openapi.json")).json()
        assert schema["openapi"].startswith("3.1")
        assert "/healthz" in schema["paths"] and "/api/v1/auth/dev-token" in schema["paths"]
        ui = await client.get("/schema")
        assert ui.status_code == 200 and "<html" in ui.text.lower()
        assert "cdn.jsdelivr.net" in ui.headers["content-security-policy"]


def test_served_by_granian(api_settings: Settings, tmp_path: Path) -> None:
    """The real server: ``python -m api`` (Granian + uvloop) over a loopback socket."""
    with (
        granian_server(api_settings, tmp_path / "granian.log") as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        missing = http.get("/api/v1/nope")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith(PROBLEM)
        assert missing.headers["x-request-id"]
        token = http.post("/api/v1/auth/dev-token", json={"sub": "granian-user"}).json()[
            "access_token"
        ]
        me = http.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json() == {"sub": "granian-user", "roles": ["buyer"], "scopes": []}
        assert "ratelimit-remaining" in me.headers
        assert "litestar_requests_total" in http.get("/metrics").text
    log = (tmp_path / "granian.log").read_text()
    assert '"logger":"ticketbuster.access"' in log  # structured JSON access log
    # SIGTERM: the lifespan closed the pools and the process ended cleanly.
    assert server.proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log


def test_metrics_aggregate_granian_workers(api_settings: Settings, tmp_path: Path) -> None:
    """Two Granian workers: whichever answers /metrics counts the requests of both."""
    s = with_overrides(api_settings, api={"workers": 2})
    env = {"TB_API_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    with (
        granian_server(s, tmp_path / "granian.log", extra_env=env) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        for _ in range(40):
            response = http.get("/api/v1/me", headers={"Connection": "close"})
            assert response.status_code == 401
        for _ in range(4):
            text = http.get("/metrics", headers={"Connection": "close"}).text
            total = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("litestar_requests_total{") and 'path="/api/v1/me"' in line
            )
            assert total == 40, text[:2000]
        files = {p.name for p in (tmp_path / "prom").iterdir()}
    assert len({name.rsplit("_", 1)[-1] for name in files}) >= 2  # one set per worker


_release = asyncio.Event()


@get("/api/v1/test-platform/slow")
async def slow() -> dict[str, bool]:
    await asyncio.wait_for(_release.wait(), timeout=10)
    return {"ok": True}


def same_loop_client(settings: Settings) -> httpx.AsyncClient:
    """The app on this event loop (no lifespan: these handlers need no clients), so
    concurrent requests really overlap."""
    app = create_app(settings, extra_route_handlers=[slow])
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 50000)),
        base_url="http://127.0.0.1:8000",
    )


async def test_overload_is_shed_with_503_not_queued(api_settings: Settings) -> None:
    s = with_overrides(api_settings, api={"max_in_flight": 2, "request_timeout_s": 30.0})
    _release.clear()
    async with same_loop_client(s) as client:
        first = asyncio.create_task(client.get("/api/v1/test-platform/slow"))
        second = asyncio.create_task(client.get("/api/v1/test-platform/slow"))
        await asyncio.sleep(0.3)  # both are inside the handler now
        refused = await client.get("/api/v1/test-platform/slow")
        body = assert_problem(refused, 503, "unavailable")
        assert "capacity" in str(body["detail"])
        assert refused.headers["retry-after"] == "1"
        # Probes are never shed.
        assert (await client.get("/healthz")).status_code == 200
        _release.set()
        assert [(await t).status_code for t in (first, second)] == [200, 200]
        # Capacity is back.
        assert (await client.get("/api/v1/test-platform/slow")).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert 'ticketbuster_requests_shed_total{reason="capacity"}' in metrics


async def test_a_request_that_never_starts_answering_gets_503(api_settings: Settings) -> None:
    s = with_overrides(api_settings, api={"request_timeout_s": 0.5})
    _release.clear()
    async with same_loop_client(s) as client:
        started = asyncio.get_running_loop().time()
        response = await client.get("/api/v1/test-platform/slow")
        elapsed = asyncio.get_running_loop().time() - started
        body = assert_problem(response, 503, "unavailable")
        assert "too long" in str(body["detail"])
        assert elapsed < 5  # not the handler's 10 s
        # The process is fine afterwards.
        assert (await client.get("/api/v1/me")).status_code == 401


async def test_inventory_follows_the_catalogs_partition_plans(
    services: dict[str, str], settings: Settings
) -> None:
    """An event split over two partitions in the catalog is routed by the API's inventory
    without a restart (plans are re-read in the background)."""
    import asyncpg

    from tests.integration.api_servers import one_event_catalog_async

    async with one_event_catalog_async(services["TB_DATABASE_URL"], settings) as catalog:
        s = with_overrides(settings, database={"url": catalog.dsn})
        async with api_client(s) as client:
            app = client.app
            assert app.state.inventory.plan(catalog.event_id).count == 1
            conn = await asyncpg.connect(catalog.dsn)
            try:
                sections = [
                    r["code"]
                    for r in await conn.fetch(
                        "SELECT code FROM catalog.sections WHERE event_id = $1 ORDER BY position",
                        catalog.event_id,
                    )
                ]
                await conn.execute(
                    "UPDATE catalog.events SET partitions = 2 WHERE id = $1", catalog.event_id
                )
                await conn.execute(
                    "UPDATE catalog.sections SET partition = 1 WHERE event_id = $1 AND code = $2",
                    catalog.event_id,
                    sections[-1],
                )
            finally:
                await conn.close()
            # What the background loop does every minute, on the app's own loop and pool.
            await asyncio.to_thread(client.blocking_portal.call, app.state.partition_plans.refresh)
            plan = app.state.inventory.plan(catalog.event_id)
            assert plan.count == 2
            assert plan.sections[sections[-1]] == 1
            assert plan.sections[sections[0]] == 0


async def test_a_bug_outside_the_app_is_still_a_bare_problem_500(api_settings: Settings) -> None:
    app = create_app(api_settings)

    async def broken_layer(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("secret internals")

    app.asgi_handler.app = broken_layer  # type: ignore[attr-defined]  # behind RequestContext
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get("/api/v1/anything")
    body = assert_problem(response, 500, "internal_error")
    assert "secret" not in response.text and body["request_id"] == response.headers["x-request-id"]


def test_an_early_answer_to_an_unread_body_closes_the_connection(
    api_settings: Settings, tmp_path: Path
) -> None:
    """A body over the limit is refused before it is read: the connection must close, or
    the unread bytes would be taken for the client's next request on it."""
    too_big = b'{"sub": "' + b"x" * (api_settings.api.max_body_bytes + 10) + b'"}'
    with (
        granian_server(api_settings, tmp_path / "granian.log") as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        refused = http.post(
            "/api/v1/auth/dev-token", content=too_big, headers={"content-type": "application/json"}
        )
        assert refused.status_code == 413, refused.text
        assert refused.headers.get("connection") == "close"
        # The same client goes on (httpx opens a new connection after "close").
        assert http.get("/api/v1/categories").status_code == 200


async def test_an_address_sending_bad_tokens_is_refused_before_they_are_checked(
    api_settings: Settings,
) -> None:
    limited = with_overrides(api_settings, api={"trusted_proxies": "127.0.0.0/8"})
    headers = {"Authorization": "Bearer not.a.token", "X-Forwarded-For": "198.18.7.9"}
    async with api_client(limited) as client:
        statuses = [
            (await client.get("/api/v1/me", headers=headers)).status_code for _ in range(30)
        ]
        # A burst of bad tokens is checked (401), then the address is refused unchecked.
        first_refusal = statuses.index(429)
        assert first_refusal >= 10 and set(statuses[:first_refusal]) == {401}
        assert set(statuses[first_refusal:]) == {429}
        refused = await client.get("/api/v1/me", headers=headers)
        assert int(refused.headers["retry-after"]) >= 1
        # Another address is not affected.
        other = {**headers, "X-Forwarded-For": "198.18.7.10"}
        assert (await client.get("/api/v1/me", headers=other)).status_code == 401


async def test_the_api_publishes_ticket_keys_from_public_pems_only(
    api_settings: Settings, tmp_path: Path
) -> None:
    """In prod only the issuer holds the private key; the API gets the public half
    (TB_TICKETS_PUBLIC_KEYS_PATH) and refuses to start if given a private key there."""
    from core.tickets import public_jwk

    private = generate_private_key_pem()
    (tmp_path / "public.pem").write_bytes(_public_pem(private))
    (tmp_path / "private.pem").write_bytes(private)
    given = with_overrides(api_settings, tickets={"public_keys_path": str(tmp_path / "public.pem")})
    async with api_client(given) as client:
        keys = (await client.get("/api/v1/tickets/jwks.json")).json()["keys"]
    assert [k["kid"] for k in keys] == [public_jwk(private).kid]  # what the issuer signs with

    leaked = with_overrides(
        api_settings, tickets={"public_keys_path": str(tmp_path / "private.pem")}
    )
    with pytest.raises(Exception) as refused:  # the start-up wraps it in a group
        async with api_client(leaked):
            pass
    assert "TB_TICKETS_PUBLIC_KEYS_PATH names a private key" in _messages(refused.value)


def _public_pem(private: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _messages(exc: BaseException) -> str:
    """Every message in an exception and the groups and causes it wraps."""
    inner = list(getattr(exc, "exceptions", ())) + [e for e in (exc.__cause__,) if e]
    return " | ".join([str(exc), *(_messages(e) for e in inner)])
