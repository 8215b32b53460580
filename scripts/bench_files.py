"""Encrypted files, local figures (docs/files.md): add (chunk + encrypt + store) and get
(fetch + verify + decrypt + write) in MB/s on a SQLite store, and the fraction of ciphertext
that is new after a small edit (what sync would re-send).

    python3 scripts/bench_files.py [--mib 64] [--json out.json]

The network leg moves the file's chunks between two stores over one loopback connection per
carrier with sync/files_io.py (the stream shell alone). The node leg is the real path: two
nodes (engines, SQLite stores) on loopback, B joins A's space, gets the manifest by head sync
and fetches the chunks with ``files_io.fetch_file`` through the engines' chunk streams; it
reports MB/s and the RSS growth during the transfer. By default the sending node runs in a
child process, as two agents do (``--procs 1``: both in this process, the first rounds'
figure); QUIC runs are followed by a raw aioquic bulk run of the same layout (one process or
two), so the ratio comes from the same minutes. ``--repeat`` interleaves the runs and reports
medians; ``--durable`` gives the nodes an agent's fsync-every-commit stores; ``--profile P``
writes a cProfile of the receiver's fetch per carrier.

    python3 scripts/bench_files.py --mib 64 --node-mib 256
    python3 scripts/bench_files.py --mib 0 --node-mib 1024 --repeat 3 --durable
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from aioquic.asyncio.client import connect as quic_connect  # noqa: E402
from aioquic.asyncio.server import serve  # noqa: E402
from bench_transport import RawClient, RawServer  # noqa: E402

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey  # noqa: E402
from p2psync.replica import filespace as FS  # noqa: E402
from p2psync.replica.memstore import MemoryStore  # noqa: E402
from p2psync.replica.space import Space  # noqa: E402
from p2psync.replica.store import Store  # noqa: E402
from p2psync.sync import files_io  # noqa: E402
from p2psync.sync.files import ChunkFetch  # noqa: E402
from p2psync.transport import connect, listen  # noqa: E402
from p2psync.transport.connection import Connection  # noqa: E402
from p2psync.transport.quic import quic_configuration  # noqa: E402


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


LOOP = "uvloop"  #: set by --loop: agents run on uvloop (p2psync.agent.run.run_loop)


def _run(coro: Any) -> Any:
    """Run ``coro`` on the loop agents use (uvloop), or asyncio's with ``--loop asyncio``."""
    if LOOP == "uvloop":
        import uvloop
        return uvloop.run(coro)
    return asyncio.run(coro)


def _rss(pid: int | str = "self") -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu(pid: int | str = "self") -> float:
    """CPU seconds (user + system, every thread) the process has used: unlike MB/s, not
    inflated by other jobs on a shared machine."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _child(args: list[str]) -> subprocess.Popen[str]:
    """This script in a child process (``--serve-node`` / ``--raw-quic-server``): the sending
    agent in its own process, as two agents are; it prints one JSON line when ready and runs
    until its stdin closes."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


async def _until_stdin_closes() -> None:
    await asyncio.to_thread(sys.stdin.read)


async def _serve_node(d: Path, mib: int, carrier: str, durable: bool,
                      profile: str | None) -> None:
    """Child: node A with a space holding one ``mib`` MiB file; prints invite, address, ids."""
    from tests.sync_helpers import fast_config, make_node

    a = await make_node(d, "a", config=replace(fast_config(carrier), durable=durable))
    try:
        sp = a.create_space()
        src = d / "big.bin"
        with src.open("wb") as f:
            rng = random.Random(5)
            for _ in range(mib):
                f.write(rng.randbytes(1 << 20))
        fid = FS.add_file(sp, src).manifest.file_id
        src.unlink()
        nbytes = sum(n + 40 for _, n in FS.manifest_of(sp, fid).chunks)
        print(json.dumps({"invite": a.invite(sp.id).encode(), "address": a.address(carrier),
                          "space": sp.id, "file": fid.hex(), "bytes": nbytes}), flush=True)
        prof = cProfile.Profile() if profile else None
        if prof is not None:
            prof.enable()
        await _until_stdin_closes()
        if prof is not None:
            prof.disable()
            prof.dump_stats(profile)
    finally:
        await a.close()


