#!/usr/bin/env python3
"""The cost of HTTP over the Unix socket: the same ops, one client, sequential requests.

Starts ``p2psync run`` with ``[http] enabled`` on a fresh home, seeds a space and a document,
then times N calls each of ``ping``, ``doc.get`` and ``doc.set`` over the JSON-lines socket
(``ApiClient``) and over HTTP (``http.client``, one keep-alive connection, ``X-API-Key``), plus
N scrapes of ``/metrics`` and N loads of the status page's two requests (``status`` +
``space/list``). Prints a table and writes JSON.

    python scripts/bench_http.py [--n 500] [--out bench_http.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2psync.api import ApiClient  # noqa: E402

CONFIG = ('listen = "127.0.0.1"\nport = 0\nmdns = false\nlog_level = "warning"\n'
          "durable = false\n\n[http]\nenabled = true\nport = 0\n")


def timed(n: int, fn: Callable[[], Any]) -> dict[str, float]:
    fn()  # warm-up
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return {"median_ms": round(statistics.median(samples) * 1000, 3),
            "p99_ms": round(samples[int(len(samples) * 0.99) - 1] * 1000, 3),
            "per_s": round(n / sum(samples))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--out")
    args = ap.parse_args()
    env = dict(os.environ, P2PSYNC_PASSPHRASE="", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory(prefix="p2psync-bench-http-") as tmp:
        home = Path(tmp) / "home"
        subprocess.run([sys.executable, "-m", "p2psync", "init", "--home", str(home)],
                       check=True, capture_output=True, env=env)
        (home / "config.toml").write_text(CONFIG)
        proc = subprocess.Popen([sys.executable, "-m", "p2psync", "--json", "run", "--home",
                                 str(home)], stdout=subprocess.PIPE, env=env,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            url = urllib.parse.urlsplit(ready["http"])
            key = (home / "http-api-key").read_text().strip()
            sock = ApiClient(home)
            space = sock.call("space.create", name="bench")["space_id"]
            doc = sock.call("doc.new", space=space)["doc"]
            sock.call("doc.set", space=space, doc=doc, path="title", value="x")
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            headers = {"X-API-Key": key, "Content-Type": "application/json"}

            def call(method: str, path: str, body: Any = None) -> bytes:
                conn.request(method, path, body=None if body is None else json.dumps(body),
                             headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                assert resp.status == 200, (path, resp.status, data[:200])
                return data

            counter = iter(range(10**9))
            rows = {
                ("ping", "socket"): lambda: sock.call("ping"),
                ("ping", "http"): lambda: call("POST", "/api/v1/ping", {}),
                ("doc.get", "socket"): lambda: sock.call("doc.get", space=space, doc=doc),
                ("doc.get", "http GET"): lambda: call(
                    "GET", f"/api/v1/doc/get?space={space}&doc={doc}"),
                ("doc.set", "socket"): lambda: sock.call(
                    "doc.set", space=space, doc=doc, path="n", value=next(counter)),
                ("doc.set", "http"): lambda: call("POST", "/api/v1/doc/set", {
                    "space": space, "doc": doc, "path": "n", "value": next(counter)}),
                ("status + space.list (page refresh)", "http"): lambda: (
                    call("GET", "/api/v1/status"), call("GET", "/api/v1/space/list")),
                ("/metrics scrape", "http"): lambda: call("GET", "/metrics"),
            }
            results = {f"{op} | {via}": timed(args.n, fn) for (op, via), fn in rows.items()}
            sock.close()
            conn.close()
        finally:
            proc.terminate()
            proc.wait(20)
    print(f"{'op':36} {'via':9} {'median ms':>10} {'p99 ms':>8} {'per s':>7}")
    for name, r in results.items():
        op, via = name.split(" | ")
        print(f"{op:36} {via:9} {r['median_ms']:>10} {r['p99_ms']:>8} {r['per_s']:>7}")
    if args.out:
        Path(args.out).write_text(json.dumps({"n": args.n, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
