"""Small segments read together (module coalesce) and lookups answered
together (module lookups): their pure parts, and the lookups actor against a
real store, with a scripted fault."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from streamhouse import MetadataStore, MetadataUnavailableError, TopicPartition
from streamhouse._codec import DecodedBlock
from streamhouse._consumer.coalesce import GROUP_BYTES, group_at, merge_blocks
from streamhouse._consumer.lookups import LookUp, Lookups, _answer, run_lookups
from streamhouse._consumer.messages import Reply, ReplyDropped
from streamhouse._metadata.protocol import SegmentInfo, SegmentSpec

from ..faults import FaultyMetadata, Script

pytestmark = pytest.mark.anyio

TP = TopicPartition("t", 3)


def seg(base: int, count: int, length: int = 1000) -> SegmentInfo:
    return SegmentInfo("t", 3, base, count, f"o{base}", 0, length, 40, 1, 2, base + count, 0.0)


def block(first: int, n: int, *, offsets: list[int] | None = None,
          headers: bool = False) -> DecodedBlock:  # fmt: skip
    return DecodedBlock(
        first,
        [1000 + first + i for i in range(n)],
        [b"k%d" % (first + i) for i in range(n)],
        [b"v%d" % (first + i) for i in range(n)],
        [(("h", b"%d" % (first + i)),) for i in range(n)] if headers else None,
        offsets,
    )


def test_groups_take_whole_segments_from_the_offset_within_the_byte_budget() -> None:
    segments = [seg(0, 10), seg(10, 10), seg(20, 10, GROUP_BYTES), seg(30, 10)]
    assert group_at(segments, 0, 0) == segments[:2]  # the third would pass the budget
    assert group_at(segments, 1, 10) == ()  # one left that fits: read alone
    assert group_at(segments, 0, 5) == ()  # entered in the middle: by its index
    assert group_at(segments, 3, 30) == ()  # the last one: alone


def test_merged_blocks_keep_every_record_at_its_offset() -> None:
    """Consecutive blocks make one batch without an offset column; a gap
    between segments or inside a block gives it one; headers of blocks
    without any become ``()``."""
    plain = merge_blocks(TP, [(0, block(0, 3)), (3, block(0, 2))])
    assert (plain.first_offset, plain.gapped, list(plain.offsets)) == (0, False, [0, 1, 2, 3, 4])
    assert plain.values == [b"v0", b"v1", b"v2", b"v0", b"v1"]
    assert (plain.topic, plain.partition) == ("t", 3)
    gapped = merge_blocks(TP, [(10, block(0, 2)), (20, block(1, 2, offsets=[1, 4]))])
    assert list(gapped.offsets) == [10, 11, 21, 24]
    assert (gapped.first_offset, gapped.next_offset, gapped.gapped) == (10, 25, True)
    mixed = merge_blocks(TP, [(0, block(0, 1)), (1, block(0, 1, headers=True))])
    assert list(mixed.headers) == [(), (("h", b"0"),)]
    assert [r.offset for r in mixed] == [0, 1]


async def test_lookups_together_answer_each_as_list_segments_would(meta: MetadataStore) -> None:
    """Readers asking at once get what list_segments gives each, in one query
    a topic; a transient failure is every asker's, and the next ask works."""
    await meta.create_topic("t", 3)
    for i in range(4):
        await meta.commit_segments(f"o{i}", [SegmentSpec("t", p, 5, 0, 100, 40, 1, 2)
                                             for p in range(3)])  # fmt: skip
    script = Script(only={"list_segments_from"})
    faulty = FaultyMetadata(meta, script)
    starts = {0: 0, 1: 7, 2: 20}
    async with anyio.create_task_group() as tg:
        lookups: Lookups = await tg.start(run_lookups, faulty)
        answers: dict[int, list[SegmentInfo]] = {}

        async def ask(p: int) -> None:
            answers[p] = await lookups.list_segments(TopicPartition("t", p), starts[p], 16)

        async with anyio.create_task_group() as asking:
            for p in starts:
                asking.start_soon(ask, p)
        for p, offset in starts.items():
            assert answers[p] == await meta.list_segments("t", p, offset, 16)
        assert script.calls["list_segments_from"] <= 2  # not one a reader

        script.fail_next = 1
        with pytest.raises(MetadataUnavailableError, match="scripted"):
            await lookups.list_segments(TopicPartition("t", 0), 0, 16)
        found = await lookups.list_segments(TopicPartition("t", 1), 10, 1)
        assert found == await meta.list_segments("t", 1, 10, 1) != []
        tg.cancel_scope.cancel()


async def test_a_store_without_list_segments_from_is_looked_up_partition_by_partition(
    meta: MetadataStore,
) -> None:
    """A MetadataStore written before list_segments_from existed still serves
    a consumer: the lookups actor asks it partition by partition."""
    await meta.create_topic("t", 2)
    for i in range(3):
        await meta.commit_segments(f"o{i}", [SegmentSpec("t", p, 5, 0, 100, 40, 1, 2)
                                             for p in range(2)])  # fmt: skip

    class Older:
        list_segments = meta.list_segments

    async with anyio.create_task_group() as tg:
        lookups: Lookups = await tg.start(run_lookups, Older())
        for p in range(2):
            found = await lookups.list_segments(TopicPartition("t", p), 7, 16)
            assert found == await meta.list_segments("t", p, 7, 16) != []
        tg.cancel_scope.cancel()


async def test_a_lookups_actor_that_stops_tells_every_asker() -> None:
    """Stopped while a query is under way and another ask waits in its
    inbox, the actor drops both replies: no asker is left waiting."""
    querying = anyio.Event()

    class Stuck:
        async def list_segments_from(self, *args: object) -> dict[int, list[SegmentInfo]]:
            querying.set()
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

    dropped: list[int] = []
    actor = anyio.CancelScope()

    async def run_actor(*, task_status: anyio.abc.TaskStatus[Lookups]) -> None:
        with actor:
            await run_lookups(Stuck(), task_status=task_status)  # type: ignore[arg-type]

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            lookups: Lookups = await tg.start(run_actor)

            async def ask(p: int) -> None:
                with pytest.raises(ReplyDropped):
                    await lookups.list_segments(TopicPartition("t", p), 0, 16)
                dropped.append(p)

            tg.start_soon(ask, 0)
            await querying.wait()  # the first ask's query is under way
            tg.start_soon(ask, 1)
            await anyio.wait_all_tasks_blocked()  # the second ask waits in the inbox
            actor.cancel()
    assert sorted(dropped) == [0, 1]


async def test_two_asks_of_one_partition_are_both_answered(meta: MetadataStore) -> None:
    """A partition's old reader and its new one (after a seek) may ask at
    once, from different offsets: each gets its own answer; an asker that
    has gone gets none."""
    await meta.create_topic("t", 1)
    for i in range(3):
        await meta.commit_segments(f"o{i}", [SegmentSpec("t", 0, 5, 0, 100, 40, 1, 2)])
    tp = TopicPartition("t", 0)
    asks = [LookUp(Reply[list[SegmentInfo]](), tp, offset, 16) for offset in (0, 12, 3)]
    gone = asks[2].reply
    gone.abandon()
    await _answer(asks, meta)
    assert [s.base_offset for s in await asks[0].reply.wait()] == [0, 5, 10]
    assert [s.base_offset for s in await asks[1].reply.wait()] == [10]
    assert not gone.wanted
