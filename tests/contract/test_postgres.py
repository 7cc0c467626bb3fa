"""What the PostgreSQL store adds to the contract: migrations, start-up failures that are one
line without the password, leases on the database's clock, counts kept beside the jobs, plans
through the indexes, and a dropped connection. Real: a private PostgreSQL server
(tests/postgres_env.py), each test in a schema of its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.errors import ConfigError
from core.models import Job, JobState
from core.stores import postgres_schema
from core.stores.postgres import ACTIVE_SQL, DUE_SQL, EXPIRING_SQL, PostgresStore, list_sql
from core.stores.postgres_connections import connect_options, redact
from tests.contract.conftest import MakeJob
from tests.postgres_env import PostgresEnv
from tests.processes import free_port


def schema_url(postgres: PostgresEnv, **options: str) -> tuple[str, str]:
    """A fresh schema, and a URL whose connections work in it."""
    schema = postgres.fresh_schema()
    return schema, postgres.url(options=f"-c search_path={schema}", **options)


@pytest.fixture
async def pg_store(postgres: PostgresEnv) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(postgres.fresh_url(), migrate=True)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def one_line_without(message: str, secret: str) -> None:
    assert "\n" not in message
    assert secret not in message


# -- migrations --


async def test_migrations_are_recorded_and_run_twice_do_nothing(postgres: PostgresEnv) -> None:
    schema, url = schema_url(postgres)
    assert await postgres_schema.migrate_database(url) == (0, postgres_schema.LATEST)
    assert await postgres_schema.migrate_database(url) == (postgres_schema.LATEST,) * 2
    rows = postgres.execute(f"SELECT version, name FROM {schema}.schema_migrations ORDER BY 1")
    assert rows == [(m.version, m.name) for m in postgres_schema.MIGRATIONS]
    assert await postgres_schema.database_version(url) == postgres_schema.LATEST


async def test_every_migration_statement_may_run_again(postgres: PostgresEnv) -> None:
    """Each statement is idempotent on its own too, not only through the version table."""
    schema, url = schema_url(postgres)
    await postgres_schema.migrate_database(url)
    statements = [s for m in postgres_schema.MIGRATIONS for s in m.statements]
    postgres.execute(f"SET search_path = {schema}")
    try:
        for statement in statements:
            postgres.execute(statement)
    finally:
        postgres.execute("SET search_path = public")


async def test_concurrent_migrations_apply_each_migration_once(postgres: PostgresEnv) -> None:
    _, url = schema_url(postgres)
    results = await asyncio.gather(*(postgres_schema.migrate_database(url) for _ in range(4)))
    latest = postgres_schema.LATEST
    assert sorted(results) == [(0, latest)] + [(latest, latest)] * 3


async def test_open_without_auto_migrate_on_an_unmigrated_database_fails_in_one_line(
    postgres: PostgresEnv,
) -> None:
    _, url = schema_url(postgres)
    store = PostgresStore(url, migrate=False)
    with pytest.raises(ConfigError) as raised:
        await store.open()
    message = raised.value.message
    one_line_without(message, postgres.password)
    assert "at version 0" in message and "run `botsched migrate`" in message
    await postgres_schema.migrate_database(url)
    await store.open()  # migrated by `botsched migrate`: it opens
    await store.close()


async def test_open_with_auto_migrate_migrates_once(postgres: PostgresEnv) -> None:
    schema, url = schema_url(postgres)
    first, second = PostgresStore(url, migrate=True), PostgresStore(url, migrate=True)
    await asyncio.gather(first.open(), second.open())
    await asyncio.gather(first.close(), second.close())
    applied = postgres.execute(f"SELECT count(*) FROM {schema}.schema_migrations")
    assert applied == [(len(postgres_schema.MIGRATIONS),)]


async def test_a_role_that_may_not_change_the_schema_opens_a_migrated_one(
    postgres: PostgresEnv, make_job: MakeJob
) -> None:
    """Auto-migrate on a schema that is up to date runs no DDL: an application role with only
    the rights to read and write rows opens it and writes jobs (their counts too)."""
    schema, url = schema_url(postgres)
    await postgres_schema.migrate_database(url)
    role, password = "app_" + uuid.uuid4().hex[:12], uuid.uuid4().hex
    postgres.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    postgres.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    postgres.execute(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}"
    )
    app_url = url.replace(f"botsched_test:{postgres.password}@", f"{role}:{password}@")
    store = PostgresStore(app_url, migrate=True)
    await store.open()
    try:
        job = await store.create(make_job())
        assert await store.get(job.id) == job
        assert (await store.counts())[JobState.QUEUED] == 1
    finally:
        await store.close()


# -- start-up failures --


async def test_a_wrong_password_is_one_line_without_the_password(postgres: PostgresEnv) -> None:
    wrong = "not-the-" + uuid.uuid4().hex
    store = PostgresStore(postgres.url(password=wrong), migrate=True)
    with pytest.raises(ConfigError) as raised:
        await store.open()
    message = raised.value.message
    one_line_without(message, wrong)
    one_line_without(message, postgres.password)
    assert "password authentication failed" in message and ":***@" in message


async def test_an_unreachable_port_fails_fast(postgres: PostgresEnv) -> None:
    url = f"postgresql://someone:secret-pw@127.0.0.1:{free_port()}/db?sslmode=disable"
    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        await PostgresStore(url).open()
    assert time.monotonic() - started < 5
    one_line_without(raised.value.message, "secret-pw")
    assert "cannot connect to PostgreSQL at postgresql://someone:***@127.0.0.1" in str(raised.value)


REDACTED = [
    (
        "postgresql://u:p%40ss@h:5432/db?sslmode=require",
        "postgresql://u:***@h:5432/db?sslmode=require",
    ),
    ("postgres://u@h/db", "postgres://u@h/db"),
    (
        "postgresql://h/db?user=u&password=pw&sslmode=verify-full",
        "postgresql://h/db?user=u&password=***&sslmode=verify-full",
    ),
    ("host=h user=u password='a b' dbname=db", "host=h user=u password=*** dbname=db"),
    ("host=h password=pw dbname=db", "host=h password=*** dbname=db"),
    ("postgresql://u:p/w@h/db", "postgresql://u:***@h/db"),  # a `/` that should be %2F
    ("postgresql://h/db?options=-c%20x%3Da@b", "postgresql://h/db?options=-c%20x%3Da@b"),
    ("postgresql://u:pw@[bad/db", "postgresql://u:***@[bad/db"),
]


@pytest.mark.parametrize(("url", "shown"), REDACTED)
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_url_libpq_cannot_read_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as raised:
        connect_options("postgresql://u:hunter2@[bad/db")
    assert "hunter2" not in raised.value.message and "***" in raised.value.message


# -- leases: the database's clock --


async def test_a_skewed_caller_cannot_take_a_live_lease(pg_store: PostgresStore) -> None:
    """The lease's end is on the database's clock: a caller whose clock runs an hour ahead (or
    behind) sees a's lease as the database does, live."""
    now = datetime.now(UTC)
    assert await pg_store.acquire_lease("dispatch", "a", now + timedelta(seconds=30), now)
    ahead = now + timedelta(hours=1)
    assert not await pg_store.acquire_lease("dispatch", "b", ahead + timedelta(seconds=30), ahead)
    behind = now - timedelta(hours=1)
    assert not await pg_store.acquire_lease("dispatch", "b", behind + timedelta(seconds=30), behind)
    # the owner renews, whatever its clock says
    assert await pg_store.acquire_lease("dispatch", "a", ahead + timedelta(seconds=30), ahead)


