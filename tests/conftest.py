"""Fixtures shared by every test folder.

Integration and e2e tests run against real servers started by
``core.devservices`` (Redis Cluster, PostgreSQL, the Tansu Kafka broker). Each
test session gets its own database (built by the real migration runner) and its
own Kafka topic prefix, so several runs on one machine do not collide.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from core import devservices
from core.settings import Settings, load_settings

SESSION_TAG = secrets.token_hex(3)


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    """Start (or reuse) the local servers; their TB_* variables go into os.environ."""
    env = devservices.up()
    os.environ.update(env)
    os.environ.setdefault("TB_ENV", "test")
    # The tests sign in with the built-in dev issuer (off unless asked for), also in the
    # API processes they start from this environment.
    os.environ.setdefault("TB_AUTH_DEV_ISSUER_ENABLED", "true")
    return env


@pytest.fixture(scope="session")
def kafka_bootstrap(services: dict[str, str]) -> str:
    return services["TB_KAFKA_BOOTSTRAP"]


@pytest.fixture(scope="session")
def topic_prefix() -> str:
    """A topic prefix unique to this test session."""
    return f"t{SESSION_TAG}."


async def _admin_execute(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(urlunsplit(urlsplit(url)._replace(path="/postgres")))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_dsn(services: dict[str, str]) -> Iterator[str]:
    """A fresh database for this session, migrated by the real runner, dropped afterwards."""
    from migrations.runner import migrate

    base = services["TB_DATABASE_URL"]
    name = f"tb_test_{SESSION_TAG}"
    dsn = urlunsplit(urlsplit(base)._replace(path=f"/{name}"))
    asyncio.run(_admin_execute(base, f'CREATE DATABASE "{name}"'))
    asyncio.run(migrate(dsn))
    os.environ["TB_TEST_DATABASE_URL"] = dsn
    yield dsn
    asyncio.run(_admin_execute(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def settings(services: dict[str, str], topic_prefix: str) -> Settings:
    """Settings that point at the test servers (database: the session's own, when used)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("TB_")}
    env.update(services)
    env["TB_ENV"] = "test"
    env.setdefault("TB_AUTH_DEV_ISSUER_ENABLED", "true")  # see services()
    env["TB_KAFKA_TOPIC_PREFIX"] = topic_prefix
    if "TB_TEST_DATABASE_URL" in os.environ:
        env["TB_DATABASE_URL"] = os.environ["TB_TEST_DATABASE_URL"]
    return load_settings(env)


@pytest.fixture(scope="session")
def db_settings(settings: Settings, pg_dsn: str, services: dict[str, str]) -> Settings:
    """Settings whose database is this session's freshly migrated one."""
    import msgspec

    return msgspec.structs.replace(
        settings, database=msgspec.structs.replace(settings.database, url=pg_dsn)
    )


@pytest.fixture
async def redis_cluster(services: dict[str, str]) -> AsyncIterator[object]:
    """A redis.asyncio.RedisCluster client on the test cluster (bytes responses)."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    nodes = [
        ClusterNode(host, int(port))
        for host, _, port in (
            n.rpartition(":") for n in services["TB_REDIS_CLUSTER_NODES"].split(",")
        )
    ]
    client = RedisCluster(startup_nodes=nodes, decode_responses=False)
    await client.initialize()
    yield client
    await client.aclose()


def fresh_event_id() -> int:
    """An event id no other test (or concurrent run) uses."""
    return secrets.randbelow(2**40) + 10**12
