"""Segment encode and decode: pure functions, no I/O.

The byte layout is described in docs/FORMAT.md, which is the single
description of the bytes; this module is its implementation.

Why the layout looks the way it does
------------------------------------
A Python decoder pays for every Python-level step it takes per record, so the
layout is built for a decoder that takes almost none. Each block is columnar:
timestamps are an i64 array (``memoryview.cast('q').tolist()`` turns them into
ints in C), offsets are implicit (``range``), and the lengths of every key and
value are stored as a ready-made ``struct`` format such as ``"16s100s16s100s"``.
One ``struct.Struct(shape).unpack_from(payload)`` call then cuts every key and
value out of the block in C. Building a list of slices in Python instead costs
about three times as much; turning a binary length column into such a format
at decode time costs more than the slices. The shape text is about as large as
two i32 columns and compresses to almost nothing.

Every field that can be corrupted is covered by a CRC32C (block header,
payload, index, footer) or by a bound check, so any flipped byte or truncation
is detected and reported as :class:`CorruptDataError` naming the object, the
byte position and what failed.
"""

from __future__ import annotations

import array
import bisect
import enum
import itertools
import operator
import struct
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Final

import attrs
import crc32c as _crc32c_mod
import lz4.block
import zstandard

from ._errors import CorruptDataError

__all__ = [
    "BLOCK_HEADER_SIZE",
    "FOOTER_SIZE",
    "INDEX_ENTRY_SIZE",
    "Codec",
    "DecodedBlock",
    "EncodedSegment",
    "Headers",
    "IndexEntry",
    "SegmentIndex",
    "decode_block",
    "decode_segment",
    "encode_segment",
    "iter_segment",
    "read_index",
]

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("streamhouse's segment codec needs a little-endian machine")

Headers = tuple[tuple[str, bytes], ...]

_crc32c = _crc32c_mod.crc32c

BLOCK_MAGIC: Final = b"SHB1"
SEGMENT_MAGIC: Final = b"SHSG"
FORMAT_VERSION: Final = 1

# magic, header_crc, payload_crc, codec, flags, reserved, record_count,
# first_offset_delta, min_timestamp, max_timestamp, stored_size, raw_size
_BLOCK_HEADER = struct.Struct("<4sIIBBHIIqqII")
BLOCK_HEADER_SIZE: Final = _BLOCK_HEADER.size  # 48
# first_offset_delta, record_count, position, size, reserved, min_ts, max_ts
_INDEX_ENTRY = struct.Struct("<IIQIIqq")
INDEX_ENTRY_SIZE: Final = _INDEX_ENTRY.size  # 40
# index_position, record_count, block_count, index_crc, version, reserved,
# footer_crc, magic
_FOOTER = struct.Struct("<QQIIHHI4s")
FOOTER_SIZE: Final = _FOOTER.size  # 36
_U32 = struct.Struct("<I")
_HEADER_COUNT = struct.Struct("<H")
_HEADER_KEY_LEN = struct.Struct("<H")

FLAG_KEYS: Final = 0x01
FLAG_HEADERS: Final = 0x02
FLAG_NULLS: Final = 0x04
_KNOWN_FLAGS: Final = FLAG_KEYS | FLAG_HEADERS | FLAG_NULLS

NULL_KEY: Final = 0x01
NULL_VALUE: Final = 0x02

# Bounds that keep a corrupt length field from asking for unbounded memory.
# The block header is checksummed before any of these fields is trusted, so
# they only matter against deliberately crafted input; they also bound what
# the encoder produces.
MAX_BLOCK_RAW_SIZE: Final = 256 * 2**20
MAX_BLOCK_RECORDS: Final = 2**24
DEFAULT_BLOCK_BYTES: Final = 1 * 2**20
_SHAPE_CHARS: Final = b"0123456789s"


class Codec(enum.IntEnum):
    """Compression of a block's payload."""

    NONE = 0
    LZ4 = 1
    ZSTD = 2

    @classmethod
    def parse(cls, value: Codec | str | int) -> Codec:
        """Accept a Codec, its name (``"lz4"``) or its number."""
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                names = ", ".join(c.name.lower() for c in cls)
                raise ValueError(f"unknown compression {value!r}; use one of {names}") from None
        return cls(value)


# zstandard's (de)compressor objects are expensive to create and not safe to
# share between threads; blocks are encoded in worker threads, so keep one
# pair per thread.
_zstd_local = threading.local()


