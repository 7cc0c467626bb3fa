"""`botsched migrate`: bring the PostgreSQL schema at DATABASE_URL up to this code's version
(core/stores/postgres_schema.py), or with `--check` only say where it stands.

Registered by core/cli.py's parser. Exit codes: 0 done (or, with --check, up to date); 1 with
--check, migrations are missing; 2 DATABASE_URL is unset, wrong, or the database refused.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from core import cli
from core.errors import SchedulerError


def cmd_migrate(args: argparse.Namespace) -> None:
    from core.stores.postgres_connections import redact
    from core.stores.postgres_schema import LATEST, database_version, migrate_database

    url = cli.settings_with({}).database_url
    if not url:
        cli.fail("DATABASE_URL is not set: postgresql://USER:PASSWORD@HOST:5432/DATABASE", 2)
    where = redact(url)
    try:
        if args.check:
            version = asyncio.run(database_version(url))
        else:
            before, version = asyncio.run(migrate_database(url))
    except SchedulerError as exc:
        cli.fail(exc.message, 2)
    if args.check:
        state = "up to date" if version >= LATEST else "behind: run `botsched migrate`"
        print(f"{where}: schema version {version}, this scheduler needs {LATEST} ({state})")
        raise SystemExit(0 if version >= LATEST else 1)
    if before == version:
        print(f"{where}: schema version {version}, nothing to migrate")
    else:
        print(f"{where}: migrated the schema from version {before} to {version}")


def add_parser(sub: Any) -> None:
    """`migrate` on the `botsched` parser's subparsers."""
    migrate = sub.add_parser(
        "migrate", help="create or update the PostgreSQL schema at DATABASE_URL"
    )
    migrate.add_argument(
        "--check",
        action="store_true",
        help="only say which version the schema is at (exit 1: behind)",
    )
    migrate.set_defaults(run=cmd_migrate)
