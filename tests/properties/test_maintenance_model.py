"""A stateful property: maintenance against a model of the log.

Hypothesis draws a topic (delete or compact, with or without retention) and
a program of operations: produce (a flush of keyed records, tombstones
among them, old or new), maintain (grace 0, merging small or not: objects
are deleted at once, under the consumer's feet), changes of the settings,
and a consumer's polls and seeks. One trio run executes it on a local store
and SQLite. The consumer, open throughout, must only ever deliver records
of the model, at their offsets, in increasing order from where it was sent
(``offset_reset="earliest"`` when retention passes it), and in the end read
exactly what the catalogue holds. After every pass, the log must agree with
the model, the log as it was produced:

- no record changes: every record read is the model's record at its offset,
  in offset order;
- retention removes only a prefix: under the delete policy, the log is
  exactly the model's records from the log start on; time and size limits
  hold at the start of the log;
- compaction keeps what it must: the newest record of every key (a
  tombstone only while it is young), every record without a key; and it
  does its job: before the last segment, a key appears at most once, and no
  expired tombstone is left;
- merging changes nothing a reader sees; and the object store holds exactly
  the objects the catalogue points at (grace 0).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from streamhouse import (
    Admin,
    Consumer,
    LocalObjectStore,
    SQLiteMetadataStore,
    open_consumer,
    open_producer,
)

from ..helpers import read_partition

DAY_MS = 86_400_000
KEYS = [b"a", b"b", b"c", b"d", None]

records = st.lists(
    st.tuples(st.sampled_from(KEYS), st.sampled_from([b"v", b"w" * 300, None])),
    min_size=1,
    max_size=6,
)
operations = st.one_of(
    st.tuples(st.just("produce"), records, st.booleans()),
    st.tuples(st.just("maintain"), st.sampled_from([1, 2000, 1 << 20])),
    st.tuples(st.just("retention_bytes"), st.sampled_from([None, 0, 500, 3000])),
    st.tuples(st.just("retention_seconds"), st.sampled_from([None, 3600])),
    st.tuples(st.just("delete_retention"), st.sampled_from([0, 86400])),
    st.tuples(st.just("consume"), st.integers(1, 10)),
    st.tuples(st.just("seek"), st.floats(0, 1)),
)
topics = st.fixed_dictionaries(
    {
        "cleanup_policy": st.sampled_from(["delete", "compact"]),
        "retention_seconds": st.sampled_from([None, 3600]),
        "retention_bytes": st.sampled_from([None, 2000]),
        "delete_retention_seconds": st.sampled_from([0, 86400]),
    }
)


@given(topic=topics, program=st.lists(operations, min_size=1, max_size=14))
@settings(max_examples=80, deadline=None)
def test_maintenance_agrees_with_the_model(
    topic: dict[str, Any], program: list[tuple[Any, ...]]
) -> None:
    """After every pass, the log read back agrees with the model of what was produced."""

    async def main(root: Path) -> None:
        storage = LocalObjectStore(root / "objects", fsync=False)
        meta = SQLiteMetadataStore(root / "meta.db", synchronous="OFF")
        admin = Admin(storage, meta)
        compact = topic["cleanup_policy"] == "compact"
        await admin.create_topic("t", **topic)
        model: dict[int, tuple[bytes | None, bytes | None]] = {}  # offset -> (key, value)
        log_start = 0
        expiring = topic["delete_retention_seconds"] == 0  # tombstones may have gone
        async with open_consumer(
            "t", storage=storage, metadata=meta, offset_reset="earliest",
            cache_size_bytes=0, metadata_refresh_interval=0.005,
        ) as consumer:  # fmt: skip
            reading = Reading(consumer, model)
            for op in program:
                if op[0] == "produce":
                    await produce(storage, meta, model, op[1], op[2], compact)
                elif op[0] == "maintain":
                    await admin.maintain(grace=0, orphan_grace=0, target_bytes=op[1])
                    log_start = await check(storage, meta, model, log_start, compact, expiring)
                elif op[0] == "consume":
                    await reading.consume(op[1])
                elif op[0] == "seek":
                    await reading.seek(int(op[1] * len(model)))
                else:
                    setting = {"delete_retention": "delete_retention_seconds"}.get(op[0], op[0])
                    await admin.alter_topic("t", **{setting: op[1]})
                    expiring |= setting == "delete_retention_seconds" and op[1] == 0
            await admin.maintain(grace=0, orphan_grace=0)
            await check(storage, meta, model, log_start, compact, expiring)
            rows = await read_partition(storage, meta, "t", 0)
            assert await reading.everything(len(model)) == [row[0] for row in rows]
        await meta.aclose()

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp))


async def produce(
    storage: LocalObjectStore,
    meta: SQLiteMetadataStore,
    model: dict[int, tuple[bytes | None, bytes | None]],
    batch: list[tuple[bytes | None, bytes | None]],
    old: bool,
    compact: bool,
) -> None:
    """One flush of ``batch`` (timestamps two days old, or now); the model learns it."""
    if compact:  # compacted topics refuse records without a key
        batch = [(k or b"k", v) for k, v in batch]
    stamp = time.time_ns() // 1_000_000 - (2 * DAY_MS if old else 0)
    async with open_producer(storage=storage, metadata=meta, linger=0) as producer:
        sent = await producer.send_batch(
            "t", [v for _, v in batch], keys=[k for k, _ in batch], timestamps=stamp
        )
    model.update(zip(sent.offsets, batch, strict=True))


class Reading:
    """The consumer's side: every delivery checked against the model."""

    def __init__(
        self, consumer: Consumer, model: dict[int, tuple[bytes | None, bytes | None]]
    ) -> None:
        self.consumer = consumer
        self.model = model
        self.low = 0  # every delivery from now on is at this offset or later

    def check(self, records: list[Any]) -> None:
        for r in records:
            assert r.offset >= self.low, (r.offset, self.low)
            assert self.model[r.offset] == (r.key, r.value), r
            self.low = r.offset + 1

    async def consume(self, most: int) -> None:
        self.check(await self.consumer.poll(timeout=0.02, max_records=most))

    async def seek(self, offset: int) -> None:
        await self.consumer.seek("t", 0, offset)
        self.low = offset  # below the log start, it resets to the log start

    async def everything(self, high: int) -> list[int]:
        """Seek to the beginning and read to the end: the offsets delivered."""
        await self.consumer.seek_to_beginning()
        self.low = 0
        offsets: list[int] = []
        with anyio.fail_after(30):
            while await self.consumer.position("t", 0) < high:
                records = await self.consumer.poll(timeout=0.05)
                self.check(records)
                offsets += [r.offset for r in records]
        return offsets


