"""Smoke test of scripts/bench_compare.py: tiny sizes, every system, one run (~10 s).

Skips when Node.js/npm are missing; it runs `npm ci` in scripts/compare on first use (the
lockfile is committed), so it needs the npm registry once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node/npm not installed (the automerge-repo side needs them)")


def test_compare_runs_every_system_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_compare.py"), "--quick",
         "--latency-edits", "20", "--latency-docs", "8", "--burst-edits", "50",
         "--docs", "5", "--doc-edits", "5", "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert set(doc["summary"]) == {"p2psync-quic", "p2psync-tcp", "automerge-repo", "p2psync-js"}
    js = doc["summary"].pop("p2psync-js")  # issue 16: the TS peer, workloads 1 (both ways), 3, 4
    assert js["p50_ms"] > 0 and js["js2py_p50_ms"] > 0 and js["sync_s"] > 0 and js["rss_mb"] > 0
    assert "edits_per_s" not in js and "| n/a |" in proc.stdout
    for figures in doc["summary"].values():
        assert figures["p50_ms"] > 0 and figures["edits_per_s"] > 0 and figures["sync_s"] > 0
        assert figures["rss_mb"] > 0
    assert "p2psync-tcp ÷ automerge-repo" in proc.stdout
