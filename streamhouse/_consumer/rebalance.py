"""Applying the group's changes in the application's task, around its listener.

The facade's part of a rebalance (``GroupNotice``), run at the start of a
poll, before it hands out anything, in this order:

1. ``lost`` (fenced, or left by itself): the listener's
   ``on_partitions_lost``, then the partitions go, without a commit;
2. ``revoke``: the listener's ``on_partitions_revoked``, then the
   coordinator commits (auto-commit) what was handed out of them and stops
   them; what the facade holds of them is dropped;
3. the membership actor hears that the change is applied (``Released``) and
   gives the revoked partitions up at once;
4. ``take``: the coordinator starts them from the group's committed offsets,
   then the listener's ``on_partitions_assigned``.

A step that fails (the listener raised, the store was down) raises from the
poll; what is left of the change is applied by the next poll. A take that
failed after the acknowledgement is owed: the membership actor counts its
partitions as the application's, so a change that comes before the next
poll does not name them again. The facade keeps them and starts them after
that change's own (one Take each, so that partitions that cannot start,
such as one with no committed offset under offset_reset="none", do not keep
the others from starting); a change that revokes one of them releases it
unstarted, without the listener; a loss of everything voids them. (The
change used to replace what was left: the member owned partitions it never
read, their records delivered to no one while it lived.)
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from .._metadata.groups import MemberRef
from .._types import TopicPartition
from .messages import GroupNotice, Polled, Released, Reply, Request, Revoke, Take

__all__ = ["Rebalancer"]

Ask = Callable[[Callable[[Reply[Any]], Request[Any]]], Awaitable[Any]]
Forget = Callable[[frozenset[TopicPartition]], None]
Assigned = Callable[[frozenset[TopicPartition]], None]


class Rebalancer:
    """The facade's side of group membership (its own state, used in the polling task)."""

    def __init__(
        self,
        listener: object,
        membership: MemoryObjectSendStream[object],
        polled_every: float,
        *,
        greet: frozenset[TopicPartition] = frozenset(),
    ) -> None:
        self._listener = listener
        self._membership = membership
        self._polled_every = polled_every
        self._next_polled = -float("inf")
        self._left: GroupNotice | None = None  # what a failed step left to do
        self._acked = False  # the membership actor was told _left is applied (Released)
        self._revoked: frozenset[TopicPartition] = frozenset()  # not told released yet
        self._owed: frozenset[TopicPartition] = frozenset()  # acknowledged, not started
        self._owed_member: MemberRef | None = None
        self._greet = greet  # given at open: on_partitions_assigned at the first poll

    def polled(self) -> None:
        """A poll began: tell the membership actor, at most every ``polled_every``."""
        now = anyio.current_time()
        if now >= self._next_polled:
            self._next_polled = now + self._polled_every
            self._tell(Polled(now))

    def waiting(self, until: float | None) -> None:
        """The poll waits for records until ``until`` (None: it is done waiting)."""
        self._tell(Polled(anyio.current_time(), until))

    def _tell(self, msg: Polled) -> None:
        try:
            self._membership.send_nowait(msg)
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._next_polled = -math.inf  # the next poll says so again

    @property
    def owes(self) -> bool:
        return self._left is not None or bool(self._greet) or bool(self._owed)

    def close(self) -> None:
        self._membership.close()

    def keep(self, notice: GroupNotice) -> None:
        """A notice taken by a poll that was cancelled: the next poll applies it."""
        self._take_over(notice)

    def _take_over(self, notice: GroupNotice) -> None:
        """``notice`` replaces what an old one left, but for a take acknowledged
        and not started: owed (see the module docstring)."""
        left = self._left
        if left is not None and self._acked and left.take:
            self._owed |= left.take
            self._owed_member = left.member
        unstarted = self._owed & notice.revoke
        if notice.lost_all:
            self._owed = frozenset()
        elif self._owed:
            self._owed -= notice.revoke
            self._owed_member = notice.member or self._owed_member  # (the same member)
            notice = attrs.evolve(notice, revoke=notice.revoke - unstarted)
        self._left, self._acked = notice, False
        self._revoked = frozenset() if notice.lost_all else unstarted

    async def apply(
        self, notice: GroupNotice | None, ask: Ask, forget: Forget, assigned: Assigned
    ) -> None:
        """Apply ``notice``, or what a failed step left; see the module docstring.

        A new notice replaces what an old one left: the membership actor
        sends none before the last is acknowledged, unless the member lost
        everything, which voids the rest of the old one.
        """
        if self._greet:
            greet, self._greet = self._greet, frozenset()
            await self._call("on_partitions_assigned", greet)
        if notice is not None:
            self._take_over(notice)
        notice = self._left
        if notice is not None:
            await self._apply_left(notice, ask, forget, assigned)
        if self._owed:
            owed, member = self._owed, self._owed_member
            assert member is not None
            assigned(await ask(lambda r: Take(r, owed, member)))
            self._owed = frozenset()
            await self._call("on_partitions_assigned", owed)

    async def _apply_left(
        self, notice: GroupNotice, ask: Ask, forget: Forget, assigned: Assigned
    ) -> None:
        if notice.lost:
            lost = notice.lost
            self._left = notice = attrs.evolve(notice, lost=frozenset())
            try:
                await self._call("on_partitions_lost", lost)
            finally:
                await self._stop(ask, forget, lost, commit=False)
        if notice.revoke:
            revoke = notice.revoke
            self._left = notice = attrs.evolve(notice, revoke=frozenset())
            self._revoked |= revoke
            try:
                await self._call("on_partitions_revoked", revoke)
            finally:
                await self._stop(ask, forget, revoke, commit=True)
        await self._membership.send(Released(notice.seq, self._revoked))
        self._revoked, self._acked = frozenset(), True
        take, member = notice.take, notice.member
        if take:
            assert member is not None
            assigned(await ask(lambda r: Take(r, take, member)))
        self._left = None
        if take:
            await self._call("on_partitions_assigned", take)

    @staticmethod
    async def _stop(
        ask: Ask, forget: Forget, partitions: frozenset[TopicPartition], *, commit: bool
    ) -> None:
        """The coordinator stops the partitions (first hearing, as before any
        request, what was handed out of them: that is what it commits); then
        the facade drops what it holds of them."""
        try:
            await ask(lambda r: Revoke(r, partitions, commit=commit))
        finally:
            forget(partitions)

    async def _call(self, name: str, partitions: frozenset[TopicPartition]) -> None:
        method = getattr(self._listener, name, None)
        if method is not None:
            await method(partitions)
