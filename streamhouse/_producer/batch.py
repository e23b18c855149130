"""What the producer accumulates: batches of per-partition columns.

The flow that fills and seals these lives in ``producer``; the checks a
record passes before it joins one in ``checks``; writing a sealed one in
``writer``.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import attrs

from .._codec import Headers
from .._errors import DeliveryError

__all__ = ["Batch", "Columns", "append_records", "extend_columns", "record_sizes"]


@attrs.define(eq=False)
class Columns:
    timestamps: list[int] = attrs.Factory(list)
    keys: list[bytes | None] = attrs.Factory(list)
    values: list[bytes | None] = attrs.Factory(list)
    headers: list[Headers | None] | None = None

    def add_headers(self, start: int, headers: Sequence[Headers | None]) -> None:
        if self.headers is None:
            self.headers = [None] * start
        self.headers += headers


@attrs.define(eq=False)
class Batch:
    """One flush's worth of records, in every partition they went to."""

    seq: int
    parts: dict[tuple[str, int], Columns] = attrs.Factory(dict)
    size: int = 0
    records: int = 0
    done: anyio.Event = attrs.Factory(anyio.Event)
    previous: Batch | None = None
    bases: dict[tuple[str, int], int] = attrs.Factory(dict)
    error: BaseException | None = None

    def columns(self, topic: str, partition: int) -> Columns:
        cols = self.parts.get((topic, partition))
        if cols is None:
            cols = self.parts[(topic, partition)] = Columns()
        return cols

    def topic_records(self) -> dict[str, int]:
        """How many records of each topic the batch holds."""
        out: dict[str, int] = {}
        for (topic, _), cols in self.parts.items():
            out[topic] = out.get(topic, 0) + len(cols.timestamps)
        return out

    def outcome(self) -> dict[tuple[str, int], int]:
        """The base offsets, or a fresh DeliveryError for each caller that asks."""
        error = self.error
        if error is None:
            return self.bases
        if isinstance(error, DeliveryError):
            raise DeliveryError(str(error)) from (error.__cause__ or error)
        raise DeliveryError(f"records not written: {error}") from error


def record_sizes(
    values: Sequence[bytes | None],
    keys: list[bytes | None] | None,
    header_sizes: list[int] | None,
) -> list[int]:
    """Each record's key + value + headers bytes, as batches count them."""
    sizes: list[int]
    if None in values or keys is not None:
        ks = keys or [None] * len(values)
        sizes = [len(v or b"") + len(k or b"") for v, k in zip(values, ks, strict=True)]
    else:
        sizes = list(map(len, values))  # type: ignore[arg-type]
    if header_sizes is not None:
        sizes = list(map(int.__add__, sizes, header_sizes))
    return sizes


def extend_columns(
    cols: Columns,
    timestamps: list[int],
    keys: list[bytes | None],
    values: list[bytes | None],
    headers: list[Headers | None] | None,
) -> None:
    """Append records to one partition's columns."""
    start = len(cols.values)
    cols.timestamps += timestamps
    cols.keys += keys
    cols.values += values
    if headers is not None:
        cols.add_headers(start, headers)
    elif cols.headers is not None:
        cols.headers += [None] * len(values)


def append_records(
    batch: Batch,
    topic: str,
    targets: list[int],
    timestamps: list[int],
    keys: list[bytes | None],
    values: Sequence[bytes | None],
    headers: list[Headers | None] | None,
) -> list[int]:
    """Append a send_batch call's records; return each one's position in its partition."""
    if len(set(targets)) == 1:
        cols = batch.columns(topic, targets[0])
        start = len(cols.values)
        extend_columns(cols, timestamps, keys, list(values), headers)
        return range(start, start + len(targets))  # type: ignore[return-value]
    positions = [0] * len(targets)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(targets):
        groups.setdefault(p, []).append(i)
    for p, idx in groups.items():
        cols = batch.columns(topic, p)
        start = len(cols.values)
        for j, i in enumerate(idx):
            positions[i] = start + j
        extend_columns(
            cols, [timestamps[i] for i in idx], [keys[i] for i in idx], [values[i] for i in idx],
            None if headers is None else [headers[i] for i in idx],
        )  # fmt: skip
    return positions
