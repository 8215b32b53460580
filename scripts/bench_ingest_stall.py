"""Longest event-loop stall while a device takes in one big batch of changes from a peer.

    python3 scripts/bench_ingest_stall.py [--changes 3000] [--repeat 3]

Two devices over the in-memory carrier (real handshake and engines, no sockets). ``b`` writes
``--changes`` edits to one document while unlinked; then ``a`` links and pulls them (one
full-sync batch of up to 1 MiB per round). A monitor task on ``a``'s loop wakes every 1 ms and
records the longest gap between wake-ups. Compared: chunked ingest (``EngineConfig.
ingest_chunk`` = 32, the default) and one chunk per batch (the old behaviour). Prints a table
and writes ``bench_ingest_stall.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from memory_net import SimNode

from p2psync.node import sync_transport_config
from p2psync.replica.document import ROOT
from p2psync.sync.engine import EngineConfig, PeerEngine
from p2psync.transport.memory import memory_pair


async def link(a: SimNode, b: SimNode, cfg: EngineConfig) -> list[Any]:
    assert a.replicas is not None and b.replicas is not None
    ca, cb, _ = await memory_pair(a.device, a.certificate, b.device, b.certificate,
                                  config=sync_transport_config())
    ea, eb = PeerEngine(a.replicas, ca, cfg), PeerEngine(b.replicas, cb, cfg)
    tasks = [asyncio.ensure_future(ea.run()), asyncio.ensure_future(eb.run())]
    await asyncio.gather(ea.ready.wait(), eb.ready.wait())
    return [ea, eb, *tasks]


async def unlink(parts: list[Any]) -> None:
    for e in parts[:2]:
        await e.close("done")
    await asyncio.gather(*parts[2:], return_exceptions=True)


async def one(tmp: Path, changes: int, chunk: int) -> dict[str, float]:
    a, b = SimNode(0, tmp / "a.sqlite3"), SimNode(1, tmp / "b.sqlite3")
    a.start()
    b.start()
    assert a.replicas is not None and b.replicas is not None
    space = a.replicas.create_space()
    raw, code = space.acl.invite(a.account, anyone_can_join=True)
    space.commit_acl(raw)
    cfg = EngineConfig(ingest_chunk=chunk)
    parts = await link(a, b, cfg)
    bs = await parts[1].bootstrap(space.id, code)
    await unlink(parts)
    doc = bs.new_document()
    for i in range(changes):
        with doc.edit() as e:
            e.put(ROOT, "n", i)
    worst = 0.0
    stop = False

    async def monitor() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    mon = asyncio.ensure_future(monitor())
    t0 = time.perf_counter()
    parts = await link(a, b, cfg)
    tid = doc.tree.id
    while not (space.has_tree(tid) and space.heads(tid) == bs.heads(tid)):
        await a.replicas.changed()
    took = time.perf_counter() - t0
    stop = True
    await mon
    await unlink(parts)
    a.stop()
    b.stop()
    return {"seconds": took, "max_stall_ms": worst * 1000}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunks", default="32,1073741824",
                    help="ingest_chunk values to compare (1073741824 = one chunk per batch)")
    args = ap.parse_args()
    rows = []
    for chunk in [int(c) for c in args.chunks.split(",")]:
        name = "one chunk per batch" if chunk >= 1 << 30 else f"chunked ({chunk})"
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as d:
                runs.append(await one(Path(d), args.changes, chunk))
        rows.append({"mode": name, "chunk": chunk, "changes": args.changes,
                     "max_stall_ms_median": statistics.median(x["max_stall_ms"] for x in runs),
                     "max_stall_ms_worst": max(x["max_stall_ms"] for x in runs),
                     "seconds_median": statistics.median(x["seconds"] for x in runs)})
    print(f"{'mode':<22} {'changes':>8} {'max stall ms (median)':>22} {'worst':>8} {'total s':>8}")
    for r in rows:
        print(f"{r['mode']:<22} {r['changes']:>8} {r['max_stall_ms_median']:>22.1f} "
              f"{r['max_stall_ms_worst']:>8.1f} {r['seconds_median']:>8.2f}")
    Path("bench_ingest_stall.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
