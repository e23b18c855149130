"""What every command gets: where to write, how Ctrl-C reaches it, which stores.

Ctrl-C (SIGINT, and SIGTERM alike) reaches a command as a cancellation: the
whole command is cancelled, and the process exits with 130 (143), printing
nothing, unless the command is inside :meth:`Cli.stop_scope`: then only that
block is cancelled, and the command goes on to finish its work (consume
commits what it printed). Inside :meth:`Cli.finish_scope` nothing is
cancelled but the stop scopes within: the command finishes the work it took
on there (produce writes the lines it read), and an error it meets doing so
is told like any other, not taken for the interruption's doing. A second
signal ends the process at once, after the finish scope's last line (how
much was left undone).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio

from .._config import data_home, metadata_store_from_url, redact_url
from .._errors import ConfigurationError, StreamHouseError
from .._metadata.protocol import MetadataStore
from .._metadata.sqlite import SQLiteMetadataStore
from .output import Output

__all__ = ["Cli", "open_metadata", "require_metadata", "store_options"]


class Cli:
    """The command's outputs and its view of the signals received."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.signal: int | None = None  # the first SIGINT or SIGTERM received
        self._stops: list[Callable[[], None]] = []
        self._left: list[Callable[[bool], str | None]] = []
        # An error that left a finish scope: the command's own, even after a signal.
        self.unfinished_error: StreamHouseError | None = None

    @property
    def interrupted(self) -> bool:
        return self.signal is not None

    @contextlib.contextmanager
    def stop_scope(self) -> Iterator[anyio.CancelScope]:
        """A block that Ctrl-C cancels instead of the whole command."""
        with anyio.CancelScope() as scope:
            if self.interrupted:
                scope.cancel()
            self._stops.append(scope.cancel)
            try:
                yield scope
            finally:
                self._stops.remove(scope.cancel)

    @contextlib.contextmanager
    def finish_scope(self, left: Callable[[bool], str | None]) -> Iterator[None]:
        """A block that Ctrl-C does not cancel (only the stop scopes inside it).

        ``left(quitting)`` says in one line what is left to do, or None: it is
        told at the first signal (``quitting`` false), and at a second, which
        ends the process at once without it (``quitting`` true).
        """
        self._stops.append(_nothing)
        self._left.append(left)
        try:
            yield
        except StreamHouseError as exc:
            self.unfinished_error = exc
            raise
        finally:
            self._stops.remove(_nothing)
            self._left.remove(left)

    def interrupt(self, signum: int, cancel_command: Callable[[], None]) -> None:
        """The first signal: cancel the innermost stop scope, or the whole command."""
        self.signal = signum
        (self._stops[-1] if self._stops else cancel_command)()
        line = self._left[-1](False) if self._left else None
        if line is not None:
            self.out.say(line)

    def last_line(self) -> str | None:
        """What a second signal leaves undone, in one line (None: nothing to tell)."""
        return self._left[-1](True) if self._left else None


def _nothing() -> None:
    """A finish scope's stop: the signal is only noted."""


def require_metadata(args: argparse.Namespace) -> None:
    """Refuse a SQLite metadata database that does not exist yet.

    Read-only commands create nothing: opening a SQLite store creates its
    file and directory, so a command that only reads checks the path first.
    (Other metadata stores are servers; there is nothing to create.)

    Raises:
        ConfigurationError: the database or its directory does not exist.
    """
    path: Path
    if args.metadata is None:
        path = data_home() / "metadata.db"
    else:
        store = metadata_store_from_url(args.metadata)
        if not isinstance(store, SQLiteMetadataStore):
            return
        path = store.path  # not opened yet: nothing to close
    if not path.parent.is_dir():
        raise ConfigurationError(
            f"there is no StreamHouse metadata here: directory {str(path.parent)!r} "
            "does not exist (check --metadata or STREAMHOUSE_HOME; `streamhouse topics "
            "create` or `streamhouse demo` starts one)"
        )
    if not path.is_file():
        raise ConfigurationError(
            f"there is no StreamHouse metadata here: {str(path)!r} does not exist (check "
            "--metadata or STREAMHOUSE_HOME; `streamhouse topics create` or `streamhouse demo` "
            "starts one)"
        )


def open_metadata(args: argparse.Namespace) -> MetadataStore:
    """The metadata store alone, for commands that read only it (never creating it)."""
    if args.metadata is None:
        return SQLiteMetadataStore(data_home() / "metadata.db", create=False)
    return metadata_store_from_url(args.metadata, create=False)


def store_options(args: argparse.Namespace) -> str:
    """The ``--storage``/``--metadata`` options the command ran with, ready to paste
    (a PostgreSQL password shows as ``***``: printed text is no place for it)."""
    words = []
    for option in ("storage", "metadata"):
        value = getattr(args, option)
        if value is not None:
            words += [f"--{option}", redact_url(value)]
    return shlex.join(words)
