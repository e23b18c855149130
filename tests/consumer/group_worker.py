"""A consumer group member in a process of its own, for tests/consumer/test_group_processes.py.

    python -m tests.consumer.group_worker --name a --objects DIR --metadata URL --journal FILE

It joins group ``g`` on topic ``t`` and writes to its journal, one flushed
line each: ``proc <partition> <offset>`` for every record it processed,
``lost|revoked|assigned <partitions>`` for each call of its listener. It runs
until killed (SIGINT closes it: it commits and leaves the group).
"""

from __future__ import annotations

import argparse
import contextlib

import trio

from streamhouse import (
    LocalObjectStore,
    RebalanceListener,
    TopicPartition,
    metadata_store_from_url,
    open_consumer,
)


class Journal(RebalanceListener):
    def __init__(self, path: str) -> None:
        self.file = open(path, "a", buffering=1, encoding="ascii")  # noqa: SIM115

    def note(self, line: str) -> None:
        self.file.write(line + "\n")
        self.file.flush()

    def _event(self, kind: str, partitions: frozenset[TopicPartition]) -> None:
        self.note(f"{kind} {','.join(str(tp.partition) for tp in sorted(partitions))}")

    async def on_partitions_revoked(self, partitions: frozenset[TopicPartition]) -> None:
        self._event("revoked", partitions)

    async def on_partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        self._event("assigned", partitions)

    async def on_partitions_lost(self, partitions: frozenset[TopicPartition]) -> None:
        self._event("lost", partitions)


async def run(args: argparse.Namespace) -> None:
    journal = Journal(args.journal)
    storage = LocalObjectStore(args.objects)
    meta = metadata_store_from_url(args.metadata)
    async with open_consumer(
        "t", group_id="g", storage=storage, metadata=meta, offset_reset="earliest",
        heartbeat_interval=0.1, session_timeout=2.0, auto_commit_interval=0.1,
        rebalance_listener=journal,
    ) as consumer:  # fmt: skip
        while True:
            for r in await consumer.poll(timeout=0.1):
                journal.note(f"proc {r.partition} {r.offset}")


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--name", "--objects", "--metadata", "--journal"):
        parser.add_argument(name, required=True)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
