"""The device side of backups: ``space add-backup`` and ``space backup-status``.

This lives with the agent (not in :mod:`p2psync.backup`, which is the replicator) so that the
layers stay one-way: the replicator never imports the agent's client code, and the agent drives
backups only through its own public methods (:meth:`Agent.add_backup
<p2psync.agent.core.Agent.add_backup>`, :meth:`~p2psync.agent.core.Agent.backup_status`,
:meth:`~p2psync.agent.core.Agent.remember_backup`). Nothing here imports the agent.

* :func:`identify` dials an address and reads who answers from the authenticated handshake
  (the device certificate binds peer id to account), so adding a backup needs only its
  address — the peer id and account come from the connection, not from the user.
* :func:`add_replicator_record` and :func:`write_backup_config` write the AddReplicator record
  and remember the address and peer id in ``config.toml`` (``backup`` / ``backup_peer_id``).
* :func:`collect_receipts` asks connected backups for signed storage receipts, verifies them
  and :func:`compare` says which documents are safely held at our current heads. Verified
  receipts are kept in ``<home>/backup-receipts.json`` so ``status`` can show them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2psync.backup.receipt import Receipt, verify_receipt
from p2psync.config import DEFAULT_PORT
from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.ids import account_id, peer_id, short_hash
from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.dialer import dial_address
from p2psync.discovery.peers import parse_endpoints
from p2psync.errors import P2PSyncError, TransportError
from p2psync.node import sync_transport_config
from p2psync.replica.space import Space
from p2psync.replica.storage import ReplicaStore
from p2psync.sync.engine import PeerEngine
from p2psync.sync.ldiff import LDiff

RECEIPTS_FILE = "backup-receipts.json"


class BackupError(P2PSyncError):
    """A backup operation failed (unreachable, not connected, receipt refused)."""


@dataclass(frozen=True)
class BackupIdentity:
    """Who answered at an address."""

    address: str
    peer_id: str
    account_id: str
    account: bytes


async def identify(address: str, device: DeviceKey, certificate: DeviceCertificate,
                   timeout: float = 8.0) -> BackupIdentity:
    """Dial ``address`` (``[tcp://|quic://]host[:port]``) and return its proven identity."""
    errors = []
    for ep in parse_endpoints(address, DEFAULT_PORT):
        try:
            conn = await asyncio.wait_for(dial_address(
                ep, device=device, certificate=certificate, config=sync_transport_config()),
                timeout)
        except (TransportError, OSError, TimeoutError) as exc:
            errors.append(f"{ep}: {type(exc).__name__}: {exc}")
            continue
        cert = conn.certificate
        await conn.close("identified")
        return BackupIdentity(str(ep), peer_id(cert.device), account_id(cert.account),
                              cert.account)
    raise BackupError(f"could not reach a backup at {address}: " + "; ".join(errors))


def write_backup_config(config_path: Path, address: str, backup_peer_id: str) -> None:
    """Set ``backup`` and ``backup_peer_id`` in ``config.toml``, keeping everything else (the
    two keys go first, before any ``[table]``)."""
    try:
        text = config_path.read_text()
    except FileNotFoundError:
        text = ""
    lines = [ln for ln in text.splitlines()
             if not re.match(r"^\s*(backup|backup_peer_id)\s*=", ln)]
    head = [f'backup = "{address}"', f'backup_peer_id = "{backup_peer_id}"']
    config_path.write_text("\n".join(head + lines) + "\n")


def add_replicator_record(space: Space, me: AccountKey, account: bytes) -> bool:
    """Write the AddReplicator record unless the account already replicates; True if written."""
    if account in space.acl.state.replicators:
        return False
    space.emit_acl(lambda acl: acl.add_replicator(me, account))
    return True


# --- receipts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ours:
    """What this device holds of one space when it checks a receipt (the evidence a receipt
    is held against): our head-sync set, our totals, our deletions."""

    ldiff: LDiff
    changes: int  #: changes we hold of the space
    size: int  #: bytes of raw changes we hold
    deleted: frozenset[bytes] = frozenset()  #: objects deleted by tombstones

    @classmethod
    def of(cls, space: Space, ldiff: LDiff, store: ReplicaStore) -> Ours:
        size, changes = store.space_usage().get(space.id, (0, 0))
        return cls(ldiff, changes, size, frozenset(space.acl.state.deleted))


def judge(receipt: Receipt, ours: Ours, *, account: bytes | None = None,
          previous: dict[str, Any] | None = None) -> list[str]:
    """Why a verified receipt is *not* evidence (empty: it is), pure.

    A signature only proves who said it; a replicator that stores nothing could copy the root
    our own head sync showed it. So the claims must hang together (issue 20.4):

    * the receipt's account is the account of the backup's certificate on this connection;
    * a listed object set has as many entries as the count claims;
    * a receipt claiming our exact set (same root) claims our exact totals: the same heads of
      the same objects are the same changes and bytes, which head sync never reveals;
    * against the **previous** receipt of the same backup (``previous``, as saved): an object
      it held then, still alive here and not deleted since, must still be listed — otherwise
      the backup was restored from an older copy (rolled back) and says so.
    """
    problems = []
    if account is not None and receipt.account != account:
        problems.append("the receipt names another account than the backup's certificate")
    if receipt.objects is not None and len(receipt.objects) != receipt.objects_count:
        problems.append(f"the receipt lists {len(receipt.objects)} objects but claims "
                        f"{receipt.objects_count}")
    if receipt.root == ours.ldiff.hash() and (receipt.objects_count, receipt.changes_count,
                                               receipt.size) != (len(ours.ldiff), ours.changes,
                                                                 ours.size):
        problems.append(f"the receipt claims our exact set but {receipt.objects_count} objects / "
                        f"{receipt.changes_count} changes / {receipt.size} bytes against our "
                        f"{len(ours.ldiff)} / {ours.changes} / {ours.size}")
    if previous and previous.get("held_ids") is not None and receipt.objects is not None:
        alive = {t for t, _ in ours.ldiff.items()}
        lost = [h for h in previous["held_ids"]
                if (t := bytes.fromhex(h)) in alive and t not in ours.deleted
                and t not in receipt.objects]
        if lost:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(previous.get("receipt_time", 0)))
            problems.append(f"rolled back: the backup no longer holds {len(lost)} document(s) "
                            f"its receipt of {when} UTC proved it held")
    elif previous and previous.get("backup_objects", 0) > receipt.objects_count + len(
            ours.deleted) - previous.get("deleted", 0):
        problems.append(f"rolled back: the backup holds {receipt.objects_count} objects, its "
                        f"last receipt proved {previous['backup_objects']} and none were deleted "
                        "since")
    return problems


def compare(receipt: Receipt, local: LDiff | Ours, *, account: bytes | None = None,
            previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a verified receipt says about our own state (pure); ``problems`` lists why it is
    not evidence (see :func:`judge`), and then nothing counts as backed up."""
    ours_ = local if isinstance(local, Ours) else None
    ld = ours_.ldiff if ours_ is not None else local
    assert isinstance(ld, LDiff)
    ours = dict(ld.items())
    problems = judge(receipt, ours_, account=account, previous=previous) \
        if ours_ is not None else []
    full = receipt.root == ld.hash() and not problems
    if problems:
        held: list[bytes] = []
    elif receipt.objects is not None:
        held = sorted(t for t, h in ours.items() if receipt.objects.get(t) == h)
    else:  # large space: only the fingerprint says it, all or nothing
        held = sorted(ours) if full else []
    missing = sorted(t for t in ours if t not in held)
    return {"all_backed_up": full, "documents": len(ours), "documents_backed_up": len(held),
            "not_backed_up": [short_hash(t) for t in missing[:50]],
            "backup_objects": receipt.objects_count, "backup_changes": receipt.changes_count,
            "backup_bytes": receipt.size,
            "receipt_time": receipt.timestamp_ms / 1000, "backup_peer": peer_id(receipt.device),
            "backup_account": account_id(receipt.account), "signature_ok": True,
            "evidence_ok": not problems, "problems": problems,
            # what the next check holds this backup to (rollback detection)
            "held_ids": None if receipt.objects is None else sorted(
                t.hex() for t in receipt.objects),
            "deleted": len(ours_.deleted) if ours_ is not None else 0}


def backup_engines(engines: Iterable[PeerEngine], space: Space) -> list[PeerEngine]:
    """The connected engines of replicators of ``space`` that share it with us."""
    reps = space.acl.state.replicators
    return [e for e in engines
            if e.ready.is_set() and e.remote_account in reps and space.id in e.shared]


async def collect_receipts(engines: list[PeerEngine], space: Space, local: LDiff | Ours,
                           timeout: float = 10.0,
                           previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ask each engine (a connected replicator) for a receipt; verify it, judge it against our
    state and against that backup's previous receipt (``previous``: the saved status of the
    space, see :func:`save_receipt`), and compare."""
    results: list[dict[str, Any]] = []
    before = {r.get("backup_peer"): r for r in (previous or {}).get("receipts", [])
              if r.get("signature_ok")}
    for e in engines:
        nonce = os.urandom(32)
        try:
            raw = await asyncio.wait_for(e.request_receipt(space.id, nonce), timeout)
            rec = verify_receipt(raw, device=e.remote_device, space_id=space.id, nonce=nonce)
        except (P2PSyncError, TimeoutError) as exc:
            results.append({"backup_peer": e.conn.peer_id, "error": f"{type(exc).__name__}: "
                            f"{exc}", "signature_ok": False})
            continue
        view = compare(rec, local, account=e.remote_account,
                       previous=before.get(peer_id(rec.device)))
        if not view["evidence_ok"] and before.get(peer_id(rec.device)):
            # keep holding the backup to what it proved before, not to its new claims
            view["held_ids"] = before[peer_id(rec.device)].get("held_ids")
        results.append(view)
    out: dict[str, Any] = {
        "space_id": space.id, "checked_at": time.time(),
        "replicators": len(space.acl.state.replicators), "connected_backups": len(engines),
        "receipts": results}
    if not engines:
        out["note"] = ("no backup of this space is connected now: the last verified receipt "
                       "(if any) is in `status`")
    return out


def save_receipt(home: Path, space_id: str, status: dict[str, Any]) -> None:
    """Keep the last checked receipts of a space (atomically replaced)."""
    path = home / RECEIPTS_FILE
    data = load_receipts(home)
    data[space_id] = status
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def load_receipts(home: Path) -> dict[str, Any]:
    """Every space's last checked receipts; a missing or corrupt file means none."""
    try:
        data = json.loads((home / RECEIPTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
