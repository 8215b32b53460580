"""The CLI as a new user meets it: fresh homes, real processes, real files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from p2psync.cli import main


def run(home: Path, *args: str, passphrase: str = "", ok: bool = True) -> Any:
    env = dict(os.environ, P2PSYNC_PASSPHRASE=passphrase)
    proc = subprocess.run([sys.executable, "-m", "p2psync", "--json", *args, "--home",
                           str(home)], capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)
    if ok:
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout) if proc.stdout.strip() else None
    assert proc.returncode != 0
    return proc


def test_new_user_session(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    me = run(home, "init", passphrase="pw")
    assert me["account_id"].startswith("a") and len(me["phrase"].split()) == 24
    space = run(home, "space", "create", "notes", passphrase="pw")
    listed = run(home, "space", "list", passphrase="pw")
    assert [s["name"] for s in listed] == ["notes"] and listed[0]["role"] == "owner"
    doc = run(home, "doc", "new", "notes", passphrase="pw")["doc"]
    run(home, "doc", "set", "notes", doc[:8], "title", '"Shopping"', passphrase="pw")
    run(home, "doc", "set", "notes", doc, "items", '["milk"]', passphrase="pw")
    run(home, "doc", "set", "notes", doc, "items/1", '"eggs"', passphrase="pw")
    got = run(home, "doc", "get", space["space_id"], doc, passphrase="pw")
    assert got == {"title": "Shopping", "items": ["milk", "eggs"]}
    history = run(home, "doc", "history", "notes", doc, passphrase="pw")
    assert len(history) == 4 and all(h["signature_ok"] for h in history)
    past = run(home, "doc", "get", "notes", doc, "--at", history[1]["change"][:12],
               passphrase="pw")
    assert past == {"title": "Shopping"}
    invite = run(home, "space", "invite", "notes", "--role", "reader", passphrase="pw")
    assert invite["invite"].startswith("p2psync-invite")
    members = run(home, "space", "members", "notes", passphrase="pw")
    assert members == [{"account_id": me["account_id"], "role": "owner"}]


def test_errors_are_one_line_and_nonzero(tmp_path: Path) -> None:
    home = tmp_path / "bob"
    proc = run(home, "space", "list", ok=False)
    assert "run `p2psync init` first" in proc.stderr and proc.stderr.count("\n") == 1
    run(home, "init", passphrase="right")
    proc = run(home, "space", "list", passphrase="wrong", ok=False)
    assert "wrong passphrase" in proc.stderr
    proc = run(home, "doc", "new", "nope", passphrase="right", ok=False)
    assert "no space 'nope'" in proc.stderr
    proc = run(home, "init", passphrase="right", ok=False)
    assert "already holds an identity" in proc.stderr


def test_same_phrase_on_second_home_same_account(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("P2PSYNC_PASSPHRASE", "")
    assert main(["--json", "init", "--home", str(tmp_path / "one")]) == 0
    first = json.loads(capsys.readouterr().out)
    monkeypatch.setattr("sys.stdin", io.StringIO(first["phrase"] + "\n"))
    assert main(["--json", "init", "--home", str(tmp_path / "two"), "--phrase-stdin"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["account_id"] == first["account_id"]
    assert second["peer_id"] != first["peer_id"]  # a new device of the same account
    assert second["phrase"] is None  # a recovered phrase is never echoed
    monkeypatch.setattr("sys.stdin", io.StringIO("abandon " * 12))
    assert main(["init", "--home", str(tmp_path / "three"), "--phrase-stdin"]) == 1
    assert "checksum" in capsys.readouterr().err


def test_demo_converges(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "demo"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["converged"] is True
    assert report["laptop"] == report["phone"]
