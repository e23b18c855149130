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
    "global_options",
    "seconds",
    "separator",
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
        help="metadata store: sqlite:///path/to/meta.db (env STREAMHOUSE_METADATA; "
        "default: $STREAMHOUSE_HOME/metadata.db, else ./streamhouse-data/metadata.db)",
    )
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
