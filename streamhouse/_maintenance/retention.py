"""Time and size retention: the oldest segments of a partition go.

Kafka's rules, per partition: by time, a segment goes when its newest record
is older than ``retention_seconds``; by size, the oldest segments go while
the partition holds more than ``retention_bytes``. Only a prefix of the log
ever goes (the first segment that stays stops the walk), so the log start
offset only moves up, in one transaction with the removal of the segments
below it (``retire_segments``). The objects are released, not deleted: a
reader that looked a segment up before it went still finds its bytes for
the grace period, and a packed object still holding other partitions'
segments stays.
"""

from __future__ import annotations

import contextlib

from .._metadata.protocol import TopicInfo
from .context import Pass, all_segments

__all__ = ["apply_retention"]


async def apply_retention(ctx: Pass, topic: TopicInfo) -> None:
    """Retire what ``topic``'s retention settings say is too old or too much."""
    seconds, size = topic.config.retention_seconds, topic.config.retention_bytes
    if seconds is None and size is None:
        return
    cutoff_ms = None if seconds is None else int((ctx.now - seconds) * 1000)
    stats = await ctx.meta.segment_stats(topic.name) if size is not None else {}
    for state in await ctx.meta.partition_states([topic.name]):
        held = stats.get(state.partition, (0, 0))[1]
        retired_end = first_kept = None
        async with contextlib.aclosing(all_segments(ctx.meta, topic.name, state.partition)) as segs:
            async for seg in segs:
                too_old = cutoff_ms is not None and seg.max_timestamp < cutoff_ms
                too_much = size is not None and held > size
                if not (too_old or too_much):
                    first_kept = seg.base_offset
                    break
                retired_end = seg.end_offset
                held -= seg.length
        if retired_end is None:
            continue
        # Up to the first segment kept (offsets between hold no record), or
        # past the last one retired when none is kept: not to the high
        # watermark, which producers may have moved since.
        log_start = retired_end if first_kept is None else first_kept
        retired = await ctx.meta.retire_segments(ctx.lease, topic.name, state.partition, log_start)
        ctx.tally.segments_deleted += retired.segments
