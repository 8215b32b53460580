"""Benchmark the TypeScript peer against a real Python node: initial sync of a Python-held space
(docs x edits) into a fresh TS peer joining by invite, and Python -> TS edit latency (push).

Runs js/dist/test/fixtures/bench_sync.js (build js/ first: cd js && npm ci && node build.mjs)
once per size and transport, prints a table and writes JSON (default
bench-results/js_sync.json).

    python scripts/bench_js_sync.py [--sizes 10x10,100x10,200x20] [--transports tcp,ws] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="10x10,100x10,200x20")
    ap.add_argument("--transports", default="tcp,ws")
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "js_sync.json"))
    args = ap.parse_args()
    script = ROOT / "js" / "dist" / "test" / "fixtures" / "bench_sync.js"
    if not script.exists():
        sys.exit(f"{script} missing: cd js && npm ci && node build.mjs")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rows = []
    for size in args.sizes.split(","):
        docs, edits = size.split("x")
        for transport in args.transports.split(","):
            out = subprocess.run(["node", str(script), docs, edits, transport], capture_output=True,
                                 text=True, env=env, cwd=ROOT / "js", timeout=1800, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'transport':>9} {'docs':>5} {'edits':>5} {'changes':>8} {'initial s':>9} "
          f"{'changes/s':>9} {'edit ms p50':>11} {'p90':>6}")
    for r in rows:
        print(f"{r['transport']:>9} {r['docs']:>5} {r['edits']:>5} {r['changes']:>8} "
              f"{r['initial_sync_s']:>9.2f} {r['changes'] / r['initial_sync_s']:>9.0f} "
              f"{r['edit_latency_ms_median']:>11.1f} {r['edit_latency_ms_p90']:>6.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": platform.platform(), "node": subprocess.run(
        ["node", "--version"], capture_output=True, text=True).stdout.strip(), "rows": rows},
        indent=1))


if __name__ == "__main__":
    main()
