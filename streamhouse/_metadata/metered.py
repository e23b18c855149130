"""A MetadataStore whose every call is timed, per operation (the method's name).

The clients wrap their metadata store in it (``open_consumer``,
``open_producer``): each call of the protocol is one transaction (or one
read) in both implementations, so the time of the call is the latency of
the transaction, its retries inside the store included. ``watch()`` is not
timed: it returns a waiter, not an answer.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from .._log import get_logger
from .._metrics import MetadataProbe
from .protocol import MetadataStore

__all__ = ["MeteredMetadataStore", "metered_metadata"]

_log = get_logger("metadata")

# The protocol's calls that are transactions (everything but watch and aclose).
_TIMED = frozenset(
    name
    for name in dir(MetadataStore)
    if not name.startswith("_") and name not in ("watch", "aclose")
)


class MeteredMetadataStore:
    """``inner`` with every transaction timed; everything else passes through."""

    def __init__(self, inner: MetadataStore, probe: MetadataProbe) -> None:
        self.inner = inner
        self._probe = probe

    def __repr__(self) -> str:
        return repr(self.inner)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in _TIMED:
            return attr
        timed = _timed(name, attr, self._probe.timer(name).observe)
        setattr(self, name, timed)  # found here from now on, without __getattr__
        return timed


def _timed(
    name: str, call: Callable[..., Awaitable[Any]], observe: Callable[[float], None]
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(call)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await call(*args, **kwargs)
        finally:
            took = time.perf_counter() - started
            observe(took)
            _log.debug("metadata %s: %.3f s", name, took)

    return timed


def metered_metadata(inner: MetadataStore, probe: MetadataProbe) -> MetadataStore:
    """``inner``, timed: a MetadataStore to the code that uses it."""
    return cast(MetadataStore, MeteredMetadataStore(inner, probe))
