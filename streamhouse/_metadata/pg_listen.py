"""LISTEN/NOTIFY for the PostgreSQL store: one listener thread per store.

Every segment commit sends, inside its transaction, ``pg_notify(channel,
topics)`` on a channel named after the store's schema; PostgreSQL delivers
it to listeners only if the transaction commits. The listener holds one
connection of its own, LISTENs, and counts notifications per topic under a
``threading.Condition``; a watch remembers the counts it last saw and waits
(in a worker thread) until they move. When the listener's connection drops,
watches fall back to polling at the store's ``poll_interval``, and the
listener reconnects with the store's retry policy's backoff; every
(re)connection bumps a generation, which wakes every watch, since
notifications sent while nobody listened are lost.

Why a thread and not psycopg's async API: that needs asyncio, and
StreamHouse runs under trio as well.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.to_thread
import psycopg
from psycopg import sql

from .._errors import StreamHouseError
from .._retry import RetryPolicy
from .common import check_timeout

__all__ = ["Listener", "PostgresWatch", "channel_for", "notify_payload"]

log = logging.getLogger("streamhouse.metadata")

_ALL = "*"
_MAX_PAYLOAD = 7900  # PostgreSQL's limit is 8000 bytes
_KEEPALIVE = 5.0  # seconds without traffic before the listener checks its connection
_TICK = 0.2  # seconds the listener blocks before looking at its stop flag

Snapshot = tuple[int, tuple[int, ...]]


def channel_for(schema: str) -> str:
    """The NOTIFY channel of a schema (a channel name is at most 63 bytes;
    two schemas sharing a 51-character prefix share a channel, which costs
    spurious wake-ups, never missed ones)."""
    return f"streamhouse_{schema}"[:63]


def notify_payload(topics: Sequence[str]) -> str:
    """The topics a commit touched, as one payload (``*``: any topic)."""
    payload = ",".join(sorted(set(topics)))
    return payload if len(payload) <= _MAX_PAYLOAD else _ALL


class Listener:
    """A thread that LISTENs on one channel and counts what it hears."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        channel: str,
        retry: RetryPolicy,
        where: str,
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._retry = retry
        self._where = where
        self._cond = threading.Condition()
        self._versions: dict[str, int] = {}
        self._generation = 0
        self._alive = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"streamhouse-listen-{channel}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread: it looks at the flag every ``_TICK`` seconds. A
        thread still connecting is not waited for; it closes what it opens
        and ends by itself once the attempt is over."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=3 * _TICK)

    @property
    def alive(self) -> bool:
        return self._alive and not self._stopping.is_set()

    def snapshot(self, topics: Sequence[str]) -> Snapshot:
        with self._cond:
            return self._generation, tuple(self._versions.get(t, 0) for t in topics)

    def wait(self, seen: Snapshot, topics: Sequence[str], timeout: float) -> None:
        """Block until the counts of ``topics`` differ from ``seen``, the
        listener goes down or stops, or ``timeout`` passes."""
        with self._cond:
            self._cond.wait_for(
                lambda: self.snapshot(topics) != seen or not self.alive, timeout=timeout
            )

    def _heard(self, payload: str) -> None:
        with self._cond:
            if payload == _ALL:
                self._generation += 1
            else:
                for topic in payload.split(","):
                    self._versions[topic] = self._versions.get(topic, 0) + 1
            self._cond.notify_all()

    def _set_alive(self, alive: bool) -> None:
        with self._cond:
            self._alive = alive
            self._generation += 1
            self._cond.notify_all()

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    if attempt:
                        log.warning("listening again for catalogue changes on %s", self._where)
                    self._set_alive(True)
                    attempt = 0
                    self._listen(conn)
            except (psycopg.Error, StreamHouseError) as exc:
                if self._stopping.is_set():
                    break
                if self._alive or not attempt:
                    log.warning(
                        "lost the listener connection to %s (%s); polling until it is back",
                        self._where,
                        type(exc).__name__,
                    )
                self._set_alive(False)
                self._stopping.wait(self._retry.delay(attempt))
                attempt = min(attempt + 1, 16)
        self._set_alive(False)

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        quiet_since = time.monotonic()
        while not self._stopping.is_set():
            for notify in conn.notifies(timeout=_TICK):
                self._heard(notify.payload)
                quiet_since = time.monotonic()
            if time.monotonic() - quiet_since > _KEEPALIVE:
                # A server that vanished without closing the socket would
                # otherwise go unnoticed while nothing is committed.
                conn.execute("SELECT 1")
                quiet_since = time.monotonic()


class PostgresWatch:
    """A CatalogueWatch on PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        listener: Callable[[], Listener],
        topics: Sequence[str],
        poll_interval: float,
        limiter: anyio.CapacityLimiter,
    ) -> None:
        self._listener = listener
        self._topics = tuple(topics)
        self._poll_interval = poll_interval
        self._limiter = limiter
        self._seen: Snapshot | None = None

    @property
    def pushed(self) -> bool:
        return self._listener().alive

    async def wait(self, timeout: float) -> bool:
        timeout = check_timeout(timeout)
        listener = self._listener()
        now = listener.snapshot(self._topics)
        if self._seen is None or now != self._seen:
            self._seen = now
            return True
        if not listener.alive:
            # Nobody listens: any moment may have brought a change.
            await anyio.sleep(min(timeout, self._poll_interval))
            self._seen = listener.snapshot(self._topics)
            return True
        if timeout == 0:
            return False  # a look, and nothing moved: no thread to wake
        # A cancelled wait leaves its thread blocked until the next
        # notification or the timeout; it holds nothing but a token of
        # the watch limiter meanwhile.
        await anyio.to_thread.run_sync(
            listener.wait, now, self._topics, timeout,
            abandon_on_cancel=True, limiter=self._limiter,
        )  # fmt: skip
        self._seen = listener.snapshot(self._topics)
        return self._seen != now or not listener.alive
