"""The row reads and writes the Azure Table store's jobs and records share (the design is in
core/stores/azure_table.py): point reads, paged RowKey-range queries, ETag-conditioned deletes of
stale index rows, and entity group transactions within their limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from core.errors import PayloadTooLarge
from core.stores import azure_index as ix

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

TRIES = 5
MAX_OPS = 100  # the operations one entity group transaction may hold
JOBS_FILTER = f"PartitionKey eq '{ix.JOBS}'"


def quoted(text: str) -> str:
    """`text` as an OData string literal."""
    return "'" + text.replace("'", "''") + "'"


class TableRows:
    def __init__(self) -> None:
        self._table: TableClient | None = None
        self.reads = 0  # entities read (query results and point reads): for tests and tuning
        self.dropped = 0  # stale index rows deleted by readers

    @property
    def client(self) -> TableClient:
        if self._table is None:
            raise RuntimeError("AzureTableStore is not open")
        return self._table

    async def _get(self, row_key: str, partition: str = ix.JOBS) -> Any:
        try:
            entity = await self.client.get_entity(partition, row_key)
        except ix.sdk().not_found:
            return None
        self.reads += 1
        return entity

    async def _pages(
        self, query: str, per_page: int, select: list[str] | None = None
    ) -> AsyncIterator[list[Any]]:
        """The rows `query` matches, one service page (at most `per_page` rows) at a time."""
        pages = self.client.query_entities(
            query, results_per_page=max(per_page, 1), select=select
        ).by_page()
        async for page in pages:
            rows = [row async for row in page]
            self.reads += len(rows)
            yield rows

    async def _drop(self, row: Any) -> None:
        """Delete a stale index row, unless it changed since it was read."""
        s = ix.sdk()
        try:
            await self.client.delete_entity(
                ix.JOBS,
                row["RowKey"],
                etag=row.metadata["etag"],
                match_condition=s.match_conditions.IfNotModified,
            )
            self.dropped += 1
        except (s.modified, s.not_found):
            pass

    async def _submit(self, ops: list[ix.Op]) -> list[Mapping[str, Any]]:
        """One entity group transaction; PayloadTooLarge beyond what one may hold."""
        if len(ops) > MAX_OPS:
            raise PayloadTooLarge(
                f"this write changes {len(ops)} rows at once, and an Azure Table transaction "
                f"holds at most {MAX_OPS}: write fewer records with the job"
            )
        try:
            return await self.client.submit_transaction(ops)
        except ix.sdk().transaction_error as exc:
            if exc.status_code == 413:
                raise PayloadTooLarge(
                    "this write is larger than an Azure Table transaction holds (4 MiB)"
                ) from exc
            raise
