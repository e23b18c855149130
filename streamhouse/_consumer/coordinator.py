"""The coordinator actor: the one owner of the consumer's positions.

It holds, per assigned partition (``partitions.Partition``), the position,
what the facade holds and what is pending, the committed offset, the epoch
and whether it is paused; it starts and stops the readers; it answers every
request of the facade and receives every message of the readers and of the
watermark refresh, from one inbox, one at a time, so no state is ever
shared.

How a record travels: a reader sends a block (Batch); it waits here,
pending, until a poll of the facade takes every pending block at once; the
facade holds them and hands records out to the application's polls; at the
start of its next poll (or before any other request) it reports what it
handed out (Delivered), and the position moves. The answer to a poll is
handed over by a one-shot Reply: if the facade was cancelled meanwhile, the
blocks stay pending for the next poll. A block taken hands its reader a
credit back, so a reader is never more than ``prefetch_batches`` blocks
ahead of the application.

Commits: ``commit()`` writes every position that differs from its committed
offset (backwards too, after a seek), in one request and one transaction.
Auto-commit writes, at each interval, the ``consumed`` offsets: positions as
of the last time the application came back for more (at-least-once).

Nothing the caller sends can stop the coordinator: a request that fails is
answered with its error. What keeps a partition from making progress (an
outage, corrupt data, an offset out of range with offset_reset="none") is
raised from a poll instead, once per ``stall_timeout`` (``Troubles``); the
other partitions go on.

Nothing here costs per assigned partition on the poll path: the partitions
with pending blocks, those whose position moved since the application last
came back, and those with something to commit are kept in small sets.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
from collections.abc import Mapping

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import ClosedError, InvalidArgumentError, OffsetOutOfRangeError
from .._metadata.groups import MemberRef
from .._metadata.protocol import MetadataStore
from .._metrics import ConsumerProbe, unread_metrics
from .._types import OffsetReset, TopicPartition
from .assigning import Assigning
from .cache import CacheClient
from .commits import Commits
from .lookups import run_lookups
from .messages import (
    Assign,
    AtEnd,
    Batch,
    Close,
    CloseMode,
    Commit,
    Committed,
    Delivered,
    Failed,
    GroupChange,
    HighWatermark,
    Lags,
    OutOfRange,
    PartitionStart,
    Pause,
    Paused,
    Poll,
    Position,
    ReaderSignal,
    Recovered,
    Request,
    Resume,
    Revoke,
    Seek,
    Take,
    TakeNotices,
    Trouble,
    Watermarks,
    answer,
    answer_async,
    drain,
    name_of,
)
from .notices import Bulletin
from .partitions import Partition
from .reader import Readers, ReaderStart
from .settings import Settings

__all__ = ["Coordinator", "Settings"]

_log = logging.getLogger("streamhouse.consumer")


class Coordinator(Assigning):
    """Created and run by the consumer's runtime; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        metadata: MetadataStore,
        cache: CacheClient,
        inbox: MemoryObjectReceiveStream[object],
        inbox_send: MemoryObjectSendStream[object],
        bell: MemoryObjectSendStream[None],
        probe: ConsumerProbe | None = None,
    ) -> None:
        self._settings = settings
        # The metrics: per block, per commit, the lag gauges once a second.
        self._probe = probe or unread_metrics().consumer(settings.group_id)
        self._metadata = metadata
        self._cache = cache
        self._inbox = inbox
        self._inbox_send = inbox_send  # cloned for the readers and the refresh
        self._bell = bell  # rung when the facade must take Notices
        self._parts: dict[TopicPartition, Partition] = {}
        self._ready: dict[TopicPartition, None] = {}  # pending blocks, not paused
        self._moved: set[TopicPartition] = set()  # position moved since came back
        self._paused: set[TopicPartition] = set()
        self._polls: collections.deque[Poll] = collections.deque()
        self._epochs = itertools.count()  # facade-visible epochs, and readers'
        self._bulletin = Bulletin(bell, settings.stall_timeout)
        interval = settings.auto_commit_interval if settings.auto_commit else None
        self._commits = Commits(
            metadata, settings.group_id, interval, self._probe,
            member_only=settings.membership is not None,
        )  # fmt: skip
        self._readers: Readers | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------

    async def run(
        self,
        partitions: Mapping[TopicPartition, PartitionStart],
        member: MemberRef | None = None,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with anyio.create_task_group() as tg, self._inbox_send, self._bell:
                s = self._settings
                lookups = await tg.start(run_lookups, self._metadata, self._cache.plan)
                self._readers = Readers(
                    tg, self._metadata, lookups, self._cache, s.retry, s.prefetch_batches,
                    s.refresh_interval, self._inbox_send,
                )  # fmt: skip
                self._commits.member = member  # a group's member commits as it
                self._assign(partitions, initial=True)
                self._commits.start()
                task_status.started()
                while not self._closed:
                    msg = await self._next_message()
                    if msg is not None:
                        await self._handle(msg)
                    await self._after_message()
                tg.cancel_scope.cancel()
        finally:
            # Whatever stopped us: tell every asker, close every channel end.
            for poll in self._polls:
                poll.reply.drop()
            for part in self._parts.values():
                if part.reader is not None:
                    part.reader.stop()
            drain(self._inbox)
            self._inbox.close()
            self._probe.close()

    async def _next_message(self) -> object | None:
        try:
            # Without waiting, if a message is there already.
            return self._inbox.receive_nowait()
        except anyio.WouldBlock:
            wake = min(self._commits.next_auto_commit, self._bulletin.troubles.next_deadline())
            if self._polls:
                wake = min(wake, min(p.deadline for p in self._polls))
            if wake == math.inf:
                return await self._inbox.receive()  # no cancel scope to make: the common case
            with anyio.move_on_at(wake):
                return await self._inbox.receive()
        return None

    async def _after_message(self) -> None:
        now = math.nan
        troubles = self._bulletin.troubles
        if troubles:
            now = anyio.current_time()
            if now >= troubles.next_deadline():
                self._bulletin.raise_due(now, self._waiting)
        if self._polls:
            self._answer_polls()
        if self._commits.next_auto_commit != math.inf:
            now = anyio.current_time() if math.isnan(now) else now
            if now >= self._commits.next_auto_commit:
                await self._commits.auto_commit(self._parts)

    # -- dispatch ----------------------------------------------------------------

    async def _handle(self, msg: object) -> None:
        match msg:
            case Batch():
                self._on_batch(msg)
            case Delivered():
                self._on_delivered(msg)
            case Poll():
                self._polls.append(msg)
            case AtEnd():
                self._on_at_end(msg)
            case Watermarks():
                self._on_watermarks(msg)
            case Trouble() | Recovered() | Failed():
                self._on_trouble(msg)
            case OutOfRange():
                part = self._parts.get(msg.tp)
                if part is not None and part.reader_epoch == msg.epoch:
                    if msg.high is not None:
                        part.log_start, part.high_watermark = msg.first, msg.high
                    self._out_of_range(part, msg.offset, msg.first)
            case GroupChange():
                polls, self._polls = list(self._polls), collections.deque()
                self._group_change(msg, polls)
            case Close():
                await self._close(msg)
            case Request():
                await self._serve(msg)
            case _:  # pragma: no cover - nothing else is sent here
                raise AssertionError(f"unexpected message {msg!r}")

    async def _serve(self, req: Request[object]) -> None:
        """Answer a request; whatever goes wrong is the asker's answer, not our end."""
        parts = self._parts
        match req:
            case TakeNotices():
                self._bulletin.take(req, frozenset(self._parts))
            case Position():
                answer(req, lambda: self._part(req.tp).position)
            case HighWatermark():
                answer(req, lambda: self._part(req.tp).high_watermark)
            case Lags():
                answer(req, lambda: self._lags(req.partitions))
            case Paused():
                answer(req, lambda: frozenset(self._paused))
            case Pause():
                answer(req, lambda: self._pause(req.partitions))
            case Resume():
                answer(req, lambda: self._resume(req.partitions))
            case Commit() if req.offsets is None:
                await answer_async(req, lambda: self._commits.commit_by(CloseMode.POSITIONS, parts))
            case Commit():
                offsets = req.offsets
                await answer_async(req, lambda: self._commits.commit(offsets or {}, parts))
            case Seek():
                await answer_async(req, lambda: self._seek(req.targets))
            case Committed():
                tp = req.tp
                await answer_async(req, lambda: self._commits.committed(self._part(tp).tp))
            case Assign():
                answer(req, lambda: self._assign(req.partitions, initial=False))
            case Revoke():
                revoked = req.partitions
                await answer_async(req, lambda: self._revoke_for_group(revoked, req.commit))
            case Take():
                self._commits.member = req.member
                await answer_async(req, lambda: self._take(req.partitions))
            case _:
                req.reply.put(InvalidArgumentError(f"unknown request {type(req).__name__}"))

    def _part(self, tp: TopicPartition) -> Partition:
        part = self._parts.get(tp)
        if part is None:
            raise InvalidArgumentError(f"{name_of(tp)} is not assigned to this consumer")
        return part

    # -- readers -------------------------------------------------------------------

    def _start_reader(self, part: Partition, offset: int, *, reset: bool) -> None:
        """Read ``part`` from ``offset`` with a new reader; ``reset``: the facade's records go."""
        if reset:
            part.epoch = next(self._epochs)
            part.fetched = offset
        part.expected = offset
        part.reader_epoch = next(self._epochs)
        part.pending.clear()
        self._ready.pop(part.tp, None)
        part.waiting_at = None
        part.failed = False
        self._bulletin.recovered(part.tp)
        self._stop_reader(part)
        assert self._readers is not None
        start = ReaderStart(part.tp, offset, part.reader_epoch, offset > part.high_watermark)
        part.reader = self._readers.start(start)

    def _stop_reader(self, part: Partition) -> None:
        if part.reader is not None:
            part.reader.stop()
            part.reader = None

    def _reset(self, part: Partition, offset: int) -> None:
        """Move ``part`` to ``offset``: what the facade holds of it is stale."""
        part.position = offset
        self._start_reader(part, offset, reset=True)
        self._moved.add(part.tp)
        self._commits.moved(part)

    def _refresh(self) -> None:
        assert self._readers is not None
        self._readers.refresh(tuple(sorted({tp.topic for tp in self._parts})))
        self._bulletin.recovered(None)  # the new refresh reports its own troubles

    def _waiting(self) -> set[TopicPartition]:
        """The partitions whose readers wait for new data (a failing refresh stalls them)."""
        return {tp for tp, p in self._parts.items() if p.waiting_at is not None}

    # -- what the readers and the refresh say ----------------------------------------

    def _on_batch(self, msg: Batch) -> None:
        part = self._parts.get(msg.tp)
        if part is None or msg.epoch != part.reader_epoch:
            return  # from a reader that was replaced
        records = msg.records
        if msg.start != part.expected:
            # Not where the partition is: refused, and the reader restarted
            # from what the facade was sent (what it holds stays valid; the
            # pending blocks are read again).
            _log.debug(
                "refused a batch of %s at %d: expected %d",
                name_of(msg.tp), msg.start, part.expected,
            )  # fmt: skip
            self._start_reader(part, part.fetched, reset=False)
            return
        part.pending.append(records)
        part.expected = records.next_offset
        self._probe.accepted(msg.tp, records, msg.size)
        if not part.paused:
            self._ready[msg.tp] = None

    def _on_at_end(self, msg: AtEnd) -> None:
        part = self._parts.get(msg.tp)
        if part is None or msg.epoch != part.reader_epoch:
            return
        part.waiting_at = msg.offset
        self._wake_if_behind(part)

    def _on_watermarks(self, msg: Watermarks) -> None:
        for s in msg.states:
            part = self._parts.get(TopicPartition(s.topic, s.partition))
            if part is None:
                continue
            part.log_start, part.high_watermark = s.log_start_offset, s.high_watermark
            self._wake_if_behind(part)
        now = anyio.current_time()
        if now >= self._probe.next_lags:
            self._probe.update_lags(self._parts.values(), now)

    def _wake_if_behind(self, part: Partition) -> None:
        if part.waiting_at is not None and part.high_watermark > part.waiting_at:
            part.waiting_at = None
            assert part.reader is not None
            part.reader.signal(ReaderSignal.WAKE)

    def _on_trouble(self, msg: Trouble | Recovered | Failed) -> None:
        if msg.tp is not None:
            part = self._parts.get(msg.tp)
            if part is None or msg.epoch != part.reader_epoch:
                return
        match msg:
            case Trouble():
                self._bulletin.trouble(msg.tp, msg.cause)
            case Recovered():
                self._bulletin.recovered(msg.tp)
            case Failed():
                self._parts[msg.tp].failed = True
                self._bulletin.failure(msg.tp, msg.error)

    def _out_of_range(self, part: Partition, offset: int, first: int) -> None:
        low = max(part.log_start, first)
        reset = self._settings.offset_reset
        if reset is OffsetReset.NONE:
            error = OffsetOutOfRangeError(
                f"offset {offset} of {name_of(part.tp)} is outside [{low}, "
                f"{part.high_watermark}] and offset_reset='none'; seek to go on"
            )
            self._stop_reader(part)
            part.failed = True
            self._bulletin.failure(part.tp, error)
            return
        target = low if reset is OffsetReset.EARLIEST else max(part.high_watermark, low)
        _log.info(
            "offset %d of %s is out of range [%d, %d]; reset to %d (offset_reset=%r)",
            offset, name_of(part.tp), low, part.high_watermark, target, reset.value,
        )  # fmt: skip
        self._reset(part, target)
        self._bulletin.epoch(part.tp, part.epoch)

    # -- polls ---------------------------------------------------------------------------

    def _answer_polls(self) -> None:
        now = math.nan
        while self._polls:
            poll = self._polls[0]
            if not poll.reply.wanted:
                self._polls.popleft()  # the asker has gone
                continue
            errors = self._bulletin.errors
            if errors:
                self._polls.popleft()
                error = errors.popleft()
                if not poll.reply.put(error):
                    errors.appendleft(error)
                continue
            if not self._ready:
                now = anyio.current_time() if math.isnan(now) else now
                if now < poll.deadline:
                    return
            self._polls.popleft()
            self._deliver(poll)

    def _deliver(self, poll: Poll) -> None:
        parts = self._parts
        blocks = [(parts[tp].epoch, records) for tp in self._ready for records in parts[tp].pending]
        if not poll.reply.put(blocks):
            return  # cancelled: the blocks stay pending for the next poll
        for tp in self._ready:
            part = parts[tp]
            part.fetched = part.expected
            assert part.reader is not None
            for _ in part.pending:
                part.reader.signal(ReaderSignal.CREDIT)
            part.pending.clear()
        self._ready.clear()

    def _on_delivered(self, msg: Delivered) -> None:
        parts = self._parts
        for tp, (epoch, offset) in msg.offsets.items():
            part = parts.get(tp)
            if part is None or part.epoch != epoch or not part.position <= offset <= part.fetched:
                continue  # records of a partition moved since: they do not count
            part.position = offset
            self._moved.add(tp)
            self._commits.uncommitted.add(tp)
        if msg.came_back and self._moved:
            for tp in self._moved:
                part = parts.get(tp)
                if part is not None:
                    part.consumed = part.position
            self._moved.clear()

    # -- requests -------------------------------------------------------------------------

    def _lags(self, partitions: frozenset[TopicPartition] | None) -> dict[TopicPartition, int]:
        chosen = self._parts.values() if partitions is None else map(self._part, partitions)
        self._probe.update_lags(self._parts.values(), anyio.current_time())  # as answered
        return {p.tp: max(0, p.high_watermark - p.position) for p in chosen}

    async def _close(self, msg: Close) -> None:
        self._closed = True
        for poll in self._polls:
            poll.reply.put(ClosedError("the consumer is closing"))
        self._polls.clear()
        parts = self._parts
        await answer_async(msg, lambda: self._commits.close_commit(msg.mode, parts))
