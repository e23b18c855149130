"""Consumer group members in separate processes, on SQLite and PostgreSQL:
a member killed with SIGKILL, a member stopped (SIGSTOP) past its session
and continued: every record is processed at least once, the stopped member
learns it lost its partitions and joins again, and the group ends balanced.

The processes keep real time (heartbeats, sessions by the database's
clock): each wait is for a condition the test reads, within a deadline.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from streamhouse import LocalObjectStore, MetadataStore, metadata_store_from_url

from ..helpers import Stores, produce, with_schema

ROOT = Path(__file__).resolve().parent.parent.parent
PARTITIONS = 4


@pytest.fixture(params=["sqlite", "postgres"])
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return with_schema(url, request.getfixturevalue("pg_schema"))


class Worker:
    def __init__(self, name: str, tmp: Path, metadata: str) -> None:
        self.journal = tmp / f"{name}.log"
        self.journal.touch()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.consumer.group_worker", "--name", name,
             "--objects", str(tmp / "objects"), "--metadata", metadata,
             "--journal", str(self.journal)],
            cwd=ROOT, stderr=subprocess.PIPE,
        )  # fmt: skip

    def lines(self) -> list[list[str]]:
        return [line.split() for line in self.journal.read_text().splitlines() if line]

    def processed(self) -> list[tuple[int, int]]:
        return [(int(p), int(o)) for kind, p, o in (x for x in self.lines() if x[0] == "proc")]

    def events(self, kind: str) -> int:
        return sum(1 for line in self.lines() if line[0] == kind)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        self.proc.stderr.close()


def wait(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    """Look at ``condition`` every 50 ms until it holds (processes keep real time)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds}s for {what}"
        time.sleep(0.05)


def members(url: str) -> dict[str, int]:
    async def ask() -> dict[str, int]:
        meta = metadata_store_from_url(url)
        try:
            return {m.member_id: len(m.assignment) for m in await meta.describe_group_members("g")}
        finally:
            await meta.aclose()

    return trio.run(ask)


def write(tmp: Path, url: str, count: int, start: int) -> None:
    async def go() -> None:
        meta: MetadataStore = metadata_store_from_url(url)
        storage = LocalObjectStore(tmp / "objects")
        stores = Stores(storage, meta)
        if start == 0:
            await meta.create_topic("t", PARTITIONS)
        for p in range(PARTITIONS):
            await produce(stores, "t", p, count, start)
        await storage.aclose()
        await meta.aclose()

    trio.run(go)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def test_members_in_processes_survive_kill_and_stop(
    tmp_path: Path, metadata_url: str, workers: list[Worker]
) -> None:
    """SIGKILL and SIGSTOP/SIGCONT: at-least-once, the stopped member fenced and back."""
    write(tmp_path, metadata_url, 50, 0)
    a, b, c = (Worker(n, tmp_path, metadata_url) for n in "abc")
    workers += [a, b, c]
    wait(lambda: sorted(members(metadata_url).values()) == [1, 1, 2], "three members sharing")
    a.proc.kill()  # SIGKILL: no leave; its session runs out by the database's clock
    a.proc.wait()
    wait(lambda: len(members(metadata_url)) == 2, "the killed member to expire")
    os.kill(b.proc.pid, signal.SIGSTOP)
    wait(lambda: list(members(metadata_url).values()) == [PARTITIONS], "c to own everything")
    write(tmp_path, metadata_url, 50, 50)
    os.kill(b.proc.pid, signal.SIGCONT)
    wait(lambda: b.events("lost") >= 1, "the stopped member to find its partitions lost")
    wait(lambda: sorted(members(metadata_url).values()) == [2, 2], "b and c balanced")
    everything = {(p, o) for p in range(PARTITIONS) for o in range(100)}
    wait(lambda: everything <= set(a.processed() + b.processed() + c.processed()), "all records")
    seen = collections.Counter(a.processed() + b.processed() + c.processed())
    assert set(seen) == everything
