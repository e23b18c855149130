"""Rewriting segments: read them as columns, write new ones, swap them in.

Compaction and merging both end the same way: records of some consecutive
segments of one partition (all of them, or those compaction keeps) become
one new segment in an object of its own, covering exactly the offsets of
the segments it replaces, then one fenced transaction swaps the catalogue
rows (``replace_segments``). The order makes a kill at any moment safe:

1. the new object is uploaded under a fresh key: until step 2 it is an
   orphan nobody reads (the orphan sweep deletes it if we die here);
2. the swap commits: readers that look the segments up from now on read
   the new object, with the same records at the same offsets (less what
   compaction removed); the old objects are released;
3. the old objects are deleted a grace period later by a pass's garbage
   sweep, so a reader that looked them up before the swap finishes reading.

Decoding and encoding are CPU work: they run in a worker thread, so that a
maintainer inside an application does not stall its event loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.to_thread
import attrs

from .._codec import Codec, Headers, encode_segment, iter_segment
from .._errors import LeaseLostError, raise_as_one
from .._metadata.protocol import MaintenanceLease, MetadataStore, SegmentInfo
from .._storage.keys import new_object_key
from .._storage.protocol import ObjectStore

__all__ = ["Records", "fetch_segments", "read_records", "swap_in"]

# Segments fetched at once: enough to hide a GET's latency behind the others.
_FETCHES = 16


@attrs.define(eq=False)
class Records:
    """Records of one partition as columns, with their absolute offsets."""

    offsets: list[int] = attrs.Factory(list)
    timestamps: list[int] = attrs.Factory(list)
    keys: list[bytes | None] = attrs.Factory(list)
    values: list[bytes | None] = attrs.Factory(list)
    headers: list[Headers] = attrs.Factory(list)

    def __len__(self) -> int:
        return len(self.offsets)

    def extend(self, other: Records) -> None:
        self.offsets += other.offsets
        self.timestamps += other.timestamps
        self.keys += other.keys
        self.values += other.values
        self.headers += other.headers

    def keep(self, mask: Sequence[bool]) -> Records:
        """The records whose ``mask`` entry is true."""
        pick = [i for i, kept in enumerate(mask) if kept]
        return Records(
            [self.offsets[i] for i in pick],
            [self.timestamps[i] for i in pick],
            [self.keys[i] for i in pick],
            [self.values[i] for i in pick],
            [self.headers[i] for i in pick],
        )

    def size(self) -> int:
        """Bytes of keys and values (what the producer's batch size counts)."""
        return sum(len(k) for k in self.keys if k) + sum(len(v) for v in self.values if v)


def read_records(data: bytes, seg: SegmentInfo) -> Records:
    """Decode a whole segment's bytes (CPU work: call it in a worker thread)."""
    out = Records()
    for block in iter_segment(data, name=seg.object_key, base=seg.position):
        base = seg.base_offset
        out.offsets += [base + o for o in block.relative_offsets()]
        out.timestamps += block.timestamps
        out.keys += block.keys
        out.values += block.values
        out.headers += block.headers or [()] * block.record_count
    return out


async def fetch_segments(storage: ObjectStore, segments: Sequence[SegmentInfo]) -> list[bytes]:
    """The bytes of each segment, several GETs at a time, in order."""
    out: list[bytes] = [b""] * len(segments)
    limiter = anyio.CapacityLimiter(_FETCHES)

    async def fetch(i: int, seg: SegmentInfo) -> None:
        async with limiter:
            out[i] = await storage.get(seg.object_key, seg.position, seg.position + seg.length)

    try:
        async with anyio.create_task_group() as tg:
            for i, seg in enumerate(segments):
                tg.start_soon(fetch, i, seg)
    except BaseExceptionGroup as errors:
        raise_as_one(errors)
    return out


def _encode(
    records: Records, old: Sequence[SegmentInfo], key: str, codec: Codec
) -> tuple[bytes, SegmentInfo]:
    base, end = old[0].base_offset, old[-1].end_offset
    headers = records.headers if any(records.headers) else None
    segment = encode_segment(
        records.timestamps,
        records.keys,
        records.values,
        headers,
        offsets=[o - base for o in records.offsets],
        codec=codec,
    )
    info = SegmentInfo(
        old[0].topic, old[0].partition, base, segment.record_count, key, 0, len(segment.data),
        segment.index_length, segment.min_timestamp, segment.max_timestamp,
        end_offset=end, created_at=max(s.created_at for s in old),
    )  # fmt: skip
    return segment.data, info


async def swap_in(
    storage: ObjectStore,
    meta: MetadataStore,
    lease: MaintenanceLease,
    old: Sequence[SegmentInfo],
    records: Records,
    codec: Codec,
) -> int | None:
    """Replace the consecutive segments ``old`` of one partition by one holding
    ``records`` (none: they just go), covering the same offsets.

    Returns the bytes written (0 when nothing was), or None when the old
    segments were gone already (their topic was deleted): then nothing changed.

    Raises:
        LeaseLostError: the lease was lost; nothing changed (the new object,
            if written, is an orphan the orphan sweep deletes).
    """
    if not records:
        return 0 if await meta.replace_segments(lease, None, 0, old, []) else None
    key = new_object_key()
    data, info = await anyio.to_thread.run_sync(_encode, records, old, key, codec)
    await storage.put(key, data, if_absent=True)
    try:
        done = await meta.replace_segments(lease, key, len(data), old, [info])
    except LeaseLostError:
        await storage.delete(key)  # nobody knows of it
        raise
    if done:
        return len(data)
    await storage.delete(key)
    return None
