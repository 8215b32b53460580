/**
 * The spaces one JS peer holds, as the sync layer sees them (p2psync/sync/replicas.py +
 * the parts of replica/space.py sync needs), in memory: a verified header, the ACL, one
 * ObjectTree per object (gated by the ACL), the head-sync set kept in step with every tree, and
 * fan-out of new changes / ACL records to every connected peer except the one they came from.
 *
 * Storage is the `jsapp` helper's layer; this class is the seam it plugs into (`onTree`,
 * `onAcl` listeners see everything added, with the raw bytes).
 */
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { contentId } from "../codec.js";
import type { AccountKey, DeviceKey } from "../crypto/keys.js";
import { compareBytes, headsHash } from "../hashes.js";
import { Acl } from "../replica/acl.js";
import type { ReadKey } from "../crypto/box.js";
import { AccessDenied, InvalidAclRecord } from "../replica/aclRecords.js";
import { buildChange, type Change, parseChange } from "../replica/change.js";
import { SpaceHeader } from "../replica/header.js";
import { ObjectTree } from "../replica/tree.js";
import type { ReplicaSet } from "../docs/replicas.js";
import { writePosition } from "../bootstrap.js";
import { LDiff } from "./ldiff.js";
import { headerExchangeKey } from "./spacex.js";

/** Who receives what a replica takes in (a connected peer's engine); `null` = local edit. */
export interface Pusher {
  pushTree(space: SyncSpace, treeId: Uint8Array, changes: readonly Change[]): void;
  pushAcl(space: SyncSpace, raws: readonly Uint8Array[]): void;
}

export interface AclApplied {
  readonly added: string[];
  readonly rejected: [string, string][];
  readonly waiting: boolean;
}

/** The result of taking in one batch of changes for one tree. */
export interface IngestResult {
  attached: Change[];
  /** Some change lacked parents (neither held nor earlier in the batch): dropped. */
  missing: boolean;
  /** Some change named an ACL head we do not know: dropped. */
  unknownAcl: boolean;
  /** Why the batch (or part of it) was refused (bad signature, not allowed, …). */
  refused: string | null;
}

/** The serving rule: members (any role) and replicators receive a space; nobody else. */
export function mayAccess(acl: Acl, account: Uint8Array): boolean {
  const st = acl.state;
  const k = bytesToHex(account);
  return st.members.has(k) || st.replicators.has(k);
}

/** One space held here. */
export class SyncSpace {
  readonly trees = new Map<string, ObjectTree>();
  readonly ldiff = new LDiff();
  readonly exchangeKey: Uint8Array;
  private ring = new Map<string, ReadKey>();
  private ringSize = -1;

  constructor(readonly header: SpaceHeader, readonly acl: Acl, readonly owner: SyncReplicas) {
    this.exchangeKey = headerExchangeKey(header.raw, header.spaceId);
  }

  get id(): string {
    return this.header.spaceId;
  }

  treeIds(): Uint8Array[] {
    return [...this.trees.values()].map((t) => t.id).sort(compareBytes);
  }

  hasTree(id: Uint8Array): boolean {
    return this.trees.has(bytesToHex(id));
  }

  tree(id: Uint8Array): ObjectTree | undefined {
    return this.trees.get(bytesToHex(id));
  }

  heads(id: Uint8Array): Uint8Array[] {
    return this.tree(id)?.heads ?? [];
  }

  private touch(tree: ObjectTree): void {
    this.ldiff.set(tree.id, headsHash(tree.heads));
  }

  /** Admit ACL records (any order); bad ones are reported, not thrown. Trees whose changes
   * waited for ACL heads are re-checked. */
  addAcl(raws: readonly Uint8Array[], source: Pusher | null): AclApplied {
    const added: string[] = [];
    const rejected: [string, string][] = [];
    const fresh: Uint8Array[] = [];
    for (const raw of raws) {
      const id = bytesToHex(contentId(raw));
      if (this.acl.has(id)) continue;
      try {
        const r = this.acl.add(raw);
        if (r.status === "added" || r.status === "waiting" || r.status === "ignored") fresh.push(raw);
        if (r.status === "added") added.push(id, ...r.released);
        else added.push(...r.released);
      } catch (exc) {
        if (!(exc instanceof InvalidAclRecord || exc instanceof AccessDenied)) throw exc;
        rejected.push([id, exc.message]);
      }
    }
    if (added.length) {
      for (const t of this.trees.values()) {
        try {
          const res = t.add([]);
          if (res.attached.length) this.changed(t, res.attached, source);
        } catch {
          // a waiting change the gate now refuses is dropped by the tree
        }
      }
    }
    if (fresh.length) this.owner.fanAcl(this, fresh, source);
    return { added, rejected, waiting: this.acl.waiting.length > 0 };
  }

