"""One process of scripts/chaos.py: a producer or a consumer that writes down
what it did, so that the checker can tell, after any number of SIGKILLs, what
was acknowledged, processed and committed.

    python scripts/chaos_worker.py producer --name p0 --dir D --s3 D/s3.json
    python scripts/chaos_worker.py consumer --name c0 --dir D --s3 D/s3.json --partitions 0,2

Every line a worker appends to its journal is written with one ``write()``
and flushed before the worker goes on, so a SIGKILL can lose a line only if
it lands before the write returned, never after: what the journal says
happened, happened. Lines carry ``time.time()``, so that the checker can
order a consumer's commits after the processing they stand for.

- A producer's journal, ``<name>.acks``: ``ack <time> <value> <partition>
  <offset>`` for every record whose ``send_batch`` returned. Values are
  ``<name>-<incarnation>-<seq>``: unique across restarts.
- A consumer's journal, ``<name>.log``: ``proc <time> <partition> <offset>
  <value>`` for every record it processed, and ``commit <time> <partition>
  <offset>`` after every commit that returned.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import TextIO

import trio

from streamhouse import (
    Consumer,
    DeliveryError,
    RetriableError,
    S3ObjectStore,
    SQLiteMetadataStore,
    StreamHouseError,
    TopicPartition,
    open_consumer,
    open_producer,
)

TOPIC = "chaos"


def stores(args: argparse.Namespace) -> tuple[S3ObjectStore, SQLiteMetadataStore]:
    s3 = json.loads(Path(args.s3).read_text())
    storage = S3ObjectStore(
        bucket=s3["bucket"],
        prefix="chaos",
        endpoint=s3["endpoint"],
        region="us-east-1",
        access_key=s3["access_key"],
        secret_key=s3["secret_key"],
    )
    return storage, SQLiteMetadataStore(Path(args.dir) / "meta.db")


def journal(path: Path) -> TextIO:
    return open(path, "a", buffering=1, encoding="ascii")  # line-buffered: a write a line


async def produce(args: argparse.Namespace) -> None:
    storage, meta = stores(args)
    incarnation = f"{os.getpid()}"
    rng = random.Random()
    seq = 0
    with journal(Path(args.dir) / f"{args.name}.acks") as acks:
        async with open_producer(storage=storage, metadata=meta, linger=0.02) as producer:
            while True:
                n = rng.randint(1, 200)
                values = [f"{args.name}-{incarnation}-{seq + i}".encode() for i in range(n)]
                seq += n
                try:
                    result = await producer.send_batch(TOPIC, values)
                except DeliveryError:
                    continue  # not acknowledged: the checker expects nothing of it
                now = time.time()
                lines = [
                    f"ack {now:.6f} {v.decode()} {md.partition} {md.offset}\n"
                    for v, md in zip(values, result, strict=True)
                ]
                acks.write("".join(lines))
                acks.flush()
                await trio.sleep(rng.uniform(0, 0.05))


async def consume(args: argparse.Namespace) -> None:
    storage, meta = stores(args)
    # A group member subscribes to the topic and shares its partitions with
    # the other members (a killed one's move after its 3 s session); else the
    # partitions given, assigned by hand.
    members = args.partitions is None
    subscription: list[str] | list[TopicPartition] = (
        [TOPIC] if members else [TopicPartition(TOPIC, int(p)) for p in args.partitions.split(",")]
    )
    membership = {"session_timeout": 3.0, "heartbeat_interval": 0.3} if members else {}
    rng = random.Random()
    with journal(Path(args.dir) / f"{args.name}.log") as log:
        async with open_consumer(
            subscription,
            group_id="chaos-members" if members else "chaos",
            **membership,  # type: ignore[arg-type]
            storage=storage,
            metadata=meta,
            offset_reset="earliest",
            auto_commit=False,
            stall_timeout=5.0,
        ) as consumer:
            while True:
                try:
                    records = await consumer.poll(timeout=1.0)
                except RetriableError:
                    continue  # an outage spoke; the consumer carries on
                if records:
                    now = time.time()
                    log.write(
                        "".join(
                            f"proc {now:.6f} {r.partition} {r.offset} {r.value.decode()}\n"
                            for r in records
                            if r.value is not None
                        )
                    )
                    log.flush()
                if rng.random() < 0.3:
                    await commit(consumer, log)


async def commit(consumer: Consumer, log: TextIO) -> None:
    """Commit the positions (every record before them is in the journal) and say so."""
    positions = {
        tp: await consumer.position(tp.topic, tp.partition) for tp in consumer.assignment()
    }
    try:
        await consumer.commit(positions)
    except StreamHouseError:
        return  # not committed: nothing to check
    now = time.time()
    log.write("".join(f"commit {now:.6f} {tp.partition} {o}\n" for tp, o in positions.items()))
    log.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("role", choices=["producer", "consumer"])
    parser.add_argument("--name", required=True)
    parser.add_argument("--dir", required=True, help="the chaos run's directory")
    parser.add_argument("--s3", required=True, help="a JSON file: endpoint, bucket, keys")
    parser.add_argument(
        "--partitions",
        help="consumer: the partitions it reads, e.g. 0,2 (omitted: a member of a group)",
    )
    args = parser.parse_args()
    trio.run(produce if args.role == "producer" else consume, args)


if __name__ == "__main__":
    main()
