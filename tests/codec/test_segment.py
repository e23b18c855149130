"""The segment codec: round trips, partial reads and every kind of corruption."""

from __future__ import annotations

import struct

import pytest

from streamhouse import CorruptDataError
from streamhouse._codec import (
    BLOCK_HEADER_SIZE,
    FOOTER_SIZE,
    INDEX_ENTRY_SIZE,
    Codec,
    decode_block,
    decode_segment,
    encode_segment,
    read_index,
)


def rows(data: bytes, base: int = 0, **kwargs: object) -> list[tuple[object, ...]]:
    return [row for block in decode_segment(data, **kwargs) for row in block.rows(base)]  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", list(Codec))
def test_records_round_trip_with_nulls_and_headers(codec: Codec) -> None:
    """Keys, values, headers and timestamps come back as written, nulls included."""
    ts = [5, 1, 9, 1_700_000_000_000]
    keys = [b"k1", None, b"", b"k4"]
    values = [b"v1", b"", None, b"x" * 5000]
    headers = [(("trace", b"1"),), None, (), (("a", b""), ("\u00e9", b"\xff"))]
    segment = encode_segment(ts, keys, values, headers, codec=codec)
    blocks = decode_segment(segment.data)
    assert [r for b in blocks for r in b.rows(100)] == [
        (100, 5, b"k1", b"v1"), (101, 1, None, b""), (102, 9, b"", None),
        (103, 1_700_000_000_000, b"k4", b"x" * 5000),
    ]  # fmt: skip
    assert [h for b in blocks for h in (b.headers or ())] == [
        (("trace", b"1"),), (), (), (("a", b""), ("\u00e9", b"\xff")),
    ]  # fmt: skip
    assert (segment.record_count, segment.min_timestamp, segment.max_timestamp) == (
        4, 1, 1_700_000_000_000,
    )  # fmt: skip


def test_keyless_records_store_no_key_column() -> None:
    """Records without keys decode with None keys."""
    segment = encode_segment([1, 2], None, [b"a", b"b"], codec="none")
    assert rows(segment.data) == [(0, 1, None, b"a"), (1, 2, None, b"b")]


def test_large_segments_are_cut_into_blocks_and_read_from_an_offset() -> None:
    """A segment holds many blocks; decoding from an offset skips earlier blocks."""
    n = 5000
    keys = [i.to_bytes(4, "big") for i in range(n)]
    values = [bytes([i % 251]) * (i % 300) for i in range(n)]
    segment = encode_segment(list(range(n)), keys, values, block_bytes=20_000)
    index = read_index(segment.data[-segment.index_length :], segment_length=len(segment.data),
                       name="obj")  # fmt: skip
    assert len(index.entries) > 10
    assert index.tail_length == segment.index_length
    assert rows(segment.data) == list(zip(range(n), range(n), keys, values, strict=True))
    tail = rows(segment.data, from_offset=3333)
    assert tail == list(zip(range(3333, n), range(3333, n), keys[3333:], values[3333:],
                            strict=True))  # fmt: skip
    assert rows(segment.data, from_offset=n) == []


def test_one_block_decodes_alone_with_its_index_entry() -> None:
    """A reader holding the index fetches and decodes a single block."""
    n = 2000
    segment = encode_segment([7] * n, None, [b"v%d" % i for i in range(n)], block_bytes=4000)
    index = read_index(segment.data[-segment.index_length :], segment_length=len(segment.data),
                       name="obj")  # fmt: skip
    i = index.block_for(1234)
    entry = index.entries[i]
    block_bytes = segment.data[entry.position : entry.position + entry.size]
    block = decode_block(block_bytes, name="obj", base=entry.position, entry=entry)
    assert entry.first_offset_delta <= 1234 < entry.end_offset_delta
    assert block.since(1234).rows(0)[0] == (1234, 7, None, b"v1234")


