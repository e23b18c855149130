"""open_consumer(): check the arguments, look the partitions up, start the runtime.

Everything a caller can get wrong is refused here, before a store is opened
or an actor started. Then the partitions are looked up and their starts
resolved (retrying transient errors a few times), the cache directory is
taken, and the shared lifecycle (``_lifecycle.run_client``) runs the actors
beside the body: the cache, then the coordinator, which starts the readers.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import attrs
from prometheus_client import CollectorRegistry

from .._config import open_metered_stores
from .._errors import InvalidArgumentError, TopicNotFoundError
from .._lifecycle import Runtime, run_client
from .._metadata.protocol import MetadataStore, PartitionState
from .._metrics import ClientMetrics, check_client_id, client_metrics
from .._names import check_group_id, check_topic_name
from .._retry import RetryPolicy, retry_call
from .._storage.protocol import ObjectStore
from .._types import OffsetReset, TopicPartition
from .args import check_count, check_partition, check_seconds
from .cache import CacheClient, run_cache
from .cachedir import CacheDirectory, open_cache_directory
from .consumer import Consumer
from .coordinator import Coordinator
from .joining import check_membership, join_group, leave_quietly, start_membership
from .messages import CloseMode, PartitionStart
from .partitions import names, resolve_starts
from .reader import SEGMENTS_AHEAD
from .settings import Settings

__all__ = ["open_consumer"]


@contextlib.asynccontextmanager
async def open_consumer(
    topics: str | TopicPartition | Sequence[str | TopicPartition],
    *,
    group_id: str | None = None,
    storage: ObjectStore | str | None = None,
    metadata: MetadataStore | str | None = None,
    offset_reset: OffsetReset | str = "latest",
    auto_commit: bool = True,
    auto_commit_interval: float = 5.0,
    max_poll_records: int = 500,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_size_bytes: int = 100 * 2**20,
    cache_first_reads: bool = False,
    prefetch_batches: int = 2,
    metadata_refresh_interval: float = 0.05,
    stall_timeout: float = 60.0,
    close_timeout: float = 30.0,
    retry: RetryPolicy | None = None,
    client_id: str | None = None,
    metrics_registry: CollectorRegistry | None = None,
    group_instance_id: str | None = None,
    session_timeout: float = 10.0,
    heartbeat_interval: float = 1.0,
    max_poll_interval: float = 300.0,
    rebalance_listener: object | None = None,
) -> AsyncIterator[Consumer]:
    """Open a consumer of ``topics``: as a member of ``group_id`` (topic names
    with a group), of TopicPartitions (a manual assignment), or of every
    partition (no group; nothing is committed).

    Args:
        topics: topic names and/or TopicPartitions.
        group_id: the group whose offsets are read and written (none: no commits).
        group_instance_id, session_timeout, heartbeat_interval, max_poll_interval,
            rebalance_listener: membership (docs/GROUPS.md): a static member's id;
            seconds of silence (the database's clock) before it is fenced; seconds
            between heartbeats; seconds without a poll before it leaves; a
            RebalanceListener (or alike), awaited in the polling task.
        storage, metadata: stores or URLs (the embedded default when omitted).
        offset_reset: where to start without a valid committed offset, and to
            go when a position falls outside the log (a seek past the end,
            data deleted): "earliest" (the log start), "latest" (the high
            watermark) or "none" (OffsetOutOfRangeError, at open or from poll()).
        auto_commit: commit the previous poll's positions every ``auto_commit_interval`` s
            and on close (the last poll's if it raised; fenced: a warning, not an error).
        max_poll_records: most records one poll returns.
        cache_dir: the segment cache's directory (None: a temporary one, removed
            at close); its files live in ``<cache_dir>/streamhouse-cache-v1/``,
            for one consumer at a time (a second gets a ConfigurationError).
        cache_size_bytes, cache_first_reads: the cache's budget on disk (0: none);
            write segments read in order the first time too, not only when
            read again (docs/PERFORMANCE.md).
        prefetch_batches, close_timeout: batches read ahead per partition;
            seconds leaving the block may take to commit.
        metadata_refresh_interval: seconds between two looks for new data.
        stall_timeout: errors keeping a partition this long raise from a poll.
        retry: the backoff of transient errors (readers: for ever; open: its tries).
        client_id, metrics_registry: its metrics' ``client_id`` label (and
            name in logs; 1-255 of ``[A-Za-z0-9._-]``, generated if omitted),
            and their CollectorRegistry (the default one if omitted).

    Raises:
        InvalidArgumentError: an argument has the wrong type or is out of range.
        ConfigurationError, TopicNotFoundError: the cache directory cannot be
            used, or is in use; a topic does not exist (at open).
        OffsetOutOfRangeError: offset_reset="none" and no valid offset.
        StreamHouseError: the runtime's own error, if it died (from the next call).
    """
    settings, wanted = _settings(
        topics, group_id, offset_reset, auto_commit, auto_commit_interval, prefetch_batches,
        metadata_refresh_interval, stall_timeout, retry, group_instance_id, session_timeout,
        heartbeat_interval, max_poll_interval, rebalance_listener,
    )  # fmt: skip
    local = _Local.check(max_poll_records, cache_dir, cache_size_bytes, cache_first_reads,
                         close_timeout)  # fmt: skip
    metrics = client_metrics(metrics_registry, check_client_id(client_id, "consumer"))
    async with open_metered_stores(storage, metadata, metrics) as (store, meta, where):
        starts = await _starts(meta, wanted, settings)
        async with _running(settings, local, store, meta, starts, metrics, where) as consumer:
            yield consumer


@contextlib.asynccontextmanager
async def _running(
    settings: Settings,
    local: _Local,
    store: ObjectStore,
    meta: MetadataStore,
    starts: dict[TopicPartition, PartitionStart],
    metrics: ClientMetrics,
    where: str,
) -> AsyncIterator[Consumer]:
    """Take the cache directory, run the actors beside the body, release what the facade holds."""
    if settings.membership is None:
        where += f": group {settings.group_id!r}, {len(starts)} partition(s): {names(starts, 5)}"
    else:
        where += (
            f": a member of group {settings.group_id!r} on {', '.join(settings.membership.topics)}"
        )
    async with _cache_directory(local) as directory:
        start = functools.partial(_start, settings, local, store, meta, directory, starts, metrics)
        close = functools.partial(_close, settings)
        consumer: Consumer | None = None
        try:
            async with run_client(
                "consumer", start, close, local.close_timeout, client_id=metrics.client_id,
                where=where,
            ) as consumer:  # fmt: skip
                yield consumer
        finally:
            if consumer is not None:
                consumer._release()


@attrs.frozen
class _Local:
    """The options of this process's side: the facade's and the cache directory's."""

    max_poll_records: int
    cache_dir: str | os.PathLike[str] | None
    budget: int
    first_reads: bool
    close_timeout: float

    @classmethod
    def check(
        cls,
        max_poll_records: int,
        cache_dir: object,
        budget: int,
        first_reads: object,
        close_timeout: float,
    ) -> _Local:
        if cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
            raise InvalidArgumentError(f"cache_dir must be a path, not {cache_dir!r}")
        if not isinstance(first_reads, bool):
            raise InvalidArgumentError(
                f"cache_first_reads must be True or False, not {first_reads!r}"
            )
        return cls(
            check_count("max_poll_records", max_poll_records, least=1),
            cache_dir,
            check_count("cache_size_bytes", budget, least=0),
            first_reads,
            check_seconds("close_timeout", close_timeout, zero=True, infinite=True),
        )


