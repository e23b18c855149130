"""What ``async for`` took to hand out one record at a time, and the batch iterator.

The facade keeps these runs (records of one partition, in order); a poll
that follows an interrupted ``async for`` hands out what they hold first.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Awaitable, Callable

from .._types import ConsumedRecord, RecordBatch, TopicPartition

__all__ = ["Batches", "Run", "batches_from_runs", "records_from_runs"]


class Run:
    """Records ``async for`` took to hand out one at a time (all of one partition)."""

    __slots__ = ("batch", "next", "records", "tp")

    def __init__(self, tp: TopicPartition, batch: RecordBatch) -> None:
        self.tp = tp
        self.batch = batch
        self.records = batch.records()
        self.next = 0


def records_from_runs(
    runs: collections.deque[Run], limit: int, handed: dict[TopicPartition, int]
) -> list[ConsumedRecord]:
    """Records ``async for`` took and has not handed out come first, in order."""
    out: list[ConsumedRecord] = []
    while runs and len(out) < limit:
        run = runs[0]
        stop = min(len(run.records), run.next + limit - len(out))
        out += run.records[run.next : stop]
        run.next = stop
        handed[run.tp] = run.batch.offset_after(stop)
        if stop == len(run.records):
            runs.popleft()
    return out


def batches_from_runs(
    runs: collections.deque[Run], limit: int, most: int, handed: dict[TopicPartition, int]
) -> list[RecordBatch]:
    out: list[RecordBatch] = []
    while runs and limit and len(out) < most:
        run = runs.popleft()
        stop = min(len(run.records), run.next + limit)
        out.append(run.batch.slice(run.next, stop))
        limit -= stop - run.next
        run.next = stop
        handed[run.tp] = run.batch.offset_after(stop)
        if stop < len(run.records):
            runs.appendleft(run)
    return out


PollBatches = Callable[..., Awaitable[list[RecordBatch]]]


class Batches:
    """``consumer.batches()``: poll_batches one batch at a time, for ever."""

    def __init__(self, poll_batches: PollBatches) -> None:
        self._poll_batches = poll_batches

    def __aiter__(self) -> Batches:
        return self

    async def __anext__(self) -> RecordBatch:
        while True:
            found = await self._poll_batches(timeout=math.inf, max_batches=1)
            if found:
                return found[0]
