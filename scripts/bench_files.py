"""Encrypted files, local figures (docs/files.md): add (chunk + encrypt + store) and get
(fetch + verify + decrypt + write) in MB/s on a SQLite store, and the fraction of ciphertext
that is new after a small edit (what sync would re-send).

    python3 scripts/bench_files.py [--mib 64] [--json out.json]

Network transfer figures (agent -> agent over TCP/QUIC) need the chunk streams, not done yet.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.replica import filespace as FS
from p2psync.replica.space import Space
from p2psync.replica.store import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--json", default="bench_files.json")
    args = ap.parse_args()
    size = args.mib << 20
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        store = Store(tmp / "s.sqlite3", durable=False)
        sp = Space.create(store, AccountKey.generate(), DeviceKey.generate().public, window=0)
        src = tmp / "big.bin"
        src.write_bytes(random.Random(1).randbytes(size))
        t = time.perf_counter()
        added = FS.add_file(sp, src)
        t_add = time.perf_counter() - t
        fid = added.manifest.file_id
        t = time.perf_counter()
        FS.get_file(sp, fid, tmp / "out.bin")
        t_get = time.perf_counter() - t
        assert (tmp / "out.bin").read_bytes() == src.read_bytes()
        rows = []
        for label, frac in (("1 byte", 0.0), ("1 % spread in 10 spots", 0.01)):
            data = bytearray(src.read_bytes())
            spots = 1 if frac == 0 else 10
            span = max(1, int(size * frac / spots))
            rng = random.Random(2)
            for _ in range(spots):
                at = rng.randrange(0, size - span)
                data[at:at + span] = rng.randbytes(span)
            src.write_bytes(bytes(data))
            again = FS.add_file(sp, src, file_id=fid)
            ct_total = sum(n + 40 for _, n in again.manifest.chunks)
            rows.append({"edit": label, "new_chunks": again.new_chunks,
                         "chunks": again.chunks, "new_bytes": again.new_bytes,
                         "resend_fraction": round(again.new_bytes / ct_total, 4)})
        store.close()
    res = {"mib": args.mib, "chunks": added.chunks,
           "add_MBps": round(size / t_add / 1e6, 1), "get_MBps": round(size / t_get / 1e6, 1),
           "edits": rows}
    print(f"{args.mib} MiB file, {added.chunks} chunks")
    print(f"add (chunk+encrypt+store) {res['add_MBps']:>8} MB/s")
    print(f"get (verify+decrypt+write) {res['get_MBps']:>7} MB/s")
    print(f"{'edit':28} {'new chunks':>12} {'new bytes':>12} {'re-send':>8}")
    for r in rows:
        print(f"{r['edit']:28} {r['new_chunks']:>5}/{r['chunks']:<6} {r['new_bytes']:>12} "
              f"{r['resend_fraction']:>8.2%}")
    Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
