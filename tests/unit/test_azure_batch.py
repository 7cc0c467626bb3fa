"""Group commit of the Azure Table store (core/stores/azure_batch.py), in this process: a
transaction stand-in that applies a group's operations all or nothing to a dict of rows, the way
the Table service does, so the grouping, the splitting of a refused group and the results each
writer gets can be checked op by op. The store on a real Azurite is in
tests/contract/test_azure_table.py."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from core.stores import azure_batch
from core.stores.azure_batch import MAX_GROUP_OPS, GroupCommit


class Refused(Exception):
    def __init__(self, index: int) -> None:
        super().__init__(f"operation {index} refused")
        self.index = index


class Table:
    """Rows by RowKey; `create` of a present row or `update` of a missing one refuses the whole
    transaction, as the service does. Records every transaction it is sent."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.sent: list[list[str]] = []
        self.gate: asyncio.Event | None = None  # when set: transactions wait for it
        self.down = False

    async def submit(self, ops: list[Any]) -> list[Mapping[str, Any]]:
        self.sent.append([row["RowKey"] for _, row, _ in ops])
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ConnectionError("unreachable")
        keys = [row["RowKey"] for _, row, _ in ops]
        if len(set(keys)) != len(keys):
            raise Refused(0)
        for index, (op, row, _) in enumerate(ops):
            present = row["RowKey"] in self.rows
            if (op == "create" and present) or (op == "update" and not present):
                raise Refused(index)
        for _, row, _ in ops:
            self.rows[row["RowKey"]] = row["n"]
        return [{"etag": f"{row['RowKey']}@{row['n']}"} for _, row, _ in ops]


def write(op: str, *keys: str, n: int = 1) -> list[Any]:
    return [(op, {"PartitionKey": "jobs", "RowKey": key, "n": n}, {}) for key in keys]


@pytest.fixture
def table() -> Table:
    return Table()


@pytest.fixture
def group(table: Table) -> GroupCommit:
    return GroupCommit(table.submit, (Refused,))


async def test_concurrent_writes_share_one_transaction(table: Table, group: GroupCommit) -> None:
    writes = [write("create", f"j{n}", f"i{n}") for n in range(10)]
    results = await asyncio.gather(*(group.submit(ops) for ops in writes))
    assert len(table.sent) == 1 and group.transactions == 1
    for n, result in enumerate(results):  # each writer gets the results of its own operations
        assert [r["etag"] for r in result] == [f"j{n}@1", f"i{n}@1"]


async def test_a_lone_write_is_sent_at_once(table: Table, group: GroupCommit) -> None:
    assert await group.submit(write("create", "a")) == [{"etag": "a@1"}]
    assert await group.submit(write("update", "a", n=2)) == [{"etag": "a@2"}]
    assert table.sent == [["a"], ["a"]]


async def test_a_refused_group_is_sent_again_write_by_write(
    table: Table, group: GroupCommit
) -> None:
    table.rows["taken"] = 0
    good = [write("create", f"ok{n}") for n in range(3)]
    bad = write("create", "taken")
    outcome = await asyncio.gather(
        *(group.submit(ops) for ops in [*good, bad]), return_exceptions=True
    )
    assert [r for r in outcome[:3]] == [[{"etag": f"ok{n}@1"}] for n in range(3)]
    assert isinstance(outcome[3], Refused) and outcome[3].index == 0  # its own, as if alone
    assert table.sent[0] == ["ok0", "ok1", "ok2", "taken"]  # the group, refused whole
    assert sorted(table.sent[1:]) == [["ok0"], ["ok1"], ["ok2"], ["taken"]]


async def test_a_lone_refused_write_gets_the_refusal_as_it_is(
    table: Table, group: GroupCommit
) -> None:
    with pytest.raises(Refused) as refused:
        await group.submit(write("update", "x", "missing"))
    assert refused.value.index == 0 and len(table.sent) == 1


async def test_writes_of_one_row_never_share_a_transaction(
    table: Table, group: GroupCommit
) -> None:
    first, second = write("create", "job", "slot"), write("create", "other", "slot")
    outcome = await asyncio.gather(
        group.submit(first), group.submit(second), return_exceptions=True
    )
    assert outcome[0] == [{"etag": "job@1"}, {"etag": "slot@1"}]
    assert isinstance(outcome[1], Refused)  # the slot was taken by the first: a conflict
    assert table.sent == [["job", "slot"], ["other", "slot"]]


async def test_a_group_holds_at_most_max_group_ops(table: Table, group: GroupCommit) -> None:
    writes = [write("create", f"a{n}", f"b{n}", f"c{n}") for n in range(50)]
    await asyncio.gather(*(group.submit(ops) for ops in writes))
    assert all(len(sent) <= MAX_GROUP_OPS for sent in table.sent)
    assert sum(len(sent) for sent in table.sent) == 150 and len(table.sent) < 10
    assert len(table.rows) == 150


async def test_a_write_too_big_for_a_group_goes_alone(table: Table, group: GroupCommit) -> None:
    big = write("create", *(f"r{n}" for n in range(MAX_GROUP_OPS + 1)))
    small = write("create", "s")
    await asyncio.gather(group.submit(big), group.submit(small))
    assert sorted(len(sent) for sent in table.sent) == [1, MAX_GROUP_OPS + 1]


async def test_an_unreachable_service_fails_every_writer_of_the_group(
    table: Table, group: GroupCommit
) -> None:
    table.down = True
    outcome = await asyncio.gather(
        *(group.submit(write("create", f"k{n}")) for n in range(4)), return_exceptions=True
    )
    assert all(isinstance(error, ConnectionError) for error in outcome)
    assert len(table.sent) == 1  # nothing is sent again: what was committed is unknown


async def test_writes_arriving_while_groups_are_in_flight_form_the_next(
    table: Table, group: GroupCommit
) -> None:
    table.gate = asyncio.Event()
    busy = []
    for n in range(azure_batch.IN_FLIGHT):  # each alone: a transaction in flight each
        busy.append(asyncio.ensure_future(group.submit(write("create", f"f{n}"))))
        await asyncio.sleep(0.01)
    assert len(table.sent) == azure_batch.IN_FLIGHT
    later = [asyncio.ensure_future(group.submit(write("create", f"l{n}"))) for n in range(3)]
    await asyncio.sleep(0.01)
    assert len(table.sent) == azure_batch.IN_FLIGHT  # no flusher free: the later ones wait
    table.gate.set()
    await asyncio.gather(*busy, *later)
    assert table.sent[-1] == ["l0", "l1", "l2"]  # then go together
    assert len(table.rows) == azure_batch.IN_FLIGHT + 3


async def test_a_cancelled_writer_leaves_its_group_whole(table: Table, group: GroupCommit) -> None:
    table.gate = asyncio.Event()
    kept = asyncio.ensure_future(group.submit(write("create", "kept")))
    dropped = asyncio.ensure_future(group.submit(write("create", "dropped")))
    await asyncio.sleep(0.01)
    dropped.cancel()
    table.gate.set()
    assert await kept == [{"etag": "kept@1"}]
    assert "dropped" in table.rows  # it was in the transaction already: committed with it


async def test_cancelled_flushers_fail_the_writes_they_hold(
    table: Table, group: GroupCommit
) -> None:
    table.gate = asyncio.Event()
    writes = [asyncio.ensure_future(group.submit(write("create", f"w{n}"))) for n in range(3)]
    await asyncio.sleep(0.01)
    for flusher in list(group._flushers):
        flusher.cancel()
    outcome = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(error, asyncio.CancelledError) for error in outcome)
