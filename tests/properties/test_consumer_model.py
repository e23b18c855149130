"""A stateful property: the consumer against a model of positions and commits.

Hypothesis draws a program of operations (produce, poll, poll of batches,
commit, seek, pause, resume, cancelled polls of both kinds, close and
reopen); one trio run executes it against a real consumer on a local store
and SQLite, checking every answer against a model. Per partition, delivered
offsets are consecutive from the position, never skipped or repeated except
where a seek or a reopen says so; after a reopen, delivery resumes at the
committed offset; a paused partition delivers nothing until resumed.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import anyio
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from streamhouse import (
    LocalObjectStore,
    SQLiteMetadataStore,
    TopicPartition,
    open_consumer,
    open_producer,
)

PARTITIONS = 2

operations = st.one_of(
    st.tuples(st.just("produce"), st.integers(0, PARTITIONS - 1), st.integers(1, 30)),
    st.tuples(st.just("poll"), st.integers(1, 40)),
    st.tuples(st.just("poll_batches"), st.integers(1, 40), st.sampled_from([None, 1, 2])),
    st.tuples(st.just("cancelled_poll_batches"), st.sampled_from([0, 1e-6, 1e-4])),
    st.tuples(st.just("cancelled_poll"), st.sampled_from([0, 0, 1e-6, 1e-4, 1e-3])),
    st.tuples(st.just("commit")),
    st.tuples(st.just("seek"), st.integers(0, PARTITIONS - 1), st.floats(0, 1)),
    st.tuples(st.just("reopen")),
    st.tuples(st.just("pause"), st.integers(0, PARTITIONS - 1)),
    st.tuples(st.just("resume"), st.integers(0, PARTITIONS - 1)),
)


@given(program=st.lists(operations, min_size=1, max_size=25))
@settings(max_examples=25, deadline=None)
def test_the_consumer_behaves_like_its_model(program: list[tuple[Any, ...]]) -> None:
    """Every delivery, commit, seek and reopen matches the model of the log."""

    async def main(root: Path) -> None:
        storage = LocalObjectStore(root / "objects", fsync=False)
        meta = SQLiteMetadataStore(root / "meta.db", synchronous="OFF")
        await meta.create_topic("t", PARTITIONS)
        high = [0] * PARTITIONS  # the model: high watermarks,
        position = [0] * PARTITIONS  # positions (next offset to deliver)
        committed: list[int | None] = [None] * PARTITIONS  # and committed offsets
        paused: set[int] = set()

        def drained() -> bool:
            return all(position[p] == high[p] or p in paused for p in range(PARTITIONS))

        def check_batches(batches: list[Any]) -> None:
            for batch in batches:
                assert len(batch) > 0
                assert list(batch.offsets) == [r.offset for r in batch]
                check(list(batch))

        def check(records: list[Any]) -> None:
            for r in records:
                assert r.partition not in paused, (r, paused)
                assert r.offset == position[r.partition], (r, position)
                assert r.value == b"%d-%d" % (r.partition, r.offset)
                position[r.partition] += 1

        async with contextlib.AsyncExitStack() as stack:

            async def open_one() -> Any:
                return await stack.enter_async_context(
                    open_consumer(
                        "t",
                        group_id="g",
                        storage=storage,
                        metadata=meta,
                        offset_reset="earliest",
                        auto_commit=False,
                        metadata_refresh_interval=0.005,
                    )
                )

            consumer = await open_one()
            for op in program:
                kind = op[0]
                if kind == "produce":
                    _, p, n = op
                    async with open_producer(storage=storage, metadata=meta, linger=0) as prod:
                        values = [b"%d-%d" % (p, high[p] + i) for i in range(n)]
                        await prod.send_batch("t", values, partition=p)
                    high[p] += n
                elif kind == "poll":
                    if drained():
                        assert await consumer.poll(timeout=0.01) == []
                    else:
                        records = await consumer.poll(timeout=10, max_records=op[1])
                        assert 0 < len(records) <= op[1]
                        check(records)
                elif kind == "poll_batches":
                    _, most, max_batches = op
                    if drained():
                        assert await consumer.poll_batches(timeout=0.01) == []
                    else:
                        batches = await consumer.poll_batches(
                            timeout=10, max_records=most, max_batches=max_batches
                        )
                        assert 0 < sum(map(len, batches)) <= most
                        assert max_batches is None or len(batches) <= max_batches
                        check_batches(batches)
                elif kind == "cancelled_poll_batches":
                    with anyio.move_on_after(op[1]):
                        check_batches(await consumer.poll_batches(timeout=0.05))
                elif kind == "cancelled_poll":
                    with anyio.move_on_after(op[1]):
                        check(await consumer.poll(timeout=0.05))
                elif kind == "commit":
                    await consumer.commit()
                    committed = list(position)
                elif kind == "seek":
                    _, p, where = op
                    offset = int(where * high[p])
                    await consumer.seek("t", p, offset)
                    position[p] = offset
                elif kind == "reopen":
                    await stack.aclose()
                    consumer = await open_one()
                    position = [c if c is not None else 0 for c in committed]
                    paused.clear()
                elif kind == "pause":
                    await consumer.pause(TopicPartition("t", op[1]))
                    paused.add(op[1])
                elif kind == "resume":
                    await consumer.resume(TopicPartition("t", op[1]))
                    paused.discard(op[1])
                for p in range(PARTITIONS):
                    assert await consumer.position("t", p) == position[p]
            # Finally everything still owed is delivered, in order.
            await consumer.resume(*(TopicPartition("t", p) for p in paused))
            paused.clear()
            with anyio.fail_after(30):
                while position != high:
                    check(await consumer.poll(timeout=5))
        await meta.aclose()

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp))
