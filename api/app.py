"""The Litestar application factory: ``create_app(settings=None)``.

Serve with ``uv run python -m api`` (Granian + uvloop; ``api.app:create_app``
is the factory).

One lifespan creates and closes the shared clients; handlers reach them
through dependency injection, never through module globals:

=====================  ==================================================
dependency             what
=====================  ==================================================
``settings``           ``core.settings.Settings``
``db_pool``            ``asyncpg.Pool``
``redis``              ``redis.asyncio.RedisCluster`` (bytes, not decoded)
``inventory``          ``core.inventory.Inventory``
``kafka_producer``     connected ``aiokafka.AIOKafkaProducer`` (else 503)
``principal``          ``api.auth.Principal`` of a valid bearer token (else 401)
``optional_principal`` the ``Principal`` or None
=====================  ==================================================

``app.state`` also holds ``kafka`` (the producer handle, with ``check()``),
``token_verifier`` (``api.auth.tokens.TokenVerifier``, e.g. for WebSocket tokens),
``dev_issuer`` (or None) and ``rate_limiter``.

Declare them explicitly (Litestar 2.23+ deprecates inferred injection), e.g.
``principal: NamedDependency[Principal]`` with ``from litestar.di import NamedDependency``.

Adding routes: list your module in ``DOMAIN_ROUTE_MODULES``. It may expose
``create_route_handlers(settings)`` or ``route_handlers`` (a list of
controllers, routers or handlers); otherwise every Controller, Router and
route handler *defined* in the module is registered. Domain lifespans go in
``DOMAIN_LIFESPANS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
from collections.abc import AsyncIterator, Sequence
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer
from litestar import Controller, Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.types import ControllerRouterHandler
from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode

import api.metrics  # noqa: F401 - registers the domain metrics for /metrics
from api.auth.dev_issuer import DevIssuer, create_dev_issuer_handlers, load_or_create_key
from api.auth.principal import provide_optional_principal, provide_principal
from api.auth.routes import me
from api.auth.tokens import JwksCache, TokenVerifier, http_jwks_fetcher
from api.direct import DirectRoutes
from api.edge import Edge, cors_headers
from api.errors import exception_handler
from api.health import healthz, metrics, readyz
from api.holds.controllers import DIRECT_ROUTE as HOLD_ROUTE
from api.kafka import KafkaProducerHandle
from api.logs import configure_logging
from api.metrics import TALLY
from api.openapi import document_problems
from api.orders.controllers import DIRECT_ROUTE as ORDER_ROUTE
from api.partitions import PartitionPlans
from api.ratelimit import RateLimiter
from api.startup import check_api_settings, split_list
from api.tickets.keys import ticket_jwks
from core.breaker import Breaker, GuardedPool
from core.holds import AttemptBudget
from core.inventory import Inventory
from core.inventory_link import ScriptLink
from core.settings import Settings, load_settings

log = logging.getLogger("ticketbuster.api")

API_VERSION = "1.0.0"

# Each domain's routes. A module that does not exist yet is skipped (areas land
# their packages at different times); an import error *inside* one is raised.
DOMAIN_ROUTE_MODULES: tuple[str, ...] = (
    "api.catalog.controllers",
    "api.holds.controllers",
    "api.orders.controllers",
    "api.tickets.controllers",
    "api.checkins.controllers",
    "api.delivery.controllers",
    "api.orders.customers",
    "api.support.controllers",
    "api.live.controllers",
    "api.organizer.controllers",
    "api.queue.controllers",
    "api.payments.controllers",
    "api.payments.simulator",
)


def _domain_route_handlers(settings: Settings) -> list[ControllerRouterHandler]:
    handlers: list[ControllerRouterHandler] = []
    for name in DOMAIN_ROUTE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                log.debug("route module %s not present", name)
                continue
            raise
        factory = getattr(module, "create_route_handlers", None)
        if factory is not None:
            handlers.extend(factory(settings))
        elif hasattr(module, "route_handlers"):
            handlers.extend(module.route_handlers)
        else:
            handlers.extend(_defined_handlers(module))
    return handlers


def _defined_handlers(module: ModuleType) -> list[ControllerRouterHandler]:
    """Controllers, routers and route handlers defined (not imported) in ``module``."""
    found: list[ControllerRouterHandler] = []
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Controller) and value is not Controller:
            if value.__module__ == module.__name__:
                found.append(value)
        elif isinstance(value, Router | BaseRouteHandler):
            fn = getattr(value, "fn", None)
            if isinstance(value, Router) or getattr(fn, "__module__", None) == module.__name__:
                found.append(value)
    return found


def _web_route_handlers(settings: Settings) -> list[ControllerRouterHandler]:
    """The PWA at ``/``: always last, it claims only its own folders and files."""
    try:
        from api.web import create_web_handlers
    except ModuleNotFoundError:
        return []
    return list(create_web_handlers(settings))


def route_handlers(settings: Settings) -> list[ControllerRouterHandler]:
    handlers: list[ControllerRouterHandler] = [healthz, readyz, metrics, me]
    if settings.auth.dev_issuer_enabled:
        handlers.extend(create_dev_issuer_handlers(settings.auth))
    handlers.extend(_domain_route_handlers(settings))
    handlers.extend(_web_route_handlers(settings))
    return handlers


# --- lifespan -------------------------------------------------------------------


def _create_inventory(redis: RedisCluster, settings: Settings, plans: PartitionPlans) -> Inventory:
    """``core.inventory.Inventory`` over the cluster client, with the catalog's partition
    plans (events split over several hash slots)."""
    link = ScriptLink.for_client(redis, replica_wait_ms=settings.redis.confirm_wait_ms)
    return Inventory(redis, settings.holds, plans=plans, link=link)


async def _keep_session(_: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own rollback of an open
    transaction. The default also sends ``RESET ALL; UNLISTEN *; CLOSE ALL;
    pg_advisory_unlock_all()``: a round trip per query for state the API never creates
    (no SET, LISTEN, cursors or advisory locks)."""


