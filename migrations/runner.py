"""Apply numbered plain-SQL migrations to PostgreSQL.

Each file ``migrations/NNNN_name.sql`` is one migration. The runner:

- takes a session advisory lock, so two runners at once (two pods starting, a test
  session next to ``make dev``) apply each migration exactly once — the second waits;
- records every applied version with the SHA-256 of its file in ``public.schema_migrations``;
- applies each pending file and its bookkeeping row in ONE transaction, so a failing
  migration leaves nothing half-applied and is retried on the next run;
- refuses to run when an applied file was edited afterwards (checksum mismatch) or when
  the database has a version this checkout does not know (older code, newer schema).

Running it again is a no-op. Migrations are forward-only: fix a mistake with a new file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parent
_FILE_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

# Arbitrary constant shared by every runner: pg_advisory_lock(bigint) key.
# "tbmigrat" as 8 ASCII bytes, so it is recognisable in pg_locks.
ADVISORY_LOCK_KEY = int.from_bytes(b"tbmigrat", "big") & 0x7FFF_FFFF_FFFF_FFFF

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    version     text PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migration files and the database disagree; a human must look."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str  # "0001"
    name: str  # "catalog"
    path: Path
    sql: str
    checksum: str  # sha256 hex of the file's bytes

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All ``NNNN_name.sql`` files in ``directory``, in version order."""
    found: list[Migration] = []
    seen: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE_RE.match(path.name)
        if match is None or not path.is_file():
            continue
        version = match["version"]
        if version in seen:
            raise MigrationError(
                f"two migrations share version {version}: {seen[version].name}, {path.name}"
            )
        seen[version] = path
        data = path.read_bytes()
        found.append(
            Migration(
                version=version,
                name=match["name"],
                path=path,
                sql=data.decode("utf-8"),
                checksum=hashlib.sha256(data).hexdigest(),
            )
        )
    return found


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration; return the labels applied (``["0001_catalog", ...]``).

    An up-to-date database returns ``[]``. Raises :class:`MigrationError` when an applied
    file changed or the database knows a version that is not on disk.
    """
    migrations = discover(directory)
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        # Session-level lock: held across the per-migration transactions below and
        # released in ``finally`` (or by the server if this process dies).
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            return await _apply_pending(conn, migrations)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


async def _apply_pending(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    await conn.execute(_BOOKKEEPING)
    rows = await conn.fetch("SELECT version, name, checksum FROM public.schema_migrations")
    applied = {row["version"]: row for row in rows}
    on_disk = {m.version for m in migrations}
    unknown = sorted(set(applied) - on_disk)
    if unknown:
        raise MigrationError(
            f"database has migration(s) {', '.join(unknown)} that are not in this checkout; "
            "deploy newer code or restore the files"
        )
    done: list[str] = []
    for migration in migrations:
        row = applied.get(migration.version)
        if row is not None:
            if row["checksum"] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.label} was edited after it was applied "
                    f"(checksum {row['checksum'][:12]} in the database, "
                    f"{migration.checksum[:12]} on disk); add a new migration instead"
                )
            continue
        async with conn.transaction():
            # No arguments: asyncpg uses the simple query protocol, so a file may hold
            # many statements.
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO public.schema_migrations (version, name, checksum)"
                " VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        done.append(migration.label)
    return done


async def status(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[tuple[str, bool]]:
    """``(label, applied)`` for every migration on disk."""
    migrations = discover(directory)
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
        applied: set[str] = set()
        if exists:
            applied = {
                r["version"]
                for r in await conn.fetch("SELECT version FROM public.schema_migrations")
            }
    finally:
        await conn.close()
    return [(m.label, m.version in applied) for m in migrations]


async def ensure_database(dsn: str) -> bool:
    """Create the DSN's database when it does not exist; return True if it was created.

    Connects to the server's ``postgres`` maintenance database to do so. Used by the CLI
    so ``python -m migrations up`` works on a fresh server.
    """
    try:
        conn: asyncpg.Connection = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[A-Za-z0-9_]{1,63}", name):
        raise MigrationError(f"refusing to create a database with the name {name!r}")
    admin_dsn = urlunsplit(parts._replace(path="/postgres"))
    admin: asyncpg.Connection = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        return False  # another runner won the race
    finally:
        await admin.close()
    return True
