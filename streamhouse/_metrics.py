"""Prometheus metrics: every metric of the clients, defined here and nowhere else.

The families live in a registry: prometheus_client's default ``REGISTRY``,
or the one given as ``metrics_registry=`` to ``open_consumer`` or
``open_producer``. They are made once per registry (a registry refuses a
name twice), so every client of a process shares them, told apart by the
``client_id`` label every series carries. docs/METRICS.md lists them.

Each layer gets a *probe*: a small object with the label values bound once
(``labels()`` looks the child up under a lock, about 1 us; a bound child's
``inc`` is about 0.3 us), called per request, per block or per batch, never
per record. The lag gauges of a consumer are removed when their partition
is no longer assigned and when the consumer closes; counters and histograms
stay (they are cumulative: a scrape after the close still sees the last
increments).
"""

from __future__ import annotations

import collections
import contextlib
import math
import re
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from ._errors import InvalidArgumentError
from ._types import RecordBatch, TopicPartition

__all__ = [
    "CacheProbe",
    "ClientMetrics",
    "ConsumerProbe",
    "Metrics",
    "MetadataProbe",
    "PartitionLag",
    "ProducerProbe",
    "StorageProbe",
    "check_client_id",
    "client_metrics",
    "unread_metrics",
]

_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,255}")

# Latencies of requests to S3 and of metadata transactions: 1 ms to 30 s.
_IO_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def check_client_id(client_id: object, kind: str) -> str:
    """``client_id`` if valid, else a generated ``<kind>-<12 hex digits>``.

    Raises:
        InvalidArgumentError: ``client_id`` is not a str of 1-255 characters
            from ``[A-Za-z0-9._-]`` (it becomes a label value and a log field).
    """
    if client_id is None:
        return f"{kind}-{uuid.uuid4().hex[:12]}"
    if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
        raise InvalidArgumentError(
            f"client_id must be 1-255 characters of [A-Za-z0-9._-], not {client_id!r}"
        )
    return client_id


class Metrics:
    """Every client metric family, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        cid = ("client_id",)
        self.producer_records = Counter(
            "streamhouse_producer_records", "Records written (durable) by the producer.",
            (*cid, "topic"), registry=r,
        )  # fmt: skip
        self.producer_bytes = Counter(
            "streamhouse_producer_bytes", "Bytes written by the producer (encoded segments).",
            (*cid, "topic"), registry=r,
        )  # fmt: skip
        self.producer_errors = Counter(
            "streamhouse_producer_errors", "Records whose batch failed (DeliveryError).",
            (*cid, "topic"), registry=r,
        )  # fmt: skip
        self.producer_flush_latency = Histogram(
            "streamhouse_producer_flush_latency_seconds",
            "Seconds from sealing a batch to its outcome (encode, upload, commit).",
            cid, registry=r, buckets=_IO_BUCKETS,
        )  # fmt: skip
        self._consumer_families(r)
        self._io_families(r)

    def _consumer_families(self, r: CollectorRegistry) -> None:
        cid = ("client_id",)
        self.consumer_records = Counter(
            "streamhouse_consumer_records", "Records read for the application.",
            (*cid, "group", "topic"), registry=r,
        )  # fmt: skip
        self.consumer_bytes = Counter(
            "streamhouse_consumer_bytes",
            "Stored (compressed) bytes of the records read for the application.",
            (*cid, "group", "topic"), registry=r,
        )  # fmt: skip
        part = (*cid, "group", "topic", "partition")
        self.consumer_lag = Gauge(
            "streamhouse_consumer_lag", "Records from the position to the high watermark.",
            part, registry=r,
        )  # fmt: skip
        self.consumer_lag_seconds = Gauge(
            "streamhouse_consumer_lag_seconds",
            "Age of the oldest record not handed to the application (0 when caught up).",
            part, registry=r,
        )  # fmt: skip
        self.consumer_fetch_latency = Histogram(
            "streamhouse_consumer_fetch_latency_seconds",
            "Seconds a reader waits for a byte range (from the cache or the object store).",
            cid, registry=r, buckets=_IO_BUCKETS,
        )  # fmt: skip
        self.commit_latency = Histogram(
            "streamhouse_commit_latency_seconds", "Seconds an offset commit takes.",
            cid, registry=r, buckets=_IO_BUCKETS,
        )  # fmt: skip
        self.rebalances = Counter(
            "streamhouse_consumer_rebalances", "Changes of the consumer's assignment.",
            (*cid, "group"), registry=r,
        )  # fmt: skip

    def _io_families(self, r: CollectorRegistry) -> None:
        """Storage, the cache and the metadata store."""
        cid = ("client_id",)
        self.storage_requests = Counter(
            "streamhouse_storage_requests", "Object store requests.",
            (*cid, "operation", "outcome"), registry=r,
        )  # fmt: skip
        self.storage_bytes = Counter(
            "streamhouse_storage_bytes", "Bytes read from and written to the object store.",
            (*cid, "direction"), registry=r,
        )  # fmt: skip
        self.storage_latency = Histogram(
            "streamhouse_storage_request_latency_seconds",
            "Seconds an object store request takes (its retries included).",
            (*cid, "operation"), registry=r, buckets=_IO_BUCKETS,
        )  # fmt: skip
        self.cache_hits = Counter(
            "streamhouse_cache_hits", "Byte ranges served from the consumer's cache.",
            cid, registry=r,
        )  # fmt: skip
        self.cache_misses = Counter(
            "streamhouse_cache_misses", "Byte ranges fetched from the object store.",
            cid, registry=r,
        )  # fmt: skip
        self.cache_evictions = Counter(
            "streamhouse_cache_evictions", "Cached byte ranges evicted to stay in budget.",
            cid, registry=r,
        )  # fmt: skip
        self.cache_bytes = Gauge(
            "streamhouse_cache_bytes", "Bytes the consumer's cache holds on disk.",
            cid, registry=r,
        )  # fmt: skip
        self.metadata_latency = Histogram(
            "streamhouse_metadata_transaction_latency_seconds",
            "Seconds a metadata store call takes, per operation (the method called).",
            (*cid, "operation"), registry=r, buckets=_IO_BUCKETS,
        )  # fmt: skip


_registries: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()


def _metrics_in(registry: CollectorRegistry) -> Metrics:
    found = _registries.get(registry)
    if found is None:
        found = _registries[registry] = Metrics(registry)
    return found


def client_metrics(registry: object, client_id: str) -> ClientMetrics:
    """The metrics of one client in ``registry`` (None: the default REGISTRY).

    Raises:
        InvalidArgumentError: ``registry`` is not a CollectorRegistry.
    """
    if registry is None:
        registry = REGISTRY
    if not isinstance(registry, CollectorRegistry):
        raise InvalidArgumentError(
            f"metrics_registry must be a prometheus_client CollectorRegistry, not {registry!r}"
        )
    return ClientMetrics(_metrics_in(registry), client_id)


def unread_metrics() -> ClientMetrics:
    """Metrics in a registry of their own that nobody reads: for an actor run alone."""
    return ClientMetrics(Metrics(CollectorRegistry()), "unread")


class ClientMetrics:
    """One client's metrics: the families and its ``client_id``; makes the probes."""

    def __init__(self, metrics: Metrics, client_id: str) -> None:
        self.metrics = metrics
        self.client_id = client_id

    def storage(self) -> StorageProbe:
        return StorageProbe(self.metrics, self.client_id)

    def metadata(self) -> MetadataProbe:
        return MetadataProbe(self.metrics, self.client_id)

    def cache(self) -> CacheProbe:
        return CacheProbe(self.metrics, self.client_id)

    def consumer(self, group_id: str | None) -> ConsumerProbe:
        return ConsumerProbe(self.metrics, self.client_id, group_id or "")

    def producer(self) -> ProducerProbe:
        return ProducerProbe(self.metrics, self.client_id)


