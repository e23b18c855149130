"""``streamhouse topics create | list | describe | delete``."""

from __future__ import annotations

import argparse

from .._admin import open_admin
from .args import Subparsers, add_command, add_format_option, add_group, at_least
from .common import Cli, require_metadata

__all__ = ["register"]


async def topics_create(args: argparse.Namespace, cli: Cli) -> None:
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        info = await admin.create_topic(args.name, args.partitions)
    cli.out.say(f"created topic {info.name} with {info.partitions} partition(s)")


async def topics_list(args: argparse.Namespace, cli: Cli) -> None:
    require_metadata(args)
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        topics = await admin.list_topics()
    if args.format == "json":
        cli.out.json([{"name": t.name, "partitions": t.partitions} for t in topics])
    else:
        cli.out.table(["topic", "partitions"], [(t.name, t.partitions) for t in topics], "topics")


async def topics_describe(args: argparse.Namespace, cli: Cli) -> None:
    require_metadata(args)
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        d = await admin.describe_topic(args.name)
    if args.format == "json":
        cli.out.json({
            "name": d.name, "created_at": d.created_at,
            "partitions": [
                {"partition": p.partition, "log_start_offset": p.log_start_offset,
                 "high_watermark": p.high_watermark, "segments": p.segments, "bytes": p.bytes}
                for p in d.partitions
            ],
        })  # fmt: skip
        return
    cli.out.table(
        ["partition", "log start", "high watermark", "segments", "bytes"],
        [
            (p.partition, p.log_start_offset, p.high_watermark, p.segments, p.bytes)
            for p in d.partitions
        ],
        f"topic {d.name}",
    )


async def topics_delete(args: argparse.Namespace, cli: Cli) -> None:
    require_metadata(args)
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        await admin.delete_topic(args.name)
    cli.out.say(f"deleted topic {args.name}")


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``topics`` and its actions to the command parser."""
    actions = add_group(commands, "topics", "create, list, describe, delete topics")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        return add_command(actions, name, help, common)

    p = action("create", "create a topic")
    p.add_argument("name", help="the topic's name: letters, digits, '.', '_', '-'")
    p.add_argument("--partitions", type=at_least(1), default=1, help="partitions of the topic")
    p.set_defaults(run=topics_create)
    p = action("list", "list topics and their partition counts")
    add_format_option(p)
    p.set_defaults(run=topics_list)
    p = action("describe", "a topic's partitions: log start, high watermark, segments, bytes")
    p.add_argument("name", help="the topic")
    add_format_option(p)
    p.set_defaults(run=topics_describe)
    p = action("delete", "delete a topic and its groups' offsets")
    p.add_argument("name", help="the topic")
    p.set_defaults(run=topics_delete)
