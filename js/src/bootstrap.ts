/**
 * Joining a space by invite code: the code itself, the proofs, and the ACL record builders a
 * joiner (and an admin accepting it) needs — p2psync/replica/acl.py's InviteCode, request_join,
 * join, accept, invite_open, check_invitee_push, write_position, and p2psync/sync/bootstrap.py's
 * proof format. Built on top of the sans-IO `Acl` (replica/acl.ts) without changing it.
 *
 * Bootstrap proof: `proof = pack([invite_id, signature])`, the invite key signing (domain
 * "sync-bootstrap-v1") `pack([space id, invite id, responder's SPACE_HELLO nonce, joiner device
 * key, responder device key, Noise handshake hash])`: fresh per session, bound to both devices.
 */
import { base32, base32nopad } from "@scure/base";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { codePoints, pack, Reader, unpack } from "./codec.js";
import { ReadKey, seal, unseal } from "./crypto/box.js";
import { SigningKey } from "./crypto/keys.js";
import { BadId, DecodeError } from "./errors.js";
import { type Acl, type AclState, MAX_REQUESTS_PER_INVITE, wrapAad } from "./replica/acl.js";
import {
  AccessDenied,
  decodeAclRecord,
  InvalidAclRecord,
  JOIN_DOMAIN,
  joinProofMessage,
  type KeyEntry,
  Kind,
  Role,
  rotationOf,
} from "./replica/aclRecords.js";

export const BOOTSTRAP_DOMAIN = "sync-bootstrap-v1";
const PREFIX = "p2psync-invite1:";
const PREFIX2 = "p2psync-invite2:";
const MAX_ADDRESSES = 8;

/** The out-of-band invite secret: invite record id and invite key seed, plus (format 2) the
 * space id and `transport:host:port` hints of peers holding the space. */
export class InviteCode {
  constructor(
    readonly inviteId: Uint8Array,
    readonly seed: Uint8Array,
    readonly spaceId = "",
    readonly addresses: readonly string[] = [],
  ) {}

  get key(): SigningKey {
    return new SigningKey(this.seed);
  }

  encode(): string {
    if (!this.spaceId) {
      const both = new Uint8Array(64);
      both.set(this.inviteId);
      both.set(this.seed, 32);
      return PREFIX + base32nopad.encode(both);
    }
    return PREFIX2 + base32nopad.encode(pack([this.inviteId, this.seed, this.spaceId, this.addresses.slice(0, MAX_ADDRESSES)]));
  }

  static decode(text: string): InviteCode {
    text = text.trim();
    const v2 = text.startsWith(PREFIX2);
    if (!v2 && !text.startsWith(PREFIX)) throw new BadId("not a p2psync invite code");
    const body = text.slice(PREFIX.length).trim().toUpperCase();
    let raw: Uint8Array;
    try {
      raw = base32.decode(body + "=".repeat((8 - (body.length % 8)) % 8));
    } catch {
      throw new BadId("invite code is not valid base32");
    }
    if (v2) {
      let code: InviteCode;
      try {
        const r = new Reader(unpack(raw, { maxSize: 4096, what: "invite code" }), "invite code");
        const inviteId = r.blob("invite_id", { size: 32 });
        const seed = r.blob("seed", { size: 32 });
        const spaceId = r.text("space_id", 128);
        const addrs = r.array("addresses", MAX_ADDRESSES);
        r.end();
        if (!spaceId || !addrs.every((a) => typeof a === "string" && a.length > 0 && codePoints(a) <= 256)) {
          throw new BadId("invite code is damaged: bad space id or address");
        }
        code = new InviteCode(inviteId, seed, spaceId, addrs as string[]);
      } catch (exc) {
        if (exc instanceof DecodeError) throw new BadId(`invite code is damaged: ${exc.message}`);
        throw exc;
      }
      return code;
    }
    if (raw.length !== 64) throw new BadId("invite code has the wrong length");
    return new InviteCode(raw.slice(0, 32), raw.slice(32));
  }
}

/** What the invite key signs to prove possession to one responder in one session. */
export function bootstrapMessage(spaceId: string, inviteId: Uint8Array, responderNonce: Uint8Array, joinerDevice: Uint8Array,
  responderDevice: Uint8Array, binding: Uint8Array): Uint8Array {
  return pack([spaceId, inviteId, responderNonce, joinerDevice, responderDevice, binding]);
}

/** [invite id, signature] of a bootstrap proof (DecodeError if malformed). */
export function parseProof(proof: Uint8Array): [Uint8Array, Uint8Array] {
  const r = new Reader(unpack(proof, { maxSize: 4096, what: "bootstrap proof" }), "bootstrap proof");
  const inviteId = r.blob("invite_id", { size: 32 });
  const sig = r.blob("signature", { size: 64 });
  r.end();
  return [inviteId, sig];
}

