"""Consumer groups: members share partitions, hand them over cleanly, and
zombies cannot commit (on SQLite and PostgreSQL, under trio and asyncio)."""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from streamhouse import (
    CommitFailedError,
    ConsumedRecord,
    Consumer,
    InvalidArgumentError,
    LocalObjectStore,
    MetadataStore,
    MetadataUnavailableError,
    OffsetOutOfRangeError,
    RebalanceListener,
    TopicPartition,
)

from ..helpers import Stores, poll_until, produce

pytestmark = pytest.mark.anyio

SESSION = 5.0
FAST: dict[str, Any] = {
    "heartbeat_interval": 0.05, "session_timeout": SESSION, "offset_reset": "earliest",
}  # fmt: skip
Seen = list[tuple[int, int]]


@pytest.fixture
async def local(tmp_path: Path, meta: MetadataStore) -> AsyncIterator[Stores]:
    """A local object store and the metadata store (SQLite and PostgreSQL)."""
    storage = LocalObjectStore(tmp_path / "objects")
    yield Stores(storage, meta)
    await storage.aclose()


class Recorder(RebalanceListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, frozenset[TopicPartition]]] = []

    async def on_partitions_revoked(self, partitions: frozenset[TopicPartition]) -> None:
        self.events.append(("revoked", partitions))

    async def on_partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        self.events.append(("assigned", partitions))

    async def on_partitions_lost(self, partitions: frozenset[TopicPartition]) -> None:
        self.events.append(("lost", partitions))


