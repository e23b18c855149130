"""Kill things at random while producers and consumers run; then check that
nothing acknowledged was lost and no commit ran ahead of processing.

    python scripts/chaos.py [--duration 90] [--seed N] [--members N] [--json]

Producers and consumers run as processes of their own (scripts/chaos_worker.py)
against a private SeaweedFS and one SQLite file. For ``--duration`` seconds,
at random moments, the script

- SIGKILLs a producer or a consumer, and starts a new one in its place
  (with ``--members N``, the consumers are N members of one group: a killed
  member's partitions move to the others when its session runs out, and
  back as the new one joins);
- SIGKILLs a maintainer (``streamhouse maintain``, merging the small
  segments the producers write under the consumers' feet, and deleting the
  old objects two seconds later), and starts a new one;
- SIGKILLs SeaweedFS, and restarts it on the same ports and data;
- SIGSTOPs SeaweedFS for a few seconds (mid-produce and mid-consume), then
  SIGCONTs it.

Then it stops the chaos, lets the consumers catch up with the log, stops
everything and checks, from the workers' journals and the log itself:

1. every acknowledged record is in the log exactly once, at the offset its
   acknowledgement gave (lost = acknowledged but absent or elsewhere);
2. no record is in the log twice (duplicated);
3. every record in the log was processed at least once;
4. no commit ran past an unprocessed record: for each commit of offset o,
   every offset below o was processed before the commit returned;
5. after one last maintenance pass, the object store holds exactly the
   objects the catalogue points at: nothing a killed maintainer (or
   producer) left behind, nothing missing.

It prints a table of the run and exits 1 if a check failed. The figures in
docs/RELIABILITY.md come from it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _repo  # noqa: F401  (puts tests/ on the path)
import attrs
import trio

from streamhouse import Admin, S3ObjectStore, SQLiteMetadataStore
from streamhouse._codec import iter_segment
from tests.servers.seaweed import SeaweedFS

WORKER = Path(__file__).with_name("chaos_worker.py")
STREAMHOUSE = str(Path(sys.executable).with_name("streamhouse"))
TOPIC = "chaos"
PARTITIONS = 4
BUCKET = "chaos"


@attrs.define
class Tally:
    """What happened during the run, for the table."""

    rounds: int = 0
    producer_kills: int = 0
    consumer_kills: int = 0
    maintainer_kills: int = 0
    maintenance_passes: int = 0  # passes the maintainers finished
    segments_merged: int = 0
    storage_kills: int = 0
    storage_pauses: int = 0
    # seconds from SeaweedFS being back to the next acknowledgement
    recoveries: list[float] = attrs.Factory(list)


@attrs.define
class Worker:
    role: str
    name: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self, directory: Path) -> None:
        log = open(directory / f"{self.name}.stderr", "ab")  # noqa: SIM115 - the child owns it
        if self.role == "maintainer":
            # The command itself: a pass every half second; objects go 2 s
            # after their last segment, orphans after a minute; the lease of
            # a killed one runs out in 2 s.
            s3 = json.loads((directory / "s3.json").read_text())
            command = [
                STREAMHOUSE, "--storage", f"s3://{BUCKET}/chaos", "--metadata",
                f"sqlite:///{directory / 'meta.db'}", "maintain", "--interval", "0.5",
                "--grace", "2", "--orphan-grace", "60", "--lease-ttl", "2",
            ]  # fmt: skip
            env = {
                **os.environ, "AWS_ENDPOINT_URL": s3["endpoint"], "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": s3["access_key"], "AWS_SECRET_ACCESS_KEY": s3["secret_key"],
            }  # fmt: skip
        else:
            command = [sys.executable, str(WORKER), self.role, "--name", self.name, *self.args]
            env = None
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, env=env
        )
        log.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def ack_times(directory: Path) -> list[float]:
    """When each acknowledgement so far was written (``time.time()``)."""
    return [
        float(line.split()[1])
        for path in directory.glob("*.acks")
        for line in path.open()
        if line.startswith("ack ")
    ]


def time_to_next_ack(directory: Path, since: float, timeout: float) -> float | None:
    """Seconds from ``since`` (``time.time()``) to the first acknowledgement after it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        later = [t for t in ack_times(directory) if t > since]
        if later:
            return min(later) - since
        time.sleep(0.1)
    return None


def chaos(
    directory: Path, weed: SeaweedFS, workers: list[Worker], duration: float, rng: random.Random
) -> Tally:
    tally = Tally()
    end = time.monotonic() + duration
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.5, 2.5))
        tally.rounds += 1
        events = ["producer", "consumer", "consumer", "storage-kill", "storage-stop"]
        if any(w.role == "maintainer" for w in workers):
            events.append("maintainer")
        event = rng.choice(events)
        if event in ("producer", "consumer", "maintainer"):
            worker = rng.choice([w for w in workers if w.role == event])
            worker.kill()
            worker.start(directory)
            if event == "producer":
                tally.producer_kills += 1
            elif event == "consumer":
                tally.consumer_kills += 1
            else:
                tally.maintainer_kills += 1
        elif event == "storage-kill":
            weed.kill()
            time.sleep(rng.uniform(0.2, 2.0))
            weed.start()
            tally.storage_kills += 1
            recovered = time_to_next_ack(directory, time.time(), timeout=120)
            if recovered is not None:
                tally.recoveries.append(recovered)
        else:
            weed.signal(signal.SIGSTOP)
            time.sleep(rng.uniform(1.0, 4.0))
            weed.signal(signal.SIGCONT)
            tally.storage_pauses += 1
    return tally