/** Our proof of `code`'s invite key for one session. */
export function makeProof(code: InviteCode, spaceId: string, responderNonce: Uint8Array, joinerDevice: Uint8Array,
  responderDevice: Uint8Array, binding: Uint8Array): Uint8Array {
  const data = bootstrapMessage(spaceId, code.inviteId, responderNonce, joinerDevice, responderDevice, binding);
  return pack([code.inviteId, code.key.sign(BOOTSTRAP_DOMAIN, data)]);
}

// --- ACL helpers (acl.py invite/join/accept and the invitee screen) --------------------------

/** The invite exists, is not revoked and has not expired at `now` (unix seconds). */
export function inviteOpen(acl: Acl, inviteId: Uint8Array, now: number): boolean {
  const inv = acl.state.invites.get(bytesToHex(inviteId));
  return inv !== undefined && !(inv.expiresAt !== 0 && Math.floor(now) > inv.expiresAt);
}

/** Keys sealed to an invite key, by read key id (hex): the invite's own, and each rotation's. */
function inviteSealed(acl: Acl, inviteId: string): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const raw of acl.export()) {
    const rec = decodeAclRecord(raw, acl.spaceId);
    const id = bytesToHex(rec.id);
    if (rec.payload.kind === Kind.INVITE && id === inviteId) {
      for (const e of rec.payload.keys) out.set(bytesToHex(e.ref), e.blob);
    }
    for (const e of rotationOf(rec)?.invites ?? []) if (bytesToHex(e.ref) === inviteId) out.set(id, e.blob);
  }
  return out;
}

function joinProof(acl: Acl, joiner: SigningKey, code: InviteCode): Uint8Array {
  return code.key.sign(JOIN_DOMAIN, joinProofMessage(acl.spaceId, code.inviteId, joiner.public));
}

/** Ask to join through an approval-required invite (an admin must accept); admitted locally,
 * returned raw for the caller to store and push. */
export function requestJoin(acl: Acl, joiner: SigningKey, code: InviteCode, timestamp?: number): Uint8Array {
  return acl.emit(joiner, { kind: Kind.REQUEST_JOIN, inviteId: code.inviteId, proof: joinProof(acl, joiner, code) }, timestamp);
}

/** Join through an anyone-can-join invite: the code unlocks the current read key(s), which are
 * sealed again to the joiner's account key. */
export function join(acl: Acl, joiner: SigningKey, code: InviteCode, timestamp?: number): Uint8Array {
  const sealed = inviteSealed(acl, bytesToHex(code.inviteId));
  const keys: KeyEntry[] = acl.state.tips.map((k) => {
    const blob = sealed.get(k);
    if (blob === undefined) throw new AccessDenied("this invite does not unlock the current read key");
    return { ref: hexToBytes(k), blob: seal(unseal(blob, code.key), joiner.public) };
  });
  return acl.emit(joiner, { kind: Kind.INVITE_JOIN, inviteId: code.inviteId, proof: joinProof(acl, joiner, code), keys }, timestamp);
}

/** Accept a join request: seal the current key tips to the joiner with `role` (default: the
 * invite's role). */
export function accept(acl: Acl, author: SigningKey, requestId: Uint8Array, role?: Role, timestamp?: number): Uint8Array {
  const req = acl.record(bytesToHex(requestId));
  if (req === undefined || req.payload.kind !== Kind.REQUEST_JOIN) throw new InvalidAclRecord("no such join request");
  if (role === undefined) {
    const inv = acl.record(bytesToHex(req.payload.inviteId));
    role = inv !== undefined && inv.payload.kind === Kind.INVITE ? inv.payload.role : Role.READER;
  }
  const keys = sealedTips(acl, author, req.author);
  return acl.emit(author, { kind: Kind.ACCEPT, requestId, role, keys }, timestamp);
}

/** Keys `author` holds for the current tips, sealed to `to` (an account or invite key). */
function sealedTips(acl: Acl, author: SigningKey, to: Uint8Array): KeyEntry[] {
  const ring = acl.keysOf(author);
  return acl.state.tips.map((k) => {
    const key = ring.get(k);
    if (key === undefined) throw new AccessDenied("you do not hold the current read key");
    return { ref: hexToBytes(k), blob: seal(key.key, to) };
  });
}

/** Create an invite; hand the returned code (with the space id) to the invitee out of band.
 * With `anyoneCanJoin` the code itself unlocks the current read key; otherwise an admin must
 * accept the join request. `expiresAt` (unix seconds, 0 = never) voids it afterwards. */
