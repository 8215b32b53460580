#!/usr/bin/env python3
"""Benchmark a backup peer (replicator: no read keys, never loads a document).

Why: issue 7 asks what a backup costs to run (a Raspberry Pi has little RAM and slow storage)
and how fast it takes and serves changes. Two measurements, each against a real backup
*process* (a child of this script running the same wiring as ``p2psync backup run``: a
:class:`~p2psync.node.Node` with the document guard and :class:`BackupPolicy` installed, uvloop
when available, durable store = ``synchronous=FULL``), reached over real loopback TCP:

(a) **size**: RSS and disk (store file + WAL + SHM) of a backup holding ``--spaces`` spaces /
    ``--changes`` changes (default 1 000 / 1 000 000; ``--scale 0.1`` = 100 / 100 000). The
    changes are synthesised with the real change and ACL code (``Space.create``, an
    AddReplicator record naming the backup, ``build_change`` signed and encrypted for real) in
    a multiprocessing pool and inserted through ``Store.save_changes`` with ``durable=False``
    (bulk load only; the backup then opens the file durable). RSS is taken on an empty backup,
    after the loaded backup has opened and is serving, and after a member device head-synced a
    sample of its spaces with it (the member made a few offline edits in each, so the backup
    had to load those trees and store new changes).
(b) **throughput** with ``--devices`` (20) member nodes, each its own account and space,
    connected to the backup at once: push = every device adds signed changes one at a time
    (one change per HEAD_UPDATE, like un-coalesced typing) until the backup has stored all
    of them; pull = a fresh device of an owner fetches a ``--pull-changes`` space from the
    backup alone. Medians over ``--runs``. The member nodes run in this process (one core),
    the backup in its own (the other core); their stores are non-durable so the backup is
    what is measured.

Prints a table and writes JSON (``bench-results/backup-<time>.json`` or ``--out``).

    python scripts/bench_backup.py                 # full scale
    python scripts/bench_backup.py --scale 0.1     # 100 spaces / 100 000 changes
    python scripts/bench_backup.py --only b        # throughput only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2psync.codec import content_id
from p2psync.crypto import AccountKey, DeviceKey
from p2psync.crypto.box import ReadKey
from p2psync.node import Node, NodeConfig
from p2psync.replica.change import build_change
from p2psync.replica.document import encode_payload
from p2psync.replica.space import Space
from p2psync.replica.store import Store
from p2psync.sync.engine import EngineConfig, PeerEngine

QUIET = 3600.0  #: no periodic head sync on the members: only pushes and offers move data
PUSH_QUEUE_HIGH = 64  #: a member pauses while its engine has this many pushes unsent


class Row(NamedTuple):
    """What ``Store.save_changes`` reads from a change: its id and raw bytes."""

    id: bytes
    raw: bytes


# --- synthesis (worker processes) ---------------------------------------------------------------
def build_space(task: tuple[Any, ...]) -> tuple[str, list[tuple[bytes, list[Row], bytes]]]:
    """Sign ``trees`` linear chains of ``per_tree`` changes (root included) for one space."""
    owner_seed, key_bytes, acl_head, key_id, space_id, trees, per_tree, item = task
    owner, key = AccountKey(owner_seed), ReadKey(key_bytes)
    out = []
    for t in range(trees):
        payload = encode_payload([], [os.urandom(item)])
        root = build_change(owner, key, payload, space_id=space_id, tree_id=None, prev_ids=(),
                            acl_head=acl_head, read_key_id=key_id, timestamp=t)
        rows, prev = [Row(root.id, root.raw)], root.id
        for j in range(1, per_tree):
            ch = build_change(owner, key, payload, space_id=space_id, tree_id=root.id,
                              prev_ids=(prev,), acl_head=acl_head, read_key_id=key_id,
                              timestamp=j)
            rows.append(Row(ch.id, ch.raw))
            prev = ch.id
        out.append((root.id, rows, prev))
    return space_id, out


def synthesise(path: Path, owners: Sequence[AccountKey], spaces: int, trees: int,
               per_tree: int, replicator: bytes, item: int, workers: int,
               copy_to: Store | None = None, copy_spaces: int = 0) -> list[str]:
    """Create ``spaces`` spaces (round-robin over ``owners``, each naming ``replicator``) in a
    store at ``path`` and fill them; the first ``copy_spaces`` spaces of ``owners[0]`` are also
    written to ``copy_to`` (a member's store). Returns the space ids, creation order."""
    store = Store(path, durable=False)  # bulk load; the backup reopens it durable
    device = DeviceKey.generate().public
    tasks, ids, copied = [], [], set()
    for i in range(spaces):
        owner = owners[i % len(owners)]
        space = Space.create(store, owner, device)
        space.emit_acl(lambda acl, o=owner: acl.add_replicator(o, replicator))
        acl_head, kid = space.acl.write_position(owner.public)
        key = space.acl.read_key(kid)
        assert key is not None
        tasks.append((owner.seed, key.key, acl_head, kid, space.id, trees, per_tree, item))
        ids.append(space.id)
        if copy_to is not None and owner is owners[0] and len(copied) < copy_spaces:
            copy_to.add_acl_records(space.id, [(content_id(r), r) for r in space.acl.export()])
            copy_to.put_space(space.id, space.header.raw)
            copied.add(space.id)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        for sid, made in pool.imap_unordered(build_space, tasks, chunksize=1):
            for tid, rows, head in made:
                store.save_changes(sid, tid, rows, [head])
                if sid in copied:
                    assert copy_to is not None
                    copy_to.save_changes(sid, tid, rows, [head])
    store.close()
    return ids


# --- the backup process ---------------------------------------------------------------------------
def _proc_status(pid: int | str) -> dict[str, int]:
    """VmRSS / VmHWM in KiB from /proc."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def child_backup(store: str, account_hex: str, device_hex: str, durable: bool) -> None:
    """Run in the child: a backup node on ``store``; answer JSON commands on stdin."""
    from p2psync.backup import guard
    from p2psync.backup.config import ReplicatorConfig
    from p2psync.backup.policy import BackupPolicy

    t0 = time.perf_counter()
    guard.forbid_documents()
    node = Node(store, AccountKey(bytes.fromhex(account_hex)),
                DeviceKey(bytes.fromhex(device_hex)),
                config=NodeConfig(listen=[("127.0.0.1", 0, "tcp")], durable=durable))
    await node.start()
    t_open = time.perf_counter() - t0
    policy = BackupPolicy(node.replicas, ReplicatorConfig()).install()
    t_ready = time.perf_counter() - t0

    def stats() -> dict[str, Any]:
        trees = [t for s in node.spaces.values() for t in s._trees.values()]
        return {"spaces": len(node.spaces), "changes": policy.usage.total.changes,
                "bytes": policy.usage.total.bytes,
                "objects": sum(len(node.replicas.ldiff(s)) for s in node.spaces),
                "trees_in_memory": len(trees), "changes_in_memory": sum(len(t) for t in trees),
                "document_loads": guard.attempts, "peers": len(node.engines),
                "strikes": sum(e.strikes for e in node.engines)} | _proc_status("self")

    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    say({"event": "ready", "address": node.address("tcp"), "open_s": t_open,
         "ready_s": t_ready, "loop": type(asyncio.get_running_loop()).__module__})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "stats":
                say(stats())
            elif cmd["cmd"] == "wait":
                want = cmd["changes"]
                try:
                    await node.replicas.wait_for(lambda w=want: policy.usage.total.changes >= w,
                                                 cmd.get("timeout", 600))
                    say({"ok": True} | stats())
                except TimeoutError:
                    say({"ok": False} | stats())
            else:
                break
    finally:
        await node.close()


class BackupProc:
    """The main side of a backup child process."""

    def __init__(self, proc: asyncio.subprocess.Process, ready: dict[str, Any],
                 started: float, store: Path) -> None:
        self.proc, self.ready, self.store = proc, ready, store
        self.startup_s = time.perf_counter() - started
        self.address: str = ready["address"]

    @classmethod
    async def start(cls, store: Path, account: AccountKey, device: DeviceKey, *,
                    durable: bool = True, timeout: float = 900.0,
                    url: str | None = None) -> BackupProc:
        """``url``: open that store (e.g. postgresql://…) instead of ``store``, which then only
        names the log file."""
        t0 = time.perf_counter()
        log = open(store.with_suffix(".log"), "ab")  # noqa: SIM115 - the child keeps it open
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--child-backup", url or str(store), account.seed.hex(),
            device.seed.hex(), "--durable" if durable else "--no-durable",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
            limit=1 << 20)
        log.close()
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"backup child died; see {store.with_suffix('.log')}")
        return cls(proc, json.loads(line), t0, store)

    async def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"backup child died; see {self.store.with_suffix('.log')}")
        return dict(json.loads(line))

    async def wait_changes(self, n: int, timeout: float = 900.0) -> dict[str, Any]:
        st = await self.ask(cmd="wait", changes=n, timeout=timeout)
        if not st["ok"]:
            raise TimeoutError(f"backup holds {st['changes']} changes, expected {n}")
        return st

    def rss_mib(self) -> float:
        return _proc_status(self.proc.pid)["VmRSS"] / 1024

    def cpu_s(self) -> float:
        return _cpu_seconds(self.proc.pid)

    async def close(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write(b'{"cmd": "quit"}\n')
            await self.proc.stdin.drain()
        try:
            await asyncio.wait_for(self.proc.wait(), 60)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def disk_bytes(path: Path) -> dict[str, int]:
    out = {}
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        out["db" + suffix.replace("-", "_")] = p.stat().st_size if p.exists() else 0
    out["total"] = sum(out.values())
    return out


def member_config() -> NodeConfig:
    return NodeConfig(listen=[("127.0.0.1", 0, "tcp")],
                      engine=EngineConfig(head_sync_interval=QUIET, request_timeout=120.0),
                      durable=False)


def chain(space: Space, tree_id: bytes, n: int, item: int) -> list[bytes]:
    """``n`` new signed changes on top of a tree's heads (linear), not yet added."""
    acl_head, kid = space.acl.write_position(space.me.public)
    key = space.acl.read_key(kid)
    assert key is not None
    prev = list(space.heads(tree_id))
    raws = []
    for i in range(n):
        ch = build_change(space.me, key, encode_payload([], [os.urandom(item)]),
                          space_id=space.id, tree_id=tree_id, prev_ids=prev, acl_head=acl_head,
                          read_key_id=kid, timestamp=i)
        raws.append(ch.raw)
        prev = [ch.id]
    return raws


# --- (a) RSS and disk at size -------------------------------------------------------------------
async def measure_size(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    spaces = max(1, round(args.spaces * args.scale))
    per_tree = max(1, round(args.changes * args.scale / (spaces * args.trees)))
    b_acct, b_dev = AccountKey.generate(), DeviceKey.generate()
    res: dict[str, Any] = {"spaces": spaces, "trees_per_space": args.trees,
                           "changes_per_tree": per_tree,
                           "changes": spaces * args.trees * per_tree,
                           "owners": args.owners, "payload_item_bytes": args.item}

    empty = await BackupProc.start(tmp / "empty.sqlite3", b_acct, b_dev)
    await asyncio.sleep(1.0)
    res["rss_empty_mib"] = empty.rss_mib()
    await empty.close()

    owners = [AccountKey.generate() for _ in range(args.owners)]
    member_path = tmp / "member.sqlite3"
    mstore = Store(member_path, durable=False)
    t0 = time.perf_counter()
    synthesise(tmp / "backup.sqlite3", owners, spaces, args.trees, per_tree, b_acct.public,
               args.item, args.workers, copy_to=mstore, copy_spaces=args.sample)
    mstore.close()
    res["synthesis_s"] = time.perf_counter() - t0
    res["synthesis_changes_per_s"] = res["changes"] / res["synthesis_s"]
    res["disk_after_bulk_load"] = disk_bytes(tmp / "backup.sqlite3")
    print(f"(a) synthesised {res['changes']:,} changes in {spaces:,} spaces in "
          f"{res['synthesis_s']:.1f} s", flush=True)

    backup = await BackupProc.start(tmp / "backup.sqlite3", b_acct, b_dev)
    try:
        res["startup_s"] = backup.startup_s
        res["open_s"], res["ready_s"] = backup.ready["open_s"], backup.ready["ready_s"]
        res["event_loop"] = backup.ready["loop"]
        await asyncio.sleep(2.0)
        st = await backup.ask(cmd="stats")
        assert st["changes"] == res["changes"], (st, res["changes"])
        res["rss_open_mib"] = st["VmRSS"] / 1024
        res["hwm_open_mib"] = st["VmHWM"] / 1024

        # a member (owner 0's new device) holding a sample of its spaces, with offline edits
        member = await Node(member_path, owners[0], DeviceKey.generate(),
                            config=member_config()).start()
        try:
            sample = sorted(member.spaces)
            for sid in sample:
                space = member.spaces[sid]
                tid = space.tree_ids()[0]
                space.add_changes(tid, chain(space, tid, args.sample_edits, args.item))
            expect = res["changes"] + len(sample) * args.sample_edits
            t1 = time.perf_counter()
            await member.connect(backup.address)
            st = await backup.wait_changes(expect)
            res["sample_spaces"] = len(sample)
            res["sample_new_changes"] = len(sample) * args.sample_edits
            res["sample_sync_s"] = time.perf_counter() - t1
            await asyncio.sleep(1.0)
            st = await backup.ask(cmd="stats")
            res["rss_after_sample_sync_mib"] = st["VmRSS"] / 1024
            res["hwm_after_sample_sync_mib"] = st["VmHWM"] / 1024
            res["trees_in_memory"] = st["trees_in_memory"]
            res["changes_in_memory"] = st["changes_in_memory"]
            res["document_loads"] = st["document_loads"]
            res["strikes"] = st["strikes"]
            res["disk_while_serving"] = disk_bytes(tmp / "backup.sqlite3")
        finally:
            await member.close()
    finally:
        await backup.close()
    res["disk"] = disk_bytes(tmp / "backup.sqlite3")  # after close (WAL checkpointed)
    res["bytes_of_raw_changes"] = st["bytes"]
    grow = res["rss_open_mib"] - res["rss_empty_mib"]
    res["rss_per_space_kib"] = grow * 1024 / spaces
    if res["changes_in_memory"]:
        per = (res["rss_after_sample_sync_mib"] - res["rss_open_mib"]) * 1024 * 1024
        res["rss_per_change_in_memory_bytes"] = per / res["changes_in_memory"]
    return res


# --- (b) push / pull throughput -----------------------------------------------------------------
async def push_all(space: Space, items: list[tuple[bytes, bytes]], engine: PeerEngine) -> None:
    """Add changes one at a time (each is pushed alone), yielding to the loop after each."""
    for tid, raw in items:
        space.add_changes(tid, [raw])
        while len(engine._push_queue) > PUSH_QUEUE_HIGH:  # backpressure, no drops
            await asyncio.sleep(0.002)
        await asyncio.sleep(0)


async def measure_throughput(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    b_acct, b_dev = AccountKey.generate(), DeviceKey.generate()
    backup = await BackupProc.start(tmp / "tp-backup.sqlite3", b_acct, b_dev)
    res: dict[str, Any] = {"devices": args.devices, "docs_per_device": args.docs,
                           "push_changes_per_device": args.push_changes, "runs": args.runs}
    members: list[Node] = []
    try:
        engines, spaces = [], []
        for i in range(args.devices):
            m = await Node(tmp / f"dev{i}.sqlite3", AccountKey.generate(), DeviceKey.generate(),
                           config=member_config()).start()
            members.append(m)
            space = m.create_space()
            key_head, kid = space.acl.write_position(m.account.public)
            key = space.acl.read_key(kid)
            assert key is not None
            for d in range(args.docs):
                root = build_change(m.account, key, encode_payload([], [b""]), space_id=space.id,
                                    tree_id=None, prev_ids=(), acl_head=key_head,
                                    read_key_id=kid, timestamp=d)
                space.add_changes(root.id, [root.raw])
            space.emit_acl(lambda acl, a=m.account: acl.add_replicator(a, b_acct.public))
            spaces.append(space)
        for m in members:
            engines.append(await m.connect(backup.address))
        st = await backup.wait_changes(args.devices * args.docs, timeout=300)
        for m, e, s in zip(members, engines, spaces, strict=True):
            await m.wait_for(lambda e=e, s=s: s.id in e.shared, timeout=60)
        pushes = []
        for _run in range(args.runs):
            work = []
            for s in spaces:
                tids = s.tree_ids()
                per_doc = [chain(s, t, -(-args.push_changes // len(tids)), args.item)
                           for t in tids]
                items = [(tids[j % len(tids)], per_doc[j % len(tids)][j // len(tids)])
                         for j in range(args.push_changes)]
                work.append(items)
            base = st["changes"]
            total = args.devices * args.push_changes
            cpu0 = backup.cpu_s()
            t0 = time.perf_counter()
            await asyncio.gather(*(push_all(s, w, e)
                                   for s, w, e in zip(spaces, work, engines, strict=True)))
            injected = time.perf_counter() - t0
            st = await backup.wait_changes(base + total)
            took = time.perf_counter() - t0
            cpu = backup.cpu_s() - cpu0
            pushes.append({"changes": total, "seconds": took, "changes_per_s": total / took,
                           "members_done_s": injected, "backup_cpu_s": cpu,
                           "backup_cpu_share": cpu / took, "backup_rss_mib": st["VmRSS"] / 1024,
                           "pushes_dropped": sum(e.pushes_dropped for e in engines)})
            print(f"(b) push run: {total:,} changes from {args.devices} devices in {took:.2f} s "
                  f"= {total / took:,.0f}/s (backup CPU {cpu / took:.0%})", flush=True)
        res["push_runs"] = pushes
        res["push_changes_per_s_median"] = statistics.median(p["changes_per_s"] for p in pushes)
        res["strikes"] = st["strikes"]
    finally:
        for m in members:
            await m.close()
    try:
        res.update(await measure_pull(tmp, args, backup, b_acct))
        st = await backup.ask(cmd="stats")
        res["backup_rss_end_mib"] = st["VmRSS"] / 1024
        res["backup_hwm_end_mib"] = st["VmHWM"] / 1024
        res["document_loads"] = st["document_loads"]
        res["backup_disk_end"] = disk_bytes(tmp / "tp-backup.sqlite3")
    finally:
        await backup.close()
    return res


async def measure_pull(tmp: Path, args: argparse.Namespace, backup: BackupProc,
                       b_acct: AccountKey) -> dict[str, Any]:
    owner = AccountKey.generate()
    per_tree = max(1, args.pull_changes // args.pull_trees)
    src_path = tmp / "pull-src.sqlite3"
    (sid,) = synthesise(src_path, [owner], 1, args.pull_trees, per_tree, b_acct.public,
                        args.item, args.workers)
    n = args.pull_trees * per_tree
    base = (await backup.ask(cmd="stats"))["changes"]
    src = await Node(src_path, owner, DeviceKey.generate(), config=member_config()).start()
    try:
        target = src.space_hash(sid)
        t0 = time.perf_counter()
        await src.connect(backup.address)  # it offers the space; the backup fetches it
        await backup.wait_changes(base + n)
        fetch = time.perf_counter() - t0
    finally:
        await src.close()
    print(f"(b) backup fetched a {n:,}-change space from its owner in {fetch:.2f} s "
          f"= {n / fetch:,.0f}/s", flush=True)
    pulls = []
    for r in range(args.runs):
        fresh = await Node(tmp / f"fresh{r}.sqlite3", owner, DeviceKey.generate(),
                           config=member_config()).start()
        try:
            t0 = time.perf_counter()
            engine = await fresh.connect(backup.address)
            await fresh.fetch_space(sid, engine)
            await fresh.wait_for(lambda f=fresh: sid in f.spaces and f.space_hash(sid) == target,
                                 timeout=900)
            took = time.perf_counter() - t0
            assert fresh.store is not None
            got = fresh.store.count_changes()
        finally:
            await fresh.close()
        assert got == n, (got, n)
        pulls.append({"changes": n, "seconds": took, "changes_per_s": n / took})
        print(f"(b) pull run: fresh device got {n:,} changes in {took:.2f} s "
              f"= {n / took:,.0f}/s", flush=True)
    return {"pull_space_changes": n, "pull_space_trees": args.pull_trees,
            "backup_fetch_s": fetch, "backup_fetch_changes_per_s": n / fetch,
            "pull_runs": pulls,
            "pull_changes_per_s_median": statistics.median(p["changes_per_s"] for p in pulls)}


# --- several backup processes on one PostgreSQL database (docs/backup-cluster.md) ---------
STALL_S = 10.0  #: no progress for this long: the members head-sync (what their timer does)


async def settle(procs: list[BackupProc], targets: list[int], engines: list[PeerEngine],
                 spaces: list[Space]) -> int:
    """Wait until every process holds its target. A push the engine dropped (its queue
    overflows when the backup is slower than the members) is only repaired by head sync,
    which the members run every hour here (QUIET): after STALL_S without progress they
    head-sync now — what a real device's 30 s timer does. This was the "stall" of (c) with
    20 devices. Returns how many such repairs were needed."""
    repairs = 0
    last = -1
    while True:
        got = [(await bp.ask(cmd="stats"))["changes"] for bp in procs]
        if all(g >= t for g, t in zip(got, targets, strict=True)):
            return repairs
        if sum(got) == last:
            repairs += 1
            for e, s in zip(engines, spaces, strict=True):
                e.sync_now(s.id)
        last = sum(got)
        # every answer read before the next ask (one reader per child's stdout)
        await asyncio.gather(*(bp.ask(cmd="wait", changes=t, timeout=STALL_S)
                               for bp, t in zip(procs, targets, strict=True)))


async def measure_cluster(tmp: Path, args: argparse.Namespace, pg_url: str) -> dict[str, Any]:
    """Push throughput of ``args.devices`` devices spread round-robin over 1, 2 and 4 backup
    processes sharing one database (a fresh schema each), beside one SQLite process; pull of
    one space from the first process; RSS per process. Same identity in every process."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.pg import fresh_schema

    out: dict[str, Any] = {}
    for label, n in [("sqlite", 1), ("postgresql", 1), ("postgresql", 2), ("postgresql", 4)]:
        b_acct, b_dev = AccountKey.generate(), DeviceKey.generate()
        url = None if label == "sqlite" else fresh_schema(pg_url)
        procs = [await BackupProc.start(tmp / f"cl-{label}-{n}-{i}.sqlite3", b_acct, b_dev,
                                        url=url) for i in range(n)]
        members: list[Node] = []
        try:
            spaces, engines, owner_of = [], [], []
            for i in range(args.devices):
                m = await Node(tmp / f"cl-dev-{label}{n}-{i}.sqlite3", AccountKey.generate(),
                               DeviceKey.generate(), config=member_config()).start()
                members.append(m)
                space = m.create_space()
                key_head, kid = space.acl.write_position(m.account.public)
                key = space.acl.read_key(kid)
                assert key is not None
                for d in range(args.docs):
                    root = build_change(m.account, key, encode_payload([], [b""]),
                                        space_id=space.id, tree_id=None, prev_ids=(),
                                        acl_head=key_head, read_key_id=kid, timestamp=d)
                    space.add_changes(root.id, [root.raw])
                space.emit_acl(lambda acl, a=m.account, r=b_acct.public: acl.add_replicator(a, r))
                spaces.append(space)
                owner_of.append(i % n)
                engines.append(await m.connect(procs[i % n].address))
            share = [sum(1 for o in owner_of if o == p) for p in range(n)]
            for p, bp in enumerate(procs):
                await bp.wait_changes(share[p] * args.docs, timeout=300)
            for m, e, s in zip(members, engines, spaces, strict=True):
                await m.wait_for(lambda e=e, s=s: s.id in e.shared, timeout=60)
            bases = [(await bp.ask(cmd="stats"))["changes"] for bp in procs]
            work = []
            for s in spaces:
                tids = s.tree_ids()
                per_doc = [chain(s, t, -(-args.push_changes // len(tids)), args.item)
                           for t in tids]
                work.append([(tids[j % len(tids)], per_doc[j % len(tids)][j // len(tids)])
                             for j in range(args.push_changes)])
            total = args.devices * args.push_changes
            t0 = time.perf_counter()
            await asyncio.gather(*(push_all(s, w, e)
                                   for s, w, e in zip(spaces, work, engines, strict=True)))
            repairs = await settle(procs, [bases[p] + share[p] * args.push_changes
                                           for p in range(n)], engines, spaces)
            took = time.perf_counter() - t0
            row: dict[str, Any] = {"processes": n, "push_changes": total, "push_s": took,
                                   "push_changes_per_s": total / took,
                                   "rss_mib": [round(bp.rss_mib(), 1) for bp in procs],
                                   "pushes_dropped": sum(e.pushes_dropped for e in engines),
                                   "head_sync_repairs": repairs}
            print(f"(c) {label} x{n}: push {total:,} changes in {took:.2f} s = "
                  f"{total / took:,.0f}/s; RSS {row['rss_mib']} MiB; pushes dropped "
                  f"{row['pushes_dropped']}, head-sync repairs {repairs}", flush=True)
        finally:
            for m in members:
                await m.close()
        try:
            sub = tmp / f"pull-{label}-{n}"  # measure_pull's file names are fixed
            sub.mkdir()
            pull = await measure_pull(sub, argparse.Namespace(**(vars(args) | {"runs": 1})),
                                      procs[0], b_acct)
            row["pull_changes_per_s"] = pull["pull_changes_per_s_median"]
        finally:
            for bp in procs:
                await bp.close()
        out[f"{label}-{n}"] = row
    return out


# --- main -----------------------------------------------------------------------------------------
def table(results: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    a = results.get("size")
    if a:
        mib = 1 << 20
        rows += [
            ("scale run", f"{results['params']['scale']} = {a['spaces']:,} spaces / "
                          f"{a['changes']:,} changes ({a['trees_per_space']} objects x "
                          f"{a['changes_per_tree']} changes per space)"),
            ("synthesis (signed, 2-proc pool + bulk insert)",
             f"{a['synthesis_s']:.0f} s ({a['synthesis_changes_per_s']:,.0f} changes/s)"),
            ("disk: store + WAL + SHM (while serving)",
             f"{a['disk_while_serving']['total'] / mib:,.0f} MiB "
             f"(raw changes {a['bytes_of_raw_changes'] / mib:,.0f} MiB)"),
            ("backup startup (spawn to serving)", f"{a['startup_s']:.1f} s "
                                                  f"(open spaces {a['open_s']:.1f} s)"),
            ("RSS: empty backup", f"{a['rss_empty_mib']:.0f} MiB"),
            ("RSS: loaded backup, serving", f"{a['rss_open_mib']:.0f} MiB "
                                            f"(~{a['rss_per_space_kib']:.0f} KiB per space)"),
            (f"RSS: after head sync of {a['sample_spaces']} spaces with a member",
             f"{a['rss_after_sample_sync_mib']:.0f} MiB (peak {a['hwm_after_sample_sync_mib']:.0f}"
             f"; {a['trees_in_memory']} trees / {a['changes_in_memory']:,} changes cached)"),
            ("document loads in the backup", str(a["document_loads"])),
        ]
    for key, c in (results.get("cluster") or {}).items():
        rows.append((f"cluster {key}: push / pull changes/s, RSS MiB per process",
                     f"{c['push_changes_per_s']:,.0f} / {c.get('pull_changes_per_s', 0):,.0f}"
                     f"  {c['rss_mib']}"))
    b = results.get("throughput")
    if b:
        rows += [
            (f"push: {b['devices']} devices x {b['push_changes_per_device']} changes, "
             f"1 per message (median of {len(b['push_runs'])})",
             f"{b['push_changes_per_s_median']:,.0f} changes/s"),
            (f"pull: fresh device fetches a {b['pull_space_changes']:,}-change space "
             f"(median of {len(b['pull_runs'])})", f"{b['pull_changes_per_s_median']:,.0f} "
                                                   "changes/s"),
            ("backup fetches that space from its owner (offer)",
             f"{b['backup_fetch_changes_per_s']:,.0f} changes/s"),
        ]
    return rows


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform()},
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if not k.startswith("child")},
        "notes": ["bulk load with Store(durable=False); the backup opens the store durable "
                  "(synchronous=FULL) for every measurement",
                  "backup = child process: Node + guard.forbid_documents + BackupPolicy "
                  "(the wiring of `p2psync backup run`, without the local API socket, mDNS "
                  "and metrics endpoint); TCP over loopback"]}
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        tmp = Path(d)
        if "a" in args.only:
            results["size"] = await measure_size(tmp, args)
            for name in ("backup.sqlite3", "member.sqlite3"):  # free the disk before (b)
                for suffix in ("", "-wal", "-shm"):
                    Path(tmp / (name + suffix)).unlink(missing_ok=True)
        if "b" in args.only:
            results["throughput"] = await measure_throughput(tmp, args)
        if args.store == "postgresql":
            if not args.pg_url:
                raise SystemExit("--store postgresql needs --pg-url (scripts/pg_cluster.sh "
                                 "start DIR prints one)")
            results["cluster"] = await measure_cluster(tmp, args, args.pg_url)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiplies --spaces and --changes (0.1 = 100 spaces / 100 000)")
    ap.add_argument("--spaces", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=1_000_000)
    ap.add_argument("--trees", type=int, default=10, help="objects per space")
    ap.add_argument("--owners", type=int, default=20, help="owner accounts of the spaces")
    ap.add_argument("--item", type=int, default=160,
                    help="bytes of (random) Automerge change per tree change (~500 B raw)")
    ap.add_argument("--sample", type=int, default=20, help="spaces the member head-syncs")
    ap.add_argument("--sample-edits", type=int, default=5, help="offline edits per sample space")
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--docs", type=int, default=5, help="documents per pushing device")
    ap.add_argument("--push-changes", type=int, default=300, help="per device per run")
    ap.add_argument("--pull-changes", type=int, default=20_000)
    ap.add_argument("--pull-trees", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--only", default="ab", help="a: size, b: throughput")
    ap.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                    help="postgresql: also (c) 1, 2, 4 backup processes on one database "
                         "beside one on SQLite")
    ap.add_argument("--pg-url", help="PostgreSQL server for --store postgresql")
    ap.add_argument("--tmp", help="directory for the stores (default: system temp)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child-backup", nargs=3, metavar=("STORE", "ACCOUNT", "DEVICE"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--durable", dest="child_durable", action="store_true", default=True,
                    help=argparse.SUPPRESS)
    ap.add_argument("--no-durable", dest="child_durable", action="store_false",
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_backup:
        run = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop

            run = uvloop.run  # as `p2psync backup run`
        run(child_backup(*args.child_backup, args.child_durable))
        return
    t0 = time.perf_counter()
    results = asyncio.run(amain(args))
    results["wall_s"] = time.perf_counter() - t0
    rows = table(results)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'backup benchmark':<{width}}  value")
    for name, val in rows:
        print(f"{name:<{width}}  {val}")
    out = args.out or Path("bench-results") / f"backup-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out} (total {results['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
