"""``streamhouse demo``: create a topic, produce, consume with a group, show lag.

It writes what it does to stderr (it has no data for stdout) and ends with
the command that looks at its topic, with the same ``--storage`` and
``--metadata``. Each run makes its own topic: a timestamp and a random part,
so that two demos started in the same second never collide.
"""

from __future__ import annotations

import argparse
import secrets
import time

from rich.progress import BarColumn, Progress, TextColumn

from .._admin import Admin, open_admin
from .._config import redact_url
from .._consumer import open_consumer
from .._errors import StreamHouseError
from .._producer import open_producer
from .args import Subparsers, add_command, at_least
from .common import Cli, store_options
from .output import plain_table
from .storage import create_bucket

__all__ = ["register"]

_CHUNK = 10_000
_PARTITIONS = 4


def demo_topic() -> str:
    """``demo-YYYYmmdd-HHMMSS-<8 hex digits>``: sorted by time, unique per run."""
    return f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


async def _produce(args: argparse.Namespace, cli: Cli, topic: str) -> None:
    n = args.records
    start = time.perf_counter()
    with Progress(TextColumn("2. producing"), BarColumn(), TextColumn("{task.completed:,}"),
                  console=cli.out.err, disable=not cli.out.err.is_terminal) as bar:  # fmt: skip
        task = bar.add_task("produce", total=n)
        async with open_producer(
            storage=args.storage, metadata=args.metadata, linger=0.02
        ) as producer:
            for lo in range(0, n, _CHUNK):
                size = min(_CHUNK, n - lo)
                keys = [b"user-%d" % ((lo + i) % 1000) for i in range(size)]
                values = [b'{"event": %d, "amount": %d}' % (lo + i, (lo + i) % 97)
                          for i in range(size)]  # fmt: skip
                await producer.send_batch(topic, values, keys=keys)
                bar.update(task, advance=size)
    seconds = time.perf_counter() - start
    cli.out.say(f"2. produced {n:,} records in {seconds:.2f}s ({n / seconds:,.0f} records/s)")


async def _consume(args: argparse.Namespace, cli: Cli, topic: str, group: str) -> None:
    n = args.records
    start = time.perf_counter()
    seen = 0
    async with open_consumer(
        topic, group_id=group, offset_reset="earliest",
        storage=args.storage, metadata=args.metadata,
    ) as consumer:  # fmt: skip
        while seen < n:
            records = await consumer.poll(timeout=5.0)
            if not records:
                raise StreamHouseError(f"the demo consumer stalled at {seen} of {n}")
            seen += len(records)
        await consumer.commit()
    seconds = time.perf_counter() - start
    cli.out.say(
        f"4. consumed {seen:,} records in {seconds:.2f}s ({seen / seconds:,.0f} records/s) "
        "and committed"
    )


async def _lag(admin: Admin, group: str) -> tuple[int, str]:
    rows = await admin.describe_group(group)
    table = plain_table(
        ["topic", "partition", "committed", "high watermark", "lag"],
        [(r.topic, r.partition, r.committed, r.high_watermark, r.lag) for r in rows],
    )
    return sum(r.lag for r in rows), table


async def demo(args: argparse.Namespace, cli: Cli) -> None:
    if args.create_bucket:
        await create_bucket(args, cli)
    topic = demo_topic()
    group = f"{topic}-readers"
    cli.out.say(
        f"StreamHouse demo on storage={args.storage or 'embedded default'}, "
        f"metadata={redact_url(args.metadata) if args.metadata else 'embedded default'}"
    )
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        await admin.create_topic(topic, _PARTITIONS)
        cli.out.say(f"1. created topic {topic} with {_PARTITIONS} partitions")
        await _produce(args, cli, topic)
        await admin.reset_offsets(group, topic, "earliest")
        lag, _ = await _lag(admin, group)
        cli.out.say(f"3. group {group} starts at the beginning: lag {lag:,}")
        await _consume(args, cli, topic, group)
        lag, table = await _lag(admin, group)
        cli.out.say(f"5. lag is now {lag}:\n{table.rstrip()}")
        if lag:
            raise StreamHouseError(f"lag should be 0 after the demo, not {lag}")
    options = store_options(args)
    cli.out.say(f"done. Try: streamhouse {options + ' ' if options else ''}topics describe {topic}")


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``demo`` to the command parser."""
    p = add_command(
        commands, "demo", "create a topic, produce, consume, show lag: no server needed", common
    )
    p.add_argument("--records", type=at_least(1), default=100_000, help="records to produce")
    p.add_argument(
        "--create-bucket",
        action="store_true",
        help="create the s3:// storage's bucket first, if missing (a fresh MinIO)",
    )
    p.set_defaults(run=demo)
