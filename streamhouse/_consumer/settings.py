"""The consumer's settings the actors share (checked by ``opening``)."""

from __future__ import annotations

import attrs

from .._retry import RetryPolicy
from .._types import OffsetReset

__all__ = ["Membership", "Settings"]


@attrs.frozen
class Membership:
    """Group membership: the consumer subscribes to ``topics`` as a member."""

    topics: tuple[str, ...]
    instance_id: str | None
    session_timeout: float
    heartbeat_interval: float
    max_poll_interval: float
    listener: object  # a RebalanceListener, or any object with its async methods


@attrs.frozen
class Settings:
    group_id: str | None
    offset_reset: OffsetReset
    auto_commit: bool
    auto_commit_interval: float
    prefetch_batches: int
    refresh_interval: float
    stall_timeout: float
    retry: RetryPolicy
    membership: Membership | None = None
