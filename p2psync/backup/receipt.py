"""Signed storage receipts: "this backup holds these heads of space S" (sans-IO).

A receipt is ``pack([body, signature])`` with the signature by the backup's **device** key under
the domain ``backup-receipt`` over ``body``::

    body = pack([1, space_id, device_pk, account_pk, timestamp_ms, nonce,
                 acl_heads (sorted), root (head-sync set fingerprint), objects_count,
                 changes_count, bytes, objects: [[object_id, heads_hash]...] | nil])

``root`` is the head-sync fingerprint (:meth:`LDiff.hash`) of the backup's set, equal to the
device's own when both hold the same heads of every object. ``objects`` lists each object's
heads hash when the space has at most :data:`MAX_LISTED` objects, so a device can say exactly
which of its documents are backed up at their current heads. The nonce (chosen by the
device) makes a receipt fresh; the device checks signer, space and nonce.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2psync.codec import Reader, pack, unpack
from p2psync.crypto.keys import DeviceKey, verify
from p2psync.errors import BadSignature, DecodeError, P2PSyncError

DOMAIN = "backup-receipt"
MAX_LISTED = 4096
MAX_RECEIPT = 1024 * 1024


class ReceiptError(P2PSyncError):
    """A storage receipt does not verify (wrong signer, space, nonce, or damaged)."""


@dataclass(frozen=True)
class Receipt:
    """A verified statement of what a backup held of one space at ``timestamp_ms``."""

    space_id: str
    device: bytes
    account: bytes
    timestamp_ms: int
    nonce: bytes
    acl_heads: tuple[bytes, ...]
    root: bytes
    objects_count: int
    changes_count: int
    size: int  #: bytes of raw changes held
    objects: dict[bytes, bytes] | None  #: object id -> heads hash (small spaces only)
    raw: bytes = b""

    def body(self) -> bytes:
        objs = None if self.objects is None else [[k, v] for k, v in sorted(self.objects.items())]
        return pack([1, self.space_id, self.device, self.account, self.timestamp_ms, self.nonce,
                     sorted(self.acl_heads), self.root, self.objects_count, self.changes_count,
                     self.size, objs])


def sign_receipt(device: DeviceKey, receipt: Receipt) -> bytes:
    """The wire form of ``receipt`` signed by the backup's device key."""
    body = receipt.body()
    return pack([body, device.sign(DOMAIN, body)])


def verify_receipt(raw: bytes, *, device: bytes, space_id: str, nonce: bytes) -> Receipt:
    """Parse and check a receipt from the backup whose device key is ``device``."""
    try:
        r = Reader(unpack(raw, max_size=MAX_RECEIPT, what="receipt"), "receipt")
        body = r.blob("body", max_len=MAX_RECEIPT)
        sig = r.blob("signature", size=64)
        r.end()
        b = Reader(unpack(body, max_size=MAX_RECEIPT, what="receipt body"), "receipt body")
        b.version([1])
        rec_space = b.text("space_id", max_len=128)
        rec_device = b.blob("device", size=32)
        account = b.blob("account", size=32)
        ts = b.integer("timestamp_ms", min_value=0, max_value=2**63 - 1)
        rec_nonce = b.blob("nonce", size=32)
        acl_heads = tuple(b.blob_list("acl_heads", size=32, max_items=256))
        root = b.blob("root", size=32)
        n_obj = b.integer("objects_count", min_value=0)
        n_ch = b.integer("changes_count", min_value=0)
        n_bytes = b.integer("bytes", min_value=0)
        objs_raw = b.value("objects")
        b.end()
        objects: dict[bytes, bytes] | None = None
        if objs_raw is not None:
            if not isinstance(objs_raw, list) or len(objs_raw) > MAX_LISTED:
                raise DecodeError("receipt objects: expected a list of at most 4096 pairs")
            objects = {}
            for i, item in enumerate(objs_raw):
                p = Reader(item, f"receipt objects[{i}]")
                oid = p.blob("id", size=32)
                objects[oid] = p.blob("heads_hash", size=32)
                p.end()
    except DecodeError as exc:
        raise ReceiptError(f"malformed storage receipt: {exc}") from exc
    if rec_device != device:
        raise ReceiptError("the receipt was signed for another device than the one we asked")
    try:
        verify(device, DOMAIN, body, sig)
    except BadSignature as exc:
        raise ReceiptError("storage receipt signature does not verify") from exc
    if rec_space != space_id or rec_nonce != nonce:
        raise ReceiptError("storage receipt is for another space or request (stale/replayed)")
    return Receipt(rec_space, rec_device, account, ts, rec_nonce, acl_heads, root, n_obj, n_ch,
                   n_bytes, objects, bytes(raw))