  /** ACL records the peer lacks given its heads (theirs we do not know are ignored). */
  aclLacking(theirHeads: readonly Uint8Array[]): Uint8Array[] {
    const known = theirHeads.map(bytesToHex).filter((x) => this.acl.has(x));
    return this.acl.export().filter((raw) => {
      const rid = bytesToHex(contentId(raw));
      return !known.some((x) => this.acl.isAncestor(rid, x));
    });
  }

  private changed(tree: ObjectTree, attached: Change[], source: Pusher | null): void {
    this.touch(tree);
    this.owner.fanTree(this, tree.id, attached, source);
  }

  /**
   * Take in one batch for one tree: a change is kept if its parents are held or earlier in the
   * batch and its ACL head is known; orphans are dropped (never parked) and only reported.
   */
  ingest(treeId: Uint8Array, raws: readonly Uint8Array[], source: Pusher | null): IngestResult {
    const res: IngestResult = { attached: [], missing: false, unknownAcl: false, refused: null };
    let tree = this.tree(treeId);
    const seen = new Set<string>();
    const ok: Change[] = [];
    for (const raw of raws) {
      let ch: Change;
      try {
        ch = parseChange(raw);
      } catch (exc) {
        res.refused = `unparseable change: ${(exc as Error).message}`;
        return res;
      }
      if (compareBytes(ch.tree, treeId) !== 0) {
        res.refused = "change for another object";
        return res;
      }
      const k = bytesToHex(ch.id);
      if (tree?.has(ch.id) || seen.has(k)) continue;
      if (!ch.isRoot && ch.prevIds.some((p) => !seen.has(bytesToHex(p)) && !(tree?.has(p) ?? false))) {
        res.missing = true;
        continue;
      }
      if (!this.acl.knowsHead(bytesToHex(ch.aclHead))) {
        res.unknownAcl = true;
        continue;
      }
      seen.add(k);
      ok.push(ch);
    }
    if (!ok.length) return res;
    try {
      if (tree === undefined) {
        const root = ok.find((c) => c.isRoot);
        if (root === undefined) {
          res.missing = true;
          return res;
        }
        tree = ObjectTree.fromRoot(this.id, root.raw, this.acl.gate());
        this.trees.set(bytesToHex(tree.id), tree);
        res.attached.push(tree.root);
      }
      const added = tree.add(ok.filter((c) => !c.isRoot).map((c) => c.raw));
      res.attached.push(...added.attached);
    } catch (exc) {
      res.refused = `changes refused: ${(exc as Error).message}`;
    }
    if (tree !== undefined && res.attached.length) this.changed(tree, res.attached, source);
    return res;
  }

  /** Raw changes of a tree the peer lacks given its heads, parents first (all when it has none
   * of ours). */
  changesFor(treeId: Uint8Array, theirHeads: readonly Uint8Array[]): Uint8Array[] {
    const tree = this.tree(treeId);
    if (tree === undefined) return [];
    const have = new Set<string>();
    const stack = theirHeads.filter((x) => tree.has(x)).map(bytesToHex);
    while (stack.length) {
      const cur = stack.pop()!;
      if (have.has(cur)) continue;
      have.add(cur);
      for (const p of tree.get(hexToBytes(cur))!.prevIds) stack.push(bytesToHex(p));
    }
    return tree.attachedChanges().filter((c) => !have.has(bytesToHex(c.id))).map((c) => c.raw);
  }

  /** Every read key our account can open (hex key id -> key), recomputed only when the ACL
   * gained records (unsealing costs an X25519 operation per key). */
  keyring(): ReadonlyMap<string, ReadKey> {
    if (this.ringSize !== this.acl.size) {
      this.ring = this.acl.keysOf(this.owner.account);
      this.ringSize = this.acl.size;
    }
    return this.ring;
  }

  /** Make a signed, encrypted change of our own (a new tree when treeId is null) and fan it
   * out to every peer. */
  createChange(treeId: Uint8Array | null, plaintext: Uint8Array, o: { snapshot?: boolean } = {}): Change {
    const me = this.owner.account;
    const [aclHead, keyId] = writePosition(this.acl, me.public);
    const key = this.keyring().get(bytesToHex(keyId));
    if (key === undefined) throw new AccessDenied("you do not hold the current read key");
    const tree = treeId === null ? undefined : this.tree(treeId);
    if (treeId !== null && tree === undefined) throw new AccessDenied("no such object here");
    const ch = buildChange(me, key, plaintext, {
      spaceId: this.id, treeId, prevIds: tree?.heads ?? [], aclHead, readKeyId: keyId, snapshot: o.snapshot ?? false,
    });
    const res = this.ingest(ch.tree, [ch.raw], null);
    if (res.refused !== null) throw new AccessDenied(res.refused);
    return ch;
  }

