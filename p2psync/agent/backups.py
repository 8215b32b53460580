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
from p2psync.sync.engine import PeerEngine
from p2psync.sync.ldiff import LDiff
from p2psync.sync.pull import ChallengeResult

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
def compare(receipt: Receipt, local: LDiff) -> dict[str, Any]:
    """What a verified receipt says about our own state (pure)."""
    ours = dict(local.items())
    full = receipt.root == local.hash()
    if receipt.objects is not None:
        held = sorted(t for t, h in ours.items() if receipt.objects.get(t) == h)
        missing = sorted(t for t in ours if t not in held)
    else:  # large space: only the fingerprint says it, all or nothing
        held = sorted(ours) if full else []
        missing = [] if full else sorted(ours)
    return {"all_backed_up": full, "documents": len(ours), "documents_backed_up": len(held),
            "not_backed_up": [short_hash(t) for t in missing[:50]],
            "backup_objects": receipt.objects_count, "backup_changes": receipt.changes_count,
            "backup_bytes": receipt.size,
            "receipt_time": receipt.timestamp_ms / 1000, "backup_peer": peer_id(receipt.device),
            "backup_account": account_id(receipt.account), "signature_ok": True}


def judge(receipt: Receipt, view: dict[str, Any], *, connection_account: bytes,
          local_changes: int, local_bytes: int, challenge: ChallengeResult | None,
          previous: dict[str, Any] | None, now: float, deleted: int = 0) -> dict[str, Any]:
    """Whether a verified receipt is *evidence* (issue 20.4, pure). A signature alone proves
    nothing: the root our device sent can be copied back with made-up counts. So "backed up"
    needs, besides a matching root: the receipt's account is the connection's certificate
    account; its counts are consistent (listed objects ≤ objects ≤ changes ≤ bytes, and at
    least what we hold when it claims our root); and a challenge of random stored changes was
    answered with the right ciphertext. A receipt claiming fewer objects or changes than the
    most this device ever saw from the same backup is flagged ``rolled_back`` (the high-water
    marks are kept with the saved result, so the flag stays until the backup catches up).
    ``deleted`` counts the tombstones we know of in the space: when it grew since the marks
    were set, a smaller backup is what deletion does, so the marks restart from this receipt."""
    out = dict(view)
    account_ok = receipt.account == connection_account
    listed = len(receipt.objects) if receipt.objects is not None else 0
    counts_ok = (listed <= receipt.objects_count <= receipt.changes_count <= receipt.size
                 or receipt.objects_count == receipt.changes_count == receipt.size == 0)
    if view["all_backed_up"] and view["documents"]:
        counts_ok = (counts_ok and receipt.objects_count >= view["documents"]
                     and receipt.changes_count >= local_changes and receipt.size >= local_bytes)
    seen_objects = seen_changes = 0  # the most this backup ever claimed to us
    if previous is not None and previous.get("backup_peer") == view["backup_peer"]:
        seen_objects = int(previous.get("seen_objects", previous.get("backup_objects", 0)))
        seen_changes = int(previous.get("seen_changes", previous.get("backup_changes", 0)))
        if deleted > int(previous.get("seen_deleted", 0)):
            seen_objects = seen_changes = 0  # objects were deleted since: the backup shrank
    rolled_back = receipt.objects_count < seen_objects or receipt.changes_count < seen_changes
    # nothing to challenge in a space without documents: the root and counts say it all
    proven = challenge is not None and (challenge.ok or (challenge.asked == 0
                                                         and not view["documents"]))
    out.update({
        "account_ok": account_ok, "counts_ok": counts_ok, "rolled_back": rolled_back,
        "seen_objects": max(seen_objects, receipt.objects_count),
        "seen_changes": max(seen_changes, receipt.changes_count),
        "seen_deleted": deleted,
        "challenge": None if challenge is None else {
            "asked": challenge.asked, "proven": challenge.proven,
            "inconclusive": challenge.inconclusive,
            "failed": [short_hash(c) for c in challenge.failed]},
        "all_backed_up": bool(view["all_backed_up"] and account_ok and counts_ok and proven
                              and not rolled_back),
        "proven_at": now if proven else (previous or {}).get("proven_at"),
        "proof": ("not proven" if not proven or challenge is None else
                  f"signed receipt + {challenge.proven} of {challenge.asked} random changes "
                  "returned" if challenge.asked else "signed receipt (no documents)"),
    })
    return out


def backup_engines(engines: Iterable[PeerEngine], space: Space) -> list[PeerEngine]:
    """The connected engines of replicators of ``space`` that share it with us."""
    reps = space.acl.state.replicators
    return [e for e in engines
            if e.ready.is_set() and e.remote_account in reps and space.id in e.shared]


async def collect_receipts(engines: list[PeerEngine], space: Space, local: LDiff,
                           timeout: float = 10.0, previous: dict[str, Any] | None = None,
                           challenge_count: int = 3) -> dict[str, Any]:
    """Ask each engine (a connected replicator) for a receipt; verify it, compare it with our
    state, challenge the backup for random changes and :func:`judge` the whole. ``previous``
    is what :func:`load_receipts` kept for this space (rollback detection)."""
    results: list[dict[str, Any]] = []
    local_bytes, local_changes = space.store.space_usage().get(space.id, (0, 0))
    acl = space.acl.state
    deleted = len(acl.deleted) + (acl.space_deleted is not None)
    before = {r.get("backup_peer"): r for r in (previous or {}).get("receipts", [])
              if isinstance(r, dict) and "error" not in r}
    for e in engines:
        nonce = os.urandom(32)
        try:
            raw = await asyncio.wait_for(e.request_receipt(space.id, nonce), timeout)
            rec = verify_receipt(raw, device=e.remote_device, space_id=space.id, nonce=nonce)
        except (P2PSyncError, TimeoutError) as exc:
            results.append({"backup_peer": e.conn.peer_id, "error": f"{type(exc).__name__}: "
                            f"{exc}", "signature_ok": False})
            continue
        view = compare(rec, local)
        try:
            proof: ChallengeResult | None = await asyncio.wait_for(
                e.challenge(space.id, challenge_count), timeout)
        except (P2PSyncError, TimeoutError):
            proof = None
        results.append(judge(rec, view, connection_account=e.remote_account,
                             local_changes=local_changes, local_bytes=local_bytes,
                             challenge=proof, previous=before.get(view["backup_peer"]),
                             now=time.time(), deleted=deleted))
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
