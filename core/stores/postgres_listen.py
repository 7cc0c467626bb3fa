"""Wake-ups for the PostgreSQL store: one connection per process, apart from the pool, that
LISTENs on the channel the jobs' triggers NOTIFY (postgres_schema.py: a due job written, a slot
freed), so that a drain loop dispatches at once instead of at its next tick.

The connection is opened by the first `wait` (only drain loops wait: a serverless handler never
opens one). Whatever happens to it (the server restarted, the network dropped, a failover), the
listener reconnects with an exponential backoff, BACKOFF_FIRST doubling up to BACKOFF_MAX, with
jitter so that replicas do not reconnect in step, and never raises into its caller: while it is
down, `wait` only times out and the drain loop runs on its timer. A reconnect counts as a
wake-up, since what was notified while it was away is lost. An idle connection is checked every
HEARTBEAT_SECONDS by LISTENing again (a no-op on a live one), so a connection that died without
a word is found within HEARTBEAT_SECONDS + CHECK_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING, Any

from core.stores.postgres_connections import clean_message, connect_options, driver, redact
from core.stores.postgres_schema import CHANNEL

if TYPE_CHECKING:
    from psycopg import AsyncConnection

log = logging.getLogger("botsched.postgres")

LISTEN_SQL = f"LISTEN {CHANNEL}"
# the schema of the `jobs` table this connection's search_path finds: the triggers' payload
SCHEMA_SQL = (
    "SELECT coalesce((SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n "
    "ON n.oid = c.relnamespace WHERE c.oid = to_regclass('jobs')), current_schema())"
)
HEARTBEAT_SECONDS = 15.0
CHECK_SECONDS = 10.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 15.0


class Listener:
    """The listening connection of one store, run by a task of its own from the first `wait`
    until `close`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connects = 0  # connections that listened: the first, then each reconnect
        self.failures = 0  # connection attempts, and connections, that failed
        self.listening = asyncio.Event()  # set while a connection listens
        self._woken = asyncio.Event()
        self._schema = ""
        self._down = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="botsched-postgres-listen")

    async def wait(self, seconds: float) -> bool:
        """Up to `seconds`: True as soon as a job may start (notified since the last
        call, or the connection came back), False when the time ran out."""
        self.start()
        if not self._woken.is_set():
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for may swallow a cancel that
            # comes as the event is set, and the caller would never stop
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(seconds, 0.0)):
                    await self._woken.wait()
        woken = self._woken.is_set()
        self._woken.clear()
        return woken

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                conn = await self._connect()
            except Exception as exc:
                self._failed(exc, "cannot connect")
            else:
                delay = BACKOFF_FIRST
                try:
                    await self._listen(conn)
                except Exception as exc:
                    self._failed(exc, "lost its connection")
                finally:
                    self.listening.clear()
                    await _close(conn)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _connect(self) -> AsyncConnection[Any]:
        psycopg, _ = driver()
        conn: AsyncConnection[Any] = await psycopg.AsyncConnection.connect(
            self.url, **connect_options(self.url)
        )
        try:
            row = await (await conn.execute(SCHEMA_SQL)).fetchone()
            await conn.execute(LISTEN_SQL)
        except BaseException:
            await _close(conn)
            raise
        self._schema = str(row[0]) if row else ""
        return conn

    async def _listen(self, conn: AsyncConnection[Any]) -> None:
        """Until the connection fails: each notification for this store's schema wakes `wait`;
        between them, a LISTEN again every HEARTBEAT_SECONDS checks the connection."""
        if self.connects:
            self._woken.set()  # what was notified while no connection listened is lost
        self.connects += 1
        self.listening.set()
        if self._down:
            self._down = False
            log.warning("postgres: listening for job notifications again at %s", redact(self.url))
        while True:
            async for note in conn.notifies(timeout=HEARTBEAT_SECONDS):
                if note.payload == self._schema:
                    self._woken.set()
            async with asyncio.timeout(CHECK_SECONDS):
                await conn.execute(LISTEN_SQL)

    def _failed(self, error: BaseException, what: str) -> None:
        """Log the first failure of an outage (the later ones at debug level)."""
        self.failures += 1
        message = clean_message(error, self.url)
        level = logging.DEBUG if self._down else logging.WARNING
        self._down = True
        log.log(
            level,
            "postgres: the listener for job notifications %s (%s); reconnecting with backoff, "
            "drains run on their timer meanwhile",
            what,
            message,
        )


async def _close(conn: AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await conn.close()
