"""``.automerge`` export/import, and interop with the JavaScript Automerge (issue 14): a file we
export loads in ``@automerge/automerge`` 3.5.0 (pinned in tests/js_interop/package.json) with
the same JSON, and a file JS saves imports here with the same JSON.

The JS half skips when Node.js/npm are missing; it runs ``npm ci`` in tests/js_interop on first
use (the lockfile is committed), so it needs the npm registry once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from p2psync.agent import ops
from p2psync.crypto.keys import account_from_phrase, new_recovery_phrase
from p2psync.device import LocalDevice
from p2psync.errors import InvalidParams, UnsupportedContent
from p2psync.home import Home
from tests.test_document_poison import COUNTER

JS = Path(__file__).resolve().parent / "js_interop"


@pytest.fixture
def dev(tmp_path: Path) -> Any:
    home = Home(tmp_path / "h")
    keys = home.create(account_from_phrase(new_recovery_phrase()), "")
    with LocalDevice(home, keys, window=0) as d:
        yield d


def made(dev: LocalDevice) -> tuple[str, str]:
    space = ops.space_create(dev, "n")["space_id"]
    doc = ops.doc_new(dev, space)["doc"]
    ops.doc_change(dev, space, doc, ops.edits_mod.decode_edits([
        {"op": "put", "path": "title", "value": "hello", "text": True},
        {"op": "splice", "path": "title", "pos": 5, "insert": " world"},
        {"op": "put", "path": "items", "value": ["milk", {"qty": 2}, None, 1.5, True]},
        {"op": "put", "path": "plain", "value": "not text"}]))
    return space, doc


def test_export_then_import_is_the_same_document(dev: LocalDevice, tmp_path: Path) -> None:
    space, doc = made(dev)
    out = ops.doc_export(dev, space, doc, str(tmp_path / "x.automerge"))
    assert out["bytes"] == (tmp_path / "x.automerge").stat().st_size > 0
    assert (tmp_path / "x.automerge").read_bytes()[:4] == bytes.fromhex("856f4a83")  # magic
    copy = ops.doc_import(dev, space, file=str(tmp_path / "x.automerge"))
    assert copy["doc"] != doc
    assert ops.doc_get(dev, space, copy["doc"]) == ops.doc_get(dev, space, doc)
    # the import is an ordinary document: editable, one signed change on top of its root
    ops.doc_splice(dev, space, copy["doc"], "title", 0, 1, "J")
    assert ops.doc_get(dev, space, copy["doc"], "title") == "Jello world"
    assert len(ops.doc_history(dev, space, copy["doc"])) == 3
    inline = ops.doc_export(dev, space, doc)
    again = ops.doc_import(dev, space, data=inline["data"])
    assert ops.doc_get(dev, space, again["doc"]) == ops.doc_get(dev, space, doc)


def test_bad_files_are_refused_before_a_document_is_made(dev: LocalDevice,
                                                         tmp_path: Path) -> None:
    space, _ = made(dev)
    before = ops.doc_list(dev, space)
    (tmp_path / "junk").write_bytes(b"not automerge")
    with pytest.raises(InvalidParams, match=r"not a \.automerge file"):
        ops.doc_import(dev, space, file=str(tmp_path / "junk"))
    # a real Automerge file holding a native counter (made by JS Automerge): refused, typed
    from automerge import core

    from p2psync.replica import automerge_adapter as am

    d = core.Document()
    am.apply_changes(d, [COUNTER])
    (tmp_path / "counter.automerge").write_bytes(am.save(d))
    with pytest.raises(UnsupportedContent):
        ops.doc_import(dev, space, file=str(tmp_path / "counter.automerge"))
    with pytest.raises(InvalidParams, match="absolute"):
        ops.doc_import(dev, space, file="relative.automerge")
    assert ops.doc_list(dev, space) == before


def node_ready() -> bool:
    if shutil.which("node") is None or shutil.which("npm") is None:
        return False
    if not (JS / "node_modules" / "@automerge" / "automerge").exists():
        proc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS,
                              capture_output=True, text=True, timeout=300)
        return proc.returncode == 0
    return True


def js(*args: str) -> Any:
    proc = subprocess.run(["node", str(JS / "interop.mjs"), *args], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def node() -> None:
    if not node_ready():
        pytest.skip("node/npm or @automerge/automerge not available")


def test_a_file_we_export_loads_in_javascript_automerge(node: None, dev: LocalDevice,
                                                        tmp_path: Path) -> None:
    space, doc = made(dev)
    ops.doc_export(dev, space, doc, str(tmp_path / "ours.automerge"))
    assert js("load", str(tmp_path / "ours.automerge")) == ops.doc_get(dev, space, doc)


def test_a_file_javascript_saves_imports_here(node: None, dev: LocalDevice,
                                              tmp_path: Path) -> None:
    theirs = js("save", str(tmp_path / "theirs.automerge"))
    assert theirs["title"] == "Hello, made in JS"
    space, _ = made(dev)
    out = ops.doc_import(dev, space, file=str(tmp_path / "theirs.automerge"))
    assert ops.doc_get(dev, space, out["doc"]) == theirs
    # and it stays editable here: JS's text is our text
    ops.doc_splice(dev, space, out["doc"], "title", 0, 5, "Bye")
    assert ops.doc_get(dev, space, out["doc"], "title") == "Bye, made in JS"
