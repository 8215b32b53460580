"""The ``p2psync`` command line: identity, spaces, documents, the agent and the demo.

Every command takes ``--home DIR`` (default: ``$P2PSYNC_HOME`` or the platform data dir) and
``--json`` (machine-readable output). Errors are one clear line on stderr and exit code 1;
usage errors exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2psync import PROTOCOL_VERSION, __version__
from p2psync.apiclient import API_VERSION, ApiClient, ApiError, agent_running, decode_json_value
from p2psync.errors import OpError, P2PSyncError
from p2psync.home import Home, default_home, interactive, passphrase
from p2psync.timefmt import local_time

if TYPE_CHECKING:
    from p2psync.agent import ops
    from p2psync.agent.run import run_loop
    from p2psync.config import AgentConfig, load_config
    from p2psync.crypto.keys import account_from_phrase, new_recovery_phrase
    from p2psync.device import LocalDevice
    from p2psync.replica.acl import InviteCode


class _Lazy:
    """A module, or a name in one, imported on first use.

    The thin CLI path — ``--version``, ``--help`` and every command a running agent answers over
    its socket — must not load the sync stack (asyncio, aioquic, zeroconf, Automerge, SQLite):
    that import alone took ~250 ms of the ~450 ms a command cost. Names the command functions
    use from the heavy modules are these proxies; under ``TYPE_CHECKING`` they are the real
    imports, so mypy sees the real types. ``tests/test_cli_thin.py`` checks what the path loads.
    """

    __slots__ = ("_module", "_name")

    def __init__(self, module: str, name: str | None = None) -> None:
        self._module = module
        self._name = name

    def _target(self) -> Any:
        import importlib

        mod = importlib.import_module(self._module)
        return mod if self._name is None else getattr(mod, self._name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)


if not TYPE_CHECKING:
    ops = _Lazy("p2psync.agent.ops")
    run_loop = _Lazy("p2psync.agent.run", "run_loop")
    load_config = _Lazy("p2psync.config", "load_config")
    LocalDevice = _Lazy("p2psync.device", "LocalDevice")
    InviteCode = _Lazy("p2psync.replica.acl", "InviteCode")
    account_from_phrase = _Lazy("p2psync.crypto.keys", "account_from_phrase")
    new_recovery_phrase = _Lazy("p2psync.crypto.keys", "new_recovery_phrase")

#: The role names ``--role`` accepts: the keys of ``ops.ROLES``, spelled out so building the
#: parser does not import the ops (``tests/test_cli_thin.py`` checks the two agree).
ROLES = ("admin", "reader", "writer")


CliError = OpError  #: a user-facing command error (bad argument, nothing to do)


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


# --- identity ---------------------------------------------------------------------------------
def _recovery_phrase(args: argparse.Namespace) -> str | None:
    """The phrase to recover from (``--recover`` prompt or ``--phrase-stdin``), or None for a
    new account. Never from argv: it would sit in shell history and in ``ps`` for every user."""
    if args.phrase is not None:
        raise CliError("--phrase would put the recovery phrase in your shell history and in "
                       "`ps` for every user of this machine: use `p2psync init --recover` (asks "
                       "for it) or `p2psync init --phrase-stdin < file`")
    if args.phrase_stdin:
        words = " ".join(sys.stdin.readline().split())
        if not words:
            raise CliError("--phrase-stdin: no recovery phrase on stdin (one line of words)")
        return words
    if args.recover:
        if not interactive():
            raise CliError("--recover asks for the phrase on a terminal and there is none: "
                           "use --phrase-stdin")
        words = " ".join(getpass.getpass("Recovery phrase (hidden): ").split())
        if not words:
            raise CliError("no recovery phrase given")
        return words
    return None


def cmd_init(args: argparse.Namespace, out: Out) -> None:
    home = _home(args)
    if home.exists():  # before asking for anything
        raise CliError(f"{home.path} already holds an identity; use another --home")
    recovered = _recovery_phrase(args)
    shown_phrase = None
    if recovered is not None:
        account = account_from_phrase(recovered)
    else:
        shown_phrase = new_recovery_phrase()
        account = account_from_phrase(shown_phrase)
    secret = "" if args.no_passphrase else passphrase(
        "New keystore passphrase (empty: none): ", confirm=True, require=True)
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


# --- routing: the running agent, or the store directly ----------------------------------------
def _agent_up(args: argparse.Namespace) -> bool:
    return agent_running(_home(args).path)


def _call(args: argparse.Namespace, op: str, **params: Any) -> Any:
    """Run ``op`` on the running agent of this home (one writer, edits sync at once), or on the
    store directly when no agent runs."""
    home = _home(args)
    if not home.exists():
        raise CliError(f"no identity in {home.path}: run `p2psync init` first")
    if agent_running(home.path):
        with ApiClient(home.path) as client:
            return client.call(op, **params)
    with _device(args) as dev:
        return ops.run_local(dev, op, params)


# --- devices of the account (pairing) ----------------------------------------------------------
def _show_pairing(data: dict[str, Any], out: Out, qr: bool) -> None:
    """The code, where the new device connects, and (``--qr``) the link as a QR code."""
    if out.as_json:
        print(json.dumps({"pairing": data}, sort_keys=True), flush=True)
        return
    first = data["addresses"][0] if data["addresses"] else "HOST:PORT"
    print(f"pairing code: {data['code']}\n"
          f"on the new device run:\n  p2psync device pair {data['code']} --address {first}\n"
          f"(other addresses of this device: {', '.join(data['addresses'][1:]) or 'none'}; "
          f"{data['attempts']} wrong codes end the pairing)", flush=True)
    if qr:
        import segno

        segno.make(data["link"], error="l", micro=False).terminal(out=sys.stdout, compact=True)
        sys.stdout.flush()


def cmd_device_add(args: argparse.Namespace, out: Out) -> None:
    """Show a code (and a QR code), wait for the new device to pair over the LAN."""
    home = _home(args)
    if not home.exists():
        raise CliError(f"no identity in {home.path}: run `p2psync init` first")
    if agent_running(home.path):
        with ApiClient(home.path, timeout=args.timeout + 10) as client:
            data = client.call("device.add", port=args.port, timeout=args.timeout)
            _show_pairing(data, out, args.qr)
            with _spinner(out, "waiting for the new device"):
                done = client.call("device.add_wait", code=data["code"], timeout=args.timeout)
    else:
        done = run_loop(lambda: _device_add_offline(home, args, out))
    out.emit(done, f"paired {done['name']} ({done['peer_id']}): it acts for this account now")


async def _device_add_offline(home: Home, args: argparse.Namespace,
                              out: Out) -> dict[str, Any]:
    from p2psync.agent import pairing
    from p2psync.crypto.ids import peer_id
    from p2psync.discovery.netwatch import local_addresses

    with LocalDevice(home, home.open_keys()) as dev:
        host = await pairing.PairingHost(lambda pub, name: ops.host_bundle(dev, pub, name),
                                         port=args.port).start()
        hosts = [a.ip for a in local_addresses(ipv6=False)] + ["127.0.0.1"]
        addrs = [f"{h}:{host.bound_port}" for h in dict.fromkeys(hosts)]
        _show_pairing({"code": pairing.show_code(host.code), "addresses": addrs,
                       "link": pairing.link(host.code, addrs),
                       "attempts": pairing.MAX_ATTEMPTS}, out, args.qr)
        pub, name = await host.wait(args.timeout)
    return {"peer_id": peer_id(pub), "name": name, "paired": True}


def cmd_device_pair(args: argparse.Namespace, out: Out) -> None:
    """The new device: pair with CODE, receive the account, keep the spaces."""
    import socket

    from p2psync.agent import pairing
    from p2psync.crypto.keys import DeviceKey
    from p2psync.errors import PairingError, PairingRefused

    home = _home(args)
    if home.exists():
        raise CliError(f"{home.path} already holds an identity: pairing makes a new one "
                       "(use another --home)")
    code, addrs = pairing.parse_link(args.code)
    if args.address:
        addrs = [args.address]
    if not addrs:
        raise CliError("give --address HOST:PORT as `p2psync device add` shows it (or paste "
                       "the whole p2psync-pair1: link from its QR code)")
    secret = "" if args.no_passphrase else passphrase(
        "New keystore passphrase (empty: none): ", confirm=True, require=True)
    device = DeviceKey.generate()
    name = args.name or socket.gethostname()

    async def go() -> Any:
        errors: list[str] = []
        for addr in addrs:
            try:
                return await pairing.pair(code, addr, device, name, timeout=args.timeout)
            except PairingRefused:
                raise
            except (P2PSyncError, TimeoutError) as exc:
                errors.append(f"{addr}: {exc or 'timed out'}")
        raise PairingError("could not pair: " + "; ".join(errors))

    bundle = run_loop(go)
    pairing.create_home(home, bundle.account, device, secret)
    with LocalDevice(home, home.open_keys(secret)) as dev:
        for sid, header, acl in bundle.spaces:
            dev.adopt_space(sid, header, acl)
    pairing.record_device(home.path, device.public, name, cert=bundle.certificate.raw,
                          this=True)
    pairing.record_device(home.path, bundle.host_peer, bundle.host_name)
    if bundle.addresses:
        pairing.remember_host(home.path, bundle.host_peer, bundle.addresses)
    data = {"account_id": bundle.account.id, "peer_id": device.id, "home": str(home.path),
            "spaces": [s for s, _, _ in bundle.spaces], "paired_with": bundle.host_peer}
    out.emit(data, f"paired: this device ({device.id}) acts for account {bundle.account.id};"
                   f" {len(bundle.spaces)} space(s) — their documents arrive when `p2psync "
                   "run` syncs with the other device")


def cmd_device_list(args: argparse.Namespace, out: Out) -> None:
    rows = _call(args, "device.list")

    def human() -> None:
        _table(["device", "name", "state", "paired"],
               [[r["peer_id"], r["name"] or "-", r["state"] + (" (this)" if r["this_device"]
                                                              else ""),
                 local_time(r["paired_at"] * 1000) if r["paired_at"] else "-"] for r in rows])
    out.emit(rows, human)


def cmd_device_remove(args: argparse.Namespace, out: Out) -> None:
    data = _call(args, "device.remove", device=args.device)
    out.emit(data, f"removed {data['peer_id']}: this device refuses it from now on")


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    """A table on stdout (rich: aligned, no colour when piped)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, pad_edge=False, header_style="bold")
    for h in headers:
        t.add_column(h, overflow="fold")
    for r in rows:
        t.add_row(*[str(c) for c in r])
    Console(width=max(100, _term_width())).print(t)


