"""Segment decoding: every check of docs/FORMAT.md, then columns out.

See the package docstring (``_codec``) for why the layout looks the way it does.
"""

from __future__ import annotations

import itertools
import operator
import struct
import threading
from collections.abc import Iterator, Sequence
from typing import Final

import cramjam

from .._errors import CorruptDataError
from .format import (
    BLOCK_HEADER,
    BLOCK_HEADER_SIZE,
    BLOCK_MAGIC,
    FLAG_HEADERS,
    FLAG_KEYS,
    FLAG_NULLS,
    FLAG_OFFSETS,
    FOOTER,
    FOOTER_SIZE,
    FORMAT_VERSION,
    HEADER_COUNT,
    HEADER_KEY_LEN,
    INDEX_ENTRY,
    INDEX_ENTRY_SIZE,
    KNOWN_FLAGS,
    KNOWN_VERSIONS,
    MAX_BLOCK_RAW_SIZE,
    MAX_BLOCK_RECORDS,
    MAX_OFFSET_DELTA,
    NULL_KEY,
    NULL_VALUE,
    SEGMENT_MAGIC,
    SHAPE_CHARS,
    U32,
    Codec,
    DecodedBlock,
    Headers,
    IndexEntry,
    SegmentIndex,
    crc32c,
    zstd_decompressor,
)

__all__ = ["decode_block", "decode_segment", "iter_segment", "read_index"]


def read_index(
    tail: bytes | memoryview, *, segment_length: int, name: str, base: int = 0
) -> SegmentIndex:
    """Parse a segment's footer and index from the bytes at its end.

    Args:
        tail: the last bytes of the segment; at least index + footer.
        segment_length: the whole segment's length.
        name: the object the bytes came from, for error messages.
        base: the byte position of the segment within that object.

    Raises:
        CorruptDataError: the footer or index fails a check.
    """
    tail = memoryview(tail)
    tail_start = base + segment_length - len(tail)
    if len(tail) < FOOTER_SIZE or segment_length < len(tail):
        raise CorruptDataError(
            name, tail_start, f"segment too short for its footer ({len(tail)} bytes)"
        )
    footer_pos = len(tail) - FOOTER_SIZE
    (index_position, record_count, block_count, index_crc, version, reserved, footer_crc, magic) = (
        FOOTER.unpack_from(tail, footer_pos)
    )
    where = tail_start + footer_pos
    if magic != SEGMENT_MAGIC:
        raise CorruptDataError(name, where + 32, f"bad segment magic {bytes(magic)!r}")
    if footer_crc != crc32c(tail[footer_pos : footer_pos + 28]):
        raise CorruptDataError(name, where, "footer checksum mismatch")
    if version not in KNOWN_VERSIONS:
        raise CorruptDataError(name, where + 24, f"unknown segment format version {version}")
    if reserved:
        raise CorruptDataError(name, where + 26, "reserved footer bytes are not zero")
    index_length = block_count * INDEX_ENTRY_SIZE
    if index_position + index_length + FOOTER_SIZE != segment_length or block_count == 0:
        raise CorruptDataError(
            name,
            where,
            f"index of {block_count} blocks at {index_position} does not fit a "
            f"segment of {segment_length} bytes",
        )
    index_start = footer_pos - index_length
    if index_start < 0:
        raise CorruptDataError(name, tail_start, "the bytes given do not reach back to the index")
    index = tail[index_start:footer_pos]
    if crc32c(index) != index_crc:
        raise CorruptDataError(name, tail_start + index_start, "index checksum mismatch")
    entries = []
    expected_position = 0
    expected_offset = 0  # version 1: offsets are consecutive from 0
    records = 0
    gapped = version != FORMAT_VERSION
    for i, fields in enumerate(INDEX_ENTRY.iter_unpack(index)):
        first, count, position, size, skipped, min_ts, max_ts = fields
        if (
            (first < expected_offset if gapped else first != expected_offset)
            or (skipped and not gapped)
            or position != expected_position
            or count == 0
            or size <= BLOCK_HEADER_SIZE
            or min_ts > max_ts
            or first + count + skipped > 2**32
        ):
            raise CorruptDataError(
                name,
                tail_start + index_start + i * INDEX_ENTRY_SIZE,
                f"index entry {i} is inconsistent",
            )
        entries.append(IndexEntry(first, count, position, size, min_ts, max_ts, skipped))
        expected_position += size
        expected_offset = first + count + skipped
        records += count
    if expected_position != index_position or records != record_count:
        raise CorruptDataError(name, tail_start + index_start, "index does not tile the segment")
    return SegmentIndex(tuple(entries), record_count, index_position, segment_length)