async def check(
    storage: LocalObjectStore,
    meta: SQLiteMetadataStore,
    model: dict[int, tuple[bytes | None, bytes | None]],
    previous_start: int,
    compact: bool,
    expiring: bool,
) -> int:
    """Check the log against the model after a pass; return the log start."""
    info = await meta.get_topic("t")
    (state,) = await meta.partition_states(["t"])
    segments = await meta.list_segments("t", 0, 0, limit=100_000)
    rows = await read_partition(storage, meta, "t", 0)
    read = [(offset, key, value) for offset, _, key, value, _ in rows]
    offsets = [offset for offset, _, _ in read]
    # No record changes; offsets increase; the log start only moves up.
    assert offsets == sorted(set(offsets))
    assert all(model[o] == (k, v) for o, k, v in read)
    assert state.log_start_offset >= previous_start
    assert all(o >= state.log_start_offset for o in offsets)
    assert state.high_watermark == len(model)
    live = {o: kv for o, kv in model.items() if o >= state.log_start_offset}
    if not compact:
        assert offsets == sorted(live)  # only a prefix ever goes
    else:
        check_compaction(live, {o: (k, v) for o, k, v in read}, segments, info, expiring)
    # Retention holds at the start of the log.
    config = info.config
    if segments and config.retention_seconds is not None:
        cutoff = time.time_ns() // 1_000_000 - int(config.retention_seconds * 1000)
        assert segments[0].max_timestamp >= cutoff - 60_000  # a minute of slack for the run
    if config.retention_bytes is not None:
        assert sum(s.length for s in segments) <= config.retention_bytes
    # The object store holds what the catalogue points at, nothing else.
    stored = {o.key async for o in storage.list("data/")}
    assert stored == {s.object_key for s in segments}
    return state.log_start_offset


def check_compaction(
    live: dict[int, tuple[bytes | None, bytes | None]],
    read: dict[int, tuple[bytes | None, bytes | None]],
    segments: list[Any],
    info: Any,
    expiring: bool,
) -> None:
    tombstones_expire = info.config.delete_retention_seconds == 0
    newest: dict[bytes, int] = {}
    for offset, (key, _) in sorted(live.items()):
        if key is not None:
            newest[key] = offset
    # Kept: the newest record of each key (a tombstone unless some pass ran
    # with delete_retention_seconds=0), and every keyless record.
    for offset, (key, value) in live.items():
        if key is None or (newest[key] == offset and not (value is None and expiring)):
            assert offset in read, (offset, key, value)
    # Done: before the last segment (never cleaned, as Kafka's active
    # segment), a key at most once, and no expired tombstone.
    last_base = segments[-1].base_offset if segments else 0
    before = [(o, kv) for o, kv in sorted(read.items()) if o < last_base]
    keys = [k for _, (k, _) in before if k is not None]
    assert len(keys) == len(set(keys))
    if tombstones_expire:
        assert all(v is not None for _, (k, v) in before if k is not None)