def test_a_record_larger_than_a_block_gets_its_own() -> None:
    """A record larger than the block target is a block of its own."""
    values = [b"a", b"b" * 100_000, b"c"]
    segment = encode_segment([1, 2, 3], None, values, block_bytes=1000)
    index = read_index(segment.data, segment_length=len(segment.data), name="x")
    assert [e.record_count for e in index.entries] == [1, 1, 1]
    assert [r[3] for r in rows(segment.data)] == values


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timestamps": [], "keys": None, "values": []}, "at least one record"),
        ({"timestamps": [1, 2], "keys": None, "values": [b"a"]}, "same length"),
        ({"timestamps": [1], "keys": None, "values": ["text"]}, "must be bytes"),
        ({"timestamps": [2**63], "keys": None, "values": [b"a"]}, "64-bit"),
    ],
)
def test_bad_input_to_the_encoder_is_refused(kwargs: dict[str, object], message: str) -> None:
    """The encoder refuses malformed columns with an error saying what is wrong."""
    with pytest.raises((ValueError, TypeError), match=message):
        encode_segment(**kwargs)  # type: ignore[arg-type]


@pytest.fixture
def segment() -> bytes:
    n = 300
    return encode_segment(list(range(n)), [b"k"] * n, [b"value"] * n, block_bytes=1000).data


def test_a_flipped_payload_byte_names_object_and_position(segment: bytes) -> None:
    """A flipped payload byte fails the payload checksum at the block's position."""
    broken = bytearray(segment)
    broken[BLOCK_HEADER_SIZE + 3] ^= 0x10
    with pytest.raises(CorruptDataError) as caught:
        decode_segment(bytes(broken), name="topic/obj-1", base=4096)
    error = caught.value
    assert error.name == "topic/obj-1"
    assert error.position == 4096 + BLOCK_HEADER_SIZE
    assert "payload checksum" in str(error)
    assert "topic/obj-1" in str(error)


def test_a_truncated_segment_is_detected(segment: bytes) -> None:
    """Cutting bytes off the end breaks the footer."""
    with pytest.raises(CorruptDataError, match="segment magic"):
        decode_segment(segment[:-1])
    with pytest.raises(CorruptDataError, match="too short"):
        decode_segment(segment[:10])


def test_an_unknown_version_is_named(segment: bytes) -> None:
    """A footer of another format version is refused with its version number."""
    import crc32c

    broken = bytearray(segment)
    footer = len(broken) - FOOTER_SIZE
    struct.pack_into("<H", broken, footer + 24, 3)
    struct.pack_into("<I", broken, footer + 28, crc32c.crc32c(bytes(broken[footer : footer + 28])))
    with pytest.raises(CorruptDataError, match="unknown segment format version 3"):
        decode_segment(bytes(broken))


def test_a_wrong_range_is_detected(segment: bytes) -> None:
    """Bytes from the wrong place (a shifted range) fail a check."""
    with pytest.raises(CorruptDataError):
        decode_segment(segment[1:] + b"\0")
    with pytest.raises(CorruptDataError, match="block magic"):
        decode_block(segment, 5)


def test_index_tail_must_reach_back_to_the_index(segment: bytes) -> None:
    """Reading the index from too short a tail says so."""
    with pytest.raises(CorruptDataError, match="do not reach back"):
        read_index(segment[-FOOTER_SIZE - INDEX_ENTRY_SIZE :], segment_length=len(segment),
                   name="x")  # fmt: skip


@pytest.mark.parametrize("codec", list(Codec))
def test_records_with_offset_gaps_round_trip(codec: Codec) -> None:
    """Records with gaps between their offsets come back at those offsets."""
    offsets = [3, 4, 5, 9, 10, 200, 201, 202, 5000]
    n = len(offsets)
    segment = encode_segment(
        list(range(n)), [b"k%d" % o for o in offsets], [b"v" * 30] * n,
        offsets=offsets, codec=codec, block_bytes=100,
    )  # fmt: skip
    assert (segment.record_count, segment.end_offset_delta) == (n, 5001)
    assert [r[0] for r in rows(segment.data, base=1000)] == [1000 + o for o in offsets]
    assert [r[2] for r in rows(segment.data)] == [b"k%d" % o for o in offsets]
    # From an offset inside a gap: the next record on.
    assert [r[0] for r in rows(segment.data, from_offset=6)] == [9, 10, 200, 201, 202, 5000]
    assert [r[0] for r in rows(segment.data, from_offset=203)] == [5000]
    assert rows(segment.data, from_offset=5001) == []
    index = read_index(segment.data, segment_length=len(segment.data), name="x")
    assert index.entries[0].first_offset_delta == 3
    assert index.entries[-1].end_offset_delta == 5001
    assert index.block_for(0) == 0
    assert index.block_for(5001) == len(index.entries)


