"""Benchmark head sync: 100 000 objects with 1, 10, 100, 1000 differences.

Measures round trips (pipelined windows), requests, bytes each way (encoded messages) and wall
time of the in-memory reconciliation, plus the time to build the 100 000-element set. Prints a
table and writes JSON (default bench-results/headsync.json).

    python scripts/bench_headsync.py [--n 100000] [--repeat 3] [--threshold 32] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2psync.sync.ldiff import (
    DEFAULT_DIVIDE_BITS,
    DEFAULT_THRESHOLD,
    LDiff,
    reconcile,
)


def make_pair(items: list[tuple[bytes, bytes]], diffs: int, rng: random.Random) -> LDiff:
    """The remote side: ``items`` with ``diffs`` differences (1/3 changed heads, 1/3 new
    there, 1/3 missing there)."""
    remote = LDiff(items)
    picks = rng.sample(range(len(items)), diffs)
    for k, i in enumerate(picks):
        oid = items[i][0]
        if k % 3 == 0:
            remote.set(oid, rng.randbytes(32))
        elif k % 3 == 1:
            remote.set(rng.randbytes(32), rng.randbytes(32))
        else:
            remote.remove(oid)
    return remote


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--diffs", type=int, nargs="*", default=[1, 10, 100, 1000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD)
    ap.add_argument("--divide-bits", type=int, default=DEFAULT_DIVIDE_BITS)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="bench-results/headsync.json")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    items = [(rng.randbytes(32), rng.randbytes(32)) for _ in range(args.n)]
    builds = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        local = LDiff(items)
        builds.append(time.perf_counter() - t0)
    build_s = statistics.median(builds)

    rows = []
    for diffs in args.diffs:
        runs = []
        for _ in range(args.repeat):
            remote = make_pair(items, diffs, rng)
            t0 = time.perf_counter()
            result, stats = reconcile(local, remote, threshold=args.threshold,
                                      divide_bits=args.divide_bits)
            elapsed = time.perf_counter() - t0
            found = len(result.remote_only) + len(result.local_only) + len(result.changed)
            if found != diffs:
                raise SystemExit(f"head sync found {found} differences, expected {diffs}")
            runs.append((elapsed, stats))
        times = [r[0] for r in runs]
        mid = sorted(runs, key=lambda r: r[0])[len(runs) // 2][1]
        rows.append({
            "diffs": diffs,
            "round_trips": mid.round_trips,
            "requests": mid.messages,
            "bytes_sent": mid.bytes_sent,
            "bytes_received": mid.bytes_received,
            "time_ms_median": round(statistics.median(times) * 1000, 2),
            "round_trips_max": max(r[1].round_trips for r in runs),
        })

    print(f"head sync, n={args.n}, split 2^{args.divide_bits}, threshold {args.threshold}, "
          f"build {build_s * 1000:.0f} ms (median of {args.repeat})")
    hdr = f"{'diffs':>6} {'rtt':>4} {'reqs':>5} {'sent B':>9} {'recv B':>10} {'ms':>8}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['diffs']:>6} {r['round_trips']:>4} {r['requests']:>5} {r['bytes_sent']:>9} "
              f"{r['bytes_received']:>10} {r['time_ms_median']:>8}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "bench": "headsync", "n": args.n, "divide_bits": args.divide_bits,
        "threshold": args.threshold, "repeat": args.repeat,
        "build_ms_median": round(build_s * 1000, 1), "python": platform.python_version(),
        "machine": platform.machine(), "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
