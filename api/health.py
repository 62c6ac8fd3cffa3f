"""Probes and metrics: ``/healthz`` (alive), ``/readyz`` (dependencies), ``/metrics``."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Final

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from api.metrics import TALLY
from core.breaker import Breaker
from core.errors import NotFound, Unavailable

CHECK_TIMEOUT_S = 2.0


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str
    checks: dict[str, str]
    # Circuit breakers (core/breaker.py): "postgres", "kafka", "redis.<host:port>" ->
    # closed | half_open | open.
    breakers: dict[str, str] = msgspec.field(default_factory=dict)
    # Dependencies that are down but not needed to serve (only purchases need the broker;
    # they answer 503 + Retry-After meanwhile): the pod stays in rotation.
    degraded: list[str] = msgspec.field(default_factory=list)


@get("/healthz", tags=["ops"], summary="Liveness", cache=False)
async def healthz() -> Health:
    """The process answers. Touches no dependency (a Redis outage must not restart pods)."""
    return Health(status="ok")


async def _check_redis(state: State) -> None:
    redis = getattr(state, "redis", None)
    if redis is None:
        raise RuntimeError("no client")
    # CLUSTER INFO rather than PING (which reaches one node): "ok" means every slot is
    # served, so a primary that is down and not yet failed over makes the pod unready,
    # while a lost replica does not.
    info = await redis.cluster_info()
    cluster_state = info.get("cluster_state")
    if isinstance(cluster_state, bytes):
        cluster_state = cluster_state.decode()
    if cluster_state != "ok":
        raise RuntimeError(f"cluster_state {cluster_state}")


async def _check_postgres(state: State) -> None:
    pool = getattr(state, "db_pool", None)
    if pool is None:
        raise RuntimeError("no pool")
    async with pool.acquire(timeout=CHECK_TIMEOUT_S) as conn:
        await conn.fetchval("SELECT 1")


async def _check_kafka(state: State) -> None:
    kafka = getattr(state, "kafka", None)
    if kafka is None or not await kafka.check(timeout_s=CHECK_TIMEOUT_S):
        raise RuntimeError("brokers unreachable")


async def _run(check: Any, state: State) -> str:
    try:
        await asyncio.wait_for(check(state), CHECK_TIMEOUT_S)
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


def _breakers(state: State) -> dict[str, str]:
    """The circuit breakers' states, beside the live checks."""
    out: dict[str, str] = {}
    pool = getattr(state, "db_pool", None)
    if isinstance(getattr(pool, "breaker", None), Breaker):
        out["postgres"] = pool.breaker.state  # type: ignore[union-attr]
    kafka = getattr(state, "kafka", None)
    if isinstance(getattr(kafka, "breaker", None), Breaker):
        out["kafka"] = kafka.breaker.state  # type: ignore[union-attr]
    inventory = getattr(state, "inventory", None)
    link = getattr(inventory, "link", None)
    if link is not None:
        for node, node_state in link.breaker_states().items():
            out[f"redis.{node}"] = node_state
    return out


# What a pod needs to be in rotation (see readyz).
REQUIRED: Final = frozenset({"redis", "postgres"})


@get("/readyz", tags=["ops"], summary="Readiness", cache=False)
async def readyz(state: State) -> Readiness:
    """Ready when what a pod needs to serve answers: Redis Cluster (holds, the live seat
    map) and PostgreSQL (the catalog, orders, tickets); otherwise a 503 problem naming the
    failing dependencies. Kafka is checked and reported, but a broker blip does not take
    the pods out of rotation: browsing and holds do not need it, and purchases answer
    503 + Retry-After while it is away (its breaker, api/kafka.py)."""
    names = ("redis", "postgres", "kafka")
    results = await asyncio.gather(
        _run(_check_redis, state), _run(_check_postgres, state), _run(_check_kafka, state)
    )
    checks = dict(zip(names, results, strict=True))
    down = [name for name, result in checks.items() if result != "ok"]
    failing = [name for name in down if name in REQUIRED]
    degraded = [name for name in down if name not in REQUIRED]
    breakers = _breakers(state)
    if failing:
        raise Unavailable(
            f"Not ready: {', '.join(failing)} unavailable.",
            retry_after_s=5,
            failing=failing,
            checks=checks,
            breakers=breakers,
        )
    return Readiness(status="ok", checks=checks, breakers=breakers, degraded=degraded)


@get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus text format; aggregates all worker processes when
    ``PROMETHEUS_MULTIPROC_DIR`` is set (Granian with several workers).

    Prometheus scrapes the pod directly; a request that came through a proxy (the public
    ingress adds ``X-Forwarded-For``) gets a 404, so the metrics are not published."""
    headers = request.headers
    if "x-forwarded-for" in headers or "forwarded" in headers:
        raise NotFound("Not found.")
    TALLY.flush()  # this worker's request counts, up to now
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST, status_code=200)
