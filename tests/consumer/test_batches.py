"""Consuming by the block: RecordBatch, poll_batches() and batches()."""

from __future__ import annotations

import collections
import random

import anyio
import pytest

import streamhouse
from streamhouse import InvalidArgumentError, RecordBatch, TopicPartition
from streamhouse._consumer.held import HeldRecords, fair_shares

from ..helpers import Stores, produce

pytestmark = pytest.mark.anyio


def test_a_batch_holds_columns_and_builds_records_on_demand() -> None:
    """Offsets are consecutive from first_offset; records() and slice() cut the same rows."""
    batch = RecordBatch("t", 3, 10, [1, 2, 3], [b"a", None, b"c"], [b"x", b"y", None])
    assert len(batch) == 3
    assert batch.offsets == range(10, 13)
    assert (batch.next_offset, batch.last_offset) == (13, 12)
    assert batch.headers == ((), (), ())
    assert list(batch) == [
        ("t", 3, 10, 1, b"a", b"x", ()),
        ("t", 3, 11, 2, None, b"y", ()),
        ("t", 3, 12, 3, b"c", None, ()),
    ]
    assert batch.records(1, 2) == [streamhouse.ConsumedRecord("t", 3, 11, 2, None, b"y", ())]
    assert batch.records(2, 99)[0].offset == 12
    assert batch.records(3) == []
    part = batch.slice(1)
    assert (part.first_offset, list(part.values)) == (11, [b"y", None])
    assert batch.slice(0) is batch
    with_headers = RecordBatch("t", 0, 0, [1], [None], [b"v"], [(("h", b"1"),)])
    assert next(iter(with_headers)).headers == (("h", b"1"),)
    assert with_headers.slice(0, 0).headers == []


def test_a_batch_with_ragged_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        RecordBatch("t", 0, 0, [1, 2], [None], [b"a", b"b"])
    with pytest.raises(ValueError, match="same length"):
        RecordBatch("t", 0, 0, [1], [None], [b"a"], [(), ()])


async def test_poll_batches_returns_every_record_as_columns(stores: Stores) -> None:
    """Every record of every partition comes once, in order, as whole runs of columns."""
    await stores.meta.create_topic("t", 3)
    for p in range(3):
        await produce(stores, "t", p, 250)
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    async with stores.consumer("t", offset_reset="earliest") as consumer:
        with anyio.fail_after(30):
            while sum(map(len, seen.values())) < 750:
                for batch in await consumer.poll_batches(timeout=5):
                    assert batch.topic == "t"
                    assert list(batch.values) == [
                        b"t-%d-%d" % (batch.partition, i) for i in batch.offsets
                    ]
                    assert list(batch.keys) == [b"k%d" % i for i in batch.offsets]
                    assert all(ts > 0 for ts in batch.timestamps)
                    seen[batch.partition] += batch.offsets
        for p in range(3):
            assert seen[p] == list(range(250))
            assert await consumer.position("t", p) == 250
        assert await consumer.poll_batches(timeout=0.01) == []


async def test_poll_batches_respects_its_limits_and_mixes_with_poll(stores: Stores) -> None:
    """max_records and max_batches bound the answer; poll() and poll_batches() share positions."""
    await stores.meta.create_topic("t", 2)
    await produce(stores, "t", 0, 100)
    await produce(stores, "t", 1, 100)
    async with stores.consumer("t", offset_reset="earliest") as consumer:
        with anyio.fail_after(30):
            first = await consumer.poll(timeout=5, max_records=10)
            batches = await consumer.poll_batches(timeout=5, max_records=30)
            assert 0 < sum(map(len, batches)) <= 30
            one = await consumer.poll_batches(timeout=5, max_batches=1)
            assert len(one) == 1
        got: dict[int, list[int]] = {0: [], 1: []}
        for r in first:
            got[r.partition].append(r.offset)
        for b in batches + one:
            got[b.partition] += b.offsets
        for p in (0, 1):
            assert got[p] == list(range(len(got[p])))
            assert await consumer.position("t", p) == len(got[p])
        with pytest.raises(InvalidArgumentError, match="max_batches must be an int >= 1"):
            await consumer.poll_batches(max_batches=0)


