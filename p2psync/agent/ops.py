"""The operations on a device's spaces and documents, shared by the CLI and the local API.

Each operation takes a :class:`~p2psync.device.LocalDevice` (over its own store, or over a
running agent's replicas) and JSON-able arguments, and returns JSON-able data. So ``p2psync doc
set`` without an agent, the same command routed to a running agent, and an app speaking the
local API all run exactly this code; only the presentation differs.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from p2psync.apiclient import decode_json_value as decode_json_value  # light: the thin CLI path
from p2psync.crypto.ids import account_id, decode_key, short_hash
from p2psync.crypto.keys import verify
from p2psync.device import LocalDevice, doc_ref
from p2psync.errors import (
    AccessDenied,
    DocumentError,
    InvalidParams,
    InvalidPath,
    P2PSyncError,
    UnknownOperation,
    UnsupportedContent,
)
from p2psync.errors import OpError as OpError  # defined there so the thin CLI path can use it
from p2psync.replica import edits as edits_mod
from p2psync.replica.acl import InviteCode
from p2psync.replica.acl_records import Decline, RequestJoin, Role, decode_record
from p2psync.replica.change import CHANGE_DOMAIN
from p2psync.replica.document import Document, Text, read_automerge
from p2psync.replica.space import Space
from p2psync.timefmt import local_time

ROLES = {"reader": Role.READER, "writer": Role.WRITER, "admin": Role.ADMIN}


def role_name(role: Role | None) -> str:
    return role.name.lower() if role is not None else "none"


def join_state(space: Space, me: bytes, now: float | None = None) -> dict[str, Any]:
    """Where this account stands in ``space``: ``member`` (with its role), ``pending`` (our join
    request waits for an admin: ``request`` is the id to accept), ``declined`` / ``revoked`` /
    ``expired`` (our request can never be accepted), ``removed`` / ``left`` (with ``by``,
    ``record`` and ``at``, once the record is known here), or ``none``.

    Read from the ACL alone, so the CLI without an agent, the agent and an app agree."""
    st = space.acl.state
    role = st.role(me)
    if role is not None or me in st.replicators:
        return {"state": "member", "role": role_name(role) if role is not None else "replicator"}
    gone = st.departed.get(me)
    if gone is not None:  # removed, or left (a Leave record of our own)
        rec = decode_record(space.acl.record(gone).raw)
        return {"state": "left" if rec.author == me else "removed",
                "by": account_id(rec.author), "record": short_hash(gone),
                "at": local_time(rec.timestamp * 1000)}
    mine = [q for q in st.requests.values() if q.joiner == me]
    when = time.time() if now is None else now
    if mine:
        q = mine[0]
        inv = st.invites.get(q.invite_id)
        if inv is not None and inv.expired(int(when)):
            return {"state": "expired", "request": short_hash(q.record_id)}
        return {"state": "pending", "request": short_hash(q.record_id)}
    asked: list[bytes] = []
    declined: set[bytes] = set()
    for raw in space.acl.export():
        rec = decode_record(raw)
        if isinstance(rec.payload, RequestJoin) and rec.author == me:
            asked.append(rec.id)
        elif isinstance(rec.payload, Decline):
            declined.add(rec.payload.request_id)
    if not asked:
        return {"state": "none"}
    last = asked[-1]
    if last in declined:
        return {"state": "declined", "request": short_hash(last)}
    return {"state": "revoked", "request": short_hash(last)}


def _writable(space: Space, dev: LocalDevice) -> None:
    """Refuse an edit this account may not sign here, saying why (removed, pending, reader)
    rather than letting it fail deeper (or look like it worked)."""
    me = dev.keys.account.public
    if space.acl.state.can_write(me):
        return
    js = join_state(space, me)
    if js["state"] in ("removed", "left"):
        what = (f"you were removed from {space.id} by {js['by'][:16]}… at {js['at']}"
                if js["state"] == "removed" else f"you left {space.id} at {js['at']}")
        raise AccessDenied(f"{what}: this device can no longer edit it")
    if js["state"] == "member":
        raise AccessDenied(f"your role in {space.id} is {js['role']}: it cannot edit")
    raise AccessDenied(f"you are not a member of {space.id} (join: {js['state']})")


def parse_invite(code: str) -> InviteCode:
    """An invite code, or an error that says what the person can do (the decoder's details —
    base32, msgpack lengths — mean nothing to them)."""
    try:
        return InviteCode.decode(code)
    except P2PSyncError as exc:
        text = str(code).strip()
        if not text.startswith(("p2psync-invite1:", "p2psync-invite2:")):
            what = ("this is not a p2psync invite code (it starts with p2psync-invite2:); "
                    "copy the whole code that `p2psync space invite` printed")
        else:
            what = ("this invite code is damaged or cut short: copy it again as ONE line, "
                    "all of it (or ask for a new one)")
        # the decoder's reason (msgpack lengths, base32) stays in the debug log: it tells a
        # developer which byte broke, and tells the person holding the code nothing
        logging.getLogger(__name__).debug("event=invite_code_refused reason=%s", exc)
        raise InvalidParams(what) from None


def accept_command(space_id: str, request: str) -> str:
    """What an admin runs to accept a pending request (shown to the joiner)."""
    return f"p2psync space accept {space_id} {request}"


# --- declared parameters ----------------------------------------------------------------------
class Params(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every operation's declared parameters. A request's ``params`` object is converted
    to the op's subclass with msgspec (strict: no coercion, unknown fields refused), so a wrong
    type, a missing field or an out-of-range value is an :class:`InvalidParams` naming the field,
    never an exception deep inside the operation."""


Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]  #: a space/doc/account ref
Name = Annotated[str, msgspec.Meta(max_length=256)]
DocPath = Annotated[str, msgspec.Meta(max_length=4096)]
RoleName = Literal["reader", "writer", "admin"]
Address = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
Timeout = Annotated[float, msgspec.Meta(ge=0, le=3600)]
MAX_VALUE_DEPTH = 64  #: nesting of a JSON value written into a document
_I64 = (-(1 << 63), (1 << 63) - 1)


