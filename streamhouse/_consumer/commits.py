"""The coordinator's commits: what differs from the group's offsets, and when to write it.

Owned by the coordinator and used only in its task. ``uncommitted`` holds
the partitions whose position or consumed offset may differ from the
committed one, so a commit looks at those, not at every assigned partition.

``commit()`` writes positions (every record handed out); auto-commit and a
close after an error write consumed offsets (positions as of the last time
the application came back for more): at-least-once. Auto-commit failures are
logged, two lines a burst, and tried again at the next interval. A closing
commit refused because the member was fenced is logged too (``close_commit``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

import anyio

from .._errors import CommitFailedError, InvalidArgumentError, RetriableError
from .._metadata.groups import MemberRef
from .._metadata.protocol import MetadataStore
from .._metrics import ConsumerProbe
from .._retry import RetryBurst
from .._types import TopicPartition
from .messages import CloseMode
from .partitions import Partition

__all__ = ["Commits"]

_log = logging.getLogger("streamhouse.consumer")


class Commits:
    def __init__(
        self,
        metadata: MetadataStore,
        group_id: str | None,
        interval: float | None,
        probe: ConsumerProbe,
        *,
        member_only: bool = False,
    ) -> None:
        self._metadata = metadata
        self._latency = probe.commit_latency
        self.group_id = group_id
        # With group membership, every commit is the member's, conditional on
        # owning the partitions at its epoch (None: not in the group yet).
        self._member_only = member_only
        self.member: MemberRef | None = None
        self._interval = interval  # auto-commit's, or None
        self._log = RetryBurst(_log, f"auto-commit of group {group_id!r}")
        self.uncommitted: set[TopicPartition] = set()
        self.next_auto_commit = math.inf

    def start(self) -> None:
        """Start the auto-commit timer, if auto-commit is on."""
        if self._interval is not None:
            self.next_auto_commit = anyio.current_time() + self._interval

    def moved(self, part: Partition) -> None:
        """``part``'s position, consumed or committed offset changed."""
        if part.uncommitted:
            self.uncommitted.add(part.tp)
        else:
            self.uncommitted.discard(part.tp)

    async def commit_by(self, mode: CloseMode, parts: Mapping[TopicPartition, Partition]) -> None:
        """Commit every position (or consumed offset) that differs from its commit."""
        if mode is CloseMode.NOTHING:
            return
        offsets = {}
        for tp in list(self.uncommitted):
            part = parts[tp]
            offset = part.position if mode is CloseMode.POSITIONS else part.consumed
            if offset != part.committed:
                offsets[tp] = offset
            elif not part.uncommitted:
                self.uncommitted.discard(tp)  # moved, and back where it was committed
        await self.commit(offsets, parts)

    async def close_commit(
        self, mode: CloseMode, parts: Mapping[TopicPartition, Partition]
    ) -> None:
        """The commit as the consumer closes (``commit_by``), with one refusal
        logged, not raised: the member was fenced before it knew. Its
        partitions are another member's now, which reads them from the group's
        last commit (at-least-once: what this member handed out since comes
        again, nothing is skipped), so, as Kafka's and aiokafka's close, a
        warning, not an error out of ``async with``."""
        try:
            await self.commit_by(mode, parts)
        except CommitFailedError as exc:
            _log.warning("the closing commit of group %r was refused: %s", self.group_id, exc)

    async def commit(
        self, offsets: Mapping[TopicPartition, int], parts: Mapping[TopicPartition, Partition]
    ) -> None:
        """Commit exactly ``offsets``, in one transaction."""
        if self.group_id is None:
            raise InvalidArgumentError("commit needs a group_id: open the consumer with one")
        if not offsets:
            return
        if self._member_only and self.member is None:
            raise CommitFailedError(
                f"this consumer owns no partition of group {self.group_id!r} yet: nothing was "
                "committed"
            )
        started = time.perf_counter()
        await self._metadata.commit_offsets(self.group_id, offsets, member=self.member)
        self._latency.observe(time.perf_counter() - started)
        for tp, offset in offsets.items():
            part = parts.get(tp)
            if part is not None:
                part.committed = offset
                self.moved(part)

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset, as the metadata store has it now."""
        if self.group_id is None:
            return None
        found = await self._metadata.fetch_offsets(self.group_id, [tp])
        return found[tp].offset if tp in found else None

    async def auto_commit(self, parts: Mapping[TopicPartition, Partition]) -> None:
        assert self._interval is not None
        self.next_auto_commit = anyio.current_time() + self._interval
        try:
            await self.commit_by(CloseMode.CONSUMED, parts)
        except RetriableError as exc:
            self._log.failed(exc)  # tried again at the next interval
        except Exception as exc:
            _log.error("auto-commit of group %r failed: %r", self.group_id, exc)
        else:
            self._log.succeeded()
