"""open_consumer: the original project's eight behaviours and Kafka's semantics."""

from __future__ import annotations

import random

import anyio
import pytest

import streamhouse
from streamhouse import (
    InvalidArgumentError,
    OffsetOutOfRangeError,
    SQLiteMetadataStore,
    TopicNotFoundError,
    TopicPartition,
    open_consumer,
    open_producer,
)

from ..helpers import Stores, poll_until, produce

pytestmark = pytest.mark.anyio

# -- the original project's eight ---------------------------------------------


async def test_an_empty_topics_poll_returns_nothing(stores: Stores) -> None:
    """Polling an empty topic returns [] after the timeout, without error."""
    await stores.meta.create_topic("empty", 2)
    async with stores.consumer("empty", offset_reset="earliest") as consumer:
        assert await consumer.poll(timeout=0.05) == []


async def test_ten_records_come_back_in_order(stores: Stores) -> None:
    """Ten records written come back in order at offsets 0..9."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 10)
    async with stores.consumer("t", offset_reset="earliest") as consumer:
        records = await poll_until(consumer, 10)
    assert [r.offset for r in records] == list(range(10))
    assert [r.value for r in records] == [b"t-0-%d" % i for i in range(10)]
    assert records[3].key == b"k3"
    assert (records[0].topic, records[0].partition, records[0].headers) == ("t", 0, ())


async def test_a_second_consumer_resumes_at_the_committed_offset(stores: Stores) -> None:
    """After a commit, another consumer of the same group starts where it ended."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 10)
    async with stores.consumer("t", group_id="g", offset_reset="earliest",
                           auto_commit=False) as first:  # fmt: skip
        await first.seek("t", 0, 6)
        await first.commit()
        assert await first.committed("t", 0) == 6
    async with stores.consumer("t", group_id="g", offset_reset="earliest") as second:
        assert await second.position("t", 0) == 6
        records = await poll_until(second, 4)
    assert [r.offset for r in records] == [6, 7, 8, 9]


async def test_records_fan_out_over_partitions(stores: Stores) -> None:
    """A consumer of a topic reads every partition."""
    await stores.meta.create_topic("t", 2)
    await produce(stores, "t", 0, 5)
    await produce(stores, "t", 1, 5)
    async with stores.consumer("t", offset_reset="earliest") as consumer:
        records = await poll_until(consumer, 10)
        assert consumer.assignment() == {TopicPartition("t", 0), TopicPartition("t", 1)}
    assert sorted((r.partition, r.offset) for r in records) == [
        (p, o) for p in (0, 1) for o in range(5)
    ]


async def test_reset_to_earliest_starts_at_the_log_start(stores: Stores) -> None:
    """offset_reset='earliest' without a committed offset starts at the log start."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 3)
    async with stores.consumer("t", group_id="new", offset_reset="earliest") as consumer:
        assert await consumer.position("t", 0) == 0
        assert [r.offset for r in await poll_until(consumer, 3)] == [0, 1, 2]


async def test_reset_to_latest_starts_at_the_high_watermark(stores: Stores) -> None:
    """offset_reset='latest' starts at the high watermark: nothing old is delivered."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 3)
    async with stores.consumer("t", group_id="new", offset_reset="latest") as consumer:
        assert await consumer.position("t", 0) == 3
        await produce(stores, "t", 0, 2, start=3)
        assert [r.offset for r in await poll_until(consumer, 2)] == [3, 4]


# -- poll ----------------------------------------------------------------------


