"""The frozen messages the consumer's actors exchange, each with its own reply type.

Requests carry a :class:`Reply` of the type they are answered with
(``Position`` is a ``Request[int]``, ``Poll`` a ``Request[list[Batch]]``),
so mypy checks both ends of every conversation. One-way messages (what the
readers send, ``Delivered``) have none.

A Reply is a one-shot rendezvous. The actor answers without waiting
(:meth:`Reply.put`) and learns at once whether the asker is still there; an
asker that is cancelled abandons the reply and takes whatever answer had
already arrived (:meth:`Reply.abandon`). Both steps are synchronous on one
event loop, so an answer is either taken or known to be refused, under trio
and asyncio alike. That is how a cancelled ``poll()`` loses and repeats
nothing: the blocks of an answer that arrived are kept for the next poll,
and blocks the actor could not hand over stay with the actor.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar, cast

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream

from .._metadata.groups import MemberRef
from .._metadata.protocol import PartitionState
from .._types import RecordBatch, TopicPartition

__all__ = [
    "Assign",
    "AtEnd",
    "Batch",
    "Blocks",
    "Close",
    "CloseMode",
    "Commit",
    "Committed",
    "Delivered",
    "Failed",
    "GroupChange",
    "GroupNotice",
    "HighWatermark",
    "Lags",
    "Notices",
    "OutOfRange",
    "PartitionStart",
    "Pause",
    "Paused",
    "Poll",
    "Position",
    "ReaderSignal",
    "Polled",
    "Recovered",
    "Released",
    "Reply",
    "ReplyDropped",
    "Request",
    "Resume",
    "Revoke",
    "Seek",
    "SeekTo",
    "Take",
    "TakeNotices",
    "Trouble",
    "Watermarks",
    "answer",
    "answer_async",
    "drain",
    "name_of",
]

T = TypeVar("T")


def name_of(tp: TopicPartition) -> str:
    """``topic[partition]``, as errors and logs name a partition."""
    return f"{tp.topic}[{tp.partition}]"


class ReplyDropped(Exception):
    """The actor stopped before it answered (the runtime is closing or died)."""


class _State(enum.Enum):
    WAITING = enum.auto()
    ANSWERED = enum.auto()
    DONE = enum.auto()  # taken, abandoned or dropped


class Reply(Generic[T]):
    """The answer to one request: an answer of type ``T``, or an Exception to raise."""

    __slots__ = ("_answer", "_event", "_state")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._state = _State.WAITING
        self._answer: T | Exception | None = None

    @property
    def wanted(self) -> bool:
        """False once the asker has gone, or the answer was given."""
        return self._state is _State.WAITING

    def put(self, answer: T | Exception) -> bool:
        """Answer; False when the asker has gone (cancelled): then nothing was handed over."""
        if self._state is not _State.WAITING:
            return False
        self._answer = answer
        self._state = _State.ANSWERED
        self._event.set()
        return True

    def drop(self) -> None:
        """Never answer: the asker's wait raises ReplyDropped."""
        if self._state is _State.WAITING:
            self._state = _State.DONE
            self._event.set()

    async def wait(self) -> T:
        """Wait for the answer; raise it if it is an Exception.

        Raises:
            ReplyDropped: the actor stopped without answering.
        """
        await self._event.wait()
        if self._state is not _State.ANSWERED:
            raise ReplyDropped
        answer = self._answer
        self._state, self._answer = _State.DONE, None
        if isinstance(answer, Exception):
            raise answer
        return cast("T", answer)  # an answer of T, which may itself be None

    def abandon(self) -> T | Exception | None:
        """The asker gives up (it was cancelled): return an answer that arrived meanwhile."""
        answer = self._answer if self._state is _State.ANSWERED else None
        self._state, self._answer = _State.DONE, None
        return answer


@attrs.frozen
class Request(Generic[T]):
    """A message that is answered: with a ``T``, or an Exception for the asker to raise."""

    reply: Reply[T]


def answer(req: Request[T], compute: Callable[[], T]) -> None:
    """Answer ``req`` with what ``compute`` returns, or with the Exception it raised."""
    try:
        result: T | Exception = compute()
    except Exception as exc:
        result = exc
    req.reply.put(result)


