"""The value types every layer shares: partitions, policies, records, results.

``TopicPartition`` and ``OffsetReset`` name things; ``ConsumedRecord`` and
``RecordBatch`` are what a consumer delivers, records one by one or a
partition's run of records as columns; ``RecordMetadata`` and
``SendBatchResult`` are what a producer answers.

``ConsumedRecord`` is a tuple, built in C: ``map(tuple.__new__, ...)`` over
``zip`` of the columns costs about 200 ns a record, the least CPython allows
for an object with fields. ``RecordBatch`` skips that object altogether: it
holds a block's columns as the decoder cut them, so a pipeline that wants
values (or keys, or timestamps) in bulk pays for nothing else.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator, Sequence
from typing import NamedTuple, overload

import attrs

from ._errors import InvalidArgumentError

__all__ = [
    "CleanupPolicy",
    "ConsumedRecord",
    "Headers",
    "OffsetReset",
    "RecordBatch",
    "RecordMetadata",
    "SendBatchResult",
    "TopicPartition",
]

Headers = Sequence[tuple[str, bytes]]


@attrs.frozen(order=True)
class TopicPartition:
    """One partition of one topic."""

    topic: str
    partition: int


class OffsetReset(enum.Enum):
    """Where to start when there is no valid position: Kafka's auto.offset.reset."""

    EARLIEST = "earliest"
    LATEST = "latest"
    NONE = "none"

    @classmethod
    def parse(cls, value: OffsetReset | str) -> OffsetReset:
        if isinstance(value, OffsetReset):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InvalidArgumentError(
                f"offset reset must be 'earliest', 'latest' or 'none', not {value!r}"
            ) from None


class CleanupPolicy(enum.StrEnum):
    """What maintenance does with a topic's old records: Kafka's cleanup.policy.

    ``DELETE`` drops whole segments by the topic's retention (time, size);
    ``COMPACT`` also keeps only the newest record of each key (a record
    whose value is None is a tombstone: it deletes its key, and goes itself
    after ``delete_retention_seconds``). Retention applies under both when
    it is set, as Kafka's "compact,delete" does.
    """

    DELETE = "delete"
    COMPACT = "compact"

    @classmethod
    def parse(cls, value: CleanupPolicy | str) -> CleanupPolicy:
        if isinstance(value, CleanupPolicy):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InvalidArgumentError(
                f"cleanup policy must be 'delete' or 'compact', not {value!r}"
            ) from None