def _zstd_compressor() -> zstandard.ZstdCompressor:
    comp = getattr(_zstd_local, "comp", None)
    if comp is None:
        comp = _zstd_local.comp = zstandard.ZstdCompressor(level=3)
    return comp


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_zstd_local, "dec", None)
    if dec is None:
        dec = _zstd_local.dec = zstandard.ZstdDecompressor()
    return dec


def _compress(codec: Codec, raw: bytes) -> bytes:
    if codec is Codec.LZ4:
        return bytes(lz4.block.compress(raw, store_size=False))
    if codec is Codec.ZSTD:
        return bytes(_zstd_compressor().compress(raw))
    return raw


@attrs.frozen
class IndexEntry:
    """Where one block sits in its segment, and what it holds."""

    first_offset_delta: int
    record_count: int
    position: int
    size: int
    min_timestamp: int
    max_timestamp: int

    @property
    def end_offset_delta(self) -> int:
        """One past the relative offset of the block's last record."""
        return self.first_offset_delta + self.record_count


@attrs.frozen
class SegmentIndex:
    """A segment's block index, read from its tail.

    Attributes:
        entries: one per block, in offset order, tiling ``[0, index_position)``.
        record_count: records in the whole segment.
        index_position: where the index starts (= total size of the blocks).
        length: the whole segment's length in bytes.
    """

    entries: tuple[IndexEntry, ...]
    record_count: int
    index_position: int
    length: int

    @property
    def tail_length(self) -> int:
        """Bytes of index + footer at the end of the segment."""
        return self.length - self.index_position

    def block_for(self, relative_offset: int) -> int:
        """Return the index of the block holding ``relative_offset``.

        Raises:
            IndexError: the offset is not in this segment.
        """
        if not 0 <= relative_offset < self.record_count:
            raise IndexError(f"offset {relative_offset} is outside 0..{self.record_count - 1}")
        firsts = [e.first_offset_delta for e in self.entries]
        return bisect.bisect_right(firsts, relative_offset) - 1


@attrs.frozen
class DecodedBlock:
    """The records of one block, as columns.

    ``keys`` and ``values`` hold bytes or None; ``headers`` is None when no
    record of the block has headers. Offsets are relative to the segment's
    base offset: record ``i`` has ``first_offset_delta + i``.
    """

    first_offset_delta: int
    timestamps: list[int]
    keys: Sequence[bytes | None]
    values: Sequence[bytes | None]
    headers: Sequence[Headers] | None

    @property
    def record_count(self) -> int:
        return len(self.timestamps)

    def rows(self, base_offset: int = 0) -> list[tuple[int, int, bytes | None, bytes | None]]:
        """Return ``(offset, timestamp, key, value)`` tuples, built in C."""
        first = base_offset + self.first_offset_delta
        return list(
            zip(
                range(first, first + len(self.timestamps)),
                self.timestamps,
                self.keys,
                self.values,
                strict=True,
            )
        )

    def since(self, relative_offset: int) -> DecodedBlock:
        """Return this block without the records before ``relative_offset``."""
        skip = relative_offset - self.first_offset_delta
        if skip <= 0:
            return self
        return DecodedBlock(
            first_offset_delta=relative_offset,
            timestamps=self.timestamps[skip:],
            keys=self.keys[skip:],
            values=self.values[skip:],
            headers=None if self.headers is None else self.headers[skip:],
        )


@attrs.frozen
class EncodedSegment:
    """An encoded segment and the facts its metadata row needs."""

    data: bytes
    record_count: int
    index_length: int
    min_timestamp: int
    max_timestamp: int


# ---------------------------------------------------------------------------
# Encoding


