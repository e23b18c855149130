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
import functools

import anyio
import anyio.to_thread

from .._codec import MAX_OFFSET_DELTA
from .._errors import raise_as_one
from .._metadata.protocol import SegmentInfo, TopicInfo
from .context import Pass, all_segments, per_partition
from .rewrite import Records, fetch_segments, read_records, swap_in

__all__ = ["merge_topic"]

_AT_ONCE = 2  # merges in progress at once (see _merge_partition)


async def merge_topic(ctx: Pass, topic: TopicInfo) -> None:
    """Merge the runs of small segments of every partition of ``topic``."""
    for state in await ctx.meta.partition_states([topic.name]):
        merge = functools.partial(_merge_partition, ctx, topic.name, state.partition)
        await per_partition(ctx, "merging", topic.name, state.partition, merge)


async def _merge_partition(ctx: Pass, topic: str, partition: int) -> None:
    """Walk the partition's segments, merging each run of small ones as it ends.

    Two merges run at once: one encodes (CPU, in a worker thread) while the
    other fetches or uploads (the network), and no more, so the memory taken
    stays at about two targets' worth.
    """
    target = ctx.settings.target_bytes
    young = ctx.now - ctx.settings.grace
    slots = anyio.Semaphore(_AT_ONCE)
    group: list[SegmentInfo] = []
    size = 0
    try:
        async with anyio.create_task_group() as tg:

            async def dispatch(run: list[SegmentInfo]) -> None:
                if len(run) >= 2:
                    await slots.acquire()
                    tg.start_soon(_merge, ctx, run, slots)

            async with contextlib.aclosing(all_segments(ctx.meta, topic, partition)) as segments:
                async for seg in segments:
                    if seg.created_at > young:
                        break
                    small = seg.length < target // 2
                    # A segment's offsets are u32 from its base.
                    too_wide = group and seg.end_offset - group[0].base_offset > MAX_OFFSET_DELTA
                    if not small or too_wide:
                        await dispatch(group)
                        group, size = [], 0
                    if small:
                        group.append(seg)
                        size += seg.length
                        if size >= target:
                            await dispatch(group)
                            group, size = [], 0
            await dispatch(group)
    except BaseExceptionGroup as errors:
        raise_as_one(errors)


async def _merge(ctx: Pass, group: list[SegmentInfo], slot: anyio.Semaphore) -> None:
    """Merge ``group`` into one segment (nothing if its topic was deleted under us)."""
    try:
        records = Records()
        for seg, data in zip(group, await fetch_segments(ctx.storage, group), strict=True):
            records.extend(await anyio.to_thread.run_sync(read_records, data, seg))
        written = await swap_in(
            ctx.storage, ctx.meta, ctx.lease, group, records, ctx.settings.codec
        )
    finally:
        slot.release()
    if written is not None:
        ctx.tally.segments_merged += len(group)
        ctx.tally.objects_written += 1
        ctx.tally.bytes_rewritten += sum(seg.length for seg in group)
        ctx.tally.bytes_written += written