class NoParams(Params, frozen=True):
    pass


class SpaceCreateParams(Params, frozen=True):
    name: Name


class SpaceParams(Params, frozen=True):
    space: Ref


class DeviceParams(Params, frozen=True):
    device: Ref


class SpaceRenameParams(Params, frozen=True):
    space: Ref
    name: Name
    local: bool = False


class SpaceInviteParams(Params, frozen=True):
    space: Ref
    role: RoleName = "writer"
    no_approval: bool = False
    addresses: Annotated[list[Address], msgspec.Meta(max_length=64)] | None = None
    #: seconds the invite stays usable (None: no expiry)
    expires_in: Annotated[int, msgspec.Meta(ge=1, le=10 * 365 * 86400)] | None = None


class MemberParams(Params, frozen=True):
    space: Ref
    account: Ref


class InviteRefParams(Params, frozen=True):
    space: Ref
    invite: Ref


class RequestRefParams(Params, frozen=True):
    space: Ref
    request: Ref


class SpaceAcceptParams(Params, frozen=True):
    space: Ref
    request: Ref
    role: RoleName | None = None


class DeleteDocsParams(Params, frozen=True):
    space: Ref
    docs: Annotated[list[Ref], msgspec.Meta(min_length=1, max_length=10_000)]


class DocParams(Params, frozen=True):
    space: Ref
    doc: Ref


class DocSetParams(Params, frozen=True):
    space: Ref
    doc: Ref
    path: DocPath
    value: Any
    text: bool = False


class DocGetParams(Params, frozen=True):
    space: Ref
    doc: Ref
    path: DocPath | None = None
    at: Annotated[str, msgspec.Meta(max_length=8192)] | None = None


class DocChangeParams(Params, frozen=True):
    space: Ref
    doc: Ref
    edits: edits_mod.EditList


class DocPathParams(Params, frozen=True):
    space: Ref
    doc: Ref
    path: DocPath


class DocInsertParams(Params, frozen=True):
    space: Ref
    doc: Ref
    path: DocPath
    value: Any
    text: bool = False


class DocSpliceParams(Params, frozen=True):
    space: Ref
    doc: Ref
    path: DocPath
    pos: edits_mod.Index
    delete: edits_mod.Index = 0
    insert: Annotated[str, msgspec.Meta(max_length=1 << 20)] = ""