def _settings(
    topics: object,
    group_id: str | None,
    offset_reset: OffsetReset | str,
    auto_commit: bool,
    auto_commit_interval: float,
    prefetch_batches: int,
    refresh_interval: float,
    stall_timeout: float,
    retry: RetryPolicy | None,
    *membership: object,
) -> tuple[Settings, list[str | TopicPartition]]:
    """The settings the actors share, and what to read; every check made."""
    wanted = _topic_list(topics)
    if group_id is not None:
        check_group_id(group_id)
    if not isinstance(auto_commit, bool):
        raise InvalidArgumentError(f"auto_commit must be True or False, not {auto_commit!r}")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise InvalidArgumentError(f"retry must be a RetryPolicy, not {retry!r}")
    return Settings(
        membership=check_membership(group_id, wanted, *membership),
        group_id=group_id,
        offset_reset=OffsetReset.parse(offset_reset),
        auto_commit=auto_commit and group_id is not None,
        auto_commit_interval=check_seconds("auto_commit_interval", auto_commit_interval),
        prefetch_batches=check_count("prefetch_batches", prefetch_batches, least=1),
        refresh_interval=check_seconds("metadata_refresh_interval", refresh_interval),
        stall_timeout=check_seconds("stall_timeout", stall_timeout, infinite=True),
        retry=retry or RetryPolicy(),
    ), wanted


def _topic_list(topics: object) -> list[str | TopicPartition]:
    items: Iterable[object]
    if isinstance(topics, str | TopicPartition):
        items = [topics]
    elif isinstance(topics, Sequence | set | frozenset):
        items = topics
    else:
        raise InvalidArgumentError(f"topics must be names or TopicPartitions, not {topics!r}")
    out: list[str | TopicPartition] = []
    for item in items:
        if isinstance(item, TopicPartition):
            out.append(check_partition(item.topic, item.partition))
        elif isinstance(item, str):
            out.append(check_topic_name(item))
        else:
            raise InvalidArgumentError(f"topics must be names or TopicPartitions, not {item!r}")
    if not out:
        raise InvalidArgumentError("a consumer needs at least one topic")
    return out


