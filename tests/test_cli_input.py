"""The CLI on bad input: a clear one-line error and what to do next, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2psync import cli
from p2psync.cli import main


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, P2PSYNC_PASSPHRASE="")
    return subprocess.run([sys.executable, "-m", "p2psync", *args, "--home", str(home)],
                          capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_doc_set_past_a_lists_end_is_one_clear_line(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert run(home, "init").returncode == 0
    assert run(home, "space", "create", "notes").returncode == 0
    doc = run(home, "doc", "new", "notes").stdout.strip()
    assert run(home, "doc", "set", "notes", doc, "items", '["a", "b"]').returncode == 0
    for path, value, words in [
            ("items/7", '"x"', "items has 2 element(s): index 7 is past the end"),
            ("items/x", '"x"', "items is a list: use a number"),
            ("items/0/z", '"x"', "items/0 is a string"),
            ("big", "123456789012345678901234567890", "does not fit in 64 bits"),
            ("t", "[[[", "value is not JSON")]:
        proc = run(home, "doc", "set", "notes", doc, path, value)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("p2psync: error: ") and words in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1
    got = json.loads(run(home, "doc", "get", "notes", doc).stdout)
    assert got == {"items": ["a", "b"]}


def test_a_bug_prints_what_happened_and_what_to_do(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    def boom(args: object, out: object) -> None:
        raise RuntimeError("kaboom")
    monkeypatch.setattr(cli, "cmd_whoami", boom)
    monkeypatch.delenv("P2PSYNC_DEBUG", raising=False)
    assert main(["whoami", "--home", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: kaboom" in err and "P2PSYNC_DEBUG=1" in err
    assert "Traceback" not in err
    monkeypatch.setenv("P2PSYNC_DEBUG", "1")
    assert main(["whoami", "--home", str(tmp_path)]) == 1
    assert "Traceback" in capsys.readouterr().err
