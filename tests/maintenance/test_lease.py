"""One maintainer at a time, on both metadata stores and both object stores: a
second one skips; a fenced one changes nothing; a killed one leaves nothing
the next pass does not finish or undo."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from streamhouse import Admin, MaintenanceReport, ObjectStore

from ..helpers import Stores
from .support import (
    DAY_MS,
    Dying,
    Fatal,
    Killed,
    Killer,
    flushes,
    log,
    now_ms,
    object_keys,
    referenced_keys,
)

pytestmark = pytest.mark.anyio


class Gate:
    """An ObjectStore whose first GET waits until the test opens the gate."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.reached = anyio.Event()
        self.opened = anyio.Event()
        self.deletes: list[str] = []

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if not self.reached.is_set():
            self.reached.set()
            await self.opened.wait()
        return await self.inner.get(key, start, end)

    async def delete(self, key: str) -> None:
        self.deletes.append(key)
        await self.inner.delete(key)

    def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[Any]:
        return self.inner.list(prefix, start_after=start_after)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def workload(stores: Stores) -> None:
    """Two old segments for retention, six small ones to merge."""
    admin = Admin(*stores)
    await admin.create_topic("r", retention_seconds=3600)
    await admin.create_topic("m")
    await flushes(stores, "r", 0, [[(b"k", b"old")]] * 2, timestamp=now_ms() - DAY_MS)
    await flushes(stores, "r", 0, [[(b"k", b"new")]])
    await flushes(stores, "m", 0, [[(b"k%d" % i, b"v%d" % i)] for i in range(6)])


async def check_final_state(stores: Stores) -> None:
    """What a consumer reads equals the model, and the store holds only what the
    catalogue points at."""
    assert await log(stores, "r") == [(2, b"k", b"new")]
    assert await log(stores, "m") == [(i, b"k%d" % i, b"v%d" % i) for i in range(6)]
    assert len(await stores.meta.list_segments("m", 0)) == 1
    assert await object_keys(stores.storage) == (
        await referenced_keys(stores.meta, "r", 1) | await referenced_keys(stores.meta, "m", 1)
    )


async def test_a_second_maintainer_skips_while_the_first_works(stores: Stores) -> None:
    """Two passes at once: one works, the other returns an empty report at once."""
    await workload(stores)
    gate = Gate(stores.storage)
    reports: list[MaintenanceReport] = []

    async def first() -> None:
        reports.append(await Admin(gate, stores.meta).maintain(grace=0))  # type: ignore[arg-type]

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await gate.reached.wait()  # the first holds the lease, mid-pass
        second = await Admin(*stores).maintain(grace=0)
        gate.opened.set()
    assert second == MaintenanceReport(skipped=True)
    (report,) = reports
    assert (report.segments_deleted, report.segments_merged, report.skipped) == (2, 6, False)
    assert len(gate.deletes) == len(set(gate.deletes)) == report.objects_deleted
    await check_final_state(stores)


async def test_a_maintainer_that_lost_its_lease_changes_nothing(stores: Stores) -> None:
    """A pass whose lease was taken mid-rewrite stops; its new object is deleted."""
    await workload(stores)
    gate = Gate(stores.storage)
    dying = Dying(stores.meta)
    before = await stores.meta.list_segments("m", 0)
    reports: list[MaintenanceReport] = []

    async def slow() -> None:
        admin = Admin(gate, dying)  # type: ignore[arg-type]
        reports.append(await admin.maintain(grace=0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await gate.reached.wait()  # mid-merge, after retention
        await dying.expire()  # the lease ran out while it stalled
        thief = await stores.meta.acquire_lease("thief", 60)
        gate.opened.set()
    assert reports[0].interrupted
    assert await stores.meta.list_segments("m", 0) == before
    assert thief is not None
    await stores.meta.release_lease(thief)
    # Its merged object never reached the catalogue, and is gone already.
    assert await object_keys(stores.storage) >= await referenced_keys(stores.meta, "m", 1)
    report = await Admin(*stores).maintain(grace=0, orphan_grace=0)
    assert report.segments_merged == 6
    await check_final_state(stores)


# A clean pass of the workload makes, in order: retire (r), six GETs (m's
# segments), a PUT (the merged object), replace, claim (eight objects), eight
# deletes, confirm, a LIST (orphans).
CLEAN_PASS = [
    "retire_segments", *["get"] * 6, "put", "replace_segments", "claim_garbage",
    *["delete"] * 8, "confirm_deleted", "list",
]  # fmt: skip


async def test_a_clean_pass_makes_the_calls_the_kills_aim_at(stores: Stores) -> None:
    """The workload's pass makes the calls the next test kills at, in that order."""
    await workload(stores)
    killer = Killer(0)
    await Admin(Fatal(stores.storage, killer), Dying(stores.meta, killer)).maintain(grace=0)  # type: ignore[arg-type]
    assert killer.calls == CLEAN_PASS
    await check_final_state(stores)


# Killing at each kind of call (a storage call before it happens, a metadata
# write after it landed):
@pytest.mark.parametrize("at", [1, 2, 8, 9, 10, 11, 15, 19, 20])
async def test_a_maintainer_killed_at_any_call_leaves_a_whole_log(stores: Stores, at: int) -> None:
    """Killed at its at-th call, a maintainer leaves what the next pass finishes."""
    await workload(stores)
    killer = Killer(at)
    dying = Dying(stores.meta, killer)
    admin = Admin(Fatal(stores.storage, killer), dying)  # type: ignore[arg-type]
    with pytest.raises(BaseException) as caught:  # noqa: PT011 - Killed, maybe in a group
        await admin.maintain(grace=0, orphan_grace=0)
    error = caught.value
    assert isinstance(error, Killed) or (
        isinstance(error, BaseExceptionGroup) and error.subgroup(Killed) is not None
    )
    # Whatever it left, readers see every record they should.
    assert [v for _, _, v in await log(stores, "m")] == [b"v%d" % i for i in range(6)]
    await dying.expire()
    await Admin(*stores).maintain(grace=0, orphan_grace=0)
    await check_final_state(stores)
