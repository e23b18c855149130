"""Chaos for maintenance: `streamhouse maintain` processes SIGKILLed at random moments.

    python scripts/chaos_maintain.py [--kills 30] [--s3] [--metadata URL] [--seed N]

While a producer writes small flushes to three topics (one with size
retention, one compacted, one only merged) and remembers every record it
was told is durable, maintainer processes (`streamhouse maintain --interval
0`) are started one after another and each is SIGKILLed (by its pid) after
a random delay: mid-rewrite, mid-delete, mid-transaction, anywhere. Between
kills the catalogue is checked as a reader sees it: every segment's object
exists, and every record read is the one produced at that offset. At the
end the producer stops, one clean pass runs, and:

- each topic agrees with the model: the retained topic is exactly the
  produced records from its log start on; the compacted topic holds the
  newest record of every key; the merged topic holds every record;
- the object store holds exactly the objects the catalogue points at (no
  garbage a killed maintainer left, nothing missing).

Storage is a local directory, or with ``--s3`` a private SeaweedFS; the
metadata is SQLite, or the PostgreSQL URL given (its schema is dropped
afterwards). Exits 1 on any violation.

scripts/chaos.py kills maintainers too, among producers, consumers and
SeaweedFS, on a topic that maintenance only merges (every acknowledged
record must stay); this script is the one for retention and compaction,
whose results only a model of the log can check.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (puts tests/ on the path)
import anyio
import attrs

from streamhouse import Admin, MetadataStore, ObjectStore, open_producer
from streamhouse._config import metadata_store_from_url, object_store_from_url
from tests.helpers import BUCKET, drop_schema, minio_client, read_partition, with_schema
from tests.servers.seaweed import running_seaweedfs

STREAMHOUSE = str(Path(sys.executable).with_name("streamhouse"))
TOPICS = {
    "retained": {"retention_bytes": 40_000},
    "compacted": {"cleanup_policy": "compact", "delete_retention_seconds": 3600},
    "merged": {},
}
KEYS = [b"k%d" % i for i in range(20)]
Model = dict[str, dict[int, tuple[bytes, bytes]]]  # topic -> offset -> (key, value)


class Violation(Exception):
    """What a reader sees disagrees with what was produced."""


async def produce(
    storage: str, metadata: str, model: Model, stop: anyio.Event, rng: random.Random
) -> None:
    """Small flushes to every topic until ``stop``; the model gets what was acknowledged."""
    async with open_producer(storage=storage, metadata=metadata, linger=0.005) as producer:
        n = 0
        while not stop.is_set():
            for topic in TOPICS:
                keys = [rng.choice(KEYS) for _ in range(rng.randint(1, 8))]
                values = [b"%s-%d-%d" % (topic.encode(), n, i) for i in range(len(keys))]
                sent = await producer.send_batch(topic, values, keys=keys)
                model[topic].update(zip(sent.offsets, zip(keys, values, strict=True), strict=True))
                n += 1
            await anyio.sleep(0.01)


async def check_readable(storage: ObjectStore, meta: MetadataStore, model: Model) -> int:
    """Every segment's object exists, and every record read is the produced one."""
    segments = 0
    for topic in TOPICS:
        for seg in await meta.list_segments(topic, 0, 0, limit=1_000_000):
            segments += 1
            await storage.head(seg.object_key)  # ObjectNotFoundError = a lost object
        rows = await read_partition(storage, meta, topic, 0)
        offsets = [row[0] for row in rows]
        if offsets != sorted(set(offsets)):
            raise Violation(f"{topic}: offsets out of order")
        for offset, _, key, value, _ in rows:
            if offset in model[topic] and model[topic][offset] != (key, value):
                raise Violation(
                    f"{topic}@{offset}: read {(key, value)}, produced {model[topic][offset]}"
                )
    return segments


async def check_final(storage: ObjectStore, meta: MetadataStore, model: Model) -> None:
    """After a clean pass: each topic against the model, and the object store against
    the catalogue."""
    referenced = set()
    for topic in TOPICS:
        (state,) = await meta.partition_states([topic])
        rows = await read_partition(storage, meta, topic, 0)
        read = {offset: (key, value) for offset, _, key, value, _ in rows}
        produced = model[topic]
        if state.high_watermark != len(produced):
            raise Violation(
                f"{topic}: high watermark {state.high_watermark}, produced {len(produced)}"
            )
        live = {o: kv for o, kv in produced.items() if o >= state.log_start_offset}
        if topic == "compacted":
            newest = {key: offset for offset, (key, _) in sorted(live.items())}
            missing = set(newest.values()) - set(read)
            if missing:
                raise Violation(
                    f"compacted: the newest records of keys at {sorted(missing)} are gone"
                )
        elif read != live:
            raise Violation(f"{topic}: read {len(read)} records, expected {len(live)}")
        for seg in await meta.list_segments(topic, 0, 0, limit=1_000_000):
            referenced.add(seg.object_key)
    stored = {info.key async for info in storage.list("data/")}
    if stored != referenced:
        raise Violation(
            f"{len(stored - referenced)} objects nothing points at, "
            f"{len(referenced - stored)} pointed at and missing"
        )


