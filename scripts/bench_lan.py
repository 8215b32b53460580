"""Benchmark on the namespace LAN (root + iproute2): agent start → first converged sync, and
edit → appearance latency on another device (p50/p99). Prints a table, writes JSON.

    sudo python3 scripts/bench_lan.py [--rounds 3] [--edits 100] [--out bench_lan.json]

Each round builds a fresh LAN of two namespaces; device A (owner) has a space with a document
and an invite for B (made by A's agent, so it carries A's LAN address hints). Both agents are
started at the same moment; B joins by the code and waits until its agent reports the space in
sync with A (``space.wait_synced``): that is the *start-to-sync* time (process start + store
open + connect + handshake + space exchange + bootstrap + head/tree sync). Then B subscribes to the
document and A makes ``--edits`` edits one at a time; the latency is from A's API call to B's
change event (both clocks are this machine's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2psync.api import ApiClient  # noqa: E402
from tests.netns import NetnsLan, cleanup_stale, skip_reason  # noqa: E402

CONFIG = ("port = 4433\nmdns = true\nmdns_poll = 0.5\nreconnect_cap = 2.0\n"
          "log_level = \"warning\"\n")


def cli(home: Path, *args: str) -> Any:
    env = dict(os.environ, P2PSYNC_PASSPHRASE="")
    out = subprocess.run([sys.executable, "-m", "p2psync", "--json", *args, "--home",
                          str(home)], capture_output=True, text=True, env=env, check=True,
                         timeout=60, cwd=ROOT)
    return json.loads(out.stdout) if out.stdout.strip() else None


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def one_round(edits: int, tmp: Path) -> dict[str, Any]:
    a, b = tmp / "a", tmp / "b"
    for h in (a, b):
        cli(h, "init")
        (h / "config.toml").write_text(CONFIG)
    space = cli(a, "space", "create", "bench")["space_id"]
    doc = cli(a, "doc", "new", space)["doc"]
    cli(a, "doc", "set", space, doc, "n", "0")
    lan = NetnsLan(2).up()
    try:
        pa = await lan.spawn_python(lan.nodes[0], ["-m", "p2psync", "--json", "run", "--home",
                                                   str(a)], env={"P2PSYNC_PASSPHRASE": ""})
        await pa.expect(lambda ln: ln.get("event") == "ready", 20)
        code = await asyncio.to_thread(lambda: ApiClient(a).call(
            "space.invite", space=space, no_approval=True)["invite"])
        await pa.stop()
        # both agents start together; B joins then waits until in sync: first converged sync
        t0 = time.monotonic()
        pa = await lan.spawn_python(lan.nodes[0], ["-m", "p2psync", "--json", "run", "--home",
                                                   str(a)], env={"P2PSYNC_PASSPHRASE": ""})
        pb = await lan.spawn_python(lan.nodes[1], ["-m", "p2psync", "--json", "run", "--home",
                                                   str(b)], env={"P2PSYNC_PASSPHRASE": ""})
        await pa.expect(lambda ln: ln.get("event") == "ready", 20)
        await pb.expect(lambda ln: ln.get("event") == "ready", 20)
        t_ready = time.monotonic() - t0

        def join_and_sync() -> None:
            with ApiClient(b, timeout=60) as c:
                c.call("space.join", code=code, timeout=30.0)
                c.call("space.wait_synced", space=space, timeout=30.0)
        await asyncio.to_thread(join_and_sync)
        t_sync = time.monotonic() - t0

        def latencies() -> list[float]:
            out = []
            with ApiClient(b, timeout=30) as sub, ApiClient(a, timeout=30) as ed:
                sub.call("subscribe", space=space, doc=doc)
                for i in range(1, edits + 1):
                    t = time.monotonic()
                    ed.call("doc.set", space=space, doc=doc, path="n", value=i)
                    while sub.read().get("event") != "change":
                        pass
                    out.append((time.monotonic() - t) * 1000)
            return out
        lat = await asyncio.to_thread(latencies)
        await pa.stop()
        await pb.stop()
        return {"ready_s": t_ready, "start_to_sync_s": t_sync, "latency_ms": lat}
    finally:
        await lan.aclose()


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--edits", type=int, default=100)
    p.add_argument("--out", default="bench_lan.json")
    args = p.parse_args()
    reason = skip_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    cleanup_stale()
    rounds = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="p2psync-bench-") as tmp:
            res = await one_round(args.edits, Path(tmp))
        rounds.append(res)
        print(f"round {r + 1}: start→sync {res['start_to_sync_s']:.2f} s, edit p50 "
              f"{statistics.median(res['latency_ms']):.1f} ms", flush=True)
    lat = [x for r in rounds for x in r["latency_ms"]]
    summary = {
        "agent_ready_s_median": statistics.median(r["ready_s"] for r in rounds),
        "start_to_first_sync_s_median": statistics.median(r["start_to_sync_s"] for r in rounds),
        "edit_latency_ms_p50": pct(lat, 0.5), "edit_latency_ms_p99": pct(lat, 0.99),
        "edits": len(lat), "rounds": args.rounds,
    }
    print("\n| measure | value |\n|---|---|")
    for k, v in summary.items():
        print(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |")
    Path(args.out).write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
