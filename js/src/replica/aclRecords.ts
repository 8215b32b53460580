/**
 * ACL record wire format (p2psync/replica/acl_records.py): signed, domain-separated envelopes
 * forming a causal DAG. raw = pack([body, sig]) signed by the author's account key under
 * domain "acl-record"; body = pack([1, space_id, prev, author, timestamp, kind, payload]). The
 * record id is the content id of raw exactly as received. Decoding is strict (types, sizes,
 * sorted unique lists, no trailing fields) and throws InvalidAclRecord.
 */
import { bytesToHex } from "@noble/hashes/utils.js";
import { compareBytes } from "../hashes.js";
import { contentId, ID_SIZE, pack, Reader, unpack, type Value } from "../codec.js";
import { type SigningKey, verify } from "../crypto/keys.js";
import { makeSigned, openSigned } from "../crypto/signed.js";
import { BadSignature, DecodeError, P2PSyncError } from "../errors.js";

/** A record that is malformed, forged, or not allowed (Python InvalidAclRecord). */
export class InvalidAclRecord extends P2PSyncError {}
/** The author lacks the right for this action (Python AccessDenied). */
export class AccessDenied extends P2PSyncError {}

export const RECORD_DOMAIN = "acl-record";
export const JOIN_DOMAIN = "acl-join";
const VERSION = 1;
export const MAX_ACL_RECORD_SIZE = 256 * 1024;
export const MAX_PREV = 64;
export const MAX_ENTRIES = 2048;
export const SEALED_KEY_SIZE = 80;
export const WRAPPED_KEY_SIZE = 72;

export enum Role { READER = 1, WRITER = 2, ADMIN = 3, OWNER = 4 }

export enum Kind {
  ROOT = 0, INVITE = 1, REQUEST_JOIN = 2, INVITE_JOIN = 3, ACCEPT = 4, DECLINE = 5,
  REVOKE_INVITE = 6, PERMISSION_CHANGE = 7, REMOVE = 8, LEAVE = 9, TRANSFER_OWNERSHIP = 10,
  ADD_REPLICATOR = 11, REMOVE_REPLICATOR = 12, ROTATE = 13, MERGE = 14, DELETE_OBJECTS = 15,
  DELETE_SPACE = 16, SPACE_META = 17,
}

/** [ref, blob]: a key sealed to a member/invite, or wrapped under a newer key. */
export interface KeyEntry { readonly ref: Uint8Array; readonly blob: Uint8Array }

export interface Rotation {
  readonly members: readonly KeyEntry[];
  readonly invites: readonly KeyEntry[];
  readonly wraps: readonly KeyEntry[];
}

export type Payload =
  | { kind: Kind.ROOT; sealedKey: Uint8Array }
  | { kind: Kind.INVITE; inviteKey: Uint8Array; anyoneCanJoin: boolean; role: Role; keys: readonly KeyEntry[]; expiresAt: number }
  | { kind: Kind.REQUEST_JOIN; inviteId: Uint8Array; proof: Uint8Array }
  | { kind: Kind.INVITE_JOIN; inviteId: Uint8Array; proof: Uint8Array; keys: readonly KeyEntry[] }
  | { kind: Kind.ACCEPT; requestId: Uint8Array; role: Role; keys: readonly KeyEntry[] }
  | { kind: Kind.DECLINE; requestId: Uint8Array }
  | { kind: Kind.REVOKE_INVITE; inviteId: Uint8Array }
  | { kind: Kind.PERMISSION_CHANGE; member: Uint8Array; role: Role }
  | { kind: Kind.REMOVE; members: readonly Uint8Array[]; rotation: Rotation }
  | { kind: Kind.LEAVE }
  | { kind: Kind.TRANSFER_OWNERSHIP; newOwner: Uint8Array }
  | { kind: Kind.ADD_REPLICATOR; account: Uint8Array }
  | { kind: Kind.REMOVE_REPLICATOR; account: Uint8Array }
  | { kind: Kind.ROTATE; rotation: Rotation }
  | { kind: Kind.MERGE }
  | { kind: Kind.DELETE_OBJECTS; objects: readonly Uint8Array[] }
  | { kind: Kind.DELETE_SPACE }
  /** the space's metadata (its name) sealed under read key keyId (docs/acl.md); admins only */
  | { kind: Kind.SPACE_META; keyId: Uint8Array; sealed: Uint8Array };

