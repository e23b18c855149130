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
import contextlib
import functools
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import (
    ClosedError,
    InvalidArgumentError,
    MetadataUnavailableError,
    OffsetOutOfRangeError,
    RetriableError,
    StorageUnavailableError,
)
from .._metadata.protocol import MetadataStore
from .._retry import BurstLog, RetryPolicy
from .._types import OffsetReset, TopicPartition
from .cache import CacheClient
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
    HighWatermark,
    Lags,
    Notices,
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
    SeekTo,
    TakeNotices,
    Trouble,
    Watermarks,
    drain,
)
from .partitions import Partition, Troubles, names
from .reader import ReaderStart, name_of, run_reader, run_refresher

__all__ = ["Coordinator", "Settings"]

T = TypeVar("T")

_log = logging.getLogger("streamhouse.consumer")


@attrs.frozen
class Settings:
    group_id: str | None
    offset_reset: OffsetReset
    auto_commit: bool
    auto_commit_interval: float
    prefetch_batches: int
    refresh_interval: float
    stall_timeout: float
    retry: RetryPolicy


class Coordinator:
    """Created and run by the consumer's runtime; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        metadata: MetadataStore,
        cache: CacheClient,
        inbox: MemoryObjectReceiveStream[object],
        inbox_send: MemoryObjectSendStream[object],
        bell: MemoryObjectSendStream[None],
    ) -> None:
        self._settings = settings
        self._metadata = metadata
        self._cache = cache
        self._inbox = inbox
        self._inbox_send = inbox_send  # cloned for the readers and the refresh
        self._bell = bell  # rung when the facade must take Notices
        self._parts: dict[TopicPartition, Partition] = {}
        self._ready: dict[TopicPartition, None] = {}  # pending blocks, not paused
        self._moved: set[TopicPartition] = set()  # position moved since came back
        self._uncommitted: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self._polls: collections.deque[Poll] = collections.deque()
        self._epochs = itertools.count()  # facade-visible epochs, and readers'
        self._notice_epochs: dict[TopicPartition, int] = {}
        self._notice_assignment: frozenset[TopicPartition] | None = None
        self._errors: collections.deque[Exception] = collections.deque()
        self._troubles = Troubles(settings.stall_timeout)
        self._outage = BurstLog(_log, "reading")
        group = settings.group_id
        self._commit_log = BurstLog(_log, f"auto-commit of group {group!r}")
        self._next_auto_commit = math.inf
        self._refresh: anyio.CancelScope | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------

    async def run(
        self,
        partitions: Mapping[TopicPartition, PartitionStart],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with anyio.create_task_group() as tg, self._inbox_send, self._bell:
                self._tg = tg
                self._assign(partitions, initial=True)
                settings = self._settings
                if settings.auto_commit and settings.group_id is not None:
                    self._next_auto_commit = anyio.current_time() + settings.auto_commit_interval
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
                if part.control is not None:
                    part.control.close()
            drain(self._inbox)
            self._inbox.close()

    async def _next_message(self) -> object | None:
        try:
            # Without waiting, if a message is there already.
            return self._inbox.receive_nowait()
        except anyio.WouldBlock:
            wake = min(self._next_auto_commit, self._troubles.next_deadline())
            if self._polls:
                wake = min(wake, min(p.deadline for p in self._polls))
            with anyio.move_on_at(wake):
                return await self._inbox.receive()
        return None

    async def _after_message(self) -> None:
        now = math.nan
        if self._troubles:
            now = anyio.current_time()
            if now >= self._troubles.next_deadline():
                self._raise_due(now)
        if self._polls:
            self._answer_polls()
        if self._next_auto_commit != math.inf:
            now = anyio.current_time() if math.isnan(now) else now
            if now >= self._next_auto_commit:
                await self._auto_commit()

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
                    self._out_of_range(part, msg.offset, msg.first)
            case Close():
                await self._close(msg)
            case Request():
                await self._serve(msg)
            case _:  # pragma: no cover - nothing else is sent here
                raise AssertionError(f"unexpected message {msg!r}")

    async def _serve(self, req: Request[object]) -> None:
        """Answer a request; whatever goes wrong is the asker's answer, not our end."""
        match req:
            case TakeNotices():
                self._take_notices(req)
            case Position():
                self._answer(req, lambda: self._part(req.tp).position)
            case HighWatermark():
                self._answer(req, lambda: self._part(req.tp).high_watermark)
            case Lags():
                self._answer(req, lambda: self._lags(req.partitions))
            case Paused():
                self._answer(req, lambda: frozenset(self._paused))
            case Pause():
                self._answer(req, lambda: self._pause(req.partitions))
            case Resume():
                self._answer(req, lambda: self._resume(req.partitions))
            case Commit():
                await self._answer_async(req, lambda: self._commit_request(req.offsets))
            case Seek():
                await self._answer_async(req, lambda: self._seek(req.targets))
            case Committed():
                await self._answer_async(req, lambda: self._committed(req.tp))
            case Assign():
                self._answer(req, lambda: self._assign(req.partitions, initial=False))
            case Revoke():
                self._answer(req, lambda: self._revoke(req.partitions))
            case _:
                req.reply.put(InvalidArgumentError(f"unknown request {type(req).__name__}"))

    def _answer(self, req: Request[T], compute: Callable[[], T]) -> None:
        try:
            answer: T | Exception = compute()
        except Exception as exc:
            answer = exc
        req.reply.put(answer)

    async def _answer_async(self, req: Request[T], compute: Callable[[], Awaitable[T]]) -> None:
        try:
            answer: T | Exception = await compute()
        except Exception as exc:
            answer = exc
        req.reply.put(answer)

    def _part(self, tp: TopicPartition) -> Partition:
        part = self._parts.get(tp)
        if part is None:
            raise InvalidArgumentError(f"{name_of(tp)} is not assigned to this consumer")
        return part

    # -- readers -------------------------------------------------------------------

    def _start_reader(self, part: Partition, offset: int, *, reset: bool) -> None:
        """Read ``part`` from ``offset`` with a new reader; ``reset``: the facade's records go."""
        self._stop_reader(part)
        if reset:
            part.epoch = next(self._epochs)
            part.fetched = offset
        part.expected = offset
        part.reader_epoch = next(self._epochs)
        part.pending.clear()
        self._ready.pop(part.tp, None)
        part.waiting_at = None
        part.failed = False
        self._recovered(part.tp)
        depth = self._settings.prefetch_batches
        # Capacity depth + 1: the reader's credits (never more than depth in
        # all) and one WAKE, so that sending either never waits.
        control, control_receive = anyio.create_memory_object_stream[ReaderSignal](depth + 1)
        for _ in range(depth):
            control.send_nowait(ReaderSignal.CREDIT)
        part.control = control
        part.scope = anyio.CancelScope()
        assert self._tg is not None
        run = functools.partial(
            run_reader,
            ReaderStart(part.tp, offset, part.reader_epoch),
            metadata=self._metadata,
            cache=self._cache,
            retry=self._settings.retry,
            out=self._inbox_send.clone(),
            control=control_receive,
            scope=part.scope,
        )
        self._tg.start_soon(run)

    def _stop_reader(self, part: Partition) -> None:
        if part.scope is not None:
            part.scope.cancel()
            part.scope = None
        if part.control is not None:
            part.control.close()
            part.control = None

    def _reset(self, part: Partition, offset: int) -> None:
        """Move ``part`` to ``offset``: what the facade holds of it is stale."""
        part.position = offset
        self._start_reader(part, offset, reset=True)
        self._moved.add(part.tp)
        self._uncommitted.add(part.tp)

    def _restart_refresh(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            self._recovered(None)  # the new refresh reports its own troubles
        self._refresh = anyio.CancelScope()
        topics = tuple(sorted({tp.topic for tp in self._parts}))
        assert self._tg is not None
        self._tg.start_soon(
            functools.partial(
                run_refresher,
                topics,
                metadata=self._metadata,
                interval=self._settings.refresh_interval,
                retry=self._settings.retry,
                out=self._inbox_send.clone(),
                scope=self._refresh,
            )
        )

    # -- what the readers and the refresh say ----------------------------------------

    def _on_batch(self, msg: Batch) -> None:
        part = self._parts.get(msg.tp)
        if part is None or msg.epoch != part.reader_epoch:
            return  # from a reader that was replaced
        records = msg.records
        if records.first_offset != part.expected:
            # Not where the partition is: refused, and the reader restarted
            # from the offset expected (what the facade holds stays valid).
            _log.debug(
                "refused a batch of %s at %d: expected %d",
                name_of(msg.tp), records.first_offset, part.expected,
            )  # fmt: skip
            self._start_reader(part, part.fetched, reset=False)
            return
        part.pending.append(records)
        part.expected = records.next_offset
        if not part.paused:
            self._ready[msg.tp] = None

    def _on_at_end(self, msg: AtEnd) -> None:
        part = self._parts.get(msg.tp)
        if part is None or msg.epoch != part.reader_epoch:
            return
        part.waiting_at = msg.offset
        part.waiting_since = anyio.current_time()
        self._wake_if_behind(part)

    def _on_watermarks(self, msg: Watermarks) -> None:
        for s in msg.states:
            part = self._parts.get(TopicPartition(s.topic, s.partition))
            if part is None:
                continue
            part.log_start, part.high_watermark = s.log_start_offset, s.high_watermark
            waiting = part.waiting_at
            if waiting is None:
                continue
            if s.high_watermark > waiting:
                self._wake_if_behind(part)
            elif waiting > s.high_watermark and msg.asked_at >= part.waiting_since:
                # Past the end, by a query asked after the reader looked:
                # out of range, as in Kafka.
                self._out_of_range(part, waiting, None)

    def _wake_if_behind(self, part: Partition) -> None:
        if part.waiting_at is not None and part.high_watermark > part.waiting_at:
            part.waiting_at = None
            assert part.control is not None
            part.control.send_nowait(ReaderSignal.WAKE)

    def _on_trouble(self, msg: Trouble | Recovered | Failed) -> None:
        if msg.tp is not None:
            part = self._parts.get(msg.tp)
            if part is None or msg.epoch != part.reader_epoch:
                return
        now = anyio.current_time()
        match msg:
            case Trouble():
                self._troubles.failed(msg.tp, msg.cause, now, transient=True)
                if not self._outage.failing:
                    first = "the high watermarks" if msg.tp is None else name_of(msg.tp)
                    self._outage.what = f"reading ({first} first)"
                self._outage.failed(msg.cause)
            case Recovered():
                self._recovered(msg.tp)
            case Failed():
                _log.error("reading %s stopped: %s", name_of(msg.tp), msg.error)
                self._parts[msg.tp].failed = True
                self._troubles.failed(msg.tp, msg.error, now, transient=False)

    def _recovered(self, source: TopicPartition | None) -> None:
        self._troubles.recovered(source)
        if not self._troubles.transient and self._outage.failing:
            self._outage.succeeded()

    def _out_of_range(self, part: Partition, offset: int, first: int | None) -> None:
        low = part.log_start if first is None else max(part.log_start, first)
        reset = self._settings.offset_reset
        if reset is OffsetReset.NONE:
            error = OffsetOutOfRangeError(
                f"offset {offset} of {name_of(part.tp)} is outside [{low}, "
                f"{part.high_watermark}] and offset_reset='none'; seek to go on"
            )
            self._stop_reader(part)
            part.failed = True
            self._troubles.failed(part.tp, error, anyio.current_time(), transient=False)
            return
        target = low if reset is OffsetReset.EARLIEST else max(part.high_watermark, low)
        _log.info(
            "offset %d of %s is out of range [%d, %d]; reset to %d (offset_reset=%r)",
            offset, name_of(part.tp), low, part.high_watermark, target, reset.value,
        )  # fmt: skip
        self._reset(part, target)
        self._notice_epochs[part.tp] = part.epoch
        self._ring()

    # -- notices for the facade -------------------------------------------------------

    def _ring(self) -> None:
        """Make the facade take Notices before it hands out anything more."""
        # WouldBlock: rung already; the others: nobody listens any more.
        with contextlib.suppress(
            anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
        ):
            self._bell.send_nowait(None)

    def _take_notices(self, req: TakeNotices) -> None:
        notices = Notices(
            self._notice_epochs,
            self._notice_assignment,
            self._errors.popleft() if self._errors else None,
        )
        if req.reply.put(notices):
            self._notice_epochs = {}
            self._notice_assignment = None
        elif notices.error is not None:
            self._errors.appendleft(notices.error)
        if self._errors:
            self._ring()

    def _raise_due(self, now: float) -> None:
        stuck: list[TopicPartition | None] = []
        last: Exception | None = None
        for source, cause, transient in self._troubles.take_due(now):
            if transient:
                stuck.append(source)
                last = cause
            else:
                self._errors.append(cause)
        if last is not None:
            self._errors.append(self._stall_error(stuck, last))
        if self._errors:
            self._ring()

    def _stall_error(self, sources: list[TopicPartition | None], last: Exception) -> Exception:
        tps = {tp for tp in sources if tp is not None}
        if None in sources:  # the refresh: those waiting for new data are stuck too
            tps |= {tp for tp, p in self._parts.items() if p.waiting_at is not None}
        what = names(tps) if tps else "the high watermark refresh"
        timeout = self._settings.stall_timeout
        kind = (
            MetadataUnavailableError
            if isinstance(last, MetadataUnavailableError)
            else StorageUnavailableError
        )
        error = kind(f"no progress on {what} for {timeout:g} s because of errors; last: {last}")
        error.__cause__ = last
        return error

    # -- polls ---------------------------------------------------------------------------

    def _answer_polls(self) -> None:
        now = math.nan
        while self._polls:
            poll = self._polls[0]
            if not poll.reply.wanted:
                self._polls.popleft()  # the asker has gone
                continue
            if self._errors:
                self._polls.popleft()
                error = self._errors.popleft()
                if not poll.reply.put(error):
                    self._errors.appendleft(error)
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
            assert part.control is not None
            for _ in part.pending:
                part.control.send_nowait(ReaderSignal.CREDIT)
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
            self._uncommitted.add(tp)
        if msg.came_back and self._moved:
            for tp in self._moved:
                part = parts.get(tp)
                if part is not None:
                    part.consumed = part.position
            self._moved.clear()

    # -- requests -------------------------------------------------------------------------

    def _lags(self, partitions: frozenset[TopicPartition] | None) -> dict[TopicPartition, int]:
        chosen = self._parts.values() if partitions is None else map(self._part, partitions)
        return {p.tp: max(0, p.high_watermark - p.position) for p in chosen}

    def _pause(self, partitions: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        parts = [self._part(tp) for tp in partitions]
        epochs = {}
        for part in parts:
            part.paused = True
            self._paused.add(part.tp)
            # What the facade held goes back: the reader starts again at the
            # position, and reads ahead (bounded) while the partition waits.
            self._start_reader(part, part.position, reset=True)
            epochs[part.tp] = part.epoch
        return epochs

    def _resume(self, partitions: frozenset[TopicPartition]) -> None:
        for part in [self._part(tp) for tp in partitions]:
            part.paused = False
            self._paused.discard(part.tp)
            if part.pending:
                self._ready[part.tp] = None

    async def _seek(
        self, targets: Mapping[TopicPartition, int | SeekTo]
    ) -> dict[TopicPartition, int]:
        parts = {tp: self._part(tp) for tp in targets}
        symbolic = sorted({tp.topic for tp, to in targets.items() if isinstance(to, SeekTo)})
        if symbolic:
            for s in await self._metadata.partition_states(symbolic):
                part = self._parts.get(TopicPartition(s.topic, s.partition))
                if part is not None:
                    part.log_start, part.high_watermark = s.log_start_offset, s.high_watermark
        epochs = {}
        for tp, to in targets.items():
            part = parts[tp]
            if to is SeekTo.BEGINNING:
                self._reset(part, part.log_start)
            elif to is SeekTo.END:
                self._reset(part, part.high_watermark)
            else:
                self._reset(part, to)
            epochs[tp] = part.epoch
        return epochs

    async def _committed(self, tp: TopicPartition) -> int | None:
        self._part(tp)
        if self._settings.group_id is None:
            return None
        found = await self._metadata.fetch_offsets(self._settings.group_id, [tp])
        return found[tp].offset if tp in found else None

    # -- commits ------------------------------------------------------------------------------

    async def _commit_request(self, offsets: Mapping[TopicPartition, int] | None) -> None:
        if offsets is None:
            await self._commit_by(CloseMode.POSITIONS)
        else:
            await self._commit(offsets)

    async def _commit_by(self, mode: CloseMode) -> None:
        """Commit every position (or consumed offset) that differs from its commit."""
        if mode is CloseMode.NOTHING:
            return
        offsets = {}
        for tp in self._uncommitted:
            part = self._parts[tp]
            offset = part.position if mode is CloseMode.POSITIONS else part.consumed
            if offset != part.committed:
                offsets[tp] = offset
        await self._commit(offsets)

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        group = self._settings.group_id
        if group is None:
            raise InvalidArgumentError("commit needs a group_id: open the consumer with one")
        if not offsets:
            return
        await self._metadata.commit_offsets(group, offsets)
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed = offset
                if part.uncommitted:
                    self._uncommitted.add(tp)
                else:
                    self._uncommitted.discard(tp)

    async def _auto_commit(self) -> None:
        self._next_auto_commit = anyio.current_time() + self._settings.auto_commit_interval
        try:
            await self._commit_by(CloseMode.CONSUMED)
        except RetriableError as exc:
            self._commit_log.failed(exc)  # tried again at the next interval
        except Exception as exc:
            _log.error("auto-commit of group %r failed: %r", self._settings.group_id, exc)
        else:
            self._commit_log.succeeded()

    async def _close(self, msg: Close) -> None:
        self._closed = True
        for poll in self._polls:
            poll.reply.put(ClosedError("the consumer is closing"))
        self._polls.clear()
        await self._answer_async(msg, lambda: self._commit_by(msg.mode))

    # -- assignment --------------------------------------------------------------------

    def _assign(
        self, partitions: Mapping[TopicPartition, PartitionStart], *, initial: bool
    ) -> None:
        topics = {tp.topic for tp in self._parts}
        for tp, start in partitions.items():
            part = self._parts.get(tp)
            if part is None:
                part = self._parts[tp] = Partition.start(tp, start)
                self._start_reader(part, part.position, reset=True)
                if part.uncommitted:
                    self._uncommitted.add(tp)
            else:
                part.committed = start.committed
                self._reset(part, start.position)
                self._notice_epochs[tp] = part.epoch
        if {tp.topic for tp in self._parts} != topics:
            self._restart_refresh()
        if not initial:
            self._notice_assignment = frozenset(self._parts)
            self._ring()

    def _revoke(self, partitions: Iterable[TopicPartition]) -> None:
        topics = {tp.topic for tp in self._parts}
        for tp in partitions:
            part = self._parts.pop(tp, None)
            if part is None:
                continue
            self._stop_reader(part)
            self._recovered(tp)
            self._ready.pop(tp, None)
            for tps in (self._moved, self._uncommitted, self._paused):
                tps.discard(tp)
            self._notice_epochs[tp] = next(self._epochs)
        if {tp.topic for tp in self._parts} != topics:
            self._restart_refresh()
        self._notice_assignment = frozenset(self._parts)
        self._ring()
