"""The lag exporter: group lag and partition offsets from the metadata store, for Prometheus.

``streamhouse exporter`` serves ``/metrics`` with kafka_exporter's names, so
that dashboards and alerts written for Kafka read StreamHouse as they are
(docs/METRICS.md). Every ``interval`` seconds it takes ONE snapshot of the
catalogue (``MetadataStore.monitoring_snapshot``: every partition, every
committed offset, in one query) and turns it into metric families; a scrape
is served from the last snapshot and costs no query. A refresh that fails is
logged (a WARNING) and the previous values are served until one works.

The HTTP server is a minimal HTTP/1.0 one on anyio (GET /metrics, and /
pointing to it), so that it runs in the command's own event loop and Ctrl-C
ends it like any other command.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence

import anyio
import anyio.abc
import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._errors import InvalidArgumentError
from ._log import get_logger
from ._metadata.protocol import MetadataStore, MonitoringSnapshot

__all__ = ["exporter_families", "serve_exporter"]

_log = get_logger("exporter")

_GROUP = ("consumergroup", "topic", "partition")
_PARTITION = ("topic", "partition")


def exporter_families(snapshot: MonitoringSnapshot, now: float) -> list[Metric]:
    """The exporter's metric families for ``snapshot``, taken at ``now`` (epoch seconds)."""
    current = GaugeMetricFamily(
        "streamhouse_topic_partition_current_offset",
        "The partition's high watermark (the next offset to be written).", labels=_PARTITION,
    )  # fmt: skip
    oldest = GaugeMetricFamily(
        "streamhouse_topic_partition_oldest_offset",
        "The partition's log start offset (the oldest offset kept).", labels=_PARTITION,
    )  # fmt: skip
    size = GaugeMetricFamily(
        "streamhouse_topic_partition_bytes",
        "Bytes the partition's segments hold in the object store.", labels=_PARTITION,
    )  # fmt: skip
    high: dict[tuple[str, int], int] = {}
    for p in snapshot.partitions:
        labels = [p.topic, str(p.partition)]
        current.add_metric(labels, p.high_watermark)
        oldest.add_metric(labels, p.log_start_offset)
        size.add_metric(labels, p.bytes)
        high[(p.topic, p.partition)] = p.high_watermark
    return [current, oldest, size, *_group_families(snapshot, high, now)]


def _group_families(
    snapshot: MonitoringSnapshot, high: dict[tuple[str, int], int], now: float
) -> list[Metric]:
    offset = GaugeMetricFamily(
        "streamhouse_consumergroup_current_offset",
        "The group's committed offset on the partition.", labels=_GROUP,
    )  # fmt: skip
    lag = GaugeMetricFamily(
        "streamhouse_consumergroup_lag",
        "Records from the group's committed offset to the high watermark.", labels=_GROUP,
    )  # fmt: skip
    lag_seconds = GaugeMetricFamily(
        "streamhouse_consumergroup_lag_seconds",
        "Age of the oldest record the group has not committed (0 when caught up).",
        labels=_GROUP,
    )  # fmt: skip
    lag_sum = GaugeMetricFamily(
        "streamhouse_consumergroup_lag_sum",
        "The group's lag summed over the topic's partitions.",
        labels=("consumergroup", "topic"),
    )  # fmt: skip
    sums: dict[tuple[str, str], int] = {}
    for o in snapshot.offsets:
        hw = high.get((o.topic, o.partition))
        if hw is None:
            continue  # an offset of a partition that no longer exists
        labels = [o.group_id, o.topic, str(o.partition)]
        behind = max(0, hw - o.offset)
        offset.add_metric(labels, o.offset)
        lag.add_metric(labels, behind)
        if behind == 0:
            lag_seconds.add_metric(labels, 0.0)
        elif o.timestamp is not None:
            lag_seconds.add_metric(labels, max(0.0, now - o.timestamp / 1000.0))
        key = (o.group_id, o.topic)
        sums[key] = sums.get(key, 0) + behind
    for (group, topic), total in sorted(sums.items()):
        lag_sum.add_metric([group, topic], total)
    families: list[Metric] = [offset, lag, lag_seconds, lag_sum]
    if snapshot.members:
        members = GaugeMetricFamily(
            "streamhouse_consumergroup_members", "Members of the consumer group.",
            labels=("consumergroup",),
        )  # fmt: skip
        for group, count in sorted(snapshot.members.items()):
            members.add_metric([group], count)
        families.append(members)
    return families