/** A decoded, signature-checked ACL record; id is the content id of raw. */
export interface AclRecord {
  readonly id: Uint8Array;
  readonly raw: Uint8Array;
  readonly spaceId: string;
  readonly prev: readonly Uint8Array[];
  readonly author: Uint8Array;
  readonly timestamp: number;
  readonly payload: Payload;
}

/** The read-key rotation a record carries, if any (the root has its own form). */
export function rotationOf(rec: AclRecord): Rotation | undefined {
  const p = rec.payload;
  return p.kind === Kind.REMOVE || p.kind === Kind.ROTATE ? p.rotation : undefined;
}

export function introducesKey(rec: AclRecord): boolean {
  const k = rec.payload.kind;
  return k === Kind.ROOT || k === Kind.REMOVE || k === Kind.ROTATE;
}

// --- encoding ---------------------------------------------------------------------------
function entries(es: readonly KeyEntry[]): Value[] {
  return [...es].sort((x, y) => compareBytes(x.ref, y.ref)).map((e) => [e.ref, e.blob]);
}

function rotationFields(r: Rotation): Value[] {
  return [entries(r.members), entries(r.invites), entries(r.wraps)];
}

const sortedBytes = (xs: readonly Uint8Array[]): Uint8Array[] => [...xs].sort(compareBytes);

function payloadFields(p: Payload): Value[] {
  switch (p.kind) {
    case Kind.ROOT: return [p.sealedKey];
    case Kind.INVITE: {
      const f: Value[] = [p.inviteKey, p.anyoneCanJoin, p.role, entries(p.keys)];
      return p.expiresAt ? [...f, p.expiresAt] : f;
    }
    case Kind.REQUEST_JOIN: return [p.inviteId, p.proof];
    case Kind.INVITE_JOIN: return [p.inviteId, p.proof, entries(p.keys)];
    case Kind.ACCEPT: return [p.requestId, p.role, entries(p.keys)];
    case Kind.DECLINE: return [p.requestId];
    case Kind.REVOKE_INVITE: return [p.inviteId];
    case Kind.PERMISSION_CHANGE: return [p.member, p.role];
    case Kind.REMOVE: return [sortedBytes(p.members), rotationFields(p.rotation)];
    case Kind.TRANSFER_OWNERSHIP: return [p.newOwner];
    case Kind.ADD_REPLICATOR: case Kind.REMOVE_REPLICATOR: return [p.account];
    case Kind.ROTATE: return [rotationFields(p.rotation)];
    case Kind.LEAVE: case Kind.MERGE: case Kind.DELETE_SPACE: return [];
    case Kind.DELETE_OBJECTS: return [sortedBytes(p.objects)];
    case Kind.SPACE_META: return [p.keyId, p.sealed];
  }
}

/** Sign a new record; prev are the ACL heads the author saw (sorted, deduplicated on the wire). */
export function buildRecord(author: SigningKey, spaceId: string, prev: readonly Uint8Array[], payload: Payload,
  timestamp: number = Math.floor(Date.now() / 1000)): Uint8Array {
  const uniq = new Map(prev.map((p) => [bytesToHex(p), p]));
  const body = pack([VERSION, spaceId, sortedBytes([...uniq.values()]), author.public, timestamp, payload.kind,
    payloadFields(payload)]);
  return makeSigned(author, RECORD_DOMAIN, body);
}

