"""The PostgreSQL store's schema: versioned migrations, each an ordered list of SQL statements.

`schema_migrations` holds one row per migration applied (its version, name and time). `apply`
runs the ones a database lacks, in order, all in one transaction under an advisory lock (per
schema), so two processes migrating at once apply each migration once and a failed migration
leaves nothing behind; every statement is idempotent too (IF NOT EXISTS, OR REPLACE). A new
migration is appended to MIGRATIONS with the next version; a released one never changes.

`botsched migrate` applies them (core/cli_migrate.py). The store applies them itself when it
opens only with SCHEDULER_POSTGRES_MIGRATE=auto (local use: once, at start-up); otherwise a
database behind the code fails the start with a line that says to run `botsched migrate`.

Tables: `jobs` (the job's JSON in `data`, and copies of the fields its indexes need, as the
SQLite store keeps them), `leases`, `records` (keyed by kind and key), and `job_counts`: the
number of jobs per tenant and state, kept by triggers on `jobs` in the transaction of each write,
so `counts()` reads a few rows instead of every job. Each tenant and state has COUNT_SHARDS rows
(a job counts in the one its id hashes to), so concurrent writes rarely wait for one row; a
write's two changes (its old state less one, its new state plus one) lock in one global order,
so two writes never deadlock on them. Texts that are compared or ordered (ids, keys, tenants)
use the "C" collation: code-point order, as every other store sorts them. Triggers on `jobs`
also NOTIFY the drain loops of every process when a job may start now (postgres_listen.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError
from core.stores.postgres_connections import clean_message, connection, driver, redact

if TYPE_CHECKING:
    from psycopg import AsyncConnection

COUNT_SHARDS = 8


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


_JOBS = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT COLLATE "C" PRIMARY KEY,
        tenant TEXT COLLATE "C" NOT NULL,
        status TEXT COLLATE "C" NOT NULL,
        priority INTEGER NOT NULL,
        sort_ms BIGINT NOT NULL,
        not_before_ms BIGINT NOT NULL,
        deadline_ms BIGINT,
        created_ms BIGINT NOT NULL,
        dedup_key TEXT COLLATE "C",
        idempotency_key TEXT COLLATE "C",
        version BIGINT NOT NULL,
        data TEXT NOT NULL
    )""",
    """CREATE UNIQUE INDEX IF NOT EXISTS jobs_dedup
        ON jobs (tenant, dedup_key) WHERE dedup_key IS NOT NULL""",
    """CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
        ON jobs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS jobs_queue
        ON jobs (priority DESC, sort_ms, id, not_before_ms) WHERE status = 'queued'""",
    """CREATE INDEX IF NOT EXISTS jobs_deadline
        ON jobs (deadline_ms, id) WHERE status = 'queued' AND deadline_ms IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS jobs_holding
        ON jobs (status) WHERE status IN ('provisioning', 'running', 'stopping')""",
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_ms DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant, created_ms DESC, id DESC)",
    """CREATE INDEX IF NOT EXISTS jobs_tenant_status
        ON jobs (tenant, status, created_ms DESC, id DESC)""",
)

_LEASES_AND_RECORDS = (
    """CREATE TABLE IF NOT EXISTS leases (
        name TEXT COLLATE "C" PRIMARY KEY,
        owner TEXT COLLATE "C" NOT NULL,
        until_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS records (
        kind TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        due_ms BIGINT,
        version BIGINT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    )""",
    """CREATE INDEX IF NOT EXISTS records_due
        ON records (kind, due_ms, key) WHERE due_ms IS NOT NULL""",
)

_COUNTS = (
    """CREATE TABLE IF NOT EXISTS job_counts (
        tenant TEXT COLLATE "C" NOT NULL,
        status TEXT COLLATE "C" NOT NULL,
        shard SMALLINT NOT NULL,
        n BIGINT NOT NULL,
        PRIMARY KEY (tenant, status, shard)
    )""",
    """CREATE OR REPLACE FUNCTION botsched_count(
        t TEXT, s TEXT, shard SMALLINT, delta BIGINT
    ) RETURNS void LANGUAGE sql SET search_path FROM CURRENT AS $$
        INSERT INTO job_counts AS c (tenant, status, shard, n) VALUES (t, s, shard, delta)
        ON CONFLICT (tenant, status, shard) DO UPDATE SET n = c.n + excluded.n
    $$""",
    f"""CREATE OR REPLACE FUNCTION botsched_count_jobs() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    DECLARE
        shard SMALLINT := hashtext(CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END)
            & {COUNT_SHARDS - 1};
    BEGIN
        IF TG_OP = 'INSERT' THEN
            PERFORM botsched_count(NEW.tenant, NEW.status, shard, 1);
        ELSIF TG_OP = 'DELETE' THEN
            PERFORM botsched_count(OLD.tenant, OLD.status, shard, -1);
        ELSIF (OLD.tenant, OLD.status) < (NEW.tenant, NEW.status) THEN
            PERFORM botsched_count(OLD.tenant, OLD.status, shard, -1);
            PERFORM botsched_count(NEW.tenant, NEW.status, shard, 1);
        ELSE
            PERFORM botsched_count(NEW.tenant, NEW.status, shard, 1);
            PERFORM botsched_count(OLD.tenant, OLD.status, shard, -1);
        END IF;
        RETURN NULL;
    END $$""",
    "DROP TRIGGER IF EXISTS jobs_counted ON jobs",
    """CREATE TRIGGER jobs_counted AFTER INSERT OR DELETE ON jobs
        FOR EACH ROW EXECUTE FUNCTION botsched_count_jobs()""",
    "DROP TRIGGER IF EXISTS jobs_recounted ON jobs",
    """CREATE TRIGGER jobs_recounted AFTER UPDATE OF tenant, status ON jobs FOR EACH ROW
        WHEN (OLD.tenant IS DISTINCT FROM NEW.tenant OR OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION botsched_count_jobs()""",
)

