"""open_producer(): accumulate records, encode segments, upload, commit.

How a record travels
--------------------
``send()`` validates the record, picks its partition and appends it to the
*open batch*: per-partition columns of timestamps, keys, values and headers.
The open batch is sealed when ``linger`` seconds have passed since its first
record, or when it holds ``max_batch_bytes``. A sealed batch is flushed by
its own task: every partition's records are encoded into a segment, all the
segments go into one object (one PUT), and one metadata transaction commits
them, which assigns their base offsets. Only then do the ``send()`` calls of
that batch return, each with its record's real offset.

Uploads of several batches overlap (``max_in_flight``), but commits happen
in the order the batches were sealed, so records sent later never get lower
offsets in a partition than records sent earlier by the same producer.

Failure: upload and commit are retried with backoff; both are idempotent
(the object key is unique to the batch, and committing an object key again
returns the offsets assigned the first time). A failure that outlasts the
retries fails exactly the sends of that batch, with DeliveryError; since the
commit is one transaction, nothing of the batch becomes visible. Its object,
if uploaded, is an orphan that ``admin.delete_orphans()`` removes later.

Cancelling ``send()`` abandons the wait, not the record: a record appended to
a batch is written with it, and the other records of that batch are not
affected either way.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from .._codec import Codec, Headers, encode_segment
from .._config import open_stores
from .._errors import (
    ClosedError,
    InvalidArgumentError,
    PartitionNotFoundError,
    RetriableError,
)
from .._lifecycle import Runtime, run_client
from .._metadata.protocol import MetadataStore, SegmentInfo, SegmentSpec
from .._names import check_topic_name
from .._storage.keys import new_object_key
from .._storage.protocol import ObjectStore
from .._types import RecordMetadata, SendBatchResult
from .batch import Batch, Columns, check_bytes, check_headers, headers_size
from .partitioner import StickyPartitioner, keyed_partition

__all__ = ["Producer", "open_producer"]

T = TypeVar("T")

_TOPIC_CACHE_SECONDS = 30.0


class Producer:
    """Writes records to topics; made by :func:`open_producer`, not directly."""

    def __init__(
        self,
        storage: ObjectStore,
        metadata: MetadataStore,
        task_group: anyio.abc.TaskGroup,
        *,
        linger: float,
        compression: Codec,
        max_batch_bytes: int,
        max_record_bytes: int,
        max_in_flight: int,
        buffer_bytes: int,
        retries: int,
        retry_backoff: float,
    ) -> None:
        self._storage = storage
        self._metadata = metadata
        self._tg = task_group
        self._linger = linger
        self._codec = compression
        self._max_batch_bytes = max_batch_bytes
        self._max_record_bytes = max_record_bytes
        self._in_flight = anyio.Semaphore(max_in_flight)
        # Encoding is CPU work under the GIL: one thread at a time does it
        # fastest; more threads only fight over the lock (measured: a 4 MiB
        # batch took 175 ms with 8 encoding at once, against 20 ms alone),
        # while the uploads, which wait on the network, overlap freely.
        self._encoders = anyio.CapacityLimiter(1)
        self._buffer_bytes = buffer_bytes
        self._retries = retries
        self._retry_backoff = retry_backoff
        self._sticky = StickyPartitioner()
        self._topics: dict[str, tuple[int, float]] = {}
        self._open: Batch | None = None
        self._last_sealed: Batch | None = None
        self._seq = itertools.count()
        self._buffered = 0
        self._space = anyio.Event()
        self._closed = False

    # -- public API ----------------------------------------------------------

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp: int | None = None,
    ) -> RecordMetadata:
        """Write one record and return where it went, once it is durable.

        Args:
            topic: an existing topic.
            value: the record's value (bytes, or None for a tombstone).
            key: bytes or None; a keyed record goes to Kafka's murmur2
                partition for the key.
            partition: the partition, overriding the key.
            headers: ``(str, bytes)`` pairs.
            timestamp: milliseconds since the epoch; now when omitted.

        Raises:
            TopicNotFoundError, PartitionNotFoundError, InvalidArgumentError:
                the record was refused; nothing was written.
            DeliveryError: the batch holding the record could not be written.
        """
        self._check_open()
        check_bytes("value", value)
        check_bytes("key", key)
        hdrs = check_headers(headers)
        size = len(value or b"") + len(key or b"") + headers_size(hdrs)
        if size > self._max_record_bytes:
            raise InvalidArgumentError(
                f"record of {size} bytes is larger than max_record_bytes={self._max_record_bytes}"
            )
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        elif isinstance(timestamp, bool) or not isinstance(timestamp, int):
            raise InvalidArgumentError(f"timestamp must be an int of ms, not {timestamp!r}")
        count = await self._partition_count(topic)
        if partition is None:
            partition = (
                keyed_partition(key, count)
                if key is not None
                else self._sticky.partition(topic, count)
            )
        else:
            self._check_partition(topic, partition, count)
        await self._wait_for_space()
        batch = self._batch_for(size)
        cols = batch.columns(topic, partition)
        position = len(cols.values)
        cols.timestamps.append(timestamp)
        cols.keys.append(key)
        cols.values.append(value)
        if hdrs:
            cols.add_headers(position, [hdrs])
        elif cols.headers is not None:
            cols.headers.append(None)
        self._added(batch, size)
        await batch.done.wait()
        return RecordMetadata(
            topic, partition, batch.outcome()[(topic, partition)] + position, timestamp
        )

    async def send_batch(
        self,
        topic: str,
        values: Sequence[bytes | None],
        *,
        keys: Sequence[bytes | None] | None = None,
        partition: int | None = None,
        headers: Sequence[Sequence[tuple[str, bytes]] | None] | None = None,
        timestamps: Sequence[int] | int | None = None,
    ) -> SendBatchResult:
        """Write many records to one topic; return their metadata in order.

        The fast path for throughput: records are appended column-wise, and
        the returned sequence makes RecordMetadata objects only on demand
        (``result.offsets`` gives every offset at once). All records of one
        call go into the same flush. Keyless records of one call all go to
        one partition (sticky), keyed ones to their murmur2 partitions.

        Raises:
            The same errors as :meth:`send`, for the whole call: either every
            record is accepted, or none is.
        """
        self._check_open()
        n = len(values)
        if n == 0:
            return SendBatchResult(topic, [], [], {}, [])
        if not set(map(type, values)) <= {bytes, type(None)}:
            bad = next(v for v in values if v is not None and type(v) is not bytes)
            raise InvalidArgumentError(f"values must be bytes or None, not {type(bad).__name__}")
        key_list: list[bytes | None] = [None] * n if keys is None else list(keys)
        if len(key_list) != n:
            raise InvalidArgumentError(f"{len(key_list)} keys for {n} values")
        if keys is not None and not set(map(type, key_list)) <= {bytes, type(None)}:
            bad = next(k for k in key_list if k is not None and type(k) is not bytes)
            raise InvalidArgumentError(f"keys must be bytes or None, not {type(bad).__name__}")
        header_list: list[Headers | None] | None = None
        if headers is not None:
            if len(headers) != n:
                raise InvalidArgumentError(f"{len(headers)} headers for {n} values")
            header_list = [check_headers(h) or None for h in headers]
        ts_list = self._timestamps(timestamps, n)
        sizes: list[int]
        if None in values or keys is not None:
            sizes = [len(v or b"") + len(k or b"") for v, k in zip(values, key_list, strict=True)]
        else:
            sizes = list(map(len, values))  # type: ignore[arg-type]
        if header_list is not None:
            sizes = [s + headers_size(h or ()) for s, h in zip(sizes, header_list, strict=True)]
        biggest = max(sizes)
        if biggest > self._max_record_bytes:
            raise InvalidArgumentError(
                f"record {sizes.index(biggest)} of {biggest} bytes is larger than "
                f"max_record_bytes={self._max_record_bytes}"
            )
        count = await self._partition_count(topic)
        if partition is not None:
            self._check_partition(topic, partition, count)
            targets: list[int] = [partition] * n
        elif count == 1 or keys is None or key_list.count(None) == n:
            # One partition needs no hashing (murmur2 is ~1 us a key).
            targets = [self._sticky.partition(topic, count)] * n
        else:
            sticky = self._sticky.partition(topic, count)
            targets = [sticky if k is None else keyed_partition(k, count) for k in key_list]
        await self._wait_for_space()
        batch = self._batch_for(sum(sizes))
        positions: list[int]
        if len(set(targets)) == 1:
            cols = batch.columns(topic, targets[0])
            start = len(cols.values)
            positions = range(start, start + n)  # type: ignore[assignment]
            self._extend(cols, ts_list, key_list, list(values), header_list)
        else:
            positions = [0] * n
            groups: dict[int, list[int]] = {}
            for i, p in enumerate(targets):
                groups.setdefault(p, []).append(i)
            for p, idx in groups.items():
                cols = batch.columns(topic, p)
                start = len(cols.values)
                for j, i in enumerate(idx):
                    positions[i] = start + j
                self._extend(
                    cols, [ts_list[i] for i in idx], [key_list[i] for i in idx],
                    [values[i] for i in idx],
                    None if header_list is None else [header_list[i] for i in idx],
                )  # fmt: skip
        self._added(batch, sum(sizes))
        await batch.done.wait()
        return SendBatchResult(topic, targets, positions, batch.outcome(), ts_list)

    async def partitions_for(self, topic: str) -> set[int]:
        """The partitions of ``topic`` (as aiokafka's producer answers it).

        Raises:
            TopicNotFoundError: there is no such topic.
        """
        self._check_open()
        return set(range(await self._partition_count(topic)))

    async def flush(self) -> None:
        """Seal the open batch and wait until every accepted record is written.

        Raises nothing for failed batches: their sends raise DeliveryError.
        """
        self._seal()
        last = self._last_sealed
        if last is not None:
            await last.done.wait()

    # -- internals -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the producer is closed")

    @staticmethod
    def _check_partition(topic: str, partition: object, count: int) -> None:
        if (
            isinstance(partition, bool)
            or not isinstance(partition, int)
            or not 0 <= partition < count
        ):
            raise PartitionNotFoundError(
                f"topic {topic!r} has partitions 0..{count - 1}; "
                f"there is no partition {partition!r}"
            )

    @staticmethod
    def _timestamps(timestamps: Sequence[int] | int | None, n: int) -> list[int]:
        if timestamps is None:
            return [time.time_ns() // 1_000_000] * n
        if isinstance(timestamps, int) and not isinstance(timestamps, bool):
            return [timestamps] * n
        ts = list(timestamps)  # type: ignore[arg-type]
        if len(ts) != n or not set(map(type, ts)) <= {int}:
            raise InvalidArgumentError(f"timestamps must be {n} ints of ms since the epoch")
        return ts

    async def _partition_count(self, topic: str) -> int:
        cached = self._topics.get(topic)
        now = time.monotonic()
        if cached is not None and now - cached[1] < _TOPIC_CACHE_SECONDS:
            return cached[0]
        check_topic_name(topic)
        info = await self._metadata.get_topic(topic)
        self._topics[topic] = (info.partitions, now)
        return info.partitions

    async def _wait_for_space(self) -> None:
        while self._buffered >= self._buffer_bytes:
            await self._space.wait()
        self._check_open()

    def _batch_for(self, size: int) -> Batch:
        batch = self._open
        if batch is not None and batch.size + size > self._max_batch_bytes and batch.size:
            self._seal()
            batch = None
        if batch is None:
            batch = self._open = Batch(next(self._seq))
            self._tg.start_soon(self._linger_then_seal, batch)
        return batch

    def _added(self, batch: Batch, size: int) -> None:
        batch.size += size
        self._buffered += size
        if batch.size >= self._max_batch_bytes:
            self._seal()

    @staticmethod
    def _extend(
        cols: Columns,
        timestamps: list[int],
        keys: list[bytes | None],
        values: list[bytes | None],
        headers: list[Headers | None] | None,
    ) -> None:
        start = len(cols.values)
        cols.timestamps += timestamps
        cols.keys += keys
        cols.values += values
        if headers is not None:
            cols.add_headers(start, headers)
        elif cols.headers is not None:
            cols.headers += [None] * len(values)

    async def _linger_then_seal(self, batch: Batch) -> None:
        await anyio.sleep(self._linger)
        if self._open is batch:
            self._seal()

    def _seal(self) -> None:
        batch = self._open
        if batch is None:
            return
        self._open = None
        self._sticky.next_batch()
        batch.previous = self._last_sealed
        self._last_sealed = batch
        self._tg.start_soon(self._flush, batch)

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in itertools.count():
            try:
                return await call()
            except RetriableError:
                if attempt + 1 >= self._retries:
                    raise
            await anyio.sleep(self._retry_backoff * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _flush(self, batch: Batch) -> None:
        key = new_object_key()
        try:
            async with self._in_flight:
                data, specs = await anyio.to_thread.run_sync(
                    self._encode, batch, limiter=self._encoders
                )
                await self._retrying(lambda: self._storage.put(key, data))
            # Commit in seal order, so a partition's offsets follow send order.
            if batch.previous is not None:
                await batch.previous.done.wait()
            infos: list[SegmentInfo] = await self._retrying(
                lambda: self._metadata.commit_segments(key, specs)
            )
            batch.bases = {(s.topic, s.partition): s.base_offset for s in infos}
        except Exception as exc:
            batch.error = exc
        except BaseException:
            batch.error = ClosedError("the producer closed before this batch was written")
            raise
        finally:
            batch.previous = None
            self._buffered -= batch.size
            self._space.set()
            self._space = anyio.Event()
            batch.parts.clear()
            batch.done.set()

    def _encode(self, batch: Batch) -> tuple[bytes, list[SegmentSpec]]:
        chunks: list[bytes] = []
        specs: list[SegmentSpec] = []
        position = 0
        for (topic, partition), cols in sorted(batch.parts.items()):
            segment = encode_segment(
                cols.timestamps, cols.keys, cols.values, cols.headers, codec=self._codec
            )
            chunks.append(segment.data)
            specs.append(
                SegmentSpec(
                    topic, partition, segment.record_count, position, len(segment.data),
                    segment.index_length, segment.min_timestamp, segment.max_timestamp,
                )
            )  # fmt: skip
            position += len(segment.data)
        return b"".join(chunks), specs

    async def _close(self) -> None:
        self._closed = True
        self._seal()
        last = self._last_sealed
        if last is not None:
            await last.done.wait()
        self._space.set()


@contextlib.asynccontextmanager
async def open_producer(
    *,
    storage: ObjectStore | str | None = None,
    metadata: MetadataStore | str | None = None,
    linger: float = 0.05,
    compression: Codec | str = "lz4",
    max_batch_bytes: int = 4 * 2**20,
    max_record_bytes: int = 8 * 2**20,
    max_in_flight: int = 8,
    buffer_bytes: int = 128 * 2**20,
    retries: int = 5,
    retry_backoff: float = 0.1,
    close_timeout: float = 60.0,
) -> AsyncIterator[Producer]:
    """Open a producer; leaving the block writes every accepted record.

    Args:
        storage: an ObjectStore or a URL (``s3://bucket/prefix``,
            ``file:///path``); the embedded default when omitted.
        metadata: a MetadataStore or a URL (``sqlite:///path``); the embedded
            default when omitted.
        linger: seconds a batch waits for more records before it is flushed.
        compression: "lz4", "zstd" or "none".
        max_batch_bytes: a batch holding this much is flushed at once. 4 MiB
            keeps encoding and uploading overlapped (measured against 2, 8
            and 16 MiB into SeaweedFS; scripts/bench.py measures it).
        max_record_bytes: larger records are refused at send.
        max_in_flight: batches uploading at once.
        buffer_bytes: sends wait while this much is accepted but unwritten.
        retries: attempts for a retriable upload or commit failure.
        retry_backoff: seconds before the first retry, doubling after.
        close_timeout: seconds leaving the block may spend writing.

    Raises:
        InvalidArgumentError: an option is out of range.
    """
    codec = Codec.parse(compression)
    if linger < 0 or max_batch_bytes <= 0 or max_record_bytes <= 0 or max_in_flight < 1:
        raise InvalidArgumentError("linger must be >= 0; sizes and max_in_flight must be positive")
    if retries < 1:
        raise InvalidArgumentError(f"retries must be >= 1, not {retries}")

    async def start(runtime: Runtime) -> Producer:
        return Producer(
            store, meta, runtime.task_group, linger=linger, compression=codec,
            max_batch_bytes=max_batch_bytes, max_record_bytes=max_record_bytes,
            max_in_flight=max_in_flight, buffer_bytes=buffer_bytes, retries=retries,
            retry_backoff=retry_backoff,
        )  # fmt: skip

    async def close(producer: Producer, body_error: BaseException | None) -> None:
        await producer._close()  # every accepted record is written, whatever the body did

    async with (
        open_stores(storage, metadata) as (store, meta),
        run_client("producer", start, close, close_timeout) as producer,
    ):
        yield producer
