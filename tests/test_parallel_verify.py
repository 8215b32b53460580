"""Large batches of received changes verify their signatures on several threads, and one bad
signature anywhere in a batch still refuses the whole batch (the tree is unchanged)."""

from __future__ import annotations

import threading

import pytest

from p2psync.errors import BadSignature
from p2psync.replica import tree as tree_mod
from p2psync.replica.change import Change
from p2psync.replica.tree import ObjectTree
from tests.replica_helpers import SPACE_ID, make_owner, random_dag

OWNER = make_owner(5)
BASE = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, b"root", timestamp=0)
DAG = random_dag(OWNER, BASE.id, 64, seed=4)


def fresh() -> ObjectTree:
    return ObjectTree.from_root(SPACE_ID, OWNER.gate(), BASE.root.raw)


def test_a_large_batch_is_verified_on_worker_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree_mod, "VERIFY_WORKERS", 3)
    threads: set[str] = set()
    real = Change.verify_signature

    def spy(self: Change) -> None:
        threads.add(threading.current_thread().name)
        real(self)

    monkeypatch.setattr(Change, "verify_signature", spy)
    t = fresh()
    res = t.add(DAG)
    assert len(res.attached) == len(DAG)
    assert any(n.startswith("p2psync-verify") for n in threads)
    assert threading.current_thread().name in threads  # the caller verifies a share too


@pytest.mark.parametrize("bad", [0, 1, 2, 33, 63])
def test_one_bad_signature_anywhere_refuses_the_batch(monkeypatch: pytest.MonkeyPatch,
                                                      bad: int) -> None:
    monkeypatch.setattr(tree_mod, "VERIFY_WORKERS", 3)
    raws = list(DAG)
    raw = bytearray(raws[bad])
    raw[-1] ^= 1  # the signature is the last field: the id changes, the parse still works
    raws[bad] = bytes(raw)
    t = fresh()
    with pytest.raises(BadSignature):
        t.add(raws)
    assert len(t) == 1 and t.heads == (BASE.id,) and not t.waiting_ids