async def test_a_lease_lasts_until_minus_now_on_the_database_clock(pg_store: PostgresStore) -> None:
    def lasting(seconds: float) -> tuple[datetime, datetime]:
        at = datetime(2000, 1, 1, tzinfo=UTC)  # any caller time: only the difference counts
        return at + timedelta(seconds=seconds), at

    assert await pg_store.acquire_lease("dispatch", "a", *lasting(0.4))
    assert not await pg_store.acquire_lease("dispatch", "b", *lasting(30))
    await pg_store.release_lease("dispatch", "b")  # not b's: nothing happens
    assert not await pg_store.acquire_lease("dispatch", "b", *lasting(30))
    await asyncio.sleep(0.6)
    assert await pg_store.acquire_lease("dispatch", "b", *lasting(30))  # a's ran out
    await pg_store.release_lease("dispatch", "b")
    assert await pg_store.acquire_lease("dispatch", "c", *lasting(30))


# -- counts, plans --


async def move(store: PostgresStore, job: Job, status: JobState) -> Job:
    return await store.update(job.duplicate(status=status), job.version or "")


async def test_counts_are_kept_beside_the_jobs_through_concurrent_moves(
    postgres: PostgresEnv, make_job: MakeJob
) -> None:
    """Jobs moved concurrently both ways between two states (their counter rows locked in
    opposite orders, were the order not fixed): no deadlock, and the counts match the jobs."""
    schema, url = schema_url(postgres)
    store = PostgresStore(url, migrate=True)
    await store.open()
    try:
        jobs = [await store.create(make_job(tenant=f"t{n % 2}")) for n in range(24)]
        provisioning = await asyncio.gather(
            *(move(store, job, JobState.PROVISIONING) for job in jobs[:12])
        )
        queued = jobs[12:]
        for _ in range(4):
            results = await asyncio.gather(
                *(move(store, job, JobState.QUEUED) for job in provisioning),
                *(move(store, job, JobState.PROVISIONING) for job in queued),
            )
            queued, provisioning = results[:12], results[12:]
        real = postgres.execute(f"SELECT tenant, status, count(*) FROM {schema}.jobs GROUP BY 1, 2")
        for tenant in ("t0", "t1", None):
            expected = dict.fromkeys(JobState, 0)
            for row_tenant, status, count in real:
                if tenant in (None, row_tenant):
                    expected[JobState(status)] += count
            assert await store.counts(tenant) == expected
    finally:
        await store.close()