class StorageProbe:
    """Object store requests: counted, timed, and their bytes."""

    OPERATIONS = ("get", "put", "list", "delete", "head")

    def __init__(self, m: Metrics, client_id: str) -> None:
        self._ok = {op: m.storage_requests.labels(client_id, op, "ok") for op in self.OPERATIONS}
        self._error = {
            op: m.storage_requests.labels(client_id, op, "error") for op in self.OPERATIONS
        }
        self._latency = {op: m.storage_latency.labels(client_id, op) for op in self.OPERATIONS}
        self._read = m.storage_bytes.labels(client_id, "read")
        self._written = m.storage_bytes.labels(client_id, "written")

    def request(self, operation: str, ok: bool, started: float) -> None:
        """One request of ``operation`` that began at ``started`` (perf_counter) ended."""
        self._latency[operation].observe(time.perf_counter() - started)
        (self._ok if ok else self._error)[operation].inc()

    def read(self, size: int) -> None:
        self._read.inc(size)

    def written(self, size: int) -> None:
        self._written.inc(size)


class MetadataProbe:
    """Metadata store calls, timed per operation (the method's name)."""

    def __init__(self, m: Metrics, client_id: str) -> None:
        self._family = m.metadata_latency
        self._client_id = client_id

    def timer(self, operation: str) -> Histogram:
        return self._family.labels(self._client_id, operation)


class CacheProbe:
    """The consumer cache's hits, misses, evictions and size; the readers' waits on it."""

    def __init__(self, m: Metrics, client_id: str) -> None:
        self.fetch_latency = m.consumer_fetch_latency.labels(client_id)
        self.hits = m.cache_hits.labels(client_id)
        self.misses = m.cache_misses.labels(client_id)
        self.evictions = m.cache_evictions.labels(client_id)
        self.bytes = m.cache_bytes.labels(client_id)
        self._m = m
        self._client_id = client_id

    def close(self) -> None:
        """The cache is gone: its size is no longer a fact."""
        _remove(self._m.cache_bytes, (self._client_id,))