def decode_block(
    buf: bytes | memoryview,
    pos: int = 0,
    *,
    name: str = "<segment>",
    base: int = 0,
    entry: IndexEntry | None = None,
) -> DecodedBlock:
    """Decode the block that starts at ``buf[pos]``.

    Args:
        buf: bytes holding the block (and possibly more).
        pos: where the block starts in ``buf``.
        name: the object the bytes came from, for error messages.
        base: the byte position of ``buf[0]`` within that object.
        entry: the block's index entry, checked against its header if given.

    Raises:
        CorruptDataError: any check fails.
    """
    view = memoryview(buf)
    where = base + pos
    if len(view) - pos < BLOCK_HEADER_SIZE or pos < 0:
        raise CorruptDataError(name, where, "truncated block header")
    (
        magic,
        header_crc,
        payload_crc,
        codec,
        flags,
        reserved,
        n,
        first,
        min_ts,
        max_ts,
        stored_size,
        raw_size,
    ) = BLOCK_HEADER.unpack_from(view, pos)
    if magic != BLOCK_MAGIC:
        raise CorruptDataError(name, where, f"bad block magic {bytes(magic)!r}")
    if header_crc != crc32c(view[pos + 8 : pos + BLOCK_HEADER_SIZE]):
        raise CorruptDataError(name, where + 4, "block header checksum mismatch")
    _check_sizes(codec, flags, reserved, n, stored_size, raw_size, name, where)
    if entry is not None and (
        entry.first_offset_delta != first
        or entry.record_count != n
        or bool(entry.skipped) != bool(flags & FLAG_OFFSETS)
        or entry.size != BLOCK_HEADER_SIZE + stored_size
        or entry.min_timestamp != min_ts
        or entry.max_timestamp != max_ts
    ):
        raise CorruptDataError(name, where, "block header disagrees with the segment index")
    start = pos + BLOCK_HEADER_SIZE
    stored = view[start : start + stored_size]
    if len(stored) != stored_size:
        raise CorruptDataError(
            name,
            where + BLOCK_HEADER_SIZE,
            f"truncated block payload: {len(stored)} of {stored_size} bytes",
        )
    if crc32c(stored) != payload_crc:
        raise CorruptDataError(name, where + BLOCK_HEADER_SIZE, "block payload checksum mismatch")
    raw = _decompress(stored, codec, raw_size, name, where + BLOCK_HEADER_SIZE)
    try:
        block = _decode_payload(raw, n, first, flags, min_ts, max_ts)
    except (struct.error, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise CorruptDataError(name, where + BLOCK_HEADER_SIZE, f"bad payload: {exc}") from exc
    if entry is not None and block.end_offset_delta != entry.end_offset_delta:
        raise CorruptDataError(name, where, "block offsets disagree with the segment index")
    return block


def _check_sizes(
    codec: int,
    flags: int,
    reserved: int,
    n: int,
    stored_size: int,
    raw_size: int,
    name: str,
    where: int,
) -> None:
    """Refuses a block header whose codec, flags or sizes cannot be right."""
    if codec not in (0, 1, 2) or flags & ~KNOWN_FLAGS or reserved:
        raise CorruptDataError(name, where + 12, f"unknown codec {codec} or flags {flags:#x}")
    if not 0 < n <= MAX_BLOCK_RECORDS or raw_size > MAX_BLOCK_RAW_SIZE or raw_size < 8 * n:
        raise CorruptDataError(
            name, where + 16, f"implausible block: {n} records in {raw_size} bytes"
        )
    # What a codec can expand to bounds what decompression may allocate:
    # nothing for none, 255x for an lz4 block. zstd can legitimately expand
    # further, so only MAX_BLOCK_RAW_SIZE bounds it.
    if (codec == Codec.NONE and raw_size != stored_size) or (
        codec == Codec.LZ4 and raw_size > 255 * stored_size + 64
    ):
        raise CorruptDataError(
            name, where + 40, f"{stored_size} stored bytes cannot hold {raw_size} raw bytes"
        )


def _decompress(
    stored: memoryview, codec: int, raw_size: int, name: str, where: int
) -> bytes | memoryview:
    """A block's payload, decompressed and checked to be ``raw_size`` bytes."""
    raw: bytes | memoryview
    try:
        if codec == Codec.LZ4:
            # Into a buffer kept for the next block: a fresh 1 MiB bytes per
            # block cost 3x the decompression itself in page faults.
            raw = _scratch(raw_size)
            got = cramjam.lz4.decompress_block_into(stored, raw, output_len=raw_size)
        elif codec == Codec.ZSTD:
            raw = zstd_decompressor().decompress(stored, max_output_size=raw_size)
            got = len(raw)
        else:
            raw, got = stored, len(stored)
    except Exception as exc:  # lz4 and zstd raise their own error types
        raise CorruptDataError(
            name, where, f"cannot decompress {Codec(codec).name}: {exc}"
        ) from exc
    if got != raw_size:
        raise CorruptDataError(name, where, f"payload is {got} bytes, header says {raw_size}")
    return raw


_scratch_local = threading.local()
_SCRATCH_KEEP: Final = 16 * 2**20  # larger payloads get a buffer of their own


def _scratch(size: int) -> memoryview:
    """A writable view of ``size`` bytes, reused by the thread's next block.

    Decoding copies every field out of it, so nothing returned refers to it.
    """
    if size > _SCRATCH_KEEP:
        return memoryview(bytearray(size))
    buf: bytearray | None = getattr(_scratch_local, "buf", None)
    if buf is None or len(buf) < size:
        buf = _scratch_local.buf = bytearray(max(size, 2**20))
    return memoryview(buf)[:size]


def _decode_payload(
    raw: bytes | memoryview, n: int, first: int, flags: int, min_ts: int, max_ts: int
) -> DecodedBlock:
    """Cut the columns out of a payload; every value returned is a copy."""
    view = memoryview(raw)
    p = 8 * n
    timestamps = view[:p].cast("q").tolist()
    offsets = None
    if flags & FLAG_OFFSETS:
        offsets = _decode_offsets(view[p : p + 4 * n], n, first)
        p += 4 * n
    nulls = b""
    if flags & FLAG_NULLS:
        nulls = bytes(view[p : p + n])
        p += n
    headers: Sequence[Headers] | None = None
    if flags & FLAG_HEADERS:
        (blob_len,) = U32.unpack_from(raw, p)
        blob = view[p + 4 : p + 4 + blob_len]
        if len(blob) != blob_len:
            raise ValueError("headers column runs past the payload")
        headers = _decode_headers(blob, n)
        p += 4 + blob_len
    (shape_len,) = U32.unpack_from(raw, p)
    shape = bytes(view[p + 4 : p + 4 + shape_len])
    p += 4 + shape_len
    if len(shape) != shape_len:
        raise ValueError("record length column is cut short")
    cutter = _cutter(shape, 2 * n if flags & FLAG_KEYS else n)
    if cutter.size != len(raw) - p:
        raise ValueError(f"record lengths sum to {cutter.size}, data holds {len(raw) - p} bytes")
    fields = cutter.unpack_from(raw, p)
    keys: Sequence[bytes | None]
    values: Sequence[bytes | None]
    if flags & FLAG_KEYS:
        keys = fields[0::2]
        values = fields[1::2]
    else:
        keys = (None,) * n
        values = fields
    if nulls:
        if len(nulls) != n or nulls.translate(None, b"\x00\x01\x02\x03"):
            raise ValueError("null column is malformed")
        keys = list(keys)
        values = list(values)
        for i, bits in enumerate(nulls):
            if bits & NULL_KEY:
                if keys[i]:
                    raise ValueError(f"record {i} has a null key with a length")
                keys[i] = None
            if bits & NULL_VALUE:
                if values[i]:
                    raise ValueError(f"record {i} has a null value with a length")
                values[i] = None
    if not _bounded_by(timestamps, min_ts, max_ts):
        raise ValueError("timestamps disagree with the block header")
    return DecodedBlock(first, timestamps, keys, values, headers, offsets)


def _decode_offsets(column: memoryview, n: int, first: int) -> list[int]:
    """A gapped block's relative offsets: deltas from ``first``, 0 first, increasing."""
    if len(column) != 4 * n:
        raise ValueError("offsets column runs past the payload")
    deltas = column.cast("I").tolist()
    if deltas[0] != 0 or not all(map(operator.lt, deltas, itertools.islice(deltas, 1, None))):
        raise ValueError("offsets column is not increasing from 0")
    if first + deltas[-1] > MAX_OFFSET_DELTA:
        raise ValueError("offsets column runs past 2**32")
    return [first + d for d in deltas] if first else deltas


def _bounded_by(timestamps: list[int], low: int, high: int) -> bool:
    """Whether the smallest timestamp is ``low`` and the largest ``high``.

    Blocks are usually in time order; for them timsort only confirms the
    order (9 ns a record, against 26 for min() and max()).
    """
    if not timestamps:
        return True
    if timestamps[0] == low and timestamps[-1] == high:
        ordered = sorted(timestamps)
        return ordered[0] == low and ordered[-1] == high
    return min(timestamps) == low and max(timestamps) == high


# The last shape's compiled Struct: blocks of fixed-size records repeat their
# shape, and compiling one costs about 20 ns a field. One entry bounds the
# memory (a compiled shape takes 32 bytes a field).
_last_cutter: tuple[bytes, int, struct.Struct] = (b"", 0, struct.Struct(""))


def _cutter(shape: bytes, items: int) -> struct.Struct:
    """The Struct that cuts ``items`` fields as ``shape`` says, checked once per shape."""
    global _last_cutter
    last_shape, last_items, cutter = _last_cutter
    if shape != last_shape or items != last_items:
        # Only digits and "s": any other struct code would yield something
        # other than bytes. The count here and the total size check after
        # close the rest.
        if shape.translate(None, SHAPE_CHARS) or shape.count(b"s") != items:
            raise ValueError("record length column is malformed")
        cutter = struct.Struct(shape.decode("ascii"))
        _last_cutter = (shape, items, cutter)
    return cutter


def _decode_headers(blob: memoryview, n: int) -> list[Headers]:
    out: list[Headers] = []
    p = 0
    end = len(blob)
    for _ in range(n):
        (count,) = HEADER_COUNT.unpack_from(blob, p)
        p += 2
        record: list[tuple[str, bytes]] = []
        for _ in range(count):
            (klen,) = HEADER_KEY_LEN.unpack_from(blob, p)
            key = str(blob[p + 2 : p + 2 + klen], "utf-8")
            p += 2 + klen
            (vlen,) = U32.unpack_from(blob, p)
            value = bytes(blob[p + 4 : p + 4 + vlen])
            p += 4 + vlen
            if p > end:
                raise ValueError("a header runs past the headers column")
            record.append((key, value))
        out.append(tuple(record))
    if p != end:
        raise ValueError("headers column has trailing bytes")
    return out


def decode_segment(
    data: bytes | memoryview,
    *,
    name: str = "<segment>",
    base: int = 0,
    from_offset: int = 0,
) -> list[DecodedBlock]:
    """Decode a whole segment, or everything from a relative offset on.

    See :func:`iter_segment`, which this collects into a list.
    """
    return list(iter_segment(data, name=name, base=base, from_offset=from_offset))


def iter_segment(
    data: bytes | memoryview,
    *,
    name: str = "<segment>",
    base: int = 0,
    from_offset: int = 0,
) -> Iterator[DecodedBlock]:
    """Decode a segment block by block, each when it is asked for.

    The index and footer are checked before the first block is yielded.
    Decoding lazily keeps each block's records hot in the CPU cache while the
    caller uses them, which matters more than any other cost at this size.

    Args:
        data: exactly the segment's bytes.
        name: the object the bytes came from, for error messages.
        base: the byte position of the segment within that object.
        from_offset: the first relative offset wanted; earlier blocks are
            not decoded, and the first block is cut to start there.

    Raises:
        CorruptDataError: any check fails.
    """
    view = memoryview(data)
    index = read_index(view, segment_length=len(view), name=name, base=base)
    return _iter_blocks(view, index, name, base, from_offset)


def _iter_blocks(
    view: memoryview, index: SegmentIndex, name: str, base: int, from_offset: int
) -> Iterator[DecodedBlock]:
    first_block = index.block_for(max(from_offset, 0))
    for entry in index.entries[first_block:]:
        block = decode_block(
            view[: entry.position + entry.size], entry.position, name=name, base=base, entry=entry
        )
        yield block.since(from_offset)
