"""The watermark refresh: one query for the bounds of every assigned
partition, made only when the catalogue may have changed.

The coordinator wakes a reader waiting at its partition's end when the
bounds show more records (module reader).
"""

from __future__ import annotations

import math

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from .._errors import RetriableError
from .._metadata.protocol import CatalogueWatch, MetadataStore
from .._retry import Backoff, RetryPolicy
from .messages import Recovered, Trouble, Watermarks

__all__ = ["run_refresher"]

_IDLE_LOOKS = 4  # the most intervals between two looks of an idle refresh
_QUIET = 1.0  # seconds without a commit before the looks space out


async def run_refresher(
    topics: tuple[str, ...],
    *,
    metadata: MetadataStore,
    interval: float,
    retry: RetryPolicy,
    out: MemoryObjectSendStream[object],
    scope: anyio.CancelScope,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Every ``interval`` seconds, if the catalogue of ``topics`` may have
    changed, send the bounds of every partition of ``topics``.

    One query serves every assigned partition, however many there are, and
    an idle consumer makes none: the store's watch (``wait(0)``: SQLite looks
    at its change counter, PostgreSQL at the notifications its listener
    counted) says whether anything was committed since the last look. A
    consumer of 1,000 idle partitions that queried every 50 ms spent 12% of
    a core on it. A look is cheap, not free: waking every 50 ms costs 0.9%
    of a core here with nothing to do, 1.6% with SQLite's look in a worker
    thread. So the looks space out after a second without a commit,
    doubling up to ``_IDLE_LOOKS`` intervals (0.2 s at the default), and
    come back to one interval at the first change (a steady flow, even a
    slow one, keeps the interval): an idle consumer of 1,000 partitions
    uses 0.6%, and the first record after a quiet spell may be seen up to
    0.15 s later.
    The interval also bounds the queries while producers commit often. A
    transient failure is reported (Trouble without a partition) and retried
    by the policy; the refresh never gives up.
    """
    backoff = Backoff(retry)
    with scope, out:
        watch = metadata.watch(topics)
        task_status.started()
        spacing, quiet = 1, 0.0
        queried = -math.inf
        while True:
            if watch.pushed:
                # PostgreSQL's NOTIFY wakes the wait the moment a commit
                # lands: a new record is seen within milliseconds, not at the
                # next tick, and no query is made meanwhile. Still at most
                # one query per interval while producers commit often.
                woken = await watch.wait(interval * spacing)
                await anyio.sleep(max(0.0, queried + interval - anyio.current_time()))
            else:
                woken = False
                await anyio.sleep(interval * spacing)
            if await _refresh_once(topics, metadata, watch, backoff, out, woken=woken):
                spacing, quiet = 1, 0.0
                queried = anyio.current_time()
                continue
            quiet += interval * spacing
            if quiet >= _QUIET:
                spacing = min(2 * spacing, _IDLE_LOOKS)


async def _refresh_once(
    topics: tuple[str, ...],
    metadata: MetadataStore,
    watch: CatalogueWatch,
    backoff: Backoff,
    out: MemoryObjectSendStream[object],
    *,
    woken: bool = False,
) -> bool:
    """Send the bounds if the catalogue may have changed (``woken``: the
    watch already said so); whether it did."""
    changed = woken  # seen by the watch, not yet queried: kept across failures
    while True:
        try:
            changed = changed or await watch.wait(0)
            if not changed:
                return False
            states = await metadata.partition_states(topics)
        except RetriableError as exc:
            await out.send(Trouble(None, 0, exc))
            await backoff.wait()
            continue
        if backoff.succeeded():
            await out.send(Recovered(None, 0))
        await out.send(Watermarks(states))
        return True
