"""The Consumer: the public facade of the consumer's actor runtime.

The facade holds only records it was given and has not handed out yet
(``HeldRecords``, and the runs ``async for`` is going through). It owns no
position: it tells the coordinator what it handed out (``Delivered``: one
message per poll with auto-commit, never one per record, and before any
request), and every question about positions, commits, pauses and seeks
is one request to the coordinator, answered by it alone.

Epochs keep what the facade holds honest. Every block comes with its
partition's epoch, which the coordinator changes whenever it moves the
partition for any reason but a delivery (a seek, a pause, an offset reset,
a revocation). A block of a newer epoch makes the facade drop what it holds
of the partition; a block of an older one is dropped. Seeks and pauses
answer with the new epoch; changes the coordinator makes on its own ring the
facade's bell, and the next poll takes them (``Notices``) before it hands out
anything: records the application would get stale are never handed out.
"""

from __future__ import annotations

import collections
import math
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TypeVar

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import InvalidArgumentError
from .._lifecycle import Runtime
from .._types import ConsumedRecord, RecordBatch, TopicPartition
from .args import (
    check_count,
    check_offsets,
    check_partition,
    check_partitions,
    check_timeout,
)
from .cache import CacheClient, CacheStats
from .held import HeldRecords
from .messages import (
    Blocks,
    Close,
    CloseMode,
    Commit,
    Committed,
    Delivered,
    HighWatermark,
    Lags,
    Notices,
    Pause,
    Paused,
    Poll,
    Position,
    Reply,
    ReplyDropped,
    Request,
    Resume,
    Seek,
    SeekTo,
    TakeNotices,
    name_of,
)
from .rebalance import Rebalancer
from .runs import Batches, Run, batches_from_runs, records_from_runs

__all__ = ["Consumer"]

T = TypeVar("T")


