"""The ``streamhouse`` command: topics, produce, consume, groups, demo.

Every command runs on the stores named by ``--storage`` and ``--metadata``
(or ``STREAMHOUSE_STORAGE`` / ``STREAMHOUSE_METADATA``), else on the embedded
default in ``$STREAMHOUSE_HOME`` or ``./streamhouse-data``. A user error
prints one line, ``error: ...``, and exits with 1; no traceback.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .._admin import GroupPartitionLag, open_admin
from .._consumer import open_consumer
from .._errors import InvalidArgumentError, StreamHouseError
from .._producer import open_producer
from .._types import TopicPartition
from .._version import __version__

__all__ = ["main"]

_CHUNK = 10_000


def _stores(args: argparse.Namespace) -> dict[str, str | None]:
    return {"storage": args.storage, "metadata": args.metadata}


def _table(*columns: str) -> Table:
    table = Table(*columns)
    for column in table.columns[1:]:
        column.justify = "right"
    return table


def _lag_table(rows: Sequence[GroupPartitionLag]) -> Table:
    table = _table("topic", "partition", "committed", "high watermark", "lag")
    for r in rows:
        table.add_row(r.topic, *map(str, (r.partition, r.committed, r.high_watermark, r.lag)))
    return table


# -- topics ---------------------------------------------------------------------


async def topics_create(args: argparse.Namespace, out: Console) -> None:
    async with open_admin(**_stores(args)) as admin:
        info = await admin.create_topic(args.name, args.partitions)
    out.print(f"created topic {info.name} with {info.partitions} partition(s)")


async def topics_list(args: argparse.Namespace, out: Console) -> None:
    async with open_admin(**_stores(args)) as admin:
        topics = await admin.list_topics()
    table = _table("topic", "partitions")
    for t in topics:
        table.add_row(t.name, str(t.partitions))
    out.print(table)


async def topics_describe(args: argparse.Namespace, out: Console) -> None:
    async with open_admin(**_stores(args)) as admin:
        d = await admin.describe_topic(args.name)
    table = _table("partition", "log start", "high watermark", "segments", "bytes")
    for p in d.partitions:
        table.add_row(*map(str, (p.partition, p.log_start_offset, p.high_watermark,
                                 p.segments, p.bytes)))  # fmt: skip
    out.print(f"topic {d.name}")
    out.print(table)


async def topics_delete(args: argparse.Namespace, out: Console) -> None:
    async with open_admin(**_stores(args)) as admin:
        await admin.delete_topic(args.name)
    out.print(f"deleted topic {args.name}")


# -- produce ----------------------------------------------------------------------


def _headers(pairs: Sequence[str]) -> list[tuple[str, bytes]]:
    headers = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--header {pair!r} is not KEY=VALUE")
        headers.append((key, value.encode()))
    return headers


async def produce(args: argparse.Namespace, out: Console) -> None:
    headers = _headers(args.header)
    source: TextIO
    size = 0
    if args.file:
        size, source = await anyio.to_thread.run_sync(_open_lines, args.file)
    else:
        source = sys.stdin
    count = 0
    ranges: dict[int, list[int]] = {}
    start = time.perf_counter()
    quiet = not args.file or not out.is_terminal
    with Progress(
        TextColumn("producing"), BarColumn(), TimeRemainingColumn(), console=out, disable=quiet
    ) as progress:
        task = progress.add_task("produce", total=size or None)
        async with open_producer(
            storage=args.storage, metadata=args.metadata, linger=0.05
        ) as producer:
            while True:
                lines = await anyio.to_thread.run_sync(_read_lines, source, _CHUNK)
                if not lines:
                    break
                keys: list[bytes | None] | None = None
                values: list[bytes | None] = []
                if args.key_separator:
                    keys = []
                    for line in lines:
                        key, sep, value = line.partition(args.key_separator)
                        keys.append(key.encode() if sep else None)
                        values.append(value.encode() if sep else key.encode())
                else:
                    values = [line.encode() for line in lines]
                result = await producer.send_batch(
                    args.topic, values, keys=keys, partition=args.partition,
                    headers=[headers] * len(values) if headers else None,
                )  # fmt: skip
                for md, offset in zip(result, result.offsets, strict=True):
                    span = ranges.setdefault(md.partition, [offset, offset])
                    span[0], span[1] = min(span[0], offset), max(span[1], offset)
                count += len(values)
                progress.update(task, advance=sum(len(line) + 1 for line in lines))
    if args.file:
        source.close()
    elapsed = time.perf_counter() - start
    where = ", ".join(f"partition {p} offsets {a}..{b}" for p, (a, b) in sorted(ranges.items()))
    out.print(f"produced {count} records to {args.topic}" + (f": {where}" if where else "")
              + f" ({count / max(elapsed, 1e-9):,.0f} records/s)")  # fmt: skip


def _open_lines(name: str) -> tuple[int, TextIO]:
    path = Path(name)
    if not path.is_file():
        raise InvalidArgumentError(f"--file {name!r} is not a readable file")
    return path.stat().st_size, path.open("r", encoding="utf-8", newline="")


def _read_lines(source: TextIO, limit: int) -> list[str]:
    lines = []
    for line in source:
        lines.append(line.rstrip("\r\n"))
        if len(lines) == limit:
            break
    return lines


# -- consume ----------------------------------------------------------------------


def _text(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _as_json(r: Any) -> str:
    return json.dumps({
        "topic": r.topic, "partition": r.partition, "offset": r.offset,
        "timestamp": r.timestamp, "key": _text(r.key), "value": _text(r.value),
        "headers": [[k, _text(v)] for k, v in r.headers],
    })  # fmt: skip


async def consume(args: argparse.Namespace, out: Console) -> None:
    printed: dict[TopicPartition, int] = {}
    count = 0
    write = sys.stdout.write
    async with open_consumer(
        args.topics, group_id=args.group, offset_reset=args.start, auto_commit=False,
        storage=args.storage, metadata=args.metadata,
    ) as consumer:  # fmt: skip
        with anyio.CancelScope() as scope:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        scope.cancel()
                        return

            async with anyio.create_task_group() as tg:
                tg.start_soon(stop_on_signal)
                while args.max is None or count < args.max:
                    limit = 500 if args.max is None else min(500, args.max - count)
                    records = await consumer.poll(timeout=1.0 if args.follow else 0.5,
                                                  max_records=limit)  # fmt: skip
                    if not records:
                        if args.follow:
                            continue
                        lags = [await consumer.lag(tp.topic, tp.partition)
                                for tp in consumer.assignment()]  # fmt: skip
                        if not any(lags):
                            break
                        continue
                    for r in records:
                        if args.format == "json":
                            write(_as_json(r) + "\n")
                        else:
                            write(_text(r.value) if isinstance(_text(r.value), str)
                                  else repr(r.value))  # fmt: skip
                            write("\n")
                        printed[TopicPartition(r.topic, r.partition)] = r.offset + 1
                    sys.stdout.flush()
                    count += len(records)
                tg.cancel_scope.cancel()
        if args.group and printed:
            await consumer.commit(printed)
    if args.group:
        out.print(f"consumed {count} records; committed for group {args.group}", highlight=False)


# -- groups -----------------------------------------------------------------------


async def groups_list(args: argparse.Namespace, out: Console) -> None:
    async with open_admin(**_stores(args)) as admin:
        for group in await admin.list_groups():
            out.print(group, highlight=False)


async def groups_describe(args: argparse.Namespace, out: Console) -> None:
    async with open_admin(**_stores(args)) as admin:
        rows = await admin.describe_group(args.group)
    if not rows:
        raise InvalidArgumentError(f"group {args.group!r} has no committed offsets")
    table = _lag_table(rows)
    out.print(f"group {args.group}")
    out.print(table)


async def groups_reset(args: argparse.Namespace, out: Console) -> None:
    to: str | int = (
        "earliest" if args.to_earliest else "latest" if args.to_latest else args.to_offset
    )
    async with open_admin(**_stores(args)) as admin:
        offsets = await admin.reset_offsets(args.group, args.topic, to)
    for tp, offset in sorted(offsets.items()):
        out.print(f"{tp.topic}[{tp.partition}] -> {offset}", highlight=False)


# -- demo -------------------------------------------------------------------------


async def demo(args: argparse.Namespace, out: Console) -> None:
    topic = f"demo-{int(time.time())}"
    group = f"{topic}-readers"
    n, partitions = args.records, 4
    out.print(f"[bold]StreamHouse demo[/bold] on storage={args.storage or 'embedded default'}, "
              f"metadata={args.metadata or 'embedded default'}")  # fmt: skip
    async with open_admin(**_stores(args)) as admin:
        await admin.create_topic(topic, partitions)
        out.print(f"1. created topic {topic} with {partitions} partitions")
        start = time.perf_counter()
        with Progress(TextColumn("2. producing"), BarColumn(), TextColumn("{task.completed:,}"),
                      console=out, disable=not out.is_terminal) as progress:  # fmt: skip
            task = progress.add_task("produce", total=n)
            async with open_producer(
                storage=args.storage, metadata=args.metadata, linger=0.02
            ) as producer:
                for lo in range(0, n, _CHUNK):
                    size = min(_CHUNK, n - lo)
                    keys = [b"user-%d" % ((lo + i) % 1000) for i in range(size)]
                    values = [b'{"event": %d, "amount": %d}' % (lo + i, (lo + i) % 97)
                              for i in range(size)]  # fmt: skip
                    await producer.send_batch(topic, values, keys=keys)
                    progress.update(task, advance=size)
        produce_s = time.perf_counter() - start
        out.print(f"2. produced {n:,} records in {produce_s:.2f}s "
                  f"({n / produce_s:,.0f} records/s)")  # fmt: skip
        await admin.reset_offsets(group, topic, "earliest")
        lag = sum(r.lag for r in await admin.describe_group(group))
        out.print(f"3. group {group} starts at the beginning: lag {lag:,}")
        start = time.perf_counter()
        seen = 0
        async with open_consumer(
            topic,
            group_id=group,
            offset_reset="earliest",
            storage=args.storage,
            metadata=args.metadata,
        ) as consumer:
            while seen < n:
                records = await consumer.poll(timeout=5.0)
                if not records:
                    raise StreamHouseError(f"the demo consumer stalled at {seen} of {n}")
                seen += len(records)
            await consumer.commit()
        consume_s = time.perf_counter() - start
        out.print(f"4. consumed {seen:,} records in {consume_s:.2f}s "
                  f"({seen / consume_s:,.0f} records/s) and committed")  # fmt: skip
        rows = await admin.describe_group(group)
        lag = sum(r.lag for r in rows)
        out.print(f"5. lag is now {lag}:")
        out.print(_lag_table(rows))
        if lag:
            raise StreamHouseError(f"lag should be 0 after the demo, not {lag}")
    out.print("done. Try: streamhouse topics describe " + topic)


# -- the parser ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamhouse",
        description="A Kafka-like streaming log on S3-compatible object storage.",
    )
    parser.add_argument("--version", action="version", version=f"streamhouse {__version__}")
    parser.add_argument(
        "--storage",
        default=os.environ.get("STREAMHOUSE_STORAGE"),
        help="s3://bucket/prefix or file:///path (env STREAMHOUSE_STORAGE)",
    )
    parser.add_argument("--metadata", default=os.environ.get("STREAMHOUSE_METADATA"),
                        help="sqlite:///path.db (env STREAMHOUSE_METADATA)")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    topics = commands.add_parser("topics", help="create, list, describe, delete topics")
    tcmd = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    p = tcmd.add_parser("create", help="create a topic")
    p.add_argument("name")
    p.add_argument("--partitions", type=int, default=1)
    p.set_defaults(run=topics_create)
    tcmd.add_parser("list", help="list topics").set_defaults(run=topics_list)
    p = tcmd.add_parser("describe", help="partitions, bounds, segments, bytes")
    p.add_argument("name")
    p.set_defaults(run=topics_describe)
    p = tcmd.add_parser("delete", help="delete a topic")
    p.add_argument("name")
    p.set_defaults(run=topics_delete)

    p = commands.add_parser("produce", help="produce one record per line of stdin or --file")
    p.add_argument("topic")
    p.add_argument("--file", help="read lines from this file instead of stdin")
    p.add_argument("--key-separator", help="split each line into KEY<sep>VALUE")
    p.add_argument("--partition", type=int, help="write every record to this partition")
    p.add_argument("--header", action="append", default=[], metavar="K=V", help="add a header")
    p.set_defaults(run=produce)

    p = commands.add_parser("consume", help="print records of topics")
    p.add_argument("topics", nargs="+")
    p.add_argument("--group", help="consumer group: start at its offsets, commit what is printed")
    p.add_argument(
        "--from",
        dest="start",
        choices=["earliest", "latest"],
        default="earliest",
        help="where to start without a committed offset (default earliest)",
    )
    p.add_argument("--max", type=int, help="stop after this many records")
    p.add_argument("--follow", action="store_true", help="keep waiting for new records")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(run=consume)  # fmt: skip

    groups = commands.add_parser("groups", help="list, describe, reset consumer groups")
    gcmd = groups.add_subparsers(dest="groups_command", required=True, metavar="ACTION")
    gcmd.add_parser("list", help="list groups").set_defaults(run=groups_list)
    p = gcmd.add_parser("describe", help="committed offsets and lag")
    p.add_argument("group")
    p.set_defaults(run=groups_describe)
    p = gcmd.add_parser("reset-offsets", help="move a group's offsets on a topic")
    p.add_argument("group")
    p.add_argument("--topic", required=True)
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true")
    to.add_argument("--to-latest", action="store_true")
    to.add_argument("--to-offset", type=int)
    p.set_defaults(run=groups_reset)

    p = commands.add_parser("demo", help="create a topic, produce, consume, show lag: no server")
    p.add_argument("--records", type=int, default=100_000)
    p.set_defaults(run=demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code."""
    args = build_parser().parse_args(argv)
    out = Console(highlight=False, soft_wrap=True)
    run: Callable[[argparse.Namespace, Console], Any] = args.run
    try:
        anyio.run(run, args, out, backend="trio")
    except StreamHouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