@attrs.frozen
class Verdict:
    acknowledged: int
    in_log: int
    lost: int
    duplicated: int
    unprocessed: int
    commits: int
    commits_past_unprocessed: int
    objects_unreferenced: int = 0  # in the store, and nothing points at them
    objects_missing: int = 0  # pointed at, and not in the store

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.unprocessed
            or self.commits_past_unprocessed
            or self.objects_unreferenced
            or self.objects_missing
        )


def chaos_store(directory: Path) -> S3ObjectStore:
    s3 = json.loads((directory / "s3.json").read_text())
    return S3ObjectStore(
        bucket=BUCKET,
        prefix="chaos",
        endpoint=s3["endpoint"],
        region="us-east-1",
        access_key=s3["access_key"],
        secret_key=s3["secret_key"],
    )


async def read_log(directory: Path) -> tuple[dict[tuple[int, int], str], int, int]:
    """Every record of the topic, read straight from the catalogue and the objects,
    after one last maintenance pass (nothing runs but it); and the objects nothing
    points at, and those pointed at and missing."""
    storage = chaos_store(directory)
    meta = SQLiteMetadataStore(directory / "meta.db")
    await Admin(storage, meta).maintain(grace=0, orphan_grace=0)
    log: dict[tuple[int, int], str] = {}
    referenced = set()
    for p in range(PARTITIONS):
        for seg in await meta.list_segments(TOPIC, p, 0, limit=10**7):
            referenced.add(seg.object_key)
            data = await storage.get(seg.object_key, seg.position, seg.position + seg.length)
            for block in iter_segment(data, name=seg.object_key, base=seg.position):
                for offset, _ts, _key, value in block.rows(seg.base_offset):
                    log[(p, offset)] = (value or b"").decode()
    stored = {info.key async for info in storage.list("data/")}
    await meta.aclose()
    await storage.aclose()
    return log, len(stored - referenced), len(referenced - stored)


def verify(directory: Path, read: tuple[dict[tuple[int, int], str], int, int]) -> Verdict:
    log, unreferenced, missing = read
    acks: dict[str, tuple[int, int]] = {}
    for path in directory.glob("*.acks"):
        for line in path.open():
            _, _, value, partition, offset = line.split()
            acks[value] = (int(partition), int(offset))
    where = {value: place for place, value in log.items()}
    lost = sum(1 for value, place in acks.items() if log.get(place) != value)
    duplicated = len(log) - len(where)
    processed: dict[tuple[int, int], float] = {}
    commits: list[tuple[float, int, int]] = []
    for path in directory.glob("*.log"):
        for line in path.open():
            kind, at, *rest = line.split()
            if kind == "proc":
                place = (int(rest[0]), int(rest[1]))
                processed[place] = min(processed.get(place, float(at)), float(at))
            elif kind == "commit":
                commits.append((float(at), int(rest[0]), int(rest[1])))
    unprocessed = sum(1 for place in log if place not in processed)
    # ready[p][i]: when every offset of p up to the i-th (from the log start)
    # had been processed, or inf; a commit of offset o is sound when
    # everything below o was ready by the time it returned.
    ready: dict[int, list[float]] = {}
    starts: dict[int, int] = {}
    for p in range(PARTITIONS):
        offsets = sorted(o for (q, o) in log if q == p)
        times = itertools.accumulate(
            (processed.get((p, o), math.inf) for o in offsets), max, initial=-math.inf
        )
        ready[p] = list(times)  # ready[p][k]: offsets[:k] all processed by then
        starts[p] = offsets[0] if offsets else 0
    past = 0
    for at, p, offset in commits:
        below = offset - starts[p]
        if below > len(ready[p]) - 1 or ready[p][max(0, below)] > at:
            past += 1
    return Verdict(
        len(acks), len(log), lost, duplicated, unprocessed, len(commits), past, unreferenced,
        missing,
    )  # fmt: skip


def drain(directory: Path, workers: list[Worker], timeout: float) -> None:
    """Wait until the consumers have processed everything in the log."""
    high = {}
    meta_path = directory / "meta.db"

    async def highs() -> dict[int, int]:
        meta = SQLiteMetadataStore(meta_path)
        states = await meta.partition_states([TOPIC])
        await meta.aclose()
        return {s.partition: s.high_watermark for s in states}

    high = trio.run(highs)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen: set[tuple[int, int]] = set()
        for path in directory.glob("*.log"):
            for line in path.open():
                if line.startswith("proc "):
                    _, _, p, o, _ = line.split()
                    seen.add((int(p), int(o)))
        if all(all((p, o) in seen for o in range(h)) for p, h in high.items()):
            return
        for w in workers:
            if w.proc is not None and w.proc.poll() is not None:
                w.start(directory)  # a consumer that died of the chaos's end
        time.sleep(0.5)


