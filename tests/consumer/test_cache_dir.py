"""The cache owns only what it made: its marked subdirectory, one consumer at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamhouse import ConfigurationError, LocalObjectStore, SQLiteMetadataStore

from ..helpers import Stores, poll_until, produce

pytestmark = pytest.mark.anyio

SUBDIRECTORY = "streamhouse-cache-v1"


@pytest.fixture
async def local(tmp_path: Path, meta: SQLiteMetadataStore) -> Stores:
    """A local store and SQLite, with topic "t" holding 20 records."""
    stores = Stores(LocalObjectStore(tmp_path / "objects"), meta)
    await meta.create_topic("t", 1)
    await produce(stores, "t", 0, 20)
    return stores


async def test_the_users_files_beside_the_cache_are_never_touched(
    local: Stores, tmp_path: Path
) -> None:
    """Files of the user in cache_dir survive reads, evictions and close; the cache is marked."""
    cache_dir = tmp_path / "mine"
    (cache_dir / "photos").mkdir(parents=True)
    theirs = {cache_dir / "report.docx": b"quarterly", cache_dir / "photos" / "a.bin": b"jpeg"}
    for path, data in theirs.items():
        path.write_bytes(data)
    await produce(local, "t", 0, 20, start=20)  # a second segment: only one fits the budget
    budget = max(s.length for s in await local.meta.list_segments("t", 0)) + 1
    evictions = 0
    for _ in range(2):  # the second time, the cache starts from what the first left
        async with local.consumer("t", offset_reset="earliest", cache_dir=cache_dir,
                                  cache_size_bytes=budget,
                                  cache_first_reads=True) as consumer:  # fmt: skip
            assert len(await poll_until(consumer, 40)) == 40
            evictions += (await consumer.cache_stats()).evictions
    assert evictions >= 1
    assert all(path.read_bytes() == data for path, data in theirs.items())
    assert sorted(p.name for p in cache_dir.iterdir()) == ["photos", "report.docx", SUBDIRECTORY]
    assert "StreamHouse" in (cache_dir / SUBDIRECTORY / "STREAMHOUSE-CACHE").read_text()


async def test_an_unusable_cache_dir_is_a_configuration_error_at_open(
    local: Stores, tmp_path: Path
) -> None:
    """A file where the directory should be, or a foreign folder of the cache's name, is refused."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    for cache_dir in (a_file, a_file / "below"):
        with pytest.raises(ConfigurationError, match="cannot be used"):
            async with local.consumer("t", cache_dir=cache_dir):
                pass
    foreign = tmp_path / "foreign"
    (foreign / SUBDIRECTORY).mkdir(parents=True)
    (foreign / SUBDIRECTORY / "thesis.tex").write_text("chapter 1")
    with pytest.raises(ConfigurationError, match="not a StreamHouse cache"):
        async with local.consumer("t", cache_dir=foreign):
            pass
    assert (foreign / SUBDIRECTORY / "thesis.tex").read_text() == "chapter 1"


async def test_a_second_consumer_on_one_cache_dir_is_refused(local: Stores, tmp_path: Path) -> None:
    """While one consumer holds the directory, another is refused; after it closes, it is free."""
    cache_dir = tmp_path / "shared"
    async with local.consumer("t", cache_dir=cache_dir):
        with pytest.raises(ConfigurationError, match="in use by another open consumer"):
            async with local.consumer("t", cache_dir=cache_dir):
                pass
    async with local.consumer("t", offset_reset="earliest", cache_dir=cache_dir) as consumer:
        assert len(await poll_until(consumer, 20)) == 20


def test_the_lock_of_a_killed_process_is_released(tmp_path: Path) -> None:
    """A process SIGKILLed while holding the cache directory leaves it usable."""
    from streamhouse._consumer.cachedir import open_cache_directory

    holder = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from streamhouse._consumer.cachedir import open_cache_directory
        taken = open_cache_directory(Path({str(tmp_path)!r}))
        print("locked", flush=True)
        sys.stdin.read()  # until killed
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigurationError, match="in use"):
            open_cache_directory(tmp_path)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
    open_cache_directory(tmp_path).close()


async def test_no_disk_budget_writes_nothing_to_disk(local: Stores, tmp_path: Path) -> None:
    """cache_size_bytes=0: records flow and cache_dir is not even created."""
    cache_dir = tmp_path / "unused"
    async with local.consumer("t", offset_reset="earliest", cache_dir=cache_dir,
                              cache_size_bytes=0) as consumer:  # fmt: skip
        assert len(await poll_until(consumer, 20)) == 20
        stats = await consumer.cache_stats()
    assert (stats.files, stats.bytes, stats.budget) == (0, 0, 0)
    assert not cache_dir.exists()
