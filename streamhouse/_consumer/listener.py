"""RebalanceListener: what the application hears when the group moves partitions."""

from __future__ import annotations

from .._types import TopicPartition

__all__ = ["RebalanceListener"]


class RebalanceListener:
    """Told, in the task that polls, when the group moves partitions.

    Subclass it (or pass any object with these async methods) as
    ``open_consumer(..., rebalance_listener=...)``. Each method is awaited in
    the task that calls ``poll()``, ``poll_batches()`` or ``async for``,
    before that call returns any record, so the application may commit,
    flush or seek in it. The base class does nothing.
    """

    async def on_partitions_revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """These partitions go to another member, after this returns.

        Records of them already returned were processed by the application
        (with auto-commit, they are committed right after this returns);
        records of them not returned yet are dropped: their new owner reads
        them.
        """

    async def on_partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """These partitions are this member's now; their records follow."""

    async def on_partitions_lost(self, partitions: frozenset[TopicPartition]) -> None:
        """These partitions were taken away without a hand-over: the member's
        session ran out (it was fenced) or it left the group by itself after
        ``max_poll_interval``. They may already be another member's, so
        nothing of them can be committed any more. Called instead of
        ``on_partitions_revoked``; a listener without this method is told
        nothing."""