/** What the invite key signs to let joiner in: bound to space, invite and account. */
export function joinProofMessage(spaceId: string, inviteId: Uint8Array, joiner: Uint8Array): Uint8Array {
  return pack([spaceId, inviteId, joiner]);
}

// --- decoding ---------------------------------------------------------------------------
function sortedUnique(name: string, items: readonly Uint8Array[]): void {
  for (let i = 1; i < items.length; i++) {
    if (compareBytes(items[i - 1]!, items[i]!) >= 0) throw new DecodeError(`${name}: must be sorted and unique`);
  }
}

function readEntries(r: Reader, name: string, refSize: number, blobSize: number): KeyEntry[] {
  const out = r.array(name, MAX_ENTRIES).map((item, i) => {
    const e = new Reader(item, `${r.what}.${name}[${i}]`);
    const ref = e.blob("ref", { size: refSize });
    const blob = e.blob("blob", { size: blobSize });
    e.end();
    return { ref, blob };
  });
  sortedUnique(name, out.map((e) => e.ref));
  return out;
}

const ROLES: readonly Role[] = [Role.READER, Role.WRITER, Role.ADMIN, Role.OWNER];
const KINDS: readonly Kind[] = [
  Kind.ROOT, Kind.INVITE, Kind.REQUEST_JOIN, Kind.INVITE_JOIN, Kind.ACCEPT, Kind.DECLINE, Kind.REVOKE_INVITE,
  Kind.PERMISSION_CHANGE, Kind.REMOVE, Kind.LEAVE, Kind.TRANSFER_OWNERSHIP, Kind.ADD_REPLICATOR,
  Kind.REMOVE_REPLICATOR, Kind.ROTATE, Kind.MERGE, Kind.DELETE_OBJECTS, Kind.DELETE_SPACE,
  Kind.SPACE_META,
];
const readRole = (r: Reader): Role => ROLES[r.integer("role", Role.READER, Role.OWNER) - 1]!;

function readRotation(r: Reader): Rotation {
  const rr = new Reader(r.value("rotation"), `${r.what}.rotation`);
  const rot = {
    members: readEntries(rr, "members", 32, SEALED_KEY_SIZE),
    invites: readEntries(rr, "invites", ID_SIZE, SEALED_KEY_SIZE),
    wraps: readEntries(rr, "wraps", ID_SIZE, WRAPPED_KEY_SIZE),
  };
  rr.end();
  return rot;
}

