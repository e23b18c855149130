"""A stateful property: the consumer against a model of positions and commits.

Hypothesis draws a program of operations (produce to one partition or to
all in one packed object, poll, poll of batches,
commit, seek, pause, resume, cancelled polls of both kinds, close and
reopen); one trio run executes it against a real consumer on a local store
and SQLite, checking every answer against a model. Per partition, delivered
offsets are consecutive from the position, never skipped or repeated except
where a seek or a reopen says so; after a reopen, delivery resumes at the
committed offset; a paused partition delivers nothing until resumed.

The second property runs the same programs through seeded faults at every
I/O seam the consumer uses (tests/faults.py: every object store and metadata
call may fail before it runs, fail after it ran, or be delayed), and with a
cached copy corrupted on disk now and then: the delivered sequence must be
exactly the model's all the same. Only commit() may fail, with a transient
error the program retries, as an application would.

The third runs both kinds of program (with faults or not) on PostgreSQL,
fewer of them (each example makes a schema of its own).
"""

from __future__ import annotations

import contextlib
import functools
import random
import tempfile
import uuid
from pathlib import Path
from typing import Any

import anyio
import trio
from hypothesis import event, given, settings
from hypothesis import strategies as st

from streamhouse import (
    LocalObjectStore,
    MetadataStore,
    MetadataUnavailableError,
    ObjectStore,
    PostgresMetadataStore,
    RetryPolicy,
    SQLiteMetadataStore,
    TopicPartition,
    open_consumer,
    open_producer,
)

from ..faults import FaultPlan, FaultyMetadata, FaultyStore
from ..helpers import drop_schema

PARTITIONS = 2

operations = st.one_of(
    st.tuples(st.just("produce"), st.integers(0, PARTITIONS - 1), st.integers(1, 30)),
    # One flush, one object packing a segment of each partition.
    st.tuples(st.just("produce_packed"), st.integers(1, 30)),
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
with_corruption = st.one_of(
    operations, st.tuples(st.just("corrupt_cache"), st.integers(0, 99), st.floats(0, 1))
)


@given(program=st.lists(operations, min_size=1, max_size=25))
@settings(max_examples=25, deadline=None)
def test_the_consumer_behaves_like_its_model(program: list[tuple[Any, ...]]) -> None:
    """Every delivery, commit, seek and reopen matches the model of the log."""
    run(program, seed=None)


@given(
    program=st.lists(with_corruption, min_size=1, max_size=25),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=20, deadline=None)
def test_the_consumer_behaves_like_its_model_through_faults(
    program: list[tuple[Any, ...]], seed: int
) -> None:
    """Through faults at every I/O seam and corrupt cached copies, deliveries match the model."""
    run(program, seed=seed)


@given(
    program=st.lists(with_corruption, min_size=1, max_size=25),
    seed=st.none() | st.integers(0, 2**32 - 1),
)
@settings(max_examples=15, deadline=None)
def test_the_consumer_behaves_like_its_model_on_postgresql(
    postgres_url: str, program: list[tuple[Any, ...]], seed: int | None
) -> None:
    """The same programs, with faults or without, on PostgreSQL."""
    schema = f"cm_{uuid.uuid4().hex[:12]}"
    try:
        run(program, seed=seed, postgres=(postgres_url, schema))
    finally:
        drop_schema(postgres_url, schema)


def corrupt_a_cached_copy(cache: Path, which: int, where: float) -> None:
    """Flip a byte of one of the cache's files, as a failing disk would."""
    files = sorted(cache.glob("*/*.bin"))
    if files:
        path = files[which % len(files)]
        data = bytearray(path.read_bytes())
        if data:
            data[int(where * (len(data) - 1))] ^= 0xFF
            path.write_bytes(bytes(data))


def run(
    program: list[tuple[Any, ...]], seed: int | None, postgres: tuple[str, str] | None = None
) -> None:
    """Run ``program`` against a real consumer and the model; with faults when
    seeded; on SQLite, or on PostgreSQL (its URL and a schema) if given."""

    async def main(root: Path) -> None:
        storage = LocalObjectStore(root / "objects", fsync=False)
        meta: MetadataStore
        if postgres is None:
            meta = SQLiteMetadataStore(root / "meta.db", synchronous="OFF")
        else:
            meta = PostgresMetadataStore(postgres[0], schema=postgres[1])
        await meta.create_topic("t", PARTITIONS)
        # What the consumer sees: the stores themselves, or through faults.
        their_storage: ObjectStore = storage
        their_meta: MetadataStore = meta
        retry = RetryPolicy()
        plan = None
        if seed is not None:
            plan = FaultPlan(seed)
            their_storage = FaultyStore(storage, plan)
            their_meta = FaultyMetadata(meta, plan)
            retry = RetryPolicy(base_delay=0.001, max_delay=0.01, rng=random.Random(seed))
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
                        storage=their_storage,
                        metadata=their_meta,
                        offset_reset="earliest",
                        auto_commit=False,
                        metadata_refresh_interval=0.005,
                        cache_dir=root / "cache",
                        # With faults, every read is cached: corrupt_cache
                        # then has files to corrupt (by default only what
                        # is read twice is written).
                        cache_first_reads=seed is not None,
                        retry=retry,
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
                elif kind == "produce_packed":
                    async with (
                        open_producer(storage=storage, metadata=meta, linger=0.05) as prod,
                        anyio.create_task_group() as tg,
                    ):
                        for p in range(PARTITIONS):
                            values = [b"%d-%d" % (p, high[p] + i) for i in range(op[1])]
                            tg.start_soon(functools.partial(prod.send_batch, "t", values,
                                                            partition=p))  # fmt: skip
                    for p in range(PARTITIONS):
                        high[p] += op[1]
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
                    for _ in range(10):  # an application retries a commit that failed
                        try:
                            await consumer.commit()
                            break
                        except MetadataUnavailableError:
                            assert seed is not None
                    else:
                        raise AssertionError("commit kept failing")
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
                elif kind == "corrupt_cache":
                    corrupt_a_cached_copy(root / "cache", op[1], op[2])
                for p in range(PARTITIONS):
                    assert await consumer.position("t", p) == position[p]
            # Finally everything still owed is delivered, in order.
            await consumer.resume(*(TopicPartition("t", p) for p in paused))
            paused.clear()
            with anyio.fail_after(30):
                while position != high:
                    check(await consumer.poll(timeout=5))
        await meta.aclose()
        if plan is not None:
            event(f"faults injected: {min(sum(plan.faults.values()), 10)}+")

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp))
