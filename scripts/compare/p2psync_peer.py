"""One p2psync peer driven by ``scripts/bench_compare.py`` over stdin/stdout (JSON lines).

Each peer of the comparison runs in its own process, like the automerge-repo peer
(``am_peer.mjs``), so RSS and CPU are per peer and the two sides do not share an event loop.
Both peers speak the same line protocol:

* request ``{"id": n, "cmd": "...", ...}`` -> reply ``{"id": n, ...}`` or
  ``{"id": n, "error": "..."}``, one at a time and in order;
* event    ``{"ev": "t", "doc": i, "v": µs, "lat_us": µs}`` when a watched document's key ``t``
  changes (the reader's change notification), ``{"ev": "done", "doc": i, "t_us": µs}`` when an
  expected key shows up.

Times are ``CLOCK_MONOTONIC`` microseconds (``time.monotonic_ns``), the same clock Node's
``process.hrtime`` reads, so a writer's timestamp can be subtracted from a reader's clock.
Only the public API is used: :class:`p2psync.node.Node`, ``Space.new_document``,
``Document.edit`` / ``get`` and ``Space.tree_listeners``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

# Benchmark the checkout this script lives in, not whatever `p2psync` is pip-installed.
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from p2psync.crypto import AccountKey, DeviceKey  # noqa: E402
from p2psync.node import Node, NodeConfig  # noqa: E402
from p2psync.replica.document import ROOT, AsyncFlusher, Text  # noqa: E402
from p2psync.replica.space import Space  # noqa: E402
from p2psync.replica.tree import AddResult  # noqa: E402
from p2psync.sync.engine import EngineConfig  # noqa: E402


def now_us() -> int:
    return time.monotonic_ns() // 1000


def rss_kb() -> dict[str, int]:
    """Current and peak resident set size of this process, from /proc (kB)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, val = line.split(":", 1)
            out["rss_kb" if key == "VmRSS" else "hwm_kb"] = int(val.split()[0])
    return out


