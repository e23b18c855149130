"""open_producer(): accumulate records, encode segments, upload, commit.

How a record travels
--------------------
``send()`` validates the record (``checks``: everything the encoder or the
commit could refuse is refused here, to its caller alone), picks its
partition and appends it to the *open batch*: per-partition columns of
timestamps, keys, values and headers. The open batch is sealed when
``linger`` seconds have passed since its first record, or when it holds
``max_batch_bytes``. A sealed batch is written by its own task (``writer``):
every partition's records are encoded into a segment, all the segments go
into one object (one PUT), and one metadata transaction commits them, which
assigns their base offsets. Only then do the ``send()`` calls of that batch
return, each with its record's real offset.

Uploads of several batches overlap (``max_in_flight``), but commits happen
in the order the batches were sealed, so records sent later never get lower
offsets in a partition than records sent earlier by the same producer.

Failure: upload and commit are retried with backoff until the batch's
``delivery_timeout``; both are idempotent (the object key is unique to the
batch, and committing an object key again returns the offsets assigned the
first time). A failure that outlasts them fails exactly the sends of that
batch, with DeliveryError, and nothing of the batch becomes visible, then or
later (``writer`` says why that holds). Its object, if uploaded, is an orphan
that ``admin.delete_orphans()`` removes later.

Cancelling ``send()`` abandons the wait, not the record: a record appended to
a batch is written with it, and the other records of that batch are not
affected either way.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

import anyio
import anyio.abc

from .._codec import Headers
from .._errors import (
    ClosedError,
    DeliveryError,
    InvalidArgumentError,
    PartitionNotFoundError,
)
from .._metadata.protocol import MetadataStore
from .._metrics import ProducerProbe
from .._names import check_topic_name
from .._storage.protocol import ObjectStore
from .._types import CleanupPolicy, RecordMetadata, SendBatchResult
from .batch import Batch, append_records, record_sizes
from .checks import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    ProducerOptions,
    check_bytes,
    check_headers,
    check_sequence,
    check_timestamp,
    check_timestamps,
)
from .partitioner import StickyPartitioner, keyed_partition
from .writer import BatchWriter

__all__ = ["Producer"]

_TOPIC_CACHE_SECONDS = 30.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Producer:
    """Writes records to topics; made by :func:`open_producer`, not directly."""

    def __init__(
        self,
        storage: ObjectStore,
        metadata: MetadataStore,
        task_group: anyio.abc.TaskGroup,
        options: ProducerOptions,
        probe: ProducerProbe,
    ) -> None:
        self._metadata = metadata
        self._probe = probe
        self._tg = task_group
        self._options = options
        self._writer = BatchWriter(storage, metadata, options, probe)
        self._sticky = StickyPartitioner()
        self._topics: dict[str, tuple[int, bool, float]] = {}  # count, compacted, when
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
                partition for the key. A compacted topic needs one (compaction
                keeps the newest record of each key), as Kafka's broker does.
            partition: the partition, overriding the key.
            headers: ``(str, bytes)`` pairs.
            timestamp: milliseconds since the epoch, ``0 <= t < 2**63``; now
                when omitted.

        Raises:
            TopicNotFoundError, PartitionNotFoundError, InvalidArgumentError:
                the record was refused; nothing was written, and no other
                record was affected.
            DeliveryError: the batch holding the record could not be written
                within ``delivery_timeout``; none of it will become visible.
        """
        self._check_open()
        check_bytes("value", value)
        check_bytes("key", key)
        hdrs, headers_size = check_headers(headers)
        size = len(value or b"") + len(key or b"") + headers_size
        if size > self._options.max_record_bytes:
            raise InvalidArgumentError(
                f"record of {size} bytes is larger than "
                f"max_record_bytes={self._options.max_record_bytes}"
            )
        timestamp = _now_ms() if timestamp is None else check_timestamp(timestamp)
        count, compacted = await self._topic(topic)
        if compacted and key is None:
            raise InvalidArgumentError(
                f"compacted topic {topic!r} needs a key on every record; this one has none"
            )
        if partition is None:
            partition = (
                keyed_partition(key, count)
                if key is not None
                else self._sticky.partition(topic, count)
            )
        else:
            self._check_partition(topic, partition, count)
        await self._wait_for_space()
        batch = self._batch_for(size, 1)
        cols = batch.columns(topic, partition)
        position = len(cols.values)
        cols.timestamps.append(timestamp)
        cols.keys.append(key)
        cols.values.append(value)
        if hdrs:
            cols.add_headers(position, [hdrs])
        elif cols.headers is not None:
            cols.headers.append(None)
        self._added(batch, size, 1)
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
        one partition (sticky), keyed ones to their murmur2 partitions. One
        call holds at most 4,194,304 records and 128 MiB.

        Raises:
            The same errors as :meth:`send`, for the whole call: either every
            record is accepted, or none is.
        """
        self._check_open()
        n = check_sequence("values", values)
        if n == 0:
            return SendBatchResult(topic, [], [], {}, [])
        if n > MAX_BATCH_RECORDS:
            raise InvalidArgumentError(
                f"send_batch of {n} records; one call may hold at most {MAX_BATCH_RECORDS}"
            )
        if not set(map(type, values)) <= {bytes, type(None)}:
            bad = next(v for v in values if v is not None and type(v) is not bytes)
            raise InvalidArgumentError(f"values must be bytes or None, not {type(bad).__name__}")
        key_list: list[bytes | None] = [None] * n
        if keys is not None:
            if check_sequence("keys", keys) != n:
                raise InvalidArgumentError(f"{len(keys)} keys for {n} values")
            key_list = list(keys)
            if not set(map(type, key_list)) <= {bytes, type(None)}:
                bad = next(k for k in key_list if k is not None and type(k) is not bytes)
                raise InvalidArgumentError(f"keys must be bytes or None, not {type(bad).__name__}")
        header_list: list[Headers | None] | None = None
        header_sizes: list[int] | None = None
        if headers is not None:
            if check_sequence("headers", headers) != n:
                raise InvalidArgumentError(f"{len(headers)} headers for {n} values")
            checked = [check_headers(h) for h in headers]
            header_list = [pairs or None for pairs, _ in checked]
            header_sizes = [size for _, size in checked]
        ts_list = check_timestamps(timestamps, n, _now_ms())
        sizes = record_sizes(values, key_list if keys is not None else None, header_sizes)
        biggest = max(sizes)
        if biggest > self._options.max_record_bytes:
            raise InvalidArgumentError(
                f"record {sizes.index(biggest)} of {biggest} bytes is larger than "
                f"max_record_bytes={self._options.max_record_bytes}"
            )
        total = sum(sizes)
        if total > MAX_BATCH_BYTES:
            raise InvalidArgumentError(
                f"send_batch of {total} bytes; one call may hold at most {MAX_BATCH_BYTES} "
                "(split it)"
            )
        count, compacted = await self._topic(topic)
        if compacted and (keys is None or None in key_list):
            which = "keys=None" if keys is None else f"record {key_list.index(None)} has no key"
            raise InvalidArgumentError(
                f"compacted topic {topic!r} needs a key on every record; {which}"
            )
        targets = self._targets(topic, count, partition, keys, key_list, n)
        await self._wait_for_space()
        batch = self._batch_for(total, n)
        positions = append_records(batch, topic, targets, ts_list, key_list, values, header_list)
        self._added(batch, total, n)
        await batch.done.wait()
        return SendBatchResult(topic, targets, positions, batch.outcome(), ts_list)

    async def partitions_for(self, topic: str) -> set[int]:
        """The partitions of ``topic`` (as aiokafka's producer answers it).

        Raises:
            TopicNotFoundError: there is no such topic.
        """
        self._check_open()
        count, _ = await self._topic(topic)
        return set(range(count))

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
        if isinstance(partition, bool) or not isinstance(partition, int):
            raise InvalidArgumentError(
                f"partition must be an int or None, not {type(partition).__name__}"
            )
        if not 0 <= partition < count:
            raise PartitionNotFoundError(
                f"topic {topic!r} has partitions 0..{count - 1}; "
                f"there is no partition {partition!r}"
            )

    def _targets(
        self,
        topic: str,
        count: int,
        partition: int | None,
        keys: Sequence[bytes | None] | None,
        key_list: list[bytes | None],
        n: int,
    ) -> list[int]:
        if partition is not None:
            self._check_partition(topic, partition, count)
            return [partition] * n
        if count == 1 or keys is None or key_list.count(None) == n:
            # One partition needs no hashing (murmur2 is ~1 us a key).
            return [self._sticky.partition(topic, count)] * n
        sticky = self._sticky.partition(topic, count)
        return [sticky if k is None else keyed_partition(k, count) for k in key_list]

    async def _topic(self, topic: str) -> tuple[int, bool]:
        """The topic's partition count, and whether it is compacted (cached a while)."""
        cached = self._topics.get(topic)
        now = time.monotonic()
        if cached is not None and now - cached[2] < _TOPIC_CACHE_SECONDS:
            return cached[0], cached[1]
        check_topic_name(topic)
        info = await self._metadata.get_topic(topic)
        compacted = info.config.cleanup_policy is CleanupPolicy.COMPACT
        self._topics[topic] = (info.partitions, compacted, now)
        return info.partitions, compacted

    async def _wait_for_space(self) -> None:
        if self._buffered >= self._options.buffer_bytes:
            # Bounded like the rest of a send: space comes back as earlier
            # batches end, each within its own delivery timeout.
            with anyio.move_on_after(self._options.delivery_timeout) as waited:
                while self._buffered >= self._options.buffer_bytes:
                    await self._space.wait()
            if waited.cancelled_caught:
                raise DeliveryError(
                    f"record not accepted: buffer_bytes={self._options.buffer_bytes} stayed "
                    f"full of unwritten records for delivery_timeout="
                    f"{self._options.delivery_timeout} s"
                )
        self._check_open()

    def _batch_for(self, size: int, records: int) -> Batch:
        batch = self._open
        if (
            batch is not None
            and batch.records
            and (
                batch.size + size > self._options.max_batch_bytes
                or batch.records + records > MAX_BATCH_RECORDS
            )
        ):
            self._seal()
            batch = None
        if batch is None:
            batch = self._open = Batch(next(self._seq))
            self._tg.start_soon(self._linger_then_seal, batch)
        return batch

    def _added(self, batch: Batch, size: int, records: int) -> None:
        batch.size += size
        batch.records += records
        self._buffered += size
        if batch.size >= self._options.max_batch_bytes or batch.records >= MAX_BATCH_RECORDS:
            self._seal()

    async def _linger_then_seal(self, batch: Batch) -> None:
        await anyio.sleep(self._options.linger)
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

    async def _flush(self, batch: Batch) -> None:
        started = time.perf_counter()
        try:
            batch.bases = await self._writer.write(batch)
        except Exception as exc:
            batch.error = exc
            self._probe.failed(batch.topic_records())
        except BaseException:
            batch.error = ClosedError("the producer closed before this batch was written")
            raise
        finally:
            self._probe.flush_latency.observe(time.perf_counter() - started)
            batch.previous = None
            self._buffered -= batch.size
            self._space.set()
            self._space = anyio.Event()
            batch.parts.clear()
            batch.done.set()

    async def _close(self) -> None:
        self._closed = True
        self._seal()
        last = self._last_sealed
        if last is not None:
            await last.done.wait()
        self._space.set()