def test_only_gapped_blocks_carry_an_offset_column() -> None:
    """A block whose records are consecutive stores no offsets, even in a gapped segment."""
    offsets = [*range(0, 100), *range(150, 250)]
    segment = encode_segment([1] * 200, None, [b"x" * 10] * 200, offsets=offsets,
                             codec="none", block_bytes=700)  # fmt: skip
    index = read_index(segment.data, segment_length=len(segment.data), name="x")
    blocks = decode_segment(segment.data)
    assert [b.offsets is None for b in blocks] == [e.skipped == 0 for e in index.entries]
    assert sum(e.skipped for e in index.entries) == 50
    assert [o for b in blocks for o in b.relative_offsets()] == offsets
    gapped = next(b for b in blocks if b.offsets is not None)
    assert gapped.since(120).first_offset_delta == 150
    assert gapped.since(120).end_offset_delta == gapped.end_offset_delta
    ungapped = encode_segment([1] * 3, None, [b"a"] * 3, offsets=[7, 8, 9], codec="none")
    assert [b.offsets for b in decode_segment(ungapped.data)] == [None]
    assert [r[0] for r in rows(ungapped.data)] == [7, 8, 9]


def test_a_segment_without_gaps_stays_version_1() -> None:
    """Segments without gaps are written as version 1; gapped ones as version 2."""
    plain = encode_segment([1, 2], None, [b"a", b"b"], offsets=[0, 1]).data
    gapped = encode_segment([1, 2], None, [b"a", b"b"], offsets=[0, 2]).data
    assert struct.unpack_from("<H", plain, len(plain) - FOOTER_SIZE + 24) == (1,)
    assert struct.unpack_from("<H", gapped, len(gapped) - FOOTER_SIZE + 24) == (2,)


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        ([0, 0], "strictly increasing"),
        ([2, 1], "strictly increasing"),
        ([-1, 0], "in \\[0, 2\\*\\*32\\)"),
        ([0, 2**32], "in \\[0, 2\\*\\*32\\)"),
        ([0], "1 offsets for 2 records"),
        ([0, 1.5], "must be ints"),
    ],
)
def test_bad_offsets_are_refused(offsets: list[object], message: str) -> None:
    """The encoder refuses offsets that are not increasing u32 ints."""
    with pytest.raises(ValueError, match=message):
        encode_segment([1, 2], None, [b"a", b"b"], offsets=offsets)  # type: ignore[arg-type]


def test_a_version_1_index_with_gaps_is_refused() -> None:
    """A version-1 footer over a gapped index is corrupt, not read as consecutive."""
    import crc32c

    data = bytearray(encode_segment([1, 2], None, [b"a", b"b"], offsets=[0, 5]).data)
    footer = len(data) - FOOTER_SIZE
    struct.pack_into("<H", data, footer + 24, 1)
    struct.pack_into("<I", data, footer + 28, crc32c.crc32c(bytes(data[footer : footer + 28])))
    with pytest.raises(CorruptDataError, match="index entry 0 is inconsistent"):
        decode_segment(bytes(data))


def test_codec_names_parse() -> None:
    """Codecs are named as users write them; unknown names are refused."""
    assert Codec.parse("LZ4") is Codec.LZ4
    assert Codec.parse(2) is Codec.ZSTD
    with pytest.raises(ValueError, match="unknown compression 'snappy'"):
        Codec.parse("snappy")