def run(args: argparse.Namespace) -> tuple[Tally, Verdict]:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="streamhouse-chaos-") as tmp:
        directory = Path(tmp)
        weed = SeaweedFS(directory / "s3")
        server = weed.start()
        workers: list[Worker] = []
        try:
            (directory / "s3.json").write_text(
                json.dumps(
                    {
                        "endpoint": server.endpoint,
                        "access_key": server.access_key,
                        "secret_key": server.secret_key,
                        "bucket": BUCKET,
                    }
                )
            )
            trio.run(setup, directory, server.endpoint, server.access_key, server.secret_key)
            common = ["--dir", str(directory), "--s3", str(directory / "s3.json")]
            workers += [Worker("producer", f"p{i}", common) for i in range(args.producers)]
            if args.members:
                workers += [Worker("consumer", f"c{i}", common) for i in range(args.members)]
            else:
                for i in range(2):
                    parts = ",".join(str(p) for p in range(i, PARTITIONS, 2))
                    workers.append(Worker("consumer", f"c{i}", [*common, "--partitions", parts]))
            workers += [Worker("maintainer", f"m{i}", []) for i in range(args.maintainers)]
            for w in workers:
                w.start(directory)
            time_to_next_ack(directory, 0.0, timeout=60)
            tally = chaos(directory, weed, workers, args.duration, rng)
            for w in workers:
                if w.role == "producer":
                    w.stop()
            drain(directory, [w for w in workers if w.role == "consumer"], timeout=120)
            for w in workers:
                w.stop()
            count_maintenance(directory, tally)
            verdict = verify(directory, trio.run(read_log, directory))
        finally:
            for w in workers:
                w.kill()
            weed.stop()
    return tally, verdict


def count_maintenance(directory: Path, tally: Tally) -> None:
    """The passes the maintainers finished, and what they merged, from what they said."""
    for path in directory.glob("m*.stderr"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("maintenance: ") and "skipped" not in line:
                tally.maintenance_passes += 1
                merged = line.split(" merged")[0].rsplit(" ", 1)[-1]
                tally.segments_merged += int(merged) if merged.isdigit() else 0


async def setup(directory: Path, endpoint: str, access_key: str, secret_key: str) -> None:
    storage = S3ObjectStore(
        bucket=BUCKET,
        prefix="chaos",
        endpoint=endpoint,
        region="us-east-1",
        access_key=access_key,
        secret_key=secret_key,
    )
    await storage.create_bucket()
    meta = SQLiteMetadataStore(directory / "meta.db")
    await meta.create_topic(TOPIC, PARTITIONS)
    await meta.aclose()
    await storage.aclose()


def print_table(tally: Tally, verdict: Verdict, seconds: float) -> None:
    recover = max(tally.recoveries, default=0.0)
    rows = [
        ("chaos rounds", tally.rounds),
        ("producers SIGKILLed", tally.producer_kills),
        ("consumers SIGKILLed", tally.consumer_kills),
        ("maintainers SIGKILLed", tally.maintainer_kills),
        (
            "maintenance passes finished (segments merged)",
            f"{tally.maintenance_passes:,} ({tally.segments_merged:,})",
        ),
        ("SeaweedFS SIGKILLed and restarted", tally.storage_kills),
        ("SeaweedFS SIGSTOPped and resumed", tally.storage_pauses),
        ("records acknowledged", verdict.acknowledged),
        ("records in the log", verdict.in_log),
        ("acknowledged records lost", verdict.lost),
        ("records duplicated in the log", verdict.duplicated),
        ("records never processed", verdict.unprocessed),
        ("commits checked", verdict.commits),
        ("commits past an unprocessed record", verdict.commits_past_unprocessed),
        ("objects nothing points at, after a last pass", verdict.objects_unreferenced),
        ("objects pointed at and missing", verdict.objects_missing),
        ("longest time to the next ack after a restart", f"{recover:.1f} s"),
        ("run time", f"{seconds:.0f} s"),
    ]
    print("| measure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:,} |" if isinstance(value, int) else f"| {name} | {value} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of chaos")
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--maintainers", type=int, default=1, help="`streamhouse maintain`s")
    parser.add_argument(
        "--members",
        type=int,
        default=0,
        help="consumers as N members of one group sharing the partitions (default: two "
        "consumers with half the partitions each, assigned by hand)",
    )
    parser.add_argument("--seed", type=int, default=None, help="the chaos's random seed")
    parser.add_argument("--json", action="store_true", help="end with a line of JSON")
    args = parser.parse_args()
    started = time.monotonic()
    tally, verdict = run(args)
    seconds = time.monotonic() - started
    print_table(tally, verdict, seconds)
    if args.json:
        print(json.dumps({**attrs.asdict(tally), **attrs.asdict(verdict), "ok": verdict.ok}))
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
