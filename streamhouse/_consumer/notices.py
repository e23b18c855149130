"""What the coordinator must tell the facade, and the troubles it must raise.

The facade cannot be pushed to: it hands records out from what it holds
without asking. So the coordinator rings a bell (a channel of capacity 1,
rung without waiting), and the facade's next poll takes the Notices before
it hands out anything: partitions whose records went stale (an offset
reset, a revocation: their new epochs), a new assignment, and errors to
raise, one per poll.

Errors come from ``Troubles``: a partition (or the watermark refresh) kept
from progress by transient errors for ``stall_timeout`` becomes one
StorageUnavailableError or MetadataUnavailableError naming the partitions;
a failure no retry cures (corrupt data, an offset out of range with
offset_reset="none") is raised at once. Outages are logged here too: one
WARNING when the first source gets into trouble, one when the last is out.

Owned by the coordinator and used only in its task.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from .._retry import RetryBurst
from .._types import TopicPartition
from .messages import GroupChange, GroupNotice, Notices, TakeNotices, name_of
from .partitions import Troubles, names, stall_error

__all__ = ["Bulletin"]

_log = logging.getLogger("streamhouse.consumer")


class Bulletin:
    """The notices waiting for the facade, and the troubles that will become some."""

    def __init__(self, bell: MemoryObjectSendStream[None], stall_timeout: float) -> None:
        self._bell = bell
        self.troubles = Troubles(stall_timeout)
        self.errors: collections.deque[Exception] = collections.deque()
        self._epochs: dict[TopicPartition, int] = {}
        self._assignment: frozenset[TopicPartition] | None = None
        self._group: GroupNotice | None = None
        self._lost_all = False  # at TakeNotices: every partition assigned then is lost
        self._outage = RetryBurst(_log, "reading")

    def ring(self) -> None:
        """Make the facade take Notices before it hands out anything more."""
        # WouldBlock: rung already; the others: nobody listens any more.
        with contextlib.suppress(
            anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
        ):
            self._bell.send_nowait(None)

    def epoch(self, tp: TopicPartition, epoch: int) -> None:
        """What the facade holds of ``tp`` is stale below ``epoch``."""
        self._epochs[tp] = epoch
        self.ring()

    def assignment(self, tps: frozenset[TopicPartition]) -> None:
        _log.info("assignment changed: %d partition(s): %s", len(tps), names(tps, 5) or "none")
        self._assignment = tps
        self.ring()

    def group_change(self, msg: GroupChange) -> None:
        """Queue a change of the group's assignment for the facade.

        A loss voids what the facade has not applied yet: it loses
        everything it has when it takes the notice. A change after a loss
        (the member joined again) keeps the loss first.
        """
        notice = msg.notice
        if msg.lost:
            self._lost_all = True
            notice = GroupNotice(notice.seq)
        elif self._group is not None:
            notice = GroupNotice(notice.seq, self._group.lost, notice.revoke, notice.take,
                                 notice.member)  # fmt: skip
        self._group = notice
        self.ring()

    def take(self, req: TakeNotices, assigned: frozenset[TopicPartition]) -> None:
        group = self._group
        if group is not None and self._lost_all:
            group = GroupNotice(group.seq, assigned, group.revoke - assigned,
                                group.take, group.member, lost_all=True)  # fmt: skip
        notices = Notices(
            self._epochs, self._assignment, self.errors.popleft() if self.errors else None, group
        )
        if req.reply.put(notices):
            self._epochs = {}
            self._assignment = None
            self._group = None
            self._lost_all = False
        elif notices.error is not None:
            self.errors.appendleft(notices.error)
        if self.errors:
            self.ring()

    # -- troubles ------------------------------------------------------------------

    def trouble(self, source: TopicPartition | None, cause: Exception) -> None:
        """A transient error kept ``source`` (a partition; None: the refresh) from progress."""
        self.troubles.failed(source, cause, anyio.current_time(), transient=True)
        if not self._outage.active:
            first = "the high watermarks" if source is None else name_of(source)
            self._outage.what = f"reading ({first} first)"
        self._outage.failed(cause)

    def failure(self, tp: TopicPartition, error: Exception) -> None:
        """No retry cures ``error``: it is raised by the next poll, and after each stall_timeout."""
        _log.error("reading %s stopped: %s", name_of(tp), error)
        self.troubles.failed(tp, error, anyio.current_time(), transient=False)

    def recovered(self, source: TopicPartition | None) -> None:
        self.troubles.recovered(source)
        if not self.troubles.transient and self._outage.active:
            self._outage.succeeded()

    def raise_due(self, now: float, waiting: Callable[[], set[TopicPartition]]) -> None:
        """Queue the errors of the troubles due now; ``waiting``: partitions waiting for data."""
        stuck: set[TopicPartition] = set()
        last: Exception | None = None
        for source, cause, transient in self.troubles.take_due(now):
            if not transient:
                self.errors.append(cause)
                continue
            last = cause
            if source is not None:
                stuck.add(source)
            else:  # the refresh: those waiting for new data are stuck too
                stuck |= waiting()
        if last is not None:
            self.errors.append(stall_error(stuck, last, self.troubles.stall_timeout))
            _log.warning(
                "stalled: no progress on %s for stall_timeout=%s s: %s",
                names(stuck, 5) or "the high watermarks", self.troubles.stall_timeout, last,
            )  # fmt: skip
        if self.errors:
            self.ring()
