"""Rate limits in Redis Cluster hold across API replicas; refusals are 429 problem+json with
Retry-After; X-Forwarded-For counts only from trusted proxies."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import httpx
import pytest
from redis.asyncio import RedisCluster

from api.ratelimit import RateLimiter, burst_of
from core.settings import Settings
from tests.integration.api_servers import api_client, free_port, granian_server, with_overrides


def random_ip() -> str:
    """A documentation-range address no other test uses."""
    return f"198.18.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture(scope="module")
def limited(settings: Settings) -> Settings:
    # Trust the in-process test client's peer, so each test can pick its own client address.
    return with_overrides(
        settings,
        api={
            "rate_limit_per_ip": 7,
            "rate_limit_per_user": 5,
            "rate_limit_window_s": 60,
            "trusted_proxies": "127.0.0.0/8",
        },
    )


async def _token(client: httpx.AsyncClient, sub: str, ip: str) -> str:
    response = await client.post(
        "/api/v1/auth/dev-token", json={"sub": sub}, headers={"X-Forwarded-For": ip}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def test_user_limit_holds_across_two_instances(limited: Settings) -> None:
    sub = f"rl-{uuid.uuid4().hex[:12]}"
    async with api_client(limited) as first, api_client(limited) as second:
        token = await _token(first, sub, random_ip())
        remaining = []
        for i in range(5):  # alternate replicas; each request from a different IP
            client = first if i % 2 == 0 else second
            response = await client.get(
                "/api/v1/me",
                headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": random_ip()},
            )
            assert response.status_code == 200, response.text
            assert response.headers["ratelimit-limit"] == "5"
            remaining.append(int(response.headers["ratelimit-remaining"]))
            # The IETF structured fields say the same, naming the policy.
            window = limited.api.rate_limit_window_s
            assert response.headers["ratelimit-policy"] == f'"user";q=5;w={window}'
            assert response.headers["ratelimit"].startswith(f'"user";r={remaining[-1]};t=')
        assert remaining == [4, 3, 2, 1, 0]
        refused = await second.get(
            "/api/v1/me",
            headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": random_ip()},
        )
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"] == "https://ticketbuster.dev/problems/rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 12
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.headers["ratelimit"].startswith('"user";r=0;t=')
        # Another user from the same replicas is not affected.
        other = await _token(first, f"rl-{uuid.uuid4().hex[:12]}", random_ip())
        ok = await first.get("/api/v1/me", headers={"Authorization": f"Bearer {other}"})
        assert ok.status_code == 200


async def test_ip_limit_counts_the_forwarded_client_across_instances(limited: Settings) -> None:
    ip = random_ip()
    async with api_client(limited) as first, api_client(limited) as second:
        statuses = []
        for i in range(9):
            client = first if i % 2 == 0 else second
            response = await client.get("/api/v1/no-such-route", headers={"X-Forwarded-For": ip})
            statuses.append(response.status_code)
        assert statuses == [404] * 7 + [429] * 2
        # The PWA (an allowed origin) can read the refusal and its Retry-After.
        refused = await first.get(
            "/api/v1/no-such-route",
            headers={"X-Forwarded-For": ip, "Origin": "http://127.0.0.1:8000"},
        )
        assert refused.status_code == 429
        assert refused.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
        assert "Retry-After" in refused.headers["access-control-expose-headers"]
        # A different client behind the same proxy still gets through.
        response = await first.get(
            "/api/v1/no-such-route", headers={"X-Forwarded-For": random_ip()}
        )
        assert response.status_code == 404
        # A signed-in buyer behind that address spends their own budget, not the address's
        # (thousands of buyers share a carrier NAT in a flash sale).
        token = await _token(second, f"rl-{uuid.uuid4().hex[:12]}", random_ip())
        me = await first.get(
            "/api/v1/me", headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": ip}
        )
        assert me.status_code == 200 and me.headers["ratelimit-limit"] == "5"
        # Probes and the PWA are never limited.
        assert (await first.get("/healthz", headers={"X-Forwarded-For": ip})).status_code == 200


async def test_forwarded_for_is_ignored_without_trusted_proxies(settings: Settings) -> None:
    untrusted = with_overrides(
        settings, api={"rate_limit_per_ip": 3, "rate_limit_window_s": 3600, "trusted_proxies": ""}
    )
    # The peer is the test client; rotating X-Forwarded-For must not escape the limit.
    # Window of an hour with limit 3: a unique policy key, so no other test shares it.
    async with api_client(untrusted) as client:
        statuses = [
            (
                await client.get("/api/v1/nothing", headers={"X-Forwarded-For": random_ip()})
            ).status_code
            for _ in range(4)
        ]
    assert 429 in statuses


async def test_with_redis_down_each_replica_still_enforces_the_limit(settings: Settings) -> None:
    """Redis unreachable: the limiter neither fails open (a sale would lose its limits at
    the worst moment) nor turns into 500s; the replica decides alone, with the same limit."""
    port = free_port()  # nothing listens there
    broken = with_overrides(
        settings,
        redis={"cluster_nodes": f"127.0.0.1:{port}", "socket_timeout_s": 0.5},
        api={"rate_limit_per_ip": 1},
        kafka={"request_timeout_s": 1.0},
    )
    async with api_client(broken) as client:
        first = await client.get("/api/v1/nothing")
        assert first.status_code == 404  # served, not 500
        assert first.headers["ratelimit-limit"] == "1"
        for _ in range(2):
            refused = await client.get("/api/v1/nothing")
            assert refused.status_code == 429, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "redis" in ready.json()["failing"]
        metrics = (await client.get("/metrics")).text
        assert "ticketbuster_ratelimit_local_decisions_total 3.0" in metrics


async def test_gcra_refills_smoothly(redis_cluster: RedisCluster) -> None:
    limiter = RateLimiter(redis_cluster, namespace=f"tb:rl:test:{uuid.uuid4().hex}")
    ident = uuid.uuid4().hex
    decisions = [await limiter.hit("ip", ident, 4, 2) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, True, False]
    assert decisions[-1].retry_after_s == 1  # one request every 0.5 s comes back
    await asyncio.sleep(0.6)
    assert (await limiter.hit("ip", ident, 4, 2)).allowed
    assert not (await limiter.hit("ip", ident, 4, 2)).allowed


async def test_concurrent_requests_never_exceed_the_limit(redis_cluster: RedisCluster) -> None:
    limiter = RateLimiter(redis_cluster, namespace=f"tb:rl:test:{uuid.uuid4().hex}")
    ident = uuid.uuid4().hex
    decisions = await asyncio.gather(*(limiter.hit("user", ident, 10, 60) for _ in range(40)))
    assert sum(d.allowed for d in decisions) == 10


def test_limit_holds_across_two_granian_processes(limited: Settings, tmp_path: Path) -> None:
    """Two real servers (Granian), one Redis Cluster: the user's budget is shared."""
    # Both servers see the peer 127.0.0.1: a generous IP limit, so only the user limit bites.
    s = with_overrides(limited, api={"trusted_proxies": "", "rate_limit_per_ip": 997})
    with (
        granian_server(s, tmp_path / "a.log") as a,
        granian_server(s, tmp_path / "b.log") as b,
        httpx.Client(timeout=10) as http,
    ):
        token = http.post(
            a.base_url + "/api/v1/auth/dev-token", json={"sub": f"rl-{uuid.uuid4().hex}"}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        statuses = [
            http.get((a if i % 2 else b).base_url + "/api/v1/me", headers=headers).status_code
            for i in range(7)
        ]
    assert statuses == [200] * 5 + [429] * 2


async def test_a_huge_limit_is_just_generous(redis_cluster: RedisCluster) -> None:
    """Benchmarks set limits like 10^9/min: the script must not fail (expire time 0) and
    fall back to fail-open; every request is simply allowed."""
    limiter = RateLimiter(redis_cluster, namespace=f"tb:rl:test:{uuid.uuid4().hex}")
    ident = uuid.uuid4().hex
    decisions = [await limiter.hit("ip", ident, 1_000_000_000, 60) for _ in range(20)]
    assert all(d.allowed for d in decisions)
    # What is left is the burst (10 s worth of the budget), less the 20 spent.
    assert decisions[-1].remaining >= burst_of(1_000_000_000, 60, 10.0) - 20


async def test_a_refused_client_is_refused_locally_until_its_retry_time(
    redis_cluster: RedisCluster,
) -> None:
    """Once refused, a client flooding one replica costs Redis nothing until its Retry-After."""
    namespace = f"tb:rl:test:{uuid.uuid4().hex}"
    limiter = RateLimiter(redis_cluster, namespace=namespace)
    ident = uuid.uuid4().hex
    assert [(await limiter.hit("ip", ident, 2, 2)).allowed for _ in range(3)] == [True, True, False]
    # Forget the client in Redis: only the local memory can refuse it now.
    await redis_cluster.delete(f"{namespace}:ip:2/2:{ident}")
    again = await limiter.hit("ip", ident, 2, 2)
    assert not again.allowed and again.retry_after_s == 1
    await asyncio.sleep(1.1)  # past the Retry-After: Redis decides again
    assert (await limiter.hit("ip", ident, 2, 2)).allowed
