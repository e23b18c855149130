"""One maintenance pass: retention, compaction, merging, garbage, orphans.

Nothing runs in a broker here, so maintenance is a job any client can run,
``Admin.maintain()`` once or ``streamhouse maintain`` in a loop. One
maintainer acts at a time, under the lease (``lease``); a second one finds
it taken and returns at once with an empty report marked ``skipped``.

A pass, in order (each step's module says how it works and why it is safe):

1. retention (``retention``): the oldest segments go by each topic's time
   and size limits, and the log start moves up (first, so that nothing is
   rewritten only to be deleted);
2. key compaction (``compaction``), for compacted topics;
3. small-object merging (``merging``), every topic; then retention once
   more, in case a rewrite grew a partition past its size limit;
4. the garbage sweep (``orphans``): objects no segment points into any
   more, released at least ``grace`` seconds ago, are deleted;
5. the orphan sweep (``orphans``): uploads never committed, older than the
   orphan grace, and stale temporaries.

Every change to the catalogue is one transaction fenced by the lease's
epoch; objects are written before the catalogue points at them and deleted
only after it stopped pointing at them for ``grace`` seconds. So a
maintainer killed at any moment leaves a catalogue that is whole, objects
the next pass deletes (released ones, orphans, claims it never confirmed),
and nothing a reader could miss.
"""

from __future__ import annotations

import time

from .._errors import LeaseLostError
from .._metadata.protocol import MetadataStore
from .._storage.protocol import ObjectStore
from .compaction import compact_topic
from .context import Pass, Settings
from .lease import HeldLease, under_lease
from .merging import merge_topic
from .orphans import delete_orphans, sweep_garbage
from .report import MaintenanceReport, Tally
from .retention import apply_retention

__all__ = ["maintain"]


async def maintain(
    storage: ObjectStore, meta: MetadataStore, settings: Settings
) -> MaintenanceReport:
    """Run one pass (see the module docstring) and say what it did."""
    tally = Tally()
    held: list[HeldLease] = []

    async def run(lease: HeldLease) -> None:
        held.append(lease)
        try:
            await _steps(Pass(storage, meta, lease.lease, settings, time.time(), tally))
        except LeaseLostError:
            tally.interrupted = True

    await under_lease(meta, settings.lease_ttl, run)
    if not held:
        tally.skipped = True
    elif held[0].lost:
        tally.interrupted = True
    return tally.report()


async def _steps(ctx: Pass) -> None:
    topics = await ctx.meta.list_topics()
    for topic in topics:
        await apply_retention(ctx, topic)
    for topic in topics:
        await compact_topic(ctx, topic)
    for topic in topics:
        await merge_topic(ctx, topic)
    # Again, and cheaply (the catalogue only): a rewrite may have grown a
    # partition a little (an offsets column where compaction left gaps), and
    # its limits must hold when the pass ends.
    for topic in topics:
        await apply_retention(ctx, topic)
    await sweep_garbage(ctx)
    orphans = await delete_orphans(ctx.storage, ctx.meta, ctx.settings.orphan_grace)
    ctx.tally.objects_deleted += len(orphans.objects)
    ctx.tally.bytes_deleted += sum(info.size for info in orphans.objects)
    ctx.tally.temporaries_deleted += len(orphans.temporaries)