def _term_width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 24)).columns


# --- spaces -----------------------------------------------------------------------------------
def cmd_space_create(args: argparse.Namespace, out: Out) -> None:
    data = _call(args, "space.create", name=args.name)
    out.emit(data, data["space_id"])


def cmd_space_list(args: argparse.Namespace, out: Out) -> None:
    rows = _call(args, "space.list")

    def human() -> None:
        if not rows:
            print("no spaces yet (create one: p2psync space create NAME)")
            return
        _table(["name", "role", "docs", "members", "space"],
               [[(r["name"] or "-") + (" (alias)" if r.get("alias") else ""),
                 r["role"] + (f" {r['request'][:8]}" if r.get("request") else ""),
                 r["documents"], r["members"], r["space_id"]] for r in rows])
    out.emit(rows, human)


def cmd_space_rename(args: argparse.Namespace, out: Out) -> None:
    data = _call(args, "space.rename", space=args.space, name=args.name, local=args.local)
    if args.local:
        msg = (f"this device now calls {data['space_id']} {data['alias']!r}" if data["alias"]
               else f"local alias of {data['space_id']} cleared")
    else:
        msg = f"renamed {data['space_id']} to {data['name']!r} for every member"
    out.emit(data, msg)


def cmd_space_invite(args: argparse.Namespace, out: Out) -> None:
    expires_in = _duration(args.expires) if args.expires else None
    data = _call(args, "space.invite", space=args.space, role=args.role,
                 no_approval=args.no_approval, expires_in=expires_in)
    if data.get("expires_at") and not args.json:
        print(f"expires {local_time(data['expires_at'] * 1000)}", file=sys.stderr)
    if args.qr and not args.json:
        import segno  # a well-kept, dependency-free QR encoder (never our own)

        # the code is ASCII upper-case base32 + a short prefix: QR's alphanumeric-friendly
        segno.make(data["invite"], error="l", micro=False).terminal(out=sys.stdout,
                                                                     compact=True)
    out.emit(data, data["invite"])


def _duration(text: str) -> int:
    """``90``, ``90s``, ``30m``, ``24h``, ``7d`` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    mult = units.get(t[-1:], 0)
    num = t[:-1] if mult else t
    if not num.isdigit() or int(num) <= 0:
        raise CliError(f"--expires {text!r}: give a duration like 90s, 30m, 24h or 7d")
    return int(num) * (mult or 1)


def cmd_space_members(args: argparse.Namespace, out: Out) -> None:
    rows = _call(args, "space.members", space=args.space)
    me = "" if args.json else _call(args, "whoami")["account_id"]

    def human() -> None:
        for r in rows:
            mark = " (you)" if r["account_id"] == me else ""
            print(f"{r['role']:10} {r['account_id']}{mark}")
    out.emit(rows, human)


def cmd_space_remove(args: argparse.Namespace, out: Out) -> None:
    data = _call(args, "space.remove", space=args.space, account=args.account)
    out.emit(data, f"removed {data['removed']}; the read key was rotated")


def cmd_space_requests(args: argparse.Namespace, out: Out) -> None:
    rows = _call(args, "space.requests", space=args.space)

    def human() -> None:
        if not rows:
            print("no pending join requests")
        for r in rows:
            until = (f"  (invite expires {local_time(r['expires_at'] * 1000)})"
                     if r.get("expires_at") else "")
            print(f"{r['request']}  {r['account_id']}  as {r.get('role')}{until}")
    out.emit(rows, human)


def cmd_space_accept(args: argparse.Namespace, out: Out) -> None:
    data = _call(args, "space.accept", space=args.space, request=args.request, role=args.role)
    out.emit(data, "accepted")


def cmd_space_invites(args: argparse.Namespace, out: Out) -> None:
    rows = _call(args, "space.invites", space=args.space)

    def human() -> None:
        if not rows:
            print("no open invites (make one: p2psync space invite SPACE)")
        for r in rows:
            how = "approval" if r["approval_required"] else "no approval"
            until = ("expired" if r["expired"] else
                     f"expires {local_time(r['expires_at'] * 1000)}" if r["expires_at"]
                     else "no expiry")
            print(f"{r['invite'][:12]}  {r['role']:7} {how:12} {until}  "
                  f"{r['pending_requests']} pending")
    out.emit(rows, human)


def cmd_space_revoke(args: argparse.Namespace, out: Out) -> None:
    data = _call(args, "space.revoke", space=args.space, invite=args.invite)
    out.emit(data, f"revoked invite {data['revoked'][:12]}: its code no longer works")


def cmd_space_decline(args: argparse.Namespace, out: Out) -> None:
    data = _call(args, "space.decline", space=args.space, request=args.request)
    out.emit(data, f"declined request {data['declined'][:12]}")


def cmd_space_leave(args: argparse.Namespace, out: Out) -> None:
    data = _call(args, "space.leave", space=args.space)
    if data["forgotten"]:
        what = {"pending": "cancelled the pending join of", "member": "left"}.get(
            data["was"], "dropped")
        msg = f"{what} {data['space_id']}; this device no longer holds it"
    else:
        msg = (f"left {data['space_id']} (a signed Leave record the other members receive "
               "when they sync); run `space leave` again to drop this device's copy")
    out.emit(data, msg)


def cmd_space_replicator(args: argparse.Namespace, out: Out) -> None:
    data = _call(args, "space.add_replicator", space=args.space, account=args.account)
    out.emit(data, f"{args.account} now stores and serves {data['space_id']} (ciphertext only)")


def cmd_space_add_backup(args: argparse.Namespace, out: Out) -> None:
    """Identify the backup at ADDRESS, make its account the space's replicator, remember it."""
    home = _home(args)
    if not home.exists():
        raise CliError(f"no identity in {home.path}: run `p2psync init` first")
    if agent_running(home.path):
        with ApiClient(home.path) as client:
            data = client.call("space.add_backup", space=args.space, address=args.address)
    else:
        from p2psync.agent.backups import (
            add_replicator_record,
            identify,
            write_backup_config,
        )

        with _device(args) as dev:
            space = dev.resolve_space(args.space)
            cert = home.certificate(dev.keys)
            who = run_loop(lambda: identify(args.address, dev.keys.device, cert))
            written = add_replicator_record(space, dev.keys.account, who.account)
            write_backup_config(home.config_path, who.address, who.peer_id)
            data = {"space_id": space.id, "backup_peer": who.peer_id,
                    "backup_account": who.account_id, "address": who.address,
                    "record_written": written}
    out.emit(data, f"backup {data['backup_peer'][:20]}… ({data['address']}) now stores "
             f"{data['space_id']} as ciphertext; it syncs whenever this device runs")