  /** The plaintext of a change (throws when we hold no key for it). */
  read(change: Change): Uint8Array {
    const key = this.keyring().get(bytesToHex(change.readKeyId));
    if (key === undefined) throw new AccessDenied("no read key for this change");
    return change.decrypt(key);
  }
}

/** Every space held by one peer, with access checks and push fan-out. It is the app layer's
 * `ReplicaSet` (src/docs/replicas.ts): a Repo runs on it when sync is present. */
export class SyncReplicas implements ReplicaSet {
  readonly spaces = new Map<string, SyncSpace>();
  readonly pushers = new Set<Pusher>();
  /** Called after every tree change taken in or made here (the app layer's hook). */
  readonly treeListeners: ((space: SyncSpace, treeId: Uint8Array, changes: readonly Change[]) => void)[] = [];
  readonly aclListeners: ((space: SyncSpace, raws: readonly Uint8Array[]) => void)[] = [];

  constructor(readonly account: AccountKey, readonly device: DeviceKey) {}

  onTree(fn: (space: SyncSpace, treeId: Uint8Array, changes: readonly Change[]) => void): void {
    this.treeListeners.push(fn);
  }

  onAcl(fn: (space: SyncSpace, raws: readonly Uint8Array[]) => void): void {
    this.aclListeners.push(fn);
  }

  /** A new space owned by our account. */
  createSpace(spaceType = "default"): SyncSpace {
    const header = SpaceHeader.create(this.account, spaceType);
    const acl = Acl.create(header.spaceId, this.account);
    const space = new SyncSpace(header, acl, this);
    this.spaces.set(space.id, space);
    return space;
  }

  /** Take in a space received from a peer (bootstrap): verify header and ACL. */
  adopt(spaceId: string, headerRaw: Uint8Array, aclRaws: readonly Uint8Array[]): SyncSpace {
    const existing = this.spaces.get(spaceId);
    if (existing !== undefined) {
      existing.addAcl(aclRaws, null);
      return existing;
    }
    const header = SpaceHeader.verify(headerRaw, spaceId);
    const acl = Acl.fromRecords(spaceId, aclRaws, { me: this.account, owner: header.owner });
    const space = new SyncSpace(header, acl, this);
    this.spaces.set(spaceId, space);
    return space;
  }

  mayAccess(spaceId: string, account: Uint8Array): boolean {
    const space = this.spaces.get(spaceId);
    return space !== undefined && mayAccess(space.acl, account);
  }

  /**
   * Listener policy (`TransportConfig.revealCertificate`, Python's `Node.reveals_to` without the
   * address book): may this authenticated initiator learn our certificate and talk to us? Yes for
   * our own account, an account that is the owner, a member, a replicator or a departed member
   * (it is told why it lost the space) of a space held here, and anyone while a space here has
   * an open (unexpired) invite: the joiner is not a member yet and its proof travels only after
   * the handshake. Everyone else is refused (StrangerRefused) having learnt only our device key.
   */
  revealsTo(peer: { readonly account: Uint8Array }, now: number = Date.now() / 1000): boolean {
    const k = bytesToHex(peer.account);
    if (k === bytesToHex(this.account.public)) return true;
    for (const s of this.spaces.values()) {
      const st = s.acl.state;
      if (st.owner === k || st.members.has(k) || st.replicators.has(k) || st.departed.has(k)) return true;
      for (const inv of st.invites.values()) if (inv.expiresAt === 0 || Math.floor(now) <= inv.expiresAt) return true;
    }
    return false;
  }

  /** Exchange keys of the spaces we would list to `account` (members/replicators only). */
  exchangeKeysFor(account: Uint8Array): Map<string, Uint8Array> {
    const out = new Map<string, Uint8Array>();
    for (const [sid, s] of this.spaces) if (mayAccess(s.acl, account)) out.set(sid, s.exchangeKey);
    return out;
  }

  fanTree(space: SyncSpace, treeId: Uint8Array, changes: readonly Change[], source: Pusher | null): void {
    for (const l of this.treeListeners) l(space, treeId, changes);
    for (const p of this.pushers) if (p !== source) p.pushTree(space, treeId, changes);
  }

  fanAcl(space: SyncSpace, raws: readonly Uint8Array[], source: Pusher | null): void {
    for (const l of this.aclListeners) l(space, raws);
    for (const p of this.pushers) if (p !== source) p.pushAcl(space, raws);
  }

  /** Record a locally built ACL record (e.g. our join) and push it to every peer. */
  commitAcl(space: SyncSpace, raw: Uint8Array): void {
    // already admitted by the builder (Acl.emit); re-check waiting trees and fan out
    for (const t of space.trees.values()) {
      try {
        const res = t.add([]);
        if (res.attached.length) space.ldiff.set(t.id, headsHash(t.heads));
      } catch {
        // refused waiting change: dropped by the tree
      }
    }
    this.fanAcl(space, [raw], null);
  }
}
