"""A D1-shaped stand-in over sqlite3, for running the D1 store in CPython.

It has the shape of Cloudflare's D1 binding as a Python Worker sees it: `prepare(sql)` gives a
statement, `bind(*args)` a bound copy, and the awaitables `first()`, `all()` (`{"results": [...],
"success": true, "meta": {...}}`), `run()` (`meta.changes`) and `db.batch([...])` (one
transaction). Like D1 it binds only null, numbers, strings and bytes, returns rows as
column-name dicts, and reports a constraint error as `D1_ERROR: ...: SQLITE_CONSTRAINT`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

BINDABLE = (type(None), int, float, str, bytes)


class D1Error(Exception):
    pass


class D1PreparedStatement:
    def __init__(self, db: D1Database, sql: str, params: tuple[Any, ...] = ()) -> None:
        self.db = db
        self.sql = sql
        self.params = params

    def bind(self, *params: Any) -> D1PreparedStatement:
        for value in params:
            if not isinstance(value, BINDABLE) or isinstance(value, bool):
                raise D1Error(f"D1_TYPE_ERROR: Type '{type(value).__name__}' not supported")
        return D1PreparedStatement(self.db, self.sql, params)

    async def first(self, column: str | None = None) -> Any:
        rows = self.db.execute(self.sql, self.params)[0]
        if not rows:
            return None
        return rows[0][column] if column is not None else rows[0]

    async def all(self) -> dict[str, Any]:
        rows, changes = self.db.execute(self.sql, self.params)
        return {"results": rows, "success": True, "meta": {"changes": changes}}

    async def run(self) -> dict[str, Any]:
        rows, changes = self.db.execute(self.sql, self.params)
        return {"results": rows, "success": True, "meta": {"changes": changes}}


class D1Database:
    def __init__(self, path: str | Path = ":memory:") -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)
        self.connection.row_factory = sqlite3.Row
        self.statements: list[str] = []  # every SQL text run, in order

    def prepare(self, sql: str) -> D1PreparedStatement:
        return D1PreparedStatement(self, sql)

    async def batch(self, statements: list[D1PreparedStatement]) -> list[dict[str, Any]]:
        results = []
        self.connection.execute("BEGIN")
        try:
            for statement in statements:
                results.append(await statement.run())
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")
        return results

    def execute(self, sql: str, params: tuple[Any, ...]) -> tuple[list[dict[str, Any]], int]:
        self.statements.append(sql)
        try:
            cursor = self.connection.execute(sql, params)
            rows = [dict(row) for row in cursor.fetchall()]
        except sqlite3.IntegrityError as exc:
            raise D1Error(f"D1_ERROR: {exc}: SQLITE_CONSTRAINT") from None
        except sqlite3.Error as exc:
            raise D1Error(f"D1_ERROR: {exc}") from None
        return rows, max(cursor.rowcount, 0)

    def close(self) -> None:
        self.connection.close()
