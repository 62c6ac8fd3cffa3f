"""Command line: ``python -m migrations {up,status,seed,rebuild} [--dsn DSN]``.

The DSN defaults to ``TB_DATABASE_URL`` (see ``core/settings.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from migrations import runner


def _default_dsn() -> str:
    from core.settings import load_settings

    return load_settings().database.url


async def _up(dsn: str) -> int:
    if await runner.ensure_database(dsn):
        print("created database")
    applied = await runner.migrate(dsn)
    if applied:
        for label in applied:
            print(f"applied {label}")
    else:
        print("database is up to date")
    return 0


async def _status(dsn: str) -> int:
    for label, applied in await runner.status(dsn):
        print(f"{'applied' if applied else 'pending'}  {label}")
    return 0


async def _seed(dsn: str, args: argparse.Namespace) -> int:
    from migrations.seed import seed_from_settings

    started = time.perf_counter()
    report = await seed_from_settings(dsn, load_inventory=not args.no_inventory, limit=args.limit)
    elapsed = time.perf_counter() - started
    for line in report.lines():
        print(line)
    print(f"seed finished in {elapsed:.1f}s")
    return 0


async def _rebuild(dsn: str, args: argparse.Namespace) -> int:
    from migrations.seed import rebuild_from_settings

    loaded, kept = await rebuild_from_settings(dsn, args.event or None, force=args.force)
    print(f"rebuilt the inventory of {len(loaded)} event(s): {loaded}")
    if kept:
        print(f"kept {len(kept)} inventory(ies) already in Redis (--force reloads them)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m migrations")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("up", "create the database if needed and apply pending migrations"),
        ("status", "list migrations and whether each is applied"),
        ("seed", "migrate, then load the demo catalog and its Redis inventory (idempotent)"),
        ("rebuild", "cold start: load missing Redis inventories from PostgreSQL"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: TB_DATABASE_URL)")
        if name == "seed":
            cmd.add_argument(
                "--no-inventory", action="store_true", help="write PostgreSQL only, not Redis"
            )
            cmd.add_argument(
                "--limit", type=int, default=None, help="seed only the first N events of the CSV"
            )
        if name == "rebuild":
            cmd.add_argument(
                "--event", type=int, action="append", help="only this event id (repeatable)"
            )
            cmd.add_argument(
                "--force",
                action="store_true",
                help="reload inventories that are in Redis too (drops their live holds)",
            )
    args = parser.parse_args(argv)
    dsn = args.dsn or _default_dsn()
    commands = {
        "up": lambda: _up(dsn),
        "status": lambda: _status(dsn),
        "rebuild": lambda: _rebuild(dsn, args),
        "seed": lambda: _seed(dsn, args),
    }
    try:
        return asyncio.run(commands[args.command]())
    except runner.MigrationError as exc:
        print(f"python -m migrations {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Connection refused, unknown host: say which server, not a traceback.
        print(f"python -m migrations {args.command}: cannot reach a server: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