async def answer_async(req: Request[T], compute: Callable[[], Awaitable[T]]) -> None:
    """Answer ``req`` with what ``compute`` returns when awaited, or with its Exception."""
    try:
        result: T | Exception = await compute()
    except Exception as exc:
        result = exc
    req.reply.put(result)


def drain(inbox: MemoryObjectReceiveStream[object]) -> None:
    """Drop the replies of requests an actor will never answer.

    A stopping actor leaves requests in its inbox; dropping their replies
    tells each asker at once instead of leaving it waiting.
    """
    while True:
        try:
            msg = inbox.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            return
        if isinstance(msg, Request):
            msg.reply.drop()


# -- policies ------------------------------------------------------------------


class CloseMode(enum.Enum):
    """What the coordinator commits when the consumer closes."""

    POSITIONS = "positions"  # every record handed to the application
    CONSUMED = "consumed"  # only what the application came back for more after
    NOTHING = "nothing"


class SeekTo(enum.Enum):
    """A seek target that is resolved against the partition's bounds."""

    BEGINNING = "beginning"  # the log start offset
    END = "end"  # the high watermark


class ReaderSignal(enum.Enum):
    """What the coordinator tells a reader (on its control channel)."""

    CREDIT = "credit"  # the reader may send one more batch
    WAKE = "wake"  # the high watermark moved past where the reader waits


# -- reader -> coordinator (one-way) -------------------------------------------
# Every one carries the reader's epoch: the coordinator ignores messages of a
# reader it has replaced.


@attrs.frozen
class Batch:
    """One block of one partition, as columns; the reader continues after it.

    It covers the offsets ``[start, records.next_offset)``: ``start`` is
    where the reader was, and offsets before the first record are a gap
    compaction left (no record there).
    """

    tp: TopicPartition
    epoch: int
    records: RecordBatch
    start: int = attrs.field(
        default=attrs.Factory(lambda b: b.records.first_offset, takes_self=True)
    )
    size: int = 0  # bytes as stored (the segment's, pro rata): for the metrics


@attrs.frozen
class AtEnd:
    """The reader has everything below ``offset`` and waits for more."""

    tp: TopicPartition
    epoch: int
    offset: int


@attrs.frozen
class OutOfRange:
    """``offset`` is not in the log: below ``first`` (the first offset left) or past ``high``."""

    tp: TopicPartition
    epoch: int
    offset: int
    first: int
    high: int | None = None  # the high watermark, when the reader asked for it


@attrs.frozen
class Trouble:
    """A transient error stopped the reader (the watermark refresh when ``tp`` is None).

    Sent once per failed attempt; the reader retries from exactly the next
    offset it has not sent.
    """

    tp: TopicPartition | None
    epoch: int
    cause: Exception


@attrs.frozen
class Recovered:
    """The reader (or the refresh, when ``tp`` is None) works again after Trouble."""

    tp: TopicPartition | None
    epoch: int


@attrs.frozen
class Failed:
    """An error no retry cures (corrupt data): the reader stops until a seek."""

    tp: TopicPartition
    epoch: int
    error: Exception


@attrs.frozen
class Watermarks:
    """Fresh bounds of every assigned partition, from one query."""

    states: Sequence[PartitionState]


# -- facade -> coordinator -------------------------------------------------------


@attrs.frozen
class Delivered:
    """What the facade handed to the application since its last report (one-way).

    ``offsets`` maps each partition to (epoch of its records, next offset
    handed out). ``came_back`` says that the application has come back for
    more (a poll began): every record handed out before is processed, which
    is what auto-commit may commit.
    """

    offsets: Mapping[TopicPartition, tuple[int, int]]
    came_back: bool


@attrs.frozen
class GroupNotice:
    """A change of the group's assignment for the facade to apply, in order:
    ``lost`` (the member was fenced or left: no commit, listener's
    ``on_partitions_lost``), ``revoke`` (listener's ``on_partitions_revoked``,
    commit, drop, release), then ``take`` (``on_partitions_assigned``).
    ``seq`` names the change for the membership actor's acknowledgement
    (``Released``); ``member`` is who commits the partitions taken."""

    seq: int
    lost: frozenset[TopicPartition] = frozenset()
    revoke: frozenset[TopicPartition] = frozenset()
    take: frozenset[TopicPartition] = frozenset()
    member: MemberRef | None = None
    lost_all: bool = False  # everything was lost (fenced, or left): nothing is owed