def _encode_headers(headers: Sequence[Headers | None]) -> bytes:
    out = bytearray()
    for record_headers in headers:
        items = record_headers or ()
        out += _HEADER_COUNT.pack(len(items))
        for key, value in items:
            kb = key.encode("utf-8")
            out += _HEADER_KEY_LEN.pack(len(kb))
            out += kb
            out += _U32.pack(len(value))
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
    first_offset_delta: int,
    codec: Codec,
) -> tuple[bytes, IndexEntry]:
    n = len(timestamps)
    flags = 0
    parts: list[bytes] = [_pack_i64(timestamps)]
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
        parts.append(_U32.pack(len(blob)))
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
    parts.append(_U32.pack(len(shape)))
    parts.append(shape)
    parts.append(data)
    raw = b"".join(parts)
    if len(raw) > MAX_BLOCK_RAW_SIZE:
        raise ValueError(
            f"a block of {n} records is {len(raw)} bytes; the limit is {MAX_BLOCK_RAW_SIZE}"
        )
    stored = _compress(codec, raw)
    min_ts = min(timestamps)
    max_ts = max(timestamps)
    header_tail = _BLOCK_HEADER.pack(
        BLOCK_MAGIC,
        0,
        _crc32c(stored),
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
    header = BLOCK_MAGIC + _U32.pack(_crc32c(header_tail)) + header_tail
    block = header + stored
    entry = IndexEntry(first_offset_delta, n, 0, len(block), min_ts, max_ts)
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
    codec: Codec | str = Codec.LZ4,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> EncodedSegment:
    """Encode one partition's records into a segment.

    The records are given as columns of equal length: record ``i`` has
    ``timestamps[i]``, ``keys[i]``, ``values[i]`` and ``headers[i]``. Offsets
    are not stored per record: record ``i`` gets the relative offset ``i``,
    and the metadata store assigns the segment's base offset at commit.

    Args:
        timestamps: milliseconds since the epoch, any order, as i64.
        keys: bytes or None for each record; None for the column = no keys.
        values: bytes or None for each record.
        headers: a sequence of ``(str, bytes)`` pairs (or None) per record.
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
            lo,
            codec,
        )
        blocks.append(block)
        entries.append(attrs.evolve(entry, position=position))
        position += len(block)
    index = b"".join(
        _INDEX_ENTRY.pack(
            e.first_offset_delta,
            e.record_count,
            e.position,
            e.size,
            0,
            e.min_timestamp,
            e.max_timestamp,
        )
        for e in entries
    )
    footer_head = _FOOTER.pack(
        position, n, len(entries), _crc32c(index), FORMAT_VERSION, 0, 0, SEGMENT_MAGIC
    )[:28]
    footer = footer_head + _U32.pack(_crc32c(footer_head)) + SEGMENT_MAGIC
    blocks.append(index)
    blocks.append(footer)
    return EncodedSegment(
        data=b"".join(blocks),
        record_count=n,
        index_length=len(index) + len(footer),
        min_timestamp=min(e.min_timestamp for e in entries),
        max_timestamp=max(e.max_timestamp for e in entries),
    )


# ---------------------------------------------------------------------------
# Decoding


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
        _FOOTER.unpack_from(tail, footer_pos)
    )
    where = tail_start + footer_pos
    if magic != SEGMENT_MAGIC:
        raise CorruptDataError(name, where + 32, f"bad segment magic {bytes(magic)!r}")
    if footer_crc != _crc32c(tail[footer_pos : footer_pos + 28]):
        raise CorruptDataError(name, where, "footer checksum mismatch")
    if version != FORMAT_VERSION:
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
    if _crc32c(index) != index_crc:
        raise CorruptDataError(name, tail_start + index_start, "index checksum mismatch")
    entries = []
    expected_position = 0
    expected_offset = 0
    for i, fields in enumerate(_INDEX_ENTRY.iter_unpack(index)):
        first, count, position, size, reserved_entry, min_ts, max_ts = fields
        if (
            first != expected_offset
            or position != expected_position
            or count == 0
            or size <= BLOCK_HEADER_SIZE
            or reserved_entry
            or min_ts > max_ts
        ):
            raise CorruptDataError(
                name,
                tail_start + index_start + i * INDEX_ENTRY_SIZE,
                f"index entry {i} is inconsistent",
            )
        entries.append(IndexEntry(first, count, position, size, min_ts, max_ts))
        expected_position += size
        expected_offset += count
    if expected_position != index_position or expected_offset != record_count:
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
    ) = _BLOCK_HEADER.unpack_from(view, pos)
    if magic != BLOCK_MAGIC:
        raise CorruptDataError(name, where, f"bad block magic {bytes(magic)!r}")
    if header_crc != _crc32c(view[pos + 8 : pos + BLOCK_HEADER_SIZE]):
        raise CorruptDataError(name, where + 4, "block header checksum mismatch")
    if codec not in (0, 1, 2) or flags & ~_KNOWN_FLAGS or reserved:
        raise CorruptDataError(name, where + 12, f"unknown codec {codec} or flags {flags:#x}")
    if not 0 < n <= MAX_BLOCK_RECORDS or raw_size > MAX_BLOCK_RAW_SIZE or raw_size < 8 * n:
        raise CorruptDataError(
            name, where + 16, f"implausible block: {n} records in {raw_size} bytes"
        )
    if entry is not None and (
        entry.first_offset_delta != first
        or entry.record_count != n
        or entry.size != BLOCK_HEADER_SIZE + stored_size
        or entry.min_timestamp != min_ts
        or entry.max_timestamp != max_ts
    ):
        raise CorruptDataError(name, where, "block header disagrees with the segment index")
    # What a codec can expand to bounds what decompression may allocate:
    # nothing for none, 255x for an lz4 block. zstd can legitimately expand
    # further, so only MAX_BLOCK_RAW_SIZE bounds it.
    if (codec == Codec.NONE and raw_size != stored_size) or (
        codec == Codec.LZ4 and raw_size > 255 * stored_size + 64
    ):
        raise CorruptDataError(
            name, where + 40, f"{stored_size} stored bytes cannot hold {raw_size} raw bytes"
        )
    start = pos + BLOCK_HEADER_SIZE
    stored = view[start : start + stored_size]
    if len(stored) != stored_size:
        raise CorruptDataError(
            name,
            where + BLOCK_HEADER_SIZE,
            f"truncated block payload: {len(stored)} of {stored_size} bytes",
        )
    if _crc32c(stored) != payload_crc:
        raise CorruptDataError(name, where + BLOCK_HEADER_SIZE, "block payload checksum mismatch")
    try:
        if codec == Codec.LZ4:
            raw = lz4.block.decompress(stored, uncompressed_size=raw_size)
        elif codec == Codec.ZSTD:
            raw = _zstd_decompressor().decompress(stored, max_output_size=raw_size)
        else:
            raw = bytes(stored)
    except Exception as exc:  # lz4 and zstd raise their own error types
        raise CorruptDataError(
            name, where + BLOCK_HEADER_SIZE, f"cannot decompress {Codec(codec).name}: {exc}"
        ) from exc
    if len(raw) != raw_size:
        raise CorruptDataError(
            name, where + BLOCK_HEADER_SIZE, f"payload is {len(raw)} bytes, header says {raw_size}"
        )
    try:
        return _decode_payload(raw, n, first, flags, min_ts, max_ts)
    except (struct.error, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise CorruptDataError(name, where + BLOCK_HEADER_SIZE, f"bad payload: {exc}") from exc


def _decode_payload(
    raw: bytes, n: int, first: int, flags: int, min_ts: int, max_ts: int
) -> DecodedBlock:
    view = memoryview(raw)
    p = 8 * n
    timestamps = view[:p].cast("q").tolist()
    nulls = b""
    if flags & FLAG_NULLS:
        nulls = raw[p : p + n]
        p += n
    headers: Sequence[Headers] | None = None
    if flags & FLAG_HEADERS:
        (blob_len,) = _U32.unpack_from(raw, p)
        blob = view[p + 4 : p + 4 + blob_len]
        if len(blob) != blob_len:
            raise ValueError("headers column runs past the payload")
        headers = _decode_headers(blob, n)
        p += 4 + blob_len
    (shape_len,) = _U32.unpack_from(raw, p)
    shape = raw[p + 4 : p + 4 + shape_len]
    p += 4 + shape_len
    items = 2 * n if flags & FLAG_KEYS else n
    # Only digits and "s": any other struct code would yield something other
    # than bytes. The count and total size checks below close the rest.
    if len(shape) != shape_len or shape.translate(None, _SHAPE_CHARS) or shape.count(b"s") != items:
        raise ValueError("record length column is malformed")
    cutter = struct.Struct(shape.decode("ascii"))
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
    if timestamps and (min(timestamps) != min_ts or max(timestamps) != max_ts):
        raise ValueError("timestamps disagree with the block header")
    return DecodedBlock(first, timestamps, keys, values, headers)


def _decode_headers(blob: memoryview, n: int) -> list[Headers]:
    out: list[Headers] = []
    p = 0
    end = len(blob)
    for _ in range(n):
        (count,) = _HEADER_COUNT.unpack_from(blob, p)
        p += 2
        record: list[tuple[str, bytes]] = []
        for _ in range(count):
            (klen,) = _HEADER_KEY_LEN.unpack_from(blob, p)
            key = str(blob[p + 2 : p + 2 + klen], "utf-8")
            p += 2 + klen
            (vlen,) = _U32.unpack_from(blob, p)
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
    if from_offset >= index.record_count:
        return
    first_block = index.block_for(max(from_offset, 0))
    for entry in index.entries[first_block:]:
        block = decode_block(
            view[: entry.position + entry.size], entry.position, name=name, base=base, entry=entry
        )
        yield block.since(from_offset)
