"""``streamhouse topics create | alter | list | describe | delete``."""

from __future__ import annotations

import argparse
from typing import Any

from .._admin import open_admin
from .args import (
    Subparsers,
    add_command,
    add_format_option,
    add_group,
    at_least,
    byte_size,
    duration,
    format_bytes,
    format_seconds,
    time_span,
)
from .common import Cli, require_metadata

__all__ = ["register"]


_SETTINGS = ("retention_seconds", "retention_bytes", "cleanup_policy", "delete_retention_seconds")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (those not given are left out)."""
    return {name: getattr(args, name) for name in _SETTINGS if hasattr(args, name)}


def _describe_settings(config: Any) -> str:
    return (
        f"retention {format_seconds(config.retention_seconds)}, retention bytes "
        f"{format_bytes(config.retention_bytes)}, cleanup policy {config.cleanup_policy.value}"
        + (
            f", tombstones kept {format_seconds(config.delete_retention_seconds)}"
            if config.cleanup_policy == "compact"
            else ""
        )
    )


async def topics_create(args: argparse.Namespace, cli: Cli) -> None:
    settings = _settings(args)
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        info = await admin.create_topic(args.name, args.partitions, **settings)
    said = f"created topic {info.name} with {info.partitions} partition(s)"
    cli.out.say(said + (": " + _describe_settings(info.config) if settings else ""))


async def topics_alter(args: argparse.Namespace, cli: Cli) -> int | None:
    changes = _settings(args)
    if not changes:  # a usage error, as argparse reports them
        cli.out.say(
            "streamhouse topics alter: error: give at least one of --retention, "
            "--retention-bytes, --cleanup-policy, --delete-retention"
        )
        return 2
    require_metadata(args)
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        info = await admin.alter_topic(args.name, **changes)
    cli.out.say(f"altered topic {info.name}: " + _describe_settings(info.config))
    return None


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
            "retention_seconds": d.retention_seconds, "retention_bytes": d.retention_bytes,
            "cleanup_policy": d.cleanup_policy.value,
            "delete_retention_seconds": d.delete_retention_seconds,
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
        f"topic {d.name}: " + _describe_settings(d),  # the title, drawn on a terminal
    )


async def topics_delete(args: argparse.Namespace, cli: Cli) -> None:
    require_metadata(args)
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        await admin.delete_topic(args.name)
    cli.out.say(f"deleted topic {args.name}")


def _setting_options(p: argparse.ArgumentParser) -> None:
    """The settings ``streamhouse maintain`` acts on; left out unless given."""
    group = p.add_argument_group("settings (applied by `streamhouse maintain`)")
    group.add_argument(
        "--retention", dest="retention_seconds", type=duration, metavar="TIME",
        default=argparse.SUPPRESS,
        help="remove segments whose newest record is older: 7d, 12h, 30m, 90s, or none "
        "(default: none, keep everything)",
    )  # fmt: skip
    group.add_argument(
        "--retention-bytes", dest="retention_bytes", type=byte_size, metavar="SIZE",
        default=argparse.SUPPRESS,
        help="remove a partition's oldest segments while it holds more: 10GiB, 500MB, "
        "or none (default: none)",
    )  # fmt: skip
    group.add_argument(
        "--cleanup-policy", dest="cleanup_policy", choices=["delete", "compact"],
        default=argparse.SUPPRESS,
        help="compact: keep only the newest record of each key (records need keys) "
        "(default: delete)",
    )  # fmt: skip
    group.add_argument(
        "--delete-retention", dest="delete_retention_seconds", type=time_span, metavar="TIME",
        default=argparse.SUPPRESS,
        help="how long a compacted topic keeps a tombstone (default: 1d)",
    )  # fmt: skip


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``topics`` and its actions to the command parser."""
    actions = add_group(commands, "topics", "create, alter, list, describe, delete topics")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        return add_command(actions, name, help, common)

    p = action("create", "create a topic")
    p.add_argument("name", help="the topic's name: letters, digits, '.', '_', '-'")
    p.add_argument("--partitions", type=at_least(1), default=1, help="partitions of the topic")
    _setting_options(p)
    p.set_defaults(run=topics_create)
    p = action("alter", "change a topic's retention or cleanup policy")
    p.add_argument("name", help="the topic")
    _setting_options(p)
    p.set_defaults(run=topics_alter)
    p = action("list", "list topics and their partition counts")
    add_format_option(p)
    p.set_defaults(run=topics_list)
    p = action(
        "describe",
        "a topic's partitions (log start, high watermark, segments, bytes) and settings "
        "(in the title on a terminal; in JSON)",
    )
    p.add_argument("name", help="the topic")
    add_format_option(p)
    p.set_defaults(run=topics_describe)
    p = action("delete", "delete a topic and its groups' offsets")
    p.add_argument("name", help="the topic")
    p.set_defaults(run=topics_delete)
