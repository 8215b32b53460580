"""Human output of the listing commands is a table (issue 17: rich instead of hand-aligned
columns), one header line and one row per item, plain text when piped; --json is unchanged."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from p2psync.cli import main


def cli(home: Path, *args: str) -> str:
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main([*args, "--home", str(home)]) in (0, None)
    return buf.getvalue()


def test_listings_are_tables_and_json_is_unchanged(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PSYNC_PASSPHRASE", "")
    home = tmp_path / "h"
    cli(home, "init", "--no-passphrase")
    space = cli(home, "space", "create", "Family").strip()
    doc = cli(home, "doc", "new", "Family").strip()
    cases = {("space", "list"): ["name", "role", "docs", "members", "space"],
             ("doc", "list", "Family"): ["document", "heads"],
             ("space", "members", "Family"): ["role", "account"],
             ("device", "list"): ["device", "name", "state", "paired"],
             ("status",): ["space", "role", "docs", "members", "id"]}
    for args, header in cases.items():
        lines = [ln.rstrip() for ln in cli(home, *args).splitlines() if ln.strip()]
        heads = [ln for ln in lines if ln.split()[: len(header)] == header]
        assert heads, (args, lines)
        assert "\x1b[" not in "".join(lines)  # no colour codes when not a terminal
    assert space in cli(home, "space", "list") and doc in cli(home, "doc", "list", "Family")
    rows = json.loads(cli(home, "--json", "space", "list"))
    assert [(r["name"], r["space_id"], r["role"]) for r in rows] == [("Family", space, "owner")]