function readPayload(kind: Kind, value: Value): Payload {
  const r = new Reader(value, `acl ${Kind[kind].toLowerCase()}`);
  const id = (name: string): Uint8Array => r.blob(name, { size: ID_SIZE });
  let p: Payload;
  switch (kind) {
    case Kind.ROOT: p = { kind, sealedKey: r.blob("sealed_key", { size: SEALED_KEY_SIZE }) }; break;
    case Kind.INVITE: {
      const inviteKey = r.blob("invite_key", { size: 32 });
      const anyoneCanJoin = r.boolean("anyone_can_join");
      const role = readRole(r);
      const keys = readEntries(r, "keys", ID_SIZE, SEALED_KEY_SIZE);
      const expiresAt = Array.isArray(value) && value.length === 5 ? r.integer("expires_at", 1) : 0;
      p = { kind, inviteKey, anyoneCanJoin, role, keys, expiresAt };
      break;
    }
    case Kind.REQUEST_JOIN: p = { kind, inviteId: id("invite_id"), proof: r.blob("proof", { size: 64 }) }; break;
    case Kind.INVITE_JOIN:
      p = { kind, inviteId: id("invite_id"), proof: r.blob("proof", { size: 64 }),
        keys: readEntries(r, "keys", ID_SIZE, SEALED_KEY_SIZE) };
      break;
    case Kind.ACCEPT:
      p = { kind, requestId: id("request_id"), role: readRole(r), keys: readEntries(r, "keys", ID_SIZE, SEALED_KEY_SIZE) };
      break;
    case Kind.DECLINE: p = { kind, requestId: id("request_id") }; break;
    case Kind.REVOKE_INVITE: p = { kind, inviteId: id("invite_id") }; break;
    case Kind.PERMISSION_CHANGE: p = { kind, member: r.blob("member", { size: 32 }), role: readRole(r) }; break;
    case Kind.REMOVE: {
      const members = r.blobList("members", { size: 32, maxItems: MAX_ENTRIES });
      sortedUnique("members", members);
      if (members.length === 0) throw new DecodeError("remove: names no member");
      p = { kind, members, rotation: readRotation(r) };
      break;
    }
    case Kind.LEAVE: p = { kind }; break;
    case Kind.TRANSFER_OWNERSHIP: p = { kind, newOwner: r.blob("new_owner", { size: 32 }) }; break;
    case Kind.ADD_REPLICATOR: p = { kind, account: r.blob("account", { size: 32 }) }; break;
    case Kind.REMOVE_REPLICATOR: p = { kind, account: r.blob("account", { size: 32 }) }; break;
    case Kind.ROTATE: p = { kind, rotation: readRotation(r) }; break;
    case Kind.MERGE: p = { kind }; break;
    case Kind.DELETE_OBJECTS: {
      const objects = r.blobList("objects", { size: ID_SIZE, maxItems: MAX_ENTRIES });
      sortedUnique("objects", objects);
      if (objects.length === 0) throw new DecodeError("delete objects: names no object");
      p = { kind, objects };
      break;
    }
    case Kind.DELETE_SPACE: p = { kind }; break;
    case Kind.SPACE_META: {
      const keyId = id("key_id");
      const sealed = r.blob("sealed", { maxLen: 2048 });
      if (sealed.length < 40) throw new DecodeError("space meta: sealed metadata is too short");
      p = { kind, keyId, sealed };
      break;
    }
  }
  r.end();
  return p;
}

/** Strictly decode raw and verify its signature; throws InvalidAclRecord otherwise. */
export function decodeAclRecord(raw: Uint8Array, expectedSpaceId?: string): AclRecord {
  let body: Uint8Array, sig: Uint8Array, spaceId: string, prev: Uint8Array[], author: Uint8Array;
  let timestamp: number, kind: Kind, payload: Payload;
  try {
    [body, sig] = openSigned(raw, "acl record", MAX_ACL_RECORD_SIZE);
    const r = new Reader(unpack(body, { maxSize: MAX_ACL_RECORD_SIZE, what: "acl body" }), "acl body");
    r.version([VERSION]);
    spaceId = r.text("space_id", 128);
    prev = r.blobList("prev", { size: ID_SIZE, maxItems: MAX_PREV });
    sortedUnique("prev", prev);
    author = r.blob("author", { size: 32 });
    timestamp = r.integer("timestamp", 0);
    kind = KINDS[r.integer("kind", 0, Kind.SPACE_META)]!;
    payload = readPayload(kind, r.value("payload"));
    r.end();
  } catch (e) {
    if (e instanceof DecodeError) throw new InvalidAclRecord(`malformed ACL record: ${e.message}`);
    throw e;
  }
  if ((kind === Kind.ROOT) !== (prev.length === 0)) {
    throw new InvalidAclRecord("only the root record has no previous ACL heads");
  }
  if (kind === Kind.MERGE && prev.length < 2) throw new InvalidAclRecord("a merge record must join at least two ACL heads");
  if (expectedSpaceId !== undefined && spaceId !== expectedSpaceId) {
    throw new InvalidAclRecord(`ACL record belongs to space ${spaceId}, not ${expectedSpaceId}`);
  }
  try {
    verify(author, RECORD_DOMAIN, body, sig);
  } catch (e) {
    if (e instanceof BadSignature) throw new InvalidAclRecord("ACL record signature does not verify (forged or damaged)");
    throw e;
  }
  const copy = Uint8Array.from(raw);
  return { id: contentId(copy), raw: copy, spaceId, prev, author, timestamp, payload };
}
