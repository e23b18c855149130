"""Kill things at random while producers and consumers run; then check that
nothing acknowledged was lost and no commit ran ahead of processing.

    python scripts/chaos.py [--duration 90] [--seed N] [--json]

Producers and consumers run as processes of their own (scripts/chaos_worker.py)
against a private SeaweedFS and one SQLite file. For ``--duration`` seconds,
at random moments, the script

- SIGKILLs a producer or a consumer, and starts a new one in its place;
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
   every offset below o was processed before the commit returned.

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

from streamhouse import S3ObjectStore, SQLiteMetadataStore
from streamhouse._codec import iter_segment
from tests.servers.seaweed import SeaweedFS

WORKER = Path(__file__).with_name("chaos_worker.py")
TOPIC = "chaos"
PARTITIONS = 4
BUCKET = "chaos"


@attrs.define
class Tally:
    """What happened during the run, for the table."""

    rounds: int = 0
    producer_kills: int = 0
    consumer_kills: int = 0
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
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), self.role, "--name", self.name, *self.args],
            stdout=subprocess.DEVNULL,
            stderr=log,
            stdin=subprocess.DEVNULL,
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
        event = rng.choice(["producer", "consumer", "consumer", "storage-kill", "storage-stop"])
        if event in ("producer", "consumer"):
            worker = rng.choice([w for w in workers if w.role == event])
            worker.kill()
            worker.start(directory)
            if event == "producer":
                tally.producer_kills += 1
            else:
                tally.consumer_kills += 1
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

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.duplicated or self.unprocessed or self.commits_past_unprocessed
        )


async def read_log(directory: Path) -> dict[tuple[int, int], str]:
    """Every record of the topic, read straight from the catalogue and the objects."""
    s3 = json.loads((directory / "s3.json").read_text())
    storage = S3ObjectStore(
        bucket=BUCKET,
        prefix="chaos",
        endpoint=s3["endpoint"],
        region="us-east-1",
        access_key=s3["access_key"],
        secret_key=s3["secret_key"],
    )
    meta = SQLiteMetadataStore(directory / "meta.db")
    log: dict[tuple[int, int], str] = {}
    for p in range(PARTITIONS):
        for seg in await meta.list_segments(TOPIC, p, 0, limit=10**7):
            data = await storage.get(seg.object_key, seg.position, seg.position + seg.length)
            for block in iter_segment(data, name=seg.object_key, base=seg.position):
                for offset, _ts, _key, value in block.rows(seg.base_offset):
                    log[(p, offset)] = (value or b"").decode()
    await meta.aclose()
    await storage.aclose()
    return log


def verify(directory: Path, log: dict[tuple[int, int], str]) -> Verdict:
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
    return Verdict(len(acks), len(log), lost, duplicated, unprocessed, len(commits), past)


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
            for i in range(2):
                parts = ",".join(str(p) for p in range(i, PARTITIONS, 2))
                workers.append(Worker("consumer", f"c{i}", [*common, "--partitions", parts]))
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
            verdict = verify(directory, trio.run(read_log, directory))
        finally:
            for w in workers:
                w.kill()
            weed.stop()
    return tally, verdict


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
        ("SeaweedFS SIGKILLed and restarted", tally.storage_kills),
        ("SeaweedFS SIGSTOPped and resumed", tally.storage_pauses),
        ("records acknowledged", verdict.acknowledged),
        ("records in the log", verdict.in_log),
        ("acknowledged records lost", verdict.lost),
        ("records duplicated in the log", verdict.duplicated),
        ("records never processed", verdict.unprocessed),
        ("commits checked", verdict.commits),
        ("commits past an unprocessed record", verdict.commits_past_unprocessed),
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
