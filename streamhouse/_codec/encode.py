"""Segment encoding: columns of records in, one segment's bytes out.

See the package docstring (``_codec``) for why the layout looks the way it does.
"""

from __future__ import annotations

import array
import bisect
import itertools
import operator
from collections.abc import Sequence
from typing import Final

import attrs

from .format import (
    BLOCK_HEADER,
    BLOCK_MAGIC,
    DEFAULT_BLOCK_BYTES,
    FLAG_HEADERS,
    FLAG_KEYS,
    FLAG_NULLS,
    FLAG_OFFSETS,
    FOOTER,
    FORMAT_VERSION,
    GAPPED_FORMAT_VERSION,
    HEADER_COUNT,
    HEADER_KEY_LEN,
    INDEX_ENTRY,
    MAX_BLOCK_RAW_SIZE,
    MAX_BLOCK_RECORDS,
    MAX_OFFSET_DELTA,
    NULL_KEY,
    NULL_VALUE,
    SEGMENT_MAGIC,
    U32,
    Codec,
    EncodedSegment,
    Headers,
    IndexEntry,
    compress,
    crc32c,
)

__all__ = ["encode_segment"]


def _encode_headers(headers: Sequence[Headers | None]) -> bytes:
    out = bytearray()
    for record_headers in headers:
        items = record_headers or ()
        out += HEADER_COUNT.pack(len(items))
        for key, value in items:
            kb = key.encode("utf-8")
            out += HEADER_KEY_LEN.pack(len(kb))
            out += kb
            out += U32.pack(len(value))
            out += value
    return bytes(out)


# b"%ds" for the lengths most fields have: one itemgetter call looks them all
# up in C, four times faster than formatting them.
_SHAPE_TABLE: Final = tuple(f"{i}s".encode("ascii") for i in range(4096))


def _shape(lengths: list[int]) -> bytes:
    if len(lengths) > 1:
        try:
            return b"".join(operator.itemgetter(*lengths)(_SHAPE_TABLE))
        except IndexError:  # some field is 4 KiB or longer
            pass
    return (("%ds" * len(lengths)) % tuple(lengths)).encode("ascii")


def _encode_block(
    timestamps: Sequence[int],
    keys: Sequence[bytes | None],
    values: Sequence[bytes | None],
    headers: Sequence[Headers | None] | None,
    offsets: Sequence[int],
    codec: Codec,
) -> tuple[bytes, IndexEntry]:
    n = len(timestamps)
    flags = 0
    parts: list[bytes] = [_pack_i64(timestamps)]
    first_offset_delta = offsets[0]
    skipped = offsets[-1] - first_offset_delta + 1 - n
    if skipped:
        flags |= FLAG_OFFSETS
        parts.append(array.array("I", [o - first_offset_delta for o in offsets]).tobytes())
    has_keys = keys.count(None) != n
    if (has_keys and None in keys) or None in values:
        flags |= FLAG_NULLS
        parts.append(
            bytes(
                (NULL_KEY if k is None and has_keys else 0) | (NULL_VALUE if v is None else 0)
                for k, v in zip(keys, values, strict=True)
            )
        )
        keys = [b"" if k is None else k for k in keys]
        values = [b"" if v is None else v for v in values]
    if headers is not None and any(headers):
        flags |= FLAG_HEADERS
        blob = _encode_headers(headers)
        parts.append(U32.pack(len(blob)))
        parts.append(blob)
    fields: list[bytes]
    if has_keys:
        flags |= FLAG_KEYS
        # Interleave key0, value0, key1, value1, ... with two C-level slice
        # assignments.
        fields = [b""] * (2 * n)
        fields[0::2] = keys  # type: ignore[assignment]
        fields[1::2] = values  # type: ignore[assignment]
    else:
        fields = values  # type: ignore[assignment]
    try:
        data = b"".join(fields)
    except TypeError:
        bad = next(f for f in fields if not isinstance(f, bytes | bytearray | memoryview))
        raise TypeError(
            f"keys and values must be bytes or None, not {type(bad).__name__}"
        ) from None
    shape = _shape(list(map(len, fields)))
    parts.append(U32.pack(len(shape)))
    parts.append(shape)
    parts.append(data)
    raw = b"".join(parts)
    if len(raw) > MAX_BLOCK_RAW_SIZE:
        raise ValueError(
            f"a block of {n} records is {len(raw)} bytes; the limit is {MAX_BLOCK_RAW_SIZE}"
        )
    stored = compress(codec, raw)
    min_ts = min(timestamps)
    max_ts = max(timestamps)
    header_tail = BLOCK_HEADER.pack(
        BLOCK_MAGIC,
        0,
        crc32c(stored),
        codec,
        flags,
        0,
        n,
        first_offset_delta,
        min_ts,
        max_ts,
        len(stored),
        len(raw),
    )[8:]
    header = BLOCK_MAGIC + U32.pack(crc32c(header_tail)) + header_tail
    block = header + stored
    entry = IndexEntry(first_offset_delta, n, 0, len(block), min_ts, max_ts, skipped)
    return block, entry


def _pack_i64(values: Sequence[int]) -> bytes:
    """Pack ints as little-endian i64, in C (the module checks the byte order)."""
    try:
        return array.array("q", values).tobytes()
    except (OverflowError, TypeError) as exc:
        raise ValueError(f"a timestamp is not a 64-bit integer: {exc}") from None