async def _nodes(tmp: Path, mib: int, carrier: str, *, procs: int = 2, durable: bool = False,
                 profile: str | None = None, thread_cpu: bool = False) -> dict[str, float]:
    """Node to node through the engines: MB/s of ciphertext and RSS growth (MiB) of the
    receiver (and of the sender when it runs in its own process, ``procs=2``)."""
    from tests.sync_helpers import fast_config, make_node, wait_any

    d = Path(tempfile.mkdtemp(dir=tmp, prefix=f"nodes-{carrier}-"))
    child = None
    a = None
    if procs == 2:
        child = _child(["--serve-node", str(d), "--carrier", carrier, "--node-mib", str(mib),
                        f"--loop={LOOP}"]
                       + (["--durable"] if durable else [])
                       + ([f"--profile={profile}.sender"] if profile else []))
        assert child.stdout is not None
        info = json.loads(await asyncio.to_thread(child.stdout.readline))
        invite, address = info["invite"], info["address"]
        sid, fid, nbytes = info["space"], bytes.fromhex(info["file"]), info["bytes"]
    else:
        a = await make_node(d, "a", config=replace(fast_config(carrier), durable=durable))
        sp = a.create_space()
        src = d / "big.bin"
        with src.open("wb") as f:
            rng = random.Random(5)
            for _ in range(mib):
                f.write(rng.randbytes(1 << 20))
        fid = FS.add_file(sp, src).manifest.file_id
        src.unlink()
        invite, address, sid = a.invite(sp.id), a.address(carrier), sp.id
        nbytes = sum(n + 40 for _, n in FS.manifest_of(sp, fid).chunks)
    b = await make_node(d, "b", config=replace(fast_config(carrier), durable=durable))
    try:
        await b.join(invite, [f"{carrier}:{address}"])
        sb = b.spaces[sid]
        await wait_any([b], lambda: any(i.file_id == fid for i in FS.list_files(sb)), 60)
        pids: list[int | str] = ["self"] + ([child.pid] if child is not None else [])
        base = {p: _rss(p) for p in pids}
        peak = dict(base)
        stop = asyncio.Event()

        tcpu: dict[tuple[Any, str], list[float]] = {}

        def threads() -> None:
            for p in pids:
                pp = os.getpid() if p == "self" else p
                for t in Path(f"/proc/{pp}/task").iterdir():
                    with contextlib.suppress(OSError):
                        name = (t / "comm").read_text().strip()
                        f = (t / "stat").read_text().rsplit(")", 1)[1].split()
                        c = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
                        tcpu.setdefault((p, t.name + ":" + name), [c, c])[1] = c

        async def sample() -> None:
            while not stop.is_set():
                if thread_cpu:
                    threads()
                for p in pids:
                    peak[p] = max(peak[p], _rss(p))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await stop.wait()

        sampler = asyncio.create_task(sample())
        prof = cProfile.Profile() if profile else None
        if prof is not None:
            prof.enable()
        cpu0 = {p: _cpu(p) for p in pids}
        t = time.perf_counter()
        ok = await files_io.fetch_file(b.engines, sb, fid)
        dt = time.perf_counter() - t
        cpu = {p: _cpu(p) - cpu0[p] for p in pids}
        if prof is not None:
            prof.disable()
            prof.dump_stats(profile)
        stop.set()
        await sampler
        if thread_cpu:  # which thread spends what (Python names no threads in /proc)
            threads()
            for (p, t), (c0, c1) in sorted(tcpu.items(), key=lambda kv: str(kv[0])):
                if c1 - c0 > 0.005:
                    print(f"    thread {p} {t}: {(c1 - c0) / nbytes * 1e8:.3f} s per 100 MB",
                          flush=True)
        assert ok and FS.file_info(sb, fid).complete
        out = {"MBps": round(nbytes / dt / 1e6, 1),
               "rss_MiB": round((peak["self"] - base["self"]) / 2**20, 1),
               "cpu_s_per_100MB": round(sum(cpu.values()) / nbytes * 1e8, 2)}
        if child is not None:
            out["sender_rss_MiB"] = round((peak[child.pid] - base[child.pid]) / 2**20, 1)
            out["sender_cpu_s_per_100MB"] = round(cpu[child.pid] / nbytes * 1e8, 2)
        return out
    finally:
        await b.close()
        if a is not None:
            await a.close()
        if child is not None:
            assert child.stdin is not None
            child.stdin.close()
            await asyncio.to_thread(child.wait)
        shutil.rmtree(d, ignore_errors=True)


# --- raw aioquic bulk, the QUIC reference (same configuration as scripts/bench_transport.py) --
async def _raw_quic_server() -> None:
    """Child: a raw aioquic server counting bulk bytes; prints its port."""
    qs = quic_configuration(is_client=False, max_datagram_size=1452, window=4 << 20,
                            idle_timeout=30)
    server = await serve("127.0.0.1", 0, configuration=qs, create_protocol=RawServer)
    port = server._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    print(json.dumps({"port": port}), flush=True)
    try:
        await _until_stdin_closes()
    finally:
        server.close()