class ConsumedRecord(NamedTuple):
    """One record as the consumer delivers it.

    A tuple, so that a block's records are built in C; fields by name or
    position.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers


@attrs.frozen
class RecordBatch:
    """Records of one partition, in offset order, as columns.

    Record ``i`` has offset ``offsets[i]``, ``timestamps[i]``, ``keys[i]``,
    ``values[i]`` and ``headers[i]``. Offsets are consecutive from
    ``first_offset`` (``offsets`` is then a ``range``), except in a
    compacted partition, whose batches may skip the offsets of records that
    compaction removed; such a batch carries its offsets as a column. The
    columns are plain sequences (lists and tuples), ready for ``zip``,
    ``b"".join`` or ``numpy``/``pyarrow`` constructors. Iterating the batch,
    or :meth:`records`, builds ConsumedRecords.
    """

    topic: str
    partition: int
    first_offset: int
    timestamps: Sequence[int]
    keys: Sequence[bytes | None]
    values: Sequence[bytes | None]
    _headers: Sequence[Headers] | None = attrs.field(default=None, alias="headers")
    _offsets: Sequence[int] | None = attrs.field(default=None, alias="offsets")

    def __attrs_post_init__(self) -> None:
        n = len(self.timestamps)
        if len(self.keys) != n or len(self.values) != n or len(self._headers or self.keys) != n:
            raise ValueError("a RecordBatch's columns must all have the same length")
        if self._offsets is not None and (
            len(self._offsets) != n or (n and self._offsets[0] != self.first_offset)
        ):
            raise ValueError("a RecordBatch's offsets must match its records and first offset")

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def offsets(self) -> Sequence[int]:
        """The batch's offsets: a ``range`` when consecutive, else the column."""
        if self._offsets is not None:
            return self._offsets
        return range(self.first_offset, self.first_offset + len(self.timestamps))

    @property
    def gapped(self) -> bool:
        """Whether the batch skips offsets (it carries an offsets column)."""
        return self._offsets is not None

    @property
    def next_offset(self) -> int:
        """The offset after the batch's last record."""
        if self._offsets:
            return self._offsets[-1] + 1
        return self.first_offset + len(self.timestamps)

    @property
    def last_offset(self) -> int:
        return self.next_offset - 1

    def offset_at(self, index: int) -> int:
        """The offset of record ``index`` (``next_offset`` past the last)."""
        if self._offsets is None:
            return self.first_offset + index
        return self._offsets[index] if index < len(self._offsets) else self.next_offset

    def offset_after(self, count: int) -> int:
        """The position after the batch's first ``count`` records: the offset
        after the last of them (``first_offset`` for none)."""
        if self._offsets is None or not count:
            return self.first_offset + count
        return self._offsets[count - 1] + 1

    @property
    def headers(self) -> Sequence[Headers]:
        """Each record's headers (``()`` for none)."""
        if self._headers is None:
            return ((),) * len(self.timestamps)
        return self._headers

    def __iter__(self) -> Iterator[ConsumedRecord]:
        return iter(self.records())

    def records(self, start: int = 0, stop: int | None = None) -> list[ConsumedRecord]:
        """The records ``[start:stop]`` of the batch as ConsumedRecords."""
        n = len(self.timestamps)
        stop = n if stop is None else min(stop, n)
        count = max(0, stop - start)
        if count == 0:
            return []
        whole = start == 0 and stop == n
        offsets: Sequence[int]
        if self._offsets is None:
            first = self.first_offset + start
            offsets = range(first, first + count)
        else:
            offsets = self._offsets if whole else self._offsets[start:stop]
        # tuple.__new__(ConsumedRecord, fields) for each record, called by
        # map in C: the NamedTuple's own __new__ is a Python function
        # (190 ns a record).
        return list(
            map(
                tuple.__new__,
                itertools.repeat(ConsumedRecord, count),
                zip(
                    itertools.repeat(self.topic, count),
                    itertools.repeat(self.partition, count),
                    offsets,
                    self.timestamps if whole else self.timestamps[start:stop],
                    self.keys if whole else self.keys[start:stop],
                    self.values if whole else self.values[start:stop],
                    itertools.repeat((), count)
                    if self._headers is None
                    else self._headers[start:stop],
                    strict=True,
                ),
            )
        )

    def slice(self, start: int, stop: int | None = None) -> RecordBatch:
        """The records ``[start:stop]`` as a batch of their own."""
        n = len(self.timestamps)
        stop = n if stop is None else min(stop, n)
        start = max(start, 0)
        if start == 0 and stop == n:
            return self
        offsets = None if self._offsets is None else self._offsets[start:stop]
        return RecordBatch(
            self.topic,
            self.partition,
            self.first_offset + start
            if offsets is None
            else (offsets[0] if offsets else self.next_offset),
            self.timestamps[start:stop],
            self.keys[start:stop],
            self.values[start:stop],
            None if self._headers is None else self._headers[start:stop],
            offsets,
        )


@attrs.frozen
class RecordMetadata:
    """Where a record was written: returned once it is durable."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class SendBatchResult(Sequence[RecordMetadata]):
    """The metadata of every record of one ``send_batch`` call, in order.

    Built lazily: a RecordMetadata object is made only for the items asked
    for, so a million-record batch does not cost a million objects.
    """

    __slots__ = ("_bases", "_partitions", "_positions", "_timestamps", "_topic")

    def __init__(
        self,
        topic: str,
        partitions: Sequence[int],
        positions: Sequence[int],
        bases: dict[tuple[str, int], int],
        timestamps: Sequence[int],
    ) -> None:
        self._topic = topic
        self._partitions = partitions
        self._positions = positions
        self._bases = bases
        self._timestamps = timestamps

    def __len__(self) -> int:
        return len(self._positions)

    @overload
    def __getitem__(self, index: int) -> RecordMetadata: ...
    @overload
    def __getitem__(self, index: slice) -> list[RecordMetadata]: ...
    def __getitem__(self, index: int | slice) -> RecordMetadata | list[RecordMetadata]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        partition = self._partitions[index]
        return RecordMetadata(
            self._topic,
            partition,
            self._bases[(self._topic, partition)] + self._positions[index],
            self._timestamps[index],
        )

    @property
    def offsets(self) -> list[int]:
        """Every record's offset, in order."""
        bases = [self._bases[(self._topic, p)] for p in self._partitions]
        return [b + p for b, p in zip(bases, self._positions, strict=True)]
