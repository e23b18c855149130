"""What every command's parser shares: the help format, number types, global options.

Numbers are checked by argparse itself, so ``--max 0`` is a usage error
(exit 2, with the command's usage), the same as a misspelled option.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

__all__ = [
    "Formatter",
    "Subparsers",
    "add_command",
    "add_format_option",
    "add_group",
    "at_least",
    "byte_size",
    "duration",
    "format_bytes",
    "format_seconds",
    "global_options",
    "port_number",
    "seconds",
    "separator",
    "time_span",
]

Subparsers = Any  # argparse's _SubParsersAction is private; its add_parser is what is used


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show; keeps epilogs' lines."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0: any free one)."""
    value = at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, not {value}")
    return value


_UNLIMITED = ("none", "unlimited", "-1")
_DURATION_UNITS = {"ms": 0.001, "": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def _number_and_unit(text: str) -> tuple[float, str]:
    stripped = text.strip().lower()
    digits = stripped[: len(stripped) - len(stripped.lstrip("0123456789."))]
    try:
        return float(digits), stripped[len(digits) :].strip()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number with a unit") from None


def duration(text: str) -> float | None:
    """An argparse type: a time span such as ``7d``, ``12h``, ``90m``, ``30s``, ``500ms``,
    ``2w`` or plain seconds; ``none`` (or ``unlimited``, ``-1``) for no limit."""
    if text.strip().lower() in _UNLIMITED:
        return None
    number, unit = _number_and_unit(text)
    if unit not in _DURATION_UNITS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use a number with ms, s, m, h, d or w (7d, 12h), or none"
        )
    value = number * _DURATION_UNITS[unit]
    if not 0 < value < 2**53:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def byte_size(text: str) -> int | None:
    """An argparse type: bytes such as ``10GiB``, ``500MB``, ``1048576``; ``none`` (or
    ``unlimited``, ``-1``) for no limit. KB, MB, GB, TB count by 1000; KiB, MiB, GiB,
    TiB by 1024."""
    if text.strip().lower() in _UNLIMITED:
        return None
    number, unit = _number_and_unit(text)
    if unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use a number of bytes, with KB, MB, GB, TB or KiB, MiB, GiB, TiB"
        )
    value = int(number * _SIZE_UNITS[unit])
    if value >= 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is too large")
    return value


def time_span(text: str) -> float:
    """An argparse type: a time span (as ``duration``) that may be 0, never none."""
    if text.strip() in ("0", "0s"):
        return 0.0
    value = duration(text)
    if value is None:
        raise argparse.ArgumentTypeError("a time span is needed here, not none")
    return value


def format_seconds(value: float | None) -> str:
    """A time span as people write it: ``7d``, ``1h``, ``90s``; ``unlimited`` for None."""
    if value is None:
        return "unlimited"
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    return f"{value:g}s"


def format_bytes(value: int | None) -> str:
    """A byte count as people write it: ``10GiB``, ``500MB``; ``unlimited`` for None."""
    if value is None:
        return "unlimited"
    for unit in ("TiB", "GiB", "MiB", "KiB", "TB", "GB", "MB", "KB"):
        size = _SIZE_UNITS[unit.lower()]
        if value >= size and value % size == 0:
            return f"{value // size}{unit}"
    return f"{value}B"


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "0": "\0", "\\": "\\"}


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, not {text}")
    return value


def separator(text: str) -> bytes:
    r"""An argparse type: a separator as bytes, with ``\t``, ``\n``, ``\r``, ``\0``, ``\\``.

    A shell passes ``--key-separator '\t'`` as a backslash and a t, as kcat's
    users know; the bytes of anything else are taken as they are (the
    command line's own bytes, undecoded).
    """
    out = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    sep = os.fsencode("".join(out))
    if not sep:
        raise argparse.ArgumentTypeError("the separator must not be empty")
    return sep


def global_options(*, top: bool) -> argparse.ArgumentParser:
    """``--storage`` and ``--metadata``, for the main parser and (``top=False``) every command.

    The command's copies default to SUPPRESS, so a value given after the
    command wins and one given before it is not overwritten.
    """
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("stores (before or after the command)")
    storage_default = os.environ.get("STREAMHOUSE_STORAGE") if top else argparse.SUPPRESS
    metadata_default = os.environ.get("STREAMHOUSE_METADATA") if top else argparse.SUPPRESS
    group.add_argument(
        "--storage",
        metavar="URL",
        default=storage_default,
        help="object storage: s3://bucket/prefix or file:///path (env STREAMHOUSE_STORAGE; "
        "default: $STREAMHOUSE_HOME/objects, else ./streamhouse-data/objects)",
    )
    group.add_argument(
        "--metadata",
        metavar="URL",
        default=metadata_default,
        help="metadata store: sqlite:///path/to/meta.db or "
        "postgresql://user@host:port/db?schema=NAME (env STREAMHOUSE_METADATA; "
        "default: $STREAMHOUSE_HOME/metadata.db, else ./streamhouse-data/metadata.db)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
        help="log to stderr: -v what happens (INFO: opening, closing, assignments, retries, "
        "stalls), -vv every request too (DEBUG)",
    )  # fmt: skip
    return parser


def add_format_option(parser: argparse.ArgumentParser) -> None:
    """``--format text|json``: a table for people, JSON for programs."""
    parser.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="text: a table (aligned columns when piped); json: one JSON document",
    )


def add_command(
    commands: Subparsers, name: str, help: str, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """A command (or a group's action) that takes the global options too."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help, description=help, parents=[common], formatter_class=Formatter
    )
    return parser


def add_group(commands: Subparsers, name: str, help: str) -> Subparsers:
    """A group of actions (``topics``, ``groups``...); returns where to add them."""
    group = commands.add_parser(name, help=help, description=help, formatter_class=Formatter)
    return group.add_subparsers(
        dest="action", required=True, metavar="ACTION", help=f"what to do with {name}"
    )
