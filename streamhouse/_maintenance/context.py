"""What every step of a pass shares: the stores, the lease, the settings, the tally."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable

import attrs

from .._codec import Codec
from .._errors import CorruptDataError, ObjectNotFoundError
from .._log import get_logger
from .._metadata.protocol import MaintenanceLease, MetadataStore, SegmentInfo
from .._storage.protocol import ObjectStore
from .report import Tally

__all__ = ["Pass", "Settings", "all_segments", "per_partition"]

_log = get_logger("maintenance")

# Segments a catalogue lookup returns at once.
_PAGE = 1000


@attrs.frozen
class Settings:
    """How a pass works (``Admin.maintain`` documents them).

    Attributes:
        grace: seconds an object no segment points into waits before it is
            deleted; segments committed more recently are not rewritten.
        orphan_grace: seconds an upload never committed waits before it is
            deleted (a producer's commit may be on its way that long).
        target_bytes: the size merging aims for (the producer's batch size).
        codec: the compression of rewritten segments.
        lease_ttl: seconds the lease lasts unless renewed.
        forget_after: seconds the catalogue remembers a deleted object.
    """

    grace: float = 60.0
    orphan_grace: float = 3600.0
    target_bytes: int = 4 * 2**20
    codec: Codec = Codec.LZ4
    lease_ttl: float = 30.0
    forget_after: float = 86400.0


@attrs.define(eq=False)
class Pass:
    """One pass in progress."""

    storage: ObjectStore
    meta: MetadataStore
    lease: MaintenanceLease
    settings: Settings
    now: float  # seconds since the epoch, when the pass began
    tally: Tally


async def all_segments(
    meta: MetadataStore, topic: str, partition: int, start: int = 0
) -> AsyncGenerator[SegmentInfo, None]:
    """A partition's segments from ``start`` on, in offset order, a page at a time."""
    while True:
        page = await meta.list_segments(topic, partition, start, limit=_PAGE)
        for seg in page:
            yield seg
        if len(page) < _PAGE:
            return
        start = page[-1].end_offset


async def per_partition(
    ctx: Pass, step: str, topic: str, partition: int, run: Callable[[], Awaitable[None]]
) -> None:
    """Run ``step`` on one partition; if the partition's own data cannot be
    read (a corrupt segment, an object the catalogue names missing), leave
    it as it is for this pass and report it (``MaintenanceReport.problems``,
    an ERROR in the log), and go on with the others. One corrupt segment
    used to end every pass at that partition: no topic after it was
    compacted or merged, nothing was swept, and ``streamhouse maintain``
    exited.
    """
    try:
        await run()
    except (CorruptDataError, ObjectNotFoundError) as exc:
        problem = f"{step} of {topic}[{partition}] skipped: {exc}"
        _log.error("maintenance: %s", problem)
        ctx.tally.problems.append(problem)
