"""Grouped commits and merged pushes (issue 13, sustained edits): changes share SQLite
commits, but nothing is sent to a peer before it is committed; a burst of local edits of one
tree goes out as fewer, larger ``HEAD_UPDATE`` messages (docs/replica.md "Grouped commits")."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.replica.document import ROOT
from p2psync.replica.space import Space
from p2psync.replica.store import SqliteStore
from p2psync.sync import jobs
from p2psync.sync.effects import Submit
from p2psync.sync.messages import AclHeadUpdate, HeadUpdate
from p2psync.sync.push import PushQueue
from tests.sync_helpers import close_all, fast_config, make_node


def _stored(path: Path) -> int:
    """Changes another process would see in the store file (its own connection)."""
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM changes").fetchone()[0])


def test_grouped_writes_share_a_commit_and_other_writes_commit_them_first(
        tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SqliteStore(path, durable=False)
    acc, dev = AccountKey.generate(), DeviceKey.generate()
    space = Space.create(store, acc, dev.public)
    opened: list[int] = []
    store.group_writes(lambda: opened.append(1))
    a = space.new_document()
    with a.edit() as e:
        e.put(ROOT, "k", 1)
    a.flush()
    space.new_document()
    assert opened == [1]  # one group for three changes
    assert _stored(path) == 0  # not committed yet: other connections see nothing
    assert len(space.tree(a.tree.id)) == 2  # this connection reads its own writes
    store.commit_group()
    assert _stored(path) == 3
    with a.edit() as e:
        e.put(ROOT, "k", 2)
    a.flush()
    assert opened == [1, 1] and _stored(path) == 3
    space.emit_acl(lambda acl: acl.add_replicator(acc, AccountKey.generate().public))
    assert _stored(path) == 4  # an ACL write commits the group first
    store.close()
    reopened = SqliteStore(path)
    assert reopened.count_changes() == 4
    reopened.close()


def test_push_queue_merges_consecutive_head_updates_of_one_tree() -> None:
    t1, t2 = bytes(32), bytes([1]) * 32
    q = PushQueue(16, merge_bytes=100)
    h = [HeadUpdate("s.1", t1, (bytes([i]) * 32,), (bytes([i]) * 40,)) for i in range(4)]
    other = HeadUpdate("s.1", t2, (), (b"x",))
    for m in (h[0], h[1], other, h[2], AclHeadUpdate("s.1", (), ()), h[3]):
        q.put(m, "s.1")
    merged, after = q.pop()
    assert merged == HeadUpdate("s.1", t1, h[1].heads, h[0].changes + h[1].changes)
    assert after == []  # more of s.1 queued
    assert q.pop()[0] == other and q.pop()[0] == h[2]  # another tree in between: not merged
    assert isinstance(q.pop()[0], AclHeadUpdate)
    assert q.pop() == (h[3], [Submit(("heads", "s.1", b""), jobs.CHECK_PRIORITY,
                                     jobs.CHECK_SPACING)])
    for m in h[:3]:  # 3 × 40 bytes > 100: two go together, the third alone
        q.put(m, "s.1")
    assert len(q.pop()[0].changes) == 2 and q.pop()[0] == h[2] and len(q) == 0


async def test_a_peer_never_gets_a_change_before_it_is_committed(tmp_path: Path) -> None:
    """The writer's grouped commits would wait 30 s here; the reader must still only ever
    receive changes the writer's store file already holds (flush before send), and a burst
    of edits goes out in fewer messages than edits (merged pushes)."""
    cfg = replace(fast_config(), group_commit=30.0)
    writer = await make_node(tmp_path, "w", config=cfg)
    reader = await make_node(tmp_path, "r")
    try:
        space = writer.create_space()
        doc = space.new_document()
        code = writer.invite(space.id)
        rspace = await reader.join(code, [f"tcp:{writer.address('tcp')}"])
        await reader.wait_for(lambda: rspace.has_tree(doc.tree.id), 10)
        wpath = tmp_path / "w.sqlite3"
        seen: list[tuple[int, int]] = []  # (changes the reader holds, the writer committed)

        def on_tree(space_id: str, tree_id: bytes, result: object) -> None:
            if tree_id == doc.tree.id:
                seen.append((len(rspace.tree(tree_id)), _stored(wpath)))

        rspace.tree_listeners.append(on_tree)
        edits = 40
        for i in range(edits):
            with doc.edit() as e:
                e.put(ROOT, f"k{i}", i)
            await asyncio.sleep(0)
        await reader.wait_for(lambda: len(rspace.tree(doc.tree.id)) == edits + 1, 10)
        assert seen and all(held <= committed for held, committed in seen), seen
        [engine] = writer.engines
        sent = engine.channel.traffic[("out", "HEAD_UPDATE")][0]
        assert sent < edits, sent
    finally:
        await close_all([reader, writer])
