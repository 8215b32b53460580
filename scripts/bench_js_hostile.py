"""A listening TypeScript peer under a stranger flood, with and without the stranger restriction.

Starts js/dist/test/fixtures/bench_hostile.js as the target (a holder with an honest member
connected, editing every 100 ms and timing each edit's arrival), then a second node process with
N strangers that complete the space exchange and send 4 MiB-per-connection floods of ~12 KB
requests without reading any answer, reconnecting when closed. Prints a table and writes JSON
(default bench-results/js_hostile.json). Build js/ first: cd js && npm ci && node build.mjs.

    python scripts/bench_js_hostile.py [--connections 20] [--duration 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "js" / "dist" / "test" / "fixtures" / "bench_hostile.js"


def run(restrict: bool, connections: int, duration: float) -> dict[str, object]:
    target = subprocess.Popen(["node", str(SCRIPT), "serve", "on" if restrict else "off"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=ROOT / "js")
    assert target.stdin is not None and target.stdout is not None
    hello = json.loads(target.stdout.readline())
    attack = subprocess.run(["node", str(SCRIPT), "attack", str(hello["port"]), hello["peer"],
                             str(connections), str(duration)], capture_output=True, text=True,
                            cwd=ROOT / "js", timeout=duration + 120, check=True)
    target.stdin.write("stop\n")
    target.stdin.flush()
    row: dict[str, object] = json.loads(target.stdout.readline())
    target.wait(timeout=30)
    row.update(json.loads(attack.stdout.strip().splitlines()[-1]))
    row["attackers"] = connections
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "js_hostile.json"))
    args = ap.parse_args()
    if not SCRIPT.exists():
        sys.exit(f"{SCRIPT} missing: cd js && npm ci && node build.mjs")
    rows = [run(r, args.connections, args.duration) for r in (True, False)]
    print(f"{'restriction':>11} {'attackers':>9} {'dials':>6} {'sent MiB':>8} {'closed':>6} "
          f"{'held MiB max':>12} {'RSS before':>10} {'RSS peak':>8} {'RSS after':>9} "
          f"{'edit ms p50':>11} {'max':>6} {'edits':>5}")
    for r in rows:
        print(f"{'on' if r['restrict'] else 'off':>11} {r['attackers']:>9} {r['connections']:>6} "
              f"{r['sent_mb']:>8} {r['closed']:>6} {r['held_mb_peak']:>12} "
              f"{r['rss_mb_before']:>10} {r['rss_mb_peak']:>8} {r['rss_mb_after']:>9} "
              f"{r['rtt_ms_p50']:>11} {r['rtt_ms_max']:>6} {r['edits']:>5}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "machine": platform.platform(),
        "node": subprocess.run(["node", "--version"], capture_output=True,
                               text=True).stdout.strip(),
        "connections": args.connections, "duration": args.duration, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