class Consumer:
    """Reads records from assigned partitions; made by :func:`open_consumer`."""

    def __init__(
        self,
        runtime: Runtime,
        inbox: MemoryObjectSendStream[object],
        bell: MemoryObjectReceiveStream[None],
        cache: CacheClient,
        assignment: frozenset[TopicPartition],
        group_id: str | None,
        max_poll_records: int,
        auto_commit: bool,
        rebalancer: Rebalancer | None = None,
    ) -> None:
        self._runtime = runtime
        self._inbox = inbox
        self._bell = bell
        self._cache = cache
        self._assignment = assignment
        self._group_id = group_id
        self._max_poll_records = max_poll_records
        self._held = HeldRecords()
        self._runs: collections.deque[Run] = collections.deque()
        self._epochs: dict[TopicPartition, int] = {}  # the newest epoch seen, per partition
        self._handed: dict[TopicPartition, int] = {}  # handed out since the last report
        self._owed = False  # the coordinator has not heard the application came back
        self._owed_error: Exception | None = None  # taken from the coordinator, not raised yet
        # Auto-commit needs to hear, at each poll, that the application came
        # back for more; without it, reports wait for the next request (a
        # message a poll costs the coordinator a wake-up: about 25 us).
        self._auto_commit = auto_commit
        self._rebalancer = rebalancer  # with group membership

    # -- talking to the coordinator -----------------------------------------------

    async def _send(self, msg: object) -> None:
        try:
            try:
                self._inbox.send_nowait(msg)
            except anyio.WouldBlock:
                await self._inbox.send(msg)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise self._runtime.broken() from None

    async def _report(self, *, came_back: bool) -> None:
        """Tell the coordinator what was handed out since the last report."""
        if not self._handed and not (came_back and self._owed):
            return
        handed, epochs = self._handed, self._epochs
        self._handed = {}
        offsets = {tp: (epochs[tp], offset) for tp, offset in handed.items()}
        try:
            await self._send(Delivered(offsets, came_back))
        except BaseException:
            self._handed = handed | self._handed  # not told: told next time
            raise
        self._owed = not came_back

    async def _ask(
        self, make: Callable[[Reply[T]], Request[T]], late: Callable[[T], None] | None = None
    ) -> T:
        """One request, with what was handed out reported first.

        ``late`` takes an answer that arrived while the asker was being
        cancelled, when it must not be lost (the coordinator counts it as
        given).
        """
        await self._report(came_back=False)
        reply = Reply[T]()
        await self._send(make(reply))
        try:
            return await reply.wait()
        except ReplyDropped:
            raise self._runtime.broken() from None
        except BaseException:
            answer = reply.abandon()
            if late is not None and answer is not None and not isinstance(answer, Exception):
                late(answer)
            raise

    async def _begin_poll(self) -> None:
        """A poll begins: report, take notices if the bell rang, and checkpoint.

        Every poll is a checkpoint, even one answered from held records.
        """
        if self._auto_commit:
            await self._report(came_back=True)
        if self._owed_error is not None:
            error, self._owed_error = self._owed_error, None
            raise error
        rebalancer = self._rebalancer
        if rebalancer is not None:
            rebalancer.polled()
        try:
            self._bell.receive_nowait()
        except anyio.WouldBlock:
            if rebalancer is not None and rebalancer.owes:
                await rebalancer.apply(None, self._ask, self._forget, self._assigned)
            await anyio.lowlevel.checkpoint()
            return
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise self._runtime.broken() from None
        notices: Notices = await self._ask(TakeNotices, self._keep_notices)
        self._apply_notices(notices)
        if rebalancer is not None and (notices.group is not None or rebalancer.owes):
            await rebalancer.apply(notices.group, self._ask, self._forget, self._assigned)
        if notices.error is not None:
            raise notices.error

    def _apply_notices(self, notices: Notices) -> None:
        if notices.assignment is not None:
            self._assignment = notices.assignment
        self._apply_epochs(notices.epochs)

    def _keep_notices(self, notices: Notices) -> None:
        """Notices that arrived as the poll was cancelled: the next poll raises
        their error and applies their group change."""
        self._apply_notices(notices)
        self._owed_error = notices.error
        if notices.group is not None and self._rebalancer is not None:
            self._rebalancer.keep(notices.group)

    def _forget(self, tps: frozenset[TopicPartition]) -> None:
        """The group took these partitions away: nothing held of them is handed out."""
        for tp in tps:
            self._held.drop(tp)
            self._handed.pop(tp, None)
        self._runs = collections.deque(r for r in self._runs if r.tp not in tps)
        self._assignment -= tps

    def _assigned(self, assignment: frozenset[TopicPartition]) -> None:
        self._assignment = assignment

    def _apply_epochs(self, epochs: Mapping[TopicPartition, int]) -> None:
        for tp, epoch in epochs.items():
            if epoch > self._epochs.get(tp, -1):
                self._advance(tp, epoch)

    def _advance(self, tp: TopicPartition, epoch: int) -> None:
        """Records of ``tp`` older than ``epoch`` are stale: drop what is held of them."""
        if tp in self._epochs:
            self._held.drop(tp)
            self._handed.pop(tp, None)
            if self._runs:
                self._runs = collections.deque(r for r in self._runs if r.tp != tp)
        self._epochs[tp] = epoch

    async def _fetch(self, deadline: float) -> bool:
        """Take every block the coordinator has ready; wait until ``deadline`` for one.

        One request serves many polls: records are built from the held
        columns only as each poll asks for them.
        """
        if self._rebalancer is not None:
            self._rebalancer.waiting(deadline)  # waiting for records is polling
        try:
            return await self._wait_for_blocks(deadline)
        finally:
            if self._rebalancer is not None:
                self._rebalancer.waiting(None)

    async def _wait_for_blocks(self, deadline: float) -> bool:
        while True:
            await self._report(came_back=False)
            reply = Reply[Blocks]()
            await self._send(Poll(reply, deadline))
            try:
                blocks = await reply.wait()
            except ReplyDropped:
                raise self._runtime.broken() from None
            except BaseException:
                # Cancelled: blocks that arrived meanwhile are kept for the
                # next poll; the coordinator counts them as handed over.
                late = reply.abandon()
                if isinstance(late, list):
                    self._hold(late)
                raise
            if self._hold(blocks) or anyio.current_time() >= deadline or self._rung():
                return bool(self._held)

    def _rung(self) -> bool:
        """Whether the bell rang (the coordinator answers a waiting poll early then)."""
        return self._bell.statistics().current_buffer_used > 0

    def _hold(self, blocks: Blocks) -> bool:
        epochs, held = self._epochs, self._held
        added = False
        for epoch, batch in blocks:
            tp = TopicPartition(batch.topic, batch.partition)
            known = epochs.get(tp, -1)
            if epoch != known:
                if epoch < known:
                    continue  # stale: the partition moved since
                self._advance(tp, epoch)
            held.add(tp, batch)
            added = True
        return added

    # -- records -------------------------------------------------------------------

    async def poll(
        self, timeout: float = 1.0, *, max_records: int | None = None
    ) -> list[ConsumedRecord]:
        """Wait up to ``timeout`` seconds for records; return as soon as some are ready.

        Returns at most ``max_records`` (default: ``max_poll_records``)
        records, shared fairly across partitions, or ``[]`` after the
        timeout. Cancelling a poll loses nothing: records it did not return
        are returned by the next one.

        Raises:
            StorageUnavailableError, MetadataUnavailableError: a partition
                made no progress for ``stall_timeout`` because of errors
                (raised once; the next poll carries on).
            CorruptDataError, OffsetOutOfRangeError: a partition stopped
                (the others go on; seek past it to go on).
        """
        limit = self._limit(max_records)
        seconds = check_timeout(timeout)
        deadline = anyio.current_time() + seconds
        while True:
            await self._begin_poll()
            if self._runs:
                return records_from_runs(self._runs, limit, self._handed)
            if self._held or await self._fetch(deadline):
                return self._held.take_records(limit, self._handed)
            if anyio.current_time() >= deadline:
                return []

    async def poll_batches(
        self,
        timeout: float = 1.0,
        *,
        max_records: int | None = None,
        max_batches: int | None = None,
    ) -> list[RecordBatch]:
        """Like :meth:`poll`, but the records come as columns: one RecordBatch per run.

        No per-record object is made: each batch holds a partition's
        consecutive records as offsets, timestamps, keys, values and headers
        columns. Returns what is buffered, up to ``max_records`` records
        (default: no limit beyond the read-ahead, ``prefetch_batches`` blocks
        per partition) in at most ``max_batches`` batches, or ``[]`` after
        the timeout. Positions, commits, errors and cancellation work as for
        :meth:`poll`.
        """
        limit = sys.maxsize if max_records is None else self._limit(max_records)
        most = sys.maxsize
        if max_batches is not None:
            most = check_count("max_batches", max_batches, least=1)
        seconds = check_timeout(timeout)
        deadline = anyio.current_time() + seconds
        while True:
            await self._begin_poll()
            if self._runs:
                return batches_from_runs(self._runs, limit, most, self._handed)
            if self._held or await self._fetch(deadline):
                return self._held.take_batches(limit, most, self._handed)
            if anyio.current_time() >= deadline:
                return []

    def batches(self) -> AsyncIterator[RecordBatch]:
        """Iterate over RecordBatches as they arrive, one at a time; see :meth:`poll_batches`.

        Each batch counts as consumed when the next one is asked for, so a
        commit in the loop body never runs ahead of what the loop has seen.
        A plain iterator, not an async generator: leaving the loop early
        needs no cleanup.
        """
        return Batches(self.poll_batches)

    def __aiter__(self) -> AsyncIterator[ConsumedRecord]:
        return self

    async def __anext__(self) -> ConsumedRecord:
        while not self._runs:
            await self._begin_poll()
            if not self._held:
                await self._fetch(math.inf)
            for batch in self._held.take_batches(self._max_poll_records, sys.maxsize, None):
                self._runs.append(Run(TopicPartition(batch.topic, batch.partition), batch))
        run = self._runs[0]
        record = run.records[run.next]
        run.next += 1
        if run.next == len(run.records):
            self._runs.popleft()
        self._handed[run.tp] = record.offset + 1
        return record

    def _limit(self, max_records: int | None) -> int:
        if max_records is None:
            return self._max_poll_records
        return check_count("max_records", max_records, least=1)

    # -- positions and commits -----------------------------------------------------------

    def _check_tp(self, topic: object, partition: object) -> TopicPartition:
        tp = check_partition(topic, partition)
        if tp not in self._assignment:
            raise InvalidArgumentError(f"{name_of(tp)} is not assigned to this consumer")
        return tp

    def _check_tps(self, partitions: tuple[object, ...]) -> list[TopicPartition]:
        tps = check_partitions(partitions)
        for tp in tps:
            self._check_tp(tp.topic, tp.partition)
        return tps

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit every position that differs from its committed offset, or exactly ``offsets``.

        One request, one transaction, however many partitions.

        Raises:
            InvalidArgumentError: no group_id, or ``offsets`` is not a mapping
                of TopicPartition to an int >= 0.
            CommitFailedError: a group member that no longer owns a partition
                at its epoch (fenced, or it moved); nothing was written.
        """
        checked = None if offsets is None else check_offsets(offsets)
        if self._group_id is None:
            raise InvalidArgumentError("commit needs a group_id: open the consumer with one")
        await self._ask(lambda r: Commit(r, checked))

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        """Make ``offset`` the next one delivered for the partition.

        An offset past the high watermark is out of range when it is read,
        and ``offset_reset`` applies then (as in Kafka).
        """
        tp = self._check_tp(topic, partition)
        check_count("offset", offset, least=0)
        await self._seek({tp: offset})

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Seek to the log start offset of the given (default: all) partitions."""
        tps = self._check_tps(partitions) or sorted(self._assignment)
        await self._seek(dict.fromkeys(tps, SeekTo.BEGINNING))

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Seek to the high watermark of the given (default: all) partitions."""
        tps = self._check_tps(partitions) or sorted(self._assignment)
        await self._seek(dict.fromkeys(tps, SeekTo.END))

    async def _seek(self, targets: dict[TopicPartition, int | SeekTo]) -> None:
        for tp in targets:
            self._held.drop(tp)  # not handed out from now on, whatever the answer
        self._runs = collections.deque(r for r in self._runs if r.tp not in targets)
        epochs: dict[TopicPartition, int] = await self._ask(
            lambda r: Seek(r, targets), self._apply_epochs
        )
        self._apply_epochs(epochs)
        self._owed = True

    async def position(self, topic: str, partition: int) -> int:
        """The next offset to deliver for the partition."""
        tp = self._check_tp(topic, partition)
        return await self._ask(lambda r: Position(r, tp))

    async def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset for the partition, or None."""
        tp = self._check_tp(topic, partition)
        return await self._ask(lambda r: Committed(r, tp))

    async def high_watermark(self, topic: str, partition: int) -> int:
        """One past the last offset known in the partition (refreshed continually)."""
        tp = self._check_tp(topic, partition)
        return await self._ask(lambda r: HighWatermark(r, tp))

    async def lag(self, topic: str, partition: int) -> int:
        """Records in the partition after the position: high watermark - position."""
        tp = self._check_tp(topic, partition)
        lags = await self._ask(lambda r: Lags(r, frozenset([tp])))
        return lags[tp]

    async def lags(self) -> dict[TopicPartition, int]:
        """The lag of every assigned partition, in one request."""
        return await self._ask(lambda r: Lags(r, None))

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads (as of its last poll)."""
        return set(self._assignment)

    async def pause(self, *partitions: TopicPartition) -> None:
        """Stop delivering records of these partitions (reading ahead stays bounded).

        Records fetched but not handed out yet go back: after
        :meth:`resume`, delivery goes on from the position.
        """
        tps = frozenset(self._check_tps(partitions))
        for tp in tps:
            self._held.drop(tp)
        self._runs = collections.deque(r for r in self._runs if r.tp not in tps)
        epochs: dict[TopicPartition, int] = await self._ask(
            lambda r: Pause(r, tps), self._apply_epochs
        )
        self._apply_epochs(epochs)

    async def resume(self, *partitions: TopicPartition) -> None:
        """Deliver records of these partitions again."""
        tps = frozenset(self._check_tps(partitions))
        await self._ask(lambda r: Resume(r, tps))

    async def paused(self) -> set[TopicPartition]:
        """The partitions paused now."""
        paused: frozenset[TopicPartition] = await self._ask(Paused)
        return set(paused)

    async def cache_stats(self) -> CacheStats:
        """What the segment cache holds and did: files, bytes, hits, GETs."""
        try:
            return await self._cache.stats()
        except (ReplyDropped, anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise self._runtime.broken() from None

    async def _close(self, mode: CloseMode) -> None:
        await self._ask(lambda r: Close(r, mode))

    def _release(self) -> None:
        """Close the facade's channel ends (the runtime has stopped)."""
        self._inbox.close()
        self._bell.close()
        if self._rebalancer is not None:
            self._rebalancer.close()