async def _starts(
    meta: MetadataStore, wanted: list[str | TopicPartition], settings: Settings
) -> dict[TopicPartition, PartitionStart]:
    """Look the partitions up, and where each starts (none yet for a group's member)."""
    topics = sorted({t if isinstance(t, str) else t.topic for t in wanted})
    states = await retry_call(lambda: meta.partition_states(topics), policy=settings.retry)
    chosen = _choose(states, wanted)
    if settings.membership is not None:
        return {}  # the member's, once it has joined (``_start``)
    committed: dict[TopicPartition, int] = {}
    if settings.group_id is not None:
        group = settings.group_id
        found = await retry_call(lambda: meta.fetch_offsets(group), policy=settings.retry)
        committed = {tp: c.offset for tp, c in found.items()}
    return resolve_starts(chosen, committed, settings.offset_reset)


def _choose(
    states: list[PartitionState], wanted: list[str | TopicPartition]
) -> list[PartitionState]:
    present = {s.topic for s in states}
    missing = sorted({t if isinstance(t, str) else t.topic for t in wanted} - present)
    if missing:
        raise TopicNotFoundError(f"topic {', '.join(map(repr, missing))} does not exist")
    whole = {t for t in wanted if isinstance(t, str)}
    explicit = {t for t in wanted if isinstance(t, TopicPartition)}
    bad = explicit - {TopicPartition(s.topic, s.partition) for s in states}
    if bad:
        raise InvalidArgumentError(f"no such partition: {names(bad)}")
    return [
        s for s in states if s.topic in whole or TopicPartition(s.topic, s.partition) in explicit
    ]


@contextlib.asynccontextmanager
async def _cache_directory(local: _Local) -> AsyncIterator[CacheDirectory | None]:
    """The cache's directory, locked while the consumer is open (None without a budget).

    Without a ``cache_dir``, a temporary directory, removed at the end.
    """
    if local.budget == 0:
        yield None
        return
    temporary = None
    cache_dir = local.cache_dir
    if cache_dir is None:
        temporary = cache_dir = tempfile.mkdtemp(prefix="streamhouse-cache-")
    try:
        directory = await anyio.to_thread.run_sync(open_cache_directory, Path(cache_dir))
        try:
            yield directory
        finally:
            directory.close()
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


async def _start(
    settings: Settings,
    local: _Local,
    store: ObjectStore,
    meta: MetadataStore,
    directory: CacheDirectory | None,
    starts: dict[TopicPartition, PartitionStart],
    metrics: ClientMetrics,
    runtime: Runtime,
) -> Consumer:
    """Start the cache and the coordinator (which starts the readers); make the facade."""
    ahead = (len(starts) or 16) * SEGMENTS_AHEAD  # a member starts with none
    run = functools.partial(
        run_cache, store, directory, local.budget, parked_limit=ahead, probe=metrics.cache(),
        first_reads=local.first_reads,
    )  # fmt: skip
    cache: CacheClient = await runtime.start(run)
    # 64: the readers' batches and the facade's messages queue here while the
    # coordinator commits; more would only hold more blocks in memory.
    inbox_send, inbox = anyio.create_memory_object_stream[object](64)
    # 1: the bell is rung once however often; the coordinator never waits on it.
    bell_send, bell = anyio.create_memory_object_stream[None](1)
    rebalancer = joined = None
    try:
        if settings.membership is not None:
            # Joined now, so that a consumer alone in its group has every
            # partition when open_consumer returns, as without a group.
            joined = await join_group(meta, settings)
            starts = joined.starts
        probe = metrics.consumer(settings.group_id)
        coordinator = Coordinator(
            settings, meta, cache, inbox, inbox_send.clone(), bell_send, probe
        )
        await runtime.start(coordinator.run, starts, None if joined is None else joined.member)
        if joined is not None:
            rebalancer = await start_membership(runtime, settings, meta, inbox_send, joined)
    except BaseException:
        if joined is not None and rebalancer is None:
            await leave_quietly(meta, settings, joined)
        for end in (inbox_send, inbox, bell_send, bell):
            end.close()
        raise
    return Consumer(
        runtime,
        inbox_send,
        bell,
        cache,
        frozenset(starts),
        settings.group_id,
        local.max_poll_records,
        settings.auto_commit,
        rebalancer,
    )


async def _close(settings: Settings, consumer: Consumer, body_error: BaseException | None) -> None:
    """Commit by policy (see open_consumer's ``auto_commit``)."""
    if not settings.auto_commit:
        mode = CloseMode.NOTHING
    elif body_error is None:
        mode = CloseMode.POSITIONS
    else:
        mode = CloseMode.CONSUMED
    await consumer._close(mode)