@attrs.frozen
class Notices:
    """What the facade must know before it hands out more (the answer to TakeNotices).

    ``epochs``: partitions whose records the facade holds are stale below
    these epochs (revoked, or restarted); ``assignment``: the new
    assignment, if it changed; ``error``: to raise from the poll, once;
    ``group``: a change of the group's assignment to apply first.
    """

    epochs: Mapping[TopicPartition, int]
    assignment: frozenset[TopicPartition] | None
    error: Exception | None
    group: GroupNotice | None = None


Blocks = list[tuple[int, RecordBatch]]  # (the partition's epoch, records), to the facade


@attrs.frozen
class Poll(Request[Blocks]):
    """Every block waiting for a partition that is not paused; wait until ``deadline`` for one."""

    deadline: float


@attrs.frozen
class TakeNotices(Request[Notices]):
    """Sent when the coordinator rang the facade's bell."""


@attrs.frozen
class Commit(Request[None]):
    """Commit exactly ``offsets``, or, when None, every position that differs from its commit."""

    offsets: Mapping[TopicPartition, int] | None


@attrs.frozen
class Seek(Request[dict[TopicPartition, int]]):
    """Move positions; answered with each partition's new epoch."""

    targets: Mapping[TopicPartition, int | SeekTo]


@attrs.frozen
class Pause(Request[dict[TopicPartition, int]]):
    """Stop delivering; what the facade held goes back (answered with the new epochs)."""

    partitions: frozenset[TopicPartition]


@attrs.frozen
class Resume(Request[None]):
    partitions: frozenset[TopicPartition]


@attrs.frozen
class Position(Request[int]):
    tp: TopicPartition


@attrs.frozen
class Committed(Request[int | None]):
    """The group's committed offset, read from the metadata store."""

    tp: TopicPartition


@attrs.frozen
class HighWatermark(Request[int]):
    tp: TopicPartition


@attrs.frozen
class Lags(Request[dict[TopicPartition, int]]):
    """High watermark - position, of ``partitions`` (every assigned one when None)."""

    partitions: frozenset[TopicPartition] | None


@attrs.frozen
class Paused(Request[frozenset[TopicPartition]]):
    pass


@attrs.frozen
class Close(Request[None]):
    """Commit by ``mode``, then stop answering."""

    mode: CloseMode


# -- assignment (the manual assignment at open; group membership later) ---------


@attrs.frozen
class PartitionStart:
    """Where an assigned partition starts, and what is known of it."""

    position: int
    committed: int | None
    log_start: int
    high_watermark: int


@attrs.frozen
class Assign(Request[None]):
    """Start reading these partitions (partitions already assigned are restarted)."""

    partitions: Mapping[TopicPartition, PartitionStart]


@attrs.frozen
class Revoke(Request[None]):
    """Stop reading these partitions; the facade drops what it holds of them.

    ``commit``: first commit, by the consumer's auto-commit policy, what was
    handed out of them (a commit that fails is logged: the partitions are
    lost, not handed over).
    """

    partitions: frozenset[TopicPartition]
    commit: bool = False


@attrs.frozen
class Take(Request[frozenset[TopicPartition]]):
    """Start reading partitions the group gave this member, from the group's
    committed offsets (or the reset policy); ``member`` commits from now on.
    Answered with the whole assignment."""

    partitions: frozenset[TopicPartition]
    member: MemberRef


# -- group membership ------------------------------------------------------------


@attrs.frozen
class GroupChange:
    """Membership -> coordinator (one-way): a change for the facade to apply.

    ``lost`` True: every partition the consumer has is lost (fenced, or it
    left the group by itself); what it had not applied of earlier changes
    is void.
    """

    notice: GroupNotice
    lost: bool = False


@attrs.frozen
class Released:
    """Facade -> membership (one-way): change ``seq`` is applied; these
    partitions were given up and may go to their new owners."""

    seq: int
    released: frozenset[TopicPartition]


@attrs.frozen
class Polled:
    """Facade -> membership (one-way): the application polled at ``at``, and
    waits inside the poll until ``until`` (None: not waiting any more). A
    poll that waits for records is polling, however long it waits."""

    at: float
    until: float | None = None
