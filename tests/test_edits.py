"""Document edits (issue 14): every Automerge edit through the Python API, the local API and the
CLI; several edits as one atomic change; typed errors; two writers typing into one text merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from p2psync import cli
from p2psync.agent import ops
from p2psync.api import handle_request
from p2psync.crypto.keys import account_from_phrase, new_recovery_phrase
from p2psync.device import LocalDevice
from p2psync.errors import InvalidParams, InvalidPath, WrongType
from p2psync.home import Home
from p2psync.replica.document import ROOT, Text
from p2psync.replica.edits import (
    Delete,
    Increment,
    Insert,
    MakeCounter,
    Put,
    Splice,
    change,
)
from tests.conftest import Fleet
from tests.test_document import new_doc, others, replica_of


@pytest.fixture
def dev(tmp_path: Path) -> Any:
    home = Home(tmp_path / "h")
    keys = home.create(account_from_phrase(new_recovery_phrase()), "")
    with LocalDevice(home, keys, window=0) as d:
        yield d


def space_doc(dev: LocalDevice) -> tuple[str, str]:
    space = ops.space_create(dev, "n")["space_id"]
    return space, ops.doc_new(dev, space)["doc"]


# --- Python API --------------------------------------------------------------------------------
def test_every_edit_through_the_python_api() -> None:
    d = new_doc(window=0)
    change(d, [Put(path="title", value="hello", text=True), Put(path="items", value=["a", "b"]),
               MakeCounter(path="likes", value=2)])
    change(d, [Splice(path="title", pos=5, insert=" world"),
               Splice(path="title", pos=0, delete=1, insert="J")])
    change(d, [Insert(path="items/1", value="x"), Insert(path="items/3", value={"k": 1})])
    change(d, [Delete(path="items/0"), Increment(path="likes", by=5), Delete(path="items/2/k")])
    change(d, [Put(path="items/0", value="y"), Put(path="items/3", value="appended")])
    assert d.to_json() == {"title": "Jello world", "items": ["y", "b", {}, "appended"],
                           "likes": 7}


@pytest.mark.parametrize("edit,error,words", [
    (Delete(path="items/9"), InvalidPath, "index 9 is past the end"),
    (Delete(path="nope"), InvalidPath, "no nope"),
    (Insert(path="items/x", value=1), InvalidPath, "use a number"),
    (Insert(path="items/5", value=1), InvalidPath, "past the end"),
    (Insert(path="title", value=1), WrongType, "insert is for lists"),
    (Splice(path="items", pos=0), WrongType, "not text"),
    (Splice(path="title", pos=6), InvalidPath, "has 5 character"),
    (Splice(path="title", pos=3, delete=3), InvalidPath, "cannot delete 3 at 3"),
    (Increment(path="title"), WrongType, "not a counter"),
    (Increment(path="n"), WrongType, "a plain value, not a counter"),
    (Put(path="n/x", value=1), WrongType, "nothing inside"),
    (Put(path="missing/x", value=1), InvalidPath, "set it to an object"),
    (Put(path="t", value=3, text=True), WrongType, "text needs a string"),
    (Put(path="", value=3), InvalidPath, "give a path"),
])
def test_bad_edits_are_typed_errors_and_change_nothing(edit: Any, error: type[Exception],
                                                        words: str) -> None:
    d = new_doc(window=0)
    change(d, [Put(path="title", value="hello", text=True), Put(path="items", value=[1, 2]),
               Put(path="n", value=1)])
    before, heads = d.to_json(), d.tree.heads
    with pytest.raises(error, match=words):
        change(d, [edit])
    assert d.to_json() == before and d.tree.heads == heads


def test_several_edits_are_one_change_all_or_nothing() -> None:
    d = new_doc(window=0)
    change(d, [Put(path="todo", value=[])])
    n = len(d.tree.changes())
    change(d, [Insert(path="todo/0", value="milk"), Insert(path="todo/1", value="eggs"),
               Put(path="done", value=0)])
    assert len(d.tree.changes()) == n + 1  # one signed change for three edits
    before = d.to_json()
    with pytest.raises(InvalidPath, match=r"edit 2 \('todo/7'\).*nothing was changed"):
        change(d, [Delete(path="todo/0"), Put(path="done", value=1), Delete(path="todo/7")])
    assert d.to_json() == before == {"todo": ["milk", "eggs"], "done": 0}
    assert len(d.tree.changes()) == n + 1


def test_two_writers_typing_in_one_text_merge_character_by_character() -> None:
    a = new_doc(b"A" * 32, window=0)
    change(a, [Put(path="note", value="hello", text=True)])
    b = replica_of(a, b"B" * 32, window=0)
    b.receive(others(a))
    for i, ch in enumerate(" world"):  # A types at the end, a keystroke per change
        change(a, [Splice(path="note", pos=5 + i, insert=ch)])
    for i, ch in enumerate("Oh, "):  # B types at the start concurrently
        change(b, [Splice(path="note", pos=i, insert=ch)])
    change(b, [Splice(path="note", pos=4, delete=1, insert="H")])  # and fixes a letter
    a.receive(others(b))
    b.receive(others(a))
    assert a.to_json()["note"] == b.to_json()["note"] == "Oh, Hello world"


def test_counters_from_two_writers_add_up_through_edits() -> None:
    a = new_doc(b"A" * 32, window=0)
    change(a, [MakeCounter(path="likes")])
    b = replica_of(a, b"B" * 32, window=0)
    b.receive(others(a))
    change(a, [Increment(path="likes", by=2)])
    change(b, [Increment(path="likes", by=3)])
    a.receive(others(b))
    b.receive(others(a))
    assert a.to_json()["likes"] == b.to_json()["likes"] == 5


def test_editor_primitives_still_work_alongside() -> None:
    d = new_doc(window=0)
    with d.edit() as e:
        e.put(ROOT, "t", Text("ab"))
    change(d, [Splice(path="t", pos=1, insert="X")])
    assert d.to_json() == {"t": "aXb"}


# --- the device operations (CLI without an agent) and the local API ---------------------------
def test_every_edit_through_the_device_ops(dev: LocalDevice) -> None:
    space, doc = space_doc(dev)

    def run(op: str, **p: Any) -> Any:
        return ops.run_local(dev, op, {"space": space, "doc": doc, **p})

    out = run("doc.change", edits=[{"op": "put", "path": "t", "value": "ab", "text": True},
                                   {"op": "put", "path": "l", "value": [1]},
                                   {"op": "counter", "path": "c", "value": 1}])
    assert out["edits"] == 3 and len(out["heads"]) == 1
    run("doc.splice", path="t", pos=2, insert="c")
    run("doc.insert", path="l/0", value=0)
    run("doc.delete", path="l/1")
    run("doc.increment", path="c", by=4)
    run("doc.counter", path="c2")
    assert ops.doc_get(dev, space, doc) == {"t": "abc", "l": [0], "c": 5, "c2": 0}
    with pytest.raises(InvalidParams, match="edits"):
        run("doc.change", edits=[{"op": "frobnicate", "path": "x"}])
    with pytest.raises(InvalidParams, match="edits"):
        run("doc.change", edits=[])
    with pytest.raises(InvalidParams):
        run("doc.splice", path="t", pos=-1)
    with pytest.raises(InvalidParams, match="64 bits"):
        run("doc.insert", path="l/0", value=1 << 70)


async def test_edits_through_the_local_api_answer_typed_errors(fleet: Fleet) -> None:
    agent = await fleet.agent("a")
    assert agent.device is not None
    space, doc = space_doc(agent.device)

    async def ask(op: str, **p: Any) -> dict[str, Any]:
        return await handle_request(agent, {"id": 1, "op": op, "params": {
            "space": space, "doc": doc, **p}})

    ok = await ask("doc.change", edits=[{"op": "put", "path": "t", "value": "hi", "text": True},
                                        {"op": "splice", "path": "t", "pos": 2, "insert": "!"}])
    assert ok["ok"], ok
    assert (await ask("doc.get"))["result"] == {"t": "hi!"}
    bad = await ask("doc.splice", path="t", pos=9)
    assert bad["error"]["type"] == "InvalidPath"
    bad = await ask("doc.increment", path="t")
    assert bad["error"]["type"] == "WrongType"
    bad = await ask("doc.change", edits=[{"op": "put", "path": "x", "value": 1},
                                         {"op": "insert", "path": "t", "value": 1}])
    assert bad["error"]["type"] == "WrongType" and "nothing was changed" in bad["error"][
        "message"]
    assert (await ask("doc.get"))["result"] == {"t": "hi!"}


def test_every_edit_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PSYNC_PASSPHRASE", "")
    home = str(tmp_path / "h")

    def p2p(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = cli.main(["--home", home, *argv])
        got = capsys.readouterr()
        return rc, got.out, got.err

    assert p2p("init", "--no-passphrase")[0] == 0
    assert p2p("space", "create", "n")[0] == 0
    doc = p2p("doc", "new", "n")[1].strip()
    steps = [("set", "body", '"hello"', "--text"), ("splice", "body", "5", " world"),
             ("splice", "body", "0", "J", "--delete", "1"), ("counter", "likes", "1"),
             ("increment", "likes", "2"), ("set", "items", "[]"),
             ("insert", "items/0", '"milk"'), ("insert", "items/0", '"eggs"'),
             ("delete", "items/1"),
             ("change", json.dumps([{"op": "put", "path": "x", "value": 1},
                                    {"op": "delete", "path": "x"}]))]
    for kind, *rest in steps:
        rc, out, err = p2p("doc", kind, "n", doc, *rest)
        assert (rc, out) == (0, "ok\n"), (kind, err)
    rc, out, _ = p2p("--json", "doc", "get", "n", doc)
    assert json.loads(out) == {"body": "Jello world", "likes": 3, "items": ["eggs"]}
    rc, _, err = p2p("doc", "splice", "n", doc, "likes", "0", "x")
    assert rc == 1 and "not text" in err
    rc, _, err = p2p("doc", "change", "n", doc, '{"op": "put"}')
    assert rc == 1 and "JSON list" in err


def test_history_shows_quarantined_changes(dev: LocalDevice) -> None:
    from p2psync.crypto.ids import short_hash
    from p2psync.replica.document import encode_payload
    from tests.test_document_poison import COUNTER

    space, doc = space_doc(dev)
    ops.doc_set(dev, space, doc, "title", "hello")
    sp = dev.resolve_space(space)
    d = sp.document(sp.tree_ids()[0])
    bad = d.tree.create_change(dev.keys.account, encode_payload([], [COUNTER]))
    d.receive([bad.raw])
    rows = {r["change"]: r for r in ops.doc_history(dev, space, doc)}
    assert "counter" in (rows[short_hash(bad.id)]["quarantined"] or "")
    assert all(r["removed_after"] is None for r in rows.values())
    assert sum(1 for r in rows.values() if r["quarantined"]) == 1


def test_cli_errors_have_distinct_exit_codes_and_json_on_stderr(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PSYNC_PASSPHRASE", "")
    home = str(tmp_path / "h")
    assert cli.main(["--home", home, "init", "--no-passphrase"]) == 0
    capsys.readouterr()
    assert cli.main(["--home", home, "doc", "new", "nope"]) == cli.EXIT_NOT_FOUND
    assert capsys.readouterr().err.startswith("p2psync: error: no space 'nope'")
    assert cli.main(["--home", home, "--json", "doc", "new", "nope"]) == cli.EXIT_NOT_FOUND
    err = json.loads(capsys.readouterr().err)
    assert err == {"error": {"type": "NotFound", "exit": 3, "message":
                             "no space 'nope' on this device (see `p2psync space list`)"}}
    assert cli.main(["--home", home, "space", "create", "n"]) == 0
    capsys.readouterr()
    rc = cli.main(["--home", home, "--json", "doc", "get", "n", "zzz"])
    assert rc == cli.EXIT_NOT_FOUND and json.loads(capsys.readouterr().err)["error"][
        "type"] == "NotFound"


def test_invite_qr_and_expiry_on_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PSYNC_PASSPHRASE", "")
    home = str(tmp_path / "h")
    assert cli.main(["--home", home, "init", "--no-passphrase"]) == 0
    assert cli.main(["--home", home, "space", "create", "n"]) == 0
    capsys.readouterr()
    assert cli.main(["--home", home, "space", "invite", "n", "--qr", "--expires", "2h"]) == 0
    got = capsys.readouterr()
    lines = got.out.splitlines()
    assert lines[-1].startswith("p2psync-invite") and "█" in got.out and len(lines) > 20
    assert got.err.startswith("expires ")
    assert cli.main(["--home", home, "space", "invite", "n", "--expires", "soon"]) == 1
    assert "--expires 'soon'" in capsys.readouterr().err


def test_shell_completion_scripts_follow_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    import shutil
    import subprocess

    for shell in ("bash", "zsh", "fish"):
        assert cli.main(["completion", shell]) == 0
        script = capsys.readouterr().out
        assert "p2psync" in script and "splice" in script, shell
    if shutil.which("bash") is None:
        return
    assert cli.main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    probe = script + '\nCOMP_WORDS=(p2psync doc sp); COMP_CWORD=2; _shtab_p2psync\n' \
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    proc = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert proc.stdout.split() == ["splice"], proc.stderr


def test_every_cli_argument_has_help() -> None:
    import argparse

    missing = []

    def walk(p: argparse.ArgumentParser, path: list[str]) -> None:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    walk(sp, [*path, name])
            elif not a.help:
                missing.append(f"{' '.join(path)} {a.dest}")

    walk(cli.build_parser(), [])
    assert missing == []
