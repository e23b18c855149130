"""What the coordinator knows of each assigned partition, and of what keeps them stuck.

Offsets of one partition, in the order they can only be::

    committed ?  consumed <= position <= fetched <= expected
                 (came back)  (handed out) (sent to the facade) (next from the reader)

- ``position``: the next offset handed to the application (the facade
  reports what it handed out: ``Delivered``);
- ``fetched``: the next offset sent to the facade; the facade holds
  ``[position, fetched)``;
- ``expected``: the next offset the reader will send; the coordinator holds
  ``[fetched, expected)`` as pending batches;
- ``consumed``: the position when the application last came back for more
  (began a poll): what auto-commit commits;
- ``committed``: what the coordinator last wrote or read for the group.

``epoch`` changes whenever ``fetched`` is moved by anything but a delivery
(a seek, a pause, an offset reset): records the facade holds of an older
epoch are stale, and it drops them.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence

import attrs

from .._errors import MetadataUnavailableError, OffsetOutOfRangeError, StorageUnavailableError
from .._metadata.protocol import PartitionState
from .._types import OffsetReset, RecordBatch, TopicPartition
from .messages import PartitionStart, name_of
from .reader import ReaderHandle

__all__ = ["Partition", "Troubles", "names", "resolve_starts", "stall_error"]


@attrs.define(eq=False)
class Partition:
    """One assigned partition, as the coordinator (and only it) keeps it."""

    tp: TopicPartition
    position: int
    committed: int | None
    log_start: int
    high_watermark: int
    fetched: int = attrs.field(init=False)
    expected: int = attrs.field(init=False)
    consumed: int = attrs.field(init=False)
    epoch: int = -1  # the facade-visible epoch (see the module docstring)
    reader_epoch: int = -1  # the epoch of the current reader's messages
    pending: collections.deque[RecordBatch] = attrs.Factory(collections.deque)
    paused: bool = False
    waiting_at: int | None = None  # the reader waits at this offset for data
    reader: ReaderHandle | None = None
    failed: bool = False  # a failure no retry cures stopped the reader

    def __attrs_post_init__(self) -> None:
        self.fetched = self.expected = self.consumed = self.position

    @classmethod
    def start(cls, tp: TopicPartition, start: PartitionStart) -> Partition:
        return cls(tp, start.position, start.committed, start.log_start, start.high_watermark)

    @property
    def uncommitted(self) -> bool:
        """Whether a commit of positions, or of consumed offsets, would write something."""
        return self.position != self.committed or self.consumed != self.committed


def resolve_starts(
    states: Sequence[PartitionState],
    committed: Mapping[TopicPartition, int],
    reset: OffsetReset,
) -> dict[TopicPartition, PartitionStart]:
    """Where each partition starts: its committed offset, or the reset policy.

    Raises:
        OffsetOutOfRangeError: policy "none" and some partition has no valid
            committed offset; the message names them all.
    """
    starts: dict[TopicPartition, PartitionStart] = {}
    missing = []
    for s in states:
        tp = TopicPartition(s.topic, s.partition)
        offset = committed.get(tp)
        if offset is not None and s.log_start_offset <= offset <= s.high_watermark:
            position = offset
        elif reset is OffsetReset.EARLIEST:
            position = s.log_start_offset
        elif reset is OffsetReset.LATEST:
            position = s.high_watermark
        else:
            missing.append(tp)
            continue
        starts[tp] = PartitionStart(position, offset, s.log_start_offset, s.high_watermark)
    if missing:
        raise OffsetOutOfRangeError(
            f"no valid committed offset and offset_reset='none' for {names(missing)}"
        )
    return starts


def names(tps: Iterable[TopicPartition], most: int = 10) -> str:
    """``t[0], t[1], ...`` for messages, the first ``most`` of them and a count of the rest."""
    ordered = sorted(tps)
    shown = ", ".join(map(name_of, ordered[:most]))
    return shown if len(ordered) <= most else f"{shown} and {len(ordered) - most} more"


def stall_error(tps: Iterable[TopicPartition], last: Exception, timeout: float) -> Exception:
    """The error a poll raises when errors kept ``tps`` from progress for ``timeout`` seconds.

    Of the class of the last cause (the store's or the database's), naming
    the partitions, with the last cause chained.
    """
    listed = list(tps)
    what = names(listed) if listed else "the high watermark refresh"
    kind = (
        MetadataUnavailableError
        if isinstance(last, MetadataUnavailableError)
        else StorageUnavailableError
    )
    error = kind(f"no progress on {what} for {timeout:g} s because of errors; last: {last}")
    error.__cause__ = last
    return error


@attrs.define
class _Stuck:
    since: float  # when the trouble started, or was last reported
    cause: Exception
    transient: bool


class Troubles:
    """Sources kept from making progress by errors: partitions, and the refresh (None).

    A source is stuck from its first error until it reports progress. Once
    a transient trouble has lasted ``stall_timeout``, or at once for a
    failure no retry cures, it is *due*: the coordinator raises it from the
    next poll, and the clock starts again, so a trouble that lasts is raised
    again every ``stall_timeout``. The sources stuck by transient errors go
    together: one outage makes one error, naming them all. Finding what is due costs nothing per
    source: the sources wait in a queue in the order of their deadlines.
    """

    def __init__(self, stall_timeout: float) -> None:
        self.stall_timeout = stall_timeout
        self._stuck: dict[TopicPartition | None, _Stuck] = {}
        # (deadline, source, since): entries whose since no longer matches
        # the source's are stale and skipped.
        self._queue: collections.deque[tuple[float, TopicPartition | None, float]] = (
            collections.deque()
        )
        self._at_once: list[TopicPartition | None] = []
        self.transient = 0  # sources stuck by transient errors (an outage)

    def __bool__(self) -> bool:
        return bool(self._stuck)

    def failed(
        self, source: TopicPartition | None, cause: Exception, now: float, *, transient: bool
    ) -> bool:
        """Record an error; True when the source was not stuck before."""
        stuck = self._stuck.get(source)
        if stuck is not None:
            self.transient += transient - stuck.transient
            stuck.cause, stuck.transient = cause, transient
            if not transient:
                self._at_once.append(source)
            return False
        self._stuck[source] = _Stuck(now, cause, transient)
        self.transient += transient
        if transient:
            self._queue.append((now + self.stall_timeout, source, now))
        else:
            self._at_once.append(source)
        return True

    def recovered(self, source: TopicPartition | None) -> bool:
        """The source made progress; True when it was stuck."""
        if source in self._at_once:
            self._at_once.remove(source)
        stuck = self._stuck.pop(source, None)
        if stuck is None:
            return False
        self.transient -= stuck.transient
        return True

    def next_deadline(self) -> float:
        """When the next source is due (minus infinity: one is due now)."""
        if self._at_once:
            return -float("inf")
        while self._queue:
            deadline, source, since = self._queue[0]
            stuck = self._stuck.get(source)
            if stuck is not None and stuck.since == since:
                return deadline
            self._queue.popleft()
        return float("inf")

    def take_due(self, now: float) -> list[tuple[TopicPartition | None, Exception, bool]]:
        """The sources due now, as (source, cause, transient); their clocks start again."""
        due = []
        for source in self._at_once:
            stuck = self._stuck.get(source)
            if stuck is not None:
                due.append(source)
        self._at_once.clear()
        while self.next_deadline() <= now:
            _, source, _ = self._queue.popleft()
            due.append(source)
        if any(self._stuck[source].transient for source in due):
            # One outage, one error: every source stuck by transient errors
            # now goes with it (and starts its clock again with it).
            due += [source for source, stuck in self._stuck.items() if stuck.transient]
        out = []
        for source in dict.fromkeys(due):
            stuck = self._stuck[source]
            stuck.since = now
            self._queue.append((now + self.stall_timeout, source, now))
            out.append((source, stuck.cause, stuck.transient))
        return out
