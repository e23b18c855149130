"""The coordinator, the one owner of positions: what it accepts, refuses and answers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from anyio.streams.memory import MemoryObjectSendStream

from streamhouse import (
    InvalidArgumentError,
    LocalObjectStore,
    OffsetReset,
    RecordBatch,
    RetryPolicy,
    SQLiteMetadataStore,
    TopicPartition,
)
from streamhouse._consumer.cache import run_cache
from streamhouse._consumer.coordinator import Coordinator, Settings
from streamhouse._consumer.messages import (
    Assign,
    Batch,
    Blocks,
    Delivered,
    PartitionStart,
    Poll,
    Position,
    Reply,
    ReplyDropped,
    Request,
    Revoke,
)

from ..faults import FaultyMetadata, Script
from ..helpers import Stores, poll_until, produce

pytestmark = pytest.mark.anyio

T = TypeVar("T")
TP0, TP1, TP2 = (TopicPartition("t", p) for p in range(3))


@pytest.fixture
def local(tmp_path: Path, meta: SQLiteMetadataStore) -> Stores:
    """A local object store beside the SQLite metadata store."""
    return Stores(LocalObjectStore(tmp_path / "objects"), meta)


@contextlib.asynccontextmanager
async def coordinator_on(
    stores: Stores, starts: dict[TopicPartition, PartitionStart]
) -> AsyncIterator[tuple[Coordinator, MemoryObjectSendStream[object]]]:
    """A coordinator on its own (no facade): its object, and its inbox to talk to it."""
    settings = Settings(None, OffsetReset.EARLIEST, False, 5.0, 2, 0.05, 60.0, RetryPolicy())
    async with anyio.create_task_group() as tg:
        cache = await tg.start(run_cache, stores.storage, None, 0)
        inbox_send, inbox = anyio.create_memory_object_stream[object](64)
        bell_send, bell = anyio.create_memory_object_stream[None](1)
        with inbox_send, bell:
            coordinator = Coordinator(
                settings, stores.meta, cache, inbox, inbox_send.clone(), bell_send
            )
            await tg.start(coordinator.run, starts)
            yield coordinator, inbox_send
        tg.cancel_scope.cancel()


async def ask(inbox: MemoryObjectSendStream[object], make: Callable[[Reply[T]], Request[T]]) -> T:
    reply = Reply[T]()
    await inbox.send(make(reply))
    return await reply.wait()


async def test_a_batch_not_at_the_expected_offset_is_refused(
    local: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    """A block that does not start where the partition is: refused, logged, the reader restarted."""
    caplog.set_level(logging.DEBUG, logger="streamhouse.consumer")
    await local.meta.create_topic("t", 1)
    await produce(local, "t", 0, 10)
    async with coordinator_on(local, {TP0: PartitionStart(0, None, 0, 10)}) as (coordinator, inbox):
        blocks: Blocks = await ask(inbox, lambda r: Poll(r, anyio.current_time() + 30))
        assert [(b.first_offset, len(b)) for _, b in blocks] == [(0, 10)]
        part = coordinator._parts[TP0]
        reader = part.reader_epoch
        bogus = RecordBatch("t", 0, 15, [0], [None], [b"from nowhere"])
        await inbox.send(Batch(TP0, reader, bogus))
        assert await ask(inbox, lambda r: Position(r, TP0)) == 0  # answered after the Batch
        assert part.reader_epoch != reader
        assert (part.fetched, part.expected, list(part.pending)) == (10, 10, [])
        await produce(local, "t", 0, 5, start=10)
        blocks = await ask(inbox, lambda r: Poll(r, anyio.current_time() + 30))
        assert [(b.first_offset, len(b)) for _, b in blocks] == [(10, 5)]
    assert "refused a batch of t[0] at 15: expected 10" in caplog.text


async def test_delivered_offsets_count_only_within_what_the_facade_was_sent(local: Stores) -> None:
    """Reports of another epoch, or past what was sent, do not move the position."""
    await local.meta.create_topic("t", 1)
    await produce(local, "t", 0, 10)
    async with coordinator_on(local, {TP0: PartitionStart(0, None, 0, 10)}) as (coordinator, inbox):
        blocks: Blocks = await ask(inbox, lambda r: Poll(r, anyio.current_time() + 30))
        epoch = blocks[0][0]
        part = coordinator._parts[TP0]
        for stale in [(epoch - 1, 5), (epoch + 1, 5), (epoch, 11)]:
            await inbox.send(Delivered({TP0: stale}, came_back=True))
            assert await ask(inbox, lambda r: Position(r, TP0)) == 0
        await inbox.send(Delivered({TP0: (epoch, 5)}, came_back=False))
        assert await ask(inbox, lambda r: Position(r, TP0)) == 5
        assert part.consumed == 0  # handed out, not yet come back for more
        await inbox.send(Delivered({}, came_back=True))
        assert await ask(inbox, lambda r: Position(r, TP0)) == 5
        assert part.consumed == 5


async def test_commit_is_one_request_and_one_transaction(local: Stores) -> None:
    """commit() of three moved partitions writes once, every position."""
    script = Script(only=set())  # counts calls, fails none
    stores = Stores(local.storage, FaultyMetadata(local.meta, script))
    await local.meta.create_topic("t", 3)
    for p in range(3):
        await produce(local, "t", p, 5)
    async with stores.consumer("t", group_id="g", offset_reset="earliest",
                               auto_commit=False) as consumer:  # fmt: skip
        await poll_until(consumer, 15)
        await consumer.commit()
        await consumer.commit()  # nothing moved: nothing written
    assert script.calls["commit_offsets"] == 1
    found = await local.meta.fetch_offsets("g")
    assert {tp: c.offset for tp, c in found.items()} == {TP0: 5, TP1: 5, TP2: 5}


async def test_lags_come_in_one_answer(local: Stores) -> None:
    """lags() gives every assigned partition's lag; lag() one; both follow seeks and polls."""
    await local.meta.create_topic("t", 2)
    await produce(local, "t", 0, 10)
    await produce(local, "t", 1, 4)
    async with local.consumer("t", offset_reset="earliest") as consumer:
        assert await consumer.lags() == {TP0: 10, TP1: 4}
        await consumer.seek("t", 0, 7)
        assert await consumer.lags() == {TP0: 3, TP1: 4}
        assert await consumer.lag("t", 0) == 3
        await poll_until(consumer, 7)
        assert await consumer.lags() == {TP0: 0, TP1: 0}


