"""Holding the maintenance lease for the length of a pass.

One maintainer acts at a time. The lease is a row in the metadata store
with a holder, an epoch and an expiry; every change a pass makes to the
catalogue is fenced by the epoch (see ``MetadataStore``) and extends the
lease. Between changes (a long rewrite) a task renews it every third of its
ttl. If the lease is lost all the same (the process stalled past the ttl and
another maintainer took it), the pass is cancelled: nothing it does after
that could be committed anyway.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import attrs

from .._errors import LeaseLostError, RetriableError, StreamHouseError, raise_as_one
from .._log import get_logger
from .._metadata.protocol import MaintenanceLease, MetadataStore

__all__ = ["HeldLease", "under_lease"]

T = TypeVar("T")

_log = get_logger("maintenance")


@attrs.define(eq=False)
class HeldLease:
    """The lease of a pass in progress; ``lost`` once it was taken from us."""

    lease: MaintenanceLease
    lost: bool = False


def _holder() -> str:
    """A name no other maintainer has: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


async def _renew(meta: MetadataStore, held: HeldLease, scope: anyio.CancelScope) -> None:
    while True:
        await anyio.sleep(held.lease.ttl / 3)
        try:
            await meta.renew_lease(held.lease)
        except LeaseLostError:
            _log.warning("the maintenance lease (epoch %d) was lost: stopping", held.lease.epoch)
            held.lost = True
            scope.cancel()
            return
        except RetriableError as exc:
            # The fence of the pass's next change decides; try again next tick.
            _log.warning("could not renew the maintenance lease: %s", exc)


async def under_lease(
    meta: MetadataStore, ttl: float, body: Callable[[HeldLease], Awaitable[T]]
) -> T | None:
    """Run ``body`` holding the lease; None at once if another maintainer has it.

    If the lease is lost, ``body`` is cancelled, and this returns None with
    the HeldLease's ``lost`` set. The lease is given up at the end, even when
    ``body`` failed or was cancelled, so the next maintainer need not wait
    for it to run out.

    Raises:
        StreamHouseError: the first that ``body`` raised (not in a group).
    """
    lease = await meta.acquire_lease(_holder(), ttl)
    if lease is None:
        return None
    held = HeldLease(lease)
    results: list[T] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_renew, meta, held, tg.cancel_scope)
            results.append(await body(held))
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_as_one(group)
    finally:
        with anyio.move_on_after(10, shield=True):
            try:
                await meta.release_lease(lease)
            except StreamHouseError as exc:  # it runs out by itself
                _log.warning("could not give the maintenance lease up: %s", exc)
    return results[0] if results else None
