"""Issue 13: a received change is strictly parsed once on its way into the store (the sync
layer's batch filter parses it; the replica reuses that parse and still verifies the
signature and the ACL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psync.errors import BadSignature
from p2psync.replica import change as change_mod
from p2psync.replica import space as space_mod
from p2psync.replica import tree as tree_mod
from p2psync.sync import ingest as ingest_mod
from p2psync.sync.ingest import Ingest
from tests.test_sync_cores import _evil_change, _Source, joined


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]

    def counting(raw: bytes, **kw: object) -> change_mod.Change:
        calls[0] += 1
        return change_mod.parse_change(raw, **kw)  # type: ignore[arg-type]

    for mod in (ingest_mod, tree_mod, space_mod):
        monkeypatch.setattr(mod, "parse_change", counting)
    return calls


def test_each_received_change_is_parsed_once(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    raws, prev = [], space.heads(tid)
    for _ in range(40):
        ch = _evil_change(b, space, tid, prev)
        raws.append(ch.raw)
        prev = (ch.id,)
    calls = _count_parses(monkeypatch)
    assert Ingest(pair.sa, _Source(), space, tid, raws, chunk=16).run() == []
    assert space.heads(tid) == prev
    assert calls[0] == len(raws)


def test_a_reused_parse_is_still_verified(tmp_path: Path) -> None:
    _a, b, _pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    ch = _evil_change(b, space, tid, space.heads(tid))
    forged = change_mod.parse_change(ch.raw)
    object.__setattr__(forged, "signature", bytes(64))  # the parse handed over lies
    with pytest.raises(BadSignature):
        space.add_changes(tid, [ch.raw], parsed={ch.raw: forged})
    assert ch.id not in space.tree(tid)