class ProducerProbe:
    """A producer's batches: written or failed, per topic, and their latency."""

    def __init__(self, m: Metrics, client_id: str) -> None:
        self._m = m
        self._client_id = client_id
        self.flush_latency = m.producer_flush_latency.labels(client_id)
        self._topics: dict[str, tuple[Counter, Counter]] = {}

    def written(self, per_topic: Mapping[str, tuple[int, int]]) -> None:
        """A batch became durable: ``{topic: (records, bytes)}``."""
        for topic, (records, size) in per_topic.items():
            children = self._topics.get(topic)
            if children is None:
                m, cid = self._m, self._client_id
                children = self._topics[topic] = (
                    m.producer_records.labels(cid, topic),
                    m.producer_bytes.labels(cid, topic),
                )
            children[0].inc(records)
            children[1].inc(size)

    def failed(self, per_topic: Mapping[str, int]) -> None:
        """A batch failed: ``{topic: records}``."""
        for topic, records in per_topic.items():
            self._m.producer_errors.labels(self._client_id, topic).inc(records)


class PartitionLag(Protocol):
    """What the lag gauges need of an assigned partition (the coordinator's Partition)."""

    tp: TopicPartition
    position: int
    high_watermark: int


# How often the lag gauges follow the watermark refreshes (every 50 ms by
# default): setting two gauges costs about 1 us a partition, so at 10,000
# partitions every refresh would cost 20 ms of the coordinator's 50.
LAG_INTERVAL = 1.0


class ConsumerProbe:
    """A consumer's reads, commits, rebalances and lag gauges (one owner: its coordinator).

    ``lag_seconds`` is the age of the first record of the block holding the
    position: the blocks the coordinator accepted are remembered by their
    end and first timestamp (one entry a block, at most the read-ahead), so
    the age is that of the oldest unconsumed record or at most one block's
    time span more. A partition behind whose block has not been read yet
    keeps its previous value.
    """

    def __init__(self, m: Metrics, client_id: str, group: str) -> None:
        self._m = m
        self._labels = (client_id, group)
        self.commit_latency = m.commit_latency.labels(client_id)
        self._rebalances = m.rebalances.labels(client_id, group)
        self._topics: dict[str, tuple[Counter, Counter]] = {}
        self._lags: dict[TopicPartition, tuple[Gauge, Gauge]] = {}
        self._blocks: dict[TopicPartition, collections.deque[tuple[int, int]]] = {}
        self.next_lags = -math.inf  # when the lag gauges are due (the runtime's clock)

    def rebalanced(self) -> None:
        self._rebalances.inc()

    def accepted(self, tp: TopicPartition, records: RecordBatch, size: int) -> None:
        """The coordinator accepted a block of ``size`` bytes as stored.

        It counts as read (a block read again after a seek counts again), and
        where it ends, with its first timestamp, is kept for ``lag_seconds``.
        """
        children = self._topics.get(tp.topic)
        if children is None:
            m = self._m
            children = self._topics[tp.topic] = (
                m.consumer_records.labels(*self._labels, tp.topic),
                m.consumer_bytes.labels(*self._labels, tp.topic),
            )
        children[0].inc(len(records))
        children[1].inc(size)
        blocks = self._blocks.get(tp)
        if blocks is None:
            blocks = self._blocks[tp] = collections.deque()
        elif blocks and blocks[-1][0] >= records.next_offset:
            blocks.clear()  # read again (a seek, a restarted reader)
        blocks.append((records.next_offset, records.timestamps[0]))

    def update_lags(self, parts: Iterable[PartitionLag], now: float) -> None:
        """Set every assigned partition's lag gauges; ``now``: the runtime's clock."""
        self.next_lags = now + LAG_INTERVAL
        wall_ms = time.time() * 1000.0
        lags = self._lags
        for part in parts:
            children = lags.get(part.tp)
            if children is None:
                labels = (*self._labels, part.tp.topic, str(part.tp.partition))
                m = self._m
                children = lags[part.tp] = (
                    m.consumer_lag.labels(*labels),
                    m.consumer_lag_seconds.labels(*labels),
                )
            lag = max(0, part.high_watermark - part.position)
            children[0].set(lag)
            blocks = self._blocks.get(part.tp)
            while blocks and blocks[0][0] <= part.position:
                blocks.popleft()  # handed out: what is left starts at the position
            if lag == 0:
                children[1].set(0)
                continue
            if blocks:
                children[1].set(max(0.0, (wall_ms - blocks[0][1]) / 1000.0))

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Remove the lag series of partitions no longer assigned."""
        for tp in tps:
            self._blocks.pop(tp, None)
            if self._lags.pop(tp, None) is not None:
                labels = (*self._labels, tp.topic, str(tp.partition))
                _remove(self._m.consumer_lag, labels)
                _remove(self._m.consumer_lag_seconds, labels)

    def close(self) -> None:
        self.forget(list(self._lags))


def _remove(family: Gauge, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):  # never set, or removed already
        family.remove(*labels)
