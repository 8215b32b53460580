"""p2psync vs automerge-repo, side by side: the same workloads in one run, one process per peer.

    python3 scripts/bench_compare.py            # full run (~5 min on 2 vCPUs)
    python3 scripts/bench_compare.py --quick    # smoke run (~1 min)

Systems: p2psync over QUIC, p2psync over TCP (``scripts/compare/p2psync_peer.py``), and
automerge-repo over WebSocket (``scripts/compare/am_peer.mjs``; its npm dependencies are
installed here with ``npm ci`` from the committed lockfile). Every peer is its own process on
127.0.0.1, driven over stdin/stdout with JSON lines, so RSS and CPU are per peer.

Workloads (sizes are flags):

1. latency: the writer puts the current CLOCK_MONOTONIC time (µs) into key ``t`` of a document
   (one map put, one change); the reader's change notification reads it and reports
   now − t. One edit at a time (the next starts after the reader saw the last), rotating over
   ``--latency-docs`` documents so that no document is edited more than once per 120 ms:
   automerge-repo throttles each document's sync to one message per 100 ms
   (``DocSynchronizer.syncDebounceRate``), and this workload measures an edit's path, not
   that throttle (workload 2 is where it helps automerge-repo, as designed).
2. throughput: the writer makes ``--burst-edits`` edits (key ``k<i>``) to one document as
   fast as it can, yielding to its event loop after each; the rate is edits ÷ (reader has the
   last one − writer started).
3. initial sync: a source holds ``--docs`` documents × ``--doc-edits`` edits (one put and one
   change each); a fresh peer connects and we time until it holds all of them — p2psync: joins
   the space by invite until its head-sync fingerprint equals the source's (verified and
   stored, not yet decrypted); automerge-repo: ``find()`` of every document until each holds
   its last edit (loaded in memory). p2psync's lazy materialisation of every document is timed
   separately afterwards.
4. memory: VmRSS of the receiving (fresh) peer after workload 3 (and after materialising).
5. hot key: like 2, but every edit overwrites the same key ``h`` (a cursor, a slider);
   ``--hot-edits`` (10 000); done when the reader holds the last value.
6. typing: like 2, but every edit is a one-character splice at the end of the text field
   ``txt``; ``--typing-edits`` (10 000); done when the reader's text has every character.

Output: a markdown table (absolute figures and p2psync ÷ automerge-repo), a JSON file
(``bench-results/compare-<timestamp>.json`` or ``--out``) and PNG plots of the latency
distributions next to it. ``--profile DIR`` runs the p2psync peers under ``py-spy record`` and
prints their top costs (the timings of a profiled run are perturbed; do not compare them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COMPARE = HERE / "compare"
REPO = HERE.parent
PY_PEER = COMPARE / "p2psync_peer.py"
JS_PEER = COMPARE / "am_peer.mjs"
SYSTEMS = ("p2psync-quic", "p2psync-tcp", "automerge-repo")
BASELINE = "automerge-repo"
MIN_DOC_GAP = 0.120  # s between two edits of one document in workload 1 (> the 100 ms throttle)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- setup --------------------------------------------------------------------------------------
def npm_ci() -> None:
    """Install the harness' pinned npm dependencies unless node_modules already matches."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("node and npm are needed for the automerge-repo side (Node.js >= 20)")
    lock = COMPARE / "package-lock.json"
    installed = COMPARE / "node_modules" / ".package-lock.json"
    if installed.exists() and _lock_packages(installed) == _lock_packages(lock):
        return
    log("npm ci (scripts/compare) ...")
    quiet = ["--no-audit", "--no-fund", "--loglevel=error"]
    ci = subprocess.run(["npm", "ci", *quiet], cwd=COMPARE, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, text=True)
    if ci.returncode != 0:
        # A registry mirror without cbor-x's optional native helpers (@cbor-extract/*) makes
        # the lockfile lack them and `npm ci` refuse it; `npm install --no-save` installs the
        # same locked versions without the optional helper and leaves the lockfile untouched.
        log("npm ci refused the lockfile; falling back to npm install --no-save (same pins)")
        subprocess.run(["npm", "install", "--no-save", *quiet], cwd=COMPARE, check=True,
                       stdout=subprocess.DEVNULL)


