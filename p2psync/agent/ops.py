"""The operations on a device's spaces and documents, shared by the CLI and the local API.

Each operation takes a :class:`~p2psync.device.LocalDevice` (over its own store, or over a
running agent's replicas) and JSON-able arguments, and returns JSON-able data. So ``p2psync doc
set`` without an agent, the same command routed to a running agent, and an app speaking the
local API all run exactly this code; only the presentation differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from p2psync.crypto.ids import account_id, decode_key, short_hash
from p2psync.crypto.keys import verify
from p2psync.device import LocalDevice, NotFound, doc_ref
from p2psync.errors import P2PSyncError
from p2psync.replica.acl import InviteCode
from p2psync.replica.acl_records import Role
from p2psync.replica.change import CHANGE_DOMAIN
from p2psync.replica.document import Document, Text
from p2psync.timefmt import local_time

ROLES = {"reader": Role.READER, "writer": Role.WRITER, "admin": Role.ADMIN}


class OpError(P2PSyncError):
    """A request cannot be done as asked (bad argument, nothing matches, not allowed)."""


def role_name(role: Role | None) -> str:
    return role.name.lower() if role is not None else "none"


def parse_path(doc: Document, text: str) -> list[str | int]:
    """``a/b/0`` → keys; a segment is a list index when the object it indexes is a list."""
    parts = [p for p in str(text).strip("/").split("/") if p != ""]
    out: list[str | int] = []
    for part in parts:
        parent = doc.get(out) if out else doc.to_json()
        if isinstance(parent, list):
            try:
                out.append(int(part))
            except ValueError as exc:
                raise OpError(f"{'/'.join(map(str, out))} is a list: use a number, "
                              f"not {part!r}") from exc
        else:
            out.append(part)
    return out


# --- spaces -----------------------------------------------------------------------------------
def space_create(dev: LocalDevice, name: str) -> dict[str, Any]:
    space = dev.create_space(name)
    return {"space_id": space.id, "name": name}


def space_list(dev: LocalDevice) -> list[dict[str, Any]]:
    names = dev.names()
    rows = []
    for sid in dev.space_ids():
        sp = dev.open_space(sid)
        role = sp.role()
        rname = role_name(role) if role is not None or dev.keys.account.public not in \
            sp.acl.state.replicators else "replicator"
        rows.append({"space_id": sid, "name": names.get(sid, ""), "role": rname,
                     "documents": len(sp.tree_ids()), "members": len(sp.members())})
    return rows


def space_invite(dev: LocalDevice, space: str, role: str = "writer", no_approval: bool = False,
                 addresses: list[str] | None = None) -> dict[str, Any]:
    """A new invite; ``addresses`` (the agent's reachable ``transport:host:port``) go into the
    code as hints so ``space join CODE`` can find a peer without mDNS."""
    if role not in ROLES:
        raise OpError(f"role must be one of {', '.join(sorted(ROLES))}")
    sp = dev.resolve_space(space)
    raw, code = sp.acl.invite(dev.keys.account, ROLES[role], anyone_can_join=no_approval)
    sp.commit_acl(raw)
    code = InviteCode(code.invite_id, code.seed, sp.id, tuple(addresses or ()))
    return {"space_id": sp.id, "invite": code.encode(), "role": role,
            "approval_required": not no_approval, "addresses": list(code.addresses)}


def space_members(dev: LocalDevice, space: str) -> list[dict[str, Any]]:
    sp = dev.resolve_space(space)
    st = sp.acl.state
    rows = [{"account_id": account_id(a), "role": role_name(r)} for a, r in sp.members()]
    rows += [{"account_id": account_id(a), "role": "replicator"} for a in sorted(st.replicators)]
    return rows


def space_remove(dev: LocalDevice, space: str, account: str) -> dict[str, Any]:
    sp = dev.resolve_space(space)
    who = decode_key("a", account)
    if sp.role(who) is None:
        raise OpError(f"{account} is not a member of {sp.id}")
    sp.emit_acl(lambda acl: acl.remove(dev.keys.account, [who]))
    return {"space_id": sp.id, "removed": account, "read_key_rotated": True}


def space_requests(dev: LocalDevice, space: str) -> list[dict[str, Any]]:
    sp = dev.resolve_space(space)
    return [{"request": short_hash(rid), "account_id": account_id(req.joiner)}
            for rid, req in sorted(sp.acl.state.requests.items())]


def space_accept(dev: LocalDevice, space: str, request: str,
                 role: str | None = None) -> dict[str, Any]:
    sp = dev.resolve_space(space)
    reqs = [rid for rid in sp.acl.state.requests
            if short_hash(rid).startswith(str(request).lower())]
    if len(reqs) != 1:
        raise OpError(f"{request!r} matches {len(reqs)} pending requests")
    if role is not None and role not in ROLES:
        raise OpError(f"role must be one of {', '.join(sorted(ROLES))}")
    r = ROLES[role] if role else None
    sp.emit_acl(lambda acl: acl.accept(dev.keys.account, reqs[0], r))
    return {"space_id": sp.id, "accepted": short_hash(reqs[0])}


def space_add_replicator(dev: LocalDevice, space: str, account: str) -> dict[str, Any]:
    """Let ``account`` (a backup peer's account) store and serve the space's ciphertext."""
    sp = dev.resolve_space(space)
    who = decode_key("a", account)
    sp.emit_acl(lambda acl: acl.add_replicator(dev.keys.account, who))
    return {"space_id": sp.id, "replicator": account}


# --- documents --------------------------------------------------------------------------------
def space_delete_docs(dev: LocalDevice, space: str, docs: list[str]) -> dict[str, Any]:
    """Delete documents everywhere with a signed tombstone (writers and above)."""
    sp = dev.resolve_space(space)
    ids = [doc_ref(sp, str(d)) for d in docs]
    if not ids:
        raise OpError("name at least one document to delete")
    sp.delete_objects(ids)
    return {"space_id": sp.id, "deleted": [short_hash(t) for t in ids]}


def space_delete(dev: LocalDevice, space: str) -> dict[str, Any]:
    """Delete a whole space everywhere (owner only): every document dropped, edits refused."""
    sp = dev.resolve_space(space)
    sp.delete_space()
    return {"space_id": sp.id, "deleted": True}


def doc_new(dev: LocalDevice, space: str) -> dict[str, Any]:
    sp = dev.resolve_space(space)
    doc = sp.new_document()
    return {"space_id": sp.id, "doc": short_hash(doc.tree.id)}


def doc_set(dev: LocalDevice, space: str, doc: str, path: str, value: Any,
            text: bool = False) -> dict[str, Any]:
    """Set ``path`` to ``value`` (already decoded JSON) in one signed change."""
    if text:
        if not isinstance(value, str):
            raise OpError("text needs a JSON string value")
        value = Text(value)
    sp = dev.resolve_space(space)
    d = sp.document(doc_ref(sp, doc))
    keys = parse_path(d, path)
    if not keys:
        raise OpError("give a PATH inside the document (e.g. title or items/0)")
    parent = d.obj(keys[:-1])
    with d.edit() as e:
        key = keys[-1]
        if isinstance(key, int) and key == e.length(parent):
            e.insert(parent, key, value)
        else:
            e.put(parent, key, value)
    d.flush()
    return {"space_id": sp.id, "doc": short_hash(d.tree.id),
            "heads": [short_hash(h) for h in d.tree.heads]}


def doc_get(dev: LocalDevice, space: str, doc: str, path: str | None = None,
            at: str | None = None) -> Any:
    sp = dev.resolve_space(space)
    d = sp.document(doc_ref(sp, doc))
    heads = None
    if at:
        heads = []
        for ref in at.split(","):
            hits = [c.id for c in d.tree.changes()
                    if short_hash(c.id).startswith(ref.strip().lower())]
            if len(hits) != 1:
                raise OpError(f"--at {ref!r} matches {len(hits)} changes")
            heads.append(hits[0])
    return d.get(parse_path(d, path), heads=heads) if path else d.to_json(heads)


def doc_list(dev: LocalDevice, space: str) -> list[dict[str, Any]]:
    sp = dev.resolve_space(space)
    return [{"doc": short_hash(t), "heads": [short_hash(h) for h in sp.heads(t)]}
            for t in sp.tree_ids()]


def doc_history(dev: LocalDevice, space: str, doc: str) -> list[dict[str, Any]]:
    sp = dev.resolve_space(space)
    tree = sp.tree(doc_ref(sp, doc))
    rows: list[dict[str, Any]] = []
    for ch in tree.replay_order():
        try:
            verify(ch.author, CHANGE_DOMAIN, ch.body, ch.signature)
            ok = True
        except P2PSyncError:
            ok = False
        rows.append({"change": short_hash(ch.id), "author": account_id(ch.author),
                     "time": local_time(ch.timestamp),
                     "parents": [short_hash(p) for p in ch.prev_ids],
                     "snapshot": ch.snapshot, "signature_ok": ok})
    return rows


def whoami(dev: LocalDevice) -> dict[str, Any]:
    return {"account_id": dev.keys.account.id, "peer_id": dev.keys.device.id,
            "home": str(dev.home.path)}


#: Operations that need nothing but the device (name → function taking keyword arguments).
LOCAL_OPS: dict[str, Callable[..., Any]] = {
    "whoami": whoami,
    "space.create": space_create,
    "space.list": space_list,
    "space.invite": space_invite,
    "space.members": space_members,
    "space.remove": space_remove,
    "space.requests": space_requests,
    "space.accept": space_accept,
    "space.add_replicator": space_add_replicator,
    "space.delete_docs": space_delete_docs,
    "space.delete": space_delete,
    "doc.new": doc_new,
    "doc.list": doc_list,
    "doc.set": doc_set,
    "doc.get": doc_get,
    "doc.history": doc_history,
}


def run_local(dev: LocalDevice, op: str, params: dict[str, Any]) -> Any:
    """Run a device operation by name; unknown names and bad arguments raise :class:`OpError`."""
    fn = LOCAL_OPS.get(op)
    if fn is None:
        raise OpError(f"unknown operation {op!r}")
    try:
        return fn(dev, **params)
    except TypeError as exc:
        raise OpError(f"{op}: bad parameters ({exc})") from None
    except NotFound:
        raise


def decode_json_value(text: str) -> Any:
    """The JSON value of a CLI argument, with a hint for the usual mistake (unquoted text)."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise OpError(f"value is not JSON: {exc} (quote strings: '\"text\"')") from exc