async def maintainer(storage: str, metadata: str, delay: float, log: Path) -> int | None:
    """Start `streamhouse maintain`, SIGKILL it after ``delay``; its exit code if it
    ended first (it should not). Its summaries go to ``log``."""
    with log.open("ab") as out:
        process = await anyio.open_process(
            [STREAMHOUSE, "--storage", storage, "--metadata", metadata, "maintain",
             "--interval", "0", "--grace", "1", "--orphan-grace", "60", "--lease-ttl", "0.5"],
            stdout=subprocess.DEVNULL, stderr=out,
        )  # fmt: skip
    async with process:
        with anyio.move_on_after(delay):
            return await process.wait()
        process.send_signal(signal.SIGKILL)  # our own child, by its pid
        await process.wait()
    return None


async def chaos(storage: str, metadata: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    store = object_store_from_url(storage)
    meta = metadata_store_from_url(metadata)
    model: Model = {topic: {} for topic in TOPICS}
    admin = Admin(store, meta)
    for topic, settings in TOPICS.items():
        await admin.create_topic(topic, **settings)
    stop = anyio.Event()
    kills = checks = max_segments = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(produce, storage, metadata, model, stop, rng)
        for _ in range(args.kills):
            # Mostly mid-pass; now and then long enough for passes to end.
            delay = rng.uniform(0.05, 1.5) if rng.random() < 0.75 else rng.uniform(3, 10)
            code = await maintainer(storage, metadata, delay, args.log)
            if code is not None:
                tail = args.log.read_text(errors="replace")[-2000:]
                raise Violation(f"a maintainer exited by itself with {code}:\n{tail}")
            kills += 1
            max_segments = max(max_segments, await check_readable(store, meta, model))
            checks += 1
            await anyio.sleep(0.6)  # its lease runs out (--lease-ttl 0.5)
        stop.set()
    report = await admin.maintain(grace=0, orphan_grace=0)
    await check_final(store, meta, model)
    await meta.aclose()
    await store.aclose()
    return {
        "kills": kills,
        "checks": checks,
        "records": {t: len(m) for t, m in model.items()},
        "most_segments_seen": max_segments,
        "final_pass": attrs.asdict(report),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=30, help="maintainers to start and kill")
    parser.add_argument("--s3", action="store_true", help="a private SeaweedFS, not a directory")
    parser.add_argument("--metadata", help="a PostgreSQL URL (default: a SQLite file)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    print(f"chaos_maintain: seed {args.seed}, {args.kills} kills", flush=True)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        args.log = root / "maintainers.log"
        storage = f"file://{root}/objects"
        if args.s3:
            server = stack.enter_context(running_seaweedfs(root / "seaweed"))
            minio_client(server).make_bucket(BUCKET)
            storage = f"s3://{BUCKET}/chaos"
            os.environ.update({
                "AWS_ENDPOINT_URL": server.endpoint, "AWS_ACCESS_KEY_ID": server.access_key,
                "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_REGION": server.region,
            })  # fmt: skip
        metadata = f"sqlite:///{root}/meta.db"
        if args.metadata:
            schema = f"chaos_{uuid.uuid4().hex[:10]}"
            metadata = with_schema(args.metadata, schema)
            stack.callback(drop_schema, args.metadata, schema)
        try:
            result = anyio.run(chaos, storage, metadata, args, backend="trio")
        except Violation as exc:
            print(f"chaos_maintain: VIOLATION: {exc}", flush=True)
            raise SystemExit(1) from exc
        said = args.log.read_text(errors="replace")
        passes = said.count("maintenance: ")
        failures = [line for line in said.splitlines() if not line.startswith("maintenance: ")]
        if failures:
            print("chaos_maintain: what the maintainers said besides their passes:", flush=True)
            print("\n".join(failures[-10:]), flush=True)
    print(f"chaos_maintain: ok, {passes} passes by the killed maintainers; {result}", flush=True)


if __name__ == "__main__":
    main()
