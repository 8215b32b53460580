"""A new user's CLI session with running agents: init, create, invite, join from a second home,
edit, watch — real processes, real sockets on loopback, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CONFIG = 'listen = "127.0.0.1"\nport = 0\nmdns = false\nlog_level = "info"\n'


def env() -> dict[str, str]:
    return dict(os.environ, P2PSYNC_PASSPHRASE="", PYTHONUNBUFFERED="1")


def cli(home: Path, *args: str, ok: bool = True, timeout: float = 60) -> Any:
    proc = subprocess.run([sys.executable, "-m", "p2psync", "--json", *args, "--home",
                           str(home)], capture_output=True, text=True, env=env(),
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if ok:
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout) if proc.stdout.strip() else None
    assert proc.returncode != 0
    return proc


class AgentProc:
    """``p2psync run`` in a subprocess; ready once it printed its ready line."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.log = (home / "agent.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "p2psync", "--json", "run", "--home", str(home)],
            stdout=subprocess.PIPE, stderr=self.log, env=env(), stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until ready (or exit: empty line)
        assert line, f"agent exited: {(home / 'agent.log').read_text()}"
        self.ready = json.loads(line)
        assert self.ready["event"] == "ready"

    def stop(self) -> int:
        """SIGTERM and wait: a clean stop prints ``stopped`` and exits 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc


@pytest.fixture
def agents() -> Iterator[list[AgentProc]]:
    started: list[AgentProc] = []
    yield started
    for a in started:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
        a.log.close()


def new_home(tmp_path: Path, name: str) -> tuple[Path, dict[str, Any]]:
    home = tmp_path / name
    me = cli(home, "init")
    (home / "config.toml").write_text(CONFIG)
    return home, me


def test_session_with_running_agents(tmp_path: Path, agents: list[AgentProc]) -> None:
    alice, a_me = new_home(tmp_path, "alice")
    bob, b_me = new_home(tmp_path, "bob")
    a = AgentProc(alice)
    agents.append(a)
    assert (alice / "agent.sock").stat().st_mode & 0o777 == 0o600
    space = cli(alice, "space", "create", "notes")["space_id"]
    doc = cli(alice, "doc", "new", "notes")["doc"]
    cli(alice, "doc", "set", "notes", doc, "title", '"Shopping"')
    invite = cli(alice, "space", "invite", "notes", "--role", "writer", "--no-approval")
    assert any(h.startswith(("tcp:", "quic:")) for h in invite["addresses"])

    b = AgentProc(bob)
    agents.append(b)
    joined = cli(bob, "space", "join", invite["invite"], "--name", "shared")
    assert joined["space_id"] == space and joined["role"] == "writer" and joined["synced"]
    assert cli(bob, "doc", "get", "shared", doc) == {"title": "Shopping"}

    # bob watches; alice edits; the change arrives at bob's agent and is printed at once
    watch = subprocess.Popen(
        [sys.executable, "-m", "p2psync", "--json", "doc", "watch", "shared", doc, "--count",
         "1", "--home", str(bob)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
        text=True)
    try:
        assert watch.stdout is not None
        first = json.loads(watch.stdout.readline())
        assert first["event"] == "snapshot" and first["value"] == {"title": "Shopping"}
        cli(alice, "doc", "set", "notes", doc, "items", '["milk"]')
        line = json.loads(watch.stdout.readline())
        assert line["event"] == "change" and line["origin"] == "peer"
        assert line["value"] == {"title": "Shopping", "items": ["milk"]}
        assert watch.wait(20) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()

    # bob edits through his agent; alice sees it (push), status and peers are truthful
    cli(bob, "doc", "set", "shared", doc, "items/1", '"eggs"')
    peers = cli(alice, "peers")
    assert [p["peer_id"] for p in peers] == [b_me["peer_id"]]
    assert peers[0]["shared_spaces"] == [space]
    status = cli(bob, "status")
    assert status["agent"] is True and status["spaces"][0]["space_id"] == space
    members = cli(alice, "space", "members", "notes")
    assert {m["account_id"] for m in members} == {a_me["account_id"], b_me["account_id"]}

    # a third device joins with no agent running: a short-lived node joins, syncs, exits
    carol, _ = new_home(tmp_path, "carol")
    cli(alice, "space", "wait_synced", ok=False)  # not a command: argparse refuses (exit 2)
    got = cli(carol, "space", "join", invite["invite"])
    assert got["space_id"] == space and got["documents"] == 1
    assert cli(carol, "doc", "get", space, doc)["title"] == "Shopping"
    assert cli(carol, "status")["agent"] is False

    # clean stop: both agents exit 0 and the stores are consistent when read directly
    assert b.stop() == 0 and a.stop() == 0
    assert not (alice / "agent.sock").exists()
    final_a = cli(alice, "doc", "get", "notes", doc)
    assert final_a == cli(bob, "doc", "get", "shared", doc)
    assert final_a["items"] == ["milk", "eggs"]
    proc = cli(bob, "doc", "watch", "shared", doc, ok=False)
    assert "needs a running agent" in proc.stderr and proc.stderr.count("\n") == 1


def test_second_agent_on_same_home_is_refused(tmp_path: Path, agents: list[AgentProc]) -> None:
    home, _ = new_home(tmp_path, "dave")
    agents.append(AgentProc(home))
    proc = subprocess.run([sys.executable, "-m", "p2psync", "run", "--home", str(home)],
                          capture_output=True, text=True, env=env(), timeout=30,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "already running" in proc.stderr