def cmd_space_backup_status(args: argparse.Namespace, out: Out) -> None:
    home = _home(args)
    if not agent_running(home.path):
        raise CliError("backup-status asks the connected backup for a signed receipt: start "
                       "the agent (`p2psync run`) first")
    with ApiClient(home.path) as client:
        data = client.call("space.backup_status", space=args.space, timeout=args.timeout)

    def human() -> None:
        if not data["receipts"]:
            print(f"{data['space_id']}: {data.get('note', 'no backup connected')}")
        for r in data["receipts"]:
            if "error" in r:
                print(f"backup {r['backup_peer'][:20]}…: NOT VERIFIED: {r['error']}")
                continue
            state = "everything backed up" if r["all_backed_up"] else \
                f"{r['documents_backed_up']}/{r['documents']} documents backed up at current heads"
            print(f"backup {r['backup_peer'][:20]}… (signed receipt, "
                  f"{local_time(r['receipt_time'] * 1000)}): {state}; it holds "
                  f"{r['backup_changes']} changes, {r['backup_bytes']} bytes")
    out.emit(data, human)


def cmd_space_delete_docs(args: argparse.Namespace, out: Out) -> None:
    data = _call(args, "space.delete_docs", space=args.space, docs=args.docs)
    out.emit(data, f"deleted {len(data['deleted'])} document(s) everywhere (signed tombstone)")


def cmd_space_delete(args: argparse.Namespace, out: Out) -> None:
    if not args.yes:
        raise CliError("deleting a space drops every document on every device and backup: "
                       "add --yes to confirm")
    data = _call(args, "space.delete", space=args.space)
    out.emit(data, f"space {data['space_id']} deleted everywhere (signed tombstone)")


# --- backup peer --------------------------------------------------------------------------------
def cmd_backup_run(args: argparse.Namespace, out: Out) -> None:
    from p2psync.agent.run import setup_logging
    from p2psync.backup.service import serve_backup

    home = _home(args)
    if not home.exists():
        raise CliError(f"no identity in {home.path}: run `p2psync --home {home.path} init` "
                       "first (the backup's own account; it never holds read keys)")
    cfg = _service_config(args, home)
    if args.metrics_port is not None:
        cfg = replace(cfg, replicator=replace(cfg.replicator, metrics_port=args.metrics_port))
    setup_logging(cfg.log_level, cfg.log_format)
    keys = home.open_keys()

    def emit(obj: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(obj), flush=True)
        elif obj["event"] == "ready":
            print(f"p2psync backup {obj['peer_id'][:16]}… listening on "
                  f"{', '.join(obj['listening'])}"
                  + (f"; metrics {obj['metrics']}" if obj["metrics"] else ""), flush=True)
    run_loop(lambda: serve_backup(home, keys, cfg, emit))


def cmd_backup_id(args: argparse.Namespace, out: Out) -> None:
    """The backup's identity and the addresses devices pass to `space add-backup`."""
    home = _home(args)
    if not home.exists():
        raise CliError(f"no identity in {home.path}: run `p2psync init` first")
    keys = home.open_keys()
    cfg = load_config(home.config_path)
    if agent_running(home.path):
        with ApiClient(home.path) as client:
            listening = client.call("status")["listening"]
    else:
        listening = [f"{t}:{cfg.listen}:{p}" for t, p in (("quic", cfg.quic_port),
                                                          ("tcp", cfg.tcp_port)) if p is not None]
    addresses = []
    for item in listening:
        transport, _, hostport = item.partition(":")
        host, _, port = hostport.rpartition(":")
        hosts = [host]
        if host in ("0.0.0.0", "::", ""):
            from p2psync.discovery.netwatch import local_addresses

            with contextlib.suppress(OSError):
                hosts = [a.ip for a in local_addresses(None, ipv6=False) if a.version == 4]
            hosts = hosts or ["127.0.0.1"]
        addresses += [f"{transport}://{h}:{port}" for h in hosts]
    data = {"peer_id": keys.device.id, "account_id": keys.account.id, "addresses": addresses}
    out.emit(data, f"peer     {keys.device.id}\naccount  {keys.account.id}\n"
             + "\n".join(f"address  {a}" for a in addresses)
             + "\n\non a device: p2psync space add-backup SPACE " + (addresses[0] if addresses
                                                                   else "HOST:PORT"))


def cmd_backup_init(args: argparse.Namespace, out: Out) -> None:
    """A backup process on a shared PostgreSQL database: claim it with this home's identity
    (new or existing), or ``--join`` the identity already there (docs/backup-cluster.md)."""
    from p2psync.backup.cluster import init_backup

    def new_account() -> tuple[Any, str]:
        phrase = new_recovery_phrase()
        return account_from_phrase(phrase), phrase

    home = _home(args)
    secret = passphrase("Keystore passphrase (shared by the cluster's processes): ",
                        confirm=not args.join and not home.exists(), require=True)
    data = init_backup(home, args.store, secret, join=args.join, new_account=new_account,
                       port=args.port)

    def human() -> None:
        print(f"account  {data['account_id']}\npeer     {data['peer_id']}\n"
              f"home     {data['home']}")
        print("joined the backup in the database" if data["joined"] else
              "this backup's identity now owns the database; other processes: "
              "p2psync backup init --join --store URL --home NEW_HOME")
        if data["phrase"]:
            print("\nRecovery phrase of the backup's account — shown only this once:\n\n  "
                  + data["phrase"] + "\n")
        if not data["config_written"]:
            print(f"{data['config']} kept: check that its [replicator] store names this "
                  "database", file=sys.stderr)
    out.emit(data, human)


