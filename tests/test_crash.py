"""Crash safety: SIGKILL a writer mid-stream many times; the store stays sound and complete."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from p2psync.replica.document import Document
from p2psync.replica.store import Store
from tests.replica_helpers import SPACE_ID, make_owner

REPO = Path(__file__).resolve().parent.parent

WRITER = textwrap.dedent("""
    import os, sys
    from p2psync.replica.document import ROOT, Document, Text, encode_payload
    from p2psync.replica.store import Store
    from p2psync.replica.tree import ObjectTree
    from tests.replica_helpers import SPACE_ID, make_owner

    owner = make_owner(7)
    store = Store(sys.argv[1])
    trees = store.list_trees(SPACE_ID)
    if trees:
        tree = store.load_tree(SPACE_ID, trees[0], owner.gate())
    else:
        tree = ObjectTree.create(SPACE_ID, owner.gate(), owner.account, encode_payload([], []))
        store.save_tree(tree)
    doc = Document(tree, owner.account, owner.device.public, window=0,
                   persist=store.persister())
    if doc.get(["log"]) is None:
        with doc.edit() as e:
            e.put(ROOT, "log", Text(""))
    print("ready", tree.id.hex(), flush=True)
    i = 0
    while True:
        i += 1
        with doc.edit() as e:  # window=0: this commits one tree change
            e.put(ROOT, "n", i)
            e.put(ROOT, "blob%d" % (i % 7), os.urandom(2000 + 50 * (i % 40)))
            e.splice_text(doc.obj(["log"]), 0, 0, "x")
        print(tree.heads[0].hex(), flush=True)  # reported only after the commit returned
""")


def test_sigkill_at_random_points_keeps_store_sound(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random(1234)
    committed: set[bytes] = set()
    owner = make_owner(7)
    rounds = 25
    for _ in range(rounds):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], env=env,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready")
        for _ in range(rng.randint(0, 25)):  # let it commit a random number of changes...
            line = proc.stdout.readline().strip()
            assert line, "writer died on its own"
            committed.add(bytes.fromhex(line))
        proc.send_signal(signal.SIGKILL)  # ...then kill it wherever it is now
        proc.wait()
        for line in proc.stdout.read().split():  # reported before the kill landed
            if len(line) == 64:
                committed.add(bytes.fromhex(line))
        proc.stdout.close()
        with Store(path) as store:
            assert store.integrity_check() == "ok"
            (tree_id,) = store.list_trees(SPACE_ID)
            tree = store.load_tree(SPACE_ID, tree_id, owner.gate())  # heads match changes
            missing = [c for c in committed if c not in tree]
            assert not missing, f"{len(missing)} committed changes lost"
    with Store(path) as store:
        tree = store.load_tree(SPACE_ID, store.list_trees(SPACE_ID)[0], owner.gate(),
                               verify_signatures=True)
        doc = Document(tree, owner.account, owner.device.public)
        # root + "log" creation, then 1 x each; the writer's snapshots carry no edit
        snaps = sum(1 for c in tree.changes() if doc.claims(c)[1])
        assert len(doc.get(["log"])) == len(tree) - 2 - snaps
    assert len(committed) > rounds
