"""``streamhouse top``: topics' produce rates and groups' lag, live, refreshing in place.

Every ``--interval`` seconds it takes one snapshot of the metadata store
(the exporter's query: every partition, every committed offset) and redraws
two tables: topics by produce rate (records/s between two snapshots), and
groups by lag (records, and seconds: the age of the oldest record not
committed, as the exporter computes it). Ctrl-C leaves it, exit 0, with the
terminal as it was.
"""

from __future__ import annotations

import argparse
import time

import anyio
import attrs
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .._metadata.protocol import MonitoringSnapshot
from .args import Subparsers, add_command, at_least, format_bytes, seconds
from .common import Cli, open_metadata, require_metadata

__all__ = ["Sample", "register", "top_view"]


@attrs.frozen
class Sample:
    """A snapshot and when it was taken (the monotonic clock for rates, the wall clock for ages)."""

    snapshot: MonitoringSnapshot
    taken: float
    wall: float


def top_view(previous: Sample | None, current: Sample, rows: int = 20) -> Group:
    """What ``top`` shows for ``current`` (rates against ``previous``): the busiest
    ``rows`` topics and the ``rows`` groups furthest behind."""
    return Group(_topics(previous, current, rows), Text(""), _groups(current, rows))


def _topics(previous: Sample | None, current: Sample, rows: int) -> Table:
    totals: dict[str, list[int]] = {}  # topic: [partitions, high watermarks, bytes]
    for p in current.snapshot.partitions:
        t = totals.setdefault(p.topic, [0, 0, 0])
        t[0] += 1
        t[1] += p.high_watermark
        t[2] += p.bytes
    before: dict[str, int] = {}
    if previous is not None:
        for p in previous.snapshot.partitions:
            before[p.topic] = before.get(p.topic, 0) + p.high_watermark
    elapsed = current.taken - previous.taken if previous is not None else 0.0
    rates: dict[str, float | None] = {
        topic: (t[1] - before[topic]) / elapsed if elapsed > 0 and topic in before else None
        for topic, t in totals.items()
    }
    table = Table(title=f"topics ({len(totals)})", title_justify="left", expand=False)
    for name in ("topic", "partitions", "records", "bytes", "records/s"):
        table.add_column(name, justify="left" if name == "topic" else "right")
    ordered = sorted(totals, key=lambda topic: (-(rates[topic] or 0.0), topic))
    for topic in ordered[:rows]:
        partitions, records, size = totals[topic]
        rate = rates[topic]
        table.add_row(
            topic, f"{partitions:,}", f"{records:,}", format_bytes(size),
            "-" if rate is None else f"{rate:,.0f}",
        )  # fmt: skip
    if len(ordered) > rows:
        table.caption = f"and {len(ordered) - rows} more"
    return table


def _groups(current: Sample, rows: int) -> Table:
    high = {(p.topic, p.partition): p.high_watermark for p in current.snapshot.partitions}
    lags: dict[tuple[str, str], list[float]] = {}  # (group, topic): [lag, oldest age]
    for o in current.snapshot.offsets:
        hw = high.get((o.topic, o.partition))
        if hw is None:
            continue
        entry = lags.setdefault((o.group_id, o.topic), [0, 0.0])
        behind = max(0, hw - o.offset)
        entry[0] += behind
        if behind and o.timestamp is not None:
            entry[1] = max(entry[1], current.wall - o.timestamp / 1000.0)
    table = Table(title=f"groups ({len(lags)} group-topics)", title_justify="left")
    for name in ("group", "topic", "lag", "lag seconds"):
        table.add_column(name, justify="left" if name in ("group", "topic") else "right")
    ordered = sorted(lags, key=lambda key: (-lags[key][1], -lags[key][0], key))
    for group, topic in ordered[:rows]:
        lag, age = lags[(group, topic)]
        table.add_row(group, topic, f"{int(lag):,}", f"{age:,.0f}" if lag else "0")
    if len(ordered) > rows:
        table.caption = f"and {len(ordered) - rows} more"
    return table


async def top(args: argparse.Namespace, cli: Cli) -> int:
    require_metadata(args)
    meta = open_metadata(args)
    console = Console()
    try:
        previous: Sample | None = None
        with cli.stop_scope(), Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                snapshot = await meta.monitoring_snapshot(args.group)
                current = Sample(snapshot, time.monotonic(), time.time())
                live.update(top_view(previous, current, args.rows), refresh=True)
                previous = current
                await anyio.sleep(args.interval)
    finally:
        await meta.aclose()
    return 0


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``top`` to the command parser."""
    p = add_command(
        commands, "top", "a live view of topics' produce rates and groups' lag (Ctrl-C leaves)",
        common,
    )  # fmt: skip
    p.add_argument(
        "--interval", type=seconds, default=2.0, metavar="SECONDS",
        help="seconds between refreshes",
    )  # fmt: skip
    p.add_argument("--rows", type=at_least(1), default=20, help="most rows of each table")
    p.add_argument(
        "--group", action="append", metavar="G",
        help="only this consumer group (repeat for more; default: every group)",
    )  # fmt: skip
    p.set_defaults(run=top)