def cmd_space_join(args: argparse.Namespace, out: Out) -> None:
    """Join by invite: through the running agent, or a short-lived one that syncs and exits.
    An approval-required invite says what it waits for (the request id and the command an
    admin runs) and keeps waiting up to ``--wait`` seconds."""
    home = _home(args)
    if not home.exists():
        raise CliError(f"no identity in {home.path}: run `p2psync init` first")
    peers = list(args.peer or [])
    if agent_running(home.path):
        with ApiClient(home.path, timeout=max(args.timeout, args.wait) + 10) as client:
            data = client.call("space.join", code=args.code, peers=peers, name=args.name,
                               timeout=args.timeout)
            if data.get("state") == "pending":
                _say_waiting(data)
                try:
                    with _spinner(out, "waiting for an admin"):
                        data.update(client.call("space.wait_access", space=data["space_id"],
                                                timeout=args.wait))
                except ApiError as exc:
                    if exc.kind == "Timeout":
                        raise _still_pending(data, args.wait, agent=True) from None
                    raise
            with _progress(out, "initial sync") as progress:
                state = client.call("space.sync_state", space=data["space_id"])
                progress(state)
                state = client.call("space.wait_synced", space=data["space_id"],
                                    timeout=args.timeout)
                progress(state)
        data.update(documents=state["documents"], synced=True)
    else:
        data = run_loop(lambda: _join_offline(home, args, peers, out))
    out.emit(data, f"joined {data['space_id']} as {data['role']} "
                   f"({data['documents']} documents)")


def _say_waiting(data: dict[str, Any]) -> None:
    """Tell the joiner what it waits for and what the admin must run (stderr)."""
    print(f"waiting for an admin to accept request {data['request'][:8]} — on a device with "
          f"admin rights run:\n  p2psync space accept {data['space_id']} "
          f"{data['request'][:8]}", file=sys.stderr, flush=True)


def _still_pending(data: dict[str, Any], wait: float, *, agent: bool) -> P2PSyncError:
    from p2psync.errors import JoinPending

    then = ("the running agent completes the join when an admin accepts it" if agent else
            "the next `p2psync run` completes the join once an admin accepted it")
    return JoinPending(f"not accepted yet after {wait:g} s: request {data['request'][:8]} "
                       f"stays pending and {then} (`p2psync space list` shows it as "
                       f"pending); cancel it with `p2psync space leave {data['space_id']}`")


@contextlib.contextmanager
def _spinner(out: Out, what: str) -> Iterator[None]:
    """An indeterminate progress line on stderr while waiting (terminals only)."""
    if out.as_json or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(what + " … (Ctrl-C stops waiting; the request stays)"):
        yield


async def _join_offline(home: Home, args: argparse.Namespace, peers: list[str],
                        out: Out) -> dict[str, Any]:
    from p2psync.agent.core import Agent

    cfg = load_config(home.config_path)
    cfg = replace(cfg, quic_port=None, tcp_port=0, listen="127.0.0.1",
                  mdns=cfg.mdns and not args.no_mdns)
    agent = await Agent(home, home.open_keys(), cfg).start()
    try:
        if not peers and agent.mdns is not None and not ops.parse_invite(args.code).addresses:
            # no hint and no peer given: give mDNS a moment to sight devices on the LAN
            with contextlib.suppress(TimeoutError):
                await agent.node.wait_for(lambda: bool(agent.events_seen), 5.0)
        space = await agent.join(args.code, peers, args.name, timeout=args.timeout)
        st = agent.join_state(space.id)
        if st["state"] == "pending":
            _say_waiting(st)
            try:
                with _spinner(out, "waiting for an admin"):
                    st = await agent.wait_access(space.id, args.wait)
            except TimeoutError:
                raise _still_pending(st, args.wait, agent=False) from None
        with _progress(out, "initial sync") as progress:
            await agent.wait_synced(space.id, args.timeout, progress)
        return {**st, "space_id": space.id, "role": ops.role_name(space.role()),
                "documents": len(space.tree_ids()), "synced": True}
    finally:
        await agent.close()


