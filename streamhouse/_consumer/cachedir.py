"""The cache's directory: a subdirectory it makes, marks, locks, and alone touches.

``cache_dir`` is the user's directory; the cache lives in
``<cache_dir>/streamhouse-cache-v1/``, which holds a marker file saying what
it is, a lock file, and the cache's own files (``<hash>-<start>-<end>.bin``,
and ``.tmp-*`` while one is written). Nothing outside that subdirectory is
ever read, written or deleted, and inside it only files named like the
cache's own are: anything else is left alone and not counted.

One consumer at a time: the lock is an ``fcntl.flock`` on the lock file,
held while the consumer is open. The kernel releases it when the process
ends, however it ends, so a crash never leaves a directory locked; a second
consumer on the same directory, in this process or another, is refused with
a ConfigurationError at open. (Where ``fcntl`` does not exist, on Windows,
there is no lock: give each consumer its own directory.)

Every OSError here becomes a ConfigurationError naming the directory: a
directory the cache cannot use is the application's configuration to fix.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

import attrs

from .._errors import ConfigurationError

if sys.platform != "win32":
    import fcntl

__all__ = ["SUBDIRECTORY", "CacheDirectory", "CachedFile", "open_cache_directory"]

SUBDIRECTORY = "streamhouse-cache-v1"
_MARKER = "STREAMHOUSE-CACHE"
_MARKER_TEXT = (
    "This directory is a StreamHouse consumer's segment cache (format v1).\n"
    "StreamHouse creates and deletes the files in it; it may be deleted when no consumer runs.\n"
)
_LOCK = ".lock"
_FILE = re.compile(r"[0-9a-f]{32}-(\d+)-(\d+)\.bin")
_TEMP = re.compile(r"\.tmp-[0-9a-f]{32}-\d+-\d+-\d+")


@attrs.frozen
class CachedFile:
    """A complete cache file found at open: its range's ident, size and last access."""

    ident: str
    size: int
    atime: float


class CacheDirectory:
    """The cache's locked subdirectory; :meth:`close` releases the lock."""

    def __init__(self, path: Path, lock_fd: int | None, files: list[CachedFile]) -> None:
        self.path = path
        self.files = files  # complete files, least recently used first
        self._lock_fd = lock_fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


def open_cache_directory(cache_dir: Path) -> CacheDirectory:
    """Make (or adopt) and lock ``<cache_dir>/streamhouse-cache-v1``; scan its files.

    Blocking: run it in a worker thread.

    Raises:
        ConfigurationError: the directory cannot be made or used, holds a
            subdirectory of that name that is not a cache, or another
            consumer uses it.
    """
    path = cache_dir / SUBDIRECTORY
    try:
        path.mkdir(parents=True, exist_ok=True)
        marker = path / _MARKER
        if not marker.exists():
            if any(p.name != _LOCK for p in path.iterdir()):
                raise ConfigurationError(
                    f"cache_dir {str(cache_dir)!r}: {SUBDIRECTORY!r} exists but is not a "
                    "StreamHouse cache (it has no marker file); move it away or choose "
                    "another cache_dir"
                )
            marker.write_text(_MARKER_TEXT)
        lock_fd = _lock(path / _LOCK, cache_dir)
        try:
            files = _scan(path)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
    except OSError as exc:
        raise ConfigurationError(
            f"cache_dir {str(cache_dir)!r} cannot be used: {exc.strerror or exc}"
        ) from exc
    return CacheDirectory(path, lock_fd, files)


def _lock(lock_path: Path, cache_dir: Path) -> int | None:
    if sys.platform == "win32":  # pragma: no cover - no flock there
        return None
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigurationError(
            f"cache_dir {str(cache_dir)!r} is in use by another open consumer; "
            "give each consumer its own cache_dir"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _scan(path: Path) -> list[CachedFile]:
    """Complete cache files, least recently used first; removes the cache's own debris.

    Debris: ``.tmp-*`` files of writes a crash cut short (nobody else
    writes here: we hold the lock), and files whose size does not match
    the range their name says. Files not named like the cache's are left.
    """
    found: list[CachedFile] = []
    for entry in os.scandir(path):
        name = entry.name
        if _TEMP.fullmatch(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
            continue
        match = _FILE.fullmatch(name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        st = entry.stat(follow_symlinks=False)
        if st.st_size != int(match[2]) - int(match[1]):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
            continue
        found.append(CachedFile(name[: -len(".bin")], st.st_size, st.st_atime))
    found.sort(key=lambda f: f.atime)
    return found
