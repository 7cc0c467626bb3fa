"""Group commit for the SQLite store: the writes that are waiting at the same moment commit as one
transaction.

A commit costs more than the statements it commits: each page a write changed is appended to the
WAL as a frame of its own (a job with its records changes some 18 pages), and the pages that
concurrent writes share (index leaves, the tables' last pages) are appended once per commit. So
`Connections.write` queues each write, and the first write of a turn of the event loop asks for
one flush after every task ready in that turn has queued its own: under load, the writes of one
burst of requests share one BEGIN, one COMMIT and their pages.

Each write keeps its own outcome: it runs within a SAVEPOINT of the group's transaction, and a
write that raises (a taken record, a duplicate key, a version that no longer matches) is rolled
back to it alone, its error goes to its caller, and the others go on. Every caller hears of its
write only after the group's COMMIT: an answer never reports a write that was not committed. A
write that runs alone runs as before, in its own transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

Call = Callable[[sqlite3.Connection], Any]


@dataclass(slots=True)
class Outcome:
    value: Any = None
    error: BaseException | None = None


@dataclass(slots=True)
class Group:
    """Writes queued during one turn of the event loop, with their outcomes once run."""

    calls: list[Call] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY (any extended code): another connection holds the lock; nothing was done."""
    return (
        isinstance(exc, sqlite3.OperationalError)
        and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
    )


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """Run the block as one transaction on the (autocommit) connection, within one synchronous
    call: all of its writes commit together, or none on any error. BEGIN IMMEDIATE takes the
    write lock at once, so a busy file fails it before anything is done (and the call runs again
    in the thread, as any other), never halfway through. Within a group, the write's savepoint is
    its transaction already."""
    if connection.in_transaction:
        yield
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def run_group(connection: sqlite3.Connection, group: Group) -> None:
    """Run every write of `group` in one transaction and fill its outcomes. A busy file
    (SQLITE_BUSY, on BEGIN or in a write) rolls the group back whole and is raised: nothing was
    done, and the group runs again on the connection that waits (or, there, fails all of it)."""
    with transaction(connection):
        group.outcomes = [_savepoint(connection, call) for call in group.calls]


def alone(connection: sqlite3.Connection, group: Group) -> None:
    """Run a group of one write as the write itself: its own transaction, or its one statement in
    autocommit. A busy file is raised, as in a group."""
    (call,) = group.calls
    group.outcomes = [_outcome(connection, call)]


def _savepoint(connection: sqlite3.Connection, call: Call) -> Outcome:
    connection.execute("SAVEPOINT write")
    outcome = _outcome(connection, call)
    if outcome.error is not None:
        connection.execute("ROLLBACK TO write")
    connection.execute("RELEASE write")
    return outcome


def _outcome(connection: sqlite3.Connection, call: Call) -> Outcome:
    """The write's value, or its own error; a busy file is raised, for the whole group."""
    try:
        return Outcome(value=call(connection))
    except Exception as exc:
        if is_busy(exc):
            raise
        return Outcome(error=exc)
