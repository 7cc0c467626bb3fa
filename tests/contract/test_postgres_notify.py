"""The PostgreSQL store's wake-ups: which writes NOTIFY (a due job, a slot freed; only once
committed; only the stores of the same schema), and the listening connection, which reconnects
by itself (killed, the server restarted, no server at all) and never raises. Real: a private
PostgreSQL server (tests/postgres_env.py), each test in a schema of its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from core.errors import Conflict
from core.models import Job, JobState, utcnow
from core.ports import Notifying
from core.records import Record
from core.stores.postgres import PostgresStore
from core.stores.postgres_listen import BACKOFF_FIRST, LISTEN_SQL, Listener
from tests.contract.conftest import make_job
from tests.postgres_env import PostgresEnv
from tests.processes import free_port

QUIET = 0.4  # how long a write that must not wake anyone is given to do it


@pytest.fixture
async def pair(postgres: PostgresEnv) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one schema, as two processes have them: `listening` listens already."""
    url = postgres.fresh_url(application_name="n" + uuid.uuid4().hex[:12])
    listening, writing = PostgresStore(url, migrate=True), PostgresStore(url, migrate=True)
    await listening.open()
    await writing.open()
    await listening.wait_notified(0.0)
    assert listening._listener is not None
    await asyncio.wait_for(listening._listener.listening.wait(), 10)
    try:
        yield listening, writing
    finally:
        await listening.close()
        await writing.close()


def due_job(**fields: object) -> Job:
    now = utcnow()
    return make_job(createdAt=now, updatedAt=now, notBefore=now, **fields)


async def woken(store: PostgresStore, seconds: float = 5.0) -> bool:
    return await store.wait_notified(seconds)


async def move(store: PostgresStore, job: Job, status: JobState, **fields: object) -> Job:
    return await store.update(job.duplicate(status=status, **fields), job.version or "")


def test_the_postgres_store_offers_notifications() -> None:
    assert isinstance(PostgresStore("postgresql://h/db"), Notifying)


