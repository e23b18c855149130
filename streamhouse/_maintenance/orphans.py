"""Deleting objects: garbage the catalogue released, and orphans it never knew.

Garbage: objects that segments pointed into, until retention, compaction,
merging or a topic's deletion took the last of them away. The catalogue
released each one when its last segment went; a grace period later a pass
claims it (for its lease epoch: no other maintainer will), deletes it from
the object store, and confirms. A maintainer killed between the claim and
the confirmation leaves the claim to the next one, which deletes again (a
delete of a missing key is no error).

Orphans: uploads no commit ever named (a producer crashed between its PUT
and its commit; a maintainer between writing a rewrite and swapping it in).
No reader can see them. They go once they are older than the orphan grace,
by the time in their key: a producer's commit may arrive that long after its
upload. A store that writes through temporary files (the local directory)
also loses those a killed writer left behind.

A sweep lists only the keys it has not examined. Keys are stamped when their
upload is prepared and listed in key order, so a sweep starts after the
catalogue's mark (where the sweeps before it stopped) and, once everything
it examined is committed or deleted, raises the mark to an hour
(``MARK_LAG``) before its cutoff (now less the grace), or before the newest
key it listed if that is older (a maintainer's clock ahead): a pass lists
the keys of about the grace, an hour and the time since the last pass. Listing
the whole bucket at each pass cost a LIST a thousand objects and a catalogue
query per 500, each pass, for ever: at a flush a second kept for 30 days,
2,600 LISTs and 5,200 queries a pass. A key stamped before the mark that is
uploaded after it (a producer's clock behind by more than the grace and the
hour) is never examined: kept, not wrongly deleted.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator

import anyio
import attrs

from .._errors import InvalidArgumentError, ObjectNotFoundError, raise_as_one
from .._metadata.protocol import MetadataStore
from .._storage.keys import OBJECT_PREFIX, object_key_time
from .._storage.protocol import HasTemporaries, ObjectInfo, ObjectStore
from .context import Pass

__all__ = ["MARK_LAG", "Orphans", "check_grace", "delete_orphans", "sweep_garbage"]

_BATCH = 500  # keys claimed, or asked about, at once
MARK_LAG = 3600.0  # seconds the sweep mark stays behind what a sweep examined
_DELETES = 8  # deletes at once


def check_grace(name: str, grace: object) -> float:
    """A grace period: a finite number of seconds >= 0."""
    if (
        isinstance(grace, bool)
        or not isinstance(grace, int | float)
        or not math.isfinite(grace)
        or grace < 0
    ):
        raise InvalidArgumentError(f"{name} must be a finite number of seconds >= 0, not {grace!r}")
    return float(grace)


async def _delete_all(storage: ObjectStore, keys: list[str]) -> None:
    limiter = anyio.CapacityLimiter(_DELETES)

    async def delete(key: str) -> None:
        async with limiter:
            await storage.delete(key)

    try:
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(delete, key)
    except BaseExceptionGroup as errors:
        raise_as_one(errors)


async def _size(storage: ObjectStore, key: str) -> int:
    """The size of an object the catalogue never measured (committed before it did)."""
    try:
        return (await storage.head(key)).size
    except ObjectNotFoundError:
        return 0


async def sweep_garbage(ctx: Pass) -> None:
    """Delete every object released more than the grace ago that nothing points into."""
    settings = ctx.settings
    while True:
        garbage = await ctx.meta.claim_garbage(
            ctx.lease, settings.grace, _BATCH, settings.forget_after
        )
        if not garbage:
            return
        for item in garbage:
            ctx.tally.bytes_deleted += (
                item.size if item.size is not None else await _size(ctx.storage, item.key)
            )
        keys = [item.key for item in garbage]
        await _delete_all(ctx.storage, keys)
        await ctx.meta.confirm_deleted(keys)
        ctx.tally.objects_deleted += len(keys)
        if len(garbage) < _BATCH:
            return


@attrs.frozen
class Orphans:
    """What an orphan sweep deleted: objects, and temporary files (paths)."""

    objects: tuple[ObjectInfo, ...]
    temporaries: tuple[str, ...]


async def delete_orphans(storage: ObjectStore, meta: MetadataStore, grace: float) -> Orphans:
    """Delete uploads never committed, and stale temporaries, older than ``grace``
    seconds; of the objects, only those stamped after the sweep mark."""
    cutoff = time.time() - check_grace("grace", grace)
    mark = await _mark(meta)
    candidates: list[ObjectInfo] = []
    newest: float | None = None
    async for info in _listing(storage, mark):
        created = object_key_time(info.key)
        if created is None or created < mark:
            continue
        newest = created if newest is None else max(newest, created)
        if created < cutoff:
            candidates.append(info)
    deleted: list[ObjectInfo] = []
    for start in range(0, len(candidates), _BATCH):
        chunk = candidates[start : start + _BATCH]
        committed = await meta.committed_object_keys([info.key for info in chunk])
        orphans = [info for info in chunk if info.key not in committed]
        await _delete_all(storage, [info.key for info in orphans])
        deleted += orphans
    if newest is not None and hasattr(meta, "advance_orphan_sweep_mark"):
        # Not to this clock's cutoff alone: a clock ahead would carry the mark
        # (which never goes down) past keys no sweep then examines. Nor past
        # uploads still under way: a key is stamped before its object is
        # encoded and PUT, up to a producer's delivery_timeout (2 min) later.
        await meta.advance_orphan_sweep_mark(min(cutoff, newest) - MARK_LAG)
    temporaries: list[str] = []
    if isinstance(storage, HasTemporaries):
        temporaries = await storage.delete_stale_temporaries(grace)
    return Orphans(tuple(deleted), tuple(temporaries))


async def _mark(meta: MetadataStore) -> float:
    """The catalogue's sweep mark; 0 for a store written before it had one."""
    if not hasattr(meta, "orphan_sweep_mark"):
        return 0.0
    return await meta.orphan_sweep_mark()


def _listing(storage: ObjectStore, mark: float) -> AsyncIterator[ObjectInfo]:
    """The producers' keys, from those stamped in the mark's millisecond on."""
    after = f"{OBJECT_PREFIX}{math.floor(mark * 1000):013d}"  # "-" sorts after it
    try:
        return storage.list(OBJECT_PREFIX, start_after=after)
    except TypeError:  # an ObjectStore written before start_after: all of them
        return storage.list(OBJECT_PREFIX)