async def test_poll_returns_as_soon_as_records_arrive(stores: Stores) -> None:
    """A waiting poll returns when a producer elsewhere writes, long before its timeout."""
    await stores.meta.create_topic("t", 1)
    async with (
        stores.consumer("t", offset_reset="latest") as consumer,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(produce, stores, "t", 0, 3)
        start = anyio.current_time()
        records = await consumer.poll(timeout=30)
        assert records
        assert anyio.current_time() - start < 10


async def test_poll_is_bounded_and_delivers_every_partition_in_order(stores: Stores) -> None:
    """No poll returns more than max_poll_records; every partition arrives whole, in order."""
    await stores.meta.create_topic("t", 3)
    for p in range(3):
        await produce(stores, "t", p, 100)
    async with stores.consumer("t", offset_reset="earliest", max_poll_records=30) as consumer:
        polls = []
        with anyio.fail_after(30):
            while sum(map(len, polls)) < 300:
                polls.append(await consumer.poll(timeout=5))
    assert all(len(p) <= 30 for p in polls)
    for q in range(3):
        offsets = [r.offset for p in polls for r in p if r.partition == q]
        assert offsets == list(range(100))


async def test_cancelled_polls_lose_and_repeat_nothing(stores: Stores) -> None:
    """Polls cancelled at random instants never lose or repeat a record."""
    await stores.meta.create_topic("t", 2)
    await produce(stores, "t", 0, 300)
    await produce(stores, "t", 1, 300)
    rng = random.Random(5)
    got: list[streamhouse.ConsumedRecord] = []
    async with stores.consumer("t", offset_reset="earliest", max_poll_records=7) as consumer:
        with anyio.fail_after(60):
            while len(got) < 600:
                with anyio.move_on_after(rng.choice([0, 0, 1e-6, 1e-4, 1e-3, 1])):
                    got += await consumer.poll(timeout=1)
    for p in (0, 1):
        assert [r.offset for r in got if r.partition == p] == list(range(300))


async def test_async_iteration_yields_every_record(stores: Stores) -> None:
    """async for delivers records one by one; breaking out loses none."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 20)
    async with stores.consumer("t", offset_reset="earliest", max_poll_records=8) as consumer:
        seen = []
        async for record in consumer:
            seen.append(record.offset)
            if len(seen) == 5:
                break
        assert await consumer.position("t", 0) == 5
        rest = await poll_until(consumer, 15)
    assert seen + [r.offset for r in rest] == list(range(20))


async def test_closing_after_a_break_commits_only_what_the_loop_saw(stores: Stores) -> None:
    """Leaving the block after breaking out of async for commits the next unseen offset."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 20)
    async with stores.consumer("t", group_id="g", offset_reset="earliest",
                           max_poll_records=8) as consumer:  # fmt: skip
        async for record in consumer:
            if record.offset == 2:
                break
    committed = await stores.meta.fetch_offsets("g")
    assert committed[TopicPartition("t", 0)].offset == 3


# -- commits -------------------------------------------------------------------


async def test_commit_persists_a_seek_backwards(stores: Stores) -> None:
    """commit() writes positions that moved backwards after a seek too."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 10)
    async with stores.consumer("t", group_id="g", offset_reset="earliest",
                           auto_commit=False) as consumer:  # fmt: skip
        await poll_until(consumer, 10)
        await consumer.commit()
        assert await consumer.committed("t", 0) == 10
        await consumer.seek("t", 0, 2)
        await consumer.commit()
        assert await consumer.committed("t", 0) == 2
        await consumer.commit({TopicPartition("t", 0): 7})
        assert await consumer.committed("t", 0) == 7
        assert await consumer.position("t", 0) == 2


async def test_commit_without_a_group_is_a_clear_error(stores: Stores) -> None:
    """commit() on a consumer without group_id raises naming the missing group."""
    await stores.meta.create_topic("t", 1)
    async with stores.consumer("t") as consumer:
        with pytest.raises(InvalidArgumentError, match="group_id"):
            await consumer.commit()
        assert await consumer.committed("t", 0) is None


async def test_leaving_normally_commits_the_current_positions(stores: Stores) -> None:
    """Leaving the block normally commits every delivered record."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 10)
    async with stores.consumer("t", group_id="g", offset_reset="earliest") as consumer:
        await poll_until(consumer, 10)
    assert (await stores.meta.fetch_offsets("g"))[TopicPartition("t", 0)].offset == 10


async def test_leaving_by_an_exception_commits_only_what_was_come_back_for(
    stores: Stores,
) -> None:
    """After an exception, only records before the last poll request are committed."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 10)

    async def fail_while_processing() -> None:
        async with stores.consumer("t", group_id="g", offset_reset="earliest",
                               max_poll_records=4) as consumer:  # fmt: skip
            first = await poll_until(consumer, 1)
            assert first[-1].offset == 3
            await consumer.poll(timeout=5)  # came back for more: 0..3 are processed
            raise RuntimeError("processing failed on 4..7")

    with pytest.raises(RuntimeError, match="processing failed"):
        await fail_while_processing()
    assert (await stores.meta.fetch_offsets("g"))[TopicPartition("t", 0)].offset == 4


# -- resets, errors, control ---------------------------------------------------


async def test_reset_none_names_the_partitions_without_offsets(stores: Stores) -> None:
    """offset_reset='none' without committed offsets raises naming each partition."""
    await stores.meta.create_topic("t", 2)
    with pytest.raises(OffsetOutOfRangeError, match=r"t\[0\], t\[1\]"):
        async with stores.consumer("t", group_id="g", offset_reset="none"):
            pass


async def test_a_committed_offset_outside_the_log_is_reset(stores: Stores) -> None:
    """A committed offset past the high watermark is reset by policy, or named with 'none'."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 3)
    await stores.meta.commit_offsets("g", {TopicPartition("t", 0): 50})
    async with stores.consumer("t", group_id="g", offset_reset="earliest",
                           auto_commit=False) as consumer:  # fmt: skip
        assert await consumer.position("t", 0) == 0
        await consumer.commit({TopicPartition("t", 0): 50})
    with pytest.raises(OffsetOutOfRangeError, match=r"t\[0\]"):
        async with stores.consumer("t", group_id="g", offset_reset="none"):
            pass


async def test_a_missing_topic_is_named_at_open(stores: Stores) -> None:
    """Opening a consumer of a missing topic raises TopicNotFoundError naming it."""
    with pytest.raises(TopicNotFoundError, match="'ghost'"):
        async with stores.consumer(["ghost"]):
            pass


async def test_seek_to_beginning_end_and_exact_partitions(stores: Stores) -> None:
    """seek_to_beginning/end move positions; a TopicPartition assigns only itself."""
    await stores.meta.create_topic("t", 2)
    await produce(stores, "t", 1, 4)
    async with stores.consumer([TopicPartition("t", 1)], offset_reset="latest") as consumer:
        assert consumer.assignment() == {TopicPartition("t", 1)}
        assert await consumer.high_watermark("t", 1) == 4
        assert await consumer.lag("t", 1) == 0
        await consumer.seek_to_beginning()
        assert await consumer.lag("t", 1) == 4
        assert [r.offset for r in await poll_until(consumer, 4)] == [0, 1, 2, 3]
        await consumer.seek_to_beginning(TopicPartition("t", 1))
        await consumer.seek_to_end()
        assert await consumer.position("t", 1) == 4
        with pytest.raises(InvalidArgumentError, match="not assigned"):
            await consumer.seek("t", 0, 0)


async def test_paused_partitions_deliver_nothing_until_resumed(stores: Stores) -> None:
    """pause() holds a partition back while others flow; resume() delivers it from its position."""
    await stores.meta.create_topic("t", 2)
    await produce(stores, "t", 0, 3)
    await produce(stores, "t", 1, 3)
    tp0 = TopicPartition("t", 0)
    async with stores.consumer("t", offset_reset="earliest") as consumer:
        await consumer.pause(tp0)
        assert await consumer.paused() == {tp0}
        records = await poll_until(consumer, 3)
        await produce(stores, "t", 0, 3, start=3)
        await produce(stores, "t", 1, 3, start=3)
        records += await poll_until(consumer, 3)  # t[1]'s new records, not t[0]'s older ones
        assert [(r.partition, r.offset) for r in records] == [(1, o) for o in range(6)]
        assert await consumer.lag("t", 0) == 6
        await consumer.resume(tp0)
        assert await consumer.paused() == set()
        rest = await poll_until(consumer, 6)
    assert [(r.partition, r.offset) for r in rest] == [(0, o) for o in range(6)]


async def test_pausing_mid_block_loses_nothing_the_consumer_held(stores: Stores) -> None:
    """Records fetched but not handed out go back on pause and come after resume, none skipped."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 50)
    tp = TopicPartition("t", 0)
    async with stores.consumer("t", group_id="g", offset_reset="earliest",
                           max_poll_records=10) as consumer:  # fmt: skip
        first = await poll_until(consumer, 10)  # the consumer holds 10..49 now
        assert [r.offset for r in first] == list(range(10))
        await consumer.pause(tp)
        assert await consumer.position("t", 0) == 10
        assert await consumer.poll(timeout=0) == []  # what it held went back
        await consumer.commit()
        await consumer.resume(tp)
        rest = await poll_until(consumer, 40)
    assert [r.offset for r in rest] == list(range(10, 50))
    assert (await stores.meta.fetch_offsets("g"))[tp].offset == 50


async def test_the_public_api_runs_under_trio_and_asyncio(
    meta: SQLiteMetadataStore, tmp_path: object
) -> None:
    """Produce, poll, commit and reopen work the same under both event loops."""
    storage = streamhouse.LocalObjectStore(f"{tmp_path}/objects")
    await meta.create_topic("t", 2)
    async with open_producer(storage=storage, metadata=meta, linger=0.001) as producer:
        offsets = (await producer.send_batch("t", [b"a", b"b", b"c"], partition=1)).offsets
    assert offsets == [0, 1, 2]
    async with open_consumer("t", group_id="g", storage=storage, metadata=meta,
                             offset_reset="earliest") as consumer:  # fmt: skip
        records = await poll_until(consumer, 3)
        assert [r.value for r in records] == [b"a", b"b", b"c"]
    async with open_consumer("t", group_id="g", storage=storage, metadata=meta) as consumer:
        assert await consumer.position("t", 1) == 3
        assert await consumer.lags() == {TopicPartition("t", 0): 0, TopicPartition("t", 1): 0}
