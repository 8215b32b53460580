"""``p2psync demo``: a walkthrough on this machine with real keys, real SQLite files and real
Automerge documents (the multi-peer network demo replaces this once the agent lands)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from p2psync.crypto.ids import short_hash
from p2psync.crypto.keys import account_from_phrase, new_recovery_phrase
from p2psync.device import LocalDevice
from p2psync.home import Home
from p2psync.replica.acl_records import Role
from p2psync.replica.document import ROOT, Text
from p2psync.replica.space import Space


def run_demo(*, out_json: bool = False, base: Path | None = None) -> dict[str, object]:
    """Two devices of two accounts share a space through its verified records; prints a report."""
    tmp = tempfile.TemporaryDirectory(prefix="p2psync-demo-") if base is None else None
    root = Path(tmp.name) if tmp is not None else base
    assert root is not None
    say = (lambda *a: None) if out_json else print
    try:
        phrase = new_recovery_phrase()
        laptop = Home(root / "laptop")
        phone = Home(root / "phone")
        la_keys = laptop.create(account_from_phrase(phrase), "")
        ph_keys = phone.create(account_from_phrase(new_recovery_phrase()), "")
        say(f"laptop  account {la_keys.account.id[:16]}…  peer {la_keys.device.id[:16]}…")
        say(f"phone   account {ph_keys.account.id[:16]}…  peer {ph_keys.device.id[:16]}…")
        with LocalDevice(laptop, la_keys, window=0) as la, LocalDevice(phone, ph_keys,
                                                                         window=0) as ph:
            space = la.create_space("groceries")
            invite, code = space.acl.invite(la_keys.account, Role.WRITER, anyone_can_join=True)
            space.commit_acl(invite)
            say(f"space   {space.id}\ninvite  {code.encode()[:40]}…")
            doc = space.new_document()
            with doc.edit() as e:
                e.put(ROOT, "title", Text("Groceries"))
                e.put(ROOT, "items", ["milk"])
            # The phone joins with the invite code (records travel as signed bytes).
            mine = Space.adopt(ph.store, ph_keys.account, ph_keys.device.public, space.id,
                               space.header.raw, space.acl_records(), window=0)
            mine.emit_acl(lambda acl: acl.join(ph_keys.account, code))
            space.add_acl_records(mine.acl_records())
            mine.add_changes(doc.tree.id, [c.raw for c in doc.tree.changes()])
            # Concurrent edits on both devices, then exchange.
            with doc.edit() as e:
                e.insert(doc.obj(["items"]), 1, "eggs")
            pdoc = mine.document(doc.tree.id)
            with pdoc.edit() as e:
                e.insert(pdoc.obj(["items"]), 1, "bread")
            mine.add_changes(doc.tree.id, [c.raw for c in doc.tree.changes()])
            space.add_changes(doc.tree.id, [c.raw for c in pdoc.tree.changes()])
            a, b = doc.to_json(), pdoc.to_json()
            report = {"space": space.id, "doc": short_hash(doc.tree.id), "laptop": a,
                      "phone": b, "converged": a == b and doc.tree.heads == pdoc.tree.heads,
                      "history": len(doc.tree), "members": len(space.members())}
            say(f"laptop  {json.dumps(a)}\nphone   {json.dumps(b)}")
            say(f"converged: {report['converged']}  ({report['history']} signed changes, "
                f"{report['members']} members)")
            if out_json:
                print(json.dumps(report, indent=1))
            return report
    finally:
        if tmp is not None:
            tmp.cleanup()
