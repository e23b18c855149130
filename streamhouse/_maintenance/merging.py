"""Small-object merging: fewer, larger objects, so consumers make fewer GETs.

A producer flushing every ``linger`` writes many small objects; a consumer
reading a partition from the start makes one GET per segment, so a backlog
of a thousand small flushes costs a thousand GETs (and their latency) where
a few would do. Merging rewrites each run of consecutive small segments of
a partition (smaller than half the target) into segments of about the
target size (the producer's batch size), each in an object of its own,
with the same records at the same offsets (``rewrite.swap_in``). Segments
committed within the grace period are left alone: a producer may still be
retrying their commit, and more may come to merge them with.
"""

from __future__ import annotations

import contextlib

import anyio.to_thread

from .._codec.format import MAX_OFFSET_DELTA
from .._metadata.protocol import SegmentInfo, TopicInfo
from .context import Pass, all_segments
from .rewrite import Records, fetch_segments, read_records, swap_in

__all__ = ["merge_topic"]


async def merge_topic(ctx: Pass, topic: TopicInfo) -> None:
    """Merge the runs of small segments of every partition of ``topic``."""
    for state in await ctx.meta.partition_states([topic.name]):
        await _merge_partition(ctx, topic.name, state.partition)


async def _merge_partition(ctx: Pass, topic: str, partition: int) -> None:
    target = ctx.settings.target_bytes
    young = ctx.now - ctx.settings.grace
    group: list[SegmentInfo] = []
    size = 0
    async with contextlib.aclosing(all_segments(ctx.meta, topic, partition)) as segments:
        async for seg in segments:
            if seg.created_at > young:
                break
            small = seg.length < target // 2
            # A segment's offsets are u32 from its base.
            too_wide = group and seg.end_offset - group[0].base_offset > MAX_OFFSET_DELTA
            if not small or too_wide:
                if not await _merge(ctx, group):
                    return
                group, size = [], 0
            if small:
                group.append(seg)
                size += seg.length
                if size >= target:
                    if not await _merge(ctx, group):
                        return
                    group, size = [], 0
    await _merge(ctx, group)


async def _merge(ctx: Pass, group: list[SegmentInfo]) -> bool:
    """Merge ``group`` into one segment if it has two or more; False if the
    topic was deleted under us."""
    if len(group) < 2:
        return True
    records = Records()
    for seg, data in zip(group, await fetch_segments(ctx.storage, group), strict=True):
        records.extend(await anyio.to_thread.run_sync(read_records, data, seg))
    written = await swap_in(ctx.storage, ctx.meta, ctx.lease, group, records, ctx.settings.codec)
    if written is None:
        return False
    ctx.tally.segments_merged += len(group)
    ctx.tally.objects_written += 1
    ctx.tally.bytes_rewritten += sum(seg.length for seg in group)
    ctx.tally.bytes_written += written
    return True
