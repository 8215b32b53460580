#!/usr/bin/env python3
"""Long fuzz run of the transport parsers (frame decoder, secure framer, session, handshake).

Runs the hypothesis properties of ``tests/test_framing.py`` with many more examples than CI:

    python scripts/fuzz_transport.py --examples 200000      # ~25 min on one core

Exit status is pytest's (non-zero if any property found a counterexample).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--examples", type=int, default=50_000, help="examples per property")
    ap.add_argument("-k", default="", help="pytest -k filter (e.g. 'decoder or hello')")
    args = ap.parse_args()
    env = dict(os.environ, P2PSYNC_FUZZ_EXAMPLES=str(args.examples),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "pytest", "-q", str(ROOT / "tests" / "test_framing.py"),
           "-p", "no:cacheprovider", "--hypothesis-show-statistics"]
    if args.k:
        cmd += ["-k", args.k]
    return subprocess.call(cmd, env=env, cwd=ROOT)


if __name__ == "__main__":
    raise SystemExit(main())
