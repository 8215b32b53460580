#!/usr/bin/env python3
"""Fuzz the local HTTP API of a real agent (``p2psync run`` with ``[http] enabled``).

The requests are those of ``scripts/fuzz_api.py`` (every op with good, near-miss and hostile
parameters, junk op names, broken bodies), sent over HTTP: as ``POST /api/v1/<op>`` bodies,
as ``GET`` query strings (the values stringified), to junk paths and with junk methods, and a
few without the key. Every answer must be JSON; an error must be typed and carry the status
of its type (``routes.http_status``); none may be a 500 / ``InternalError``; the agent must
still answer at the end.

    python scripts/fuzz_http.py --requests 5000 [--out fuzz_http.json]

Prints a table and writes JSON; exit status 1 on a violation. ``tests/test_http_fuzz.py`` runs
the same driver with a few hundred requests.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import importlib.util
import json
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hyp_seed
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2psync.http.routes import http_status, op_path  # noqa: E402

_spec = importlib.util.spec_from_file_location("fuzz_api", ROOT / "scripts" / "fuzz_api.py")
assert _spec is not None and _spec.loader is not None
fuzz_api = sys.modules.setdefault("fuzz_api", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(fuzz_api)

CONFIG = ('listen = "127.0.0.1"\nport = 0\nmdns = false\nlog_level = "warning"\n'
          "\n[http]\nenabled = true\nport = 0\n")


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[str, str, bytes, bool]:
    """``(method, path, body, with_key)`` with ``$SPACE``-style placeholders."""
    kind = draw(st.integers(0, 19))
    with_key = draw(st.integers(0, 29)) != 0
    if kind == 0:  # a junk path or method
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
        path = draw(st.sampled_from(["/api/v1/", "/api/v1/space", "/api/v1/x/y/z", "/x",
                                     "/api/v1/../metrics", "/api/v1/space/list/extra",
                                     "/api/v2/ping", "//", "/api/v1/%00"]))
        return method, path, b"", with_key
    op = draw(st.sampled_from(fuzz_api.OP_NAMES)) if kind > 2 else draw(fuzz_api.junk_ops)
    params = draw(fuzz_api.params_for(op))
    path = op_path(op) if op else "/api/v1/"
    path = urllib.parse.quote(path, safe="/")
    if kind == 1:  # a body that is not a JSON object
        body = draw(st.sampled_from([b"{", b"[1]", b"3", b"null", b"\xff\xfe", b'"s"',
                                     b'{"a": NaN}']))
        return "POST", path, body, with_key
    if kind in (2, 3, 4):  # the same as a GET query string
        query = urllib.parse.urlencode(
            [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in params.items()
             if not isinstance(v, list)]
            + [(k, str(x)) for k, v in params.items() if isinstance(v, list) for x in v])
        return "GET", path + ("?" + query if query else ""), b"", with_key
    return "POST", path, json.dumps(params).encode(), with_key


class HttpTarget:
    """The seeded agent behind its HTTP API (the seeding goes through the socket driver)."""

    def __init__(self, agent: Any, url: str, key: str) -> None:
        self.seeded = fuzz_api.Target(agent.socket)
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.key = key
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self.stats: collections.Counter[str] = collections.Counter()
        self.violations: list[str] = []
        self.slowest = 0.0

    def send(self, req: tuple[str, str, bytes, bool]) -> None:
        method, path, body, with_key = req
        line = self.seeded.line(body).decode("utf-8", "surrogateescape")
        path = self.seeded.line(path.encode()).decode()
        headers = {"Content-Type": "application/json"}
        if with_key:
            headers["X-API-Key"] = self.key
        t0 = time.perf_counter()
        try:
            self.conn.request(method, path, body=line.encode("utf-8", "surrogateescape"),
                              headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            self.conn.request(method, path, body=line.encode("utf-8", "surrogateescape"),
                              headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        self.slowest = max(self.slowest, time.perf_counter() - t0)
        where = f"{method} {path[:120]} {line[:120]!r}"
        try:
            answer = json.loads(data)
        except ValueError:
            self.violations.append(f"{where} -> {resp.status} not JSON: {data[:120]!r}")
            return
        if resp.status == 200:
            self.stats["ok"] += 1
        else:
            err = answer.get("error") if isinstance(answer, dict) else None
            kind = err.get("type") if isinstance(err, dict) else None
            if not isinstance(kind, str) or not isinstance(err.get("message"), str):
                self.violations.append(f"{where} -> {resp.status} untyped: {answer!r:.120}")
                return
            self.stats[kind] += 1
            if resp.status >= 500 and kind not in ("Timeout", "JoinError", "TransportError",
                                                   "StoreError"):
                self.violations.append(f"{where} -> {resp.status} {kind}: {err['message']}")
            elif resp.status != http_status(kind):
                self.violations.append(f"{where} -> {resp.status} but {kind} is "
                                       f"{http_status(kind)}")
        op = path.split("?", 1)[0]
        if resp.status == 200 and op.endswith(("/space/delete", "/space/delete_docs")):
            self.seeded.seed()

    def close(self) -> None:
        self.conn.close()
        self.seeded.close()


def fuzz(target: HttpTarget, n: int, seed: int | None = None) -> None:
    @settings(max_examples=n, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), phases=["generate"])
    @given(req=http_requests())
    def prop(req: tuple[str, str, bytes, bool]) -> None:
        target.send(req)

    if seed is not None:
        prop = hyp_seed(seed)(prop)
    prop()


class Agent(fuzz_api.AgentProcess):  # type: ignore[misc,name-defined]
    """The socket fuzzer's agent process, with the HTTP server on."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, CONFIG)
        self.url = self.ready["http"]
        self.key = (self.home / "http-api-key").read_text().strip()


def run(n: int, seed: int | None, base: Path) -> dict[str, Any]:
    agent = Agent(base)
    target = HttpTarget(agent, agent.url, agent.key)
    try:
        rss_before = agent.rss_kib()
        t0 = time.perf_counter()
        fuzz(target, n, seed)
        elapsed = time.perf_counter() - t0
        rss_after = agent.rss_kib()
        target.conn.request("GET", "/api/v1/ping", headers={"X-API-Key": agent.key})
        alive = target.conn.getresponse().status == 200
    finally:
        target.close()
        rc = agent.stop()
    return {"requests": sum(target.stats.values()) + len(target.violations),
            "answers": dict(target.stats.most_common()), "violations": target.violations[:20],
            "violation_count": len(target.violations), "alive_after": alive, "exit_code": rc,
            "seconds": round(elapsed, 1), "slowest_answer_ms": round(target.slowest * 1000, 1),
            "rss_kib": [rss_before, rss_after]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="p2psync-fuzz-http-") as tmp:
        report = run(args.requests, args.seed, Path(tmp))
    print(f"{'requests':>10} {'violations':>10} {'alive':>6} {'seconds':>8} {'slowest ms':>10} "
          f"{'RSS KiB':>16}")
    print(f"{report['requests']:>10} {report['violation_count']:>10} "
          f"{report['alive_after']!s:>6} {report['seconds']:>8} "
          f"{report['slowest_answer_ms']:>10} {'→'.join(map(str, report['rss_kib'])):>16}")
    print("answers:", ", ".join(f"{k} {v}" for k, v in report["answers"].items()))
    for v in report["violations"]:
        print("VIOLATION", v)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    ok = report["violation_count"] == 0 and report["alive_after"] and report["exit_code"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
