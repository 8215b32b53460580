"""A hypothesis fuzz of the local API against a real ``p2psync run`` (subprocess, real Unix
socket): a few hundred generated requests, each answered, none an InternalError, the agent
alive at the end. ``scripts/fuzz_api.py --requests N`` is the same driver for long runs
(``P2PSYNC_FUZZ_EXAMPLES`` raises the count here)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fuzz_api.py"


def load_driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_api", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_api"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_fuzzed_requests_are_all_answered_and_the_agent_survives(tmp_path: Path) -> None:
    driver = load_driver()
    n = int(os.environ.get("P2PSYNC_FUZZ_EXAMPLES", "400"))
    report = driver.run(n, None, tmp_path)
    assert report["requests"] >= n * 0.9, report
    assert report["answered"] == report["requests"], report
    assert report["internal_errors"] == 0, report["internal_samples"]
    assert report["alive_after"] and report["clean_stop"], report
    # the fuzz reached the operations, not only the schema checks
    assert report["ok"] > n // 10 and report["errors"].get("InvalidPath", 0) > 0, report