async def test_cancelled_batch_polls_lose_and_repeat_nothing(stores: Stores) -> None:
    await stores.meta.create_topic("t", 2)
    await produce(stores, "t", 0, 300)
    await produce(stores, "t", 1, 300)
    rng = random.Random(7)
    got: dict[int, list[int]] = {0: [], 1: []}
    async with stores.consumer("t", offset_reset="earliest") as consumer:
        with anyio.fail_after(60):
            while sum(map(len, got.values())) < 600:
                with anyio.move_on_after(rng.choice([0, 0, 1e-6, 1e-4, 1e-3, 1])):
                    for b in await consumer.poll_batches(timeout=1, max_records=17):
                        got[b.partition] += b.offsets
    assert got == {0: list(range(300)), 1: list(range(300))}


async def test_batches_iterates_and_commits_only_what_the_loop_saw(stores: Stores) -> None:
    """batches() yields one batch per step; a commit inside the loop covers the batches seen."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 40)
    await produce(stores, "t", 0, 40, start=40)  # two segments: two batches at least
    tp = TopicPartition("t", 0)
    async with stores.consumer("t", group_id="g", offset_reset="earliest") as consumer:
        offsets: list[int] = []
        with anyio.fail_after(30):
            async for batch in consumer.batches():
                offsets += batch.offsets
                await consumer.commit()
                assert await consumer.committed("t", 0) == batch.next_offset
                if len(offsets) == 80:
                    break
        assert offsets == list(range(80))
        assert await consumer.position(tp.topic, tp.partition) == 80


async def test_records_left_by_async_for_come_first_as_batches(stores: Stores) -> None:
    """Records a record loop has not handed out are not skipped by a batch poll."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 30)
    async with stores.consumer("t", offset_reset="earliest", max_poll_records=10) as consumer:
        with anyio.fail_after(30):
            async for record in consumer:
                assert record.offset == 0
                break
            left = await consumer.poll_batches(max_records=5)
            assert [list(b.offsets) for b in left] == [[1, 2, 3, 4, 5]]
            left = await consumer.poll_batches()
            assert [list(b.offsets) for b in left] == [[6, 7, 8, 9]]
            rest = await consumer.poll_batches(timeout=5)
        assert rest[0].first_offset == 10


def _held(sizes: list[tuple[int, int, int]]) -> HeldRecords:
    """Held records: for each (partition, first offset, count), one batch."""
    held = HeldRecords()
    for p, at, n in sizes:
        values = [b"%d" % o for o in range(at, at + n)]
        held.add(TopicPartition("t", p), RecordBatch("t", p, at, [0] * n, [None] * n, values))
    return held


def test_held_records_are_shared_fairly_and_handed_out_once() -> None:
    """Polls from held blocks take fair shares; every record comes out once; hand-outs are noted."""
    assert fair_shares([100, 100, 4, 0], 30) == [13, 13, 4, 0]
    assert fair_shares([5, 5], 3) == [2, 1]
    held = _held([(0, 0, 40), (1, 0, 10), (0, 40, 40), (2, 7, 3)])
    assert held.first_offsets() == {
        TopicPartition("t", 0): 0, TopicPartition("t", 1): 0, TopicPartition("t", 2): 7,
    }  # fmt: skip
    handed: dict[TopicPartition, int] = {}
    first = held.take_records(12, handed)
    assert [(r.partition, r.offset) for r in first] == [
        *((0, o) for o in range(5)), *((1, o) for o in range(4)), (2, 7), (2, 8), (2, 9),
    ]  # fmt: skip
    assert handed == {
        TopicPartition("t", 0): 5, TopicPartition("t", 1): 4, TopicPartition("t", 2): 10,
    }  # fmt: skip
    batches = held.take_batches(1000, 2, handed)
    assert [(b.partition, b.first_offset, len(b)) for b in batches] == [(1, 4, 6), (0, 5, 35)]
    rest = held.take_batches(1000, 10, None)
    assert [(b.partition, b.first_offset, len(b)) for b in rest] == [(0, 40, 40)]
    assert handed[TopicPartition("t", 0)] == 40  # batches taken with None are not handed out
    assert not held


def test_a_poll_visits_at_most_its_limit_of_partitions_in_turn() -> None:
    """With more partitions held than a poll may return, polls serve them in turn, none twice."""
    held = _held([(p, 0, 5) for p in range(10)])
    polls = [[r.partition for r in held.take_records(3, {})] for _ in range(4)]
    assert polls == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]]
    held = _held([(p, 0, n) for p, n in enumerate([100, 100, 100, 4])])
    shares = [collections.Counter(r.partition for r in held.take_records(n, {})) for n in (30, 3)]
    assert shares == [{0: 9, 1: 9, 2: 8, 3: 4}, {1: 1, 2: 1, 0: 1}]
    assert len(held.take_records(1000, {})) == 304 - 30 - 3