@contextlib.contextmanager
def _progress(out: Out, what: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A rich progress bar on stderr (terminals only; never with --json)."""
    if out.as_json or not sys.stderr.isatty():
        yield lambda st: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(what, total=None)

        def update(st: dict[str, Any]) -> None:
            total = st["documents"] + st["pending"]
            bar.update(task, total=max(total, 1), completed=st["documents"],
                       description=f"{what}: {st['documents']} docs, {st['pending']} pending")
        yield update


# --- documents --------------------------------------------------------------------------------
def cmd_doc_new(args: argparse.Namespace, out: Out) -> None:
    data = _call(args, "doc.new", space=args.space)
    out.emit(data, data["doc"])


def cmd_doc_set(args: argparse.Namespace, out: Out) -> None:
    value = decode_json_value(args.value)
    data = _call(args, "doc.set", space=args.space, doc=args.doc, path=args.path, value=value,
                 text=args.text)
    out.emit(data, "ok")


def cmd_doc_edit(args: argparse.Namespace, out: Out) -> None:
    """``doc delete/insert/splice/increment/counter/change``: one signed change each."""
    where = {"space": args.space, "doc": args.doc}
    kind = args.doc_command
    if kind == "delete":
        data = _call(args, "doc.delete", **where, path=args.path)
    elif kind == "insert":
        data = _call(args, "doc.insert", **where, path=args.path,
                     value=ops.decode_json_value(args.value), text=args.text)
    elif kind == "splice":
        data = _call(args, "doc.splice", **where, path=args.path, pos=args.pos,
                     delete=args.delete, insert=args.insert)
    elif kind == "increment":
        data = _call(args, "doc.increment", **where, path=args.path, by=args.by)
    elif kind == "counter":
        data = _call(args, "doc.counter", **where, path=args.path, value=args.start)
    else:
        text = sys.stdin.read() if args.edits == "-" else args.edits
        edits = ops.decode_json_value(text)
        if not isinstance(edits, list):
            raise CliError('EDITS is a JSON list of edits, e.g. \'[{"op": "put", "path": '
                           '"title", "value": "Hi"}]\' (see docs/local-api.md "Edits")')
        data = _call(args, "doc.change", **where, edits=edits)
    out.emit(data, "ok")


def cmd_doc_list(args: argparse.Namespace, out: Out) -> None:
    rows = _call(args, "doc.list", space=args.space)

    def human() -> None:
        if not rows:
            print("no documents (make one: p2psync doc new SPACE)")
            return
        _table(["document", "heads"], [[r["doc"], " ".join(h[:12] for h in r["heads"])]
                                       for r in rows])
    out.emit(rows, human)


def cmd_doc_export(args: argparse.Namespace, out: Out) -> None:
    path = str(Path(args.file).expanduser().resolve())
    data = _call(args, "doc.export", space=args.space, doc=args.doc, file=path)
    out.emit(data, f"wrote {data['bytes']} bytes to {data['file']} (a standard .automerge "
                   "file)")


def cmd_doc_import(args: argparse.Namespace, out: Out) -> None:
    path = str(Path(args.file).expanduser().resolve())
    data = _call(args, "doc.import", space=args.space, file=path)
    out.emit(data, data["doc"])


def cmd_doc_get(args: argparse.Namespace, out: Out) -> None:
    value = _call(args, "doc.get", space=args.space, doc=args.doc, path=args.path, at=args.at)
    print(json.dumps(value, indent=None if args.json else 1, sort_keys=True,
                     ensure_ascii=False))


# --- encrypted files (issue 18, docs/files.md) -------------------------------------------------
def cmd_file_add(args: argparse.Namespace, out: Out) -> None:
    path = str(Path(args.path).expanduser().resolve())  # the agent may run elsewhere in the fs
    data = _call(args, "file.add", space=args.space, path=path, name=args.name,
                 media_type=args.media_type, file=args.file)
    out.emit(data, f"{data['file']}  {data['size']} bytes, {data['new_chunks']} of "
                   f"{data['chunks']} chunks new ({data['new_bytes']} bytes)")


def cmd_file_get(args: argparse.Namespace, out: Out) -> None:
    dest = str(Path(args.out).expanduser().resolve())
    with _file_progress(args, "file.get"):
        data = _call(args, "file.get", space=args.space, file=args.file, out=dest)
    out.emit(data, f"{data['size']} bytes -> {data['out']}")


@contextlib.contextmanager
def _file_progress(args: argparse.Namespace, what: str) -> Iterator[None]:
    """While a running agent fetches a file's chunks: ``held/chunks`` on a terminal's stderr,
    polled over a second API connection (nothing when not a terminal or no agent runs)."""
    import threading

    home = _home(args)
    if not sys.stderr.isatty() or getattr(args, "json", False) or not agent_running(home.path):
        yield
        return
    done = threading.Event()

    def poll() -> None:
        with contextlib.suppress(OSError, ApiError), ApiClient(home.path) as client:
            while not done.wait(0.3):
                r = client.call("file.info", space=args.space, file=args.file)
                pct = 100 * r["held"] // max(1, r["chunks"])
                print(f"\r{what}: {r['held']}/{r['chunks']} chunks ({pct} %)", end="",
                      file=sys.stderr, flush=True)
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join(1.0)
        print("\r\033[K", end="", file=sys.stderr, flush=True)


def cmd_file_pin(args: argparse.Namespace, out: Out) -> None:
    with _file_progress(args, "file.pin"):
        data = _call(args, "file.pin", space=args.space, file=args.file)
    out.emit(data, f"{data['file']} pinned, {data['held']}/{data['chunks']} chunks here")


def cmd_file_unpin(args: argparse.Namespace, out: Out) -> None:
    data = _call(args, "file.unpin", space=args.space, file=args.file)
    out.emit(data, f"{data['file']} unpinned")


def cmd_file_cache(args: argparse.Namespace, out: Out) -> None:
    mib = args.max_mib
    data = _call(args, "file.cache", max_bytes=None if mib is None else mib << 20,
                 unlimited=args.unlimited)
    limit = "unlimited" if data["limit"] is None else f"{data['limit'] >> 20} MiB"
    out.emit(data, f"cache {data['cached_bytes'] >> 20} MiB of {limit}; evicted "
                   f"{len(data['evicted'])} file(s)")


def cmd_file_list(args: argparse.Namespace, out: Out) -> None:
    rows = _call(args, "file.list", space=args.space)

    def human() -> None:
        if not rows:
            print("no files yet (add one: p2psync file add SPACE PATH)")
        for r in rows:
            state = "complete" if r["complete"] else f"{r['held']}/{r['chunks']} chunks"
            print(f"{r['file'][:12]}  {r['size']:>12}  {r['media_type']:24} {state:14} "
                  f"{r['name']}")
    out.emit(rows, human)


def cmd_doc_history(args: argparse.Namespace, out: Out) -> None:
    rows = _call(args, "doc.history", space=args.space, doc=args.doc)

    def human() -> None:
        for r in rows:
            mark = "✓" if r["signature_ok"] else "✗ BAD SIGNATURE"
            snap = " snapshot" if r["snapshot"] else ""
            parents = ",".join(p[:10] for p in r["parents"]) or "root"
            notes = ""
            if r.get("quarantined"):
                notes += f"  QUARANTINED (content left out): {r['quarantined']}"
            if r.get("removed_after"):
                notes += (f"  author removed at or after it (record "
                          f"{r['removed_after'][:10]}): possibly back-dated")
            when = r["time"] or "time sealed (no key)"  # change format 2 seals the time
            print(f"{r['change'][:12]}  {when}  {r['author'][:14]}…  "
                  f"<- {parents}{snap}  {mark}{notes}")
    out.emit(rows, human)


def cmd_doc_watch(args: argparse.Namespace, out: Out) -> None:
    """Print the document now and after every change (one JSON line each) until interrupted."""
    home = _home(args)
    if not agent_running(home.path):
        raise CliError("doc watch needs a running agent: start one with `p2psync run`")
    with ApiClient(home.path, timeout=None) as client:
        sub = client.call("subscribe", space=args.space, doc=args.doc, patches=args.patches)

        def show(event: dict[str, Any], first: bool = False) -> None:
            line = {"event": event.get("event", "change"), "origin": event.get("origin"),
                    "heads": event.get("heads")}
            if args.patches and not first:
                line["patches"] = event.get("patches")  # no re-read: the patches say it
            else:
                line["value"] = client.call("doc.get", space=sub["space_id"], doc=args.doc)
            print(json.dumps(line, sort_keys=True, ensure_ascii=False), flush=True)

        show({"event": "snapshot", "heads": sub.get("heads")}, first=True)
        count = 0
        while args.count is None or count < args.count:
            ev = client.read()
            if ev.get("event") == "closed":
                raise CliError("the agent stopped")
            if ev.get("event") == "change":
                show(ev)
                count += 1


# --- agent ------------------------------------------------------------------------------------
def cmd_peers(args: argparse.Namespace, out: Out) -> None:
    home = _home(args)
    if not agent_running(home.path):
        raise CliError("no agent runs on this home: start one with `p2psync run` "
                       "(peers are the devices it is connected to)")
    with ApiClient(home.path) as client:
        rows = client.call("peers")

    def human() -> None:
        if not rows:
            print("no peers connected")
            return
        _table(["peer", "transport", "dialled", "shared spaces", "account"],
               [[r["peer_id"][:20] + "…", r["transport"], "out" if r["outgoing"] else "in",
                 len(r["shared_spaces"]), (r["account_id"] or "?")[:16] + "…"] for r in rows])
    out.emit(rows, human)


def cmd_status(args: argparse.Namespace, out: Out) -> None:
    home = _home(args)
    if not home.exists():
        raise CliError(f"no identity in {home.path}: run `p2psync init` first")
    if agent_running(home.path):
        with ApiClient(home.path) as client:
            data = client.call("status")
        data["agent"] = True
    else:
        with _device(args) as dev:
            data = {"agent": False, "peer_id": dev.keys.device.id,
                    "account_id": dev.keys.account.id, "home": str(home.path),
                    "spaces": ops.space_list(dev), "peers": [], "endpoints": []}

    def human() -> None:
        state = "running" if data["agent"] else "not running (start: p2psync run)"
        print(f"agent    {state}\npeer     {data['peer_id']}\naccount  {data['account_id']}")
        if data["agent"]:
            print(f"listen   {', '.join(data['listening'])}")
        if data["spaces"]:
            print()
            sync = "in sync" if data["agent"] else "members"
            _table(["space", "role", "docs", sync, "id"],
                   [[s.get("name") or "-", s["role"] or "-",
                     s.get("objects", s.get("documents")),
                     f"{s['peers_in_sync']}/{s['peers']} peers" if data["agent"]
                     else s["members"], s["space_id"]] for s in data["spaces"]])
        rows = [[p["peer_id"][:20] + "…", p["transport"], ps["space_id"][:20] + "…",
                 "yes" if ps["in_sync"] else f"no ({ps['pending_trees']} pending)",
                 local_time(ps["last_success"] * 1000) if ps["last_success"] else "never",
                 ps["last_error"] or p["last_error"] or ""]
                for p in data["peers"] for ps in (p["spaces"] or [{
                    "space_id": "-", "in_sync": False, "pending_trees": 0,
                    "last_success": None, "last_error": None}])]
        if rows:
            print()
            _table(["peer", "transport", "space", "in sync", "last success", "last error"],
                   rows)
        dials = [[e["endpoint"], e["failures"], e["last_error"]] for e in data["endpoints"]
                 if not e["connected"] and e["last_error"]]
        if dials:
            print()
            _table(["dialling", "failures", "last error"], dials)
    out.emit(data, human)


def _service_config(args: argparse.Namespace, home: Home) -> AgentConfig:
    """``config.toml`` with the flags ``run`` and ``backup run`` share applied on top."""
    cfg = load_config(home.config_path)
    if args.port is not None:
        cfg = cfg.with_ports(args.port)
    if args.no_mdns:
        cfg = replace(cfg, mdns=False)
    if args.log_level:
        cfg = replace(cfg, log_level=args.log_level)
    if getattr(args, "log_format", None):
        cfg = replace(cfg, log_format=args.log_format)
    return cfg


def cmd_run(args: argparse.Namespace, out: Out) -> None:
    from p2psync.agent.run import serve, setup_logging

    home = _home(args)
    if not home.exists():
        raise CliError(f"no identity in {home.path}: run `p2psync init` first")
    cfg = _service_config(args, home)
    for peer in args.peer or []:
        cfg.peers.append(peer)
    setup_logging(cfg.log_level, cfg.log_format)
    keys = home.open_keys()

    def emit(obj: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(obj), flush=True)
        elif obj["event"] == "ready":
            print(f"p2psync agent {obj['peer_id'][:16]}… listening on "
                  f"{', '.join(obj['listening'])}; Ctrl-C to stop", flush=True)
            if obj.get("http"):
                print(f"HTTP API and status page on {obj['http']} (key: `p2psync http`)",
                      flush=True)
    run_loop(lambda: serve(home, keys, cfg, emit))


# --- http (docs/http.md) ------------------------------------------------------------------------
def cmd_http(args: argparse.Namespace, out: Out) -> None:
    """Where the agent's HTTP API, status page and metrics are, and where the key is."""
    from p2psync.http.info import http_info

    home = _home(args)
    if not home.exists():
        raise CliError(f"no identity in {home.path}: run `p2psync init` first")
    cfg = load_config(home.config_path)
    info = http_info(home.path, cfg.http, running=agent_running(home.path),
                     with_key=args.open_url)

    def human() -> None:
        if not info["enabled"]:
            print(f"the HTTP API is off: add `[http]` and `enabled = true` to "
                  f"{home.config_path}, then (re)start `p2psync run`")
            return
        state = "" if info["running"] else "  (agent not running: start `p2psync run`)"
        print(f"url      {info['url']}{state}\nkey      {info['key_file']} "
              f"(send it as X-API-Key)\nopenapi  {info['openapi']}\nmetrics  {info['metrics']}")
        if info.get("page"):
            print(f"page     {info['page']}")
    out.emit(info, human)


# --- service (docs/agent.md) -----------------------------------------------------------------
def cmd_service(args: argparse.Namespace, out: Out) -> None:
    """Install, remove or query the per-user service that runs ``p2psync run``."""
    from p2psync import service

    home = _home(args)
    if args.service_command == "install":
        if not home.exists():
            raise CliError(f"no identity in {home.path}: run `p2psync init` first")
        data = service.install(home.path.resolve(), start=not args.no_start)
    elif args.service_command == "uninstall":
        data = service.uninstall(stop=not args.no_stop)
    else:
        data = service.status()

    def human() -> None:
        for k, v in data.items():
            print(f"{k:12} {v}")
    out.emit(data, human)
# --- shell completion -------------------------------------------------------------------------
def cmd_completion(args: argparse.Namespace, out: Out) -> None:
    """A completion script generated from this parser (shtab), so it never drifts from it."""
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))