async def test_partitions_assigned_and_revoked_at_runtime(local: Stores) -> None:
    """Revoking drops what the facade held of a partition; assigning starts reading another."""
    await local.meta.create_topic("t", 2)
    await produce(local, "t", 0, 10)
    await produce(local, "t", 1, 10)
    async with local.consumer(TP0, offset_reset="earliest", max_poll_records=5) as consumer:
        first = await consumer.poll(timeout=30)  # 0..4; the facade holds 5..9
        assert [r.offset for r in first] == [0, 1, 2, 3, 4]
        # What group membership will send (issue 13); here, by hand.
        await consumer._ask(lambda r: Revoke(r, frozenset({TP0})))
        assert await consumer.poll(timeout=0) == []
        assert consumer.assignment() == set()
        await consumer._ask(lambda r: Assign(r, {TP1: PartitionStart(2, None, 0, 10)}))
        records = await poll_until(consumer, 8)
        assert [(r.partition, r.offset) for r in records] == [(1, o) for o in range(2, 10)]
        assert consumer.assignment() == {TP1}
        with pytest.raises(InvalidArgumentError, match=r"t\[0\] is not assigned"):
            await consumer.position("t", 0)
        assert await consumer.position("t", 1) == 10


async def test_a_reply_is_either_taken_or_known_refused() -> None:
    """put() after the asker gave up is refused; an answer that came first is kept by abandon()."""
    gone = Reply[int]()
    assert gone.abandon() is None
    assert not gone.wanted
    assert gone.put(1) is False  # the actor keeps what it would have handed over
    late = Reply[int]()
    assert late.put(2) is True
    assert late.abandon() == 2  # the asker, cancelled meanwhile, keeps the answer
    answered = Reply[int]()
    answered.put(3)
    assert await answered.wait() == 3
    failed = Reply[int]()
    failed.put(InvalidArgumentError("no"))
    with pytest.raises(InvalidArgumentError, match="no"):
        await failed.wait()
    dropped = Reply[int]()
    dropped.drop()
    with pytest.raises(ReplyDropped):
        await dropped.wait()
