"""The ``p2psync`` command line: identity, spaces, documents, the agent and the demo.

Every command takes ``--home DIR`` (default: ``$P2PSYNC_HOME`` or the platform data dir) and
``--json`` (machine-readable output). Errors are one clear line on stderr and exit code 1;
usage errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from p2psync import __version__
from p2psync.crypto.ids import account_id, decode_key, short_hash
from p2psync.crypto.keys import account_from_phrase, new_recovery_phrase, verify
from p2psync.device import LocalDevice, NotFound, doc_ref
from p2psync.errors import P2PSyncError
from p2psync.home import Home, default_home, passphrase
from p2psync.replica.acl_records import Role
from p2psync.replica.change import CHANGE_DOMAIN
from p2psync.replica.document import Document, Text

ROLES = {"reader": Role.READER, "writer": Role.WRITER, "admin": Role.ADMIN}


class CliError(P2PSyncError):
    """A user-facing command error (bad argument, nothing to do)."""


class Out:
    """Prints human text or, with ``--json``, one JSON document per command."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, data: Any, human: Callable[[], None] | str | None = None) -> None:
        if self.as_json:
            print(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False))
        elif callable(human):
            human()
        elif human is not None:
            print(human)
        else:
            print(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False))


# --- helpers ----------------------------------------------------------------------------------
def _home(args: argparse.Namespace) -> Home:
    return Home(Path(args.home) if args.home else default_home())


def _device(args: argparse.Namespace) -> LocalDevice:
    home = _home(args)
    if not home.exists():
        raise CliError(f"no identity in {home.path}: run `p2psync init` first")
    return LocalDevice(home, home.open_keys())


def _parse_path(doc: Document, text: str) -> list[str | int]:
    """``a/b/0`` → keys; a segment is a list index when the object it indexes is a list."""
    parts = [p for p in text.strip("/").split("/") if p != ""]
    out: list[str | int] = []
    for part in parts:
        parent = doc.get(out) if out else doc.to_json()
        if isinstance(parent, list):
            try:
                out.append(int(part))
            except ValueError as exc:
                raise CliError(f"{'/'.join(map(str, out))} is a list: use a number, "
                               f"not {part!r}") from exc
        else:
            out.append(part)
    return out


def _role_name(role: Role | None) -> str:
    return role.name.lower() if role is not None else "none"