async def test_a_due_job_written_elsewhere_wakes_a_waiting_store_at_once(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    listening, writing = pair
    waiting = asyncio.create_task(woken(listening, 30.0))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await writing.create(due_job())
    assert await waiting
    assert time.monotonic() - started < 1.0


async def test_a_job_not_due_yet_wakes_no_one(pair: tuple[PostgresStore, PostgresStore]) -> None:
    listening, writing = pair
    later = utcnow() + timedelta(minutes=10)
    await writing.create(due_job().duplicate(notBefore=later, joinAt=later))
    assert not await woken(listening, QUIET)


async def test_which_moves_notify(pair: tuple[PostgresStore, PostgresStore]) -> None:
    """A slot freed (active -> final, or back to the queue) and a job made due notify; a claim,
    a start, a cancel in the queue and a job moved later do not."""
    listening, writing = pair
    job = await writing.create(due_job())
    assert await woken(listening)
    claimed = await move(writing, job, JobState.PROVISIONING)
    assert not await woken(listening, QUIET)
    running = await move(writing, claimed, JobState.RUNNING)
    assert not await woken(listening, QUIET)
    await move(writing, running, JobState.COMPLETED)
    assert await woken(listening)  # a slot freed

    undone = await move(writing, await writing.create(due_job()), JobState.PROVISIONING)
    assert await woken(listening)  # (the insert)
    await move(writing, undone, JobState.QUEUED)
    assert await woken(listening)  # its slot freed, and it is due again

    later = utcnow() + timedelta(minutes=10)
    queued = await writing.create(due_job())
    assert await woken(listening)
    moved = await writing.update(queued.duplicate(notBefore=later), queued.version or "")
    assert not await woken(listening, QUIET)  # moved later
    await writing.update(moved.duplicate(notBefore=utcnow()), moved.version or "")
    assert await woken(listening)  # moved to now
    cancelled = await writing.create(due_job().duplicate(notBefore=later))
    await move(writing, cancelled, JobState.CANCELLED)
    assert not await woken(listening, QUIET)  # it held no slot


async def test_a_write_that_rolls_back_notifies_nothing(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    """The NOTIFY is in the write's transaction: a job inserted with a record whose key is
    taken is rolled back, and no one hears of it."""
    listening, writing = pair
    taken = Record("event", "k-" + uuid.uuid4().hex, {"n": 1})
    await writing.put_record(taken, None)
    job = due_job()
    with pytest.raises(Conflict):
        await writing.create(job, [taken.but(data={"n": 2})])
    assert await writing.get(job.id) is None
    assert not await woken(listening, QUIET)


async def test_another_schemas_writes_wake_no_one(postgres: PostgresEnv) -> None:
    here, there = (PostgresStore(postgres.fresh_url(), migrate=True) for _ in range(2))
    await here.open()
    await there.open()
    try:
        await here.wait_notified(0.0)
        assert here._listener is not None
        await asyncio.wait_for(here._listener.listening.wait(), 10)
        await there.create(due_job())
        assert not await woken(here, QUIET)
    finally:
        await here.close()
        await there.close()


async def listener_pids(postgres: PostgresEnv, app: str) -> list[int]:
    sql = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND query = %s "
        "AND pid <> pg_backend_pid()"
    )
    return [row[0] for row in postgres.execute(sql, (app, LISTEN_SQL))]


async def test_a_killed_listening_connection_comes_back_and_wakes_its_waiter(
    postgres: PostgresEnv,
) -> None:
    """The server drops the listening connection: the listener connects again (the pool's
    connections are not involved), counts that as a wake-up (what was notified meanwhile is
    lost), and later writes wake it again."""
    app = "k" + uuid.uuid4().hex[:12]
    url = postgres.fresh_url(application_name=app)
    listening, writing = PostgresStore(url, migrate=True), PostgresStore(url, migrate=True)
    await listening.open()
    await writing.open()
    try:
        await listening.wait_notified(0.0)
        listener = listening._listener
        assert listener is not None
        await asyncio.wait_for(listener.listening.wait(), 10)
        (pid,) = await listener_pids(postgres, app)
        postgres.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert await woken(listening, 10.0)  # it came back
        assert (listener.connects, listener.failures) == (2, 1)
        assert await listener_pids(postgres, app) not in ([], [pid])
        await writing.create(due_job())
        assert await woken(listening)
    finally:
        await listening.close()
        await writing.close()


async def test_the_listener_survives_a_server_restart(
    pair: tuple[PostgresStore, PostgresStore], postgres: PostgresEnv
) -> None:
    listening, writing = pair
    await asyncio.to_thread(postgres.restart)
    assert await woken(listening, 20.0)  # reconnected
    await writing.create(due_job())  # the pool replaced its connections too
    assert await woken(listening)


async def test_a_listener_with_no_server_backs_off_and_never_raises() -> None:
    """Nothing listens on the port: each wait only times out, the attempts space out (0.5 s,
    then 1 s, 2 s, ...), and the listener keeps trying until it is closed."""
    listener = Listener(f"postgresql://u:pw@127.0.0.1:{free_port()}/db?connect_timeout=2")
    try:
        assert not await listener.wait(2.5)
        assert not await listener.wait(0.0)
        assert listener._task is not None and not listener._task.done()
        # attempts at about 0, 0.5, 1.5 s (with jitter): not a busy loop, not given up
        assert 2 <= listener.failures <= 4, listener.failures
        assert listener.connects == 0 and BACKOFF_FIRST == 0.5
    finally:
        await listener.close()
    assert listener._task is None


async def test_a_wait_cancelled_as_a_notification_comes_ends_cancelled() -> None:
    """A drain loop cancels its wait when another wake-up came first, and at shutdown: the
    cancel must win even when a notification comes in the same instant (with asyncio.wait_for
    on Python 3.11 the wait would return True instead, and a loop around it never stop)."""
    listener = Listener(f"postgresql://u:pw@127.0.0.1:{free_port()}/db")
    try:
        waiting = asyncio.create_task(listener.wait(30.0))
        await asyncio.sleep(0.05)
        listener._woken.set()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await listener.wait(0.0)  # the notification is kept for the next wait
    finally:
        await listener.close()
