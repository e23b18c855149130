"""The segment layout (docs/FORMAT.md): constants, struct shapes, value types.

Shared by ``encode`` and ``decode``; the package (``_codec``) is the facade
the rest of StreamHouse imports.
"""

from __future__ import annotations

import bisect
import enum
import struct
import sys
import threading
from collections.abc import Sequence
from typing import Final

import attrs
import cramjam
import crc32c as _crc32c_mod
import zstandard

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("streamhouse's segment codec needs a little-endian machine")

Headers = tuple[tuple[str, bytes], ...]

crc32c = _crc32c_mod.crc32c

BLOCK_MAGIC: Final = b"SHB1"
SEGMENT_MAGIC: Final = b"SHSG"
FORMAT_VERSION: Final = 1
# Version 2 is version 1 plus offset gaps (FLAG_OFFSETS, an index entry's
# ``skipped``): written only for a segment that has gaps (compaction,
# merging across gaps), so that every other segment stays readable by a
# version-1 reader, and a version-1 reader refuses a gapped one by name.
GAPPED_FORMAT_VERSION: Final = 2
KNOWN_VERSIONS: Final = (FORMAT_VERSION, GAPPED_FORMAT_VERSION)

# magic, header_crc, payload_crc, codec, flags, reserved, record_count,
# first_offset_delta, min_timestamp, max_timestamp, stored_size, raw_size
BLOCK_HEADER = struct.Struct("<4sIIBBHIIqqII")
BLOCK_HEADER_SIZE: Final = BLOCK_HEADER.size  # 48
# first_offset_delta, record_count, position, size, skipped, min_ts, max_ts
INDEX_ENTRY = struct.Struct("<IIQIIqq")
INDEX_ENTRY_SIZE: Final = INDEX_ENTRY.size  # 40
# index_position, record_count, block_count, index_crc, version, reserved,
# footer_crc, magic
FOOTER = struct.Struct("<QQIIHHI4s")
FOOTER_SIZE: Final = FOOTER.size  # 36
U32 = struct.Struct("<I")
HEADER_COUNT = struct.Struct("<H")
HEADER_KEY_LEN = struct.Struct("<H")

FLAG_KEYS: Final = 0x01
FLAG_HEADERS: Final = 0x02
FLAG_NULLS: Final = 0x04
FLAG_OFFSETS: Final = 0x08  # version 2: an offsets column, the block has gaps
KNOWN_FLAGS: Final = FLAG_KEYS | FLAG_HEADERS | FLAG_NULLS | FLAG_OFFSETS
MAX_OFFSET_DELTA: Final = 2**32 - 1  # relative offsets are u32

NULL_KEY: Final = 0x01
NULL_VALUE: Final = 0x02

# Bounds that keep a corrupt length field from asking for unbounded memory.
# The block header is checksummed before any of these fields is trusted, so
# they only matter against deliberately crafted input; they also bound what
# the encoder produces.
MAX_BLOCK_RAW_SIZE: Final = 256 * 2**20
MAX_BLOCK_RECORDS: Final = 2**24
DEFAULT_BLOCK_BYTES: Final = 1 * 2**20
SHAPE_CHARS: Final = b"0123456789s"


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


def zstd_compressor() -> zstandard.ZstdCompressor:
    comp = getattr(_zstd_local, "comp", None)
    if comp is None:
        comp = _zstd_local.comp = zstandard.ZstdCompressor(level=3)
    return comp


def zstd_decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_zstd_local, "dec", None)
    if dec is None:
        dec = _zstd_local.dec = zstandard.ZstdDecompressor()
    return dec


def compress(codec: Codec, raw: bytes) -> bytes:
    if codec is Codec.LZ4:
        return bytes(cramjam.lz4.compress_block(raw, store_size=False))
    if codec is Codec.ZSTD:
        return bytes(zstd_compressor().compress(raw))
    return raw


@attrs.frozen
class IndexEntry:
    """Where one block sits in its segment, and what it holds.

    ``skipped`` counts the offsets between the block's first and last record
    that hold no record (compaction removed them); 0 for a block without gaps.
    """

    first_offset_delta: int
    record_count: int
    position: int
    size: int
    min_timestamp: int
    max_timestamp: int
    skipped: int = 0

    @property
    def end_offset_delta(self) -> int:
        """One past the relative offset of the block's last record."""
        return self.first_offset_delta + self.record_count + self.skipped


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
        """Return the index of the first block with a record at ``relative_offset`` or later.

        That is the block holding the offset, or after a gap the next one;
        ``len(entries)`` when no record of the segment is that late.

        Raises:
            IndexError: the offset is negative.
        """
        if relative_offset < 0:
            raise IndexError(f"relative offset {relative_offset} is negative")
        ends = [e.end_offset_delta for e in self.entries]
        return bisect.bisect_right(ends, relative_offset)


@attrs.frozen
class DecodedBlock:
    """The records of one block, as columns.

    ``keys`` and ``values`` hold bytes or None; ``headers`` is None when no
    record of the block has headers. Offsets are relative to the segment's
    base offset: record ``i`` has ``first_offset_delta + i``, unless the block
    has gaps; then ``offsets`` holds every record's relative offset
    (``offsets[0] == first_offset_delta``). Readers of ungapped blocks never
    pay for an offset column.
    """

    first_offset_delta: int
    timestamps: list[int]
    keys: Sequence[bytes | None]
    values: Sequence[bytes | None]
    headers: Sequence[Headers] | None
    offsets: Sequence[int] | None = None

    @property
    def record_count(self) -> int:
        return len(self.timestamps)

    @property
    def end_offset_delta(self) -> int:
        """One past the relative offset of the block's last record."""
        if self.offsets is not None and self.offsets:
            return self.offsets[-1] + 1
        return self.first_offset_delta + len(self.timestamps)

    def relative_offsets(self) -> Sequence[int]:
        """Every record's offset relative to the segment's base."""
        if self.offsets is not None:
            return self.offsets
        return range(self.first_offset_delta, self.first_offset_delta + len(self.timestamps))

    def rows(self, base_offset: int = 0) -> list[tuple[int, int, bytes | None, bytes | None]]:
        """Return ``(offset, timestamp, key, value)`` tuples, built in C."""
        if self.offsets is not None:
            offsets: Sequence[int] = [base_offset + o for o in self.offsets]
        else:
            first = base_offset + self.first_offset_delta
            offsets = range(first, first + len(self.timestamps))
        return list(zip(offsets, self.timestamps, self.keys, self.values, strict=True))

    def since(self, relative_offset: int) -> DecodedBlock:
        """Return this block without the records before ``relative_offset``."""
        if self.offsets is not None:
            skip = bisect.bisect_left(self.offsets, relative_offset)
            if skip == 0:
                return self
            rest = self.offsets[skip:]
            first = rest[0] if rest else relative_offset
        else:
            skip = relative_offset - self.first_offset_delta
            if skip <= 0:
                return self
            rest, first = None, relative_offset
        return DecodedBlock(
            first_offset_delta=first,
            timestamps=self.timestamps[skip:],
            keys=self.keys[skip:],
            values=self.values[skip:],
            headers=None if self.headers is None else self.headers[skip:],
            offsets=rest,
        )


@attrs.frozen
class EncodedSegment:
    """An encoded segment and the facts its metadata row needs.

    ``end_offset_delta`` is ``record_count`` unless the records have gaps.
    """

    data: bytes
    record_count: int
    index_length: int
    min_timestamp: int
    max_timestamp: int
    end_offset_delta: int  # one past the last record's relative offset