async def _create_db_pool(settings: Settings) -> asyncpg.Pool:
    db = settings.database
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            db.url,
            min_size=db.min_pool,
            max_size=db.max_pool,
            command_timeout=10,
            reset=_keep_session,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        # Start anyway (browsing from Redis, /readyz says why); connect on first use.
        log.error("PostgreSQL unavailable at startup: %s: %s", type(exc).__name__, exc)
        pool = await asyncpg.create_pool(
            db.url, min_size=0, max_size=db.max_pool, reset=_keep_session
        )
    return pool


async def _close_pool(pool: asyncpg.Pool, timeout_s: float = 10.0) -> None:
    """Close gracefully, but never let a stuck connection hold up the shutdown."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except TimeoutError:
        log.warning("PostgreSQL pool did not close in %ss; terminating it", timeout_s)
        pool.terminate()


def _create_redis(settings: Settings) -> RedisCluster:
    rs = settings.redis
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in rs.startup_nodes()],
        decode_responses=False,
        max_connections=rs.max_connections,
        socket_timeout=rs.socket_timeout_s,
        socket_connect_timeout=rs.socket_timeout_s,
    )


def freeze_startup_heap() -> None:
    """Move everything made at startup (modules, the app, its routes, clients) out of the
    garbage collector's sight (``gc.freeze``): a full collection then walks only what
    requests made, instead of the whole heap every few hundred requests (py-spy put
    ``gc_collect_main`` at 13-15% of an API worker's CPU in an order run)."""
    gc.collect()
    gc.freeze()


@contextlib.asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    """Create the shared clients on startup; close them on shutdown."""
    state = app.state
    settings: Settings = state.settings
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(TALLY.flush)  # the last requests' counts, on the way out
        redis = _create_redis(settings)
        stack.push_async_callback(redis.aclose)
        try:
            await redis.initialize()
        except Exception as exc:
            log.error("Redis Cluster unavailable at startup: %s: %s", type(exc).__name__, exc)
        state.redis = redis

        # Behind a breaker: while PostgreSQL is known to be away, its callers get 503 at once.
        state.db_pool = GuardedPool(await _create_db_pool(settings), Breaker("postgres"))
        stack.push_async_callback(_close_pool, state.db_pool)

        kafka = KafkaProducerHandle(settings.kafka)
        await kafka.start()
        stack.push_async_callback(kafka.stop)
        state.kafka = kafka

        plans = PartitionPlans(state.db_pool)
        await plans.start()
        stack.push_async_callback(plans.stop)
        state.partition_plans = plans
        state.inventory = _create_inventory(redis, settings, plans)
        stack.callback(state.inventory.close)
        holds = settings.holds
        state.hold_budget = (
            AttemptBudget(holds.attempts_per_minute, holds.attempts_burst)
            if holds.attempts_per_minute > 0
            else None
        )
        # The limiter's scripts share the inventory's connections (one per primary).
        state.rate_limiter = RateLimiter(link=state.inventory.link)

        http = httpx.AsyncClient(timeout=5.0, follow_redirects=False)
        stack.push_async_callback(http.aclose)
        stack.push_async_callback(_close_payment_provider, state)
        state.dev_issuer = None
        if settings.auth.dev_issuer_enabled:
            dev = await DevIssuer.create(settings.auth, redis)
            state.dev_issuer = dev
        if settings.tickets.public_keys_path:
            ticket_jwks(state)  # at start: a missing file or a private key stops the pod
        verifier = TokenVerifier(settings.auth, _jwks_cache(settings, state, http))
        await verifier.keys.refresh(force=True)  # warm: the first request pays no fetch
        state.token_verifier = verifier
        freeze_startup_heap()
        yield


async def _close_payment_provider(state: State) -> None:
    """The provider is made on the first payment request (api/payments/controllers.py)."""
    provider = getattr(state, "payment_provider", None)
    if provider is not None:
        await provider.aclose()


def _jwks_cache(settings: Settings, state: State, http: httpx.AsyncClient) -> JwksCache:
    dev: DevIssuer | None = state.dev_issuer
    if dev is None or settings.auth.jwks_url:
        return JwksCache(http_jwks_fetcher(settings.auth, http))

    async def dev_keys() -> dict[str, Any]:
        # Our own key, plus the shared one in case another replica made it.
        keys = [dev.public_jwk]
        shared = DevIssuer(settings.auth, await load_or_create_key(state.redis))
        if shared.kid != dev.kid:
            keys.append(shared.public_jwk)
        return {"keys": keys}

    return JwksCache(dev_keys)


# Lifespans of domain modules ("module:attribute"), entered after the main one, so the
# shared clients already are in ``app.state``; exited before it closes them.
DOMAIN_LIFESPANS: tuple[str, ...] = (
    "api.live.lifespan:live_lifespan",  # the live hub (area 7)
    "api.payments.simulator:simulator_lifespan",  # the simulated provider's callbacks
)


def _domain_lifespans() -> list[Any]:
    lifespans: list[Any] = []
    for spec in DOMAIN_LIFESPANS:
        module_name, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        lifespans.append(getattr(module, attribute))
    return lifespans


# --- dependencies ---------------------------------------------------------------


async def provide_db_pool(state: State) -> asyncpg.Pool:
    pool: asyncpg.Pool = state.db_pool
    return pool


async def provide_redis(state: State) -> RedisCluster:
    redis: RedisCluster = state.redis
    return redis


async def provide_inventory(state: State) -> Inventory:
    inventory: Inventory = state.inventory
    return inventory


async def provide_kafka_producer(state: State) -> AIOKafkaProducer:
    kafka: KafkaProducerHandle = state.kafka
    return kafka.producer()


async def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


# --- ASGI wrapping ---------------------------------------------------------------


def _openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="TicketBuster API",
        version=API_VERSION,
        description=(
            "Flash-sale ticketing. Errors are RFC 9457 `application/problem+json` with a "
            "stable `type` (https://ticketbuster.dev/problems/<code>). Authenticated "
            "endpoints take a bearer JWT."
        ),
        path="/schema",
        render_plugins=[ScalarRenderPlugin(path="/"), SwaggerRenderPlugin(path="/swagger")],
        components=Components(
            security_schemes={
                "BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
            }
        ),
        tags=[
            Tag(name="ops", description="Probes and metrics"),
            Tag(name="auth", description="The built-in dev issuer (dev only)"),
        ],
        use_handler_docstrings=True,
    )