async def _raw_quic(nbytes: int, procs: int) -> tuple[float, float]:
    """MB/s of one raw aioquic stream carrying ``nbytes`` on loopback (receiver in a child
    process when ``procs=2``, like the node leg's sender), and CPU s per 100 MB."""
    child = None
    server = None
    if procs == 2:
        child = _child(["--raw-quic-server", f"--loop={LOOP}"])
        assert child.stdout is not None
        port = json.loads(await asyncio.to_thread(child.stdout.readline))["port"]
    else:
        qs = quic_configuration(is_client=False, max_datagram_size=1452, window=4 << 20,
                                idle_timeout=30)
        server = await serve("127.0.0.1", 0, configuration=qs, create_protocol=RawServer)
        port = server._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    qc = quic_configuration(is_client=True, max_datagram_size=1452, window=4 << 20,
                            idle_timeout=30)
    qc.server_name = "p2psync"
    try:
        async with quic_connect("127.0.0.1", port, configuration=qc,
                                create_protocol=RawClient) as client:
            assert isinstance(client, RawClient)
            sid = client._quic.get_next_available_stream_id()
            done = client.expect(sid, 2)
            payload = b"\0" * (64 * 1024)
            pids: list[int | str] = ["self"] + ([child.pid] if child is not None else [])
            cpu0 = sum(_cpu(p) for p in pids)
            t0 = time.perf_counter()
            for _ in range(nbytes // len(payload)):
                client._quic.send_stream_data(sid, payload)
                client.transmit()
                await asyncio.sleep(0)
            client._quic.send_stream_data(sid, b"", end_stream=True)
            client.transmit()
            await done
            sent = nbytes // len(payload) * len(payload)
            return (sent / (time.perf_counter() - t0) / 1e6,
                    (sum(_cpu(p) for p in pids) - cpu0) / sent * 1e8)
    finally:
        if server is not None:
            server.close()
        if child is not None:
            assert child.stdin is not None
            child.stdin.close()
            await asyncio.to_thread(child.wait)


def _median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rows), 1) for k in rows[0]}


