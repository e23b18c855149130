"""The lag exporter: group lag and partition offsets from the metadata store, for Prometheus.

``streamhouse exporter`` serves ``/metrics`` with kafka_exporter's names, so
that dashboards and alerts written for Kafka read StreamHouse as they are
(docs/METRICS.md). Every ``interval`` seconds it takes ONE snapshot of the
catalogue (``MetadataStore.monitoring_snapshot``: every partition, every
committed offset, in one query) and renders it; a scrape is served from the
last rendering and costs no query. A refresh that fails is logged (a
WARNING) and the previous values are served until one works.

The HTTP server is a minimal HTTP/1.0 one on anyio (GET /metrics, and /
pointing to it), so that it runs in the command's own event loop and Ctrl-C
ends it like any other command. A scraper that accepts gzip (Prometheus
does) gets the rendering compressed once per refresh.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import time
from collections.abc import Sequence

import anyio
import anyio.abc
import anyio.to_thread

from ._errors import ConfigurationError, InvalidArgumentError
from ._log import get_logger
from ._metadata.protocol import MetadataStore, MonitoringSnapshot

__all__ = ["render_exposition", "serve_exporter"]

_log = get_logger("exporter")

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

# (name, help) of every family, in the order they are served.
_FAMILIES = (
    ("streamhouse_topic_partition_current_offset",
     "The partition's high watermark (the next offset to be written)."),
    ("streamhouse_topic_partition_oldest_offset",
     "The partition's log start offset (the oldest offset kept)."),
    ("streamhouse_topic_partition_bytes",
     "Bytes the partition's segments hold in the object store."),
    ("streamhouse_consumergroup_current_offset",
     "The group's committed offset on the partition."),
    ("streamhouse_consumergroup_lag",
     "Records from the group's committed offset to the high watermark."),
    ("streamhouse_consumergroup_lag_seconds",
     "Age of the oldest record the group has not committed (0 when caught up)."),
    ("streamhouse_consumergroup_lag_sum", "The group's lag summed over the topic's partitions."),
    ("streamhouse_consumergroup_members", "Members of the consumer group."),
)  # fmt: skip


def render_exposition(snapshot: MonitoringSnapshot, now: float) -> bytes:
    """The exporter's ``/metrics`` for ``snapshot`` taken at ``now`` (epoch seconds).

    Prometheus's text format, written here rather than through
    prometheus_client's metric families: at 10,000 partitions and three
    groups (120,000 series) those took 2 s to build and render, this a
    tenth of that (scripts/bench_exporter.py, docs/METRICS.md).
    """
    out: dict[str, list[str]] = {name: [] for name, _ in _FAMILIES}
    current, oldest, size = (out[name] for name, _ in _FAMILIES[:3])
    high: dict[tuple[str, int], int] = {}
    for p in snapshot.partitions:
        labels = f'{{topic="{p.topic}",partition="{p.partition}"}} '
        current.append(f"streamhouse_topic_partition_current_offset{labels}{p.high_watermark}")
        oldest.append(f"streamhouse_topic_partition_oldest_offset{labels}{p.log_start_offset}")
        size.append(f"streamhouse_topic_partition_bytes{labels}{p.bytes}")
        high[(p.topic, p.partition)] = p.high_watermark
    _render_groups(snapshot, high, now, out)
    lines = []
    for name, text in _FAMILIES:
        if out[name]:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", *out[name]]
    lines.append("")
    return "\n".join(lines).encode()


def _render_groups(
    snapshot: MonitoringSnapshot,
    high: dict[tuple[str, int], int],
    now: float,
    out: dict[str, list[str]],
) -> None:
    offset = out["streamhouse_consumergroup_current_offset"]
    lag = out["streamhouse_consumergroup_lag"]
    lag_seconds = out["streamhouse_consumergroup_lag_seconds"]
    sums: dict[tuple[str, str], int] = {}
    quoted: dict[str, str] = {}
    for o in snapshot.offsets:
        hw = high.get((o.topic, o.partition))
        if hw is None:
            continue  # an offset of a partition that no longer exists
        group = quoted.get(o.group_id)
        if group is None:
            group = quoted[o.group_id] = _quote(o.group_id)
        labels = f'{{consumergroup="{group}",topic="{o.topic}",partition="{o.partition}"}} '
        behind = max(0, hw - o.offset)
        offset.append(f"streamhouse_consumergroup_current_offset{labels}{o.offset}")
        lag.append(f"streamhouse_consumergroup_lag{labels}{behind}")
        if behind == 0:
            lag_seconds.append(f"streamhouse_consumergroup_lag_seconds{labels}0")
        elif o.timestamp is not None:
            age = max(0.0, now - o.timestamp / 1000.0)
            lag_seconds.append(f"streamhouse_consumergroup_lag_seconds{labels}{age:.3f}")
        key = (o.group_id, o.topic)
        sums[key] = sums.get(key, 0) + behind
    out["streamhouse_consumergroup_lag_sum"] += [
        f'streamhouse_consumergroup_lag_sum{{consumergroup="{quoted[g]}",topic="{t}"}} {total}'
        for (g, t), total in sorted(sums.items())
    ]
    out["streamhouse_consumergroup_members"] += [
        f'streamhouse_consumergroup_members{{consumergroup="{_quote(g)}"}} {count}'
        for g, count in sorted(snapshot.members.items())
    ]


def _quote(value: str) -> str:
    """A label value as the text format wants it (a group id may hold a backslash or ")."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Latest:
    """The last rendering, plain and gzipped (replaced whole: no lock needed)."""

    def __init__(self) -> None:
        self.plain = b""
        self.gzipped = b""


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
        ConfigurationError: ``host:port`` cannot be listened on (the port is
            taken, the host does not resolve or is no address of this machine);
            the OSError is its cause.
        MetadataError: the first read of the metadata store failed.
    """
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not 0 < interval < math.inf
    ):
        raise InvalidArgumentError(
            f"interval must be a positive number of seconds, not {interval!r}"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgumentError(f"port must be an int in [0, 65535], not {port!r}")
    latest = _Latest()
    await _refresh(metadata, groups, latest)  # the first scrape has values
    try:
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as exc:  # socket.gaierror too: a host that does not resolve
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    async with listener, anyio.create_task_group() as tg:
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)
        _log.info("exporter serving http://%s:%d/metrics every %s s", host, bound, interval)
        tg.start_soon(_refresh_every, metadata, groups, latest, interval)
        task_status.started(bound)
        await listener.serve(lambda stream: _answer(stream, latest))


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
    read = time.perf_counter() - started

    def render() -> tuple[bytes, bytes]:
        plain = render_exposition(snapshot, time.time())
        # Level 1: 11.7 MB (10,000 partitions, three groups) in about 60 ms
        # to a tenth of the size; higher levels cost more for little more.
        return plain, gzip.compress(plain, compresslevel=1)

    latest.plain, latest.gzipped = await anyio.to_thread.run_sync(render)
    _log.debug(
        "exporter: %d partitions and %d offsets, read in %.3f s, rendered in %.3f s",
        len(snapshot.partitions), len(snapshot.offsets), read,
        time.perf_counter() - started - read,
    )  # fmt: skip


_MAX_REQUEST = 8192


async def _answer(stream: anyio.abc.ByteStream, latest: _Latest) -> None:
    """One request, one answer, then the connection closes (HTTP/1.0)."""
    async with stream:
        request = b""
        with anyio.move_on_after(10):  # a client that never finishes its request
            while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST:
                try:
                    request += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
        head, _, _ = request.partition(b"\r\n\r\n")
        words = head.split(b"\r\n", 1)[0].split()
        if len(words) < 2 or words[0] not in (b"GET", b"HEAD"):
            await _send(stream, 405, b"text/plain", b"only GET\n")
        elif words[1].split(b"?")[0] == b"/metrics":
            zipped = b"gzip" in _header(head, b"accept-encoding")
            body = latest.gzipped if zipped else latest.plain
            await _send(stream, 200, CONTENT_TYPE, body, words[0] == b"HEAD", zipped)
        elif words[1] == b"/":
            await _send(stream, 200, b"text/html", b'<a href="/metrics">/metrics</a>\n')
        else:
            await _send(stream, 404, b"text/plain", b"not found; try /metrics\n")


def _header(head: bytes, name: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().lower()
    return b""


_REASONS = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed"}


async def _send(
    stream: anyio.abc.ByteStream,
    status: int,
    kind: bytes,
    body: bytes,
    head: bool = False,
    zipped: bool = False,
) -> None:
    encoding = b"Content-Encoding: gzip\r\n" if zipped else b""
    header = b"HTTP/1.0 %d %s\r\nContent-Type: %s\r\n%sContent-Length: %d\r\n\r\n" % (
        status, _REASONS[status], kind, encoding, len(body),
    )  # fmt: skip
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.send(header if head else header + body)  # unless the scraper went away
