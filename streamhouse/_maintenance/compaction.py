"""Key compaction: a compacted topic keeps the newest record of each key.

Kafka's log cleaner, on segments. Per partition:

- What is cleaned: the segments before the last one (the last is Kafka's
  active segment, still growing in spirit: a key written twice in a row
  keeps both there), up to the first segment committed within the grace
  period (a producer may still be retrying its commit). The last segment
  always keeps the partition's last record, so a reader always has a record
  at the end of the log to go to.
- The newest offset of every key in the *dirty* segments, those not cleaned
  before (the checkpoint's ``cleaned_offset``), supersedes every older record
  of the key, clean or dirty. The clean segments hold each key at most once
  already, so the map of the dirty keys is all a pass needs.
- A tombstone (a keyed record whose value is None) is kept for
  ``delete_retention_seconds`` after its segment was committed, so that a
  reader catching up sees the deletion; then it goes too.
- A record without a key (written before the topic became compacted) is
  never removed: it has no newer version to be replaced by.

Offsets never change: each run of consecutive segments that lose records is
rewritten into one new segment covering the same offsets, with gaps where
records went (``rewrite.swap_in``); a segment that loses nothing stays as it
is. A partition with no new dirty segment and no tombstone due is skipped
without a read.
"""

from __future__ import annotations

import functools
import math

import anyio.to_thread

from .._metadata.protocol import CompactionCheckpoint, SegmentInfo, TopicInfo
from .._types import CleanupPolicy
from .context import Pass, all_segments, per_partition
from .rewrite import Records, fetch_segments, read_records, swap_in

__all__ = ["compact_topic"]

# Segments read at once while walking a partition.
_CHUNK = 16
# The dirty segments are read twice (their keys, then their records); up to
# this many bytes of them are kept from the first read for the second.
_KEEP_BYTES = 64 * 2**20


async def compact_topic(ctx: Pass, topic: TopicInfo) -> None:
    """Compact every partition of ``topic`` that needs it (a compacted topic only)."""
    if topic.config.cleanup_policy is not CleanupPolicy.COMPACT:
        return
    checkpoints = await ctx.meta.compaction_checkpoints(topic.name)
    for partition, checkpoint in sorted(checkpoints.items()):
        compact = functools.partial(_Partition(ctx, topic, partition).compact, checkpoint)
        await per_partition(ctx, "compaction", topic.name, partition, compact)


class _Partition:
    def __init__(self, ctx: Pass, topic: TopicInfo, partition: int) -> None:
        self.ctx = ctx
        self.topic = topic
        self.partition = partition
        self.delete_after = topic.config.delete_retention_seconds
        self.group: list[tuple[SegmentInfo, Records, int]] = []  # segment, kept, removed
        self.group_bytes = 0
        self.oldest_tombstone = math.inf
        self.gone = False  # the topic was deleted under us
        self.kept: dict[int, bytes] = {}  # base offset -> bytes read in the first pass

    async def cleanable(self) -> list[SegmentInfo]:
        """The segments a pass may clean: all but the last, up to the first young one."""
        young = self.ctx.now - self.ctx.settings.grace
        segments = [s async for s in all_segments(self.ctx.meta, self.topic.name, self.partition)]
        out = []
        for seg in segments[:-1]:
            if seg.created_at > young:
                break
            out.append(seg)
        return out

    async def compact(self, checkpoint: CompactionCheckpoint) -> None:
        cleanable = await self.cleanable()
        if not cleanable:
            return
        dirty = [s for s in cleanable if s.end_offset > checkpoint.cleaned_offset]
        oldest = checkpoint.oldest_tombstone
        if not dirty and (oldest is None or oldest + self.delete_after > self.ctx.now):
            return
        newest = await self.newest_offsets(dirty)
        for start in range(0, len(cleanable), _CHUNK):
            chunk = cleanable[start : start + _CHUNK]
            for seg, data in zip(chunk, await self.fetch(chunk), strict=True):
                records = await anyio.to_thread.run_sync(read_records, data, seg)
                await self.clean(seg, records, newest)
                if self.gone:
                    return
        await self.flush()
        if self.gone:
            return
        tombstone = None if self.oldest_tombstone == math.inf else self.oldest_tombstone
        await self.ctx.meta.set_compaction_checkpoint(
            self.ctx.lease,
            self.topic.name,
            self.partition,
            CompactionCheckpoint(cleanable[-1].end_offset, tombstone),
        )

    async def fetch(self, segments: list[SegmentInfo]) -> list[bytes]:
        """The segments' bytes: kept from the first read, or fetched."""
        missing = [seg for seg in segments if seg.base_offset not in self.kept]
        fetched = dict(zip(missing, await fetch_segments(self.ctx.storage, missing), strict=True))
        return [
            self.kept.pop(seg.base_offset) if seg.base_offset in self.kept else fetched[seg]
            for seg in segments
        ]

    async def newest_offsets(self, dirty: list[SegmentInfo]) -> dict[bytes, int]:
        """The newest offset of every key in the dirty segments."""
        newest: dict[bytes, int] = {}
        keep = sum(seg.length for seg in dirty) <= _KEEP_BYTES
        for start in range(0, len(dirty), _CHUNK):
            chunk = dirty[start : start + _CHUNK]
            for seg, data in zip(chunk, await fetch_segments(self.ctx.storage, chunk), strict=True):
                if keep:
                    self.kept[seg.base_offset] = data
                records = await anyio.to_thread.run_sync(read_records, data, seg)
                newest.update(
                    (k, o)
                    for k, o in zip(records.keys, records.offsets, strict=True)
                    if k is not None
                )
        return newest

    async def clean(self, seg: SegmentInfo, records: Records, newest: dict[bytes, int]) -> None:
        """Keep what ``seg`` must keep; runs of segments that lose records are rewritten."""
        expired = seg.created_at + self.delete_after <= self.ctx.now
        keep = [
            key is None or (newest.get(key, offset) == offset and not (value is None and expired))
            for key, value, offset in zip(
                records.keys, records.values, records.offsets, strict=True
            )
        ]
        if all(keep):
            await self.flush()  # a segment that stays as it is ends a run
            self.note_tombstones(records, seg.created_at)
            return
        kept = records.keep(keep)
        self.group.append((seg, kept, len(records) - len(kept)))
        self.group_bytes += kept.size()
        if self.group_bytes >= self.ctx.settings.target_bytes:
            await self.flush()

    def note_tombstones(self, records: Records, created_at: float) -> None:
        if None in records.values and any(
            v is None and k is not None for k, v in zip(records.keys, records.values, strict=True)
        ):
            self.oldest_tombstone = min(self.oldest_tombstone, created_at)

    async def flush(self) -> None:
        """Rewrite the run of segments gathered so far into one."""
        group, self.group, self.group_bytes = self.group, [], 0
        if not group:
            return
        old = [seg for seg, _, _ in group]
        records = Records()
        for _, kept, _ in group:
            records.extend(kept)
        written = await swap_in(
            self.ctx.storage, self.ctx.meta, self.ctx.lease, old, records, self.ctx.settings.codec
        )
        if written is None:
            self.gone = True
            return
        # The new segment is as old as the newest it replaced: its tombstones
        # count from then.
        self.note_tombstones(records, max(seg.created_at for seg in old))
        tally = self.ctx.tally
        tally.segments_compacted += len(old)
        tally.records_removed += sum(removed for _, _, removed in group)
        tally.bytes_rewritten += sum(seg.length for seg in old)
        tally.bytes_written += written
        tally.objects_written += 1 if written else 0
