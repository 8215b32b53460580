"""What the in-sync check costs: two nodes on TCP loopback, ``--edits`` edits back to back.

Each edit is awaited until the peer holds it (edit -> converged), then the next one starts;
after the last, until both engines are idle. Reports messages per edit (both ways, counted on
the pushing node's engine), milliseconds per edit, and whether each side shows the other in
sync at the end (docs/engine.md, "In sync at once"). Prints a table and writes JSON
(``--json``). ``PYTHONPATH=<checkout> python3 scripts/bench_insync.py``; run it with two
checkouts to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from p2psync.replica.document import ROOT
from tests.sync_helpers import close_all, converged, fast_config, make_node, wait_any


async def run(edits: int) -> dict[str, float | list[int]]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        a = await make_node(tmp, "a", config=fast_config(head_sync_interval=3600.0))
        b = await make_node(tmp, "b", config=fast_config(head_sync_interval=3600.0))
        try:
            space = a.create_space()
            await b.join(a.invite(space.id))

            def idle() -> bool:
                return converged([a, b], space.id) and all(
                    e.idle for e in (*a.engines, *b.engines))

            await wait_any([a, b], idle)

            def messages() -> int:
                return sum(e.messages_in + e.messages_out for e in a.engines)

            m0, t0 = messages(), time.perf_counter()
            doc = space.new_document()
            for i in range(edits):
                with doc.edit() as e:
                    e.put(ROOT, "k", i)
                await wait_any([a, b], lambda: converged([a, b], space.id))
            ms = (time.perf_counter() - t0) / edits * 1000
            await wait_any([a, b], idle)
            in_sync = [n.status().spaces[0].peers_in_sync for n in (a, b)]
            return {"edits": edits, "messages_per_edit": round((messages() - m0) / edits, 3),
                    "ms_per_edit": round(ms, 3), "peers_in_sync": in_sync}
        finally:
            await close_all([a, b])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=300)
    ap.add_argument("--json", default="bench_insync.json")
    args = ap.parse_args()
    res = asyncio.run(run(args.edits))
    print("| edits | messages/edit | ms/edit (edit -> peer holds it) | peers in sync (a, b) |")
    print("|---|---|---|---|")
    print(f"| {res['edits']} | {res['messages_per_edit']} | {res['ms_per_edit']} | "
          f"{res['peers_in_sync']} |")
    Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
