"""Measure mDNS discovery on a namespace LAN: first sighting, goodbye, rediscovery after a flap.

Run as root (needs ``ip netns``): ``python scripts/probe_mdns.py --rounds 5 --json out.json``.
Prints a table of medians and maxima; times are seen from the test driver, in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.netns import NetnsLan, cleanup_stale, skip_reason


def is_seen(peer: str, ip: str | None = None):  # type: ignore[no-untyped-def]
    return lambda ln: (ln["event"] == "seen" and ln["peer_id"] == peer
                       and (ip is None or ip in ln["addresses"]))


async def one_round(poll: float) -> dict[str, float]:
    with NetnsLan(2) as lan:
        t0 = time.monotonic()
        a = await lan.spawn_python(lan.nodes[0], ["-m", "p2psync.discovery", "--poll", str(poll)])
        b = await lan.spawn_python(lan.nodes[1], ["-m", "p2psync.discovery", "--poll", str(poll)])
        ida = (await a.expect(lambda ln: ln["event"] == "ready", 15))["peer_id"]
        idb = (await b.expect(lambda ln: ln["event"] == "ready", 15))["peer_id"]
        await a.expect(is_seen(idb), 10)
        await b.expect(is_seen(ida), 10)
        discover = time.monotonic() - t0

        ma, mb = a.mark(), b.mark()
        lan.link_down(lan.nodes[1])
        await b.expect(lambda ln: ln["event"] == "network" and not ln["addresses"], 10, since=mb)
        new_ip = f"10.77.{lan.lan}.50"
        lan.set_ipv4(lan.nodes[1], new_ip)
        t1 = time.monotonic()
        lan.link_up(lan.nodes[1])
        await b.expect(is_seen(ida), 15, since=mb)
        flap_b = time.monotonic() - t1
        await a.expect(is_seen(idb, new_ip), 15, since=ma)
        flap_a = time.monotonic() - t1

        ma = a.mark()
        t2 = time.monotonic()
        await b.stop()
        await a.expect(lambda ln: ln["event"] == "gone" and ln["peer_id"] == idb, 10, since=ma)
        goodbye = time.monotonic() - t2
        await lan.aclose()
    return {"start_to_mutual_sighting": discover, "flap_rediscover_by_flapped": flap_b,
            "flap_new_address_at_peer": flap_a, "sigterm_to_goodbye_seen": goodbye}


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--poll", type=float, default=0.3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if reason := skip_reason():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    cleanup_stale()
    rounds = [await one_round(args.poll) for _ in range(args.rounds)]
    print(f"{'measure (s)':32} {'median':>8} {'max':>8}   (rounds={args.rounds}, poll={args.poll})")
    summary = {}
    for key in rounds[0]:
        vals = [r[key] for r in rounds]
        summary[key] = {"median": statistics.median(vals), "max": max(vals)}
        print(f"{key:32} {summary[key]['median']:8.3f} {summary[key]['max']:8.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