# --- demo -------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace, out: Out) -> None:
    from p2psync.demo import run_demo

    report = run_demo(out_json=args.json, base=Path(args.dir) if args.dir else None)
    if not report.get("converged"):
        raise CliError("the demo devices did not converge: " + str(report.get("error", "")))


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
    p.add_argument("--version", action="version", version=f"p2psync {__version__} (protocol "
                   f"{PROTOCOL_VERSION}, local API {API_VERSION})")
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(parent: Any, name: str, fn: Callable[[argparse.Namespace, Out], None],
            help: str) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help)
        sp.set_defaults(fn=fn)
        return sp

    init = cmd(sub, "init", cmd_init,
               "create this device's identity (or recover one: --recover / --phrase-stdin)")
    how = init.add_mutually_exclusive_group()
    how.add_argument("--recover", action="store_true",
                     help="recover an account: asks for its recovery phrase (hidden)")
    how.add_argument("--phrase-stdin", action="store_true",
                     help="recover an account from the recovery phrase on stdin (one line)")
    how.add_argument("--phrase", help=argparse.SUPPRESS)  # refused: argv is visible in `ps`
    init.add_argument("--no-passphrase", action="store_true",
                      help="no keystore passphrase (keys protected by file permissions only); "
                      "needed when there is no terminal and P2PSYNC_PASSPHRASE is unset")
    cmd(sub, "whoami", cmd_whoami, "print this device's account and peer id")

    dev = sub.add_parser("device", help="devices of this account: pair a new one over the "
                         "LAN, list, remove").add_subparsers(dest="device_command",
                                                             required=True)
    dadd = cmd(dev, "add", cmd_device_add, "show a pairing code (and QR code) and wait for a "
               "new device of this account to pair")
    dadd.add_argument("--port", type=int, default=0, help="TCP port to listen on for the new "
                      "device (default: any free port)")
    dadd.add_argument("--timeout", type=float, default=300.0,
                      help="seconds to wait for the new device (default 300)")
    dadd.add_argument("--qr", action="store_true", help="also print the pairing link as a QR "
                      "code (for a phone's camera)")
    dpair = cmd(dev, "pair", cmd_device_pair, "on the NEW device: pair with the code `device "
                "add` shows; makes this home a device of that account")
    dpair.add_argument("code", help="the code (ABCD-EFGH) or the whole p2psync-pair1: link")
    dpair.add_argument("--address", help="HOST:PORT the other device showed")
    dpair.add_argument("--name", help="a name for this device (default: its host name)")
    dpair.add_argument("--timeout", type=float, default=60.0,
                       help="seconds to wait for the other device (default 60)")
    dpair.add_argument("--no-passphrase", action="store_true",
                       help="no keystore passphrase (keys protected by file permissions only)")
    cmd(dev, "list", cmd_device_list, "this device and the devices paired with it")
    cmd(dev, "remove", cmd_device_remove, "revoke a paired device: refused from now on"
        ).add_argument("device", help="its peer id (or a unique prefix) or name")

    space = sub.add_parser("space", help="spaces and their members").add_subparsers(
        dest="space_command", required=True)
    cmd(space, "create", cmd_space_create, "create a space").add_argument("name")
    cmd(space, "list", cmd_space_list, "list spaces on this device")
    ren = cmd(space, "rename", cmd_space_rename, "rename a space for every member (admins), "
              "or give it a local alias (--local)")
    ren.add_argument("space", help="space id, unique id prefix, name or alias")
    ren.add_argument("name", help="the new name (with --local, empty clears the alias)")
    ren.add_argument("--local", action="store_true",
                     help="a name on this device only; never sent to anyone")
    inv = cmd(space, "invite", cmd_space_invite, "create an invite code")
    inv.add_argument("space")
    inv.add_argument("--role", choices=sorted(ROLES), default="writer")
    inv.add_argument("--no-approval", action="store_true",
                     help="anyone with the code joins at once (no admin approval)")
    inv.add_argument("--qr", action="store_true", help="also print the code as a QR code "
                     "(for a phone's camera)")
    inv.add_argument("--expires", help="the code stops working after this long: 90s, 30m, "
                     "24h, 7d (default: never)")
    cmd(space, "members", cmd_space_members, "list members").add_argument("space")
    rm = cmd(space, "remove", cmd_space_remove, "remove a member (rotates the read key)")
    rm.add_argument("space")
    rm.add_argument("account")
    rep = cmd(space, "add-replicator", cmd_space_replicator,
              "let a backup peer's account store and serve the space (ciphertext only)")
    rep.add_argument("space")
    rep.add_argument("account")
    ab = cmd(space, "add-backup", cmd_space_add_backup,
             "add the backup peer at ADDRESS (its account stores ciphertext, never reads)")
    ab.add_argument("space")
    ab.add_argument("address", help="[tcp://|quic://]HOST:PORT (see `p2psync backup id`)")
    bs = cmd(space, "backup-status", cmd_space_backup_status,
             "what the backup holds of the space (signed receipt, verified)")
    bs.add_argument("space")
    bs.add_argument("--timeout", type=float, default=10.0)
    dd = cmd(space, "delete-docs", cmd_space_delete_docs,
             "delete documents on every device and backup (signed tombstone)")
    dd.add_argument("space")
    dd.add_argument("docs", nargs="+")
    ds = cmd(space, "delete", cmd_space_delete, "delete the whole space everywhere (owner)")
    ds.add_argument("space")
    ds.add_argument("--yes", action="store_true", help="confirm")
    jn = cmd(space, "join", cmd_space_join, "join a space with an invite code")
    jn.add_argument("code")
    jn.add_argument("--peer", action="append", help="HOST:PORT of a device holding the space "
                    "(repeatable; default: the code's hints, connected peers, mDNS)")
    jn.add_argument("--name", help="a local name for the space")
    jn.add_argument("--timeout", type=float, default=30.0, help="seconds to find a peer and "
                    "for the initial sync (default 30)")
    jn.add_argument("--wait", type=float, default=300.0, help="seconds to wait for an admin "
                    "to accept an approval-required invite (default 300; the request stays "
                    "pending after that)")
    jn.add_argument("--no-mdns", action="store_true", help="do not browse mDNS for a peer")
    cmd(space, "requests", cmd_space_requests, "pending join requests").add_argument("space")
    acc = cmd(space, "accept", cmd_space_accept, "accept a join request")
    acc.add_argument("space")
    acc.add_argument("request")
    acc.add_argument("--role", choices=sorted(ROLES))
    cmd(space, "invites", cmd_space_invites, "open invites: role, approval, expiry, "
        "pending requests").add_argument("space")
    rv = cmd(space, "revoke", cmd_space_revoke, "revoke an invite (its code stops working)")
    rv.add_argument("space")
    rv.add_argument("invite", help="invite id or unique prefix (see `space invites`)")
    dc = cmd(space, "decline", cmd_space_decline, "decline a join request")
    dc.add_argument("space")
    dc.add_argument("request", help="request id or unique prefix (see `space requests`)")
    cmd(space, "leave", cmd_space_leave, "leave a space, or cancel a pending join "
        "(drops this device's copy)").add_argument("space")

    doc = sub.add_parser("doc", help="documents").add_subparsers(dest="doc_command",
                                                                 required=True)
    cmd(doc, "new", cmd_doc_new, "create a document").add_argument("space")
    st = cmd(doc, "set", cmd_doc_set, "set PATH to a JSON value")
    st.add_argument("space")
    st.add_argument("doc")
    st.add_argument("path")
    st.add_argument("value", help="JSON, e.g. '\"hello\"', 42, '{\"a\": [1]}'")
    st.add_argument("--text", action="store_true", help="store a string as editable text")
    cmd(doc, "list", cmd_doc_list, "the documents of a space").add_argument("space")
    ex = cmd(doc, "export", cmd_doc_export,
             "write the document as a standard .automerge file (loads in any Automerge)")
    ex.add_argument("space")
    ex.add_argument("doc")
    ex.add_argument("file", help="where to write it, e.g. notes.automerge")
    im = cmd(doc, "import", cmd_doc_import,
             "make a new document from a .automerge file (prints its id)")
    im.add_argument("space")
    im.add_argument("file", help="a file saved by any Automerge implementation")

    def doc_args(name: str, help: str) -> argparse.ArgumentParser:
        sp = cmd(doc, name, cmd_doc_edit, help)
        sp.add_argument("space", help="space id, local name or id prefix")
        sp.add_argument("doc", help="document id or prefix")
        return sp

    doc_args("delete", "delete a map key or list element at PATH").add_argument(
        "path", help="e.g. title, items/0")
    ins = doc_args("insert", "insert a JSON value into a list (PATH ends in the index)")
    ins.add_argument("path", help="e.g. items/0 (before the first), items/3 (= length: append)")
    ins.add_argument("value", help="JSON, e.g. '\"milk\"'")
    ins.add_argument("--text", action="store_true", help="store a string as editable text")
    spl = doc_args("splice", "edit text: delete characters at POS, then insert TEXT")
    spl.add_argument("path", help="a text (made with `doc set --text`)")
    spl.add_argument("pos", type=int, help="position in characters (0: the start)")
    spl.add_argument("insert", nargs="?", default="", help="text to insert (default none)")
    spl.add_argument("--delete", type=int, default=0, help="characters to delete first")
    inc = doc_args("increment", "add to a counter")
    inc.add_argument("path")
    inc.add_argument("by", nargs="?", type=int, default=1, help="default 1; negative subtracts")
    ctr = doc_args("counter", "create a counter at PATH (create it once, before sharing)")
    ctr.add_argument("path")
    ctr.add_argument("start", nargs="?", type=int, default=0, help="default 0")
    chg = doc_args("change", "several edits as ONE signed change (all or none)")
    chg.add_argument("edits", help="a JSON list of edits, or - to read it from stdin: "
                     '[{"op": "put", "path": "title", "value": "Hi"}, {"op": "splice", '
                     '"path": "body", "pos": 0, "insert": "x"}] (ops: put, delete, insert, '
                     "splice, counter, increment; docs/local-api.md)")
    gt = cmd(doc, "get", cmd_doc_get, "print the document (or PATH) as JSON")
    gt.add_argument("space")
    gt.add_argument("doc")
    gt.add_argument("path", nargs="?")
    gt.add_argument("--at", help="comma-separated change ids: the document as of those heads")
    hi = cmd(doc, "history", cmd_doc_history, "the verified change history")
    hi.add_argument("space")
    hi.add_argument("doc")

    wt = cmd(doc, "watch", cmd_doc_watch,
             "print the document as a JSON line now and on every change (needs `run`)")
    wt.add_argument("space")
    wt.add_argument("doc")
    wt.add_argument("--count", type=int, help="exit after this many changes")
    wt.add_argument("--patches", action="store_true", help="print each change as patches "
                    "(path, action, value) instead of the whole document")

    cmd(sub, "peers", cmd_peers, "devices the running agent is connected to")
    cmd(sub, "status", cmd_status, "spaces, peers, sync state, last success and errors")
    rn = cmd(sub, "run", cmd_run, "run the agent: listen, discover, connect, sync")
    rn.add_argument("--port", type=int, help="QUIC and TCP port (0: any; default: config "
                    "or 4433)")
    rn.add_argument("--peer", action="append", help="a static peer HOST:PORT (repeatable)")
    rn.add_argument("--no-mdns", action="store_true", help="no mDNS advertise/browse")
    rn.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    rn.add_argument("--log-format", choices=["text", "json"], help="stderr log lines")

    backup = sub.add_parser("backup", help="run a backup peer (stores ciphertext only)"
                            ).add_subparsers(dest="backup_command", required=True)
    br = cmd(backup, "run", cmd_backup_run,
             "the agent in replicator mode, headless (docs/backup.md)")
    br.add_argument("--port", type=int, help="QUIC and TCP port (default: config or 4433)")
    br.add_argument("--no-mdns", action="store_true", help="no mDNS advertise/browse")
    br.add_argument("--metrics-port", type=int, help="Prometheus metrics on localhost (0 off)")
    br.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    br.add_argument("--log-format", choices=["text", "json"], help="stderr log lines")
    cmd(backup, "id", cmd_backup_id, "print the backup's peer id, account id and addresses")
    bi = cmd(backup, "init", cmd_backup_init, "a backup process on a shared PostgreSQL "
             "database: claim it, or --join the backup identity already in it")
    bi.add_argument("--store", required=True, help="postgresql://… (the cluster's database)")
    bi.add_argument("--join", action="store_true",
                    help="take the identity stored in the database (every process but the "
                    "first)")
    bi.add_argument("--port", type=int, help="QUIC and TCP port written to config.toml")

    cmd(sub, "http", cmd_http, "the HTTP API's URL and key file (docs/http.md)").add_argument(
        "--open-url", action="store_true", help="also print the status page URL with the key")
    svc = sub.add_parser("service", help="run the agent as a per-user service (systemd user "
                         "unit, launchd agent)").add_subparsers(dest="service_command",
                                                                required=True)
    cmd(svc, "install", cmd_service, "write the unit and start it").add_argument(
        "--no-start", action="store_true", help="only write the unit file")
    cmd(svc, "uninstall", cmd_service, "stop the service and remove the unit").add_argument(
        "--no-stop", action="store_true", help="only remove the unit file")
    cmd(svc, "status", cmd_service, "whether the unit is installed and running")

    comp = cmd(sub, "completion", cmd_completion, "print a shell completion script: "
               "bash: eval \"$(p2psync completion bash)\"; zsh/fish: see docs/cli.md")
    comp.add_argument("shell", choices=["bash", "zsh", "fish"])
    fil = sub.add_parser("file", help="encrypted files of a space").add_subparsers(
        dest="file_command", required=True)
    fa = cmd(fil, "add", cmd_file_add, "add a file to a space (or replace one: --file)")
    fa.add_argument("space")
    fa.add_argument("path")
    fa.add_argument("--name", help="name to record (default: the file's name)")
    fa.add_argument("--media-type", help="e.g. image/jpeg (default: guessed from the name)")
    fa.add_argument("--file", help="replace this file's content; only changed chunks are new")
    fg = cmd(fil, "get", cmd_file_get, "write a file out once all its chunks are here")
    fg.add_argument("space")
    fg.add_argument("file", help="file id or prefix")
    fg.add_argument("out", help="where to write it (written whole, or not at all)")
    cmd(fil, "list", cmd_file_list, "files of a space and how much of each is here"
        ).add_argument("space")
    for name, fn, text in (("pin", cmd_file_pin, "keep a file complete here (fetch it now)"),
                           ("unpin", cmd_file_unpin, "stop keeping a file complete here")):
        fp = cmd(fil, name, fn, text)
        fp.add_argument("space")
        fp.add_argument("file", help="file id or prefix")
    fc = cmd(fil, "cache", cmd_file_cache, "local cache size for fetched files (LRU eviction)")
    fc.add_argument("--max-mib", type=int, help="evict down to this many MiB (now and later)")
    fc.add_argument("--unlimited", action="store_true", help="remove the limit")

    demo = cmd(sub, "demo", cmd_demo, "run the multi-device demo on this machine")
    demo.add_argument("--dir", help="keep the demo's device folders here (default: temp)")
    _fill_help(p)
    return p


