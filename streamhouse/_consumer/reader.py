"""The reader actor: one per assigned partition.

It walks the partition's segments from its start offset: looks them up in the
metadata store, fetches their bytes through the cache actor, decodes them
block by block and sends each block, as columns, to the coordinator as a Batch.

Flow control is by credits: the reader sends a batch only when it holds a
credit, and the coordinator hands out a credit when the application has taken
a batch's records. The prefetch depth is the number of credits a new reader
starts with; it bounds the memory a partition can take however large its
backlog is.

At the high watermark the reader says so (AtEnd) and waits for a WAKE, which
the coordinator sends when its one watermark query for all partitions shows
more data. A seek does not talk to the reader: the coordinator cancels it and
starts a new one with a new epoch, and drops any batch of the old epoch.
"""

from __future__ import annotations

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._codec import DecodedBlock, decode_block, iter_segment, read_index
from .._errors import CorruptDataError, RetriableError
from .._metadata.protocol import MetadataStore, SegmentInfo
from .._types import RecordBatch, TopicPartition
from .cache import CacheClient
from .messages import CREDIT, WAKE, AtEnd, Batch, OutOfRange

__all__ = ["SEGMENTS_AHEAD", "run_reader"]

_SEGMENTS_PER_LOOKUP = 16
SEGMENTS_AHEAD = 2
_MAX_BACKOFF = 5.0


class _Reader:
    def __init__(
        self,
        tp: TopicPartition,
        epoch: int,
        metadata: MetadataStore,
        cache: CacheClient,
        out: MemoryObjectSendStream[object],
        control: MemoryObjectReceiveStream[str],
    ) -> None:
        self.tp = tp
        self.epoch = epoch
        self.metadata = metadata
        self.cache = cache
        self.out = out
        self.control = control
        self.credits = 0

    async def take_credit(self) -> None:
        while self.credits == 0:
            if await self.control.receive() == CREDIT:
                self.credits += 1
        self.credits -= 1

    async def wait_for_wake(self) -> None:
        while (msg := await self.control.receive()) != WAKE:
            if msg == CREDIT:
                self.credits += 1

    async def send_blocks(self, seg: SegmentInfo, offset: int, refresh: bool) -> int:
        """Send the records of ``seg`` from ``offset`` on; return the next offset."""
        key, pos, length = seg.object_key, seg.position, seg.length
        relative = offset - seg.base_offset
        if relative == 0:
            # Reading in order: one GET for the whole segment.
            data = await self.cache.get(key, pos, pos + length, refresh=refresh)
            for block in iter_segment(data, name=key, base=pos):
                offset = await self.send_block(seg, block)
            return offset
        # Starting inside the segment: the index, then only the blocks needed.
        tail = await self.cache.get(key, pos + length - seg.index_length, pos + length,
                                    refresh=refresh)  # fmt: skip
        index = read_index(tail, segment_length=length, name=key, base=pos)
        for entry in index.entries[index.block_for(relative) :]:
            start = pos + entry.position
            raw = await self.cache.get(key, start, start + entry.size, refresh=refresh)
            block = decode_block(raw, name=key, base=start, entry=entry)
            offset = await self.send_block(seg, block.since(relative))
        return offset

    async def send_block(self, seg: SegmentInfo, block: DecodedBlock) -> int:
        first = seg.base_offset + block.first_offset_delta
        records = RecordBatch(
            self.tp.topic, self.tp.partition, first,
            block.timestamps, block.keys, block.values, block.headers,
        )  # fmt: skip
        await self.take_credit()
        await self.out.send(Batch(self.tp, self.epoch, records))
        return records.next_offset

    async def run(self, offset: int) -> None:
        backoff = 0.05
        while True:
            try:
                segments = await self.metadata.list_segments(
                    self.tp.topic, self.tp.partition, offset, limit=_SEGMENTS_PER_LOOKUP
                )
                if not segments:
                    await self.out.send(AtEnd(self.tp, self.epoch, offset))
                    await self.wait_for_wake()
                    continue
                if segments[0].base_offset > offset:
                    # The offset is gone (deleted by retention): the
                    # coordinator decides where to go; it will restart us.
                    await self.out.send(OutOfRange(self.tp, self.epoch, offset))
                    await anyio.sleep_forever()
                for i, seg in enumerate(segments):
                    # The next segments download while this one is decoded.
                    for nxt in segments[i + 1 : i + 1 + SEGMENTS_AHEAD]:
                        await self.cache.prefetch(nxt.object_key, nxt.position,
                                                  nxt.position + nxt.length)  # fmt: skip
                    try:
                        offset = await self.send_blocks(seg, offset, refresh=False)
                    except CorruptDataError:
                        # Perhaps only the cached copy is bad: fetch afresh
                        # once; a second failure is the object's own.
                        offset = await self.send_blocks(seg, offset, refresh=True)
                backoff = 0.05
            except RetriableError:
                # The store or the database is unreachable for now: wait and
                # retry from where we are; nothing was sent past ``offset``.
                await anyio.sleep(backoff)
                backoff = min(_MAX_BACKOFF, backoff * 2)


async def run_reader(
    tp: TopicPartition,
    offset: int,
    epoch: int,
    *,
    metadata: MetadataStore,
    cache: CacheClient,
    out: MemoryObjectSendStream[object],
    control: MemoryObjectReceiveStream[str],
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Read ``tp`` from ``offset`` until cancelled, sending Batches to ``out``.

    The caller owns (and closes) ``out`` and ``control``.
    """
    task_status.started()
    await _Reader(tp, epoch, metadata, cache, out, control).run(offset)