export function invite(acl: Acl, author: SigningKey, role: Role = Role.WRITER,
  o: { anyoneCanJoin?: boolean; expiresAt?: number; timestamp?: number; addresses?: readonly string[] } = {}): [Uint8Array, InviteCode] {
  const ikey = SigningKey.generate();
  const anyone = o.anyoneCanJoin ?? false;
  const keys = anyone ? sealedTips(acl, author, ikey.public) : [];
  const raw = acl.emit(author, { kind: Kind.INVITE, inviteKey: ikey.public, anyoneCanJoin: anyone, role, keys, expiresAt: o.expiresAt ?? 0 }, o.timestamp);
  return [raw, new InviteCode(decodeAclRecord(raw).id, ikey.seed, acl.spaceId, o.addresses ?? [])];
}

function rotation(acl: Acl, author: SigningKey, st: AclState, stay: readonly string[]): { members: KeyEntry[]; invites: KeyEntry[]; wraps: KeyEntry[] } {
  const fresh = ReadKey.generate();
  const ring = acl.keysOf(author);
  return {
    members: [...stay].sort().map((m) => ({ ref: hexToBytes(m), blob: seal(fresh.key, hexToBytes(m)) })),
    invites: [...st.invites].filter(([, inv]) => inv.anyoneCanJoin).sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([i, inv]) => ({ ref: hexToBytes(i), blob: seal(fresh.key, inv.inviteKey) })),
    wraps: st.tips.map((k) => {
      const key = ring.get(k);
      if (key === undefined) throw new AccessDenied("you do not hold the current read key");
      return { ref: hexToBytes(k), blob: fresh.encrypt(key.key, wrapAad(acl.spaceId, hexToBytes(k))) };
    }),
  };
}

/** Remove members and rotate the read key to everyone who stays. */
export function remove(acl: Acl, author: SigningKey, members: readonly Uint8Array[], timestamp?: number): Uint8Array {
  const st = acl.state;
  const gone = new Set(members.map(bytesToHex));
  const stay = [...st.members.keys()].filter((m) => !gone.has(m));
  return acl.emit(author, { kind: Kind.REMOVE, members: [...gone].sort().map(hexToBytes), rotation: rotation(acl, author, st, stay) }, timestamp);
}

/** The latest head (replay order) at which author may write, and its current read key id. */
export function writePosition(acl: Acl, author: Uint8Array): [Uint8Array, Uint8Array] {
  const me = bytesToHex(author);
  for (const head of [...acl.heads].reverse()) {
    const st = acl.stateAt(head);
    if (st.canWrite(me)) return [hexToBytes(head), hexToBytes(st.currentKeyId)];
  }
  throw new AccessDenied("you may not write in this space");
}

/** Screen ACL records pushed by a peer that is not a member or replicator (an invitee) before
 * admitting any: only its own join (request or open-invite join), signed by `account` (its
 * connection's account), through an open invite, one per push, within the per-invite cap.
 * Throws AccessDenied otherwise. */
export function checkInviteePush(acl: Acl, raws: readonly Uint8Array[], account: Uint8Array, now?: number): void {
  const st = acl.state;
  const me = bytesToHex(account);
  let fresh = 0;
  for (const raw of raws) {
    let rec;
    try {
      rec = decodeAclRecord(raw, acl.spaceId);
    } catch (exc) {
      if (exc instanceof InvalidAclRecord || exc instanceof DecodeError) throw new AccessDenied(`an invitee pushed a malformed ACL record: ${exc.message}`);
      throw exc;
    }
    if (acl.has(bytesToHex(rec.id))) continue;
    const p = rec.payload;
    if (!(p.kind === Kind.REQUEST_JOIN || p.kind === Kind.INVITE_JOIN) || bytesToHex(rec.author) !== me) {
      throw new AccessDenied("an invitee may push only its own join request");
    }
    if (++fresh > 1) throw new AccessDenied("an invitee may push one join request at a time");
    const inv = st.invites.get(bytesToHex(p.inviteId));
    if (inv === undefined || (now !== undefined && inv.expiresAt !== 0 && Math.floor(now) > inv.expiresAt)) {
      throw new AccessDenied("the invite does not exist, was revoked or has expired");
    }
    if (st.members.has(me) || st.replicators.has(me)) throw new AccessDenied("already a member");
    if (p.kind === Kind.REQUEST_JOIN) {
      const reqs = [...st.requests.values()];
      if (reqs.some((q) => q.joiner === me)) throw new AccessDenied("this account already has a pending join request");
      if (reqs.filter((q) => q.inviteId === bytesToHex(p.inviteId)).length >= MAX_REQUESTS_PER_INVITE) {
        throw new AccessDenied("too many pending join requests for this invite");
      }
    }
  }
}
