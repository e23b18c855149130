"""The producer under faults: the delivery timeout, commits whose outcome is in
doubt, and the time limits of a store that never answers.

Each test names the fault it injects. Tests on virtual time (trio's MockClock)
assert exact times; the stores under them are scripted doubles at the I/O
seam (an httpx transport, a metadata wrapper) around real SQLite files.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trio.testing

from streamhouse import (
    DeliveryError,
    LocalObjectStore,
    MetadataStore,
    ObjectStore,
    RecordMetadata,
    S3ObjectStore,
    SQLiteMetadataStore,
    StorageUnavailableError,
    open_producer,
)
from streamhouse._errors import MetadataUnavailableError
from streamhouse._metadata.protocol import SegmentInfo, SegmentSpec
from streamhouse._retry import RetryPolicy

from ..helpers import FlakyStore, LostAnswerMetadata, NeverAnswers, read_partition

pytestmark = pytest.mark.anyio


class ScriptedCommits:
    """A MetadataStore whose commit_segments is scripted; everything else passes through.

    ``script`` holds one step per commit call, used in order (the last one
    repeats): ``"ok"`` commits; ``"fail"`` raises MetadataUnavailableError
    without committing; ``("slow", s)`` waits ``s`` seconds, then commits;
    ``"hang"`` waits for ``release``, then commits.
    """

    def __init__(self, inner: MetadataStore, *script: object) -> None:
        self.inner = inner
        self.script = list(script)
        self.release = anyio.Event()
        self.entered = anyio.Event()
        self.started: list[float] = []

    async def commit_segments(
        self, object_key: str, segments: Sequence[SegmentSpec]
    ) -> list[SegmentInfo]:
        self.started.append(anyio.current_time())
        self.entered.set()
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if step == "fail":
            raise MetadataUnavailableError("scripted: the database is locked")
        if step == "hang":
            await self.release.wait()
        elif isinstance(step, tuple):
            await anyio.sleep(step[1])
        return await self.inner.commit_segments(object_key, segments)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def _hw(meta: MetadataStore, topic: str = "t") -> int:
    return sum(s.high_watermark for s in await meta.partition_states([topic]))


def _silent_s3(transport: NeverAnswers) -> S3ObjectStore:
    return S3ObjectStore(
        bucket="b", prefix="p", endpoint="http://s3.test", region="us-east-1",
        access_key="a", secret_key="s", transport=transport, timeout=30.0,
        retry=RetryPolicy(attempts=2, base_delay=0.5),
    )  # fmt: skip


async def test_a_store_that_never_answers_fails_sends_at_the_delivery_timeout(
    meta: SQLiteMetadataStore, autojump_clock: trio.testing.MockClock
) -> None:
    """Fault: every PUT is accepted and never answered. The batch's sends fail with
    DeliveryError exactly delivery_timeout after the flush, and nothing is committed."""
    await meta.create_topic("t", 1)
    transport = NeverAnswers(silent=frozenset({"PUT"}))
    store = _silent_s3(transport)
    failures: list[tuple[float, DeliveryError]] = []
    async with open_producer(storage=store, metadata=meta, linger=0, delivery_timeout=120) as p:
        await p.partitions_for("t")
        start = trio.current_time()

        async def send(i: int) -> None:
            with pytest.raises(DeliveryError) as caught:
                await p.send("t", b"%d" % i)
            failures.append((trio.current_time() - start, caught.value))

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(send, i)
    # The last S3 attempt is cut short to end at the deadline itself.
    assert [round(t, 9) for t, _ in failures] == [120.0] * 3
    assert "within delivery_timeout=120.0 s" in str(failures[0][1])
    assert "no answer from http://s3.test" in str(failures[0][1])
    assert max(transport.requests) - start < 120
    await trio.sleep(3600)
    assert await _hw(meta) == 0
    await store.aclose()


class _PutsNeverAnswered(socketserver.StreamRequestHandler):
    """Answers a LIST (the store's check) and never answers anything else."""

    server: _HalfSilentServer

    def handle(self) -> None:
        while True:
            request = self.rfile.readline()
            if not request:
                return
            length = 0
            while (line := self.rfile.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            self.rfile.read(length)
            if not request.startswith(b"GET "):
                self.server.stop.wait()  # accepted, read, never answered
                return
            body = b"<ListBucketResult/>"
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class _HalfSilentServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    stop = threading.Event()


async def test_a_loopback_server_that_never_answers_puts_fails_sends_in_time(
    meta: SQLiteMetadataStore,
) -> None:
    """Fault: a real server answers the store's check, then takes every PUT and never
    answers. send() fails with DeliveryError about delivery_timeout later, not minutes."""
    await meta.create_topic("t", 1)
    server = _HalfSilentServer(("127.0.0.1", 0), _PutsNeverAnswered)
    server.stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        store = S3ObjectStore(
            bucket="b", prefix="", endpoint=f"http://127.0.0.1:{server.server_address[1]}",
            region="us-east-1", access_key="a", secret_key="s", timeout=0.4,
        )  # fmt: skip
        async with open_producer(
            storage=store, metadata=meta, linger=0, delivery_timeout=1.0
        ) as producer:
            start = anyio.current_time()
            with pytest.raises(DeliveryError, match=r"within delivery_timeout=1\.0 s"):
                await producer.send("t", b"lost")
            elapsed = anyio.current_time() - start
        await store.aclose()
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert 0.9 <= elapsed < 10
    assert await _hw(meta) == 0


async def test_an_unreachable_store_fails_at_open(meta: SQLiteMetadataStore) -> None:
    """Fault: nothing listens at the endpoint. Opening the producer fails at once with
    StorageUnavailableError naming it, instead of every send failing later."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = S3ObjectStore(
        bucket="b", prefix="", endpoint=f"http://127.0.0.1:{port}", region="us-east-1",
        access_key="a", secret_key="s", retry=RetryPolicy(attempts=2, base_delay=0.01),
    )  # fmt: skip
    with pytest.raises(StorageUnavailableError, match=f"cannot reach http://127.0.0.1:{port}"):
        async with open_producer(storage=store, metadata=meta):
            pass  # pragma: no cover
    await store.aclose()


async def test_a_commit_in_flight_at_the_deadline_is_reported_as_it_ends(
    tmp_path: Path, meta: SQLiteMetadataStore, autojump_clock: trio.testing.MockClock
) -> None:
    """Fault: the commit takes 10 s against a 5 s delivery timeout. It is not abandoned:
    it lands, and the send reports the offset it got."""
    await meta.create_topic("t", 1)
    store = LocalObjectStore(tmp_path / "objects", fsync=False)
    slow = ScriptedCommits(meta, ("slow", 10.0))
    async with open_producer(
        storage=store,
        metadata=slow,
        linger=0,
        delivery_timeout=5.0,  # type: ignore[arg-type]
    ) as producer:
        md = await producer.send("t", b"late but written")
    assert md.offset == 0
    assert len(slow.started) == 1
    assert [r[3] for r in await read_partition(store, meta, "t", 0)] == [b"late but written"]


async def test_a_batch_past_its_deadline_behind_a_slow_commit_never_lands(
    tmp_path: Path, meta: SQLiteMetadataStore, autojump_clock: trio.testing.MockClock
) -> None:
    """Fault: the first batch's commit hangs for 200 s. The batch sealed after it passes
    its deadline while waiting its turn: it fails, and it never commits, then or later."""
    await meta.create_topic("t", 1)
    store = LocalObjectStore(tmp_path / "objects", fsync=False)
    scripted = ScriptedCommits(meta, "hang", "ok")
    results: dict[bytes, RecordMetadata | DeliveryError] = {}
    async with open_producer(
        storage=store,
        metadata=scripted,
        linger=0,
        delivery_timeout=120,  # type: ignore[arg-type]
    ) as producer:
        await producer.partitions_for("t")

        async def send(value: bytes) -> None:
            try:
                results[value] = await producer.send("t", value)
            except DeliveryError as exc:
                results[value] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, b"first")
            await scripted.entered.wait()  # its commit hangs from now on
            tg.start_soon(send, b"second")
            await trio.sleep(200)
            assert await _hw(meta) == 0
            scripted.release.set()
    first, second = results[b"first"], results[b"second"]
    assert isinstance(first, RecordMetadata)
    assert first.offset == 0
    assert isinstance(second, DeliveryError)
    assert "still waiting to commit" in str(second)
    assert len(scripted.started) == 1  # the second batch never began a commit
    await trio.sleep(3600)
    assert [r[3] for r in await read_partition(store, meta, "t", 0)] == [b"first"]


async def test_commit_retries_stop_at_the_deadline(
    tmp_path: Path, meta: SQLiteMetadataStore, autojump_clock: trio.testing.MockClock
) -> None:
    """Fault: every commit fails as locked. Retries go on until the deadline, none starts
    after it, and the send fails with DeliveryError at the deadline."""
    await meta.create_topic("t", 1)
    store = LocalObjectStore(tmp_path / "objects", fsync=False)
    failing = ScriptedCommits(meta, "fail")
    async with open_producer(
        storage=store, metadata=failing, linger=0, delivery_timeout=30,  # type: ignore[arg-type]
        retry_backoff=0.5, retry_backoff_max=2.0,
    ) as producer:  # fmt: skip
        await producer.partitions_for("t")
        start = trio.current_time()
        with pytest.raises(DeliveryError, match=r"within delivery_timeout=30\.0 s") as caught:
            await producer.send("t", b"x")
        failed_at = trio.current_time() - start
    assert "database is locked" in str(caught.value)
    assert len(failing.started) > 10
    assert max(failing.started) - start < 30
    assert 28 <= failed_at <= 30
    assert await _hw(meta) == 0


async def test_a_lost_answer_on_the_last_attempt_is_resolved_not_guessed(
    store: ObjectStore, meta: SQLiteMetadataStore
) -> None:
    """Fault: every commit lands but its answer is lost, and retries run out. The producer
    asks whether the object was committed and reports the offsets it got, once."""
    await meta.create_topic("t", 1)
    lossy = LostAnswerMetadata(meta, lost=2)
    async with open_producer(
        storage=store, metadata=lossy, linger=0, retries=2, retry_backoff=0.001,  # type: ignore[arg-type]
    ) as producer:  # fmt: skip
        result = await producer.send_batch("t", [b"a", b"b"])
    assert result.offsets == [0, 1]
    assert lossy.commits == 3  # two attempts, then one to read the offsets back
    assert [r[3] for r in await read_partition(store, meta, "t", 0)] == [b"a", b"b"]


async def test_a_commit_that_never_landed_fails_when_retries_run_out(
    store: ObjectStore, meta: SQLiteMetadataStore
) -> None:
    """Fault: every commit fails without landing. The send fails with DeliveryError and the
    records stay invisible."""
    await meta.create_topic("t", 1)
    failing = ScriptedCommits(meta, "fail")
    async with open_producer(
        storage=store, metadata=failing, linger=0, retries=3, retry_backoff=0.001,  # type: ignore[arg-type]
    ) as producer:  # fmt: skip
        with pytest.raises(DeliveryError, match="records not written: scripted"):
            await producer.send("t", b"x")
        assert len(failing.started) == 3
        failing.script = ["ok"]
        assert (await producer.send("t", b"after")).offset == 0
    assert [r[3] for r in await read_partition(store, meta, "t", 0)] == [b"after"]


async def test_a_full_buffer_fails_a_send_after_the_delivery_timeout(
    tmp_path: Path, meta: SQLiteMetadataStore, autojump_clock: trio.testing.MockClock
) -> None:
    """Fault: a commit hangs with buffer_bytes full. A send waiting for room gives up
    delivery_timeout later with DeliveryError, and writes nothing."""
    await meta.create_topic("t", 1)
    store = LocalObjectStore(tmp_path / "objects", fsync=False)
    scripted = ScriptedCommits(meta, "hang", "ok")
    async with open_producer(
        storage=store, metadata=scripted, linger=0, buffer_bytes=10,  # type: ignore[arg-type]
        delivery_timeout=60,
    ) as producer:  # fmt: skip
        await producer.partitions_for("t")
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer.send, "t", b"fills the buffer")
            await scripted.entered.wait()  # its commit hangs from now on
            start = trio.current_time()
            with pytest.raises(DeliveryError, match="buffer_bytes=10 stayed full"):
                await producer.send("t", b"no room")
            assert trio.current_time() - start == 60
            scripted.release.set()
    assert [r[3] for r in await read_partition(store, meta, "t", 0)] == [b"fills the buffer"]


async def test_linger_zero_sends_at_once(
    tmp_path: Path, meta: SQLiteMetadataStore, autojump_clock: trio.testing.MockClock
) -> None:
    """linger=0 flushes at once: the send returns with no time passed."""
    await meta.create_topic("t", 1)
    store = LocalObjectStore(tmp_path / "objects", fsync=False)
    async with open_producer(storage=store, metadata=meta, linger=0) as producer:
        await producer.partitions_for("t")
        start = trio.current_time()
        assert (await producer.send("t", b"now")).offset == 0
        assert trio.current_time() == start


async def test_an_upload_outage_logs_when_it_starts_and_ends(
    store: ObjectStore, meta: SQLiteMetadataStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault: three PUTs fail. The producer logs one WARNING with the cause and one on
    recovery, not one per attempt."""
    await meta.create_topic("t", 1)
    flaky = FlakyStore(store, put_failures=3)
    caplog.set_level(logging.WARNING, logger="streamhouse.producer")
    async with open_producer(storage=flaky, metadata=meta, linger=0, retry_backoff=0.001) as p:
        assert (await p.send("t", b"v")).offset == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "streamhouse.producer"]
    assert len(lines) == 2
    assert "producer uploads to" in lines[0]
    assert "scripted failure of PUT" in lines[0]
    assert "recovered after 3 failed attempts" in lines[1]