def _lock_packages(path: Path) -> dict[str, str]:
    pkgs = json.loads(path.read_text()).get("packages", {})
    return {k: v.get("version", "") for k, v in pkgs.items() if k}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    pkgs = _lock_packages(COMPARE / "package-lock.json")
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
        "node": node, "platform": platform.platform(),
        "automerge_repo": pkgs.get("node_modules/@automerge/automerge-repo"),
        "automerge_js": pkgs.get("node_modules/@automerge/automerge"),
        "git_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                     capture_output=True, text=True).stdout.strip(),
        # other engineers share this checkout: say whether p2psync/ had uncommitted changes
        "p2psync_dirty": subprocess.run(["git", "status", "--porcelain", "p2psync"], cwd=REPO,
                                        capture_output=True, text=True).stdout.split("\n")[:-1],
    }


# --- one peer process ---------------------------------------------------------------------------
class Peer:
    """A peer process: requests get replies by id; events queue up for the workload."""

    def __init__(self, name: str, argv: list[str], logfile: Path) -> None:
        self.name = name
        self.argv = argv
        self.logfile = logfile
        self.proc: asyncio.subprocess.Process | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.next_id = 0
        self._reader: asyncio.Task[None] | None = None

    async def spawn(self) -> Peer:
        self._err = open(self.logfile, "ab")  # noqa: SIM115 (closed in close())
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=self._err, limit=1 << 24)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # not ours (e.g. a profiler banner)
            if "ev" in msg:
                self.events.put_nowait(msg)
            else:
                fut = self.pending.pop(msg.get("id", -1), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(RuntimeError(f"{self.name} exited (see {self.logfile})"))

    async def call(self, cmd: str, timeout: float = 120.0, **args: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        self.proc.stdin.write((json.dumps({"id": self.next_id, "cmd": cmd, **args}) + "\n")
                              .encode())
        await self.proc.stdin.drain()
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise RuntimeError(f"{self.name}.{cmd}: {reply['error']}")
        return reply

    async def event(self, timeout: float = 30.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.call("quit", timeout=20)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)  # py-spy writes its file at exit
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await self._reader
        self._err.close()


@dataclass
class Run:
    """Where one comparison run keeps its temp files and what it found."""

    tmp: Path
    profile_dir: Path | None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def peer(self, system: str, role: str, *, store: str | None = None,
             keys: Path | None = None) -> Peer:
        name = f"{system}-{role}"
        if system == BASELINE:
            # e.g. BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile that side
            argv = ["node", *os.environ.get("BENCH_NODE_ARGS", "").split(), str(JS_PEER)]
        else:
            argv = [sys.executable, str(PY_PEER), "--store", str(self.tmp / (store or name))]
            if keys is not None:
                argv += ["--keys", str(keys)]
            if self.profile_dir is not None:
                out = self.profile_dir / f"{name}.txt"
                argv = ["py-spy", "record", "--nonblocking", "--rate", "250", "--format", "raw",
                        "-o", str(out), "--", *argv]
        return Peer(name, argv, self.tmp / f"{name}.log")


def transport_of(system: str) -> str:
    return system.split("-", 1)[1] if system != BASELINE else "ws"


async def start_listening(p: Peer, system: str) -> str:
    if system == BASELINE:
        return str((await p.call("start", listen=True))["address"])
    return str((await p.call("start", transport=transport_of(system)))["address"])


# --- workloads 1 and 2 --------------------------------------------------------------------------
async def pair_workloads(run: Run, system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Latency (1) and throughput (2) between a writer and a connected reader."""
    w = await run.peer(system, "writer").spawn()
    r = await run.peer(system, "reader").spawn()
    try:
        address = await start_listening(w, system)
        k = args.latency_docs
        docs = (await w.call("create_docs", n=k + 3))["docs"]
        if system == BASELINE:
            await r.call("start")
            await r.call("join", address=address, docs=docs, timeout=60)
        else:
            invite = (await w.call("invite"))["invite"]
            await r.call("start")
            await r.call("join", invite=invite, address=address, docs=docs, timeout=60)

        last_edit = [0.0] * k

        async def one(d: int) -> int:
            gap = last_edit[d] + MIN_DOC_GAP - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            last_edit[d] = time.monotonic()
            ts = (await w.call("edit", doc=d))["ts"]
            while True:
                ev = await r.event(timeout=30)
                if ev["ev"] == "t" and ev["doc"] == d and ev["v"] == ts:
                    return int(ev["lat_us"])

        out: dict[str, Any] = {}
        if 1 in args.workload_set:
            for d in range(k):  # warm-up: every document edited and seen once, not recorded
                await one(d)
            t = time.perf_counter()
            out["latency_us"] = [await one(i % k) for i in range(args.latency_edits)]
            out["latency_wall_s"] = time.perf_counter() - t

        async def stream(doc: int, n: int, mode: str, window: float = 0.0,
                         **want: Any) -> dict[str, float]:
            """``n`` edits of ``mode`` as fast as the writer goes; until the reader sees the
            last one (its ``expect`` condition)."""
            await r.call("expect", doc=doc, **want)
            extra = {} if system == BASELINE else {"window": window}
            b = await w.call("burst", doc=doc, n=n, mode=mode, timeout=900, **extra)
            while True:
                ev = await r.event(timeout=900)
                if ev["ev"] == "done" and ev["doc"] == doc:
                    break
            seconds = (ev["t_us"] - b["t0_us"]) / 1e6
            return {"edits": n, "seconds": seconds, "edits_per_s": n / seconds,
                    "writer_edits_per_s": n / ((b["t1_us"] - b["t0_us"]) / 1e6)}

        if 2 in args.workload_set:
            n = args.burst_edits
            b2 = await stream(k, n, "keys", key=f"k{n - 1}")
            out.update(burst_edits=n, burst_seconds=b2["seconds"], edits_per_s=b2["edits_per_s"],
                       writer_edits_per_s=b2["writer_edits_per_s"])
        if 5 in args.workload_set:
            n = args.hot_edits
            out["hot"] = await stream(k + 1, n, "hot", args.stream_window, key="h", value=n - 1)
        if 6 in args.workload_set:
            n = args.typing_edits
            out["typing"] = await stream(k + 2, n, "text", args.stream_window, key="txt",
                                         length=n)
        out.update(rss_writer_kb=(await w.call("rss"))["rss_kb"],
                   rss_reader_kb=(await r.call("rss"))["rss_kb"])
        return out
    finally:
        await r.close()
        await w.close()


# --- workloads 3 and 4 --------------------------------------------------------------------------
async def seed_p2psync(run: Run, args: argparse.Namespace, transports: list[str]) -> dict[str, Any]:
    """Build the source store once (it takes ~0.3 ms per edit) and copy it per transport."""
    keys = run.tmp / "source-keys.json"
    s = await run.peer("p2psync", "seed", store="seed.sqlite3", keys=keys).spawn()
    try:
        await s.call("start")
        seeded = await s.call("seed", docs=args.docs, edits=args.doc_edits, timeout=900)
        invites = {t: await s.call("invite") for t in transports}
    finally:
        await s.close()
    log(f"  p2psync source seeded in {seeded['seconds']:.1f} s")
    return {"keys": keys, "seed_seconds": seeded["seconds"], "invites": invites}


async def initial_sync(run: Run, system: str, args: argparse.Namespace,
                       seeded: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if system == BASELINE:
        s = run.peer(system, "source")
    else:
        store = f"{system}-source.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            src = run.tmp / f"seed.sqlite3{suffix}"
            if src.exists():
                shutil.copy(src, run.tmp / f"{store}{suffix}")
        assert seeded is not None
        s = run.peer(system, "source", store=store, keys=seeded["keys"])
    await s.spawn()
    f = await run.peer(system, "fresh").spawn()
    try:
        address = await start_listening(s, system)
        await f.call("start")
        if system == BASELINE:
            src = await s.call("seed", docs=args.docs, edits=args.doc_edits, timeout=900)
            out["seed_seconds"] = src["seconds"]
            got = await f.call("fetch", address=address, docs=src["docs"],
                               last_key=f"k{args.doc_edits - 1}", timeout=900)
        else:
            assert seeded is not None
            inv = seeded["invites"][transport_of(system)]
            out["seed_seconds"] = seeded["seed_seconds"]
            got = await f.call("fetch", invite=inv["invite"], address=address,
                               space_hash=inv["space_hash"], timeout=900)
        out.update(sync_seconds=got["seconds"], connect_seconds=got["join_seconds"],
                   docs=got["docs"])
        out["rss_fresh_kb"] = (await f.call("rss"))["rss_kb"]
        out["rss_source_kb"] = (await s.call("rss"))["rss_kb"]
        mat = await f.call("materialise", timeout=900)
        out["materialise_seconds"] = mat["seconds"]
        out["rss_fresh_materialised_kb"] = (await f.call("rss"))["rss_kb"]
        return out
    finally:
        await f.close()
        await s.close()


async def guarded(run: Run, system: str, what: str,
                  job: Coroutine[Any, Any, dict[str, Any]]) -> bool:
    """Run one system's workloads; a failure is logged and recorded in its results
    (``errors``) instead of ending the whole run and losing every other figure."""
    try:
        run.results[system].update(await job)
        return True
    except Exception as exc:  # a peer's error reply, a timeout, a crashed process
        log(f"  {system} workloads {what} failed: {type(exc).__name__}: {exc}"[:500])
        run.results[system].setdefault("errors", []).append(
            {"workloads": what, "error": f"{type(exc).__name__}: {exc}"[:2000]})
        return False


# --- report -------------------------------------------------------------------------------------
def pct(xs: list[int], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))] / 1000  # ms


def summarise(res: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    if "latency_us" in res:
        lat = res["latency_us"]
        out.update(p50_ms=pct(lat, 50), p99_ms=pct(lat, 99), mean_ms=statistics.fmean(lat) / 1000,
                   max_ms=max(lat) / 1000)
    if "edits_per_s" in res:
        out["edits_per_s"] = res["edits_per_s"]
    if "hot" in res:
        out["hot_edits_per_s"] = res["hot"]["edits_per_s"]
    if "typing" in res:
        out["typing_edits_per_s"] = res["typing"]["edits_per_s"]
    if "sync_seconds" in res:
        out.update(sync_s=res["sync_seconds"], rss_mb=res["rss_fresh_kb"] / 1024,
                   sync_plus_materialise_s=res["sync_seconds"] + res["materialise_seconds"],
                   rss_materialised_mb=res["rss_fresh_materialised_kb"] / 1024)
    return out


ROWS = [  # key, label, unit, which direction is better
    ("p50_ms", "1. edit latency p50", "ms", "lower"),
    ("p99_ms", "1. edit latency p99", "ms", "lower"),
    ("edits_per_s", "2. sustained edits/s at the reader", "edits/s", "higher"),
    ("hot_edits_per_s", "5. hot key: {hot} edits to one key, edits/s at the reader{win}",
     "edits/s", "higher"),
    ("typing_edits_per_s", "6. typing: {typing} one-character splices, edits/s at the reader{win}",
     "edits/s", "higher"),
    ("sync_s", "3. initial sync, {docs} docs × {edits} edits", "s", "lower"),
    ("sync_plus_materialise_s", "3b. … + open every document", "s", "lower"),
    ("rss_mb", "4. RSS of the fresh peer after 3", "MiB", "lower"),
    ("rss_materialised_mb", "4b. … after opening every document", "MiB", "lower"),
]

# issue 16: the TypeScript peer (Node, WebSocket) as system p2psync-js, workloads 1, 3, 4 only
import bench_compare_js  # noqa: E402

SYSTEMS = (*SYSTEMS, bench_compare_js.SYSTEM)
ROWS[2:2] = bench_compare_js.ROWS
summarise = bench_compare_js.with_js_summary(summarise, pct)


def table(summary: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    systems = [s for s in SYSTEMS if s in summary]
    others = [s for s in systems if s != BASELINE]
    head = ["workload", *systems, *(f"{s} ÷ {BASELINE}" for s in others if BASELINE in summary)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, unit, better in ROWS:
        if not any(key in summary[s] for s in systems):
            continue
        cells = [label.format(docs=args.docs, edits=args.doc_edits, hot=args.hot_edits,
                              typing=args.typing_edits,
                              win=f" (p2psync window {args.stream_window * 1000:g} ms)")
                 + f" ({unit}, {better} "
                 "is better)"]
        for s in systems:
            v = summary[s].get(key)
            cells.append("n/a" if v is None else f"{v:,.{1 if v >= 100 else 2}f}")
        if BASELINE in summary:
            base = summary[BASELINE].get(key)
            for s in others:
                v = summary[s].get(key)
                cells.append("—" if v is None or not base else f"{v / base:.2f}×")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, Any]], stem: Path) -> list[str]:
    """CDF and histogram of workload-1 latencies per system (log-scaled time axis)."""
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is missing (pip install matplotlib): no plots")
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    series = {s: np.array(r["latency_us"]) / 1000 for s, r in results.items() if "latency_us" in r}
    if not series:
        return []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    lo = max(min(v.min() for v in series.values()) * 0.8, 1e-3)
    hi = max(v.max() for v in series.values()) * 1.2
    bins = np.geomspace(lo, hi, 60)
    for s, v in series.items():
        xs = np.sort(v)
        ax1.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post",
                 label=f"{s} (p50 {np.percentile(v, 50):.2f}, p99 {np.percentile(v, 99):.2f} ms)")
        ax2.hist(v, bins=bins, histtype="step", linewidth=1.5, label=s)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("edit propagation latency (ms, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_ylabel("fraction of edits ≤ x")
    ax1.set_title("Latency CDF (workload 1)")
    ax1.axhline(0.99, color="grey", linestyle=":", linewidth=1)
    ax1.legend(loc="lower right", fontsize=8)
    ax2.set_ylabel("edits")
    ax2.set_title(f"Latency histogram ({len(next(iter(series.values())))} edits each)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path = stem.with_name(stem.name + "-latency.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]


def profile_summary(path: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Top functions by self and by inclusive share of samples from a py-spy raw file."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        self_c[frames[-1]] += n
        for fr in set(frames):
            incl[fr] += n
    if not total:
        return {"self": [], "inclusive": []}
    return {
        "samples": [("total", float(total))],
        "self": [(f, round(100 * c / total, 1)) for f, c in self_c.most_common(top)],
        "inclusive": [(f, round(100 * c / total, 1)) for f, c in incl.most_common(top * 3)
                      if not f.startswith(("<module>", "run (", "_run_once", "run_forever",
                                           "_run (", "main ("))][:top],
    }


def _frame(f: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)`` so lines of one function merge."""
    name, _, loc = f.partition(" (")
    file = loc.rstrip(")").rsplit(":", 1)[0]
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if "p2psync" in parts else Path(file).name
    return f"{name} ({short})"


# --- main ---------------------------------------------------------------------------------------
async def amain(args: argparse.Namespace) -> int:
    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            raise SystemExit(f"unknown system {s}; choose from {', '.join(SYSTEMS)}")
    workloads = {int(w) for w in args.workloads.split(",")}
    args.workload_set = sorted(workloads)
    if BASELINE in systems:
        npm_ci()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else REPO / "bench-results" / f"compare-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    profile_dir = Path(args.profile).resolve() if args.profile else None
    if profile_dir is not None:
        if shutil.which("py-spy") is None:
            raise SystemExit("--profile needs py-spy (pip install py-spy)")
        profile_dir.mkdir(parents=True, exist_ok=True)
    tmp_root = "/dev/shm" if Path("/dev/shm").is_dir() else None
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="p2psync-compare-", dir=tmp_root) as tmp:
        run = Run(Path(tmp), profile_dir)
        for s in systems:
            run.results[s] = {}
        if bench_compare_js.SYSTEM in systems:  # its own driver (one Node process), 1 and 3-4
            systems.remove(bench_compare_js.SYSTEM)
            log(f"workloads 1,3,4: {bench_compare_js.SYSTEM} ...")
            await guarded(run, bench_compare_js.SYSTEM, "1,3-4", bench_compare_js.workloads(args))
        if workloads & {1, 2, 5, 6}:
            for s in systems:
                log(f"workloads {','.join(str(w) for w in sorted(workloads & {1, 2, 5, 6}))}: "
                    f"{s} ...")
                await guarded(run, s, "1,2,5,6", pair_workloads(run, s, args))
        if workloads & {3, 4}:
            p2p = [transport_of(s) for s in systems if s != BASELINE]
            seeded = await seed_p2psync(run, args, p2p) if p2p else None
            for s in systems:
                log(f"workloads 3-4: {s} ...")
                if not await guarded(run, s, "3-4", initial_sync(run, s, args, seeded)):
                    # once more: on a loaded machine automerge-repo's find() can give up
                    # ("Document … is unavailable"); the retry is recorded in the JSON
                    log(f"workloads 3-4: {s} again ...")
                    await guarded(run, s, "3-4 (retry)", initial_sync(run, s, args, seeded))
        if not args.keep_logs:
            for logf in Path(tmp).glob("*.log"):
                if logf.stat().st_size:
                    log(f"  stderr of {logf.stem}: {logf.read_text()[-2000:]}")
    elapsed = time.perf_counter() - t_start

    summary = {s: summarise(r) for s, r in run.results.items()}
    md = table(summary, args)
    plots = plot(run.results, out.with_suffix(""))
    profiles = {}
    if profile_dir is not None:
        for f in sorted(profile_dir.glob("*.txt")):
            profiles[f.stem] = profile_summary(f)
    doc = {
        "when": stamp, "elapsed_s": elapsed, "machine": machine(), "args": vars(args),
        "summary": summary, "table_markdown": md, "plots": plots, "profiles": profiles,
        "results": run.results,
    }
    out.write_text(json.dumps(doc, indent=1))
    print(md)
    print(f"\nmachine: {doc['machine']['nproc']} × {doc['machine']['cpu']}, Python "
          f"{doc['machine']['python']}, Node {doc['machine']['node']}, automerge-repo "
          f"{doc['machine']['automerge_repo']}; run took {elapsed:.0f} s")
    print(f"JSON: {out}")
    for p in plots:
        print(f"plot: {p}")
    for name, prof in profiles.items():
        print(f"\nprofile {name}: top self time (% of samples)")
        for fn, share in prof["self"][:10]:
            print(f"  {share:5.1f}  {fn}")
        print("  top inclusive:")
        for fn, share in prof["inclusive"][:12]:
            print(f"  {share:5.1f}  {fn}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    ap.add_argument("--workloads", default="1,2,3,4,5,6", help="comma-separated subset of 1-6")
    ap.add_argument("--latency-edits", type=int, help="workload 1 edits (default 1000)")
    ap.add_argument("--latency-docs", type=int, help="documents workload 1 rotates over (64)")
    ap.add_argument("--burst-edits", type=int, help="workload 2 edits (default 5000)")
    ap.add_argument("--hot-edits", type=int, help="workload 5 edits to one key (default 10000)")
    ap.add_argument("--typing-edits", type=int, help="workload 6 splices (default 10000)")
    ap.add_argument("--stream-window", type=float, default=0.05,
                    help="p2psync's coalescing window (s) in workloads 5-6 (default 0.05, "
                    "Document's default; automerge-repo throttles each document's sync to one "
                    "message per 0.1 s by design; 0: one signed change per edit)")
    ap.add_argument("--docs", type=int, help="workload 3 documents (default 1000)")
    ap.add_argument("--doc-edits", type=int, help="workload 3 edits per document (default 100)")
    ap.add_argument("--out", help="JSON path (default bench-results/compare-<timestamp>.json)")
    ap.add_argument("--profile", metavar="DIR", help="run p2psync peers under py-spy into DIR")
    ap.add_argument("--keep-logs", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    quick = {"latency_edits": 200, "latency_docs": 32, "burst_edits": 500, "hot_edits": 500,
             "typing_edits": 500, "docs": 50,
             "doc_edits": 20}
    full = {"latency_edits": 1000, "latency_docs": 64, "burst_edits": 5000, "hot_edits": 10000,
            "typing_edits": 10000, "docs": 1000,
            "doc_edits": 100}
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
