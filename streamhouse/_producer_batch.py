"""What the producer accumulates and returns: batches, columns, record metadata.

The flow that fills, seals and flushes these lives in ``_producer``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import overload

import anyio
import attrs

from ._errors import DeliveryError, InvalidArgumentError
from ._segment import Headers

__all__ = [
    "OBJECT_PREFIX",
    "RecordMetadata",
    "SendBatchResult",
    "new_object_key",
    "object_key_time",
]

OBJECT_PREFIX = "data/"


@attrs.frozen
class RecordMetadata:
    """Where a record was written: returned once it is durable."""

    topic: str
    partition: int
    offset: int
    timestamp: int


def new_object_key() -> str:
    """A unique, time-ordered object key: ``data/<ms since epoch>-<random>.seg``."""
    return f"{OBJECT_PREFIX}{time.time_ns() // 1_000_000:013d}-{secrets.token_hex(8)}.seg"


def object_key_time(key: str) -> float | None:
    """The creation time (seconds since the epoch) encoded in a producer's key."""
    name = key.removeprefix(OBJECT_PREFIX)
    stamp, _, _ = name.partition("-")
    if not key.startswith(OBJECT_PREFIX) or len(stamp) != 13 or not stamp.isdigit():
        return None
    return int(stamp) / 1000


@attrs.define(eq=False)
class _Columns:
    timestamps: list[int] = attrs.Factory(list)
    keys: list[bytes | None] = attrs.Factory(list)
    values: list[bytes | None] = attrs.Factory(list)
    headers: list[Headers | None] | None = None

    def add_headers(self, start: int, headers: Sequence[Headers | None]) -> None:
        if self.headers is None:
            self.headers = [None] * start
        self.headers += headers


@attrs.define(eq=False)
class _Batch:
    """One flush's worth of records, in every partition they went to."""

    seq: int
    parts: dict[tuple[str, int], _Columns] = attrs.Factory(dict)
    size: int = 0
    done: anyio.Event = attrs.Factory(anyio.Event)
    previous: _Batch | None = None
    bases: dict[tuple[str, int], int] = attrs.Factory(dict)
    error: BaseException | None = None

    def columns(self, topic: str, partition: int) -> _Columns:
        cols = self.parts.get((topic, partition))
        if cols is None:
            cols = self.parts[(topic, partition)] = _Columns()
        return cols

    def outcome(self) -> dict[tuple[str, int], int]:
        if self.error is not None:
            raise DeliveryError(f"records not written: {self.error}") from self.error
        return self.bases


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


def _check_bytes(what: str, value: object) -> None:
    if value is not None and type(value) is not bytes:
        raise InvalidArgumentError(f"{what} must be bytes or None, not {type(value).__name__}")


def _check_headers(headers: object) -> Headers:
    if headers is None:
        return ()
    try:
        pairs = tuple((k, v) for k, v in headers)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise InvalidArgumentError("headers must be a sequence of (str, bytes) pairs") from None
    for k, v in pairs:
        if type(k) is not str or type(v) is not bytes:
            raise InvalidArgumentError(
                f"header ({k!r}, ...) must be a (str, bytes) pair, not "
                f"({type(k).__name__}, {type(v).__name__})"
            )
        if len(k.encode()) > 0xFFFF:
            raise InvalidArgumentError(f"header name {k[:20]!r}... is longer than 65535 bytes")
    return pairs


def _headers_size(headers: Headers) -> int:
    return sum(len(k) + len(v) + 6 for k, v in headers)
