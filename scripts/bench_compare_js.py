"""The ``p2psync-js`` system of ``bench_compare.py``: the TypeScript peer (Node, WebSocket) against
a real Python node (issue 16).

It reuses ``scripts/bench_js_sync.py``'s machinery: one run of
``js/dist/test/fixtures/bench_sync.js`` (a Python node from ``js/test/fixtures/py_node.py``
holding a space; the TS peer connects over WebSocket and joins by invite), which measures

- workload 1, edit latency both ways: Python → JS (the Python node puts a key; timed in the TS
  process from sending that command until its replica holds the change) and JS → Python (a
  ``Repo`` with the WebSocket driver, window 0, changes a document; timed until the Python node's
  ``wait_key`` answers). Both include one stdin round trip to the Python node (well under 1 ms);
  the first ``--latency-docs`` edits of each direction are a warm-up and not recorded, as
  workload 1 warms up with one edit per document (here every edit goes to one document: p2psync
  has no per-document throttle to stay clear of);
- workload 3, initial sync of ``--docs`` × ``--doc-edits`` into a fresh TS peer: connect, join by
  invite, until it holds every tree (verified and stored, as p2psync's workload 3), and the
  fresh peer's RSS then (workload 4).

Workloads 2, 5, 6 and the "open every document" rows are not measured for this system (the
table shows "n/a"). Sizes come from ``bench_compare.py``'s flags.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

SYSTEM = "p2psync-js"
ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "js"
SCRIPT = JS / "dist" / "test" / "fixtures" / "bench_sync.js"

# table rows only this system fills (spliced into bench_compare.ROWS)
ROWS = [
    ("js2py_p50_ms",
     "1'. edit latency JS → Python p50 (p2psync-js only; its row 1 is Python → JS)", "ms",
     "lower"),
    ("js2py_p99_ms", "1'. edit latency JS → Python p99", "ms", "lower"),
]


def build() -> None:
    """Build js/dist from the committed lockfile if it is missing (no dependency changes)."""
    if SCRIPT.exists():
        return
    quiet = ["--no-audit", "--no-fund", "--loglevel=error"]
    if not (JS / "node_modules").exists():
        subprocess.run(["npm", "ci", *quiet], cwd=JS, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["npm", "run", "build"], cwd=JS, check=True, stdout=subprocess.DEVNULL)


async def workloads(args: argparse.Namespace) -> dict[str, Any]:
    """Run the fixture once with the sizes of the selected workloads (1 and/or 3)."""
    build()
    want = set(args.workload_set)
    warm = args.latency_docs
    n_lat = args.latency_edits + warm if 1 in want else 0
    docs, edits = (args.docs, args.doc_edits) if want & {3, 4} else (0, 0)
    argv = ["node", str(SCRIPT), str(docs), str(edits), "ws", str(n_lat)]
    if n_lat:
        argv.append("js2py")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(*argv, cwd=JS, env=env,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 1800)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_sync.js exited {proc.returncode}: {err.decode()[-1500:]}")
    r = json.loads(out.decode().strip().splitlines()[-1])
    res: dict[str, Any] = {"js_fixture": r}
    if n_lat:
        res["latency_us"] = [round(ms * 1000) for ms in r["py_to_js_ms"][warm:]]
        res["latency_js_to_py_us"] = [round(ms * 1000) for ms in r["js_to_py_ms"][warm:]]
    if want & {3, 4}:
        res.update(js_sync_seconds=r["initial_sync_s"], js_rss_fresh_kb=r["rss_kb"],
                   docs=r["trees"] - 1, changes=r["changes"])
    return res


def with_js_summary(summarise: Callable[[dict[str, Any]], dict[str, float]],
                    pct: Callable[[list[int], float], float]
                    ) -> Callable[[dict[str, Any]], dict[str, float]]:
    """``bench_compare.summarise`` plus this system's keys (it has no materialise figures);
    ``pct`` is bench_compare's percentile, passed in so both columns use one definition."""

    def summary(res: dict[str, Any]) -> dict[str, float]:
        out = summarise(res)
        if "latency_js_to_py_us" in res:
            lat = res["latency_js_to_py_us"]
            out.update(js2py_p50_ms=pct(lat, 50), js2py_p99_ms=pct(lat, 99))
        if "js_sync_seconds" in res:
            out.update(sync_s=res["js_sync_seconds"], rss_mb=res["js_rss_fresh_kb"] / 1024)
        return out

    return summary
