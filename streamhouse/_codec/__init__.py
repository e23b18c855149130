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

from .decode import decode_block as decode_block
from .decode import decode_segment as decode_segment
from .decode import iter_segment as iter_segment
from .decode import read_index as read_index
from .encode import encode_segment as encode_segment
from .format import BLOCK_HEADER_SIZE as BLOCK_HEADER_SIZE
from .format import FOOTER_SIZE as FOOTER_SIZE
from .format import INDEX_ENTRY_SIZE as INDEX_ENTRY_SIZE
from .format import MAX_OFFSET_DELTA as MAX_OFFSET_DELTA
from .format import Codec as Codec
from .format import DecodedBlock as DecodedBlock
from .format import EncodedSegment as EncodedSegment
from .format import Headers as Headers
from .format import IndexEntry as IndexEntry
from .format import SegmentIndex as SegmentIndex

__all__ = [
    "BLOCK_HEADER_SIZE",
    "FOOTER_SIZE",
    "INDEX_ENTRY_SIZE",
    "MAX_OFFSET_DELTA",
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
