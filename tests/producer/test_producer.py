"""open_producer: real offsets, batching, partitioning, failure, bad input."""

from __future__ import annotations

import functools
from pathlib import Path

import anyio
import pytest

import streamhouse
from streamhouse import (
    DeliveryError,
    InvalidArgumentError,
    MetadataStore,
    ObjectStore,
    PartitionNotFoundError,
    SQLiteMetadataStore,
    TopicNotFoundError,
    open_producer,
)
from streamhouse._producer.partitioner import murmur2

from ..helpers import FlakyStore, LostAnswerMetadata, make_s3_store, read_partition

pytestmark = pytest.mark.anyio

Stores = tuple[ObjectStore, MetadataStore]


@pytest.fixture
async def stores(store: ObjectStore, meta: SQLiteMetadataStore) -> Stores:
    """An object store (local and S3) with a metadata store holding topic 't' (3 partitions)."""
    await meta.create_topic("t", 3)
    return store, meta


async def test_send_returns_the_real_offset_and_the_record_reads_back(stores: Stores) -> None:
    """send() returns once durable, with the offset the record reads back at."""
    storage, meta = stores
    async with open_producer(storage=storage, metadata=meta, linger=0) as producer:
        first = await producer.send("t", b"v0", key=b"k", partition=1, timestamp=1000,
                                    headers=[("h", b"x")])  # fmt: skip
        second = await producer.send("t", None, partition=1, timestamp=2000)
    assert (first.topic, first.partition, first.offset, first.timestamp) == ("t", 1, 0, 1000)
    assert (second.partition, second.offset) == (1, 1)
    assert await read_partition(storage, meta, "t", 1) == [
        (0, 1000, b"k", b"v0", (("h", b"x"),)), (1, 2000, None, None, ()),
    ]  # fmt: skip


async def test_concurrent_sends_share_one_object_per_flush(
    store: ObjectStore, meta: SQLiteMetadataStore
) -> None:
    """Sends to several partitions during one linger make one PUT and one commit."""
    await meta.create_topic("t", 3)
    flaky = FlakyStore(store)
    results = []
    async with open_producer(storage=flaky, metadata=meta, linger=3600) as producer:
        assert await producer.partitions_for("t") == {0, 1, 2}
        async with anyio.create_task_group() as nursery:

            async def send(i: int) -> None:
                results.append(await producer.send("t", b"%d" % i, partition=i % 3))

            for i in range(30):
                nursery.start_soon(send, i)
            await anyio.wait_all_tasks_blocked()
            await producer.flush()
    assert len(flaky.puts) == 1
    segments = [s for p in range(3) for s in await meta.list_segments("t", p)]
    assert {s.object_key for s in segments} == {flaky.puts[0]}
    for p in range(3):
        offsets = sorted(r.offset for r in results if r.partition == p)
        assert offsets == list(range(10))


