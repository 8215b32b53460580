/**
 * Backup storage receipts (p2psync/backup/receipt.py): "this backup holds these heads of space
 * S", signed by the backup's device key (domain "backup-receipt"). A phone asks its backup for
 * one (RECEIPT_REQUEST with a fresh nonce) and checks it here.
 *
 *   raw  = pack([body, signature])
 *   body = pack([1, space_id, device, account, timestamp_ms, nonce, acl_heads (sorted), root,
 *                objects_count, changes_count, bytes, [[object_id, heads_hash]...] | nil])
 */
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { pack, Reader, unpack } from "../codec.js";
import { compareBytes } from "../hashes.js";
import { equalBytes, verify } from "../crypto/keys.js";
import { BadSignature, DecodeError, P2PSyncError } from "../errors.js";

export const RECEIPT_DOMAIN = "backup-receipt";
export const MAX_LISTED = 4096;
const MAX_RECEIPT = 1024 * 1024;

export class ReceiptError extends P2PSyncError {}

export interface Receipt {
  readonly spaceId: string;
  readonly device: Uint8Array;
  readonly account: Uint8Array;
  readonly timestampMs: bigint;
  readonly nonce: Uint8Array;
  readonly aclHeads: readonly Uint8Array[];
  readonly root: Uint8Array;
  readonly objectsCount: number;
  readonly changesCount: number;
  readonly size: number;
  /** object id hex -> heads hash (small spaces only). */
  readonly objects: Map<string, Uint8Array> | null;
  readonly body: Uint8Array;
}

/** Parse and check a receipt from the backup whose device key is `device`. */
export function verifyReceipt(raw: Uint8Array, o: { device: Uint8Array; spaceId: string; nonce: Uint8Array }): Receipt {
  let rec: Receipt, sig: Uint8Array;
  try {
    const r = new Reader(unpack(raw, { maxSize: MAX_RECEIPT, what: "receipt" }), "receipt");
    const body = r.blob("body", { maxLen: MAX_RECEIPT });
    sig = r.blob("signature", { size: 64 });
    r.end();
    const b = new Reader(unpack(body, { maxSize: MAX_RECEIPT, what: "receipt body" }), "receipt body");
    b.version([1]);
    const spaceId = b.text("space_id", 128);
    const device = b.blob("device", { size: 32 });
    const account = b.blob("account", { size: 32 });
    const timestampMs = b.bigInteger("timestamp_ms", 0n, (1n << 63n) - 1n);
    const nonce = b.blob("nonce", { size: 32 });
    const aclHeads = b.blobList("acl_heads", { size: 32, maxItems: 256 });
    const root = b.blob("root", { size: 32 });
    const objectsCount = b.integer("objects_count", 0);
    const changesCount = b.integer("changes_count", 0);
    const size = b.integer("bytes", 0);
    const objsRaw = b.value("objects");
    b.end();
    let objects: Map<string, Uint8Array> | null = null;
    if (objsRaw !== null) {
      if (!Array.isArray(objsRaw) || objsRaw.length > MAX_LISTED) throw new DecodeError("receipt objects: expected a list of at most 4096 pairs");
      objects = new Map();
      objsRaw.forEach((item, i) => {
        const p = new Reader(item, `receipt objects[${i}]`);
        const oid = p.blob("id", { size: 32 });
        objects!.set(bytesToHex(oid), p.blob("heads_hash", { size: 32 }));
        p.end();
      });
    }
    rec = { spaceId, device, account, timestampMs, nonce, aclHeads, root, objectsCount, changesCount, size, objects, body };
  } catch (exc) {
    if (exc instanceof DecodeError) throw new ReceiptError(`malformed storage receipt: ${exc.message}`);
    throw exc;
  }
  if (!equalBytes(rec.device, o.device)) throw new ReceiptError("the receipt was signed for another device than the one we asked");
  try {
    verify(o.device, RECEIPT_DOMAIN, rec.body, sig);
  } catch (exc) {
    if (exc instanceof BadSignature) throw new ReceiptError("storage receipt signature does not verify");
    throw exc;
  }
  if (rec.spaceId !== o.spaceId || !equalBytes(rec.nonce, o.nonce)) {
    throw new ReceiptError("storage receipt is for another space or request (stale/replayed)");
  }
  return rec;
}

/** The body of a receipt re-encoded from its fields (checks the decoder kept everything). */
export function receiptBody(r: Receipt): Uint8Array {
  const objs = r.objects === null ? null : [...r.objects].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => [hexToBytes(k), v]);
  const heads = [...r.aclHeads].sort(compareBytes);
  return pack([1, r.spaceId, r.device, r.account, r.timestampMs, r.nonce, heads, r.root, r.objectsCount, r.changesCount, r.size, objs]);
}
