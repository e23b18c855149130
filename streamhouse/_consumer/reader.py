"""The reader actor (one per assigned partition) and the watermark refresh.

A reader walks its partition's segments from its start offset: looks them up
in the metadata store, fetches their bytes through the cache actor, decodes
them block by block and sends each block, as columns, to the coordinator as
a Batch. It is started with its start offset and epoch as values and shares
nothing with the coordinator.

``offset`` is the next offset the reader has not sent, and it never moves
back: after any transient error (the store or the database unreachable) the
reader waits by the retry policy and goes on from exactly there, never from
the start of a segment it has sent part of. A segment whose bytes fail their
checksums is fetched afresh once (perhaps only the cached copy was bad); a
second failure is the object's own, and the reader reports it (Failed) and
stops until the application seeks.

Flow control is by credits: the reader sends a batch only when it holds a
credit, and the coordinator hands a credit back when the facade has taken a
batch. The prefetch depth is the number of credits a reader starts with; it
bounds the memory a partition can take however large its backlog is.

At the high watermark the reader says so (AtEnd) and waits for a WAKE, which
the coordinator sends when its one watermark query for all partitions shows
more data. A reader started past the high watermark the coordinator knows
asks the partition's bounds once when it finds nothing: an offset past the
end is out of range (as in Kafka), and so is one below the first segment
left. A seek does not talk to the reader: the coordinator cancels it and
starts a new one with a new epoch, and drops any message of the old epoch.

Maintenance (docs/MAINTENANCE.md) changes the catalogue under a reader. A
compacted partition has offsets that hold no record, inside segments (a
block then carries its offsets, and so does its RecordBatch) and between
them; a Batch says where the reader was (``start``), so a gap before its
first record is covered. A segment looked up before maintenance rewrote or
retired it may lose its object (after the grace): the reader looks up
again from exactly its offset, and finds the same records in the new
segment, or that retention removed them (out of range).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import anyio
import anyio.abc
import attrs
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._codec import DecodedBlock, decode_block, iter_segment, read_index
from .._errors import CorruptDataError, ObjectNotFoundError, RetriableError, StreamHouseError
from .._metadata.protocol import MetadataStore, SegmentInfo
from .._retry import Backoff, RetryPolicy
from .._types import RecordBatch, TopicPartition
from .cache import CacheClient
from .coalesce import group_at, merge_blocks
from .lookups import Lookups
from .messages import (
    AtEnd,
    Batch,
    Failed,
    OutOfRange,
    ReaderSignal,
    Recovered,
    Trouble,
    name_of,
)
from .refresh import run_refresher

__all__ = [
    "SEGMENTS_AHEAD",
    "ReaderHandle",
    "ReaderStart",
    "Readers",
    "run_reader",
]

_SEGMENTS_PER_LOOKUP = 16
SEGMENTS_AHEAD = 2


@attrs.frozen
class ReaderStart:
    """Where a reader starts, and the epoch its messages carry.

    ``check_end``: the offset is past the high watermark the coordinator
    knows; if the reader finds nothing there, it asks the partition's bounds
    once, since the offset may be past the end (out of range). A reader
    woken (the coordinator knows of records past it) that finds nothing asks
    too: retention may have removed them (below the log start: out of range).
    """

    tp: TopicPartition
    offset: int
    epoch: int
    check_end: bool = False


class _Reader:
    def __init__(
        self,
        start: ReaderStart,
        metadata: MetadataStore,
        lookups: Lookups,
        cache: CacheClient,
        retry: RetryPolicy,
        out: MemoryObjectSendStream[object],
        control: MemoryObjectReceiveStream[ReaderSignal],
    ) -> None:
        self.tp = start.tp
        self.epoch = start.epoch
        self.offset = start.offset  # the next offset not sent: it never moves back
        self.metadata = metadata
        self.lookups = lookups
        self.cache = cache
        self.out = out
        self.control = control
        self.backoff = Backoff(retry)
        self.credits = 0
        self.check_end = start.check_end

    async def run(self) -> None:
        while True:
            try:
                await self.read_on()
            except RetriableError as exc:
                await self.out.send(Trouble(self.tp, self.epoch, exc))
                await self.backoff.wait()
            except StreamHouseError as exc:
                await self.out.send(Failed(self.tp, self.epoch, exc))
                await anyio.sleep_forever()

    async def progressed(self) -> None:
        """The reader moved on (sent a batch, or reached the end): a burst of failures ended.

        Not any call that succeeds: with the store down and the database up,
        every lookup works and no record moves.
        """
        if self.backoff.succeeded():
            await self.out.send(Recovered(self.tp, self.epoch))

    async def read_on(self) -> None:
        """Look the next segments up and send them; at the end, wait for more."""
        tp = self.tp
        segments = await self.lookups.list_segments(tp, self.offset, _SEGMENTS_PER_LOOKUP)
        if not segments:
            if self.check_end:
                await self.check_bounds()
            await self.at_end()
            return
        self.check_end = False  # found records: an empty lookup later is the end
        if segments[0].base_offset > self.offset and not await self.in_a_gap():
            # The offset is gone (deleted by retention): the coordinator
            # decides where to go, and starts a new reader there.
            await self.out.send(OutOfRange(tp, self.epoch, self.offset, segments[0].base_offset))
            await anyio.sleep_forever()
        i = 0
        while i < len(segments):
            group = group_at(segments, i, self.offset)
            ahead = segments[i + max(1, len(group)) :][:SEGMENTS_AHEAD]
            # The next segments download while these are decoded.
            for nxt in ahead:
                await self.cache.prefetch(nxt.object_key, nxt.position, nxt.position + nxt.length)
            if group and await self.send_group(group):
                i += len(group)
                continue
            for seg in group or segments[i : i + 1]:
                if not await self.read_segment(seg):
                    return  # look the segments up again, from where we are
            i += max(1, len(group))
        if len(segments) < _SEGMENTS_PER_LOOKUP - 1:
            # The lookup ended before its limit: these were the last segments
            # (as of it), and one more lookup would find none. (A lookup may
            # drop one segment, wholly below the offset, hence the 1.)
            await self.at_end()

    async def read_segment(self, seg: SegmentInfo) -> bool:
        """Send the records of ``seg`` from our offset on; False: its object
        has gone, and the segments must be looked up again."""
        try:
            await self.send_segment(seg, refresh=False)
        except ObjectNotFoundError:
            await self.check_moved(seg)
            return False
        except CorruptDataError:
            # Perhaps only the cached copy is bad: fetch afresh once, from
            # where we are; a second failure is the object's own.
            try:
                await self.send_segment(seg, refresh=True)
            except CorruptDataError as exc:
                raise CorruptDataError(
                    exc.name,
                    exc.position,
                    f"{exc.reason}; partition {name_of(self.tp)}, segment of offsets "
                    f"{seg.base_offset}..{seg.end_offset - 1}, next offset {self.offset}",
                ) from exc
        return True

    async def send_group(self, group: Sequence[SegmentInfo]) -> bool:
        """Send the records of ``group`` (whole segments from our offset on)
        as one batch (module coalesce); False: something went wrong, nothing
        was sent, and the segments must be read one by one."""
        try:
            datas = await self.cache.get_many(
                [(seg.object_key, seg.position, seg.position + seg.length) for seg in group]
            )
            blocks = [
                (seg.base_offset, block)
                for seg, data in zip(group, datas, strict=True)
                for block in iter_segment(data, name=seg.object_key, base=seg.position)
            ]
        except (ObjectNotFoundError, CorruptDataError):
            return False
        records = merge_blocks(self.tp, blocks)  # (an index allows no empty block)
        size = sum(seg.length for seg in group)
        await self.take_credit()
        await self.out.send(Batch(self.tp, self.epoch, records, self.offset, size))
        self.offset = records.next_offset
        await self.progressed()
        return True

    async def at_end(self) -> None:
        """Say we have everything below our offset, and wait to be woken."""
        await self.progressed()
        await self.out.send(AtEnd(self.tp, self.epoch, self.offset))
        await self.wait_for_wake()
        # Woken, the coordinator knows of records past our offset: if the
        # next lookup finds none, retention removed them (check_bounds).
        self.check_end = True

    async def in_a_gap(self) -> bool:
        """Whether the offsets between ours and the next segment are a gap that
        compaction left inside the log, rather than gone below its start."""
        for state in await self.metadata.partition_states([self.tp.topic]):
            if state.partition == self.tp.partition:
                return self.offset >= state.log_start_offset
        return False

    async def check_moved(self, seg: SegmentInfo) -> None:
        """The object of a segment we looked up is gone: maintenance rewrote or
        removed the segment since, and deleted the object after its grace.
        Reading goes on from where we are (the same records, at the same
        offsets, or out of range); unless the catalogue still points at it.

        Raises:
            ObjectNotFoundError: the catalogue still points at the missing object.
        """
        tp = self.tp
        now = await self.metadata.list_segments(tp.topic, tp.partition, self.offset, limit=1)
        if now and now[0].object_key == seg.object_key and now[0].position == seg.position:
            raise ObjectNotFoundError(
                f"object {seg.object_key!r} of partition {name_of(tp)} (offsets "
                f"{seg.base_offset}..{seg.end_offset - 1}) is missing from the object store"
            )

    async def check_bounds(self) -> None:
        """Nothing at our offset, where something may be expected: past the end
        is out of range, as in Kafka, and so is below the log start (retention
        removed every segment from there on)."""
        tp = self.tp
        for state in await self.metadata.partition_states([tp.topic]):
            if state.partition == tp.partition and not (
                state.log_start_offset <= self.offset <= state.high_watermark
            ):
                await self.out.send(
                    OutOfRange(tp, self.epoch, self.offset, state.log_start_offset,
                               state.high_watermark)
                )  # fmt: skip
                await anyio.sleep_forever()  # the coordinator starts a new reader
        self.check_end = False  # at the end, not past it: later ends are natural

    async def send_segment(self, seg: SegmentInfo, *, refresh: bool) -> None:
        """Send the records of ``seg`` from ``self.offset`` on."""
        key, pos, length = seg.object_key, seg.position, seg.length
        relative = self.offset - seg.base_offset
        if relative <= 0 or refresh:
            # (Below 0: a gap compaction left before the segment.)
            # Reading in order (or afresh): one GET for the whole segment.
            data = await self.cache.get(key, pos, pos + length, refresh=refresh, segment=True)
            for block in iter_segment(data, name=key, base=pos, from_offset=relative):
                await self.send_block(seg, block)
            return
        # Starting inside the segment: the index, then only the blocks needed.
        tail = await self.cache.get(key, pos + length - seg.index_length, pos + length)
        index = read_index(tail, segment_length=length, name=key, base=pos)
        for entry in index.entries[index.block_for(relative) :]:
            start = pos + entry.position
            raw = await self.cache.get(key, start, start + entry.size)
            block = decode_block(raw, name=key, base=start, entry=entry)
            await self.send_block(seg, block.since(self.offset - seg.base_offset))

    async def send_block(self, seg: SegmentInfo, block: DecodedBlock) -> None:
        base = seg.base_offset
        # A block with gaps (compaction) carries its offsets; one without, none.
        offsets = None if block.offsets is None else [base + o for o in block.offsets]
        records = RecordBatch(
            self.tp.topic, self.tp.partition, base + block.first_offset_delta,
            block.timestamps, block.keys, block.values, block.headers, offsets,
        )  # fmt: skip
        if not len(records):
            return
        await self.take_credit()
        size = seg.length * len(records) // max(1, seg.record_count)
        await self.out.send(Batch(self.tp, self.epoch, records, self.offset, size))
        self.offset = records.next_offset
        await self.progressed()

    async def take_credit(self) -> None:
        while self.credits == 0:
            if await self.control.receive() is ReaderSignal.CREDIT:
                self.credits += 1
        self.credits -= 1

    async def wait_for_wake(self) -> None:
        while (signal := await self.control.receive()) is not ReaderSignal.WAKE:
            if signal is ReaderSignal.CREDIT:
                self.credits += 1


async def run_reader(
    start: ReaderStart,
    *,
    metadata: MetadataStore,
    lookups: Lookups,
    cache: CacheClient,
    retry: RetryPolicy,
    out: MemoryObjectSendStream[object],
    control: MemoryObjectReceiveStream[ReaderSignal],
    scope: anyio.CancelScope,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Read ``start.tp`` from ``start.offset`` until ``scope`` is cancelled.

    The reader owns, and closes, ``out`` and ``control``, even when it is
    cancelled before it starts.
    """
    with scope, out, control:
        task_status.started()
        await _Reader(start, metadata, lookups, cache, retry, out, control).run()


