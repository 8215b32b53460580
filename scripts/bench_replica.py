#!/usr/bin/env python3
"""Benchmark the replica layer: local edits, applying a peer's changes, opening big documents.

Prints a table and writes JSON (``bench-results/replica-<time>.json`` or ``--out``). Each figure
is the median of ``--repeat`` runs. Run it once; it is not a test.

    python scripts/bench_replica.py [--chars 100000] [--repeat 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2psync.crypto.box import ReadKey
from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.replica.acl_gate import OwnerOnlyAcl
from p2psync.replica.document import ROOT, Document, Text, encode_payload
from p2psync.replica.store import Store
from p2psync.replica.tree import ObjectTree

SPACE = "bench.1"
OWNER = AccountKey(b"\x11" * 32)
KEY = ReadKey(b"\x22" * 32)
ACL_ROOT = b"\x33" * 32


def gate() -> OwnerOnlyAcl:
    return OwnerOnlyAcl(OWNER.public, ACL_ROOT, KEY)


def new_doc(store: Store | None, device: bytes, window: float) -> Document:
    tree = ObjectTree.create(SPACE, gate(), OWNER, encode_payload([], []))
    if store is not None:
        store.save_tree(tree)
    return Document(tree, OWNER, device, window=window,
                    persist=store.persister() if store else None)


def bench_local_edits(tmp: Path, n: int, window: float) -> float:
    """Edits/s, 1 key put per edit, each tree change committed to a durable store."""
    with Store(tmp / f"local-{window}-{time.monotonic_ns()}.db") as store:
        doc = new_doc(store, DeviceKey.generate().public, window)
        t0 = time.perf_counter()
        for i in range(n):
            now = time.monotonic()
            with doc.edit(now) as e:
                e.put(ROOT, f"k{i % 100}", i)
            doc.poll(now)
        doc.flush()
        dt = time.perf_counter() - t0
        return n / dt


def bench_apply(tmp: Path, n: int) -> tuple[float, float]:
    """Changes/s a materialised replica receives (verify + decrypt + apply [+ durable store])."""
    writer = new_doc(None, b"W" * 32, window=0)
    for i in range(n):
        with writer.edit() as e:
            e.put(ROOT, f"k{i % 100}", i)
    raws = [c.raw for c in writer.tree.changes() if not c.is_root]
    out = []
    for use_store in (False, True):
        store = Store(tmp / f"apply-{time.monotonic_ns()}.db") if use_store else None
        tree = ObjectTree.from_root(SPACE, gate(), writer.tree.root.raw)
        if store is not None:
            store.save_tree(tree)
        doc = Document(tree, OWNER, b"R" * 32, persist=store.persister() if store else None)
        doc.to_json()
        t0 = time.perf_counter()
        for i in range(0, len(raws), 100):
            doc.receive(raws[i:i + 100])
        dt = time.perf_counter() - t0
        assert doc.tree.heads == writer.tree.heads
        if store is not None:
            store.close()
        out.append(len(raws) / dt)
    return out[0], out[1]


def make_typed_doc(path: Path, chars: int) -> None:
    """A document of ``chars`` characters typed one per tree change, plus a snapshot."""
    with Store(path, durable=False) as store:
        doc = new_doc(None, b"T" * 32, window=0)
        with doc.edit() as e:
            text = e.put(ROOT, "text", Text(""))
        assert text is not None
        for i in range(chars):
            with doc.edit() as e:
                e.splice_text(text, i, 0, "abcdefghij klmnopqrstuvwxyz"[i % 27])
        store.save_tree(doc.tree)
        snap_path = path.with_suffix(".snap.db")
        doc.snapshot()
        with Store(snap_path, durable=False) as s2:
            s2.save_tree(doc.tree)


def child_open(path: str, use_snapshot: bool) -> None:
    """Run in a fresh process: open the store and materialise; print seconds and RSS delta."""
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with Store(path) as store:
        tree = store.load_tree(SPACE, store.list_trees(SPACE)[0], gate())
        t_tree = time.perf_counter() - t0
        doc = Document(tree, OWNER, b"T" * 32, use_snapshots=use_snapshot)
        n = len(doc.get(["text"]))
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(json.dumps({"seconds": dt, "tree_seconds": t_tree, "rss_mb": rss / 1024, "chars": n,
                      "changes": len(tree), "snapshot": doc.loaded_snapshot is not None}))


def bench_open(path: Path, use_snapshot: bool) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child-open", str(path),
                          "--snapshot" if use_snapshot else "--no-snapshot"],
                         check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chars", type=int, default=100_000)
    ap.add_argument("--edits", type=int, default=2000)
    ap.add_argument("--peer-changes", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child-open")
    ap.add_argument("--snapshot", dest="snap", action="store_true")
    ap.add_argument("--no-snapshot", dest="snap", action="store_false")
    args = ap.parse_args()
    if args.child_open:
        child_open(args.child_open, args.snap)
        return
    med = statistics.median
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        no_coal = med(bench_local_edits(tmp, args.edits // 4, 0) for _ in range(args.repeat))
        coal = med(bench_local_edits(tmp, args.edits, 0.05) for _ in range(args.repeat))
        applies = [bench_apply(tmp, args.peer_changes) for _ in range(args.repeat)]
        apply_mem = med(a for a, _ in applies)
        apply_store = med(b for _, b in applies)
        typed = tmp / "typed.db"
        t0 = time.perf_counter()
        make_typed_doc(typed, args.chars)
        gen = time.perf_counter() - t0
        from_changes = [bench_open(typed, False) for _ in range(args.repeat)]
        from_snap = [bench_open(typed.with_suffix(".snap.db"), True) for _ in range(args.repeat)]
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform()},
        "params": vars(args) | {"out": str(args.out)},
        "local_edits_per_s_no_coalescing": no_coal,
        "local_edits_per_s_coalescing_50ms": coal,
        "peer_changes_applied_per_s_in_memory": apply_mem,
        "peer_changes_applied_per_s_with_store": apply_store,
        "typed_doc_generation_s": gen,
        "open_typed_doc_from_changes": {
            "seconds": med(r["seconds"] for r in from_changes),
            "tree_load_seconds": med(r["tree_seconds"] for r in from_changes),
            "rss_mb": med(r["rss_mb"] for r in from_changes),
            "changes": from_changes[0]["changes"], "chars": from_changes[0]["chars"]},
        "open_typed_doc_from_snapshot": {
            "seconds": med(r["seconds"] for r in from_snap),
            "tree_load_seconds": med(r["tree_seconds"] for r in from_snap),
            "rss_mb": med(r["rss_mb"] for r in from_snap),
            "used_snapshot": from_snap[0]["snapshot"], "chars": from_snap[0]["chars"]},
    }
    rows = [
        ("local edits/s, no coalescing (1 signed change + FULL commit each)", f"{no_coal:,.0f}"),
        ("local edits/s, 50 ms coalescing", f"{coal:,.0f}"),
        ("peer changes applied/s (verify+decrypt+apply), in memory", f"{apply_mem:,.0f}"),
        ("peer changes applied/s (verify+decrypt+apply+store)", f"{apply_store:,.0f}"),
        (f"open {args.chars:,}-char doc from {from_changes[0]['changes']:,} changes: s / RSS MB",
         f"{results['open_typed_doc_from_changes']['seconds']:.2f} / "
         f"{results['open_typed_doc_from_changes']['rss_mb']:.0f}"),
        (f"open {args.chars:,}-char doc from snapshot: s / RSS MB",
         f"{results['open_typed_doc_from_snapshot']['seconds']:.2f} / "
         f"{results['open_typed_doc_from_snapshot']['rss_mb']:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure (median of ' + str(args.repeat) + ')':<{width}}  value")
    for name, val in rows:
        print(f"{name:<{width}}  {val}")
    out = args.out or Path("bench-results") / f"replica-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
