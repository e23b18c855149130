"""Request cost per TiB at S3 Standard prices, from the benchmark's figures.

    python scripts/bench.py --json | tail -1 > figures.json    # or bench_scale.py --json
    python scripts/cost.py figures.json                       # the table in docs/COST.md

It reads the request counts per GiB that ``scripts/bench.py --json``
measured (``put_requests_per_gib_written``, ``get_requests_per_gib_read``,
``get_requests_per_gib_read_1000p``, and their ``_origin`` twins: the
origin's layout, one object per partition per flush, counted from the same
run's catalogue) and prices them. Nothing is estimated here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# S3 Standard, US East (N. Virginia), https://aws.amazon.com/s3/pricing/
# (the figures issue 17 quotes, 2026-11-27): PUT, COPY, POST, LIST per
# 1,000 requests; GET, SELECT and all other requests per 1,000.
PUT_PER_1000 = 0.005
GET_PER_1000 = 0.0004
GIB_PER_TIB = 1024

ROWS = [
    ("written, 1,000 partitions (PUTs)", "put_requests_per_gib_written", PUT_PER_1000),
    ("read, 4 partitions (GETs)", "get_requests_per_gib_read", GET_PER_1000),
    ("read, 1,000 partitions (GETs)", "get_requests_per_gib_read_1000p", GET_PER_1000),
]


def dollars_per_tib(requests_per_gib: float, price_per_1000: float) -> float:
    return requests_per_gib * GIB_PER_TIB * price_per_1000 / 1000


def table(figures: dict[str, float]) -> str:
    lines = [
        "| per TiB | requests per GiB | $ per TiB | origin's layout: requests per GiB "
        "| origin's $ per TiB | saved |",
        "|---|---|---|---|---|---|",
    ]
    for what, key, price in ROWS:
        ours, origin = figures[key], figures[key + "_origin"]
        ours_usd, origin_usd = dollars_per_tib(ours, price), dollars_per_tib(origin, price)
        lines.append(
            f"| {what} | {ours:,.0f} | ${ours_usd:,.2f} | {origin:,.0f} | ${origin_usd:,.2f} "
            f"| {origin / ours:,.0f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    text = Path(sys.argv[1]).read_text() if len(sys.argv) > 1 else sys.stdin.read()
    figures = json.loads(text.strip().splitlines()[-1])
    print(table(figures))


if __name__ == "__main__":
    main()
