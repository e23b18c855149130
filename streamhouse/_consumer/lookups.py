"""The lookups actor: the readers' segment lookups, one query for all those asking at once.

Each reader looks its partition's next segments up in the metadata store.
A consumer of 1,000 partitions made 1,000 queries as it started, each in a
worker thread: with four threads and a busy event loop they queued for
about 1.5 s of a 3.3 s read. The readers now send their asks here; the
actor takes every ask waiting in its inbox and answers them with one
``list_segments_from`` query per topic (a reader's ask waits for at most
the query before it).

Before it answers, the actor tells the cache actor (``plan``) the span of
each object that the segments found take: the readers are about to ask for
them, and the cache fetches that part of a packed object rather than all of
it (module spans).

An asker that has gone (its reader was cancelled) is not answered; a
transient failure of the query is every asker's (each reader reports it
and retries by its policy). The actor holds no state between queries.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

import anyio
import attrs
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from .._errors import StreamHouseError
from .._metadata.protocol import MetadataStore, SegmentInfo
from .._types import TopicPartition
from .messages import Reply, Request, drain

__all__ = ["LookUp", "Lookups", "run_lookups", "spans_of"]

Planner = Callable[[Mapping[str, tuple[int, int]]], Awaitable[None]]
_WAITING = 1024  # asks the actor's inbox holds (a reader waits past that)


@attrs.frozen
class LookUp(Request[list[SegmentInfo]]):
    """``list_segments(tp.topic, tp.partition, offset, limit)``, answered together with others."""

    tp: TopicPartition
    offset: int
    limit: int


class Lookups:
    """The readers' handle on the lookups actor: a clone of its inbox."""

    def __init__(self, inbox: MemoryObjectSendStream[object]) -> None:
        self._inbox = inbox

    async def list_segments(self, tp: TopicPartition, offset: int, limit: int) -> list[SegmentInfo]:
        """The segments of ``tp`` holding ``offset`` or later, in order, at most ``limit``."""
        reply = Reply[list[SegmentInfo]]()
        await self._inbox.send(LookUp(reply, tp, offset, limit))
        try:
            return await reply.wait()
        finally:
            reply.abandon()


async def run_lookups(
    metadata: MetadataStore,
    plan: Planner | None = None,
    *,
    task_status: TaskStatus[Lookups] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answer the readers' asks until cancelled, all waiting ones together;
    hand the readers' client (Lookups) to the starter. ``plan``: told the
    span of each object the answers' segments take, before they are given."""
    asks, inbox = anyio.create_memory_object_stream[object](_WAITING)
    with inbox, asks:
        try:
            task_status.started(Lookups(asks))
            async for ask in inbox:
                waiting = [ask]
                while True:
                    try:
                        waiting.append(inbox.receive_nowait())
                    except anyio.WouldBlock:
                        break
                await _answer([a for a in waiting if isinstance(a, LookUp)], metadata, plan)
        finally:
            drain(inbox)  # (before the inbox closes: a closed one gives nothing)


async def _answer(asks: list[LookUp], metadata: MetadataStore, plan: Planner | None = None) -> None:
    """One query per topic (and limit) answers ``asks``; two asks of one
    partition (an old reader's and a new one's) take two rounds. An ask left
    unanswered (the actor was cancelled) is dropped: its asker is told."""
    try:
        await _rounds(asks, metadata, plan)
    finally:
        for ask in asks:
            ask.reply.drop()  # (nothing for one answered)


async def _rounds(asks: list[LookUp], metadata: MetadataStore, plan: Planner | None) -> None:
    while asks:
        rounds: dict[tuple[str, int], dict[int, LookUp]] = {}
        later: list[LookUp] = []
        for ask in asks:
            if not ask.reply.wanted:
                continue  # the reader has gone
            same = rounds.setdefault((ask.tp.topic, ask.limit), {})
            if ask.tp.partition in same:
                later.append(ask)
            else:
                same[ask.tp.partition] = ask
        for (topic, limit), same in rounds.items():
            starts = {p: ask.offset for p, ask in same.items()}
            try:
                found = await _look_up(metadata, topic, starts, limit)
            except StreamHouseError as exc:
                for ask in same.values():
                    ask.reply.put(_own_copy(exc))
                continue
            if plan is not None:
                await plan(spans_of(found.values()))
            for p, ask in same.items():
                ask.reply.put(found.get(p, []))
        asks = later


async def _look_up(
    metadata: MetadataStore, topic: str, starts: dict[int, int], limit: int
) -> dict[int, list[SegmentInfo]]:
    """``list_segments_from``; a store of its own making without it (the
    method came after the protocol was published) answers partition by
    partition, as before it."""
    together = getattr(metadata, "list_segments_from", None)
    if together is not None:
        found: dict[int, list[SegmentInfo]] = await together(topic, starts, limit)
        return found
    return {p: await metadata.list_segments(topic, p, o, limit) for p, o in starts.items()}


def spans_of(found: Iterable[Sequence[SegmentInfo]]) -> dict[str, tuple[int, int]]:
    """Per object, from the first segment's start to the last one's end."""
    spans: dict[str, tuple[int, int]] = {}
    for segments in found:
        for seg in segments:
            start, end = seg.position, seg.position + seg.length
            if seg.object_key in spans:
                was_start, was_end = spans[seg.object_key]
                start, end = min(start, was_start), max(end, was_end)
            spans[seg.object_key] = (start, end)
    return spans


def _own_copy(exc: StreamHouseError) -> Exception:
    """A copy of ``exc`` for one asker: each raises its own (an exception
    raised in many tasks would gather all their tracebacks)."""
    mine = copy.copy(exc)
    mine.__cause__ = exc.__cause__
    return mine
