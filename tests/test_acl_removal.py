"""Issue 20.5: a removed member's back-dated edit, relayed by a colluding member.

Removal follows Any-Sync (a change is judged at the ACL head it names), so bob, once removed,
can still sign an edit on his old copy, and carl (still a member) relays it to the owner.
Before, the owner's document silently took bob's value. Now every such change is flagged
(``Acl.removed_after``; document history and status; ``Space.removed_after`` for events and
the API), and a space whose removal policy is "strict" refuses it once the removal is known.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.errors import RemovedAuthor
from p2psync.replica.acl import RemovalPolicy
from p2psync.replica.acl_records import Role, decode_record
from p2psync.replica.document import ROOT
from p2psync.replica.space import Space
from p2psync.replica.store import Store


class World:
    """Owner, bob and carl (writers), each with a device holding the space."""

    def __init__(self, tmp_path: Path, policy: RemovalPolicy) -> None:
        self.keys = {n: AccountKey.generate() for n in ("owner", "bob", "carl")}
        self.stores = {n: Store(tmp_path / f"{n}.sqlite3", durable=False) for n in self.keys}
        owner = self.keys["owner"]
        o = Space.create(self.stores["owner"], owner, DeviceKey.generate().public, window=0)
        o.set_removal_policy(policy)
        for name in ("bob", "carl"):
            inv, code = o.acl.invite(owner, Role.WRITER)
            o.commit_acl(inv)
            req = o.emit_acl(lambda acl, n=name, c=code: acl.request_join(self.keys[n], c))
            o.emit_acl(lambda acl, r=req: acl.accept(owner, decode_record(r).id))
        self.doc_id = o.new_document().tree.id
        with o.document(self.doc_id).edit() as e:
            e.put(ROOT, "v", "owner")
        self.spaces = {"owner": o}
        for name in ("bob", "carl"):
            sp = Space.adopt(self.stores[name], self.keys[name], DeviceKey.generate().public,
                             o.id, o.header.raw, o.acl_records(), window=0,
                             removal_policy=policy)
            self.spaces[name] = sp
            self.ship("owner", name)

    def ship(self, src: str, dst: str, *, acl: bool = True) -> list[tuple[bytes, Exception]]:
        """What sync does: ACL records, then the document's changes; returns refusals."""
        s, d = self.spaces[src], self.spaces.get(dst)
        if d is None:
            return []
        if acl:
            d.add_acl_records(s.acl_records())
        res = d.add_changes(self.doc_id, [c.raw for c in s.tree(self.doc_id).changes()])
        return list(res.rejected)

    def value(self, name: str) -> object:
        return self.spaces[name].document(self.doc_id).get(["v"])

    def close(self) -> None:
        for st in self.stores.values():
            st.close()


def _back_dated_edit(w: World) -> bytes:
    """Owner removes bob (carl learns it); bob, unaware, edits his old copy and hands the
    change to carl, who relays it. Returns the change id."""
    owner, bob = w.keys["owner"], w.keys["bob"]
    w.spaces["owner"].emit_acl(lambda acl: acl.remove(owner, [bob.public]))
    w.spaces["carl"].add_acl_records(w.spaces["owner"].acl_records())
    with w.spaces["bob"].document(w.doc_id).edit() as e:
        e.put(ROOT, "v", "bob")
    return w.spaces["bob"].tree(w.doc_id).heads[0]


def test_flag_policy_keeps_the_edit_and_flags_it(tmp_path: Path) -> None:
    w = World(tmp_path, "flag")
    assert w.spaces["owner"].removal_policy == "flag"
    bad = _back_dated_edit(w)
    assert w.ship("bob", "carl", acl=False) == []  # carl, a colluder, takes it
    assert w.ship("carl", "owner") == []  # and relays it: kept (today's behaviour) ...
    o = w.spaces["owner"]
    doc = o.document(w.doc_id)
    assert w.value("owner") == "bob"
    removal = o.acl.heads[0]
    # ... but flagged everywhere the owner looks.
    st = doc.status()
    assert [(f.change_id, f.author, f.removal_id) for f in st.flagged] == [
        (bad, w.keys["bob"].public, removal)]
    hist = {h.change_id: h for h in doc.history()}
    assert hist[bad].removed_after == removal
    assert sum(h.removed_after is not None for h in hist.values()) == 1
    assert o.removed_after(o.tree(w.doc_id).get(bad)) == removal
    # The owner's own and carl's changes are not flagged.
    with w.spaces["carl"].document(w.doc_id).edit() as e:
        e.put(ROOT, "c", 1)
    w.ship("carl", "owner")
    assert len(doc.status().flagged) == 1
    w.close()


def test_strict_policy_refuses_the_relayed_edit(tmp_path: Path) -> None:
    w = World(tmp_path, "strict")
    bad = _back_dated_edit(w)
    refused = w.ship("bob", "carl", acl=False)  # carl knows the removal: refuses
    assert [(cid, type(e)) for cid, e in refused] == [(bad, RemovedAuthor)]
    # Carl colludes by hand: it stores bob's change under "flag", then relays it.
    w.spaces["carl"].set_removal_policy("flag")
    assert w.ship("bob", "carl", acl=False) == []
    # Carl's own next edit is built on bob's change: it goes in the same batch and is refused
    # with it (the rest of a batch still attaches: the owner's own changes are duplicates).
    with w.spaces["carl"].document(w.doc_id).edit() as e:
        e.put(ROOT, "c", 1)
    after = w.spaces["carl"].tree(w.doc_id).heads[0]
    refused = w.ship("carl", "owner")
    assert [(cid, type(e)) for cid, e in refused] == [(bad, RemovedAuthor),
                                                      (after, RemovedAuthor)]
    assert w.value("owner") == "owner"
    assert bad not in w.spaces["owner"].tree(w.doc_id)
    assert not w.spaces["owner"].document(w.doc_id).status().flagged
    with pytest.raises(ValueError, match="removal policy"):
        w.spaces["owner"].set_removal_policy("lenient")
    w.close()


def test_a_change_before_the_removal_is_flagged_once_the_removal_is_known(
        tmp_path: Path) -> None:
    """A genuine old edit cannot be told apart from a back-dated one: both are flagged."""
    w = World(tmp_path, "flag")
    with w.spaces["bob"].document(w.doc_id).edit() as e:
        e.put(ROOT, "v", "bob-early")
    early = w.spaces["bob"].tree(w.doc_id).heads[0]
    w.ship("bob", "owner", acl=False)
    o = w.spaces["owner"]
    assert o.removed_after(o.tree(w.doc_id).get(early)) is None  # not removed yet
    o.emit_acl(lambda acl: acl.remove(w.keys["owner"], [w.keys["bob"].public]))
    assert o.removed_after(o.tree(w.doc_id).get(early)) == o.acl.heads[0]
    w.close()
