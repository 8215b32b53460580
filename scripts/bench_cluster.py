#!/usr/bin/env python3
"""The backup cluster at scale: 2 ``p2psync backup run`` processes on one PostgreSQL database,
20 devices pushing concurrently (issue 19, docs/backup-cluster.md).

Runs ``tests/cluster_scenario.py`` (the same code as ``tests/test_backup_cluster_scale.py``,
which runs it small in CI): concurrent pushes → every device converges, every device's
receipt (from whichever process it uses) covers its state and is signed by the one backup
device, the database holds exactly the devices' changes; propagation latency of an edit from
a device on one process to a device on another; SIGKILL of the first process mid-burst → its
devices continue through the second, nothing acknowledged is lost, nothing stored twice.
The backup processes are real ``p2psync backup run`` children; the devices are Nodes in this
process (one core for 20 devices: convergence times include their CPU).

    python scripts/bench_cluster.py                       # own throwaway server, 20 devices
    python scripts/bench_cluster.py --pg-url URL --devices 40 --processes 3

Prints a table and writes JSON (``bench-results/cluster-<time>.json`` or ``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster_scenario import run_scenario, start_cluster  # noqa: E402
from tests.netns import JsonLinesProcess  # noqa: E402
from tests.pg import fresh_schema  # noqa: E402


async def amain(args: argparse.Namespace, tmp: Path, url: str) -> dict[str, Any]:
    started: list[JsonLinesProcess] = []
    try:
        cl = await start_cluster(tmp, fresh_schema(url), args.processes, started)
        return await run_scenario(tmp, cl, devices=args.devices, per_space=args.per_space,
                                  edits=args.edits, samples=args.samples,
                                  say=lambda s: print(s, flush=True))
    finally:
        for p in started:
            await p.aclose()


def table(res: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("backup processes / devices / spaces",
         f"{res['processes']} / {res['devices']} / {res['spaces']}"),
        ("set-up (joins through the backups)", f"{res['setup_s']:.1f} s"),
        ("concurrent burst: edits → new changes", f"{res['burst_edits']} → "
         f"{res['burst_new_changes']}"),
        ("  all devices converged in", f"{res['converge_s']:.2f} s "
         f"({res['converge_changes_per_s']:,.0f} changes/s)"),
        ("  receipts covering each device's state / signers",
         f"{res['receipts']} / {res['receipt_signers']}"),
        ("edit on process 1 → device on process 2 (median / max)",
         f"{res['propagation_ms_median']:.0f} / {res['propagation_ms_max']:.0f} ms"),
        ("RSS per backup process", f"{res['rss_mib']} MiB"),
        ("SIGKILL mid-burst: converged again after",
         f"{res['kill_recovered_s']:.2f} s" if "kill_recovered_s" in res else "-"),
        ("changes in the database (= devices', each once)",
         str(res.get("changes_stored_total", "-"))),
        ("machine load average (1 min) before / after",
         f"{res['load_average_1min'][0]} / {res['load_average_1min'][1]} on {os.cpu_count()} "
         "cores"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg-url", help="a PostgreSQL server (default: a throwaway one, "
                    "scripts/pg_cluster.sh)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--per-space", type=int, default=4, help="devices per space")
    ap.add_argument("--edits", type=int, default=10, help="edits per device per burst")
    ap.add_argument("--samples", type=int, default=10, help="propagation samples")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="p2psync-bench-cluster-"))
    script = ROOT / "scripts" / "pg_cluster.sh"
    own = None
    try:
        url = args.pg_url
        if url is None:
            own = tmp / "pg"
            url = subprocess.run([str(script), "start", str(own), "55433"], check=True,
                                 capture_output=True, text=True).stdout.strip()
        t0 = time.perf_counter()
        load0 = os.getloadavg()[0]
        res = asyncio.run(amain(args, tmp, url))
        res["load_average_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        res["total_s"] = time.perf_counter() - t0
    finally:
        if own is not None:
            subprocess.run([str(script), "stop", str(own)], check=False, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    res["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                      "server": "own (fsync=off)" if own is not None else "given"}
    rows = table(res)
    w = max(len(a) for a, _ in rows)
    print()
    print(f"{'backup cluster (issue 19)':<{w}}  value")
    for a, b in rows:
        print(f"{a:<{w}}  {b}")
    out = args.out or ROOT / "bench-results" / time.strftime("cluster-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out} (total {res['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
