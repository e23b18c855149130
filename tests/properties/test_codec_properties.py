"""Properties of the segment codec: round trips, and no corruption goes unseen."""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import crc32c
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streamhouse import CorruptDataError
from streamhouse._codec import (
    BLOCK_HEADER_SIZE,
    decode_block,
    decode_segment,
    encode_segment,
)

from .strategies import codecs, offset_gaps, record_columns


def decoded(data: bytes, from_offset: int = 0) -> list[tuple[Any, ...]]:
    out = []
    for block in decode_segment(data, name="obj", from_offset=from_offset):
        headers = block.headers or [()] * block.record_count
        out += [(*row, h) for row, h in zip(block.rows(0), headers, strict=True)]
    return out


@given(columns=record_columns(), codec=codecs, block_bytes=st.integers(50, 20_000))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_any_records_round_trip_under_any_codec(
    columns: dict[str, list[Any]], codec: Any, block_bytes: int
) -> None:
    """decode(encode(records)) == records for any records, codec and block size."""
    segment = encode_segment(**columns, codec=codec, block_bytes=block_bytes)
    headers = columns["headers"] or [None] * len(columns["values"])
    expected = [
        (i, ts, k, v, tuple(h or ()))
        for i, (ts, k, v, h) in enumerate(
            zip(columns["timestamps"], columns["keys"], columns["values"], headers, strict=True)
        )
    ]
    assert decoded(segment.data) == expected
    assert segment.record_count == len(expected)
    assert segment.min_timestamp == min(columns["timestamps"])
    assert segment.max_timestamp == max(columns["timestamps"])


@given(
    columns=record_columns(),
    gaps=st.data(),
    codec=codecs,
    block_bytes=st.integers(50, 20_000),
    start=st.integers(0, 2000),
)
@settings(max_examples=100)
def test_records_with_gaps_round_trip_from_any_offset(
    columns: dict[str, list[Any]], gaps: st.DataObject, codec: Any, block_bytes: int, start: int
) -> None:
    """Records at any increasing offsets come back at them, read from any offset."""
    n = len(columns["values"])
    offsets = gaps.draw(offset_gaps(n))
    segment = encode_segment(**columns, offsets=offsets, codec=codec, block_bytes=block_bytes)
    headers = columns["headers"] or [None] * n
    expected = [
        (o, ts, k, v, tuple(h or ()))
        for o, ts, k, v, h in zip(
            offsets,
            columns["timestamps"],
            columns["keys"],
            columns["values"],
            headers,
            strict=True,
        )
    ]
    assert decoded(segment.data) == expected
    assert decoded(segment.data, from_offset=start) == [r for r in expected if r[0] >= start]
    assert segment.end_offset_delta == offsets[-1] + 1


@given(columns=record_columns(max_size=8), gaps=st.data(), codec=codecs, flip=st.integers(1, 255))
@settings(max_examples=25, deadline=None)
def test_every_single_byte_change_is_detected(
    columns: dict[str, list[Any]], gaps: st.DataObject, codec: Any, flip: int
) -> None:
    """Changing any one byte of a segment, gapped or not, makes decoding raise CorruptDataError."""
    columns["values"] = [v if v is None else v[:40] for v in columns["values"]]
    columns["keys"] = [k if k is None else k[:40] for k in columns["keys"]]
    offsets = gaps.draw(st.one_of(st.none(), offset_gaps(len(columns["values"]))))
    data = encode_segment(**columns, offsets=offsets, codec=codec, block_bytes=200).data
    for position in range(len(data)):
        broken = bytearray(data)
        broken[position] ^= flip
        with pytest.raises(CorruptDataError):
            decoded(bytes(broken))


@given(columns=record_columns(max_size=8), codec=codecs)
@settings(max_examples=25, deadline=None)
def test_every_truncation_is_detected(columns: dict[str, list[Any]], codec: Any) -> None:
    """Every prefix of a segment, and every suffix, is refused."""
    columns["values"] = [v if v is None else v[:40] for v in columns["values"]]
    data = encode_segment(**columns, codec=codec, block_bytes=200).data
    for cut in range(len(data)):
        with pytest.raises(CorruptDataError):
            decoded(data[:cut])
    for cut in range(1, len(data)):
        with pytest.raises(CorruptDataError):
            decoded(data[cut:])


@given(st.binary(max_size=4096))
@settings(max_examples=300, deadline=500)
def test_arbitrary_bytes_raise_only_our_error(data: bytes) -> None:
    """Arbitrary bytes given to the decoder raise CorruptDataError and nothing else."""
    with pytest.raises(CorruptDataError):
        decode_segment(data)
    with pytest.raises(CorruptDataError):
        decode_block(data)


_HEADER = struct.Struct("<4sIIBBHIIqqII")


@given(
    codec=st.integers(0, 3),
    flags=st.integers(0, 15),
    count=st.one_of(st.integers(0, 20), st.integers(0, 2**32 - 1)),
    raw_size=st.one_of(st.integers(0, 512), st.integers(2**20, 2**28), st.integers(0, 2**32 - 1)),
    payload=st.binary(max_size=512),
    first=st.integers(0, 2**32 - 1),
    times=st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1)),
)
@settings(max_examples=400)
def test_crafted_blocks_with_valid_checksums_never_overallocate(
    codec: int,
    flags: int,
    count: int,
    raw_size: int,
    payload: bytes,
    first: int,
    times: tuple[int, int],
) -> None:
    """A block whose checksums hold but whose fields lie never makes a large allocation.

    (zstd may expand further than any fixed ratio, so for it only the block
    size limit bounds the allocation; the property covers none and lz4.)
    """
    assume(codec != 2 or raw_size < 2**20)
    tail = _HEADER.pack(
        b"SHB1", 0, crc32c.crc32c(payload), codec, flags, 0, count, first, *times,
        len(payload), raw_size,
    )[8:]  # fmt: skip
    block = b"SHB1" + struct.pack("<I", crc32c.crc32c(tail)) + tail + payload
    assert len(block) == BLOCK_HEADER_SIZE + len(payload)
    tracemalloc.start()
    try:
        decode_block(block, name="crafted")
    except CorruptDataError as exc:
        error: CorruptDataError | None = exc
    else:
        error = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert error is None or error.name == "crafted"
    assert peak < 1_000_000 + 64 * len(block)