def _block_bounds(
    keys: Sequence[bytes | None], values: Sequence[bytes | None], target: int
) -> list[int]:
    """Cut points so that each block holds about ``target`` bytes of keys and values.

    A record larger than ``target`` gets a block of its own.
    """
    n = len(values)
    if None in values or None in keys:
        sizes = [
            (0 if k is None else len(k)) + (0 if v is None else len(v))
            for k, v in zip(keys, values, strict=True)
        ]
    else:
        sizes = list(map(operator.add, map(len, keys), map(len, values)))  # type: ignore[arg-type]
    cumulative = list(itertools.accumulate(sizes))
    if cumulative[-1] <= target:
        return [0, n]
    bounds = [0]
    start_bytes = 0
    while bounds[-1] < n:
        cut = bisect.bisect_right(cumulative, start_bytes + target, lo=bounds[-1])
        cut = max(cut, bounds[-1] + 1)
        bounds.append(cut)
        start_bytes = cumulative[cut - 1]
    return bounds


def encode_segment(
    timestamps: Sequence[int],
    keys: Sequence[bytes | None] | None,
    values: Sequence[bytes | None],
    headers: Sequence[Headers | None] | None = None,
    *,
    offsets: Sequence[int] | None = None,
    codec: Codec | str = Codec.LZ4,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> EncodedSegment:
    """Encode one partition's records into a segment.

    The records are given as columns of equal length: record ``i`` has
    ``timestamps[i]``, ``keys[i]``, ``values[i]`` and ``headers[i]``. Offsets
    are not stored per record: record ``i`` gets the relative offset ``i``,
    and the metadata store assigns the segment's base offset at commit.
    Records with gaps between their offsets (what compaction leaves) give
    ``offsets``; only the blocks that have gaps then store an offset column.

    Args:
        timestamps: milliseconds since the epoch, any order, as i64.
        keys: bytes or None for each record; None for the column = no keys.
        values: bytes or None for each record.
        headers: a sequence of ``(str, bytes)`` pairs (or None) per record.
        offsets: each record's offset relative to the segment's base,
            strictly increasing, in ``[0, 2**32)``; None for ``0, 1, 2, ...``.
        codec: "none", "lz4" or "zstd".
        block_bytes: the raw size a block aims for.

    Raises:
        ValueError: the columns differ in length or are empty, or a field
            does not fit the format.
    """
    codec = Codec.parse(codec)
    n = len(values)
    if n == 0:
        raise ValueError("a segment needs at least one record")
    if keys is None:
        keys = (None,) * n
    if len(timestamps) != n or len(keys) != n or (headers is not None and len(headers) != n):
        raise ValueError("timestamps, keys, values and headers must have the same length")
    relative = _check_offsets(offsets, n)
    bounds = _block_bounds(keys, values, block_bytes)
    blocks: list[bytes] = []
    entries: list[IndexEntry] = []
    position = 0
    for lo, hi in itertools.pairwise(bounds):
        if hi - lo > MAX_BLOCK_RECORDS:  # pragma: no cover - needs 16M records
            raise ValueError("too many records for one block")
        block, entry = _encode_block(
            timestamps[lo:hi],
            keys[lo:hi],
            values[lo:hi],
            None if headers is None else headers[lo:hi],
            relative[lo:hi],
            codec,
        )
        blocks.append(block)
        entries.append(attrs.evolve(entry, position=position))
        position += len(block)
    gapped = relative[0] != 0 or relative[-1] != n - 1
    tail = _index_and_footer(entries, position, n, gapped)
    blocks.append(tail)
    return EncodedSegment(
        data=b"".join(blocks),
        record_count=n,
        index_length=len(tail),
        min_timestamp=min(e.min_timestamp for e in entries),
        max_timestamp=max(e.max_timestamp for e in entries),
        end_offset_delta=relative[-1] + 1,
    )


def _index_and_footer(entries: list[IndexEntry], position: int, n: int, gapped: bool) -> bytes:
    """The segment's tail: one index entry a block, then the footer."""
    index = b"".join(
        INDEX_ENTRY.pack(
            e.first_offset_delta,
            e.record_count,
            e.position,
            e.size,
            e.skipped,
            e.min_timestamp,
            e.max_timestamp,
        )
        for e in entries
    )
    version = GAPPED_FORMAT_VERSION if gapped else FORMAT_VERSION
    footer_head = FOOTER.pack(
        position, n, len(entries), crc32c(index), version, 0, 0, SEGMENT_MAGIC
    )[:28]
    return index + footer_head + U32.pack(crc32c(footer_head)) + SEGMENT_MAGIC


def _check_offsets(offsets: Sequence[int] | None, n: int) -> Sequence[int]:
    """The records' relative offsets: ``range(n)``, or ``offsets`` once checked."""
    if offsets is None:
        return range(n)
    if len(offsets) != n:
        raise ValueError(f"{len(offsets)} offsets for {n} records")
    if not set(map(type, offsets)) <= {int}:
        raise ValueError("offsets must be ints")
    if offsets[0] < 0 or offsets[-1] > MAX_OFFSET_DELTA:
        raise ValueError(f"relative offsets must be in [0, 2**32), not {offsets[0]}..{offsets[-1]}")
    if not all(map(operator.lt, offsets, itertools.islice(offsets, 1, None))):
        raise ValueError("offsets must be strictly increasing")
    return offsets
