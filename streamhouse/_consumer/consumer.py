"""open_consumer(): the public facade of the consumer's actor runtime.

The facade holds no consumer state of its own beyond the records of its last
poll that ``async for`` has not handed out yet; every call is a request with
its own reply channel into the coordinator (the actors of this folder).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectSendStream

from .._config import open_stores
from .._errors import (
    ClosedError,
    InvalidArgumentError,
    StreamHouseError,
    TopicNotFoundError,
    raise_as_one,
)
from .._metadata.protocol import MetadataStore, PartitionState
from .._names import check_group_id, check_topic_name
from .._storage.protocol import ObjectStore
from .._types import ConsumedRecord, OffsetReset, RecordBatch, TopicPartition
from .cache import CacheClient, CacheStats, run_cache
from .coordinator import Coordinator, Settings, resolve_start
from .held import HeldRecords, take_runs
from .messages import Close, Commit, Pause, Poll, Progress, Query, Seek
from .reader import SEGMENTS_AHEAD

__all__ = ["Consumer", "open_consumer"]


class Consumer:
    """Reads records from assigned partitions; made by :func:`open_consumer`."""

    def __init__(
        self,
        inbox: MemoryObjectSendStream[object],
        cache: CacheClient,
        assignment: frozenset[TopicPartition],
        group_id: str | None,
        max_poll_records: int,
        auto_commit: bool = False,
    ) -> None:
        self._inbox = inbox
        self._cache = cache
        self._assignment = assignment
        self._group_id = group_id
        self._max_poll_records = max_poll_records
        self._auto_commit = auto_commit and group_id is not None
        # Delivered by the coordinator but not yet handed out: records built
        # for ``async for``, then whole runs of columns. Positions, commits
        # and seeks take both into account.
        self._unread: collections.deque[ConsumedRecord] = collections.deque()
        self._held = HeldRecords()

    async def _ask(self, make: Any) -> Any:
        send, receive = anyio.create_memory_object_stream[Any](0)
        with receive:
            try:
                try:
                    msg = make(send)
                    try:
                        self._inbox.send_nowait(msg)  # the reply's wait is the checkpoint
                    except anyio.WouldBlock:
                        await self._inbox.send(msg)
                except BaseException:
                    send.close()
                    raise
                answer = await receive.receive()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
                raise ClosedError("the consumer is closed") from None
        if isinstance(answer, BaseException):
            raise answer
        return answer

    # -- records ---------------------------------------------------------------

    async def poll(
        self, timeout: float = 1.0, *, max_records: int | None = None
    ) -> list[ConsumedRecord]:
        """Wait up to ``timeout`` seconds for records; return as soon as some are ready.

        Returns at most ``max_records`` (default: ``max_poll_records``)
        records, shared fairly across partitions, or ``[]`` after the
        timeout. Cancelling a poll loses nothing: records it did not return
        are returned by the next one.
        """
        limit = self._max_poll_records if max_records is None else max_records
        if limit < 1:
            raise InvalidArgumentError(f"max_records must be >= 1, not {limit}")
        while self._unread or self._held:
            # Served from what this facade holds: no trip to the coordinator.
            await self._came_back()
            if self._unread:
                count = min(limit, len(self._unread))
                return [self._unread.popleft() for _ in range(count)]
            if self._held:
                return self._held.take_records(limit)
        if not await self._fetch(timeout):
            return []
        return self._held.take_records(limit)

    async def _came_back(self) -> None:
        """Checkpoint; with auto-commit, tell the coordinator what has been consumed."""
        if self._auto_commit:
            progress = Progress(self._unread_positions())
            try:
                self._inbox.send_nowait(progress)
            except anyio.WouldBlock:
                await self._inbox.send(progress)
                return
        await anyio.lowlevel.checkpoint()

    async def _fetch(self, timeout: float) -> bool:
        """Take every block the coordinator has ready into ``_held``; wait up to ``timeout``.

        One request serves many polls: records are built from the held
        columns only as each poll asks for them.
        """
        deadline = anyio.current_time() + max(0.0, timeout)
        found: list[RecordBatch] = await self._ask(lambda r: Poll(deadline, r))
        self._held.add(found)
        return bool(found)

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
        the timeout. Positions, commits and cancellation work as for
        :meth:`poll`.
        """
        limit = sys.maxsize if max_records is None else max_records
        batches = sys.maxsize if max_batches is None else max_batches
        if limit < 1 or batches < 1:
            raise InvalidArgumentError(
                f"max_records and max_batches must be >= 1, not {max_records}, {max_batches}"
            )
        while self._unread or self._held:
            await self._came_back()
            if self._unread:
                # Records ``async for`` has not handed out come first, a batch
                # per partition run, so that nothing is skipped or repeated.
                return take_runs(self._unread, limit, batches)
            if self._held:
                return self._held.take_batches(limit, batches)
        if not await self._fetch(timeout):
            return []
        return self._held.take_batches(limit, batches)

    def batches(self) -> AsyncIterator[RecordBatch]:
        """Iterate over RecordBatches as they arrive, one at a time; see :meth:`poll_batches`.

        Each batch counts as consumed when the next one is asked for, so a
        commit in the loop body never runs ahead of what the loop has seen.
        A plain iterator, not an async generator: leaving the loop early
        needs no cleanup.
        """
        return _Batches(self)

    def __aiter__(self) -> AsyncIterator[ConsumedRecord]:
        return self

    async def __anext__(self) -> ConsumedRecord:
        while not self._unread:
            self._unread.extend(await self.poll(timeout=math.inf))
        return self._unread.popleft()

    # -- offsets ---------------------------------------------------------------

    def _check_tp(self, topic: str, partition: int) -> TopicPartition:
        tp = TopicPartition(topic, partition)
        if tp not in self._assignment:
            raise InvalidArgumentError(f"{topic}[{partition}] is not assigned to this consumer")
        return tp

    def _drop_unread(self, tps: Iterable[TopicPartition]) -> None:
        drop = set(tps)
        self._unread = collections.deque(
            r for r in self._unread if TopicPartition(r.topic, r.partition) not in drop
        )
        self._held.drop(drop)

    def _unread_positions(self) -> dict[TopicPartition, int]:
        """The first offset, per partition, of records delivered here but not handed out."""
        first: dict[TopicPartition, int] = {}
        for r in self._unread:
            first.setdefault(TopicPartition(r.topic, r.partition), r.offset)
        for tp, offset in self._held.first_offsets().items():
            first.setdefault(tp, offset)
        return first

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit every position that differs from its committed offset, or ``offsets``.

        Raises:
            InvalidArgumentError: the consumer has no group_id.
        """
        if self._group_id is None:
            raise InvalidArgumentError("commit needs a group_id: open the consumer with one")
        if offsets is None and (self._unread or self._held):
            # Records of the last poll not yet handed out by ``async for``
            # are not consumed: their partition's position is the first one.
            current = {tp: await self.position(tp.topic, tp.partition) for tp in self._assignment}
            offsets = current
        await self._ask(lambda r: Commit(None if offsets is None else dict(offsets), r))

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        """Make ``offset`` the next one delivered for the partition."""
        tp = self._check_tp(topic, partition)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidArgumentError(f"offset must be an int >= 0, not {offset!r}")
        self._drop_unread([tp])
        await self._ask(lambda r: Seek(tp, offset, r))

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Seek to the log start offset of the given (default: all) partitions."""
        for tp in partitions or sorted(self._assignment):
            self._check_tp(tp.topic, tp.partition)
            self._drop_unread([tp])
            await self._ask(lambda r, tp=tp: Seek(tp, "earliest", r))

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Seek to the high watermark of the given (default: all) partitions."""
        for tp in partitions or sorted(self._assignment):
            self._check_tp(tp.topic, tp.partition)
            self._drop_unread([tp])
            await self._ask(lambda r, tp=tp: Seek(tp, "latest", r))

    async def position(self, topic: str, partition: int) -> int:
        """The next offset to deliver for the partition."""
        tp = self._check_tp(topic, partition)
        unread = self._unread_positions()
        if tp in unread:
            return unread[tp]
        position: int = await self._ask(lambda r: Query("position", tp, r))
        return position

    async def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset for the partition, or None."""
        tp = self._check_tp(topic, partition)
        committed: int | None = await self._ask(lambda r: Query("committed", tp, r))
        return committed

    async def high_watermark(self, topic: str, partition: int) -> int:
        """One past the last offset known in the partition (refreshed continually)."""
        tp = self._check_tp(topic, partition)
        _, high = await self._ask(lambda r: Query("watermarks", tp, r))
        return int(high)

    async def lag(self, topic: str, partition: int) -> int:
        """Records in the partition after the position: high watermark - position."""
        return max(
            0, await self.high_watermark(topic, partition) - await self.position(topic, partition)
        )

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads."""
        return set(self._assignment)

    async def pause(self, *partitions: TopicPartition) -> None:
        """Stop delivering records of these partitions (reading ahead stays bounded)."""
        for tp in partitions:
            self._check_tp(tp.topic, tp.partition)
        await self._ask(lambda r: Pause(frozenset(partitions), True, r))
        # Records delivered here but not handed out go back: the partition
        # resumes from the first of them.
        unread = self._unread_positions()
        for tp in partitions:
            if tp in unread:
                await self._ask(lambda r, tp=tp: Seek(tp, unread[tp], r))
        self._drop_unread(partitions)

    async def resume(self, *partitions: TopicPartition) -> None:
        """Deliver records of these partitions again."""
        for tp in partitions:
            self._check_tp(tp.topic, tp.partition)
        await self._ask(lambda r: Pause(frozenset(partitions), False, r))

    async def paused(self) -> set[TopicPartition]:
        return set(await self._ask(lambda r: Query("paused", None, r)))

    async def cache_stats(self) -> CacheStats:
        """What the segment cache holds and did: files, bytes, hits, GETs."""
        return await self._cache.stats()

    async def _close(self, final: str) -> None:
        # Records ``async for`` holds but has not handed out are not consumed.
        unread = self._unread_positions()
        error = await self._ask(lambda r: Close(final, r, unread))
        if error is not None:  # pragma: no cover - _ask raises exceptions
            raise error


class _Batches:
    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def __aiter__(self) -> _Batches:
        return self

    async def __anext__(self) -> RecordBatch:
        while True:
            found = await self._consumer.poll_batches(timeout=math.inf, max_batches=1)
            if found:
                return found[0]


async def _assign(
    metadata: MetadataStore, topics: Iterable[str | TopicPartition]
) -> list[PartitionState]:
    names: list[str] = []
    explicit: set[TopicPartition] = set()
    for item in topics:
        if isinstance(item, TopicPartition):
            check_topic_name(item.topic)
            explicit.add(item)
            names.append(item.topic)
        elif isinstance(item, str):
            names.append(check_topic_name(item))
        else:
            raise InvalidArgumentError(f"topics must be names or TopicPartitions, not {item!r}")
    if not names:
        raise InvalidArgumentError("a consumer needs at least one topic")
    whole = {t for t in topics if isinstance(t, str)}
    states = await metadata.partition_states(sorted(set(names)))
    present = {s.topic for s in states}
    missing = sorted(set(names) - present)
    if missing:
        raise TopicNotFoundError(f"topic {', '.join(map(repr, missing))} does not exist")
    chosen = [
        s for s in states if s.topic in whole or TopicPartition(s.topic, s.partition) in explicit
    ]
    bad = explicit - {TopicPartition(s.topic, s.partition) for s in states}
    if bad:
        raise InvalidArgumentError(
            "no such partition: " + ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(bad))
        )
    return chosen


@contextlib.asynccontextmanager
async def open_consumer(
    topics: str | TopicPartition | Sequence[str | TopicPartition],
    *,
    group_id: str | None = None,
    storage: ObjectStore | str | None = None,
    metadata: MetadataStore | str | None = None,
    offset_reset: OffsetReset | str = "latest",
    auto_commit: bool = True,
    auto_commit_interval: float = 5.0,
    max_poll_records: int = 500,
    cache_dir: str | Path | None = None,
    cache_size_bytes: int = 100 * 2**20,
    prefetch_batches: int = 2,
    metadata_refresh_interval: float = 0.05,
    close_timeout: float = 30.0,
) -> AsyncIterator[Consumer]:
    """Open a consumer of ``topics`` (all their partitions) or of exact TopicPartitions.

    Args:
        topics: topic names and/or TopicPartitions.
        group_id: the consumer group whose committed offsets are used and
            written; without one, nothing is committed.
        storage, metadata: stores or URLs; the embedded default when omitted.
        offset_reset: where to start without a valid committed offset:
            "earliest" (the log start), "latest" (the high watermark) or
            "none" (raise OffsetOutOfRangeError naming the partitions).
        auto_commit: commit, every ``auto_commit_interval`` seconds, the
            positions as of the previous poll, and the positions on close.
        max_poll_records: most records one poll returns.
        cache_dir: the segment cache directory (a temporary one if None);
            one consumer per directory.
        cache_size_bytes: the cache's byte budget on disk.
        prefetch_batches: blocks read ahead per partition.
        metadata_refresh_interval: seconds between watermark queries.
        close_timeout: seconds leaving the block may take to commit.

    Raises:
        TopicNotFoundError: a topic does not exist (at open).
        OffsetOutOfRangeError: offset_reset="none" and no valid offset.
        StreamHouseError: from inside the runtime, as one error.
    """
    reset = OffsetReset.parse(offset_reset).value
    if group_id is not None:
        check_group_id(group_id)
    if max_poll_records < 1 or prefetch_batches < 1 or cache_size_bytes < 0:
        raise InvalidArgumentError(
            "max_poll_records and prefetch_batches must be >= 1, cache_size_bytes >= 0"
        )
    if auto_commit_interval <= 0 or metadata_refresh_interval <= 0:
        raise InvalidArgumentError("intervals must be > 0 seconds")
    topic_list = [topics] if isinstance(topics, str | TopicPartition) else list(topics)
    settings = Settings(
        group_id, reset, auto_commit, auto_commit_interval, prefetch_batches,
        metadata_refresh_interval,
    )  # fmt: skip
    temp_dir = None
    if cache_dir is None:
        temp_dir = cache_dir = tempfile.mkdtemp(prefix="streamhouse-cache-")
    body_error: Exception | None = None
    try:
        async with open_stores(storage, metadata) as (store, meta):
            states = await _assign(meta, topic_list)
            committed: dict[TopicPartition, int] = {}
            if group_id is not None:
                found = await meta.fetch_offsets(group_id)
                committed = {tp: c.offset for tp, c in found.items()}
            starts = resolve_start(states, committed, reset)
            try:
                inbox_send, inbox = anyio.create_memory_object_stream[object](64)
                async with anyio.create_task_group() as tg, inbox_send:
                    run = functools.partial(
                        run_cache,
                        store,
                        Path(cache_dir),
                        cache_size_bytes,
                        parked_limit=len(states) * SEGMENTS_AHEAD,
                    )
                    cache_inbox = await tg.start(run)
                    cache = CacheClient(cache_inbox)
                    with cache_inbox:
                        coordinator = Coordinator(
                            settings,
                            meta,
                            cache,
                            states,
                            committed,
                            starts,
                            inbox,
                            inbox_send.clone(),
                        )
                        await tg.start(coordinator.run)
                        consumer = Consumer(
                            inbox_send,
                            cache,
                            frozenset(TopicPartition(s.topic, s.partition) for s in states),
                            group_id,
                            max_poll_records,
                            auto_commit,
                        )
                        final = "current" if auto_commit else "none"
                        try:
                            yield consumer
                        except Exception as exc:
                            body_error = exc
                            final = "last-poll" if auto_commit else "none"
                        with anyio.move_on_after(close_timeout, shield=True):
                            if body_error is None:
                                await consumer._close(final)
                            else:
                                # The application's error wins over a failed close.
                                with contextlib.suppress(StreamHouseError):
                                    await consumer._close(final)
                        tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                raise_as_one(group)
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    if body_error is not None:
        raise body_error
