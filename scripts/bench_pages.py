"""Cost of a paged file manifest at the format's bound (docs/files.md "bigfile"): paginate
MAX_FILE_CHUNKS synthetic entries, then parse the signed manifest and resolve it (verify,
decrypt and decode every page, check the list hash), and the memory the resolved list takes.

    PYTHONPATH=. python3 scripts/bench_pages.py [--chunks N] [--json bench_pages.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2psync.crypto import AccountKey
from p2psync.replica import files as F


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=F.MAX_FILE_CHUNKS)
    ap.add_argument("--json", type=Path, default=Path("bench_pages.json"))
    args = ap.parse_args()
    key, fid, author = os.urandom(32), os.urandom(32), AccountKey.generate()
    entries = [(os.urandom(32), 65536 + (i % 1000)) for i in range(args.chunks)]
    t = time.perf_counter()
    pages, lhash, blobs = F.paginate(key, fid, entries)
    paginate_s = time.perf_counter() - t
    head = F.PagedManifest("s" * 60, fid, "film.mkv", "video/x-matroska",
                           sum(n for _, n in entries), os.urandom(32), pages, lhash,
                           author.public)
    raw = head.sign(author)
    del entries
    t = time.perf_counter()
    parsed = F.parse_manifest(raw)
    assert isinstance(parsed, F.PagedManifest)
    F.resolve(parsed, key, blobs.get)
    resolve_s = time.perf_counter() - t
    tracemalloc.start()
    resolved = F.resolve(parsed, key, blobs.get)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out = {"chunks": args.chunks, "pages": len(pages), "signed_manifest_bytes": len(raw),
           "largest_page_bytes": max(len(b) for b in blobs.values()),
           "paginate_s": round(paginate_s, 3), "parse_and_resolve_s": round(resolve_s, 3),
           "resolved_list_mib": round(held / 2**20, 1), "resolve_peak_mib": round(peak / 2**20, 1),
           "load": os.getloadavg()[0]}
    assert len(resolved.chunks) == args.chunks
    for k, v in out.items():
        print(f"{k:24} {v}")
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
