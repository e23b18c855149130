"""The frozen messages the consumer's actors exchange.

Every request carries its own reply channel: the asker creates a channel of
capacity 0, keeps the receive end, and the actor sends the answer on the
send end. Capacity 0 makes the hand-over a rendezvous: the answer is either
taken by the asker or, if the asker was cancelled and closed its end, the
actor learns it (BrokenResourceError) and can undo what the answer would have
done. That is how a cancelled ``poll()`` loses and repeats nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._metadata.protocol import PartitionState
from .._types import RecordBatch, TopicPartition

Reply = MemoryObjectSendStream[Any]


def drain(inbox: MemoryObjectReceiveStream[Any]) -> None:
    """Close the reply channels of messages an actor will never answer.

    A cancelled actor leaves requests in its inbox; closing their replies
    tells each asker (BrokenResourceError/EndOfStream) instead of leaking.
    """
    while True:
        try:
            msg = inbox.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            return
        reply = getattr(msg, "reply", None)
        if reply is not None:
            reply.close()


# -- reader -> coordinator ----------------------------------------------------


@attrs.frozen
class Batch:
    """One block of one partition, as columns; the reader continues after it."""

    tp: TopicPartition
    epoch: int
    records: RecordBatch


@attrs.frozen
class AtEnd:
    """The reader has everything below ``offset`` and waits for more."""

    tp: TopicPartition
    epoch: int
    offset: int


@attrs.frozen
class OutOfRange:
    """The reader's offset is not in the log (deleted, or past the end)."""

    tp: TopicPartition
    epoch: int
    offset: int


@attrs.frozen
class Watermarks:
    """Fresh bounds of every assigned partition (one metadata query)."""

    states: Sequence[PartitionState]


# -- coordinator -> reader ------------------------------------------------------

CREDIT = "credit"  # the reader may send one more batch
WAKE = "wake"  # the high watermark moved past where the reader waits

# -- facade -> coordinator -------------------------------------------------------


@attrs.frozen
class Poll:
    """Deliver every waiting block, as RecordBatches; wait until ``deadline`` for one."""

    deadline: float
    reply: Reply


@attrs.frozen
class Progress:
    """The application came back for more (one-way, no reply).

    Positions as of now are what auto-commit may commit, except that the
    partitions in ``unread`` were consumed only up to the offset given: the
    facade holds those records and has not handed them out.
    """

    unread: Mapping[TopicPartition, int]


@attrs.frozen
class Commit:
    """Commit the given offsets, or every changed position when None."""

    offsets: Mapping[TopicPartition, int] | None
    reply: Reply


@attrs.frozen
class Seek:
    tp: TopicPartition
    offset: int | str  # an offset, "earliest" or "latest"
    reply: Reply


@attrs.frozen
class Query:
    """Ask for state: ``what`` is position, committed, assignment, watermarks."""

    what: str
    tp: TopicPartition | None
    reply: Reply


@attrs.frozen
class Pause:
    tps: frozenset[TopicPartition]
    paused: bool
    reply: Reply


@attrs.frozen
class Close:
    """Stop: commit ``final`` (current positions, or those of the last poll).

    ``unread`` holds, for "current", the first offset of records the facade
    holds but has not handed out: those partitions are committed there.
    """

    final: str  # "current", "last-poll" or "none"
    reply: Reply
    unread: Mapping[TopicPartition, int] = attrs.field(factory=dict)
