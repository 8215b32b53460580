"""A tree change is at most what sync carries (1 MiB): pending edits bigger than that are split
across several chained tree changes; one Automerge change that alone is bigger is refused at
edit time (ChangeTooLarge, rolled back, nothing signed); a snapshot that big is skipped."""

from __future__ import annotations

import base64
import os

import pytest

from p2psync.errors import ChangeTooLarge
from p2psync.replica import change as replica_change
from p2psync.replica.document import ROOT, Document
from p2psync.sync import messages
from tests.test_document import new_doc, others, replica_of


def blob(n: int) -> str:
    """``n`` characters that Automerge cannot compress much."""
    return base64.b64encode(os.urandom(n * 3 // 4)).decode()


def tree_changes(doc: Document) -> list[bytes]:
    return others(doc)


def test_replica_and_sync_agree_on_the_largest_change() -> None:
    assert replica_change.MAX_CHANGE_SIZE == messages.MAX_CHANGE_SIZE


def test_pending_edits_bigger_than_one_change_are_split_and_chained() -> None:
    doc = new_doc(window=60.0)  # coalesce: everything pending until flush
    for i in range(6):
        with doc.edit() as e:
            e.put(ROOT, f"k{i}", blob(300_000))
    assert doc.pending == 6
    last = doc.flush()
    assert last is not None and doc.pending == 0
    raws = tree_changes(doc)
    assert len(raws) >= 2  # 1.8 MB of edits do not fit one change
    assert all(len(r) <= messages.MAX_CHANGE_SIZE for r in raws)  # each one syncs
    assert list(doc.tree.heads) == [last.id]  # a chain: each on the previous
    # another replica rebuilds the same document from the parts, and reads history at each
    other = replica_of(doc, b"B" * 32)
    other.receive(raws)
    assert other.to_json() == doc.to_json()
    first = next(c for c in doc.tree.changes() if not c.is_root and list(c.prev_ids) == [
        doc.tree.root.id])
    assert 0 < len(other.to_json(heads=[first.id])) < 6


def test_one_edit_bigger_than_a_change_is_refused_and_rolled_back() -> None:
    doc = new_doc(window=60.0)
    with doc.edit() as e:
        e.put(ROOT, "small", 1)
    heads = list(doc.tree.heads)
    with pytest.raises(ChangeTooLarge, match="files"), doc.edit() as e:
        e.put(ROOT, "huge", blob(2_000_000))
    assert list(doc.tree.heads) == heads  # nothing signed
    assert doc.to_json() == {"small": 1}  # the big edit is gone, the earlier one kept
    assert doc.pending == 1
    doc.flush()
    other = replica_of(doc, b"B" * 32)
    other.receive(tree_changes(doc))
    assert other.to_json() == {"small": 1}


def test_a_snapshot_bigger_than_a_change_is_skipped() -> None:
    doc = new_doc(window=0)
    for i in range(8):
        with doc.edit() as e:
            e.put(ROOT, f"k{i}", blob(300_000))
    n = len(tree_changes(doc))
    assert doc.snapshot() is None
    assert len(tree_changes(doc)) == n