#: Help for arguments that mean the same in every command (``--help`` explains every one).
_COMMON_HELP = {
    "space": "space id, local name or unique id prefix",
    "doc": "document id or unique prefix (see `doc list`)",
    "docs": "document ids or unique prefixes",
    "account": "account id, or a unique prefix of a member's (see `space members`)",
    "request": "join request id or unique prefix (see `space requests`)",
    "code": "the invite code: one line starting with p2psync-invite2:",
    "name": "a local name for the space",
    "role": "role to give (default: the invite's, or writer)",
    "path": "path in the document: keys and list indexes separated by /, e.g. items/0/title",
    "timeout": "seconds to wait (default %(default)s)",
    "log_level": "log verbosity (default: config or info)",
    "shell": "the shell to complete for",
}


def _fill_help(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _fill_help(sub)
        elif action.help is None and action.dest in _COMMON_HELP:
            action.help = _COMMON_HELP[action.dest]


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Home warnings (a folder or file others could read) as ``p2psync: warning: …`` lines
    while a command runs (not also through the agent's log handler)."""
    logger = logging.getLogger("p2psync.home")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("p2psync: warning: %(message)s"))
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Out(args.json)
    # Everything this process creates in a home (store, -wal/-shm, config, names) is private,
    # whatever the shell's umask; restored on return for callers that run main() in-process.
    old_umask = os.umask(0o077)
    try:
        with _warnings_to_stderr():
            return _main(args, out)
    finally:
        os.umask(old_umask)


#: Exit codes (docs/cli.md): scripts tell outcomes apart without parsing messages.
EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_PENDING = 1, 2, 3, 4, 5, 6
_EXIT_BY_TYPE = {"NotFound": EXIT_NOT_FOUND, "AccessDenied": EXIT_REFUSED,
                 "JoinRefused": EXIT_REFUSED, "PairingRefused": EXIT_REFUSED,
                 "Timeout": EXIT_TIMEOUT,
                 "TimeoutError": EXIT_TIMEOUT, "JoinPending": EXIT_PENDING}


def _exit_for(names: Sequence[str]) -> int:
    """The exit code of an error, by its type name or the first base class that has one."""
    for name in names:
        if name in _EXIT_BY_TYPE:
            return _EXIT_BY_TYPE[name]
    return EXIT_ERROR


def _fail(args: argparse.Namespace, kind: str, message: str, code: int,
          extra: str = "") -> int:
    """One error: ``p2psync: error: …`` on stderr, or with ``--json`` a JSON object there."""
    if getattr(args, "json", False):
        print(json.dumps({"error": {"type": kind, "message": message, "exit": code}},
                         ensure_ascii=False), file=sys.stderr)
    else:
        print(f"p2psync: error: {message}{extra}", file=sys.stderr)
    return code


def _main(args: argparse.Namespace, out: Out) -> int:
    try:
        args.fn(args, out)
    except ApiError as exc:
        if exc.kind == "InternalError":
            return _fail(args, exc.kind, f"the agent hit a bug: {exc}", EXIT_ERROR,
                         "\np2psync: it kept running; its log has the traceback (report it "
                         "with the command you ran)")
        # the agent answers with the error's class name; map it as if raised here
        from p2psync import errors as errs

        cls = getattr(errs, exc.kind, None)
        names = [c.__name__ for c in cls.__mro__] if isinstance(cls, type) else [exc.kind]
        return _fail(args, exc.kind, str(exc), _exit_for(names))
    except P2PSyncError as exc:  # NotFound, OpError, ApiError (above) included
        return _fail(args, type(exc).__name__, str(exc),
                     _exit_for([c.__name__ for c in type(exc).__mro__]))
    except TimeoutError:
        return _fail(args, "Timeout", "timed out (is the other device reachable?)",
                     EXIT_TIMEOUT)
    except OSError as exc:
        return _fail(args, type(exc).__name__, str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        print("p2psync: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so plainly and what to do, never a bare traceback
        code = _fail(args, "InternalError", f"internal error: {type(exc).__name__}: {exc}",
                     EXIT_ERROR, "\np2psync: this is a bug in p2psync, not in what you typed; "
                     "your data is safe. Rerun with P2PSYNC_DEBUG=1 to see the traceback and "
                     "report it with the command.")
        if os.environ.get("P2PSYNC_DEBUG"):
            traceback.print_exc()
        return code
    return 0

