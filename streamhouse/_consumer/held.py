"""The records a consumer's facade holds: delivered, not yet handed out.

One trip to the coordinator brings every block it has ready; the polls that
follow are answered from here, each taking fair shares of the partitions
held and building record objects only for what it returns.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

from .._types import ConsumedRecord, RecordBatch, TopicPartition

__all__ = ["HeldRecords", "fair_shares", "take_runs"]


class HeldRecords:
    """Per partition, the runs of records not handed out yet, oldest first."""

    def __init__(self) -> None:
        self._queues: dict[TopicPartition, collections.deque[RecordBatch]] = {}
        self._taken: dict[TopicPartition, int] = {}  # of each queue's first batch
        self._count: dict[TopicPartition, int] = {}  # records held, per partition
        self._turn = 0

    def __bool__(self) -> bool:
        return bool(self._queues)

    def add(self, batches: Iterable[RecordBatch]) -> None:
        for batch in batches:
            tp = TopicPartition(batch.topic, batch.partition)
            self._queues.setdefault(tp, collections.deque()).append(batch)
            self._count[tp] = self._count.get(tp, 0) + len(batch)

    def first_offsets(self) -> dict[TopicPartition, int]:
        """The next offset to hand out, for each partition held."""
        return {tp: q[0].first_offset + self._taken.get(tp, 0) for tp, q in self._queues.items()}

    def drop(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._queues.pop(tp, None)
            self._taken.pop(tp, None)
            self._count.pop(tp, None)

    def take_records(self, limit: int) -> list[ConsumedRecord]:
        """Up to ``limit`` records, shared fairly across the partitions held."""
        out: list[ConsumedRecord] = []
        for tp, count in self._plan(limit):
            for batch, start, stop in self._take(tp, count):
                out += batch.records(start, stop)
        return out

    def take_batches(self, limit: int, max_batches: int) -> list[RecordBatch]:
        """Up to ``limit`` records in at most ``max_batches`` runs, shared fairly."""
        out: list[RecordBatch] = []
        for tp, count in self._plan(limit):
            for batch, start, stop in self._take(tp, count, max_batches - len(out)):
                out.append(batch.slice(start, stop))
        return out

    def _plan(self, limit: int) -> list[tuple[TopicPartition, int]]:
        tps = list(self._queues)
        if len(tps) <= 1:
            return [(tp, limit) for tp in tps]
        turn = self._turn % len(tps)
        self._turn += 1
        tps = tps[turn:] + tps[:turn]
        shares = fair_shares([self._count[tp] for tp in tps], limit)
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


def take_runs(
    records: collections.deque[ConsumedRecord], limit: int, max_batches: int
) -> list[RecordBatch]:
    """Take up to ``limit`` records from the front of ``records`` as RecordBatches.

    Each batch is a run of consecutive offsets of one partition; at most
    ``max_batches`` of them.
    """
    out: list[RecordBatch] = []
    while records and limit and len(out) < max_batches:
        run = [records.popleft()]
        while (
            records
            and len(run) < limit
            and records[0].topic == run[0].topic
            and records[0].partition == run[0].partition
            and records[0].offset == run[-1].offset + 1
        ):
            run.append(records.popleft())
        limit -= len(run)
        first = run[0]
        out.append(
            RecordBatch(
                first.topic,
                first.partition,
                first.offset,
                [r.timestamp for r in run],
                [r.key for r in run],
                [r.value for r in run],
                [r.headers for r in run],
            )
        )
    return out


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
