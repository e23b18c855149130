"""The coordinator actor: the one owner of the consumer's state.

It holds, per assigned partition, the position (next offset to deliver), the
committed offset, the epoch, the batches its reader has sent and not yet
delivered, and whether it is paused. It answers every request of the facade
and receives every message of the readers, from one inbox, one at a time, so
no state is ever shared.

Delivery: a poll is answered with every block waiting for a partition that
is not paused; the facade holds them and shares them out to the
application's polls (``_held``). The answer goes over a capacity-0 channel:
positions move only once the facade has taken the blocks. If the facade was
cancelled, the send fails and the blocks stay for the next poll.

Commits: ``commit()`` writes every position that differs from its committed
offset (backwards too, after a seek). Auto-commit writes, at each interval,
the positions *as of the previous poll request*: a record is committed only
after the application had it and came back for more (at-least-once).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import (
    ClosedError,
    InvalidArgumentError,
    OffsetOutOfRangeError,
    StreamHouseError,
)
from .._metadata.protocol import MetadataStore, PartitionState
from .._types import TopicPartition
from .cache import CacheClient
from .messages import (
    CREDIT,
    WAKE,
    AtEnd,
    Batch,
    Close,
    Commit,
    OutOfRange,
    Pause,
    Poll,
    Progress,
    Query,
    Reply,
    Seek,
    Watermarks,
    drain,
)
from .reader import run_reader

__all__ = ["Coordinator", "Settings"]


@attrs.frozen
class Settings:
    group_id: str | None
    offset_reset: str  # "earliest", "latest" or "none"
    auto_commit: bool
    auto_commit_interval: float
    prefetch_batches: int
    refresh_interval: float


@attrs.define(eq=False)
class _Partition:
    tp: TopicPartition
    position: int
    committed: int | None
    log_start: int
    high_watermark: int
    epoch: int = 0
    pending: collections.deque[Batch] = attrs.Factory(collections.deque)
    paused: bool = False
    waiting_at: int | None = None  # the reader waits at this offset for data
    scope: anyio.CancelScope | None = None
    control: MemoryObjectSendStream[str] | None = None


def resolve_start(
    states: Sequence[PartitionState],
    committed: Mapping[TopicPartition, int],
    reset: str,
) -> dict[TopicPartition, int]:
    """Where each partition starts: its committed offset, or the reset policy.

    Raises:
        OffsetOutOfRangeError: policy "none" and some partition has no valid
            committed offset; the message names them all.
    """
    starts: dict[TopicPartition, int] = {}
    missing = []
    for s in states:
        tp = TopicPartition(s.topic, s.partition)
        offset = committed.get(tp)
        if offset is not None and s.log_start_offset <= offset <= s.high_watermark:
            starts[tp] = offset
        elif reset == "earliest":
            starts[tp] = s.log_start_offset
        elif reset == "latest":
            starts[tp] = s.high_watermark
        else:
            missing.append(f"{tp.topic}[{tp.partition}]")
    if missing:
        raise OffsetOutOfRangeError(
            "no valid committed offset and offset_reset='none' for " + ", ".join(missing)
        )
    return starts


class Coordinator:
    """Created and run by the consumer's runtime; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        metadata: MetadataStore,
        cache: CacheClient,
        states: Sequence[PartitionState],
        committed: Mapping[TopicPartition, int],
        starts: Mapping[TopicPartition, int],
        inbox: MemoryObjectReceiveStream[object],
        inbox_send: MemoryObjectSendStream[object],
    ) -> None:
        self._settings = settings
        self._metadata = metadata
        self._cache = cache
        self._inbox = inbox
        self._inbox_send = inbox_send
        self._parts = {
            TopicPartition(s.topic, s.partition): _Partition(
                TopicPartition(s.topic, s.partition),
                starts[TopicPartition(s.topic, s.partition)],
                committed.get(TopicPartition(s.topic, s.partition)),
                s.log_start_offset,
                s.high_watermark,
            )
            for s in states
        }
        self._polls: collections.deque[Poll] = collections.deque()
        self._last_poll_positions: dict[TopicPartition, int] | None = None
        self._next_auto_commit = math.inf
        self._error: StreamHouseError | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    # -- lifecycle -------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with anyio.create_task_group() as tg, self._inbox_send:
                self._tg = tg
                for part in self._parts.values():
                    self._start_reader(part)
                tg.start_soon(self._refresh_watermarks, self._inbox_send.clone())
                if self._settings.auto_commit and self._settings.group_id is not None:
                    interval = self._settings.auto_commit_interval
                    self._next_auto_commit = anyio.current_time() + interval
                task_status.started()
                closed = False
                while not closed:
                    msg: object = None
                    try:
                        # Without waiting, if a message is there already.
                        msg = self._inbox.receive_nowait()
                    except anyio.WouldBlock:
                        deadline = min([p.deadline for p in self._polls], default=math.inf)
                        with anyio.move_on_at(min(deadline, self._next_auto_commit)):
                            msg = await self._inbox.receive()
                    if msg is not None:
                        closed = await self._handle(msg)
                    await self._answer_polls()
                    if anyio.current_time() >= self._next_auto_commit:
                        await self._auto_commit()
                tg.cancel_scope.cancel()
        finally:
            # Whatever stopped us: tell every asker, close every channel end.
            for poll in self._polls:
                poll.reply.close()
            for part in self._parts.values():
                if part.control is not None:
                    part.control.close()
            drain(self._inbox)
            self._inbox.close()

    def _start_reader(self, part: _Partition) -> None:
        assert self._tg is not None
        if part.scope is not None:
            part.scope.cancel()
        if part.control is not None:
            part.control.close()
        part.epoch += 1
        part.pending.clear()
        part.waiting_at = None
        depth = self._settings.prefetch_batches
        control, control_receive = anyio.create_memory_object_stream[str](depth + 2)
        for _ in range(depth):
            control.send_nowait(CREDIT)
        part.control = control
        scope = part.scope = anyio.CancelScope()
        out = self._inbox_send.clone()

        async def reader() -> None:
            # The channel ends are closed here even if the reader is
            # cancelled before it starts.
            with scope, out, control_receive:
                await run_reader(
                    part.tp, part.position, part.epoch, metadata=self._metadata,
                    cache=self._cache, out=out, control=control_receive,
                )  # fmt: skip

        self._tg.start_soon(reader)

    async def _refresh_watermarks(self, out: MemoryObjectSendStream[object]) -> None:
        # One query serves every assigned partition, however many there are.
        topics = sorted({tp.topic for tp in self._parts})
        with out:
            while True:
                await anyio.sleep(self._settings.refresh_interval)
                states = await self._metadata.partition_states(topics)
                await out.send(Watermarks(states))

    # -- messages ----------------------------------------------------------------

    async def _handle(self, msg: object) -> bool:
        """Handle one message; True when the consumer is closing."""
        if isinstance(msg, Batch):
            part = self._parts[msg.tp]
            if msg.epoch == part.epoch:
                part.pending.append(msg)
        elif isinstance(msg, AtEnd):
            part = self._parts[msg.tp]
            if msg.epoch == part.epoch:
                part.waiting_at = msg.offset
                self._wake_if_behind(part)
        elif isinstance(msg, OutOfRange):
            part = self._parts[msg.tp]
            if msg.epoch == part.epoch:
                await self._reset_out_of_range(part)
        elif isinstance(msg, Watermarks):
            for s in msg.states:
                tp = TopicPartition(s.topic, s.partition)
                part_or_none = self._parts.get(tp)
                if part_or_none is not None:
                    part_or_none.log_start = s.log_start_offset
                    part_or_none.high_watermark = s.high_watermark
                    self._wake_if_behind(part_or_none)
        elif isinstance(msg, Poll):
            self._polls.append(msg)
            if self._error is None:
                self._last_poll_positions = {tp: p.position for tp, p in self._parts.items()}
        elif isinstance(msg, Progress):
            if self._error is None:
                self._last_poll_positions = {
                    tp: msg.unread.get(tp, p.position) for tp, p in self._parts.items()
                }
        elif isinstance(msg, Close):
            try:
                outcome = await self._close(msg.final, msg.unread)
            except BaseException:
                msg.reply.close()
                raise
            await self._reply(msg.reply, outcome)
            return True
        else:
            await self._request(msg)
        return False

    def _wake_if_behind(self, part: _Partition) -> None:
        if part.waiting_at is not None and part.high_watermark > part.waiting_at:
            part.waiting_at = None
            assert part.control is not None
            part.control.send_nowait(WAKE)

    async def _reset_out_of_range(self, part: _Partition) -> None:
        states = await self._metadata.partition_states([part.tp.topic])
        for s in states:
            if s.partition == part.tp.partition:
                part.log_start, part.high_watermark = s.log_start_offset, s.high_watermark
        reset = self._settings.offset_reset
        if reset == "none":
            self._error = OffsetOutOfRangeError(
                f"offset {part.position} of {part.tp.topic}[{part.tp.partition}] is outside "
                f"[{part.log_start}, {part.high_watermark}] and offset_reset='none'"
            )
            return
        part.position = part.log_start if reset == "earliest" else part.high_watermark
        self._start_reader(part)

    async def _request(self, msg: object) -> None:
        reply: Reply = msg.reply  # type: ignore[attr-defined]
        try:
            answer = await self._serve(msg)
        except StreamHouseError as exc:
            answer = exc
        except BaseException:
            reply.close()  # cancelled mid-request: the asker learns it
            raise
        await self._reply(reply, answer)

    async def _serve(self, msg: object) -> Any:
        if isinstance(msg, Commit):
            if msg.offsets is None:
                return await self._commit({tp: p.position for tp, p in self._parts.items()})
            return await self._commit(msg.offsets, only_changed=False)
        if isinstance(msg, Seek):
            part = self._part(msg.tp)
            if msg.offset in ("earliest", "latest"):
                for s in await self._metadata.partition_states([msg.tp.topic]):
                    if s.partition == msg.tp.partition:
                        part.log_start, part.high_watermark = s.log_start_offset, s.high_watermark
                offset = part.log_start if msg.offset == "earliest" else part.high_watermark
            else:
                offset = int(msg.offset)
            part.position = offset
            self._start_reader(part)
            return None
        if isinstance(msg, Pause):
            for tp in msg.tps:
                self._part(tp).paused = msg.paused
            return None
        if isinstance(msg, Query):
            if msg.what == "assignment":
                return frozenset(self._parts)
            if msg.what == "paused":
                return frozenset(tp for tp, p in self._parts.items() if p.paused)
            assert msg.tp is not None
            part = self._part(msg.tp)
            if msg.what == "position":
                return part.position
            if msg.what == "committed":
                if self._settings.group_id is None:
                    return None
                found = await self._metadata.fetch_offsets(self._settings.group_id, [msg.tp])
                return found[msg.tp].offset if msg.tp in found else None
            if msg.what == "watermarks":
                return (part.log_start, part.high_watermark)
        raise InvalidArgumentError(f"unknown request {msg!r}")

    def _part(self, tp: TopicPartition) -> _Partition:
        part = self._parts.get(tp)
        if part is None:
            raise InvalidArgumentError(
                f"{tp.topic}[{tp.partition}] is not assigned to this consumer"
            )
        return part

    async def _reply(self, reply: Reply, answer: object) -> bool:
        """Hand ``answer`` over; False when the asker has gone (was cancelled)."""
        with reply:
            try:
                try:
                    # The asker usually waits already: no trip through the
                    # scheduler needed.
                    reply.send_nowait(answer)
                except anyio.WouldBlock:
                    await reply.send(answer)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return False
        return True

    # -- polls ---------------------------------------------------------------------

    async def _answer_polls(self) -> None:
        while self._polls:
            poll = self._polls[0]
            if self._error is not None:
                self._polls.popleft()
                await self._reply(poll.reply, self._error)
                continue
            ready = [p for p in self._parts.values() if p.pending and not p.paused]
            if not ready and anyio.current_time() < poll.deadline:
                return
            self._polls.popleft()
            blocks = [batch.records for p in ready for batch in p.pending]
            if await self._reply(poll.reply, blocks):
                for part in ready:
                    part.position = part.pending[-1].records.next_offset
                    assert part.control is not None
                    for _ in part.pending:
                        part.control.send_nowait(CREDIT)
                    part.pending.clear()

    # -- commits -----------------------------------------------------------------

    async def _commit(
        self, offsets: Mapping[TopicPartition, int], *, only_changed: bool = True
    ) -> None:
        group = self._settings.group_id
        if group is None:
            raise InvalidArgumentError("commit needs a group_id: open the consumer with one")
        if only_changed:
            offsets = {tp: o for tp, o in offsets.items() if self._parts[tp].committed != o}
        if not offsets:
            return
        await self._metadata.commit_offsets(group, offsets)
        for tp, offset in offsets.items():
            if tp in self._parts:
                self._parts[tp].committed = offset

    async def _auto_commit(self) -> None:
        self._next_auto_commit = anyio.current_time() + self._settings.auto_commit_interval
        if self._last_poll_positions:
            await self._commit(self._last_poll_positions)

    async def _close(
        self, final: str, unread: Mapping[TopicPartition, int]
    ) -> StreamHouseError | None:
        for poll in self._polls:
            await self._reply(poll.reply, ClosedError("the consumer is closing"))
        self._polls.clear()
        try:
            if self._settings.group_id is not None:
                if final == "current":
                    positions = {tp: p.position for tp, p in self._parts.items()}
                    await self._commit({**positions, **unread})
                elif final == "last-poll" and self._last_poll_positions:
                    await self._commit(self._last_poll_positions)
        except StreamHouseError as exc:
            return exc
        return None