# NOTIFY on CHANNEL (payload: the jobs table's schema, so stores in other schemas of the database
# ignore it) when a job may start now: a queued job that is due (inserted due, put back in the
# queue due, or moved to now) or a slot freed (an active job that left the active states). A
# trigger, so it runs in the transaction of the write and is sent only when that commits.
CHANNEL = "botsched_jobs"
_ACTIVE = "('provisioning', 'running', 'stopping')"
_NOTIFY = (
    f"""CREATE OR REPLACE FUNCTION botsched_notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        now_ms BIGINT := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
        due BOOLEAN;
    BEGIN
        IF TG_OP = 'INSERT' THEN  -- due: its notBefore is its createdAt (the writer's clock)
            due := NEW.not_before_ms <= greatest(NEW.created_ms, now_ms);
        ELSE  -- a slot freed (the trigger's WHEN: it left the active states), or due now
            due := OLD.status IN {_ACTIVE} OR NEW.not_before_ms <= now_ms;
        END IF;
        IF due THEN
            PERFORM pg_notify('{CHANNEL}', TG_TABLE_SCHEMA);
        END IF;
        RETURN NULL;
    END $$""",
    "DROP TRIGGER IF EXISTS jobs_notify_new ON jobs",
    """CREATE TRIGGER jobs_notify_new AFTER INSERT ON jobs FOR EACH ROW
        WHEN (NEW.status = 'queued') EXECUTE FUNCTION botsched_notify_jobs()""",
    "DROP TRIGGER IF EXISTS jobs_notify ON jobs",
    f"""CREATE TRIGGER jobs_notify AFTER UPDATE OF status, not_before_ms ON jobs FOR EACH ROW
        WHEN ((NEW.status = 'queued' AND (OLD.status <> 'queued'
                OR OLD.not_before_ms > NEW.not_before_ms))
            OR (OLD.status IN {_ACTIVE} AND NEW.status NOT IN {_ACTIVE}))
        EXECUTE FUNCTION botsched_notify_jobs()""",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "jobs, leases, records and job counts", (*_JOBS, *_LEASES_AND_RECORDS, *_COUNTS)),
    Migration(2, "notify when a job may start", _NOTIFY),
)
LATEST = MIGRATIONS[-1].version

_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""
_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtext('botsched schema ' || coalesce(current_schema(), '')))"
)


async def current_version(conn: AsyncConnection[Any]) -> int:
    """The newest migration applied; 0 on a database that has none."""
    cursor = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    exists = await cursor.fetchone()
    if not exists or not exists[0]:
        return 0
    cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def apply(conn: AsyncConnection[Any]) -> tuple[int, int]:
    """Apply the migrations the database lacks; (version before, version after). A database
    that lacks none is only read: a role without the right to change the schema opens it."""
    current = await current_version(conn)
    if current >= LATEST:
        return current, current
    async with conn.transaction():
        await conn.execute(_LOCK)
        await conn.execute(_MIGRATIONS_TABLE)
        before = await current_version(conn)
        for migration in MIGRATIONS:
            if migration.version <= before:
                continue
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
    return before, max(before, LATEST)


async def prepare(conn: AsyncConnection[Any], url: str, *, migrate: bool) -> None:
    """At a store's start: migrate (`migrate`), or check that nothing is left to migrate."""
    psycopg, _ = driver()
    try:
        if migrate:
            await apply(conn)
            return
        version = await current_version(conn)
    except psycopg.Error as exc:
        raise _failed(exc, url, "migrated" if migrate else "read") from None
    if version < LATEST:
        raise ConfigError(
            f"the PostgreSQL schema at {redact(url)} is at version {version}, this scheduler "
            f"needs version {LATEST}: run `botsched migrate` (it reads DATABASE_URL), or set "
            "SCHEDULER_POSTGRES_MIGRATE=auto"
        )


async def migrate_database(url: str) -> tuple[int, int]:
    """`botsched migrate`: connect, apply what is missing; (version before, version after)."""
    psycopg, _ = driver()
    async with connection(url) as conn:
        try:
            return await apply(conn)
        except psycopg.Error as exc:
            raise _failed(exc, url, "migrated") from None


async def database_version(url: str) -> int:
    """`botsched migrate --check`: the version the database is at."""
    psycopg, _ = driver()
    async with connection(url) as conn:
        try:
            return await current_version(conn)
        except psycopg.Error as exc:
            raise _failed(exc, url, "read") from None


def _failed(error: BaseException, url: str, done: str) -> ConfigError:
    message = clean_message(error, url)
    return ConfigError(f"the PostgreSQL schema at {redact(url)} cannot be {done}: {message}")
