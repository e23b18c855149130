"""The consumer on virtual time (trio's MockClock): timers, not sleeps."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from streamhouse import open_consumer

from ..faults import FaultyMetadata, Script
from ..helpers import Stores, poll_until, produce

pytestmark = pytest.mark.anyio


async def test_auto_commit_happens_at_its_interval(
    stores: Stores, autojump_clock: trio.testing.MockClock
) -> None:
    """Auto-commit writes the positions of the previous poll once its interval passes."""
    # Real network I/O runs here: let virtual time jump only once everything
    # has been idle for a moment of real time, never in the middle of a GET.
    autojump_clock.autojump_threshold = 0.1
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 5)
    async with stores.consumer("t", group_id="g", offset_reset="earliest",
                           auto_commit_interval=10.0,
                           metadata_refresh_interval=2.0) as consumer:  # fmt: skip
        await poll_until(consumer, 5)
        start = trio.current_time()
        assert await consumer.poll(timeout=1) == []  # comes back for more: 0..4 processed
        assert await consumer.committed("t", 0) is None
        await trio.sleep_until(start + 10.5)
        assert await consumer.committed("t", 0) == 5


async def test_auto_commit_counts_polls_served_from_held_records(
    stores: Stores, autojump_clock: trio.testing.MockClock
) -> None:
    """Polls answered from records the consumer already holds still move auto-commit."""
    autojump_clock.autojump_threshold = 0.1
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 20)
    async with stores.consumer("t", group_id="g", offset_reset="earliest",
                           max_poll_records=5, auto_commit_interval=10.0,
                           metadata_refresh_interval=2.0) as consumer:  # fmt: skip
        assert [r.offset for r in await consumer.poll(timeout=5)] == [0, 1, 2, 3, 4]
        assert [r.offset for r in await consumer.poll(timeout=5)] == [5, 6, 7, 8, 9]
        await trio.sleep(10.5)
        assert await consumer.committed("t", 0) == 5  # 5..9 not yet come back for
        assert [r.offset for r in await consumer.poll(timeout=5)] == [10, 11, 12, 13, 14]
        await trio.sleep(10.5)
        assert await consumer.committed("t", 0) == 10


async def test_an_idle_consumer_queries_no_watermarks_until_something_is_committed(
    stores: Stores, autojump_clock: trio.testing.MockClock
) -> None:
    """Caught up and idle, the consumer asks for no bounds; a commit brings one query."""
    autojump_clock.autojump_threshold = 0.1
    await stores.meta.create_topic("t", 3)
    await produce(stores, "t", 0, 5)
    script = Script()
    meta = FaultyMetadata(stores.meta, script)  # never fails: it counts the calls
    async with open_consumer("t", storage=stores.storage, metadata=meta,
                             offset_reset="earliest",
                             metadata_refresh_interval=1.0) as consumer:  # fmt: skip
        await poll_until(consumer, 5)
        await trio.sleep(5)  # the first look (at once) has been and gone
        before = script.calls["partition_states"]
        await trio.sleep(60)
        assert script.calls["partition_states"] == before
        await produce(stores, "t", 1, 3)
        got = await poll_until(consumer, 3)
        assert [(r.partition, r.offset) for r in got] == [(1, 0), (1, 1), (1, 2)]
        assert script.calls["partition_states"] == before + 1
