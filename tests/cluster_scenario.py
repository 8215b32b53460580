"""Issue 19's multi-process scenario, at any size: N ``p2psync backup run`` processes on one
PostgreSQL database, D devices in S spaces, every space with devices on every process.

Used small by ``tests/test_backup_cluster_scale.py`` and at 20 devices by
``scripts/bench_cluster.py`` (the same code: the script is the test at scale). It checks what
the issue's "Must show" asks of the cluster and measures while doing it:

1. **concurrent pushes** — every device edits its space at once; every device converges; a
   receipt from each device's process covers its state and is signed by the one backup device;
   the database holds exactly the changes the devices hold (nothing lost, nothing twice);
2. **prompt propagation** — an edit on a device of one process reaches a device of the same
   space on another process (through the database's NOTIFY); latency per sample;
3. **SIGKILL mid-push** — the first process is killed during a burst; its devices connect to
   the next process and push again; all converge, receipts cover the final state, and the
   database holds every change exactly once.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psync.crypto.ids import decode_key
from p2psync.node import Node
from p2psync.replica.space import Space
from p2psync.sync.engine import PeerEngine
from tests.backup_helpers import (
    edit,
    free_udp_port,
    init_backup_home,
    start_backup,
    until_backed_up,
)
from tests.netns import JsonLinesProcess
from tests.sync_helpers import converged, make_node, wait_any


@dataclass
class BackupCluster:
    """Backup processes of one identity on one database."""

    url: str
    account_id: str
    peer_id: str
    procs: list[JsonLinesProcess] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)  #: "host:port" (QUIC)
    homes: list[Path] = field(default_factory=list)


async def start_cluster(tmp: Path, url: str, n: int,
                        started: list[JsonLinesProcess]) -> BackupCluster:
    """``n`` processes: the first home made by ``p2psync init``, the others copies of it (the
    same keystore: one identity), each on its own port, all on ``url``."""
    first = tmp / "backup0"
    ident = init_backup_home(first, store=url)
    cl = BackupCluster(url, ident["account_id"], ident["peer_id"])
    for i in range(n):
        home = tmp / f"backup{i}"
        if i:
            shutil.copytree(first, home, ignore=shutil.ignore_patterns("*.log", "*.sock", "run"))
            (home / "config.toml").write_text(
                f'listen = "127.0.0.1"\nquic_port = {free_udp_port()}\ntcp_port = -1\n'
                f'mdns = false\ndurable = true\n[replicator]\nstore = "{url}"\n')
        proc, ready = await start_backup(home)
        started.append(proc)
        cl.procs.append(proc)
        cl.homes.append(home)
        cl.addresses.append(ready["listening"][0].removeprefix("quic:"))
    return cl


def stored_changes(url: str, tree_ids: list[bytes] | None = None) -> int:
    import psycopg

    with psycopg.connect(url) as db:
        if tree_ids is None:
            row = db.execute("SELECT count(*) FROM changes").fetchone()
        else:
            row = db.execute("SELECT count(*) FROM changes WHERE tree_id = ANY(%s)",
                             (tree_ids,)).fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Group:
    """One space and its devices; ``proc_of[i]`` is the process device ``i`` uses."""

    space_id: str
    docs: list[bytes]
    devices: list[Node]
    proc_of: list[int]
    engines: list[PeerEngine | None]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))


def _live(node: Node) -> PeerEngine:
    return next(e for e in node.engines if not e.conn.is_closed)


async def _set_up_group(tmp: Path, cl: BackupCluster, g: int, size: int,
                        ndocs: int) -> Group:
    n = len(cl.procs)
    owner = await make_node(tmp, f"g{g}-d0")
    devices = [owner]
    try:
        space = owner.create_space()
        docs = []
        for k in range(ndocs):
            d = space.new_document()
            edit(space, d.tree.id, "title", f"group {g} doc {k}")
            docs.append(d.tree.id)
        space.flush()
        space.emit_acl(lambda acl: acl.add_replicator(
            owner.account, decode_key("a", cl.account_id)))
        codes = [owner.invite(space.id) for _ in range(size - 1)]
        proc_of = [(g + j) % n for j in range(size)]
        engine = await owner.connect(cl.addresses[proc_of[0]], "quic")
        await until_backed_up(owner, engine, space.id)  # the invites are stored
        for j, code in enumerate(codes, 1):
            dev = await make_node(tmp, f"g{g}-d{j}")
            devices.append(dev)
            await dev.join(code, [f"quic:{cl.addresses[proc_of[j]]}"])
        await wait_any(devices, lambda: converged(devices, space.id), timeout=60)
        return Group(space.id, docs, devices, proc_of, [None] * size)
    except BaseException:
        for d in devices:
            await d.close()
        raise


def _burst(groups: list[Group], tag: str, edits: int) -> int:
    """Every device makes ``edits`` edits in its space (spread over the documents)."""
    for g in groups:
        for i, dev in enumerate(g.devices):
            sp: Space = dev.spaces[g.space_id]
            for k in range(edits):
                edit(sp, g.docs[k % len(g.docs)], f"{tag}{i}", k)
            sp.flush()
    return sum(len(g.devices) for g in groups) * edits


async def _all_converged(groups: list[Group], timeout: float) -> float:
    t0 = time.perf_counter()
    nodes = [d for g in groups for d in g.devices]
    await wait_any(nodes, lambda: all(converged(g.devices, g.space_id) for g in groups),
                   timeout=timeout)
    return time.perf_counter() - t0


async def _receipts(groups: list[Group]) -> set[bytes]:
    """Every device asks its process for a receipt covering its state; the signers."""
    signers: set[bytes] = set()

    async def one(g: Group, i: int, dev: Node) -> None:
        engine = g.engines[i] or _live(dev)
        rec = await until_backed_up(dev, engine, g.space_id)
        assert rec.root == dev.space_hash(g.space_id)
        signers.add(bytes(engine.remote_device))

    await asyncio.gather(*(one(g, i, d) for g in groups for i, d in enumerate(g.devices)))
    return signers


def _check_exactly_once(url: str, groups: list[Group]) -> int:
    """The database holds exactly the changes of the devices' trees (one device per space:
    they converged); returns the total."""
    total = 0
    for g in groups:
        dev = g.devices[0]
        assert dev.store is not None
        tids = dev.spaces[g.space_id].tree_ids()
        held = sum(dev.store.count_changes(t) for t in tids)
        in_db = stored_changes(url, tids)
        assert in_db == held, f"space {g.space_id[:12]}: database {in_db}, devices {held}"
        total += held
    return total


async def run_scenario(tmp: Path, cl: BackupCluster, *, devices: int, per_space: int,
                       edits: int, samples: int, ndocs: int = 3, kill: bool = True,
                       timeout: float = 300.0,
                       say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run the three parts on a started cluster; raises AssertionError/TimeoutError when the
    cluster misbehaves; returns the figures."""
    assert devices % per_space == 0 and len(cl.procs) >= 2
    res: dict[str, Any] = {"processes": len(cl.procs), "devices": devices,
                           "spaces": devices // per_space, "devices_per_space": per_space,
                           "edits_per_device_per_burst": edits}
    groups: list[Group] = []
    try:
        t0 = time.perf_counter()
        for g in range(devices // per_space):  # one space at a time: set-up is not measured
            groups.append(await _set_up_group(tmp, cl, g, per_space, ndocs))
        res["setup_s"] = time.perf_counter() - t0
        say(f"set up {devices} devices in {len(groups)} spaces over {len(cl.procs)} "
            f"processes in {res['setup_s']:.1f} s")

        # 1. concurrent pushes
        base = stored_changes(cl.url)
        n = _burst(groups, "a", edits)
        took = await _all_converged(groups, timeout)
        signers = await _receipts(groups)
        assert len(signers) == 1, f"receipts signed by {len(signers)} devices"
        total = _check_exactly_once(cl.url, groups)
        res |= {"burst_edits": n, "burst_new_changes": total - base, "converge_s": took,
                "converge_changes_per_s": (total - base) / took, "receipts": devices,
                "receipt_signers": len(signers)}
        say(f"1. {n} edits at once → {total - base} new changes; all {devices} devices "
            f"converged in {took:.2f} s; {devices} receipts, one signer; database = devices")

        # 2. propagation across processes
        lat = []
        for k in range(samples):
            g = groups[k % len(groups)]
            w = next(i for i, p in enumerate(g.proc_of) if p == 0)
            r = next(i for i, p in enumerate(g.proc_of) if p != 0)
            writer, reader = g.devices[w], g.devices[r]
            sp = writer.spaces[g.space_id]
            edit(sp, g.docs[0], "latency", k)
            sp.flush()
            t1 = time.perf_counter()
            await wait_any([reader], lambda rd=reader, wr=writer, s=g.space_id:
                           rd.space_hash(s) == wr.space_hash(s), timeout=timeout)
            lat.append(time.perf_counter() - t1)
        res |= {"propagation_samples": samples,
                "propagation_ms_median": 1000 * statistics.median(lat),
                "propagation_ms_max": 1000 * max(lat)}
        say(f"2. an edit on process 1 reached a device on process 2 in "
            f"{res['propagation_ms_median']:.0f} ms median, {res['propagation_ms_max']:.0f} ms "
            f"max ({samples} samples)")

        res["rss_mib"] = [round(_rss_kib(p.proc.pid) / 1024, 1) for p in cl.procs]

        # 3. SIGKILL of the first process in the middle of a burst
        if kill:
            n = _burst(groups, "b", edits)
            await asyncio.sleep(0)  # the pushes are in flight
            cl.procs[0].kill_now()
            t2 = time.perf_counter()
            for g in groups:
                for i, dev in enumerate(g.devices):
                    if g.proc_of[i] == 0:  # its process is gone: the next one
                        g.engines[i] = await dev.connect(cl.addresses[1], "quic")
            n += _burst(groups, "c", max(1, edits // 2))
            await _all_converged(groups, timeout)
            recovered = time.perf_counter() - t2
            signers = await _receipts(groups)
            assert len(signers) == 1
            total = _check_exactly_once(cl.url, groups)
            res |= {"kill_burst_edits": n, "kill_recovered_s": recovered,
                    "changes_stored_total": total}
            say(f"3. process 1 SIGKILLed mid-burst: its devices moved to process 2; all "
                f"converged {recovered:.2f} s after the kill; receipts cover the final state; "
                f"database = devices ({total} changes, each once)")
    finally:
        for g in groups:
            for d in g.devices:
                await d.close()
    return res