class Peer:
    """A Node plus the benchmark verbs; ``emit`` writes one JSON line to the orchestrator."""

    def __init__(self, store: Path, keys: Path | None) -> None:
        self.store = store
        self.keys = keys
        self.node: Node | None = None
        self.space: Space | None = None
        self.docs: list[bytes] = []  #: tree ids, indexed like the orchestrator's doc numbers
        self.index: dict[bytes, int] = {}
        self.dirty: set[bytes] = set()  #: docs changed since the last read (coalesced)
        self.scheduled = False
        self.last_t: dict[int, Any] = {}
        self.expect: dict[int, str] = {}  #: doc index -> key whose arrival ends a burst
        self.expect_value: dict[int, tuple[str, Any]] = {}  #: ... and its value or length

    def emit(self, obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def _keys(self) -> tuple[AccountKey, DeviceKey]:
        """Reuse keys written by an earlier process (so a seeded store can be served again)."""
        if self.keys is not None and self.keys.exists():
            d = json.loads(self.keys.read_text())
            return AccountKey(bytes.fromhex(d["account"])), DeviceKey(bytes.fromhex(d["device"]))
        acc, dev = AccountKey.generate(), DeviceKey.generate()
        if self.keys is not None:
            self.keys.write_text(json.dumps({"account": acc.seed.hex(), "device": dev.seed.hex()}))
        return acc, dev

    async def start(self, transport: str | None) -> dict[str, Any]:
        """Open the store; listen on 127.0.0.1 with ``transport`` (None: do not listen).
        Non-durable SQLite (WAL, synchronous=NORMAL): the automerge-repo peers keep everything
        in memory, so neither side pays an fsync per change."""
        acc, dev = self._keys()
        listen = [("127.0.0.1", 0, transport)] if transport else []
        cfg = NodeConfig(listen=listen, durable=False, engine=EngineConfig())  # type: ignore[arg-type]
        self.node = await Node(self.store, acc, dev, config=cfg).start()
        if self.node.spaces:
            self.space = next(iter(self.node.spaces.values()))
            self.docs = self.space.tree_ids()
        out: dict[str, Any] = {"docs": len(self.docs)}
        if transport:
            out["address"] = f"{transport}:{self.node.address(transport)}"
        return out

    # --- writer / source ---------------------------------------------------------------------
    def _space(self) -> Space:
        assert self.node is not None
        if self.space is None:
            self.space = self.node.create_space()
        return self.space

    def create_docs(self, n: int) -> dict[str, Any]:
        space = self._space()
        for _ in range(n):
            self.docs.append(space.new_document().tree.id)
        return {"docs": [d.hex() for d in self.docs]}

    def invite(self) -> dict[str, Any]:
        assert self.node is not None
        space = self._space()
        return {"invite": self.node.invite(space.id).encode(), "space": space.id,
                "space_hash": self.node.space_hash(space.id).hex()}

    async def seed(self, docs: int, edits: int) -> dict[str, Any]:
        """``docs`` documents × ``edits`` edits, one map put (and one tree change) each."""
        space = self._space()
        t = time.perf_counter()
        for d in range(docs):
            doc = space.new_document()
            self.docs.append(doc.tree.id)
            for j in range(edits):
                with doc.edit() as e:
                    e.put(ROOT, f"k{j}", j)
            if d % 50 == 49:
                await asyncio.sleep(0)
        # what the node does when it closes (and the space when it drops a document from its
        # open set): documents written since their last snapshot snapshot now, so the store
        # served later is the one the invite's space hash describes; timed with the seed
        space.settle()
        return {"seconds": time.perf_counter() - t}

    def edit(self, doc: int) -> dict[str, Any]:
        """One edit = one map put of the current time; returns the value written."""
        ts = now_us()
        d = self._space().document(self.docs[doc])
        with d.edit() as e:
            e.put(ROOT, "t", ts)
        return {"ts": ts}

    async def burst(self, doc: int, n: int, mode: str = "keys",
                    window: float = 0.0) -> dict[str, Any]:
        """``n`` edits as fast as possible, yielding to the loop after each so the engine can
        send while we write (as an app would between keystrokes). ``mode``: ``keys`` puts
        ``k<i> = i`` (a growing map), ``hot`` puts ``h = i`` (one key overwritten), ``text``
        appends one character to the text field ``txt`` (typing). ``window`` > 0 coalesces the
        edits of that many seconds into one signed change (``Document.window`` through
        :class:`AsyncFlusher`, as an app that sets a window gets)."""
        d = self._space().document(self.docs[doc])
        d.window = window
        fl = AsyncFlusher(d)
        txt = None
        if mode == "text":
            with d.edit() as e:
                e.put(ROOT, "txt", Text(""))
            txt = d.obj(["txt"])
        t0 = now_us()
        for i in range(n):
            with fl.edit() as e:
                if mode == "keys":
                    e.put(ROOT, f"k{i}", i)
                elif mode == "hot":
                    e.put(ROOT, "h", i)
                else:
                    assert txt is not None
                    e.splice_text(txt, i, 0, "abcdefghij"[i % 10])
            await asyncio.sleep(0)
        fl.close()  # the last window's edits go out now
        d.window = 0.0
        return {"t0_us": t0, "t1_us": now_us()}

    # --- reader / fresh peer -----------------------------------------------------------------
    async def join(self, invite: str, address: str, docs: list[str]) -> dict[str, Any]:
        """Join the writer's space, wait for the given documents, open them and watch them."""
        assert self.node is not None
        node = self.node
        space = await node.join(invite, [address])
        self.space = space
        self.docs = [bytes.fromhex(h) for h in docs]
        self.index = {tid: i for i, tid in enumerate(self.docs)}
        await node.wait_for(lambda: all(space.has_tree(t) for t in self.docs), 60)
        for tid in self.docs:
            space.document(tid).to_json()  # materialise now, not inside the first measurement
        space.tree_listeners.append(self._on_tree)
        return {}

    def _on_tree(self, space_id: str, tree_id: bytes, result: AddResult) -> None:
        """The change notification: runs inside the sync path, so only mark the document and
        read it on the next loop turn (several changes that arrived together -> one read)."""
        if tree_id in self.index:
            self.dirty.add(tree_id)
            if not self.scheduled:
                self.scheduled = True
                asyncio.get_running_loop().call_soon(self._read_dirty)

    def _read_dirty(self) -> None:
        self.scheduled = False
        assert self.space is not None
        dirty, self.dirty = self.dirty, set()
        for tid in dirty:
            i = self.index[tid]
            doc = self.space.document(tid)
            v = doc.get(["t"])
            t = now_us()
            if v is not None and v != self.last_t.get(i):
                self.last_t[i] = v
                self.emit({"ev": "t", "doc": i, "v": v, "lat_us": t - v})
            key = self.expect.get(i)
            if key is not None and self._expected(i, doc.get([key])):
                del self.expect[i]
                self.emit({"ev": "done", "doc": i, "t_us": t})

    def _expected(self, i: int, got: Any) -> bool:
        """Whether a burst's end shows: the key exists, equals ``value``, or is ``length``
        long (set by ``expect``)."""
        want = self.expect_value.get(i)
        if got is None:
            return False
        if want is None:
            return True
        kind, v = want
        return bool(got == v) if kind == "value" else len(got) >= v

    async def fetch(self, invite: str, address: str, space_hash: str) -> dict[str, Any]:
        """Fresh peer: join and wait until our copy of the space equals the source's (every
        tree and head verified and stored). Measured from before the connection opens."""
        assert self.node is not None
        node = self.node
        t = time.perf_counter()
        space = await node.join(invite, [address])
        t_joined = time.perf_counter() - t
        await node.wait_for(lambda: node.space_hash(space.id).hex() == space_hash, 600)
        self.space = space
        return {"seconds": time.perf_counter() - t, "join_seconds": t_joined,
                "docs": len(space.tree_ids())}

    def materialise(self) -> dict[str, Any]:
        """Decrypt and load every document (what automerge-repo's find() has already done)."""
        assert self.space is not None
        t = time.perf_counter()
        n = sum(len(self.space.document(tid).to_json()) for tid in self.space.tree_ids())
        return {"seconds": time.perf_counter() - t, "keys": n}


async def serve(peer: Peer) -> None:
    """Answer requests one at a time, in order (the orchestrator waits for each reply)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def handle(req: dict[str, Any]) -> bool:
        cmd = req.pop("cmd")
        rid = req.pop("id")
        try:
            if cmd == "start":
                out = await peer.start(req.get("transport"))
            elif cmd == "create_docs":
                out = peer.create_docs(req["n"])
            elif cmd == "invite":
                out = peer.invite()
            elif cmd == "seed":
                out = await peer.seed(req["docs"], req["edits"])
            elif cmd == "edit":
                out = peer.edit(req["doc"])
            elif cmd == "burst":
                out = await peer.burst(req["doc"], req["n"], req.get("mode", "keys"),
                                       req.get("window", 0.0))
            elif cmd == "join":
                out = await peer.join(req["invite"], req["address"], req["docs"])
            elif cmd == "expect":
                peer.expect[req["doc"]] = req["key"]
                if "value" in req:
                    peer.expect_value[req["doc"]] = ("value", req["value"])
                elif "length" in req:
                    peer.expect_value[req["doc"]] = ("length", req["length"])
                out = {}
            elif cmd == "fetch":
                out = await peer.fetch(req["invite"], req["address"], req["space_hash"])
            elif cmd == "materialise":
                out = peer.materialise()
            elif cmd == "rss":
                out = rss_kb()
            elif cmd == "quit":
                if peer.node is not None:
                    await peer.node.close()
                peer.emit({"id": rid})
                return False
            else:
                raise ValueError(f"unknown command {cmd}")
        except Exception as exc:  # report to the orchestrator, keep serving
            peer.emit({"id": rid, "error": f"{type(exc).__name__}: {exc!r}"})
            return True
        peer.emit({"id": rid, **out})
        return True

    while (line := await reader.readline()) and await handle(json.loads(line)):
        pass
    if peer.node is not None:
        await peer.node.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", type=Path, required=True, help="SQLite file of this peer")
    ap.add_argument("--keys", type=Path, help="JSON file with the key seeds (reused if present)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)  # quiet: stdout is the protocol
    asyncio.run(serve(Peer(args.store, args.keys)))


if __name__ == "__main__":
    main()
