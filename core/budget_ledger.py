"""The bot-minute ledger of a tenant's budget: one chain of records per tenant and period.

A chain is the records of kind `ledger` under `{tenant}:{period}:` (the period: `d20261201` for
a UTC day, `m202612` for a UTC month), keyed by a sequence number from 1 on, each holding the
chain's running totals after it: `charged`, the minutes held by admitted jobs plus the minutes
their finished runs spent, and `spent`, the latter alone. A chain grows only by inserting the key
after its head, and that insert is part of the atomic write that admits or ends a job (the
records of `JobStore.create` and `update` must be new): of two writers racing for the same next
key one wins, the other reads the head again. So every change of a chain's totals is serialized,
on every store, with no lock and no counter that could be written twice.

Entries are never changed or deleted, and the keys of a chain are contiguous, so its head is
found from any entry known to exist by doubling steps, then halving: O(log n) point reads, and one
read when this process knows the head already (the hint it keeps of each chain).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.ports import JobStore
from core.records import Record

KIND = "ledger"
HINTS_KEPT = 4096  # chains whose head a process remembers
RACES = 64  # writes of one job retried that lost only a chain's head to another writer


@dataclass(frozen=True)
class Head:
    """A chain's last entry (seq 0: the chain has none yet) and its totals."""

    chain: str
    seq: int = 0
    charged: float = 0.0
    spent: float = 0.0

    def entry(self, job_id: str, charged: float, spent: float) -> Record:
        """The next entry: the totals moved by `charged` and `spent` minutes, for `job_id`."""
        data = {
            "charged": round(self.charged + charged, 4),
            "spent": round(self.spent + spent, 4),
            "jobId": job_id,
            "chargedMinutes": round(charged, 4),
            "spentMinutes": round(spent, 4),
        }
        return Record(KIND, entry_key(self.chain, self.seq + 1), data)


def entry_key(chain: str, seq: int) -> str:
    return f"{chain}{seq:010d}"


def head_of(record: Record) -> Head:
    chain, seq = record.key[:-10], int(record.key[-10:])
    return Head(chain, seq, float(record.data["charged"]), float(record.data["spent"]))


class Ledger:
    """Reads the heads of chains; `wrote` tells it of entries a write of this process made."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._hints: dict[str, Head] = {}

    async def head(self, chain: str) -> Head:
        known = self._hints.get(chain) or Head(chain)
        last = await self._last(chain, known.seq)
        if last == known.seq:
            return known
        record = await self.store.get_record(KIND, entry_key(chain, last))
        assert record is not None, "ledger entries are never deleted"
        head = head_of(record)
        self._hint(head)
        return head

    async def moved(self, entries: list[Record]) -> bool:
        """Whether another write took the key of one of `entries` (the write that carried
        them lost a race for a chain's head, not for the job)."""
        for entry in entries:
            if entry.kind == KIND and await self.store.get_record(KIND, entry.key) is not None:
                return True
        return False

    def wrote(self, records: list[Record]) -> None:
        for record in records:
            if record.kind == KIND:
                self._hint(head_of(record))

    def _hint(self, head: Head) -> None:
        known = self._hints.get(head.chain)
        if known is None or known.seq < head.seq:
            if len(self._hints) >= HINTS_KEPT:
                self._hints.pop(next(iter(self._hints)))
            self._hints[head.chain] = head

    async def _last(self, chain: str, low: int) -> int:
        """The last seq of `chain`, knowing `low` exists (or is 0): double, then halve."""
        step = 1
        while await self._exists(chain, low + step):
            low, step = low + step, step * 2
        high = low + step  # missing
        while high - low > 1:
            middle = (low + high) // 2
            if await self._exists(chain, middle):
                low = middle
            else:
                high = middle
        return low

    async def _exists(self, chain: str, seq: int) -> bool:
        return await self.store.get_record(KIND, entry_key(chain, seq)) is not None
