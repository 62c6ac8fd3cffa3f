"""The migration runner against a real PostgreSQL: from empty, again, concurrently, and
refusing what it must refuse. Each test makes its own empty database."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from migrations.runner import MIGRATIONS_DIR, MigrationError, discover, ensure_database, migrate


async def _admin(base: str, sql: str) -> None:
    conn = await asyncpg.connect(urlunsplit(urlsplit(base)._replace(path="/postgres")))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def empty_dsn(services: dict[str, str]) -> AsyncIterator[str]:
    """A new, empty database, dropped after the test."""
    base = services["TB_DATABASE_URL"]
    name = f"tb_mig_{secrets.token_hex(4)}"
    dsn = urlunsplit(urlsplit(base)._replace(path=f"/{name}"))
    assert await ensure_database(dsn) is True
    assert await ensure_database(dsn) is False
    yield dsn
    await _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _one(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    target.mkdir()
    for migration in discover():
        shutil.copy(migration.path, target / migration.path.name)
    return target


async def test_from_empty_then_no_op(empty_dsn: str) -> None:
    labels = [m.label for m in discover()]
    assert labels[0] == "0001_catalog"
    assert labels == sorted(labels)

    assert await migrate(empty_dsn) == labels
    assert await migrate(empty_dsn) == []

    conn = await asyncpg.connect(empty_dsn)
    try:
        rows = await conn.fetch("SELECT version, name, checksum FROM public.schema_migrations")
        assert [f"{r['version']}_{r['name']}" for r in sorted(rows)] == labels
        assert {r["checksum"] for r in rows} == {m.checksum for m in discover()}
        tables = {
            r["t"]
            for r in await conn.fetch(
                "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables"
                " WHERE table_schema IN ('catalog', 'orders')"
            )
        }
        assert {
            "catalog.categories",
            "catalog.venues",
            "catalog.events",
            "catalog.price_categories",
            "catalog.sections",
            "catalog.rows",
            "catalog.seats",
        } <= tables
        assert await conn.fetchval("SELECT count(*) FROM catalog.categories") == 6
    finally:
        await conn.close()


async def test_two_runners_at_once_apply_each_migration_once(empty_dsn: str) -> None:
    first, second = await asyncio.gather(migrate(empty_dsn), migrate(empty_dsn))
    labels = [m.label for m in discover()]
    # The advisory lock serialises them: one applies everything, the other finds nothing.
    assert sorted([first, second], key=len) == [[], labels]
    assert await _one(empty_dsn, "SELECT count(*) FROM public.schema_migrations") == len(labels)


async def test_new_migration_is_applied_alone(empty_dsn: str, tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    await migrate(empty_dsn, directory)
    (directory / "9001_extra.sql").write_text("CREATE TABLE catalog.extra (id int);\n")
    assert await migrate(empty_dsn, directory) == ["9001_extra"]
    assert await migrate(empty_dsn, directory) == []


async def test_failing_migration_leaves_nothing_behind(empty_dsn: str, tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    await migrate(empty_dsn, directory)
    (directory / "9002_broken.sql").write_text(
        "CREATE TABLE catalog.half (id int);\nSELECT no_such_function();\n"
    )
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(empty_dsn, directory)
    assert await _one(empty_dsn, "SELECT to_regclass('catalog.half')") is None
    assert (
        await _one(
            empty_dsn, "SELECT count(*) FROM public.schema_migrations WHERE version = '9002'"
        )
        == 0
    )
    # The lock was released: after the fix the next run applies it.
    (directory / "9002_broken.sql").write_text("CREATE TABLE catalog.half (id int);\n")
    assert await migrate(empty_dsn, directory) == ["9002_broken"]


async def test_edited_migration_is_refused(empty_dsn: str, tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    await migrate(empty_dsn, directory)
    path = directory / "0001_catalog.sql"
    path.write_text(path.read_text() + "\n-- edited afterwards\n")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        await migrate(empty_dsn, directory)


async def test_unknown_applied_version_is_refused(empty_dsn: str, tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    await migrate(empty_dsn, directory)
    (directory / "0001_catalog.sql").rename(tmp_path / "gone.sql")
    with pytest.raises(MigrationError, match="not in this checkout"):
        await migrate(empty_dsn, directory)


def test_shipped_files_are_numbered_and_unique() -> None:
    names = sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
    assert [m.path.name for m in discover()] == names
    assert len({n[:4] for n in names}) == len(names)


def test_cli_up_creates_the_database_and_is_idempotent(services: dict[str, str]) -> None:
    base = services["TB_DATABASE_URL"]
    name = f"tb_mig_cli_{secrets.token_hex(4)}"
    dsn = urlunsplit(urlsplit(base)._replace(path=f"/{name}"))
    env = {**os.environ, **services}
    try:
        first = subprocess.run(
            [sys.executable, "-m", "migrations", "up", "--dsn", dsn],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert "created database" in first.stdout
        assert "applied 0001_catalog" in first.stdout
        second = subprocess.run(
            [sys.executable, "-m", "migrations", "up", "--dsn", dsn],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert second.stdout.strip() == "database is up to date"
        status = subprocess.run(
            [sys.executable, "-m", "migrations", "status", "--dsn", dsn],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert all(line.startswith("applied") for line in status.stdout.splitlines())
    finally:
        asyncio.run(_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
