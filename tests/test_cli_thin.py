"""The CLI's thin path: commands a running agent answers load no sync stack.

A command answered through the agent's socket should take well under 150 ms wall; importing
aioquic, zeroconf, Automerge, asyncio and the store alone cost ~250 ms (docs/performance.md).
These tests are structural, not timed (timings are ``scripts/bench_cli.py``): a fresh
interpreter runs real commands against a stand-in agent on a real Unix socket and reports which
heavy modules it imported.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2psync.apiclient import socket_path
from p2psync.home import Home

#: Modules the thin path must not import (each one costs 10-100 ms at start-up).
HEAVY = ("aioquic", "zeroconf", "automerge", "argon2", "asyncio", "sqlite3", "nacl",
         "cryptography", "msgpack", "p2psync.agent.ops", "p2psync.device", "p2psync.replica",
         "p2psync.sync", "p2psync.transport", "p2psync.config")

#: What the stand-in agent answers, by op (enough for each command's --json output).
ANSWERS: dict[str, Any] = {
    "status": {"peer_id": "p", "account_id": "a", "listening": [], "spaces": [], "peers": [],
               "endpoints": []},
    "space.list": [],
    "peers": [],
    "doc.get": {"title": "x"},
    "doc.set": {"heads": []},
    "doc.new": {"doc": "d"},
    "doc.history": [],
    "space.members": [],
    "whoami": {"account_id": "a", "peer_id": "p"},
}

#: Commands that go through the agent (all with --json).
COMMANDS = [
    ["status"],
    ["space", "list"],
    ["peers"],
    ["doc", "get", "s", "d"],
    ["doc", "set", "s", "d", "title", '"hello"'],
    ["doc", "new", "s"],
    ["doc", "history", "s", "d"],
    ["space", "members", "s"],
]

PROBE = """
import json, sys
from p2psync.cli import main
home = sys.argv[1]
codes = [main(["--json", "--home", home, *json.loads(c)]) for c in sys.argv[2:]]
heavy = json.loads(sys.stdin.read())
print(json.dumps({"codes": codes,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in heavy
                                   or any(m == h or m.startswith(h + ".") for h in heavy))}))
"""


@pytest.fixture
def fake_agent(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A home whose socket is served by a thread answering JSON lines from :data:`ANSWERS`."""
    home = tmp_path / "home"
    home.mkdir()
    Home(home).keystore_path.write_text("{}")  # Home.exists(); never read on the agent path
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(socket_path(home)))
    srv.listen(16)
    seen: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as f:
                for line in f:
                    req = json.loads(line)
                    seen.append(req["op"])
                    conn.sendall(json.dumps({"id": req["id"], "ok": True,
                                             "result": ANSWERS[req["op"]]}).encode() + b"\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield home, seen
    srv.close()


def test_import_of_the_cli_loads_no_sync_stack() -> None:
    out = subprocess.run([sys.executable, "-c", "import sys, json, p2psync.cli; "
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, timeout=60)
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert bad == []


def test_commands_through_a_running_agent_load_no_sync_stack(
        fake_agent: tuple[Path, list[str]]) -> None:
    home, seen = fake_agent
    proc = subprocess.run([sys.executable, "-c", PROBE, str(home),
                           *(json.dumps(c) for c in COMMANDS)],
                          input=json.dumps(HEAVY), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0] * len(COMMANDS), proc.stderr
    assert set(seen) >= {"status", "space.list", "peers", "doc.get", "doc.set", "doc.new"}
    assert result["loaded"] == []


def test_role_names_match_the_ops() -> None:
    from p2psync import cli
    from p2psync.agent import ops

    assert tuple(sorted(ops.ROLES)) == cli.ROLES


def test_version_needs_no_sync_stack() -> None:
    out = subprocess.run([sys.executable, "-c", "import sys, json\nfrom p2psync.cli import main\n"
                          "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, timeout=60)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "p2psync 0." in out.stdout
    assert not [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
