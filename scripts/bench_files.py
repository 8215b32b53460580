"""Encrypted files, local figures (docs/files.md): add (chunk + encrypt + store) and get
(fetch + verify + decrypt + write) in MB/s on a SQLite store, and the fraction of ciphertext
that is new after a small edit (what sync would re-send).

    python3 scripts/bench_files.py [--mib 64] [--json out.json]

The network leg moves the file's chunks between two stores over one loopback connection per
carrier with sync/files_io.py (the stream shell alone). The node leg is the real path: two
nodes (engines, SQLite stores) on loopback, B joins A's space, gets the manifest by head sync
and fetches the chunks with ``files_io.fetch_file`` through the engines' chunk streams; it
reports MB/s and the process RSS growth during the transfer (both nodes run in this process).

    python3 scripts/bench_files.py --mib 64 --node-mib 256
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import time
from pathlib import Path

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.replica import filespace as FS
from p2psync.replica.memstore import MemoryStore
from p2psync.replica.space import Space
from p2psync.replica.store import Store
from p2psync.sync import files_io
from p2psync.sync.files import ChunkFetch
from p2psync.transport import connect, listen
from p2psync.transport.connection import Connection


async def _net(sp: Space, fid: bytes, carrier: str) -> float:
    """MB/s of fetching every chunk of ``fid`` from ``sp`` into an empty store over one
    loopback connection."""
    b = Space.adopt(MemoryStore(), sp.me, DeviceKey.generate().public, sp.id, sp.header.raw,
                    sp.acl_records(), window=0)
    for tid in sp.tree_ids():
        b.add_changes(tid, [c.raw for c in sp.tree(tid).changes()])
    acc = AccountKey.generate()
    sdev, cdev = DeviceKey.generate(), DeviceKey.generate()
    accepted: asyncio.Queue[Connection] = asyncio.Queue()

    async def on_conn(conn: Connection) -> None:
        await accepted.put(conn)
        await conn.wait_closed()

    server = await listen("127.0.0.1", 0, device_key=sdev,
                          certificate=DeviceCertificate.issue(acc, sdev),
                          on_connection=on_conn, transport=carrier)
    try:
        client = await connect(("127.0.0.1", server.port), device_key=cdev,
                               certificate=DeviceCertificate.issue(acc, cdev),
                               expected_peer=sdev.id, transport=carrier)
        acc_conn = await accepted.get()
        st = await client.open_stream()
        await st.send(b"")
        srv = await acc_conn.accept_stream()
        await srv.recv()
        serve = asyncio.create_task(files_io.serve_stream(srv, sp.store, lambda s: True))
        fetch = ChunkFetch(sp.id, fid, FS.missing_chunks(b, fid), window=4)
        nbytes = sum(n + 40 for _, n in FS.manifest_of(sp, fid).chunks)
        t = time.perf_counter()
        ok = await files_io.run_fetch(fetch, {"a": st},
                                      lambda ps: FS.accept_chunks(b, fid, ps))
        dt = time.perf_counter() - t
        assert ok and FS.file_info(b, fid).complete
        await serve
        await client.close()
        return nbytes / dt / 1e6
    finally:
        await server.close()


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def _nodes(tmp: Path, mib: int, carrier: str) -> dict[str, float]:
    """Node to node through the engines: MB/s of ciphertext and RSS growth (MiB)."""
    from tests.sync_helpers import fast_config, make_node, wait_any

    d = tmp / f"nodes-{carrier}"
    d.mkdir()
    a = await make_node(d, "a", config=fast_config(carrier))
    b = await make_node(d, "b", config=fast_config(carrier))
    try:
        sp = a.create_space()
        src = d / "big.bin"
        with src.open("wb") as f:
            rng = random.Random(5)
            for _ in range(mib):
                f.write(rng.randbytes(1 << 20))
        fid = FS.add_file(sp, src).manifest.file_id
        src.unlink()
        await b.join(a.invite(sp.id), [f"{carrier}:{a.address(carrier)}"])
        sb = b.spaces[sp.id]
        await wait_any([b], lambda: any(i.file_id == fid for i in FS.list_files(sb)), 60)
        nbytes = sum(n + 40 for _, n in FS.manifest_of(sp, fid).chunks)
        base, peak = _rss(), 0
        stop = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, _rss())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await stop.wait()

        sampler = asyncio.create_task(sample())
        t = time.perf_counter()
        ok = await files_io.fetch_file(b.engines, sb, fid)
        dt = time.perf_counter() - t
        stop.set()
        await sampler
        assert ok and FS.file_info(sb, fid).complete
        return {"MBps": round(nbytes / dt / 1e6, 1), "rss_MiB": round((peak - base) / 2**20, 1)}
    finally:
        await b.close()
        await a.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--node-mib", type=int, default=0,
                    help="also run node -> node through the engines with a file this big")
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
        net = {c: round(asyncio.run(_net(sp, fid, c)), 1) for c in ("tcp", "quic")}
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
        nodes = {c: asyncio.run(_nodes(tmp, args.node_mib, c)) for c in ("tcp", "quic")
                 } if args.node_mib else {}
    res = {"nodes": nodes, "node_mib": args.node_mib, "mib": args.mib, "chunks": added.chunks,
           "add_MBps": round(size / t_add / 1e6, 1), "get_MBps": round(size / t_get / 1e6, 1),
           "net_MBps": net, "edits": rows}
    print(f"{args.mib} MiB file, {added.chunks} chunks")
    print(f"add (chunk+encrypt+store) {res['add_MBps']:>8} MB/s")
    print(f"get (verify+decrypt+write) {res['get_MBps']:>7} MB/s")
    for c, v in net.items():
        print(f"chunks over {c} loopback    {v:>8} MB/s")
    for c, v in nodes.items():
        print(f"node->node over {c} ({args.node_mib} MiB) {v['MBps']:>8} MB/s, "
              f"RSS +{v['rss_MiB']} MiB")
    print(f"{'edit':28} {'new chunks':>12} {'new bytes':>12} {'re-send':>8}")
    for r in rows:
        print(f"{r['edit']:28} {r['new_chunks']:>5}/{r['chunks']:<6} {r['new_bytes']:>12} "
              f"{r['resend_fraction']:>8.2%}")
    Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
