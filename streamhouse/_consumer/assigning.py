"""The coordinator's assignment: partitions start, stop and move, by hand or by the group.

A mixin of the Coordinator (the one owner of the partitions; it brings the
readers, the bulletin and the commits): ``_assign`` and ``_revoke`` move
partitions in and out, ``_pause``, ``_resume`` and ``_seek`` move them
where they are; with group membership, ``_group_change`` queues what
the membership actor learnt for the facade (which applies it in the
application's task, around the listener's calls), ``_take`` starts the
partitions the group gave from the group's committed offsets, and
``_revoke_for_group`` commits what was handed out before letting go.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Mapping

from .._errors import StreamHouseError
from .._metadata.protocol import MetadataStore
from .._metrics import ConsumerProbe
from .._types import TopicPartition
from .commits import Commits
from .messages import GroupChange, PartitionStart, Poll, SeekTo
from .notices import Bulletin
from .partitions import Partition, resolve_starts
from .settings import Settings

__all__ = ["Assigning"]

_log = logging.getLogger("streamhouse.consumer")


class Assigning:
    """Assignment, by hand and by the group; mixed into the Coordinator."""

    _parts: dict[TopicPartition, Partition]
    _ready: dict[TopicPartition, None]
    _moved: set[TopicPartition]
    _paused: set[TopicPartition]
    _epochs: itertools.count[int]
    _bulletin: Bulletin
    _commits: Commits
    _metadata: MetadataStore
    _settings: Settings
    _probe: ConsumerProbe

    def _start_reader(self, part: Partition, offset: int, *, reset: bool) -> None:
        raise NotImplementedError  # pragma: no cover - the Coordinator's

    def _stop_reader(self, part: Partition) -> None:
        raise NotImplementedError  # pragma: no cover - the Coordinator's

    def _reset(self, part: Partition, offset: int) -> None:
        raise NotImplementedError  # pragma: no cover - the Coordinator's

    def _refresh(self) -> None:
        raise NotImplementedError  # pragma: no cover - the Coordinator's

    def _part(self, tp: TopicPartition) -> Partition:
        raise NotImplementedError  # pragma: no cover - the Coordinator's

    def _assign(
        self, partitions: Mapping[TopicPartition, PartitionStart], *, initial: bool
    ) -> None:
        topics = {tp.topic for tp in self._parts}
        for tp, start in partitions.items():
            part = self._parts.get(tp)
            if part is None:
                part = self._parts[tp] = Partition.start(tp, start)
                self._start_reader(part, part.position, reset=True)
            else:
                part.committed = start.committed
                self._reset(part, start.position)
                self._bulletin.epoch(tp, part.epoch)
            self._commits.moved(part)
        if {tp.topic for tp in self._parts} != topics:
            self._refresh()
        if not initial:
            self._bulletin.assignment(frozenset(self._parts))
            self._probe.rebalanced()
        self._probe.next_lags = -math.inf  # the new partitions' gauges at the next refresh

    def _revoke(self, partitions: Iterable[TopicPartition]) -> None:
        partitions = frozenset(partitions)
        topics = {tp.topic for tp in self._parts}
        for tp in partitions:
            part = self._parts.pop(tp, None)
            if part is None:
                continue
            self._stop_reader(part)
            self._bulletin.recovered(tp)
            self._ready.pop(tp, None)
            for tps in (self._moved, self._commits.uncommitted, self._paused):
                tps.discard(tp)
            self._bulletin.epoch(tp, next(self._epochs))
        if {tp.topic for tp in self._parts} != topics:
            self._refresh()
        self._bulletin.assignment(frozenset(self._parts))
        self._probe.forget(partitions)
        self._probe.rebalanced()

    # -- pauses and seeks: partitions that stay, moved ------------------------------

    def _pause(self, partitions: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        parts = [self._part(tp) for tp in partitions]
        epochs = {}
        for part in parts:
            part.paused = True
            self._paused.add(part.tp)
            # What the facade held goes back: the reader starts again at the
            # position, and reads ahead (bounded) while the partition waits.
            self._start_reader(part, part.position, reset=True)
            epochs[part.tp] = part.epoch
        return epochs

    def _resume(self, partitions: frozenset[TopicPartition]) -> None:
        for part in [self._part(tp) for tp in partitions]:
            part.paused = False
            self._paused.discard(part.tp)
            if part.pending:
                self._ready[part.tp] = None

    async def _seek(
        self, targets: Mapping[TopicPartition, int | SeekTo]
    ) -> dict[TopicPartition, int]:
        parts = {tp: self._part(tp) for tp in targets}
        symbolic = sorted({tp.topic for tp, to in targets.items() if isinstance(to, SeekTo)})
        if symbolic:
            for s in await self._metadata.partition_states(symbolic):
                part = self._parts.get(TopicPartition(s.topic, s.partition))
                if part is not None:
                    part.log_start, part.high_watermark = s.log_start_offset, s.high_watermark
        epochs = {}
        for tp, to in targets.items():
            part = parts[tp]
            if to is SeekTo.BEGINNING:
                self._reset(part, part.log_start)
            elif to is SeekTo.END:
                self._reset(part, part.high_watermark)
            else:
                self._reset(part, to)
            epochs[tp] = part.epoch
        return epochs

    # -- group membership ------------------------------------------------------------

    def _group_change(self, msg: GroupChange, polls: list[Poll]) -> None:
        """Queue the change for the facade; answer waiting polls at once (with
        nothing), so that the application's next poll applies it."""
        self._bulletin.group_change(msg)
        for poll in polls:
            poll.reply.put([])

    async def _revoke_for_group(self, partitions: frozenset[TopicPartition], commit: bool) -> None:
        if commit and self._settings.auto_commit:
            parts = {tp: p for tp, p in self._parts.items() if tp in partitions}
            offsets = {tp: p.position for tp, p in parts.items() if p.position != p.committed}
            try:
                await self._commits.commit(offsets, parts)
            except StreamHouseError as exc:
                # Fenced (CommitFailedError) or the store is down: the
                # partitions go anyway; their next owner reads again from
                # the last commit (at-least-once).
                _log.warning("commit before giving up %d partitions failed: %r", len(parts), exc)
        self._revoke(partitions)

    async def _take(self, partitions: frozenset[TopicPartition]) -> frozenset[TopicPartition]:
        """Start the partitions the group gave, from its committed offsets."""
        group = self._commits.group_id
        assert group is not None
        topics = sorted({tp.topic for tp in partitions})
        states = [
            s
            for s in await self._metadata.partition_states(topics)
            if TopicPartition(s.topic, s.partition) in partitions
        ]
        found = await self._metadata.fetch_offsets(group, sorted(partitions))
        committed = {tp: c.offset for tp, c in found.items()}
        starts = resolve_starts(states, committed, self._settings.offset_reset)
        self._assign(starts, initial=False)
        return frozenset(self._parts)
