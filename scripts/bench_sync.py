"""Benchmark the sync engine between real Nodes over loopback (TCP by default).

(a) head sync of N objects (default 100 000) with 1 difference: round trips and bytes;
(b) single-edit propagation latency between two connected peers: p50/p99 over 1 000 edits;
(c) sustained end-to-end signed changes/s (edits on A until B holds them all);
(d) initial sync of D documents x E edits (default 1 000 x 100) to a fresh device.

Big stores are synthesised directly (signed root/changes, one bulk SQLite transaction) so that
building them does not dominate. Prints a table and writes JSON (``--json``). Each scenario
runs ``--repeat`` times; medians are reported.

    python scripts/bench_sync.py                  # full sizes
    python scripts/bench_sync.py --quick          # small sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.node import Node, NodeConfig
from p2psync.replica.change import build_change
from p2psync.replica.document import ROOT, encode_payload
from p2psync.replica.space import Space
from p2psync.replica.store import Store
from p2psync.sync.engine import EngineConfig

QUIET = 3600.0  # no periodic head sync during a measurement


def config(transport: str) -> NodeConfig:
    return NodeConfig(listen=[("127.0.0.1", 0, transport)],  # type: ignore[list-item]
                      engine=EngineConfig(head_sync_interval=QUIET, request_timeout=120.0),
                      durable=False)


def synthesise(path: Path, owner: AccountKey, device: DeviceKey, members: list[AccountKey],
               docs: int, edits: int) -> tuple[str, list[bytes]]:
    """A store with one space (``members`` joined as writers) holding ``docs`` trees of
    ``edits`` changes each (root + linear chain), signed for real, written in one transaction."""
    store = Store(path, durable=False)
    space = Space.create(store, owner, device.public)
    for m in members:
        raw, code = space.acl.invite(owner, anyone_can_join=True)
        space.commit_acl(raw)
        space.commit_acl(space.acl.join(m, code))
    acl_head, key_id = space.acl.write_position(owner.public)
    key = space.acl.read_key(key_id)
    assert key is not None
    payload = encode_payload([], [b"x" * 40])
    trees, changes, heads = [], [], []
    tree_ids = []
    for i in range(docs):
        root = build_change(owner, key, payload, space_id=space.id, tree_id=None, prev_ids=(),
                            acl_head=acl_head, read_key_id=key_id, timestamp=i)
        tid = root.id
        tree_ids.append(tid)
        trees.append((tid, space.id))
        changes.append((tid, tid, root.raw))
        prev = tid
        for j in range(1, edits):
            ch = build_change(owner, key, payload, space_id=space.id, tree_id=tid,
                              prev_ids=(prev,), acl_head=acl_head, read_key_id=key_id,
                              timestamp=j)
            changes.append((tid, ch.id, ch.raw))
            prev = ch.id
        heads.append((tid, prev))
    with store._tx() as db:  # bulk load for the benchmark only
        db.executemany("INSERT INTO trees VALUES (?, ?)", trees)
        db.executemany("INSERT INTO changes (tree_id, change_id, raw) VALUES (?, ?, ?)",
                       changes)
        db.executemany("INSERT INTO heads VALUES (?, ?)", heads)
    store.close()
    return space.id, tree_ids


async def bench_headsync(tmp: Path, n: int, transport: str) -> dict[str, Any]:
    alice, bob = AccountKey.generate(), AccountKey.generate()
    da, db = DeviceKey.generate(), DeviceKey.generate()
    t0 = time.perf_counter()
    sid, tids = synthesise(tmp / "a.sqlite3", alice, da, [bob], n, 1)
    shutil.copy(tmp / "a.sqlite3", tmp / "b.sqlite3")
    build = time.perf_counter() - t0
    a = await Node(tmp / "a.sqlite3", alice, da, config=config(transport)).start()
    b = await Node(tmp / "b.sqlite3", bob, db, config=config(transport)).start()
    try:
        # the one difference: a new change on one object, made while disconnected
        doc = a.spaces[sid].document(tids[n // 2])
        with doc.edit() as e:
            e.put(ROOT, "k", 1)
        t1 = time.perf_counter()
        engine = await b.connect(a.address(transport))  # type: ignore[arg-type]
        await b.wait_for(lambda: a.space_hash(sid) == b.space_hash(sid)
                         and all(e.idle for e in b.engines), timeout=600)
        took = time.perf_counter() - t1
        st = engine.status().spaces[0]
        hs_out = engine.traffic.get(("out", "HEAD_SYNC_REQUEST"), [0, 0])
        hs_in = engine.traffic.get(("in", "HEAD_SYNC_RESPONSE"), [0, 0])
        return {"objects": n, "round_trips": st.head_sync_rounds,
                "requests": hs_out[0], "bytes_sent": hs_out[1], "bytes_received": hs_in[1],
                "connect_to_converged_s": took, "build_s": build,
                "total_bytes_both_ways": engine.bytes_in + engine.bytes_out}
    finally:
        await a.close()
        await b.close()


async def _pair(tmp: Path, transport: str) -> tuple[Node, Node, Space]:
    a = await Node(tmp / "a.sqlite3", AccountKey.generate(), DeviceKey.generate(),
                   config=config(transport)).start()
    b = await Node(tmp / "b.sqlite3", AccountKey.generate(), DeviceKey.generate(),
                   config=config(transport)).start()
    space = a.create_space()
    await b.join(a.invite(space.id))
    return a, b, space


async def bench_latency(tmp: Path, edits: int, transport: str) -> dict[str, Any]:
    a, b, space = await _pair(tmp, transport)
    try:
        doc = space.new_document()
        bs = b.spaces[space.id]
        await b.wait_for(lambda: bs.has_tree(doc.tree.id), timeout=30)
        lat = []
        for i in range(edits):
            t0 = time.perf_counter()
            with doc.edit() as e:
                e.put(ROOT, "i", i)
            head = doc.tree.heads
            await b.wait_for(lambda h=head: bs.heads(doc.tree.id) == h, timeout=30)
            lat.append(time.perf_counter() - t0)
        lat.sort()
        return {"edits": edits, "p50_ms": lat[len(lat) // 2] * 1000,
                "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000, "max_ms": lat[-1] * 1000}
    finally:
        await a.close()
        await b.close()


async def bench_throughput(tmp: Path, edits: int, transport: str) -> dict[str, Any]:
    a, b, space = await _pair(tmp, transport)
    try:
        docs = [space.new_document() for _ in range(10)]
        sid = space.id
        await b.wait_for(lambda: a.space_hash(sid) == b.space_hash(sid), timeout=30)
        t0 = time.perf_counter()
        for i in range(edits):
            with docs[i % 10].edit() as e:
                e.put(ROOT, "i", i)
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the engines run, as an app's event loop would
        made = time.perf_counter() - t0
        await b.wait_for(lambda: a.space_hash(sid) == b.space_hash(sid), timeout=600)
        took = time.perf_counter() - t0
        return {"changes": edits, "seconds": took, "changes_per_s": edits / took,
                "local_edit_rate_per_s": edits / made}
    finally:
        await a.close()
        await b.close()


async def bench_initial(tmp: Path, docs: int, edits: int, transport: str) -> dict[str, Any]:
    alice = AccountKey.generate()
    da = DeviceKey.generate()
    sid, _ = synthesise(tmp / "a.sqlite3", alice, da, [], docs, edits)
    a = await Node(tmp / "a.sqlite3", alice, da, config=config(transport)).start()
    b = await Node(tmp / "b.sqlite3", AccountKey.generate(), DeviceKey.generate(),
                   config=config(transport)).start()
    try:
        code = a.invite(sid)
        t0 = time.perf_counter()
        await b.join(code)
        await b.wait_for(lambda: sid in b.spaces and a.space_hash(sid) == b.space_hash(sid),
                         timeout=1800)
        took = time.perf_counter() - t0
        assert b.store is not None
        n = b.store.count_changes()
        return {"documents": docs, "edits_per_document": edits, "changes": n,
                "seconds": took, "changes_per_s": n / took}
    finally:
        await a.close()
        await b.close()


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in runs[0]:
        vals = [r[k] for r in runs]
        out[k] = statistics.median(vals) if isinstance(vals[0], (int, float)) else vals[0]
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--latency-edits", type=int, default=1000)
    ap.add_argument("--throughput-edits", type=int, default=5000)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--edits", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--transport", choices=["tcp", "quic"], default="tcp")
    ap.add_argument("--only", default="abcd")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="bench_sync.json")
    args = ap.parse_args()
    if args.quick:
        args.objects, args.latency_edits, args.throughput_edits = 5000, 100, 500
        args.docs, args.edits, args.repeat = 50, 20, 1
    results: dict[str, Any] = {"transport": args.transport, "repeat": args.repeat}
    scen = {
        "a": ("head_sync_1_difference",
              lambda t: bench_headsync(t, args.objects, args.transport)),
        "b": ("edit_latency", lambda t: bench_latency(t, args.latency_edits, args.transport)),
        "c": ("throughput", lambda t: bench_throughput(t, args.throughput_edits,
                                                        args.transport)),
        "d": ("initial_sync", lambda t: bench_initial(t, args.docs, args.edits,
                                                      args.transport)),
    }
    for key in args.only:
        name, fn = scen[key]
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as d:
                runs.append(await fn(Path(d)))
        results[name] = median_of(runs)
        results[name]["runs"] = runs
        print(f"{name}: " + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in results[name].items() if k != "runs"), flush=True)
    print(f"\n| scenario | result (median of {args.repeat}) |")
    print("|---|---|")
    for name, r in results.items():
        if isinstance(r, dict):
            body = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in r.items() if k != "runs")
            print(f"| {name} | {body} |")
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
