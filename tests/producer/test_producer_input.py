"""Hostile input hurts only its caller: every bad argument is refused at the call,
naming it, while good sends sharing the same batch are written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from streamhouse import (
    InvalidArgumentError,
    LocalObjectStore,
    ObjectStore,
    PartitionNotFoundError,
    RecordMetadata,
    SQLiteMetadataStore,
    open_producer,
)

from ..helpers import read_partition

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    """A local store: the checks run before any store is touched, so one kind is enough."""
    return LocalObjectStore(tmp_path / "objects", fsync=False)


BAD_SENDS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"timestamp": 2**63}, InvalidArgumentError, "timestamp 9223372036854775808 is out of range"),
    ({"timestamp": -1}, InvalidArgumentError, "timestamp -1 is out of range"),
    ({"timestamp": True}, InvalidArgumentError, "timestamp must be an int"),
    ({"timestamp": 1.5}, InvalidArgumentError, "timestamp must be an int"),
    ({"timestamp": "1"}, InvalidArgumentError, "timestamp must be an int"),
    ({"value": "text"}, InvalidArgumentError, "value must be bytes or None, not str"),
    ({"value": bytearray(b"x")}, InvalidArgumentError, "value must be bytes or None"),
    ({"value": memoryview(b"x")}, InvalidArgumentError, "value must be bytes or None"),
    ({"value": 1}, InvalidArgumentError, "value must be bytes or None, not int"),
    ({"key": "k"}, InvalidArgumentError, "key must be bytes or None, not str"),
    ({"value": b"x" * 1001}, InvalidArgumentError, "larger than max_record_bytes=1000"),
    ({"headers": "ab"}, InvalidArgumentError, "headers must be a sequence"),
    ({"headers": {"a": b"b"}}, InvalidArgumentError, "headers must be a sequence"),
    ({"headers": [("a",)]}, InvalidArgumentError, "headers must be a sequence"),
    ({"headers": [("a", "text")]}, InvalidArgumentError, r"must be a \(str, bytes\) pair"),
    ({"headers": [(b"a", b"b")]}, InvalidArgumentError, r"must be a \(str, bytes\) pair"),
    ({"headers": [("\ud800", b"x")]}, InvalidArgumentError, "is not valid Unicode"),
    ({"headers": [("k" * 70_000, b"")]}, InvalidArgumentError, "longer than 65535 bytes"),
    ({"headers": [("k", b"")] * 70_000}, InvalidArgumentError, "at most 65535"),
    ({"headers": [("k", b"x" * 1000)]}, InvalidArgumentError, "larger than max_record_bytes"),
    ({"partition": 3}, PartitionNotFoundError, "no partition 3"),
    ({"partition": -1}, PartitionNotFoundError, "no partition -1"),
    ({"partition": "0"}, InvalidArgumentError, "partition must be an int or None, not str"),
    ({"partition": 1.0}, InvalidArgumentError, "partition must be an int or None, not float"),
    ({"partition": True}, InvalidArgumentError, "partition must be an int or None, not bool"),
    ({"topic": 5}, InvalidArgumentError, "topic name must be a str"),
    ({"topic": "bad/name"}, InvalidArgumentError, "contains '/'"),
]


@pytest.mark.parametrize(("bad", "error", "message"), BAD_SENDS)
async def test_a_bad_send_fails_alone(
    store: ObjectStore,
    meta: SQLiteMetadataStore,
    bad: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    """A bad argument raises at send() naming it; concurrent good sends in the same batch
    are written and read back."""
    await meta.create_topic("t", 3)
    good: list[RecordMetadata] = []
    async with open_producer(
        storage=store, metadata=meta, linger=3600, max_record_bytes=1000
    ) as producer:
        await producer.partitions_for("t")
        async with anyio.create_task_group() as tg:

            async def send_good(i: int) -> None:
                good.append(await producer.send("t", b"good-%d" % i, partition=0, timestamp=i))

            for i in range(3):
                tg.start_soon(send_good, i)
            await anyio.wait_all_tasks_blocked()
            arguments: dict[str, Any] = {"topic": "t", "value": b"bad", **bad}
            with pytest.raises(error, match=message):
                await producer.send(**arguments)
            await producer.flush()
    assert sorted(md.offset for md in good) == [0, 1, 2]
    rows = await read_partition(store, meta, "t", 0)
    assert sorted(r[3] for r in rows) == [b"good-0", b"good-1", b"good-2"]
    assert sum(s.high_watermark for s in await meta.partition_states(["t"])) == 3


BAD_BATCHES: list[tuple[dict[str, Any], str]] = [
    ({"values": None}, "values must be a sequence"),
    ({"values": b"abc"}, "values must be a sequence"),
    ({"values": (v for v in [b"x"])}, "values must be a sequence"),
    ({"values": [b"ok", "bad"]}, "values must be bytes or None, not str"),
    ({"values": [b"x"] * 3, "keys": [b"k"]}, "1 keys for 3 values"),
    ({"values": [b"x"], "keys": [1]}, "keys must be bytes or None, not int"),
    ({"values": [b"x"], "keys": b"k"}, "keys must be a sequence"),
    ({"values": [b"x"], "timestamps": [2**63]}, "out of range"),
    ({"values": [b"x"], "timestamps": -5}, "out of range"),
    ({"values": [b"x"], "timestamps": [True]}, "timestamps must be ints"),
    ({"values": [b"x"], "timestamps": [1, 2]}, "2 timestamps for 1 values"),
    ({"values": [b"x"], "timestamps": "1"}, "timestamps must be an int or a sequence"),
    ({"values": [b"x"], "headers": [[("a", 1)]]}, r"\(str, bytes\) pair"),
    ({"values": [b"x"], "headers": [None, None]}, "2 headers for 1 values"),
    ({"values": [b"x"], "partition": "0"}, "partition must be an int"),
    ({"values": [b"x" * 1001]}, "larger than max_record_bytes"),
    ({"values": [None] * (2**22 + 1)}, "at most 4194304"),
    ({"values": [b"x" * 1000] * 134_218}, "at most 134217728"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_BATCHES)
async def test_a_bad_send_batch_fails_alone(
    store: ObjectStore, meta: SQLiteMetadataStore, bad: dict[str, Any], message: str
) -> None:
    """A bad send_batch raises InvalidArgumentError naming what is wrong, accepts none of
    its records, and a concurrent good send in the same batch is written."""
    await meta.create_topic("t", 1)
    async with open_producer(
        storage=store, metadata=meta, linger=3600, max_record_bytes=1000
    ) as producer:
        await producer.partitions_for("t")
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer.send, "t", b"good")
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(InvalidArgumentError, match=message):
                await producer.send_batch("t", **bad)
            await producer.flush()
    assert [r[3] for r in await read_partition(store, meta, "t", 0)] == [b"good"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("linger", float("nan"), "linger must be a finite number of seconds >= 0"),
        ("linger", float("inf"), "linger must be a finite"),
        ("linger", -1, "linger must be a finite"),
        ("retry_backoff", float("nan"), "retry_backoff must be a finite"),
        ("retry_backoff_max", float("inf"), "retry_backoff_max must be a finite"),
        ("delivery_timeout", float("nan"), "delivery_timeout must be a finite number of sec"),
        ("delivery_timeout", float("inf"), "delivery_timeout must be a finite"),
        ("delivery_timeout", 0, r"delivery_timeout must be a finite number of seconds > 0"),
        ("close_timeout", float("nan"), "close_timeout must be a finite"),
        ("close_timeout", float("inf"), "close_timeout must be a finite"),
        ("buffer_bytes", 0, "buffer_bytes must be >= 1, not 0"),
        ("buffer_bytes", 1.5, "buffer_bytes must be an int"),
        ("max_batch_bytes", 0, "max_batch_bytes must be between 1 and 134217728"),
        ("max_batch_bytes", 2**40, "max_batch_bytes must be between"),
        ("max_record_bytes", True, "max_record_bytes must be an int, not bool"),
        ("max_in_flight", 0, "max_in_flight must be >= 1"),
        ("retries", 0, "retries must be >= 1"),
        ("retries", "3", "retries must be an int"),
        ("compression", "gzip", "compression must be 'lz4', 'zstd' or 'none'"),
        ("compression", None, "compression must be"),
    ],
)
async def test_bad_options_are_refused_by_name(
    store: ObjectStore, meta: SQLiteMetadataStore, option: str, value: object, message: str
) -> None:
    """An option that is NaN, infinite, out of range or of the wrong type is refused naming it."""
    with pytest.raises(InvalidArgumentError, match=message):
        async with open_producer(storage=store, metadata=meta, **{option: value}):
            pass  # pragma: no cover


async def test_zero_means_what_users_rely_on(store: ObjectStore, meta: SQLiteMetadataStore) -> None:
    """linger=0, retry_backoff=0 and close_timeout=0 are accepted and work."""
    await meta.create_topic("t", 1)
    async with open_producer(
        storage=store, metadata=meta, linger=0, retry_backoff=0, close_timeout=0
    ) as producer:
        assert (await producer.send("t", b"v")).offset == 0