class ReaderHandle:
    """The coordinator's end of one reader: its control channel and its cancel scope."""

    __slots__ = ("_control", "_scope")

    def __init__(
        self, control: MemoryObjectSendStream[ReaderSignal], scope: anyio.CancelScope
    ) -> None:
        self._control = control
        self._scope = scope

    def signal(self, signal: ReaderSignal) -> None:
        """Hand a credit or a wake-up over; never waits (the channel has room for all)."""
        self._control.send_nowait(signal)

    def stop(self) -> None:
        self._scope.cancel()
        self._control.close()


class Readers:
    """Starts the readers and the watermark refresh, for the coordinator (in its task).

    Each reader gets its start as values and a control channel of its own.
    """

    def __init__(
        self,
        tg: anyio.abc.TaskGroup,
        metadata: MetadataStore,
        lookups: Lookups,
        cache: CacheClient,
        retry: RetryPolicy,
        depth: int,
        refresh_interval: float,
        out: MemoryObjectSendStream[object],
    ) -> None:
        self._tg = tg
        self._metadata = metadata
        self._cache = cache
        self._retry = retry
        self._depth = depth
        self._refresh_interval = refresh_interval
        self._out = out  # the coordinator's inbox, cloned for each
        self._refresh: anyio.CancelScope | None = None
        self._lookups = lookups

    def start(self, start: ReaderStart) -> ReaderHandle:
        """Start a reader with ``prefetch_batches`` credits; return its handle."""
        # Capacity depth + 1: the reader's credits (never more than depth in
        # all) and one WAKE, so that sending either never waits.
        control, control_receive = anyio.create_memory_object_stream[ReaderSignal](self._depth + 1)
        for _ in range(self._depth):
            control.send_nowait(ReaderSignal.CREDIT)
        scope = anyio.CancelScope()
        run = functools.partial(
            run_reader,
            start,
            metadata=self._metadata,
            lookups=self._lookups,
            cache=self._cache,
            retry=self._retry,
            out=self._out.clone(),
            control=control_receive,
            scope=scope,
        )
        self._tg.start_soon(run)
        return ReaderHandle(control, scope)

    def refresh(self, topics: tuple[str, ...]) -> None:
        """Refresh the watermarks of ``topics`` from now on (a new task)."""
        if self._refresh is not None:
            self._refresh.cancel()
        self._refresh = anyio.CancelScope()
        run = functools.partial(
            run_refresher,
            topics,
            metadata=self._metadata,
            interval=self._refresh_interval,
            retry=self._retry,
            out=self._out.clone(),
            scope=self._refresh,
        )
        self._tg.start_soon(run)