async def explain(store: PostgresStore, sql: str, params: tuple[Any, ...]) -> str:
    async with store._connection() as conn:
        await conn.execute("SET enable_seqscan = off")  # a small table would be scanned anyway
        try:
            cursor = await conn.execute("EXPLAIN " + sql, params)
            return "\n".join(row[0] for row in await cursor.fetchall())
        finally:
            await conn.execute("RESET enable_seqscan")


async def test_queries_run_through_their_indexes(
    pg_store: PostgresStore, make_job: MakeJob
) -> None:
    await pg_store.create(make_job())
    due = await explain(pg_store, DUE_SQL, (1, 10))
    assert "Index Scan using jobs_queue" in due and "Sort" not in due
    expiring = await explain(pg_store, EXPIRING_SQL, (1, 10))
    assert "jobs_deadline" in expiring and "Sort" not in expiring
    assert "jobs_holding" in await explain(pg_store, ACTIVE_SQL, ())
    sql, params = list_sql("t1", None, "MTAwOmFiYw", 51)
    listing = await explain(pg_store, sql, params)
    assert "jobs_tenant" in listing and "Sort" not in listing


# -- a dropped connection --


async def test_a_dropped_connection_fails_its_call_and_the_pool_replaces_it(
    postgres: PostgresEnv, make_job: MakeJob
) -> None:
    import psycopg

    app = "t" + uuid.uuid4().hex[:12]
    _, url = schema_url(postgres, application_name=app)
    store = PostgresStore(url, migrate=True)
    await store.open()
    try:
        job = await store.create(make_job())
        kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"
        async with store._connection() as conn:
            assert postgres.execute(kill, (app,))  # the server drops every connection of the store
            with pytest.raises(psycopg.OperationalError):
                await conn.execute("SELECT 1")
        assert await store.get(job.id) == job  # a new connection, made by the pool
        postgres.execute(kill, (app,))  # dropped while idle: found broken before it is lent
        assert await store.get(job.id) == job
    finally:
        await store.close()
