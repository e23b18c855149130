"""Applying the group's changes in the application's task, around its listener.

The facade's part of a rebalance (``GroupNotice``), run at the start of a
poll, before it hands out anything, in this order:

1. ``lost`` (fenced, or left by itself): the listener's
   ``on_partitions_lost``, then the partitions go, without a commit;
2. ``revoke``: the listener's ``on_partitions_revoked``, then the
   coordinator commits (auto-commit) what was handed out of them and stops
   them; what the facade holds of them is dropped;
3. the membership actor hears that this much is applied (``Released``) and
   gives the revoked partitions up at once;
4. ``take``: the coordinator starts them from the group's committed offsets,
   the membership actor hears so (``Taken``), then the listener's
   ``on_partitions_assigned``.

A step that fails (the listener raised, the store was down) raises from the
poll; what is left of the change is applied by the next poll.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from .._types import TopicPartition
from .messages import GroupNotice, Polled, Released, Reply, Request, Revoke, Take, Taken

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
        self._revoked: frozenset[TopicPartition] = frozenset()  # not told released yet
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
        return self._left is not None or bool(self._greet)

    def close(self) -> None:
        self._membership.close()

    def keep(self, notice: GroupNotice) -> None:
        """A notice taken by a poll that was cancelled: the next poll applies it."""
        self._left, self._revoked = notice, frozenset()

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
            self._left, self._revoked = notice, frozenset()
        notice = self._left
        if notice is None:
            return
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
        self._revoked = frozenset()
        take, member = notice.take, notice.member
        if take:
            assert member is not None
            assigned(await ask(lambda r: Take(r, take, member)))
            await self._membership.send(Taken(notice.seq))
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
