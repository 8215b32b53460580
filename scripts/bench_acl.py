"""ACL under a merge flood (issue 12.3): a reader pushes N junk merges, the owner removes it.

Phases, each timed with its Python allocation peak (tracemalloc) and the process RSS after it:

* ``flood``   — the owner's replica admits N merges by a reader (each joins the same two heads
  with a new timestamp, so each is a new head);
* ``remove``  — the owner removes the reader in one call (automatic merges in groups of 64
  first, then the removal);
* ``ignored`` — 1 000 more back-dated merges by the removed reader (all ignored);
* ``rebuild`` — ``Acl.from_records`` over every stored record (a restart).

Prints a table and writes JSON (``bench-results/acl-<time>.json`` or ``--out``).
Usage: ``python3 scripts/bench_acl.py [--n 10000]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2psync.crypto.keys import AccountKey
from p2psync.replica.acl import Acl, Role
from p2psync.replica.acl_records import Merge, build_record, decode_record

SPACE = "bench.space"


def _account(name: str) -> AccountKey:
    return AccountKey(hashlib.blake2b(name.encode(), digest_size=32).digest())


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _phase(name: str, fn: Callable[[], Any], out: dict[str, dict[str, float]]) -> Any:
    tracemalloc.start()
    t0 = time.perf_counter()
    got = fn()
    dt = time.perf_counter() - t0
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out[name] = {"seconds": round(dt, 3), "peak_alloc_mb": round(peak / 2**20, 1),
                 "rss_mb": round(_rss_mb(), 1)}
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000, help="junk merges in the flood")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    owner, rita = _account("owner"), _account("rita")
    acl = Acl.create(SPACE, owner)
    _raw, code = acl.invite(owner, Role.READER)
    acl.accept(owner, decode_record(acl.request_join(rita, code)).id)
    fork = Acl.from_records(SPACE, acl.export())
    acl.invite(owner, Role.WRITER)
    fork.invite(owner, Role.WRITER)  # concurrent with the one above: two heads
    for raw in fork.export():
        acl.add(raw)
    heads = acl.heads
    junk = [build_record(rita, SPACE, heads, Merge(), timestamp=i) for i in range(args.n)]
    later = [build_record(rita, SPACE, heads, Merge(), timestamp=args.n + i)
             for i in range(1000)]
    results: dict[str, dict[str, float]] = {}
    base = _rss_mb()

    def flood() -> None:
        for raw in junk:
            acl.add(raw)

    _phase("flood", flood, results)
    assert len(acl.heads) == args.n
    _phase("remove", lambda: acl.remove(owner, [rita.public]), results)
    assert len(acl.heads) == 1 and acl.state.role(rita.public) is None
    built = len(acl.take_built())

    def ignored() -> None:
        for raw in later:
            assert acl.add(raw).status == "ignored"

    _phase("ignored", ignored, results)
    stored = acl.export()
    again = _phase("rebuild", lambda: Acl.from_records(SPACE, stored), results)
    assert again.state.fingerprint() == acl.state.fingerprint()

    print(f"ACL merge flood: n={args.n}, records after removal={len(stored)}, "
          f"records the removal built={built}, baseline RSS {base:.0f} MB")
    print(f"{'phase':<10}{'seconds':>10}{'peak alloc MB':>16}{'RSS MB':>10}")
    for name, r in results.items():
        print(f"{name:<10}{r['seconds']:>10.3f}{r['peak_alloc_mb']:>16.1f}{r['rss_mb']:>10.1f}")
    out = args.out or Path("bench-results") / f"acl-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n": args.n, "records": len(stored), "built_by_removal": built,
                               "baseline_rss_mb": round(base, 1), "phases": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
