"""The lag exporter: scraped over real HTTP after real produce and commit."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamhouse import InvalidArgumentError, TopicPartition
from streamhouse._exporter import render_exposition, serve_exporter
from streamhouse._metadata.protocol import GroupOffset, MonitoringSnapshot, PartitionSummary

from ..helpers import Stores

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_scrape_serves_lag_offsets_and_ages(stores: Stores) -> None:
    """After produce and commit, /metrics holds each group's lag, offsets and lag age."""
    await stores.meta.create_topic("t", 2)
    hour_ago = time.time_ns() // 1_000_000 - 3_600_000
    async with stores.producer(linger=0) as producer:
        await producer.send_batch("t", [b"x" * 10] * 10, partition=0, timestamps=hour_ago)
        await producer.send_batch("t", [b"y" * 10] * 4, partition=1)
    async with stores.consumer(
        "t", group_id="g", offset_reset="earliest", auto_commit=False
    ) as consumer:
        await consumer.commit({TopicPartition("t", 0): 6, TopicPartition("t", 1): 4})
    await stores.meta.commit_offsets("other", {TopicPartition("t", 0): 1})
    stored = {p: sum(s.length for s in await stores.meta.list_segments("t", p, 0)) for p in (0, 1)}
    async with anyio.create_task_group() as tg:
        port = await tg.start(lambda task_status: serve_exporter(
            stores.meta, port=0, interval=60, groups=["g"], task_status=task_status
        ))  # fmt: skip
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{port}/metrics")
            missing = await http.get(f"http://127.0.0.1:{port}/nothing")
        tg.cancel_scope.cancel()
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert missing.status_code == 404
    got = samples(answer.text)

    def at(name: str, **labels: str) -> float | None:
        return got.get((name, tuple(sorted(labels.items()))))

    g0 = {"consumergroup": "g", "topic": "t", "partition": "0"}
    g1 = {"consumergroup": "g", "topic": "t", "partition": "1"}
    assert at("streamhouse_consumergroup_current_offset", **g0) == 6
    assert at("streamhouse_consumergroup_lag", **g0) == 4
    assert at("streamhouse_consumergroup_lag", **g1) == 0
    assert at("streamhouse_consumergroup_lag_sum", consumergroup="g", topic="t") == 4
    age = at("streamhouse_consumergroup_lag_seconds", **g0)
    assert age is not None
    assert 3599 < age < 3700
    assert at("streamhouse_consumergroup_lag_seconds", **g1) == 0
    other = {"consumergroup": "other", "topic": "t", "partition": "0"}
    assert at("streamhouse_consumergroup_lag", **other) is None
    for p, high in ((0, 10), (1, 4)):
        part = {"topic": "t", "partition": str(p)}
        assert at("streamhouse_topic_partition_current_offset", **part) == high
        assert at("streamhouse_topic_partition_oldest_offset", **part) == 0
        assert at("streamhouse_topic_partition_bytes", **part) == stored[p]
    assert not any(name == "streamhouse_consumergroup_members" for name, _ in got)


async def test_bad_exporter_arguments_are_refused(stores: Stores) -> None:
    """A non-positive interval or a port out of range is refused, naming it."""
    with pytest.raises(InvalidArgumentError, match="interval"):
        await serve_exporter(stores.meta, interval=0)
    with pytest.raises(InvalidArgumentError, match="port"):
        await serve_exporter(stores.meta, port=70000)


def test_group_ids_are_quoted_and_members_shown_when_known() -> None:
    """A group id with a quote or backslash is escaped; members appear once known."""
    snapshot = MonitoringSnapshot(
        [PartitionSummary("t", 0, 0, 5, 100)],
        [GroupOffset('a"b\\c', "t", 0, 5, None)],
        {'a"b\\c': 2},
    )
    got = samples(render_exposition(snapshot, 0.0).decode())
    group = (("consumergroup", 'a"b\\c'),)
    assert got[("streamhouse_consumergroup_members", group)] == 2
    assert got[("streamhouse_consumergroup_lag_sum", (*group, ("topic", "t")))] == 0
