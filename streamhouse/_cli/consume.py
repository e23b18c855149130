"""``streamhouse consume TOPIC...``: print records; stop when caught up, or ``--follow``.

Text prints each value's bytes as they are, one a line (a null value as
``--null``'s text, ``null`` unless changed; ``--format json`` tells them
apart exactly). With ``--group``, what was written to stdout is committed
when the command ends: at the end, at ``--max``, on Ctrl-C (exit 0) and when
the reader of stdout goes away (``| head``, exit 0). With ``--follow`` and
``--group`` the command joins the group as a member: it reads its share of
the partitions, commits what it printed every ``--commit-interval`` (5 s, as
kafka-console-consumer's auto-commit), and commits what it printed of a
partition before it hands that partition to another member. (It committed
only at its end: ``groups describe`` showed no lag for it while it ran, and
after a kill -9 the group read everything it had printed again.) Without
``--follow`` it is no member, and
refuses a group whose members run (GroupNotEmptyError), at the start and
again before it commits.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
from collections.abc import Sequence
from typing import Any

import anyio

from .._admin import Admin, open_admin
from .._config import open_stores
from .._consumer import Consumer, RebalanceListener, open_consumer
from .._errors import CommitFailedError, RetriableError
from .._types import ConsumedRecord, TopicPartition
from .args import Subparsers, add_command, at_least, seconds, separator, time_span
from .common import Cli, require_metadata
from .output import Output, StdoutClosed

__all__ = ["caught_up", "register"]


class _Printed(RebalanceListener):
    """Records written to stdout, and the offset after the last of each partition.

    As a group member's listener, it commits what was printed of partitions
    that go to another member, and forgets partitions lost.
    """

    def __init__(self) -> None:
        self.count = 0
        self.offsets: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}  # by commit_printed
        self.consumer: Consumer | None = None

    async def on_partitions_revoked(self, partitions: frozenset[TopicPartition]) -> None:
        offsets = {tp: self.offsets.pop(tp) for tp in partitions if tp in self.offsets}
        for tp in partitions:
            self.committed.pop(tp, None)
        if offsets and self.consumer is not None:
            await self.consumer.commit(offsets)

    async def on_partitions_lost(self, partitions: frozenset[TopicPartition]) -> None:
        for tp in partitions:
            self.offsets.pop(tp, None)
            self.committed.pop(tp, None)

    async def commit_printed(self, out: Output) -> None:
        """A member's periodic commit of what it printed since the last one; a
        refusal or an unreachable store is a warning (the next one tries again)."""
        due = {tp: o for tp, o in self.offsets.items() if self.committed.get(tp) != o}
        if not due or self.consumer is None:
            return
        try:
            await self.consumer.commit(due)
        except (CommitFailedError, RetriableError) as exc:
            out.say(f"warning: commit failed: {' '.join(str(exc).split())}")
        else:
            self.committed.update(due)


async def _to_read(admin: Admin, args: argparse.Namespace) -> list[TopicPartition]:
    """The partitions that hold something to print now.

    A partition whose log is empty, or that the group has consumed to its
    high watermark, or (``--from latest``, no commit) whose start is its end,
    has nothing to print, and is left out. At 100,000 partitions the
    consumer takes minutes to start a reader per partition; one metadata
    query per topic lets it start only the few that matter. (With
    ``--follow`` every partition is read: records may come anywhere.)
    """
    committed = {}
    if args.group is not None:
        # Not a member: reading and committing the group's offsets while its
        # members run would skip, for them, what this prints.
        await admin.check_group_empty(args.group, "reading its offsets without --follow")
        committed = {
            TopicPartition(r.topic, r.partition): r.committed
            for r in await admin.describe_group(args.group)
        }
    wanted = []
    for topic in dict.fromkeys(args.topics):
        for p in (await admin.describe_topic(topic)).partitions:
            tp = TopicPartition(topic, p.partition)
            offset = committed.get(tp)
            if p.high_watermark <= p.log_start_offset or offset == p.high_watermark:
                continue
            if offset is None and args.start == "latest":
                continue
            wanted.append(tp)
    return wanted


async def caught_up(consumer: Consumer) -> bool:
    """Whether no assigned partition has records left: one request, however
    many partitions (``Consumer.lags``)."""
    return not any((await consumer.lags()).values())


def _text(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _as_json(r: ConsumedRecord) -> bytes:
    return json.dumps({
        "topic": r.topic, "partition": r.partition, "offset": r.offset,
        "timestamp": r.timestamp, "key": _text(r.key), "value": _text(r.value),
        "headers": [[k, _text(v)] for k, v in r.headers],
    }).encode() + b"\n"  # fmt: skip


def _render(records: Sequence[ConsumedRecord], args: argparse.Namespace) -> bytes:
    if args.format == "json":
        return b"".join(map(_as_json, records))
    null: bytes = args.null
    if args.key_separator is None:
        return b"".join((null if r.value is None else r.value) + b"\n" for r in records)
    sep: bytes = args.key_separator
    return b"".join(
        (null if r.key is None else r.key) + sep + (null if r.value is None else r.value) + b"\n"
        for r in records
    )


async def _print_records(
    consumer: Consumer, args: argparse.Namespace, out: Output, printed: _Printed
) -> None:
    member = args.group is not None and args.follow
    next_commit = anyio.current_time() + args.commit_interval
    while args.max is None or printed.count < args.max:
        if member and args.commit_interval and anyio.current_time() >= next_commit:
            await printed.commit_printed(out)
            next_commit = anyio.current_time() + args.commit_interval
        limit = 500 if args.max is None else min(500, args.max - printed.count)
        try:
            records = await consumer.poll(timeout=1.0 if args.follow else 0.5, max_records=limit)
        except RetriableError as exc:
            if not args.follow:
                raise  # the caller commits what was printed, then exits 1
            out.say(f"warning: {exc}; still waiting")  # the consumer carries on
            continue
        if not records:
            if not args.follow and await caught_up(consumer):
                return
            continue
        out.data(_render(records, args))  # written first, then counted as printed
        for r in records:
            printed.offsets[TopicPartition(r.topic, r.partition)] = r.offset + 1
        printed.count += len(records)


async def consume(args: argparse.Namespace, cli: Cli) -> int:
    require_metadata(args)
    printed = _Printed()
    async with open_stores(args.storage, args.metadata) as (storage, metadata):
        assigned: list[str] | list[TopicPartition] = list(dict.fromkeys(args.topics))
        if not args.follow:
            async with open_admin(storage=storage, metadata=metadata) as admin:
                assigned = await _to_read(admin, args)
        member = args.group is not None and args.follow
        if assigned:
            async with open_consumer(
                assigned,
                group_id=args.group,
                offset_reset=args.start,
                auto_commit=False,
                storage=storage,
                metadata=metadata,
                stall_timeout=args.stall_timeout,
                rebalance_listener=printed if member else None,
            ) as consumer:
                printed.consumer = consumer
                # Ctrl-C and a closed stdout are normal ends: commit what was written.
                # So does a stall (an unreachable store), which then exits 1.
                stalled: RetriableError | None = None
                with cli.stop_scope(), contextlib.suppress(StdoutClosed):
                    try:
                        await _print_records(consumer, args, cli.out, printed)
                    except RetriableError as exc:
                        stalled = exc
                if args.group and printed.offsets:
                    if not member:  # members may have come while it printed
                        async with open_admin(storage=storage, metadata=metadata) as admin:
                            await admin.check_group_empty(
                                args.group, "committing what was printed without --follow"
                            )
                    await consumer.commit(printed.offsets)
                if stalled is not None:
                    raise stalled
    committed = f"; committed for group {args.group}" if args.group else ""
    cli.out.say(f"consumed {printed.count} records{committed}")
    return 0


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``consume`` to the command parser."""
    p = add_command(commands, "consume", "print the records of topics", common)
    p.add_argument("topics", nargs="+", metavar="TOPIC", help="the topics to read")
    p.add_argument(
        "--group", help="consumer group: start at its committed offsets, commit what is printed"
    )
    p.add_argument(
        "--from",
        dest="start",
        choices=["earliest", "latest"],
        default="earliest",
        help="where to start in a partition without a committed offset",
    )
    p.add_argument("--max", type=at_least(1), metavar="N", help="stop after N records")
    p.add_argument(
        "--follow", action="store_true", help="keep waiting for new records (stop with Ctrl-C)"
    )
    p.add_argument(
        "--commit-interval",
        type=time_span,
        default=5.0,
        metavar="TIME",
        help="with --follow and --group: commit what was printed this often (0: only at the "
        "end and at hand-overs)",
    )
    p.add_argument(
        "--stall-timeout",
        type=seconds,
        default=60.0,
        metavar="S",
        help="give up with exit 1 when a partition makes no progress for S seconds because "
        "of errors (an unreachable store); with --follow, say so and keep waiting",
    )
    p.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="text: each value's bytes, one a line; json: one object per record "
        '(bytes that are not UTF-8 as {"base64": ...})',
    )
    p.add_argument(
        "--key-separator",
        metavar="SEP",
        type=separator,
        help=r"text: print KEY SEP VALUE (\t for a tab) instead of the value alone",
    )
    p.add_argument(
        "--null",
        metavar="TEXT",
        type=os.fsencode,
        default="null",
        help="text: what a null key or value prints as",
    )
    p.set_defaults(run=consume)