def _node_legs(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every carrier's node leg (and raw aioquic next to QUIC), ``--repeat`` times
    interleaved, so the ratios come from the same minutes; medians and every run."""
    carriers = args.carriers.split(",")
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in carriers}
    raw_bytes = min(args.node_mib, args.raw_mib) << 20
    for i in range(args.repeat):
        for c in carriers:
            prof = f"{args.profile}-{c}.pstats" if args.profile and i == 0 else None
            row = _run(_nodes(tmp, args.node_mib, c, procs=args.procs,
                              durable=args.durable, profile=prof, thread_cpu=args.thread_cpu))
            if c == "quic":
                raw, raw_cpu = _run(_raw_quic(raw_bytes, args.procs))
                row["raw_aioquic_MBps"] = round(raw, 1)
                row["vs_raw"] = round(row["MBps"] / row["raw_aioquic_MBps"], 2)
                row["raw_cpu_s_per_100MB"] = round(raw_cpu, 2)
                row["cpu_vs_raw"] = round(row["cpu_s_per_100MB"] / raw_cpu, 2)
            runs[c].append(row)
            print(f"  run {i + 1} {c}: {row}", flush=True)
    return {c: {"median": _median(rs), "runs": rs} for c, rs in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64,
                    help="file size of the local legs and the stream-layer leg (0: skip them)")
    ap.add_argument("--node-mib", type=int, default=0,
                    help="also run node -> node through the engines with a file this big")
    ap.add_argument("--carriers", default="tcp,quic")
    ap.add_argument("--repeat", type=int, default=1, help="node legs: runs (medians reported)")
    ap.add_argument("--procs", type=int, choices=(1, 2), default=2,
                    help="node legs: 2 = the sending node in its own process (two agents), "
                         "1 = both nodes in this process (the first rounds' figure)")
    ap.add_argument("--durable", action="store_true",
                    help="node stores fsync every commit (an agent's default)")
    ap.add_argument("--raw-mib", type=int, default=64,
                    help="bytes of the raw aioquic reference run (capped at --node-mib)")
    ap.add_argument("--profile", help="cProfile the receiver's fetch to PREFIX-carrier.pstats "
                    "(and the sending process, while it serves, to ….pstats.sender)")
    ap.add_argument("--verify-now", action="store_true",
                    help="node legs: fetch_file without verify_later (each answer hashed "
                         "before the next request; files_io.VERIFY_LATER = False)")
    ap.add_argument("--thread-cpu", action="store_true",
                    help="node legs: print the CPU seconds per 100 MB of every thread of both "
                         "nodes (sampled every 50 ms, so threads living < 50 ms are missed)")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                    help="event loop of every leg (agents run on uvloop)")
    ap.add_argument("--json", default="bench_files.json")
    ap.add_argument("--serve-node", help=argparse.SUPPRESS)
    ap.add_argument("--carrier", help=argparse.SUPPRESS)
    ap.add_argument("--raw-quic-server", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global LOOP
    LOOP = args.loop
    files_io.VERIFY_LATER = not args.verify_now
    if args.serve_node:
        _run(_serve_node(Path(args.serve_node), args.node_mib, args.carrier,
                                args.durable, args.profile))
        return
    if args.raw_quic_server:
        _run(_raw_quic_server())
        return
    res: dict[str, Any] = {"mib": args.mib, "node_mib": args.node_mib, "procs": args.procs,
                           "loop": args.loop,
                           "durable": args.durable, "repeat": args.repeat}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.mib:
            res.update(_local_legs(tmp, args.mib))
        if args.node_mib:
            res["nodes"] = _node_legs(tmp, args)
    if args.mib:
        print(f"{args.mib} MiB file, {res['chunks']} chunks")
        print(f"add (chunk+encrypt+store) {res['add_MBps']:>8} MB/s")
        print(f"get (verify+decrypt+write) {res['get_MBps']:>7} MB/s")
        for c, v in res["net_MBps"].items():
            print(f"chunks over {c} loopback    {v:>8} MB/s")
        print(f"SQLite chunk writes alone    {res['store_MBps']['normal']:>6} MB/s, "
              f"durable {res['store_MBps']['durable']} MB/s")
    for c, v in res.get("nodes", {}).items():
        m = v["median"]
        extra = (f", raw aioquic {m['raw_aioquic_MBps']} MB/s = {m['vs_raw']}x "
                 f"(CPU per byte {m['cpu_vs_raw']}x raw's)" if "vs_raw" in m else "")
        print(f"node->node over {c} ({args.node_mib} MiB, {args.procs} process(es), "
              f"median of {args.repeat}) {m['MBps']:>8} MB/s{extra}, RSS +{m['rss_MiB']} MiB"
              + (f" (sender +{m['sender_rss_MiB']} MiB)" if "sender_rss_MiB" in m else "")
              + f", CPU {m['cpu_s_per_100MB']} s per 100 MB (both nodes)")
    if args.mib:
        print(f"{'edit':28} {'new chunks':>12} {'new bytes':>12} {'re-send':>8}")
        for r in res["edits"]:
            print(f"{r['edit']:28} {r['new_chunks']:>5}/{r['chunks']:<6} {r['new_bytes']:>12} "
                  f"{r['resend_fraction']:>8.2%}")
    Path(args.json).write_text(json.dumps(res, indent=1))


def _store_ceiling(tmp: Path, mib: int) -> dict[str, float]:
    """MB/s of storing ``mib`` MiB of 64 KiB chunks into a fresh SQLite store through its
    chunk_io, 8 MiB per commit, durable (FULL) and not (NORMAL): the receiver's ceiling with
    nothing else running (every byte goes to the WAL, then to the database at checkpoints)."""
    out = {}
    for durable in (False, True):
        store = Store(tmp / f"ceiling-{durable}.sqlite3", durable=durable)
        io = store.chunk_io()
        rng = random.Random(3)
        chunks = [(rng.randbytes(32), rng.randbytes(65576)) for _ in range(mib * 16)]
        t = time.perf_counter()
        for i in range(0, len(chunks), 128):
            io.put_chunks("s", b"f" * 32, chunks[i:i + 128])
        out["durable" if durable else "normal"] = round(
            len(chunks) * 65576 / (time.perf_counter() - t) / 1e6, 1)
        io.close()
        store.close()
    return out


def _local_legs(tmp: Path, mib: int) -> dict[str, Any]:
    """add / get on a SQLite store, the stream-layer leg per carrier, the re-send after edits."""
    size = mib << 20
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
    net = {c: round(_run(_net(sp, fid, c)), 1) for c in ("tcp", "quic")}
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
    return {"chunks": added.chunks, "add_MBps": round(size / t_add / 1e6, 1),
            "get_MBps": round(size / t_get / 1e6, 1), "net_MBps": net, "edits": rows,
            "store_MBps": _store_ceiling(tmp, mib)}


if __name__ == "__main__":
    main()