class DocIncrementParams(Params, frozen=True):
    space: Ref
    doc: Ref
    path: DocPath
    by: edits_mod.Int64 = 1


class DocCounterParams(Params, frozen=True):
    space: Ref
    doc: Ref
    path: DocPath
    value: edits_mod.Int64 = 0


FilePath = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
MAX_IMPORT = 8 << 20  #: bytes of a .automerge file (one tree change's payload limit)


class DocExportParams(Params, frozen=True):
    space: Ref
    doc: Ref
    file: FilePath | None = None


class DocImportParams(Params, frozen=True):
    space: Ref
    file: FilePath | None = None
    data: Annotated[str, msgspec.Meta(max_length=(MAX_IMPORT * 4) // 3 + 4)] | None = None


P = TypeVar("P", bound=Params)


def parse_params(op: str, schema: type[P], params: Any) -> P:
    """``params`` (decoded JSON, or None for none) as ``schema``, or :class:`InvalidParams`."""
    try:
        return msgspec.convert({} if params is None else params, schema)
    except msgspec.ValidationError as exc:
        msg = (str(exc).replace("Object contains unknown field", "unknown parameter")
               .replace("Object missing required field", "missing parameter")
               .replace("`$.", "`").replace("- at `$`", "- at params"))
        raise InvalidParams(f"{op}: {msg}") from None


def check_value(value: Any) -> None:
    """A JSON value fit for a document: nesting ≤ MAX_VALUE_DEPTH, integers in int64, no
    empty object keys (Automerge refuses them).

    Iterative (no recursion on hostile nesting); raises :class:`InvalidParams`."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth > MAX_VALUE_DEPTH:
                raise InvalidParams(f"value is nested deeper than {MAX_VALUE_DEPTH} levels")
            if isinstance(v, dict) and "" in v:
                raise InvalidParams("an object in the value has an empty key (\"\"): "
                                    "documents need non-empty keys")
            items = v.values() if isinstance(v, dict) else v
            stack.extend((x, depth + 1) for x in items)
        elif isinstance(v, int) and not isinstance(v, bool) and not _I64[0] <= v <= _I64[1]:
            raise InvalidParams(f"integer {v} does not fit in 64 bits (store it as a string)")
        elif not (v is None or isinstance(v, bool | int | float | str)):
            raise InvalidParams(f"a {type(v).__name__} is not a JSON value")


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else "a value"


def parse_path(doc: Document, text: str, *, write: bool = False,
               heads: list[bytes] | None = None) -> list[str | int]:
    """``a/b/0`` → keys; a segment is a list index when the object it indexes is a list.

    Checked against the document (at ``heads``): an index must be a number inside the list
    (``write``: or one past its end, which appends); nothing can be inside a scalar or a missing
    key. Anything else is an :class:`InvalidPath` that says what is there instead."""
    parts = [p for p in str(text).strip("/").split("/") if p != ""]
    out: list[str | int] = []
    node: Any = doc.to_json(heads)
    for i, part in enumerate(parts):
        where = "/".join(parts[:i]) or "the document root"
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not (part.isascii() and part.isdigit()):
                raise InvalidPath(f"{where} is a list: use a number, not {part!r}")
            idx, n = int(part), len(node)
            if idx > n or (idx == n and not (write and last)):
                span = f"0–{n - 1}" if n else "none"
                extra = f", or {n} to append" if write else ""
                raise InvalidPath(f"{where} has {n} element(s): index {idx} is past the end "
                                  f"(use {span}{extra})")
            out.append(idx)
            node = node[idx] if idx < n else None
        elif isinstance(node, dict):
            if node.keys() == {"$bytes"} or node.keys() == {"$timestamp"}:
                raise InvalidPath(f"{where} is a scalar: there is nothing inside it")
            out.append(part)
            node = node.get(part)
            if node is None and not last:
                raise InvalidPath(f"no {'/'.join(parts[:i + 1])} in the document: set it to "
                                  "an object or a list first")
        else:
            raise InvalidPath(f"{where} is {_kind(node)}, not an object or a list: "
                              "there is nothing inside it")
    return out


# --- spaces -----------------------------------------------------------------------------------
def space_create(dev: LocalDevice, name: str) -> dict[str, Any]:
    space = dev.create_space(name)
    return {"space_id": space.id, "name": name}


def space_rename(dev: LocalDevice, space: str, name: str, local: bool = False) -> dict[str, Any]:
    """Rename a space for every member (``local`` False: a SpaceMeta record sealed under the
    read key, admins and the owner only), or give it a local alias on this device only
    (``local``: an empty name clears the alias)."""
    sp = dev.resolve_space(space)
    if local:
        dev.set_name(sp.id, name)
        return {"space_id": sp.id, "alias": name or None, "name": dev.shared_name(sp)}
    if not name:
        raise InvalidParams("a space name cannot be empty")
    role = sp.role()
    if role is None or role < Role.ADMIN:
        raise AccessDenied(f"only admins and the owner rename a space (your role: "
                           f"{role_name(role)}); `--local` gives it a name on this device only")
    dev.rename(sp, name)
    return {"space_id": sp.id, "name": dev.shared_name(sp), "alias": dev.aliases().get(sp.id)}


def space_list(dev: LocalDevice) -> list[dict[str, Any]]:
    aliases = dev.aliases()
    rows = []
    for sid in dev.space_ids():
        sp = dev.open_space(sid)
        js = join_state(sp, dev.keys.account.public)
        # not a member: where our join request stands (pending, declined, …) instead of "none"
        rname = js["role"] if js["state"] == "member" else js["state"]
        shared = dev.shared_name(sp)
        row = {"space_id": sid, "name": aliases.get(sid) or shared or "", "shared_name": shared,
               "alias": aliases.get(sid), "role": rname,
               "documents": len(sp.tree_ids()), "members": len(sp.members())}
        if "request" in js:
            row["request"] = js["request"]
        rows.append(row)
    return rows


def space_invite(dev: LocalDevice, space: str, role: str = "writer", no_approval: bool = False,
                 addresses: list[str] | None = None,
                 expires_in: int | None = None) -> dict[str, Any]:
    """A new invite; ``addresses`` (the agent's reachable ``transport:host:port``) go into the
    code as hints so ``space join CODE`` can find a peer without mDNS; ``expires_in`` seconds
    after now, joins and accepts through it are refused (signed in the Invite record)."""
    if role not in ROLES:
        raise OpError(f"role must be one of {', '.join(sorted(ROLES))}")
    sp = dev.resolve_space(space)
    expires_at = int(time.time()) + expires_in if expires_in else 0
    raw, code = sp.acl.invite(dev.keys.account, ROLES[role], anyone_can_join=no_approval,
                              expires_at=expires_at)
    sp.commit_acl(raw)
    code = InviteCode(code.invite_id, code.seed, sp.id, tuple(addresses or ()))
    return {"space_id": sp.id, "invite": code.encode(), "role": role,
            "approval_required": not no_approval, "addresses": list(code.addresses),
            "expires_at": expires_at or None}


def space_members(dev: LocalDevice, space: str) -> list[dict[str, Any]]:
    sp = dev.resolve_space(space)
    st = sp.acl.state
    rows = [{"account_id": account_id(a), "role": role_name(r)} for a, r in sp.members()]
    rows += [{"account_id": account_id(a), "role": "replicator"} for a in sorted(st.replicators)]
    return rows


def _account(sp: Space, ref: str, *, members_only: bool = True) -> bytes:
    """An account by its whole id, or a unique prefix of a member's (or replicator's) id;
    an ambiguous prefix names the matches."""
    ref = str(ref).strip()
    with contextlib.suppress(P2PSyncError):
        return decode_key("a", ref)
    st = sp.acl.state
    pool = list(st.members) + ([] if members_only else sorted(st.replicators))
    hits = [a for a in pool if account_id(a).startswith(ref.lower())] if ref else []
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise OpError(f"{ref!r} is neither an account id nor the start of a member's "
                      "(see `p2psync space members`)")
    raise OpError(f"{ref!r} matches {len(hits)} accounts: "
                  + ", ".join(account_id(a)[:16] + "…" for a in hits[:8]) + "; use more of it")


def space_remove(dev: LocalDevice, space: str, account: str) -> dict[str, Any]:
    sp = dev.resolve_space(space)
    who = _account(sp, account)
    if sp.role(who) is None:
        raise OpError(f"{account} is not a member of {sp.id}")
    sp.emit_acl(lambda acl: acl.remove(dev.keys.account, [who]))
    return {"space_id": sp.id, "removed": account_id(who), "read_key_rotated": True}


def space_requests(dev: LocalDevice, space: str) -> list[dict[str, Any]]:
    """Join requests an admin can still accept, oldest first (those whose invite expired are
    void and left out: the ACL's ``pending_requests``)."""
    sp = dev.resolve_space(space)
    st = sp.acl.state
    rows = []
    for req in sp.acl.pending_requests(now=time.time()):
        inv = st.invites.get(req.invite_id)
        rows.append({"request": short_hash(req.record_id), "account_id": account_id(req.joiner),
                     "invite": short_hash(req.invite_id),
                     "role": role_name(inv.role) if inv is not None else None,
                     "expires_at": (inv.expires_at or None) if inv is not None else None})
    return rows


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


def space_leave(dev: LocalDevice, space: str) -> dict[str, Any]:
    """Leave a space, or cancel a join: a member (not the owner) writes a signed Leave record
    and keeps its copy until it runs ``leave`` again (so the record can reach the others); a
    device that is not a member (a pending, declined or failed join) drops its copy at once."""
    sp = dev.resolve_space(space)
    me = dev.keys.account.public
    js = join_state(sp, me)
    if js["state"] == "member" and sp.role() is not None:
        sp.emit_acl(lambda acl: acl.leave(dev.keys.account))
        return {"space_id": sp.id, "left": True, "forgotten": False, "was": js["state"]}
    dev.forget_space(sp.id)
    return {"space_id": sp.id, "left": True, "forgotten": True, "was": js["state"]}


def space_invites(dev: LocalDevice, space: str) -> list[dict[str, Any]]:
    """The space's open invites (not revoked; expired ones flagged), oldest first."""
    sp = dev.resolve_space(space)
    now = int(time.time())
    return [{"invite": short_hash(inv.record_id), "role": role_name(inv.role),
             "approval_required": not inv.anyone_can_join, "by": account_id(inv.author),
             "expires_at": inv.expires_at or None, "expired": inv.expired(now),
             "pending_requests": sum(1 for q in sp.acl.state.requests.values()
                                     if q.invite_id == inv.record_id)}
            for inv in sp.acl.state.invites.values()]


def _one(kind: str, ids: Any, ref: str) -> bytes:
    hits = [i for i in ids if short_hash(i).startswith(str(ref).strip().lower())]
    if len(hits) != 1:
        raise OpError(f"{ref!r} matches {len(hits)} {kind}" + (
            ": " + ", ".join(short_hash(h)[:12] for h in hits[:8]) if hits else ""))
    return bytes(hits[0])


def space_revoke(dev: LocalDevice, space: str, invite: str) -> dict[str, Any]:
    """Revoke an invite (id or unique prefix): its code stops working and its pending
    requests are void."""
    sp = dev.resolve_space(space)
    iid = _one("open invites", sp.acl.state.invites, invite)
    sp.emit_acl(lambda acl: acl.revoke_invite(dev.keys.account, iid))
    return {"space_id": sp.id, "revoked": short_hash(iid)}


def space_decline(dev: LocalDevice, space: str, request: str) -> dict[str, Any]:
    """Decline a pending join request (id or unique prefix)."""
    sp = dev.resolve_space(space)
    rid = _one("pending requests", sp.acl.state.requests, request)
    sp.emit_acl(lambda acl: acl.decline(dev.keys.account, rid))
    return {"space_id": sp.id, "declined": short_hash(rid)}


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
    check_value(value)
    if text:
        if not isinstance(value, str):
            raise InvalidParams("text needs a JSON string value")
        value = Text(value)
    sp = dev.resolve_space(space)
    _writable(sp, dev)
    d = sp.document(doc_ref(sp, doc))
    keys = parse_path(d, path, write=True)
    if not keys:
        raise InvalidPath("give a PATH inside the document (e.g. title or items/0)")
    try:
        parent = d.obj(keys[:-1])
    except DocumentError as exc:
        raise InvalidPath(str(exc)) from None
    with d.edit() as e:
        key = keys[-1]
        if isinstance(key, int) and key == e.length(parent):
            e.insert(parent, key, value)
        else:
            e.put(parent, key, value)
    d.flush()
    return {"space_id": sp.id, "doc": short_hash(d.tree.id),
            "heads": [short_hash(h) for h in d.tree.heads]}


def doc_change(dev: LocalDevice, space: str, doc: str,
               edits: list[edits_mod.Edit]) -> dict[str, Any]:
    """Apply ``edits`` (put, delete, insert, splice, increment, counter) as ONE signed change:
    all of them or, on the first bad one (a typed InvalidPath / WrongType), none."""
    for ed in edits:
        if isinstance(ed, edits_mod.Put | edits_mod.Insert):
            check_value(ed.value)
    sp = dev.resolve_space(space)
    _writable(sp, dev)
    d = sp.document(doc_ref(sp, doc))
    edits_mod.change(d, edits)
    d.flush()
    return {"space_id": sp.id, "doc": short_hash(d.tree.id), "edits": len(edits),
            "heads": [short_hash(h) for h in d.tree.heads]}


def doc_delete(dev: LocalDevice, space: str, doc: str, path: str) -> dict[str, Any]:
    return doc_change(dev, space, doc, [edits_mod.Delete(path=path)])


def doc_insert(dev: LocalDevice, space: str, doc: str, path: str, value: Any,
               text: bool = False) -> dict[str, Any]:
    return doc_change(dev, space, doc, [edits_mod.Insert(path=path, value=value, text=text)])


def doc_splice(dev: LocalDevice, space: str, doc: str, path: str, pos: int, delete: int = 0,
               insert: str = "") -> dict[str, Any]:
    return doc_change(dev, space, doc, [edits_mod.Splice(path=path, pos=pos, delete=delete,
                                                         insert=insert)])


def doc_increment(dev: LocalDevice, space: str, doc: str, path: str,
                  by: int = 1) -> dict[str, Any]:
    return doc_change(dev, space, doc, [edits_mod.Increment(path=path, by=by)])


def doc_counter(dev: LocalDevice, space: str, doc: str, path: str,
                value: int = 0) -> dict[str, Any]:
    return doc_change(dev, space, doc, [edits_mod.MakeCounter(path=path, value=value)])


def doc_export(dev: LocalDevice, space: str, doc: str,
               file: str | None = None) -> dict[str, Any]:
    """The document as a standard ``.automerge`` file: written to ``file`` (an absolute path
    on the agent's machine) or returned base64 in ``data``."""
    sp = dev.resolve_space(space)
    d = sp.document(doc_ref(sp, doc))
    data = d.save_automerge()
    out: dict[str, Any] = {"space_id": sp.id, "doc": short_hash(d.tree.id), "bytes": len(data)}
    if file is None:
        out["data"] = base64.b64encode(data).decode()
        return out
    path = Path(file)
    if not path.is_absolute():
        raise InvalidParams("file must be an absolute path (the CLI makes it one)")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    out["file"] = str(path)
    return out


def doc_import(dev: LocalDevice, space: str, file: str | None = None,
               data: str | None = None) -> dict[str, Any]:
    """A new document holding the content of a ``.automerge`` file (``file``: an absolute
    path on the agent's machine, or ``data`` base64), as one signed change."""
    if (file is None) == (data is None):
        raise InvalidParams("give exactly one of file and data")
    if file is not None:
        path = Path(file)
        if not path.is_absolute():
            raise InvalidParams("file must be an absolute path (the CLI makes it one)")
        try:
            if path.stat().st_size > MAX_IMPORT:
                raise InvalidParams(f"{path} is larger than {MAX_IMPORT >> 20} MiB")
            raw = path.read_bytes()
        except OSError as exc:
            raise OpError(f"cannot read {path}: {exc.strerror or exc}") from None
    else:
        try:
            raw = base64.b64decode(data or "", validate=True)
        except ValueError:
            raise InvalidParams("data is not base64") from None
    try:  # damaged or unrenderable content: refused before a doc is made
        read_automerge(raw)
    except UnsupportedContent:
        raise
    except DocumentError as exc:
        raise InvalidParams(f"{file or 'data'} is not a .automerge file Automerge can load "
                            f"({exc})") from None
    sp = dev.resolve_space(space)
    d = sp.new_document()
    d.import_automerge(raw)
    return {"space_id": sp.id, "doc": short_hash(d.tree.id), "bytes": len(raw),
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
    if not path:
        return d.to_json(heads)
    keys = parse_path(d, path, heads=heads)
    try:
        return d.get(keys, heads=heads)
    except DocumentError as exc:
        raise InvalidPath(str(exc)) from None


def doc_list(dev: LocalDevice, space: str) -> list[dict[str, Any]]:
    sp = dev.resolve_space(space)
    return [{"doc": short_hash(t), "heads": [short_hash(h) for h in sp.heads(t)]}
            for t in sp.tree_ids()]


def doc_history(dev: LocalDevice, space: str, doc: str) -> list[dict[str, Any]]:
    sp = dev.resolve_space(space)
    tree = sp.tree(doc_ref(sp, doc))
    quarantined: dict[bytes, str] = {}
    # what became of each change's content, and (change format 2) its sealed time and
    # snapshot flag: both need the read key; replicators have none
    document: Document | None = None
    with contextlib.suppress(P2PSyncError):
        d = sp.document(tree.id)
        quarantined = {q.change_id: q.reason for q in d.status().quarantined}
        document = d
    rows: list[dict[str, Any]] = []
    for ch in tree.replay_order():
        ts, snap = (document.claims(ch) if document is not None
                    else (ch.timestamp, ch.snapshot))
        gone = sp.removed_after(ch)
        try:
            verify(ch.author, CHANGE_DOMAIN, ch.body, ch.signature)
            ok = True
        except P2PSyncError:
            ok = False
        rows.append({"change": short_hash(ch.id), "author": account_id(ch.author),
                     "time": local_time(ts) if ts is not None else None,
                     "parents": [short_hash(p) for p in ch.prev_ids],
                     "snapshot": snap, "signature_ok": ok,
                     "quarantined": quarantined.get(ch.id),
                     "removed_after": short_hash(gone) if gone is not None else None})
    return rows


# --- devices of this account (pairing: p2psync/agent/pairing.py) -----------------------------
def host_bundle(dev: LocalDevice, device_pub: bytes, name: str,
                addresses: list[str] | None = None) -> Any:
    """What a new device of this account receives when it pairs: the account key, a device
    certificate for its key signed by the account key, and every space held here (header and
    ACL records; it verifies them and syncs the documents). Records it in the device list."""
    import socket

    from p2psync.agent import pairing
    from p2psync.crypto.cert import DeviceCertificate

    cert = DeviceCertificate.issue(dev.keys.account, device_pub)
    spaces = []
    for sid in dev.space_ids():
        sp = dev.open_space(sid)
        spaces.append((sid, sp.header.raw, sp.acl_records()))
    pairing.record_device(dev.home.path, device_pub, name, cert=cert.raw)
    return pairing.Bundle(dev.keys.account, cert, dev.keys.device.id, socket.gethostname(),
                          spaces, list(addresses or []))


def device_list(dev: LocalDevice) -> list[dict[str, Any]]:
    """This device and the devices paired from or to it, with their state."""
    from p2psync.agent import pairing

    rows = pairing.load_devices(dev.home.path)
    me = dev.keys.device.id
    out = [{"peer_id": me, "name": "this device", "this_device": True, "state": "active",
            "paired_at": None}]
    for d in rows:
        if d.get("peer_id") == me:
            out[0].update(name=d.get("name") or "this device", paired_at=d.get("paired_at"))
            continue
        out.append({"peer_id": d.get("peer_id"), "name": d.get("name"), "this_device": False,
                    "state": "removed" if d.get("revoked_at") else "active",
                    "paired_at": d.get("paired_at")})
    return out


def device_remove(dev: LocalDevice, device: str) -> dict[str, Any]:
    """Revoke a paired device's certificate here: this device refuses it from now on (its
    agent drops and refuses its connections). It held the account key: docs/threat-model.md
    "Device pairing" says what that means and when to move to a new account."""
    from p2psync.agent import pairing

    rows = pairing.load_devices(dev.home.path)
    ref = str(device).strip()
    hits = [d for d in rows if str(d.get("peer_id", "")).startswith(ref)
            or d.get("name") == ref]
    if dev.keys.device.id.startswith(ref):
        raise OpError("that is this device: run `device remove` on another device of the "
                      "account")
    if len(hits) != 1:
        raise OpError(f"{ref!r} matches {len(hits)} paired devices" + (
            ": " + ", ".join(str(d["peer_id"])[:16] for d in hits) if hits else
            " (see `p2psync device list`)"))
    hits[0]["revoked_at"] = int(time.time())
    pairing.save_devices(dev.home.path, rows)
    return {"peer_id": hits[0]["peer_id"], "removed": True}


def whoami(dev: LocalDevice) -> dict[str, Any]:
    return {"account_id": dev.keys.account.id, "peer_id": dev.keys.device.id,
            "home": str(dev.home.path)}


@dataclass(frozen=True)
class LocalOp:
    """One operation on a device: its declared parameters and the function that runs it (the
    function's keyword parameters are the schema's fields; a test checks they agree)."""

    params: type[Params]
    fn: Callable[..., Any]

    def run(self, dev: LocalDevice, params: Params) -> Any:
        return self.fn(dev, **msgspec.structs.asdict(params))


#: Operations that need nothing but the device: the table the CLI and the local API dispatch on.
LOCAL_OPS: dict[str, LocalOp] = {
    "whoami": LocalOp(NoParams, whoami),
    "device.list": LocalOp(NoParams, device_list),
    "device.remove": LocalOp(DeviceParams, device_remove),
    "space.create": LocalOp(SpaceCreateParams, space_create),
    "space.list": LocalOp(NoParams, space_list),
    "space.rename": LocalOp(SpaceRenameParams, space_rename),
    "space.invite": LocalOp(SpaceInviteParams, space_invite),
    "space.members": LocalOp(SpaceParams, space_members),
    "space.remove": LocalOp(MemberParams, space_remove),
    "space.requests": LocalOp(SpaceParams, space_requests),
    "space.accept": LocalOp(SpaceAcceptParams, space_accept),
    "space.add_replicator": LocalOp(MemberParams, space_add_replicator),
    "space.leave": LocalOp(SpaceParams, space_leave),
    "space.invites": LocalOp(SpaceParams, space_invites),
    "space.revoke": LocalOp(InviteRefParams, space_revoke),
    "space.decline": LocalOp(RequestRefParams, space_decline),
    "space.delete_docs": LocalOp(DeleteDocsParams, space_delete_docs),
    "space.delete": LocalOp(SpaceParams, space_delete),
    "doc.new": LocalOp(SpaceParams, doc_new),
    "doc.list": LocalOp(SpaceParams, doc_list),
    "doc.set": LocalOp(DocSetParams, doc_set),
    "doc.get": LocalOp(DocGetParams, doc_get),
    "doc.change": LocalOp(DocChangeParams, doc_change),
    "doc.export": LocalOp(DocExportParams, doc_export),
    "doc.import": LocalOp(DocImportParams, doc_import),
    "doc.delete": LocalOp(DocPathParams, doc_delete),
    "doc.insert": LocalOp(DocInsertParams, doc_insert),
    "doc.splice": LocalOp(DocSpliceParams, doc_splice),
    "doc.increment": LocalOp(DocIncrementParams, doc_increment),
    "doc.counter": LocalOp(DocCounterParams, doc_counter),
    "doc.history": LocalOp(DocParams, doc_history),
}


def run_local(dev: LocalDevice, op: str, params: dict[str, Any]) -> Any:
    """Run a device operation by name with validated parameters (the CLI without an agent);
    unknown names are :class:`UnknownOperation`, bad parameters :class:`InvalidParams`."""
    spec = LOCAL_OPS.get(op)
    if spec is None:
        raise UnknownOperation(f"unknown operation {op!r}")
    return spec.run(dev, parse_params(op, spec.params, params))