class Partitionable:
    """A MetadataStore whose group calls fail while ``cut`` (a network partition),
    and whose heartbeats alone fail while ``mute``."""

    def __init__(self, inner: MetadataStore) -> None:
        self.inner = inner
        self.cut = False
        self.mute = False

    async def heartbeat(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        if self.mute:
            raise MetadataUnavailableError("scripted: heartbeats are lost")
        return await self.inner.heartbeat(*args, **kwargs)

    async def commit_offsets(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return await self.inner.commit_offsets(*args, **kwargs)

    async def leave_group(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return await self.inner.leave_group(*args, **kwargs)

    def _check(self) -> None:
        if self.cut:
            raise MetadataUnavailableError("scripted: the network is partitioned")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def keep_polling(consumer: Consumer, seen: Seen, until: anyio.Event) -> None:
    """Poll, noting every record, until ``until`` is set."""
    while not until.is_set():
        records: list[ConsumedRecord] = await consumer.poll(timeout=0.05)
        seen += [(r.partition, r.offset) for r in records]


async def wait_for(condition: Any, consumers: list[Consumer], seen: Seen | None = None) -> None:
    """Poll every consumer until ``condition()`` holds (within 30 s)."""
    with anyio.fail_after(30):
        while not condition():
            for consumer in consumers:
                records = await consumer.poll(timeout=0.01)
                if seen is not None:
                    seen += [(r.partition, r.offset) for r in records]


def assert_once_in_order(seen_by: list[Seen], total: dict[int, int]) -> None:
    everything = [x for seen in seen_by for x in seen]
    counts = collections.Counter(everything)
    assert [x for x, n in counts.items() if n > 1] == []
    assert sorted(counts) == sorted((p, o) for p, n in total.items() for o in range(n))
    for seen in seen_by:
        for p in total:
            offsets = [o for q, o in seen if q == p]
            assert offsets == sorted(offsets)


async def test_a_lone_member_gets_every_partition_at_open(local: Stores) -> None:
    """Alone in its group, a member owns every partition when open returns."""
    await local.meta.create_topic("t", 3)
    listener = Recorder()
    async with local.consumer("t", group_id="g", rebalance_listener=listener, **FAST) as c:
        assert c.assignment() == {TopicPartition("t", p) for p in range(3)}
        assert listener.events == []
        await c.poll(timeout=0)
        assert listener.events == [("assigned", frozenset(c.assignment()))]


async def test_members_share_and_hand_over_exactly_once(local: Stores) -> None:
    """Joins 1 -> 3 and a clean leave deliver every record once, in order per partition."""
    await local.meta.create_topic("t", 6)
    for p in range(6):
        await produce(local, "t", p, 60)
    seen_by: list[Seen] = [[], [], []]
    listeners = [Recorder(), Recorder(), Recorder()]
    done, started = anyio.Event(), anyio.Event()

    def distinct() -> int:
        return len({x for seen in seen_by for x in seen})

    async def member(i: int, leave_after: int | None) -> None:
        async with local.consumer("t", group_id="g", rebalance_listener=listeners[i],
                                  max_poll_records=7, **FAST) as consumer:  # fmt: skip
            while not done.is_set() and (leave_after is None or len(seen_by[i]) < leave_after):
                records = await consumer.poll(timeout=0.05)
                seen_by[i] += [(r.partition, r.offset) for r in records]
                if distinct() == 360:
                    done.set()
                if len(seen_by[0]) >= 20:
                    started.set()
                await anyio.sleep(0.002 * len(records))  # the application's work

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(member, 0, None)
            await started.wait()
            tg.start_soon(member, 1, None)
            tg.start_soon(member, 2, 30)
    assert_once_in_order(seen_by, dict.fromkeys(range(6), 60))
    assert len(seen_by[2]) >= 30
    assert any(kind == "revoked" for kind, _ in listeners[0].events)
    assert listeners[1].events[0][0] == "assigned"


async def test_a_leaving_member_hands_over_at_once(local: Stores) -> None:
    """Closing leaves the group: the other takes everything within a few heartbeats."""
    await local.meta.create_topic("t", 4)
    async with local.consumer("t", group_id="g", **FAST) as a:
        async with local.consumer("t", group_id="g", **FAST) as b:
            await wait_for(lambda: len(a.assignment()) == len(b.assignment()) == 2, [a, b])
        await wait_for(lambda: len(a.assignment()) == 4, [a])
        members = await local.meta.describe_group_members("g")
        assert [len(m.assignment) for m in members] == [4]


async def test_a_crashed_member_is_fenced_and_its_records_come_again(local: Stores) -> None:
    """A member cut off past its session loses its partitions to another, which
    reads from the last commit (at-least-once); the zombie's commit fails,
    and its next poll reports the partitions lost and joins again."""
    await local.meta.create_topic("t", 1)
    await produce(local, "t", 0, 10)
    tp = TopicPartition("t", 0)
    cut = Partitionable(local.meta)
    listener = Recorder()
    cut_off = Stores(local.storage, cut)
    async with cut_off.consumer("t", group_id="g", rebalance_listener=listener,
                                auto_commit=False, **FAST) as zombie:  # fmt: skip
        got = await zombie.poll(timeout=5, max_records=4)
        assert [r.offset for r in got] == [0, 1, 2, 3]
        await zombie.commit()
        await zombie.poll(timeout=5, max_records=3)  # 4..6, not committed
        cut.cut = True
        local.meta.clock_offset = SESSION + 1  # type: ignore[attr-defined]
        async with local.consumer("t", group_id="g", **FAST) as heir:
            assert heir.assignment() == {tp}
            again = await heir.poll(timeout=5)
            assert again[0].offset == 4  # at-least-once: 4..6 come again
            with pytest.raises((CommitFailedError, MetadataUnavailableError)):
                await zombie.commit()
            cut.cut = False
            with pytest.raises(CommitFailedError, match="not in the group"):
                await zombie.commit({tp: 10})
            await wait_for(lambda: ("lost", frozenset({tp})) in listener.events, [zombie])
            assert (await local.meta.fetch_offsets("g"))[tp].offset == 4
            assert zombie.assignment() == set()


async def test_a_fenced_member_closes_with_a_warning_not_an_error(
    local: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    """A member fenced before it learns of it closes cleanly: its closing
    auto-commit is refused (another member owns the partition now), and the
    refusal is logged as a warning, not raised out of ``async with``, as
    Kafka's and aiokafka's close do. Nothing is lost: the heir's offsets stand."""
    await local.meta.create_topic("t", 1)
    await produce(local, "t", 0, 10)
    tp = TopicPartition("t", 0)
    muted = Partitionable(local.meta)
    caplog.set_level(logging.WARNING, logger="streamhouse.consumer")
    async with Stores(local.storage, muted).consumer("t", group_id="g", **FAST) as zombie:
        assert len(await zombie.poll(timeout=5, max_records=4)) == 4
        muted.mute = True  # its heartbeats stop reaching the store; it does not know
        local.meta.clock_offset = SESSION + 1  # type: ignore[attr-defined]
        async with local.consumer("t", group_id="g", **FAST) as heir:
            assert heir.assignment() == {tp}
            assert (await heir.poll(timeout=5))[0].offset == 0  # nothing was committed
        assert zombie.assignment() == {tp}  # not told yet: it closes believing it owns it
    assert (await local.meta.fetch_offsets("g"))[tp].offset == 10  # the heir's
    (warning,) = [r for r in caplog.records if "closing commit" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "group 'g'" in warning.getMessage()
    assert "not in the group" in warning.getMessage()


async def test_a_static_member_gets_its_partitions_back(local: Stores) -> None:
    """Reopened with its group_instance_id within its session, a member gets the
    same partitions, and the other member keeps its own throughout."""
    await local.meta.create_topic("t", 4)
    other = Recorder()
    async with local.consumer("t", group_id="g", rebalance_listener=other, **FAST) as b:
        async with local.consumer("t", group_id="g", group_instance_id="app-1", **FAST) as a:
            await wait_for(lambda: len(a.assignment()) == len(b.assignment()) == 2, [a, b])
            mine = a.assignment()
        events = len(other.events)
        async with local.consumer("t", group_id="g", group_instance_id="app-1", **FAST) as again:
            assert again.assignment() == mine
            for _ in range(5):
                await b.poll(timeout=0.05)
        assert len(other.events) == events
        assert b.assignment() == {TopicPartition("t", p) for p in range(4)} - mine


async def test_manual_assignment_beside_a_group(local: Stores) -> None:
    """TopicPartitions with a group_id: read and commit without joining the group."""
    await local.meta.create_topic("t", 2)
    await produce(local, "t", 1, 5)
    tp = TopicPartition("t", 1)
    async with local.consumer("t", group_id="g", **FAST) as member:
        async with local.consumer([tp], group_id="g", **FAST) as manual:
            got = await manual.poll(timeout=5)
            assert [r.offset for r in got] == [0, 1, 2, 3, 4]
            await manual.commit()
        assert len(member.assignment()) == 2
        assert len(await local.meta.describe_group_members("g")) == 1


async def test_a_member_that_stops_polling_leaves_by_itself(
    local: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    """Past max_poll_interval a member leaves (WARNING); its next poll rejoins."""
    await local.meta.create_topic("t", 2)
    listener = Recorder()
    idle_consumer = local.consumer(
        "t", group_id="g", max_poll_interval=0.3, rebalance_listener=listener, **FAST
    )
    async with idle_consumer as idle, local.consumer("t", group_id="g", **FAST) as busy:
        with caplog.at_level(logging.WARNING, "streamhouse.consumer"):
            await wait_for(lambda: len(busy.assignment()) == 2, [busy])
        assert "max_poll_interval" in caplog.text
        await wait_for(lambda: any(k == "lost" for k, _ in listener.events), [idle])
        await wait_for(lambda: len(idle.assignment()) == 1, [idle, busy])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_instance_id": ""}, "group_instance_id"),
        ({"session_timeout": 0}, "session_timeout"),
        ({"heartbeat_interval": float("nan")}, "heartbeat_interval"),
        ({"max_poll_interval": float("inf")}, "max_poll_interval"),
        ({"heartbeat_interval": 10.0, "session_timeout": 10.0}, "shorter than session_timeout"),
        ({"rebalance_listener": object()}, "on_partitions_revoked"),
    ],
)
async def test_bad_membership_options_are_refused(
    local: Stores, kwargs: dict[str, Any], message: str
) -> None:
    """Each bad option is an InvalidArgumentError naming it, at open."""
    await local.meta.create_topic("t", 1)
    with pytest.raises(InvalidArgumentError, match=message):
        async with local.consumer("t", group_id="g", **kwargs):
            pass


async def test_membership_options_need_membership(local: Stores) -> None:
    """An instance id or a listener with a manual assignment is refused."""
    await local.meta.create_topic("t", 1)
    with pytest.raises(InvalidArgumentError, match="needs group membership"):
        async with local.consumer([TopicPartition("t", 0)], group_id="g",
                                  group_instance_id="x"):  # fmt: skip
            pass


async def test_a_member_waiting_inside_a_poll_is_polling(
    local: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    """A poll that waits for records longer than max_poll_interval keeps the member in."""
    await local.meta.create_topic("t", 2)
    async with local.consumer("t", group_id="g", max_poll_interval=0.2, **FAST) as consumer:
        with caplog.at_level(logging.WARNING, "streamhouse.consumer"):
            assert await consumer.poll(timeout=0.6) == []
        assert "max_poll_interval" not in caplog.text
        (member,) = await local.meta.describe_group_members("g")
        assert len(member.assignment) == 2
        assert len(consumer.assignment()) == 2


class TakeFails(Partitionable):
    """Partitionable, whose committed offsets cannot be read while ``down``
    (a member's poll fails to start the partitions it was given), and which
    says when its member has made some more heartbeats (``beats``)."""

    def __init__(self, inner: MetadataStore) -> None:
        super().__init__(inner)
        self.down = False
        self.heartbeats = 0
        self._waiting: list[tuple[int, anyio.Event]] = []

    async def fetch_offsets(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise MetadataUnavailableError("scripted: the store is down")
        return await self.inner.fetch_offsets(*args, **kwargs)

    async def heartbeat(self, *args: Any, **kwargs: Any) -> Any:
        answer = await super().heartbeat(*args, **kwargs)
        self.heartbeats += 1
        for count, event in self._waiting:
            if self.heartbeats >= count:
                event.set()
        return answer

    def beats(self, more: int) -> anyio.Event:
        """Set once ``more`` heartbeats have been answered from now."""
        event = anyio.Event()
        self._waiting.append((self.heartbeats + more, event))
        return event


class LeavingMember:
    """A member in a task of its own (so that it may close before the others)."""

    def __init__(self, stores: Stores, **options: Any) -> None:
        self.stores = stores
        self.options = options
        self.leave, self.left = anyio.Event(), anyio.Event()

    async def run(self, *, task_status: Any) -> None:
        async with self.stores.consumer("t", group_id="g", **self.options) as consumer:
            task_status.started(consumer)
            await self.leave.wait()
        self.left.set()


async def until_b_fails(a: Consumer, b: Consumer, error: type[Exception]) -> None:
    """Poll both until b's poll raises ``error`` (it failed to start what a gave up)."""
    with anyio.fail_after(30):
        while True:
            await a.poll(timeout=0.01)  # a gives half up
            try:
                await b.poll(timeout=0.01)
            except error:
                return


async def test_partitions_whose_start_failed_are_read_even_after_a_later_change(
    local: Stores,
) -> None:
    """b is given half of the partitions, and its poll fails to start them
    (the store is down); a leaves, so b's heartbeats give it a's half too,
    before b polls again. b then reads all four partitions: the half it
    failed to start is not dropped by the change that came after it."""
    await local.meta.create_topic("t", 4)
    flaky = TakeFails(local.meta)
    member_a = LeavingMember(local, **FAST)
    async with anyio.create_task_group() as tg:
        a: Consumer = await tg.start(member_a.run)
        await wait_for(lambda: len(a.assignment()) == 4, [a])
        async with Stores(local.storage, flaky).consumer("t", group_id="g", **FAST) as b:  # type: ignore[arg-type]
            flaky.down = True
            await until_b_fails(a, b, MetadataUnavailableError)
            flaky.down = False
            member_a.leave.set()  # a leaves: b's next heartbeats take a's half
            with anyio.fail_after(30):
                await member_a.left.wait()
                await flaky.beats(3).wait()  # (a change computed meanwhile)
            for p in range(4):
                await produce(local, "t", p, 5)
            records = await poll_until(b, 20)
    assert sorted((r.partition, r.offset) for r in records) == [
        (p, o) for p in range(4) for o in range(5)
    ]


async def test_partitions_that_cannot_start_do_not_keep_later_ones_from_starting(
    local: Stores,
) -> None:
    """b (offset_reset="none") is given partitions 2 and 3, which have no
    committed offset: starting them fails, and each poll says so until it can.
    When a leaves, b still starts 0 and 1 (committed); once b commits
    offsets for 2 and 3 (it owns them), its polls deliver again."""
    t = [TopicPartition("t", p) for p in range(4)]
    await local.meta.create_topic("t", 4)
    for p in (0, 1):
        await produce(local, "t", p, 2)
    flaky = TakeFails(local.meta)
    member_a = LeavingMember(local, auto_commit=False, **FAST)
    strict = {**FAST, "offset_reset": "none"}
    async with anyio.create_task_group() as tg:
        a: Consumer = await tg.start(member_a.run)
        await poll_until(a, 4)
        await a.commit({t[0]: 2, t[1]: 2})
        async with Stores(local.storage, flaky).consumer("t", group_id="g", **strict) as b:  # type: ignore[arg-type]
            await until_b_fails(a, b, OffsetOutOfRangeError)  # b cannot start 2 and 3
            member_a.leave.set()
            with anyio.fail_after(30):
                await member_a.left.wait()
                await flaky.beats(3).wait()
            for p in (0, 1):
                await produce(local, "t", p, 1, start=2)
            with pytest.raises(OffsetOutOfRangeError, match=r"t\[2\], t\[3\]"):
                await b.poll(timeout=0.05)  # 0 and 1 started; 2 and 3 not yet
            assert b.assignment() == {t[0], t[1]}
            await b.commit({t[2]: 0, t[3]: 0})
            records = await poll_until(b, 2)
            assert b.assignment() == set(t)
    assert sorted((r.partition, r.offset) for r in records) == [(0, 2), (1, 2)]
