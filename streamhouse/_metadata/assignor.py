"""The group's assignor: sticky and balanced, over members' subscriptions.

Run inside the heartbeat transaction (``groups``); pure, so tests call it
directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .._types import TopicPartition

__all__ = ["assign"]

# Sticky and balanced, over members with different subscriptions: every
# partition stays with its current target if that member is alive and
# subscribed; the rest go, one by one, to the eligible member with the
# fewest; then a partition moves from a member with the most to an eligible
# one with at least two fewer, until none can (each move lowers the sum of
# squared counts, so this ends). With one subscription for all, counts end
# within one of each other, and only the surplus moves.


def assign(
    partitions: Sequence[TopicPartition],
    subscriptions: Mapping[str, frozenset[str]],
    current: Mapping[TopicPartition, str | None],
) -> dict[TopicPartition, str]:
    """The target owner of every partition some member subscribes to."""
    members = sorted(subscriptions)
    owned: dict[str, list[TopicPartition]] = {m: [] for m in members}
    out: dict[TopicPartition, str] = {}
    free = []
    for tp in sorted(partitions):
        now = current.get(tp)
        if now is not None and tp.topic in subscriptions.get(now, ()):
            out[tp] = now
            owned[now].append(tp)
        else:
            free.append(tp)
    for tp in free:
        eligible = [m for m in members if tp.topic in subscriptions[m]]
        if eligible:
            chosen = min(eligible, key=lambda m: (len(owned[m]), m))
            out[tp] = chosen
            owned[chosen].append(tp)
    while _move_one(members, subscriptions, owned, out):
        pass
    return out


def _move_one(
    members: list[str],
    subscriptions: Mapping[str, frozenset[str]],
    owned: dict[str, list[TopicPartition]],
    out: dict[TopicPartition, str],
) -> bool:
    for giver in sorted(members, key=lambda m: (-len(owned[m]), m)):
        most = len(owned[giver])
        for tp in reversed(owned[giver]):
            eligible = [
                m for m in members if tp.topic in subscriptions[m] and len(owned[m]) + 1 < most
            ]
            if eligible:
                taker = min(eligible, key=lambda m: (len(owned[m]), m))
                owned[giver].remove(tp)
                owned[taker].append(tp)
                out[tp] = taker
                return True
    return False