def create_app(
    settings: Settings | None = None,
    *,
    extra_route_handlers: Sequence[ControllerRouterHandler] = (),
) -> Litestar:
    """Build the API. ``settings`` default to ``load_settings()`` (``TB_*`` variables)."""
    settings = settings or load_settings()
    check_api_settings(settings)
    configure_logging()
    cors = CORSConfig(
        allow_origins=split_list(settings.api.cors_origins),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "If-None-Match",
            "X-Request-ID",
        ],
        expose_headers=[
            "ETag",
            "Retry-After",
            "RateLimit",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
            "RateLimit-Policy",
            "X-Request-ID",
            "Location",
        ],
        max_age=600,
    )
    app = Litestar(
        route_handlers=[*route_handlers(settings), *extra_route_handlers],
        lifespan=[lifespan, *_domain_lifespans()],
        on_startup=[document_problems],
        state=State({"settings": settings}),
        dependencies={
            "settings": Provide(provide_settings),
            "db_pool": Provide(provide_db_pool),
            "redis": Provide(provide_redis),
            "inventory": Provide(provide_inventory),
            "kafka_producer": Provide(provide_kafka_producer),
            "principal": Provide(provide_principal),
            "optional_principal": Provide(provide_optional_principal),
        },
        exception_handlers={Exception: exception_handler},
        openapi_config=_openapi_config(),
        request_max_body_size=settings.api.max_body_bytes,
        cors_config=cors,
        logging_config=None,
        debug=False,
    )
    # The edge wraps the whole handler (CORS, router, exception handler), so 404s for
    # unknown paths and the edge's own 429s/503s get the request id and security headers too.
    state = app.state
    issuer = urlsplit(settings.auth.issuer)
    direct = (
        DirectRoutes(
            state,
            [HOLD_ROUTE, ORDER_ROUTE],
            max_body_bytes=settings.api.max_body_bytes,
            cors_headers=lambda scope: cors_headers(scope, cors),
        )
        if settings.api.direct_routes
        else None
    )
    edge = Edge(
        app.asgi_handler,
        settings.api,
        verifier=lambda: getattr(state, "token_verifier", None),
        limiter=lambda: getattr(state, "rate_limiter", None),
        cors=cors,
        hsts=settings.env == "prod",
        # The PWA fetches the issuer's discovery document and token endpoint.
        connect_origins=(f"{issuer.scheme}://{issuer.netloc}",) if issuer.netloc else (),
        direct=direct,
    )
    app.on_shutdown.append(edge.close)
    app.asgi_handler = edge
    return app
