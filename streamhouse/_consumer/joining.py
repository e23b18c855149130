"""Group membership at open: its arguments checked, its actor started."""

from __future__ import annotations

import contextlib
import inspect
import uuid

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from .._errors import InvalidArgumentError, StreamHouseError
from .._lifecycle import Runtime
from .._metadata.groups import HeartbeatRequest, MemberRef, check_instance_id
from .._metadata.protocol import MetadataStore
from .._retry import retry_call
from .._types import TopicPartition
from .args import check_seconds
from .listener import RebalanceListener
from .membership import LEAVE_TIMEOUT, MembershipActor
from .messages import PartitionStart
from .partitions import resolve_starts
from .rebalance import Rebalancer
from .settings import Membership, Settings

__all__ = ["Joined", "check_membership", "join_group", "leave_quietly", "start_membership"]


def check_membership(
    group_id: str | None,
    wanted: list[str | TopicPartition],
    instance_id: object,
    session_timeout: object,
    heartbeat_interval: object,
    max_poll_interval: object,
    listener: object,
) -> Membership | None:
    """The membership asked for (None: manual assignment, or no group).

    Raises:
        InvalidArgumentError: a bad id, timeout or listener, or membership
            options without membership.
    """
    session = check_seconds("session_timeout", session_timeout)
    interval = check_seconds("heartbeat_interval", heartbeat_interval)
    most = check_seconds("max_poll_interval", max_poll_interval)
    if interval >= session:
        raise InvalidArgumentError(
            f"heartbeat_interval ({interval}s) must be shorter than session_timeout "
            f"({session}s): several heartbeats must fit in a session"
        )
    if instance_id is not None:
        instance_id = check_instance_id(instance_id)
    if listener is not None:
        _check_listener(listener)
    member = group_id is not None and all(isinstance(t, str) for t in wanted)
    if not member:
        for name, value in (("group_instance_id", instance_id), ("rebalance_listener", listener)):
            if value is not None:
                raise InvalidArgumentError(
                    f"{name} needs group membership: topic names and a group_id, not "
                    "TopicPartitions (a manual assignment)"
                )
        return None
    topics = tuple(sorted({t for t in wanted if isinstance(t, str)}))
    return Membership(topics, instance_id, session, interval, most, listener or RebalanceListener())


def _check_listener(listener: object) -> None:
    for name in ("on_partitions_revoked", "on_partitions_assigned", "on_partitions_lost"):
        method = getattr(listener, name, None)
        if method is None and name == "on_partitions_lost":
            continue
        if method is None or not inspect.iscoroutinefunction(method):
            raise InvalidArgumentError(
                f"rebalance_listener must have an async method {name}(partitions), not {listener!r}"
            )


async def start_membership(
    runtime: Runtime,
    settings: Settings,
    meta: MetadataStore,
    inbox: MemoryObjectSendStream[object],
    joined: Joined,
) -> Rebalancer:
    """Start the membership actor; return the facade's side of it."""
    membership = settings.membership
    assert membership is not None
    assert settings.group_id is not None
    # 16: Polled is sent at most twice a heartbeat interval, Released once a
    # change; the facade never waits for room for Polled.
    send, receive = anyio.create_memory_object_stream[object](16)
    actor = MembershipActor(
        meta, settings.group_id, membership, inbox.clone(), receive, settings.retry
    )
    actor.joined(joined.member, joined.owned, joined.release)
    try:
        await runtime.start(actor.run)
    except BaseException:
        send.close()
        receive.close()
        raise
    # The listener hears of the partitions given at open at the first poll.
    return Rebalancer(
        membership.listener, send, membership.heartbeat_interval / 2, greet=joined.owned
    )


@attrs.frozen
class Joined:
    """A member that joined its group at open: who it is, where its partitions start."""

    member: MemberRef
    owned: frozenset[TopicPartition]
    release: frozenset[TopicPartition]  # owned, but due elsewhere already
    starts: dict[TopicPartition, PartitionStart]


async def join_group(meta: MetadataStore, settings: Settings) -> Joined:
    """Join (one heartbeat at epoch 0); look up where the partitions given start."""
    membership = settings.membership
    group = settings.group_id
    assert membership is not None
    assert group is not None
    member_id = f"{membership.instance_id or 'member'}-{uuid.uuid4().hex}"
    request = HeartbeatRequest(
        member_id, 0, membership.topics, membership.session_timeout, membership.instance_id
    )
    answer = await retry_call(lambda: meta.heartbeat(group, request), policy=settings.retry)
    owned = answer.owned - answer.revoke
    starts: dict[TopicPartition, PartitionStart] = {}
    if owned:
        topics = sorted({tp.topic for tp in owned})
        states = await retry_call(lambda: meta.partition_states(topics), policy=settings.retry)
        found = await retry_call(lambda: meta.fetch_offsets(group), policy=settings.retry)
        committed = {tp: c.offset for tp, c in found.items()}
        mine = [s for s in states if TopicPartition(s.topic, s.partition) in owned]
        starts = resolve_starts(mine, committed, settings.offset_reset)
    return Joined(MemberRef(member_id, answer.epoch), owned, answer.revoke, starts)


async def leave_quietly(meta: MetadataStore, settings: Settings, joined: Joined) -> None:
    """Opening failed after the join: leave (bounded, shielded), or let the session run out."""
    assert settings.group_id is not None
    with anyio.move_on_after(LEAVE_TIMEOUT, shield=True):
        with contextlib.suppress(StreamHouseError):
            group = settings.group_id
            await retry_call(lambda: meta.leave_group(group, joined.member), policy=settings.retry)
