"""open_producer's block: the body's exceptions leave as themselves; what was sent is written."""

from __future__ import annotations

import functools

import anyio
import pytest

from streamhouse import ClosedError, ObjectStore

from ..helpers import FlakyStore, Stores, read_partition

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("error", [ValueError("mine"), KeyboardInterrupt()], ids=["own", "ki"])
async def test_the_bodys_exception_leaves_the_block_as_itself(
    stores: Stores, error: BaseException
) -> None:
    """A ValueError or KeyboardInterrupt raised in the body comes out as itself, not in a group."""
    await stores.meta.create_topic("t", 1)

    async def send_then_fail() -> None:
        async with stores.producer(linger=0) as producer:
            await producer.send("t", b"before", partition=0)
            raise error

    with pytest.raises(type(error)) as caught:
        await send_then_fail()
    assert caught.value is error
    rows = await read_partition(stores.storage, stores.meta, "t", 0)
    assert [r[3] for r in rows] == [b"before"]


async def test_a_producer_used_after_its_block_says_it_was_closed(stores: Stores) -> None:
    """send() after the block ended raises ClosedError."""
    await stores.meta.create_topic("t", 1)
    async with stores.producer(linger=0) as producer:
        pass
    with pytest.raises(ClosedError):
        await producer.send("t", b"late")


async def test_a_cancelled_block_still_writes_what_it_accepted(stores: Stores) -> None:
    """A block cancelled from outside writes the record it accepted at close; nothing leaks."""
    await stores.meta.create_topic("t", 1)
    with anyio.CancelScope() as scope:
        async with stores.producer(linger=60) as producer, anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(producer.send, "t", b"accepted", partition=0))
            await anyio.wait_all_tasks_blocked()  # accepted; waiting for its batch to fill
            scope.cancel()
    assert scope.cancelled_caught
    rows = await read_partition(stores.storage, stores.meta, "t", 0)
    assert [r[3] for r in rows] == [b"accepted"]


class SlowToCheck(FlakyStore):
    """A store whose check() waits for a gate: the producer is still opening."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.checking = anyio.Event()
        self.gate = anyio.Event()

    async def check(self) -> None:
        self.checking.set()
        await self.gate.wait()


async def test_a_cancellation_while_the_producer_opens_ends_the_block(stores: Stores) -> None:
    """A block cancelled while its (shielded) runtime starts is left; it used to hang."""
    slow = SlowToCheck(stores.storage)
    scope = anyio.CancelScope()
    entered = False

    async def open_it() -> None:
        nonlocal entered
        with scope:
            async with Stores(slow, stores.meta).producer():
                entered = True

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(open_it)
            await slow.checking.wait()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            slow.gate.set()  # the start finishes after the cancellation
    assert scope.cancelled_caught
    assert not entered
