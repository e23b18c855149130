"""The membership actor: the consumer's life in its group.

It heartbeats every ``heartbeat_interval`` (one metadata transaction each,
see ``streamhouse/_metadata/groups.py``) and turns the answers into
``GroupChange`` messages for the coordinator, which queues them for the
facade: the application's next poll applies a change in its own task (the
listener, the commit, the drop) and acknowledges it (``Released``), and the
next heartbeat, sent at once, gives the revoked partitions up. One change
is in flight at a time: what the store says meanwhile waits for the
acknowledgement, so the facade never applies a change computed from a state
it has not reached.

- Fenced (the session ran out, or another process took the instance id):
  every partition is lost (``GroupChange(lost=True)``, no commit), and the
  member joins again at once, under its member id, at a new epoch.
- The application stopped polling for ``max_poll_interval``: the member
  leaves the group by itself (WARNING), so its partitions move on; its next
  poll loses them and joins again.
- A heartbeat that fails (the store is down) is logged and tried again at
  the next interval; if the store stays down past the session, the next
  answer says fenced.
- Closing leaves the group at once (shielded, bounded), so the others take
  the partitions within a heartbeat or two, not a session timeout.
"""

from __future__ import annotations

import logging
import math

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import StreamHouseError
from .._metadata.groups import GroupAssignment, HeartbeatRequest, MemberRef
from .._metadata.protocol import MetadataStore
from .._retry import RetryBurst, RetryPolicy, retry_call
from .._types import TopicPartition
from .messages import GroupChange, GroupNotice, Polled, Released
from .settings import Membership

__all__ = ["MembershipActor"]

_log = logging.getLogger("streamhouse.consumer")

LEAVE_TIMEOUT = 5.0
"""Seconds closing may spend leaving the group (then the session runs out)."""


class MembershipActor:
    """Created and run by the consumer's runtime; see the module docstring."""

    def __init__(
        self,
        metadata: MetadataStore,
        group_id: str,
        membership: Membership,
        out: MemoryObjectSendStream[object],
        inbox: MemoryObjectReceiveStream[object],
        retry: RetryPolicy,
    ) -> None:
        self._metadata = metadata
        self._group_id = group_id
        self._m = membership
        self._out = out  # the coordinator's inbox
        self._inbox = inbox  # Released and Polled, from the facade
        self._retry = retry  # leaving retries transient errors (then the session runs out)
        self.member_id = ""
        self._epoch = 0  # 0: not in the group
        self._known: frozenset[TopicPartition] = frozenset()  # what the facade has
        self._in_flight: GroupNotice | None = None
        self._seq = 0
        self._release: frozenset[TopicPartition] = frozenset()
        self._last_poll = math.nan
        self._busy_until = -math.inf  # inside a poll that waits for records until then
        self._away = False  # left by itself for max_poll_interval
        self._burst = RetryBurst(_log, f"heartbeats of group {group_id!r}")

    def joined(
        self,
        member: MemberRef,
        owned: frozenset[TopicPartition],
        release: frozenset[TopicPartition],
    ) -> None:
        """The member joined at open (``joining.join_group``); the facade has ``owned``."""
        self.member_id, self._epoch = member.member_id, member.epoch
        self._known, self._release = owned, release

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with self._out:
                self._last_poll = anyio.current_time()
                task_status.started()
                next_beat = -math.inf
                while True:
                    if anyio.current_time() >= next_beat:
                        fenced = await self._tick()
                        # Fenced: join again at once.
                        next_beat = anyio.current_time() + (
                            0.0 if fenced else self._m.heartbeat_interval
                        )
                    with anyio.move_on_at(next_beat):
                        msg = await self._inbox.receive()
                        if self._on_message(msg):
                            next_beat = -math.inf
        finally:
            self._inbox.close()
            with anyio.move_on_after(LEAVE_TIMEOUT, shield=True):
                await self._leave()

    def _on_message(self, msg: object) -> bool:
        """Take a message of the facade; True: heartbeat now."""
        match msg:
            case Polled():
                self._last_poll = msg.at
                self._busy_until = msg.at if msg.until is None else msg.until
                if self._away:
                    self._away = False
                    return True
            case Released():
                notice = self._in_flight
                if notice is not None and msg.seq == notice.seq:
                    self._known = (self._known - notice.revoke - notice.lost) | notice.take
                    self._release |= msg.released
                    self._in_flight = None
                    return True
        return False

    async def _tick(self) -> bool:
        """Heartbeat (or leave, after max_poll_interval); True: fenced."""
        if self._away:
            return False
        now = anyio.current_time()
        idle_since = min(now, max(self._last_poll, self._busy_until))
        if self._epoch and now - idle_since > self._m.max_poll_interval:
            _log.warning(
                "consumer of group %r did not poll for max_poll_interval (%ss): it leaves the "
                "group, and its next poll joins again",
                self._group_id, self._m.max_poll_interval,
            )  # fmt: skip
            await self._leave()
            self._away = True
            await self._lose()
            return False
        request = HeartbeatRequest(
            self.member_id, self._epoch, self._m.topics, self._m.session_timeout,
            self._m.instance_id, self._release,
        )  # fmt: skip
        try:
            answer = await self._metadata.heartbeat(self._group_id, request)
        except StreamHouseError as exc:
            self._burst.failed(exc)  # tried again at the next interval
            return False
        self._burst.succeeded()
        self._release = frozenset()
        await self._on_answer(answer)
        return answer.fenced

    async def _on_answer(self, answer: GroupAssignment) -> None:
        if answer.fenced:
            _log.warning(
                "member %s of group %r was fenced (its session ran out): its partitions are "
                "lost; it joins again", self.member_id, self._group_id,
            )  # fmt: skip
            self._epoch = 0
            await self._lose()
            return
        self._epoch = answer.epoch
        if self._in_flight is not None:
            return  # the facade has not applied the last change yet
        known = self._known
        # Owned, but already due elsewhere, and never handed to the facade:
        # given up at the next heartbeat without bothering the application.
        self._release |= answer.revoke - known
        take = answer.owned - known - answer.revoke
        revoke = (answer.revoke & known) | (known - answer.owned)
        if take or revoke:
            self._seq += 1
            member = MemberRef(self.member_id, self._epoch)
            self._in_flight = GroupNotice(self._seq, revoke=revoke, take=take, member=member)
            await self._out.send(GroupChange(self._in_flight))

    async def _lose(self) -> None:
        """Everything the facade has or was about to have is lost."""
        self._known = frozenset()
        self._release = frozenset()
        self._in_flight = None
        self._seq += 1
        await self._out.send(GroupChange(GroupNotice(self._seq), lost=True))

    async def _leave(self) -> None:
        if self._epoch == 0:
            return
        member, self._epoch = MemberRef(self.member_id, self._epoch), 0
        try:
            await retry_call(
                lambda: self._metadata.leave_group(self._group_id, member), policy=self._retry
            )
        except StreamHouseError as exc:
            _log.warning("leaving group %r failed (its session runs out): %r", self._group_id, exc)