class _Latest(Collector):
    """Serves the families of the last snapshot (replaced whole: no lock needed)."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


async def serve_exporter(
    metadata: MetadataStore,
    *,
    host: str = "127.0.0.1",
    port: int = 9308,
    interval: float = 15.0,
    groups: Sequence[str] | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` on ``host:port`` until cancelled; hand the bound port to the starter.

    Raises:
        InvalidArgumentError: ``interval`` is not a positive number of seconds,
            or ``port`` is out of range.
        OSError: the port cannot be bound.
    """
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not (0 < interval < math.inf)
    ):
        raise InvalidArgumentError(
            f"interval must be a positive number of seconds, not {interval!r}"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgumentError(f"port must be an int in [0, 65535], not {port!r}")
    latest = _Latest()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(latest)
    await _refresh(metadata, groups, latest)  # the first scrape has values
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener, anyio.create_task_group() as tg:
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)
        _log.info("exporter serving http://%s:%d/metrics every %s s", host, bound, interval)
        tg.start_soon(_refresh_every, metadata, groups, latest, interval)
        task_status.started(bound)
        await listener.serve(lambda stream: _answer(stream, registry))


async def _refresh_every(
    metadata: MetadataStore, groups: Sequence[str] | None, latest: _Latest, interval: float
) -> None:
    while True:
        await anyio.sleep(interval)
        try:
            await _refresh(metadata, groups, latest)
        except Exception as exc:
            _log.warning(
                "exporter: reading the metadata store failed, serving older values: %s", exc
            )


async def _refresh(metadata: MetadataStore, groups: Sequence[str] | None, latest: _Latest) -> None:
    started = time.perf_counter()
    snapshot = await metadata.monitoring_snapshot(groups)
    latest.families = exporter_families(snapshot, time.time())
    _log.debug(
        "exporter: %d partitions, %d offsets read in %.3f s",
        len(snapshot.partitions), len(snapshot.offsets), time.perf_counter() - started,
    )  # fmt: skip


_MAX_REQUEST = 8192


async def _answer(stream: anyio.abc.ByteStream, registry: CollectorRegistry) -> None:
    """One request, one answer, then the connection closes (HTTP/1.0)."""
    async with stream:
        request = b""
        with anyio.move_on_after(10):  # a client that never finishes its request
            while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST:
                try:
                    request += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
        words = request.split(b"\r\n", 1)[0].split()
        if len(words) < 2 or words[0] not in (b"GET", b"HEAD"):
            await _send(stream, 405, b"text/plain", b"only GET\n")
        elif words[1].split(b"?")[0] == b"/metrics":
            body = await anyio.to_thread.run_sync(generate_latest, registry)
            await _send(stream, 200, CONTENT_TYPE_LATEST.encode(), body, words[0] == b"HEAD")
        elif words[1] == b"/":
            await _send(stream, 200, b"text/html", b'<a href="/metrics">/metrics</a>\n')
        else:
            await _send(stream, 404, b"text/plain", b"not found; try /metrics\n")


_REASONS = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed"}


async def _send(
    stream: anyio.abc.ByteStream, status: int, kind: bytes, body: bytes, head: bool = False
) -> None:
    header = b"HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
        status, _REASONS[status], kind, len(body),
    )  # fmt: skip
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.send(header if head else header + body)  # unless the scraper went away
