#!/usr/bin/env python3
"""Benchmark the CLI's start-up: ``p2psync --version`` and commands a running agent answers.

Every figure is the wall time of a fresh process (what a user or a script pays per command),
median of ``--repeat`` runs, plus its peak RSS. The command line is the console script's own
(``from p2psync.cli import main; sys.exit(main())``, no pyenv shim, no ``-m`` runpy); ``python -c
pass`` is measured too as the interpreter's floor on this machine. ``--src DIR`` measures another
checkout (e.g. ``--src /work/main`` for "before"). Prints a table, writes JSON
(``bench-results/cli-<time>.json`` or ``--out``). Targets (issue 13): ``--version`` ≤ 100 ms, a
command through a running agent ≤ 150 ms.

    python scripts/bench_cli.py [--repeat 21] [--src DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY = "import sys\nfrom p2psync.cli import main\nsys.exit(main())"


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one process run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else b""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[3:]} failed: {err.decode()[-500:]}")
    return dt, usage.ru_maxrss


def measure(argv: list[str], env: dict[str, str], repeat: int) -> dict[str, float]:
    times, rss = [], []
    for _ in range(repeat):
        dt, peak = timed(argv, env)
        times.append(dt)
        rss.append(peak)
    return {"median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000,
            "max_ms": max(times) * 1000, "peak_rss_mib": max(rss) / 1024}


def wait_for_socket(path: Path, agent: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if agent.poll() is not None:
            raise RuntimeError(f"agent exited: {agent.stderr.read().decode()[-800:]}"
                               if agent.stderr else "agent exited")
        if time.monotonic() > deadline:
            raise RuntimeError("agent did not open its socket")
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--src", type=Path, default=ROOT, help="checkout to measure (PYTHONPATH)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(args.src.resolve()), P2PSYNC_PASSPHRASE="")
    # `python -c` puts the working directory first on sys.path: run from elsewhere, so --src
    # (not a checkout that happens to be the cwd) is what gets measured.
    os.chdir(tempfile.gettempdir())
    py = [sys.executable]
    cli = [*py, "-c", ENTRY]
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        home = Path(tmp) / "h"
        h = ["--home", str(home)]
        subprocess.run([*cli, "init", "--no-passphrase", *h], env=env, check=True,
                       capture_output=True)
        rows["python -c pass (floor)"] = measure([*py, "-c", "pass"], env, args.repeat)
        rows["p2psync --version"] = measure([*cli, "--version"], env, args.repeat)
        rows["p2psync status (no agent)"] = measure([*cli, "--json", "status", *h], env,
                                                    max(3, args.repeat // 4))
        space = json.loads(subprocess.run([*cli, "--json", "space", "create", "bench", *h],
                                          env=env, check=True, capture_output=True).stdout)
        doc = json.loads(subprocess.run([*cli, "--json", "doc", "new", "bench", *h], env=env,
                                        check=True, capture_output=True).stdout)["doc"]
        agent = subprocess.Popen([*cli, "run", "--port", "0", "--no-mdns", *h], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_socket(home / "agent.sock", agent)
            for name, cmd in [
                ("status (agent)", ["--json", "status"]),
                ("space list (agent)", ["--json", "space", "list"]),
                ("doc set (agent)", ["--json", "doc", "set", "bench", doc, "title", '"x"']),
                ("doc get (agent)", ["--json", "doc", "get", "bench", doc]),
            ]:
                rows["p2psync " + name] = measure([*cli, *cmd, *h], env, args.repeat)
        finally:
            agent.terminate()
            agent.wait(timeout=30)
    print(f"{'command':34} {'median ms':>10} {'min':>8} {'max':>8} {'peak RSS MiB':>13}")
    for name, r in rows.items():
        print(f"{name:34} {r['median_ms']:10.1f} {r['min_ms']:8.1f} {r['max_ms']:8.1f} "
              f"{r['peak_rss_mib']:13.1f}")
    out = args.out or ROOT / "bench-results" / f"cli-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "src": str(args.src), "space": space["space_id"],
                               "machine": platform.platform(), "python": sys.version,
                               "repeat": args.repeat}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
