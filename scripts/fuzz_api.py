#!/usr/bin/env python3
"""Fuzz the local API of a real agent (``p2psync run`` in a subprocess, a real Unix socket).

Hypothesis generates requests: every operation of the dispatch table with its declared fields
filled with good, near-miss and hostile values (wrong types, list indexes past the end, deep
nesting, huge integers, unknown fields), broken envelopes and lines that are not JSON. Each one
must be answered on the same connection (a response line, in order), none may be an
``InternalError``, and the agent must still answer ``ping`` at the end. RSS of the agent is read
from /proc before and after.

    python scripts/fuzz_api.py --requests 10000            # ~1-2 min
    python scripts/fuzz_api.py --requests 100000 --out fuzz_api.json

Prints a table and writes JSON; exit status 1 when a request went unanswered, an
InternalError came back or the agent died. ``tests/test_api_fuzz.py`` runs the same driver
with a few hundred requests.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hyp_seed
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2psync.api import OPS  # noqa: E402

CONFIG = 'listen = "127.0.0.1"\nport = 0\nmdns = false\nlog_level = "warning"\n'

# --- strategies -------------------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 63) - 1)
           | st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(-(1 << 70), 1 << 70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=16))
keys = st.text(min_size=1, max_size=6)  # an empty key is refused (tests/test_api.py)
json_values = st.recursive(
    scalars, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(keys, ch, max_size=4),
    max_leaves=10)
#: deep nesting is sent as text (building it as Python objects would overflow our own stack)
deep = st.integers(60, 3000).map(lambda n: f"$DEEP{n}")
non_strings = st.none() | st.booleans() | st.integers() | st.lists(scalars, max_size=2) \
    | st.dictionaries(st.text(max_size=3), scalars, max_size=2)
#: placeholders the driver replaces with the current seeded ids before sending
SPACE, DOC, ACCOUNT, CHANGE = "$SPACE", "$DOC", "$ACCOUNT", "$CHANGE"
SPACE_PREFIX, DOC_PREFIX = "$SPACE_PREFIX", "$DOC_PREFIX"
paths = st.sampled_from(["items/7", "items/0", "items/2", "items/3", "items/-1", "items/x",
                         "items/0/z", "title", "title/x", "nope/z", "", "/", "//", "n/a/b",
                         "items/99999999999999999999", "items/٣", "t/0", "counter/x"]) \
    | st.text(max_size=24)
small_timeouts = st.floats(0, 0.05) | st.floats(0, 0.05) | st.sampled_from([-1, 1e9])

def rarely(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``odd`` one time in ten (hypothesis favours small draws: ``odd`` is the largest)."""
    return st.integers(0, 9).flatmap(lambda k: odd if k == 9 else usual)


#: per field: values of the right type (some still wrong: unknown refs, bad paths), and a
#: wrong-typed value; the right type is drawn 11 times in 12 so requests reach the operations
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "space": rarely(st.sampled_from([SPACE, SPACE, SPACE, SPACE_PREFIX, SPACE + "x", "nope"]),
                    st.sampled_from([""]) | st.text(max_size=20)
                    | st.text(min_size=500, max_size=600)),
    "space_id": st.sampled_from([SPACE, "nope"]),
    "doc": rarely(st.sampled_from([DOC, DOC, DOC, DOC, DOC_PREFIX, DOC + "x", "zz"]),
                  st.text(max_size=8)),
    "path": paths,
    "value": st.integers(0, 9).flatmap(lambda k: deep if k == 9 else json_values),
    "text": st.booleans(),
    "role": st.sampled_from(["reader", "writer", "admin", "owner", "READER"]),
    "no_approval": st.booleans(),
    "addresses": st.lists(st.text(max_size=12), max_size=3),
    "account": st.sampled_from([ACCOUNT, "a", "nope"]) | st.text(max_size=60),
    "request": st.text(max_size=10),
    "docs": st.lists(st.sampled_from([DOC, "zz", ""]), max_size=3),
    "name": st.text(max_size=300),
    "at": st.sampled_from([CHANGE, CHANGE + ",zz", ",", ""]) | st.text(max_size=12),
    "code": st.sampled_from(["p2psync-invite-aaaa", ""]) | st.text(max_size=40),
    "peers": st.lists(st.text(max_size=12), max_size=3),
    # never a resolvable host: the fuzz must not wait on DNS or dial the LAN
    "address": st.sampled_from(["nohost", "[::1]:99999", "tcp://", "quic://x", ""]),
    "timeout": small_timeouts,
    "subscription": st.integers(),
}


#: wrong-typed values where ``non_strings`` could be right (a number is a valid timeout: a big
#: one would make the agent wait that long, legitimately)
BAD: dict[str, st.SearchStrategy[Any]] = {
    "timeout": st.none() | st.booleans() | st.text(max_size=4) | st.lists(scalars, max_size=2),
}