async def test_keyed_records_go_where_kafka_puts_them(stores: Stores) -> None:
    """A keyed record lands on (murmur2(key) & 0x7fffffff) % partitions."""
    kafka_vectors = {  # Kafka's own UtilsTest.testMurmur2
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {key: murmur2(key) for key in kafka_vectors} == kafka_vectors
    storage, meta = stores
    async with open_producer(storage=storage, metadata=meta, linger=0) as producer:
        for key in (b"21", b"abc", b"user-42", b""):
            md = await producer.send("t", b"v", key=key)
            assert md.partition == (murmur2(key) & 0x7FFFFFFF) % 3


async def test_keyless_records_of_one_batch_stick_to_one_partition(stores: Stores) -> None:
    """Keyless records sent during one linger all go to one partition."""
    storage, meta = stores
    async with open_producer(storage=storage, metadata=meta, linger=3600) as producer:
        await producer.partitions_for("t")
        async with anyio.create_task_group() as nursery:
            partitions: set[int] = set()

            async def send() -> None:
                partitions.add((await producer.send("t", b"x")).partition)

            for _ in range(20):
                nursery.start_soon(send)
            await anyio.wait_all_tasks_blocked()
            await producer.flush()
    assert len(partitions) == 1


async def test_send_batch_returns_every_offset(stores: Stores) -> None:
    """send_batch writes many records and returns their metadata in order."""
    storage, meta = stores
    async with open_producer(storage=storage, metadata=meta, linger=0) as producer:
        values = [b"v%d" % i for i in range(1000)]
        result = await producer.send_batch("t", values, partition=2, timestamps=5)
        keyed = await producer.send_batch("t", [b"a", b"b", b"c"], keys=[b"21", b"abc", None])
    assert result.offsets == list(range(1000))
    assert len(result) == 1000
    assert result[999] == streamhouse.RecordMetadata("t", 2, 999, 5)
    assert [m.offset for m in result[10:12]] == [10, 11]
    assert [m.partition for m in keyed][:2] == [
        (murmur2(k) & 0x7FFFFFFF) % 3 for k in (b"21", b"abc")
    ]
    rows = await read_partition(storage, meta, "t", 2)
    assert [r[3] for r in rows[:1000]] == values


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"topic": "nope", "value": b"v"}, TopicNotFoundError, "'nope' does not exist"),
        ({"topic": "bad/name", "value": b"v"}, InvalidArgumentError, "contains '/'"),
        ({"topic": "t", "value": b"v", "partition": 3}, PartitionNotFoundError, "no partition 3"),
        ({"topic": "t", "value": "text"}, InvalidArgumentError, "value must be bytes"),
        ({"topic": "t", "value": b"v", "key": 5}, InvalidArgumentError, "key must be bytes"),
        ({"topic": "t", "value": b"x" * 2000}, InvalidArgumentError, "larger than max_record"),
        ({"topic": "t", "value": b"v", "headers": [("k", "v")]}, InvalidArgumentError, "header"),
        ({"topic": "t", "value": b"v", "timestamp": 1.5}, InvalidArgumentError, "timestamp"),
    ],
)
async def test_bad_records_are_refused_at_send(
    stores: Stores, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    """A bad record raises at send() naming what was wrong, and nothing is written."""
    storage, meta = stores
    async with open_producer(storage=storage, metadata=meta, max_record_bytes=1000) as producer:
        with pytest.raises(error, match=message):
            await producer.send(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="values must be bytes"):
            await producer.send_batch("t", [b"ok", "bad"])  # type: ignore[list-item]
    assert all(s.high_watermark == 0 for s in await meta.partition_states(["t"]))


async def test_upload_failures_are_retried(store: ObjectStore, meta: SQLiteMetadataStore) -> None:
    """A PUT that fails twice, then succeeds, delivers the records once."""
    await meta.create_topic("t", 1)
    flaky = FlakyStore(store, put_failures=2)
    async with open_producer(storage=flaky, metadata=meta, linger=0, retry_backoff=0.001) as p:
        md = await p.send("t", b"v")
    assert md.offset == 0
    assert len(flaky.puts) == 1


async def test_a_lost_commit_answer_is_retried_without_duplicates(
    store: ObjectStore, meta: SQLiteMetadataStore
) -> None:
    """A commit that succeeded but reported failure is retried and returns the same offsets."""
    await meta.create_topic("t", 1)
    lossy = LostAnswerMetadata(meta, lost=1)
    async with open_producer(
        storage=store,
        metadata=lossy,
        linger=0,
        retry_backoff=0.001,  # type: ignore[arg-type]
    ) as producer:
        mds = await producer.send_batch("t", [b"a", b"b"])
    assert mds.offsets == [0, 1]
    assert lossy.commits == 2
    assert (await meta.partition_states(["t"]))[0].high_watermark == 2


async def test_a_failure_past_the_retries_fails_exactly_that_batch(
    store: ObjectStore, meta: SQLiteMetadataStore
) -> None:
    """When every retry fails, that batch's sends raise DeliveryError; later batches succeed."""
    await meta.create_topic("t", 1)
    flaky = FlakyStore(store, put_failures=3)
    async with open_producer(
        storage=flaky, metadata=meta, linger=3600, retries=3, retry_backoff=0.001
    ) as producer:
        await producer.partitions_for("t")
        failed: list[BaseException] = []

        async def send(v: bytes) -> None:
            try:
                await producer.send("t", v)
            except DeliveryError as exc:
                failed.append(exc)

        async with anyio.create_task_group() as nursery:
            for i in range(5):
                nursery.start_soon(send, b"%d" % i)
            await anyio.wait_all_tasks_blocked()
            await producer.flush()
        assert len(failed) == 5
        assert "scripted failure" in str(failed[0])
        assert (await meta.partition_states(["t"]))[0].high_watermark == 0
        after: list[streamhouse.RecordMetadata] = []
        async with anyio.create_task_group() as nursery:

            async def send_after() -> None:
                after.append(await producer.send("t", b"after"))

            nursery.start_soon(send_after)
            await anyio.wait_all_tasks_blocked()
            await producer.flush()
    assert after[0].offset == 0
    assert [r[3] for r in await read_partition(store, meta, "t", 0)] == [b"after"]


async def test_leaving_the_block_writes_what_was_accepted(stores: Stores) -> None:
    """Records accepted before the block ends are written when it ends."""
    storage, meta = stores
    results = []
    async with (
        anyio.create_task_group() as nursery,
        open_producer(storage=storage, metadata=meta, linger=3600) as producer,
    ):
        await producer.partitions_for("t")

        async def send(i: int) -> None:
            results.append(await producer.send("t", b"%d" % i, partition=0))

        for i in range(10):
            nursery.start_soon(send, i)
        await anyio.wait_all_tasks_blocked()
    assert sorted(r.offset for r in results) == list(range(10))
    assert len(await read_partition(storage, meta, "t", 0)) == 10


async def test_a_cancelled_send_does_not_disturb_the_others(stores: Stores) -> None:
    """Cancelling one send's wait leaves the batch intact; every record is written once."""
    storage, meta = stores
    results = []
    async with open_producer(storage=storage, metadata=meta, linger=3600) as producer:
        await producer.partitions_for("t")
        async with anyio.create_task_group() as nursery:

            async def send(i: int) -> None:
                results.append(await producer.send("t", b"%d" % i, partition=0))

            for i in range(5):
                nursery.start_soon(send, i)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await producer.send("t", b"cancelled", partition=0)
            await anyio.wait_all_tasks_blocked()
            await producer.flush()
    rows = await read_partition(storage, meta, "t", 0)
    assert [r[0] for r in rows] == list(range(len(rows)))
    assert sorted(r[3] for r in rows if r[3] != b"cancelled") == [b"%d" % i for i in range(5)]
    assert len(results) == 5


async def test_sends_keep_their_order_across_overlapping_batches(stores: Stores) -> None:
    """Records accepted one after another get increasing offsets while batches overlap."""
    storage, meta = stores
    async with open_producer(
        storage=storage, metadata=meta, linger=0.001, max_batch_bytes=8, max_in_flight=4
    ) as producer:
        await producer.partitions_for("t")
        async with anyio.create_task_group() as nursery:
            for i in range(40):
                nursery.start_soon(functools.partial(producer.send, "t", b"%04d" % i, partition=0))
                # the send has appended its record once every task is blocked
                await anyio.wait_all_tasks_blocked()
    rows = await read_partition(storage, meta, "t", 0)
    assert [r[3] for r in rows] == [b"%04d" % i for i in range(40)]
    assert len({s.object_key for s in await meta.list_segments("t", 0)}) >= 20


async def test_closed_producer_refuses_sends(stores: Stores) -> None:
    """A send after the block raises ClosedError."""
    storage, meta = stores
    async with open_producer(storage=storage, metadata=meta) as producer:
        pass
    with pytest.raises(streamhouse.ClosedError):
        await producer.send("t", b"late")


async def test_the_embedded_default_needs_no_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no stores given, producer and admin share $STREAMHOUSE_HOME."""
    monkeypatch.setenv("STREAMHOUSE_HOME", str(tmp_path / "home"))
    async with streamhouse.open_admin() as admin:
        await admin.create_topic("events", partitions=2)
    async with open_producer(linger=0) as producer:
        md = await producer.send("events", b"hello", partition=1)
    assert md.offset == 0
    assert (tmp_path / "home" / "metadata.db").exists()
    assert any((tmp_path / "home" / "objects" / "data").iterdir())


async def test_the_producer_works_on_the_s3_url(
    s3_server: object, s3_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """storage='s3://bucket/prefix' with AWS_* variables writes to the S3 server."""
    from tests.servers.seaweed import S3Server

    assert isinstance(s3_server, S3Server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    url = f"s3://streamhouse-test/{s3_prefix}"
    meta_url = f"sqlite:///{tmp_path}/m.db"
    async with streamhouse.open_admin(storage=url, metadata=meta_url) as admin:
        await admin.create_topic("t", 1)
    async with open_producer(storage=url, metadata=meta_url, linger=0) as producer:
        await producer.send("t", b"over s3")
    check = make_s3_store(s3_server, s3_prefix)
    keys = [info.key async for info in check.list("data/")]
    assert len(keys) == 1
    await check.aclose()
