"""The records a consumer's facade holds: delivered to it, not yet handed out.

One trip to the coordinator brings every block it has ready; the polls that
follow are answered from here, each taking fair shares of the partitions
held and building record objects only for what it returns. What a poll hands
out is noted, per partition, as the next offset handed out (``handed``), a
write per run of records, not per record; the facade reports it to the
coordinator.

A poll visits at most ``limit`` partitions, so its cost does not grow with
the number of partitions held: partitions wait their turn in the order of
the ``_queues`` dict, and those served go to the back.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Sequence

from .._types import ConsumedRecord, RecordBatch, TopicPartition

__all__ = ["HeldRecords", "fair_shares"]


class HeldRecords:
    """Per partition, the runs of records not handed out yet, oldest first."""

    def __init__(self) -> None:
        # In turn order: the partition to serve first comes first.
        self._queues: dict[TopicPartition, collections.deque[RecordBatch]] = {}
        self._taken: dict[TopicPartition, int] = {}  # of each queue's first batch
        self._count: dict[TopicPartition, int] = {}  # records held, per partition

    def __bool__(self) -> bool:
        return bool(self._queues)

    def add(self, tp: TopicPartition, batch: RecordBatch) -> None:
        queue = self._queues.get(tp)
        if queue is None:
            queue = self._queues[tp] = collections.deque()
            self._count[tp] = 0
        queue.append(batch)
        self._count[tp] += len(batch)

    def first_offsets(self) -> dict[TopicPartition, int]:
        """The next offset to hand out, for each partition held."""
        return {tp: q[0].offset_at(self._taken.get(tp, 0)) for tp, q in self._queues.items()}

    def drop(self, tp: TopicPartition) -> None:
        self._queues.pop(tp, None)
        self._taken.pop(tp, None)
        self._count.pop(tp, None)

    def take_records(self, limit: int, handed: dict[TopicPartition, int]) -> list[ConsumedRecord]:
        """Up to ``limit`` records, shared fairly across the partitions held."""
        out: list[ConsumedRecord] = []
        for tp, count in self._plan(limit):
            for batch, start, stop in self._take(tp, count):
                out += batch.records(start, stop)
                handed[tp] = batch.offset_after(stop)
        return out

    def take_batches(
        self, limit: int, max_batches: int, handed: dict[TopicPartition, int] | None
    ) -> list[RecordBatch]:
        """Up to ``limit`` records in at most ``max_batches`` runs, shared fairly.

        ``handed`` None: the runs are not handed out yet (``async for``
        takes them to hand out one record at a time).
        """
        out: list[RecordBatch] = []
        for tp, count in self._plan(limit, max_batches):
            for batch, start, stop in self._take(tp, count, max_batches - len(out)):
                out.append(batch.slice(start, stop))
                if handed is not None:
                    handed[tp] = batch.offset_after(stop)
        return out

    def _plan(self, limit: int, most: int | None = None) -> list[tuple[TopicPartition, int]]:
        queues = self._queues
        if len(queues) == 1:
            return [(next(iter(queues)), limit)]
        visit = min(len(queues), limit, len(queues) if most is None else most)
        tps = list(itertools.islice(queues, visit))
        shares = fair_shares([self._count[tp] for tp in tps], limit)
        # Those served wait at the back; when every partition is served,
        # the first goes back alone, so that leftovers rotate.
        for tp in tps if visit < len(queues) else tps[:1]:
            queues[tp] = queues.pop(tp)
        return list(zip(tps, shares, strict=True))

    def _take(
        self, tp: TopicPartition, count: int, most: int | None = None
    ) -> list[tuple[RecordBatch, int, int]]:
        """Hand out ``count`` records of ``tp``, in at most ``most`` runs.

        Returns each run as (batch, start, stop).
        """
        runs: list[tuple[RecordBatch, int, int]] = []
        queue = self._queues.get(tp)
        while queue and count and (most is None or len(runs) < most):
            batch, start = queue[0], self._taken.get(tp, 0)
            stop = min(len(batch), start + count)
            runs.append((batch, start, stop))
            count -= stop - start
            self._count[tp] -= stop - start
            if stop == len(batch):
                queue.popleft()
                self._taken.pop(tp, None)
            else:
                self._taken[tp] = stop
        if queue is not None and not queue:
            del self._queues[tp], self._count[tp]
        return runs


def fair_shares(available: Sequence[int], limit: int) -> list[int]:
    """Split ``limit`` records fairly among sources holding ``available`` each.

    Every source gets an equal share; what one cannot use goes to those with
    more, earlier sources first.
    """
    share = [0] * len(available)
    left = limit
    while left > 0:
        hungry = [i for i, n in enumerate(available) if share[i] < n]
        if not hungry:
            break
        each = max(1, left // len(hungry))
        for i in hungry:
            take = min(each, available[i] - share[i], left)
            share[i] += take
            left -= take
            if left == 0:
                break
    return share