def field_value(name: str) -> st.SearchStrategy[Any]:
    good = GOOD.get(name, json_values)
    bad = BAD.get(name, non_strings)
    # hypothesis favours small draws: the wrong type is the largest one
    return st.integers(0, 11).flatmap(lambda k: bad if k == 11 else good)


#: every op, with the document edits (the deepest code paths) drawn more often
OP_NAMES = sorted(OPS) + ["doc.set"] * 5 + ["doc.get"] * 2 + ["whoami", "space.list"]
junk_ops = st.sampled_from(["", "nope", "doc", "doc.set ", "DOC.SET", "__init__", "x" * 100]) \
    | st.text(max_size=10)


@st.composite
def params_for(draw: st.DrawFn, op: str) -> Any:
    names = list(OPS[op].params.__struct_fields__) if op in OPS else list(GOOD)
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names))) \
        if names else []
    if draw(st.integers(0, 5)) < 5:  # mostly: every declared field present
        chosen = names
    params: dict[str, Any] = {n: draw(field_value(n)) for n in chosen}
    if draw(st.integers(0, 19)) == 19:
        params[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return params


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """One request line (bytes ending in a newline)."""
    kind = draw(st.integers(0, 19))
    if kind == 0:  # not JSON / not UTF-8
        raw = draw(st.binary(max_size=40).filter(lambda b: b"\n" not in b and b.strip()))
        return raw + b"\n"
    op = draw(st.sampled_from(OP_NAMES)) if kind > 2 else draw(junk_ops)
    req: Any = {"id": draw(st.integers(0, 1 << 40)), "op": op, "params": draw(params_for(op))}
    if kind == 1:  # a broken envelope
        req = draw(st.sampled_from([
            [req], req["params"], {"op": op}, {"id": 1}, {"id": [1], "op": op},
            {"id": 1, "op": op, "params": [1]}, {"id": 1, "op": 7}, {"id": 1, "op": op,
                                                                     "x": 1}, None, 3, "s"]))
    elif kind == 2:
        req["params"] = draw(non_strings)
    return json.dumps(req).encode() + b"\n"


# --- driver -----------------------------------------------------------------------------------
@dataclass
class Stats:
    sent: int = 0
    answered: int = 0
    ok: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    events: int = 0
    slowest: float = 0.0
    internal: list[str] = field(default_factory=list)
    samples: dict[str, list[str]] = field(default_factory=dict)
    per_op: collections.Counter[str] = field(default_factory=collections.Counter)


class Conn:
    """A blocking JSON-lines connection that returns the next response (skipping events)."""

    def __init__(self, sock_path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(str(sock_path))
        self.file = self.sock.makefile("rb")

    def ask(self, line: bytes, stats: Stats) -> dict[str, Any]:
        self.sock.sendall(line)
        while True:
            got = self.file.readline()
            if not got:
                raise AssertionError(f"connection closed without an answer to {line[:200]!r}")
            msg = json.loads(got)
            if "event" in msg:
                stats.events += 1
                continue
            return msg  # type: ignore[no-any-return]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Target:
    """The seeded agent: one space with a document ``{title, items: [a, b]}``."""

    def __init__(self, sock_path: Path) -> None:
        self.sock_path = sock_path
        self.conn = Conn(sock_path)
        self.subst: dict[str, str] = {}
        self.requests_on_conn = 0
        self.seed()

    def call(self, op: str, **params: Any) -> Any:
        msg = self.conn.ask(json.dumps({"id": "seed", "op": op, "params": params}).encode()
                            + b"\n", Stats())
        assert msg["ok"], msg
        return msg["result"]

    def seed(self) -> None:
        n = len(self.subst) and int(time.monotonic() * 1000)
        space = self.call("space.create", name=f"fuzz{n}")["space_id"]
        doc = self.call("doc.new", space=space)["doc"]
        self.call("doc.set", space=space, doc=doc, path="title", value="t")
        self.call("doc.set", space=space, doc=doc, path="items", value=["a", "b"])
        hist = self.call("doc.history", space=space, doc=doc)
        me = self.call("whoami")["account_id"]
        self.subst = {SPACE: space, DOC: doc, ACCOUNT: me, CHANGE: hist[-1]["change"][:12],
                      SPACE_PREFIX: space[:10], DOC_PREFIX: doc[:6]}

    def line(self, raw: bytes) -> bytes:
        text = raw.decode("utf-8", "surrogateescape")
        text = re.sub(r'"\$DEEP(\d+)"', lambda m: "[" * int(m[1]) + "]" * int(m[1]), text)
        for k in sorted(self.subst, key=len, reverse=True):
            text = text.replace(k, self.subst[k])
        return text.encode("utf-8", "surrogateescape")

    def send(self, raw: bytes, stats: Stats) -> None:
        if self.requests_on_conn >= 1000:  # drop accumulated subscriptions now and then
            self.conn.close()
            self.conn = Conn(self.sock_path)
            self.requests_on_conn = 0
        line = self.line(raw)
        t0 = time.perf_counter()
        stats.sent += 1
        self.requests_on_conn += 1
        msg = self.conn.ask(line, stats)
        stats.slowest = max(stats.slowest, time.perf_counter() - t0)
        assert "ok" in msg and "id" in msg, msg
        stats.answered += 1
        try:  # the unexpanded line: deep nesting is still a placeholder there
            op = str(json.loads(raw).get("op"))
        except (ValueError, AttributeError):
            op = "-"
        if msg["ok"]:
            stats.ok += 1
            stats.per_op[f"{op} ok"] += 1
        else:
            kind = msg["error"]["type"]
            assert isinstance(kind, str) and isinstance(msg["error"]["message"], str)
            stats.errors[kind] += 1
            stats.per_op[f"{op} {kind}"] += 1
            seen = stats.samples.setdefault(f"{op} {kind}", [])
            if len(seen) < 4:
                seen.append(msg["error"]["message"][:160])
            if kind == "InternalError":
                stats.internal.append(f"{line[:300]!r} -> {msg['error']['message']}")
        if op in ("space.delete", "space.delete_docs") and msg["ok"]:
            self.seed()  # the fuzz deleted the seeded space or document: make new ones

    def close(self) -> None:
        self.conn.close()


def fuzz(target: Target, n: int, seed: int | None = None) -> Stats:
    """Send ``n`` hypothesis-generated requests to ``target``; every one must be answered."""
    stats = Stats()

    @settings(max_examples=n, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), phases=["generate"])
    @given(line=requests())
    def prop(line: bytes) -> None:
        target.send(line, stats)

    if seed is not None:
        prop = hyp_seed(seed)(prop)
    prop()
    return stats


class AgentProcess:
    """``p2psync run`` on a fresh home in a subprocess (no passphrase, no mDNS, loopback)."""

    def __init__(self, base: Path, config: str = CONFIG) -> None:
        self.home = base / "home"
        env = dict(os.environ, P2PSYNC_PASSPHRASE="", PYTHONUNBUFFERED="1",
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        subprocess.run([sys.executable, "-m", "p2psync", "--json", "init", "--home",
                        str(self.home)], check=True, capture_output=True, env=env,
                       stdin=subprocess.DEVNULL)
        (self.home / "config.toml").write_text(config)
        self.log = (base / "agent.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "p2psync", "--json", "run", "--home", str(self.home)],
            stdout=subprocess.PIPE, stderr=self.log, env=env, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("agent exited: " + (base / "agent.log").read_text())
        self.ready: dict[str, Any] = json.loads(line)  #: the agent's ready line
        self.socket = Path(self.ready["socket"])

    def rss_kib(self) -> int:
        for row in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if row.startswith("VmRSS:"):
                return int(row.split()[1])
        return 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc


def run(n: int, seed: int | None, base: Path) -> dict[str, Any]:
    agent = AgentProcess(base)
    target = Target(agent.socket)
    try:
        rss_before = agent.rss_kib()
        t0 = time.perf_counter()
        stats = fuzz(target, n, seed)
        elapsed = time.perf_counter() - t0
        rss_after = agent.rss_kib()
        pong = Conn(agent.socket).ask(b'{"id": "end", "op": "ping"}\n', Stats())
    finally:
        target.close()
        rc = agent.stop()
    return {"requests": stats.sent, "answered": stats.answered, "ok": stats.ok,
            "errors": dict(stats.errors.most_common()), "events": stats.events,
            "internal_errors": len(stats.internal), "internal_samples": stats.internal[:10],
            "error_samples": stats.samples, "per_op": dict(sorted(stats.per_op.items())),
            "seconds": round(elapsed, 1), "slowest_answer_ms": round(stats.slowest * 1000, 1),
            "rss_before_mib": round(rss_before / 1024, 1),
            "rss_after_mib": round(rss_after / 1024, 1),
            "alive_after": bool(pong.get("ok")), "clean_stop": rc == 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: fixed)")
    ap.add_argument("--out", default="fuzz_api.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="p2psync-fuzz-") as tmp:
        report = run(args.requests, args.seed, Path(tmp))
    for k, v in report.items():
        if k not in ("internal_samples", "error_samples", "per_op"):
            print(f"{k:20} {v}")
    for s in report["internal_samples"]:
        print("INTERNAL", s)
    Path(args.out).write_text(json.dumps(report, indent=1))
    bad = (report["answered"] != report["requests"] or report["internal_errors"]
           or not report["alive_after"])
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