def _ts(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


# --- identity ---------------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace, out: Out) -> None:
    home = _home(args)
    shown_phrase = None
    if args.phrase:
        account = account_from_phrase(args.phrase)
    else:
        shown_phrase = new_recovery_phrase()
        account = account_from_phrase(shown_phrase)
    secret = passphrase("New keystore passphrase (empty: none): ", confirm=True)
    keys = home.create(account, secret)
    data = {"account_id": keys.account.id, "peer_id": keys.device.id, "home": str(home.path),
            "phrase": shown_phrase, "passphrase_protected": keys.protected}

    def human() -> None:
        print(f"account  {keys.account.id}")
        print(f"peer     {keys.device.id}")
        print(f"home     {home.path}")
        if shown_phrase:
            print("\nRecovery phrase — write it down; it is shown only this once and is the only"
                  " way to recover this account:\n")
            print("  " + shown_phrase + "\n")
        if not keys.protected:
            print("warning: no passphrase — the keystore is protected only by file permissions "
                  "(set P2PSYNC_PASSPHRASE or run `init` on a terminal to choose one)",
                  file=sys.stderr)
    out.emit(data, human)


def cmd_whoami(args: argparse.Namespace, out: Out) -> None:
    home = _home(args)
    if not home.exists():
        raise CliError(f"no identity in {home.path}: run `p2psync init` first")
    keys = home.open_keys()
    out.emit({"account_id": keys.account.id, "peer_id": keys.device.id, "home": str(home.path)},
             f"account  {keys.account.id}\npeer     {keys.device.id}")


# --- spaces -----------------------------------------------------------------------------------
def cmd_space_create(args: argparse.Namespace, out: Out) -> None:
    with _device(args) as dev:
        space = dev.create_space(args.name)
        out.emit({"space_id": space.id, "name": args.name}, space.id)


def cmd_space_list(args: argparse.Namespace, out: Out) -> None:
    with _device(args) as dev:
        names = dev.names()
        rows = []
        for sid in dev.space_ids():
            sp = dev.open_space(sid)
            rows.append({"space_id": sid, "name": names.get(sid, ""), "role": _role_name(
                sp.role()), "documents": len(sp.tree_ids()), "members": len(sp.members())})

        def human() -> None:
            if not rows:
                print("no spaces yet (create one: p2psync space create NAME)")
            for r in rows:
                print(f"{r['name'] or '-':16} {r['role']:7} {r['documents']:4} docs "
                      f"{r['members']:3} members  {r['space_id']}")
        out.emit(rows, human)


def cmd_space_invite(args: argparse.Namespace, out: Out) -> None:
    with _device(args) as dev:
        space = dev.resolve_space(args.space)
        raw, code = space.acl.invite(dev.keys.account, ROLES[args.role],
                                     anyone_can_join=args.no_approval)
        space.commit_acl(raw)
        text = code.encode()
        out.emit({"space_id": space.id, "invite": text, "role": args.role,
                  "approval_required": not args.no_approval}, text)


def cmd_space_members(args: argparse.Namespace, out: Out) -> None:
    with _device(args) as dev:
        space = dev.resolve_space(args.space)
        st = space.acl.state
        rows = [{"account_id": account_id(a), "role": _role_name(r)} for a, r in space.members()]
        rows += [{"account_id": account_id(a), "role": "replicator"}
                 for a in sorted(st.replicators)]

        def human() -> None:
            for r in rows:
                me = " (you)" if r["account_id"] == dev.keys.account.id else ""
                print(f"{r['role']:10} {r['account_id']}{me}")
        out.emit(rows, human)


def cmd_space_remove(args: argparse.Namespace, out: Out) -> None:
    with _device(args) as dev:
        space = dev.resolve_space(args.space)
        who = decode_key("a", args.account)
        if space.role(who) is None:
            raise CliError(f"{args.account} is not a member of {space.id}")
        space.emit_acl(lambda acl: acl.remove(dev.keys.account, [who]))
        out.emit({"space_id": space.id, "removed": args.account, "read_key_rotated": True},
                 f"removed {args.account}; the read key was rotated")


def cmd_space_requests(args: argparse.Namespace, out: Out) -> None:
    with _device(args) as dev:
        space = dev.resolve_space(args.space)
        rows = [{"request": short_hash(rid), "account_id": account_id(req.joiner)}
                for rid, req in sorted(space.acl.state.requests.items())]

        def human() -> None:
            if not rows:
                print("no pending join requests")
            for r in rows:
                print(f"{r['request']}  {r['account_id']}")
        out.emit(rows, human)


def cmd_space_accept(args: argparse.Namespace, out: Out) -> None:
    with _device(args) as dev:
        space = dev.resolve_space(args.space)
        reqs = [rid for rid in space.acl.state.requests if short_hash(rid).startswith(
            args.request.lower())]
        if len(reqs) != 1:
            raise CliError(f"{args.request!r} matches {len(reqs)} pending requests")
        role = ROLES[args.role] if args.role else None
        space.emit_acl(lambda acl: acl.accept(dev.keys.account, reqs[0], role))
        out.emit({"space_id": space.id, "accepted": short_hash(reqs[0])}, "accepted")


# --- documents --------------------------------------------------------------------------------
def cmd_doc_new(args: argparse.Namespace, out: Out) -> None:
    with _device(args) as dev:
        space = dev.resolve_space(args.space)
        doc = space.new_document()
        out.emit({"space_id": space.id, "doc": short_hash(doc.tree.id)}, short_hash(doc.tree.id))


def cmd_doc_set(args: argparse.Namespace, out: Out) -> None:
    try:
        value = json.loads(args.value)
    except ValueError as exc:
        raise CliError(f"value is not JSON: {exc} (quote strings: '\"text\"')") from exc
    if args.text:
        if not isinstance(value, str):
            raise CliError("--text needs a JSON string value")
        value = Text(value)
    with _device(args) as dev:
        space = dev.resolve_space(args.space)
        doc = space.document(doc_ref(space, args.doc))
        path = _parse_path(doc, args.path)
        if not path:
            raise CliError("give a PATH inside the document (e.g. title or items/0)")
        parent = doc.obj(path[:-1])
        with doc.edit() as e:
            key = path[-1]
            if isinstance(key, int) and key == e.length(parent):
                e.insert(parent, key, value)
            else:
                e.put(parent, key, value)
        ch = doc.flush()
        out.emit({"doc": short_hash(doc.tree.id), "change": short_hash(ch.id) if ch else None,
                  "heads": [short_hash(h) for h in doc.tree.heads]}, "ok")


def cmd_doc_get(args: argparse.Namespace, out: Out) -> None:
    with _device(args) as dev:
        space = dev.resolve_space(args.space)
        doc = space.document(doc_ref(space, args.doc))
        heads = None
        if args.at:
            heads = []
            for ref in args.at.split(","):
                hits = [c.id for c in doc.tree.changes() if short_hash(c.id).startswith(
                    ref.strip().lower())]
                if len(hits) != 1:
                    raise CliError(f"--at {ref!r} matches {len(hits)} changes")
                heads.append(hits[0])
        value = doc.get(_parse_path(doc, args.path), heads=heads) if args.path else \
            doc.to_json(heads)
        print(json.dumps(value, indent=None if args.json else 1, sort_keys=True,
                         ensure_ascii=False))


def cmd_doc_history(args: argparse.Namespace, out: Out) -> None:
    with _device(args) as dev:
        space = dev.resolve_space(args.space)
        tree = space.tree(doc_ref(space, args.doc))
        rows: list[dict[str, Any]] = []
        for ch in tree.replay_order():
            try:
                verify(ch.author, CHANGE_DOMAIN, ch.body, ch.signature)
                ok = True
            except P2PSyncError:
                ok = False
            rows.append({"change": short_hash(ch.id), "author": account_id(ch.author),
                         "time": _ts(ch.timestamp), "parents": [short_hash(p) for p in
                                                                ch.prev_ids],
                         "snapshot": ch.snapshot, "signature_ok": ok})

        def human() -> None:
            for r in rows:
                mark = "✓" if r["signature_ok"] else "✗ BAD SIGNATURE"
                snap = " snapshot" if r["snapshot"] else ""
                parents = ",".join(p[:10] for p in r["parents"]) or "root"
                print(f"{r['change'][:12]}  {r['time']}  {r['author'][:14]}…  "
                      f"<- {parents}{snap}  {mark}")
        out.emit(rows, human)


# --- demo -------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace, out: Out) -> None:
    from p2psync.demo import run_demo

    run_demo(out_json=args.json, base=Path(args.dir) if args.dir else None)


# --- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    def options(parser: argparse.ArgumentParser, default: Any) -> argparse.ArgumentParser:
        # Sub-commands repeat the options with SUPPRESS so `--json cmd` and `cmd --json` agree.
        parser.add_argument("--home", default=default, help="device folder (default: "
                            "$P2PSYNC_HOME or ~/.local/share/p2psync)")
        parser.add_argument("--json", action="store_true", default=default if default is
                            argparse.SUPPRESS else False, help="machine-readable output")
        return parser

    common = options(argparse.ArgumentParser(add_help=False), argparse.SUPPRESS)
    p = options(argparse.ArgumentParser(
        prog="p2psync", description="LAN-first peer-to-peer sync of Automerge documents"), None)
    p.add_argument("--version", action="version", version=f"p2psync {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(parent: Any, name: str, fn: Callable[[argparse.Namespace, Out], None],
            help: str) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help)
        sp.set_defaults(fn=fn)
        return sp

    init = cmd(sub, "init", cmd_init, "create (or recover with --phrase) this device's identity")
    init.add_argument("--phrase", help="recover from this BIP39 recovery phrase")
    cmd(sub, "whoami", cmd_whoami, "print this device's account and peer id")

    space = sub.add_parser("space", help="spaces and their members").add_subparsers(
        dest="space_command", required=True)
    cmd(space, "create", cmd_space_create, "create a space").add_argument("name")
    cmd(space, "list", cmd_space_list, "list spaces on this device")
    inv = cmd(space, "invite", cmd_space_invite, "create an invite code")
    inv.add_argument("space")
    inv.add_argument("--role", choices=sorted(ROLES), default="writer")
    inv.add_argument("--no-approval", action="store_true",
                     help="anyone with the code joins at once (no admin approval)")
    cmd(space, "members", cmd_space_members, "list members").add_argument("space")
    rm = cmd(space, "remove", cmd_space_remove, "remove a member (rotates the read key)")
    rm.add_argument("space")
    rm.add_argument("account")
    cmd(space, "requests", cmd_space_requests, "pending join requests").add_argument("space")
    acc = cmd(space, "accept", cmd_space_accept, "accept a join request")
    acc.add_argument("space")
    acc.add_argument("request")
    acc.add_argument("--role", choices=sorted(ROLES))

    doc = sub.add_parser("doc", help="documents").add_subparsers(dest="doc_command",
                                                                 required=True)
    cmd(doc, "new", cmd_doc_new, "create a document").add_argument("space")
    st = cmd(doc, "set", cmd_doc_set, "set PATH to a JSON value")
    st.add_argument("space")
    st.add_argument("doc")
    st.add_argument("path")
    st.add_argument("value", help="JSON, e.g. '\"hello\"', 42, '{\"a\": [1]}'")
    st.add_argument("--text", action="store_true", help="store a string as editable text")
    gt = cmd(doc, "get", cmd_doc_get, "print the document (or PATH) as JSON")
    gt.add_argument("space")
    gt.add_argument("doc")
    gt.add_argument("path", nargs="?")
    gt.add_argument("--at", help="comma-separated change ids: the document as of those heads")
    hi = cmd(doc, "history", cmd_doc_history, "the verified change history")
    hi.add_argument("space")
    hi.add_argument("doc")

    demo = cmd(sub, "demo", cmd_demo, "run the multi-device demo on this machine")
    demo.add_argument("--dir", help="keep the demo's device folders here (default: temp)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Out(args.json)
    try:
        args.fn(args, out)
    except (P2PSyncError, NotFound) as exc:
        print(f"p2psync: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("p2psync: interrupted", file=sys.stderr)
        return 130
    return 0

