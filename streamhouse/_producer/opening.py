"""open_producer(): check the options, open the stores, run the producer."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry

from .._codec import Codec
from .._config import open_metered_stores
from .._lifecycle import Runtime, run_client
from .._metadata.protocol import MetadataStore
from .._metrics import ClientMetrics, check_client_id, client_metrics
from .._storage.protocol import ObjectStore
from .checks import ProducerOptions, producer_options
from .producer import Producer

__all__ = ["open_producer"]


@contextlib.asynccontextmanager
async def open_producer(
    *,
    storage: ObjectStore | str | None = None,
    metadata: MetadataStore | str | None = None,
    linger: float = 0.05,
    compression: Codec | str = "lz4",
    max_batch_bytes: int = 4 * 2**20,
    max_record_bytes: int = 8 * 2**20,
    max_in_flight: int = 8,
    buffer_bytes: int = 128 * 2**20,
    delivery_timeout: float = 120.0,
    retries: int | None = None,
    retry_backoff: float = 0.1,
    retry_backoff_max: float = 1.0,
    close_timeout: float = 60.0,
    client_id: str | None = None,
    metrics_registry: CollectorRegistry | None = None,
) -> AsyncIterator[Producer]:
    """Open a producer; leaving the block writes every accepted record.

    Args:
        storage: an ObjectStore or a URL (``s3://bucket/prefix``,
            ``file:///path``); the embedded default when omitted.
        metadata: a MetadataStore or a URL (``sqlite:///path``); the embedded
            default when omitted.
        linger: seconds a batch waits for more records before it is flushed;
            0 sends at once (records sent in the same moment still share a
            batch), as in Kafka.
        compression: "lz4", "zstd" or "none".
        max_batch_bytes: a batch holding this much is flushed at once. 4 MiB
            keeps encoding and uploading overlapped (measured against 2, 8
            and 16 MiB into SeaweedFS; scripts/bench.py measures it). At most
            128 MiB.
        max_record_bytes: larger records (key + value + headers) are refused
            at send. At most 128 MiB.
        max_in_flight: batches uploading at once.
        buffer_bytes: sends wait while this much is accepted but unwritten
            (at most ``delivery_timeout``, then DeliveryError); at least 1.
        delivery_timeout: seconds a batch may take, from being flushed, to
            become durable (uploads and commits, retries included), as
            Kafka's delivery.timeout.ms; its records fail with DeliveryError
            after that, and none of them becomes visible later. A commit
            already running then is not abandoned (its outcome is reported
            as it is), so allow one metadata call's time limit on top.
        retries: attempts for a retriable upload or commit failure; None (the
            default) retries until ``delivery_timeout``, as Kafka does.
        retry_backoff: seconds before the first retry at most, doubling
            after, with full jitter (one RetryPolicy).
        retry_backoff_max: the largest backoff (Kafka's retry.backoff.max.ms).
        close_timeout: seconds leaving the block may spend writing.
        client_id, metrics_registry: its metrics' ``client_id`` label (and
            name in logs; 1-255 of ``[A-Za-z0-9._-]``, generated if omitted),
            and their CollectorRegistry (the default one if omitted).

    Raises:
        InvalidArgumentError: an option is out of range, NaN or infinite (the
            message names it).
        StorageError: the object store cannot be used (``ObjectStore.check``:
            an unreachable endpoint, a missing bucket, refused credentials).
    """
    options = producer_options(
        linger=linger, compression=compression, max_batch_bytes=max_batch_bytes,
        max_record_bytes=max_record_bytes, max_in_flight=max_in_flight, buffer_bytes=buffer_bytes,
        retries=retries, retry_backoff=retry_backoff, retry_backoff_max=retry_backoff_max,
        delivery_timeout=delivery_timeout, close_timeout=close_timeout,
    )  # fmt: skip
    metrics = client_metrics(metrics_registry, check_client_id(client_id, "producer"))

    async with open_metered_stores(storage, metadata, metrics) as (store, meta, where):
        start = functools.partial(_start, store, meta, options, metrics)
        client_id = metrics.client_id
        async with run_client(
            "producer", start, _close, close_timeout, client_id=client_id, where=where
        ) as producer:
            yield producer


async def _start(
    store: ObjectStore,
    meta: MetadataStore,
    options: ProducerOptions,
    metrics: ClientMetrics,
    runtime: Runtime,
) -> Producer:
    # A wrong endpoint, bucket or key fails here, at once and clearly,
    # rather than as every send's DeliveryError delivery_timeout later.
    await store.check()
    return Producer(store, meta, runtime.task_group, options, metrics.producer())


async def _close(producer: Producer, body_error: BaseException | None) -> None:
    await producer._close()  # every accepted record is written, whatever the body did
