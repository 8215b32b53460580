/**
 * An Automerge document over an object tree (p2psync/replica/document.py, in TypeScript with
 * `@automerge/automerge` 3.x).
 *
 * The core is sans-IO like Python's: `change(fn, now)` runs one Automerge change and queues its
 * bytes; `dueAt` says when the coalescing window closes; `flush()` signs everything pending as
 * ONE encrypted tree change (or a chain when it exceeds what one change may carry). The Repo
 * (src/repo.ts) owns the timer and the storage.
 *
 * Remote changes: `receive(raws)` decrypts every payload before the tree takes anything (a
 * payload that does not decrypt under its named key rejects the batch, nothing added), then
 * applies the Automerge changes. Changes that reached the tree another way (the sync driver
 * adds to the tree directly) are picked up on next use.
 *
 * Quarantine (docs/replica.md, issue 12.5): a tree change whose payload does not decrypt,
 * decode, pass the screen or apply is left out of the document on every replica alike. The
 * screen refuses what Python's automerge build cannot render: native counters, increments,
 * marks, tables, unknown actions. So a JS peer never writes such content (a local change that
 * holds any is rolled back: `UnsupportedContent`) and leaves it out when a foreign writer does,
 * exactly like Python, and both converge to the same JSON.
 *
 * Counters are maps `{"$counter": true, "<actor hex>": int, …}` (each actor writes only its
 * own entry; the value is the sum): `makeCounter` / `increment` below.
 */
import * as A from "@automerge/automerge";
import { writePosition } from "../bootstrap.js";
import type { ReadKey } from "../crypto/box.js";
import type { SigningKey } from "../crypto/keys.js";
import { DecryptionFailed, P2PSyncError } from "../errors.js";
import { compareBytes } from "../hashes.js";
import { type Acl, UnknownReadKey } from "../replica/acl.js";
import { buildChange, type Change, MAX_PAYLOAD_SIZE, parseChange } from "../replica/change.js";
import { type AclGate, type AddResult, ObjectTree } from "../replica/tree.js";
import { actorFor, ChangeTooLarge, decodePayload, DocumentError, encodePayload, type ChangePayload, UnsupportedContent } from "./payload.js";

export const COUNTER_MARK = "$counter";
export const DEFAULT_WINDOW_MS = 50;
/** Plaintext one tree change may carry: the payload cap less the AEAD nonce and tag (and slack). */
export const PAYLOAD_ROOM = MAX_PAYLOAD_SIZE - 64;

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (s: string): Uint8Array => Uint8Array.from(s.match(/../g) ?? [], (x) => parseInt(x, 16));

/** What a document needs from the space's ACL: keys to read, and where to write. */
export interface DocKeys {
  /** The read key with this id, if this replica holds it. */
  readKey(readKeyId: Uint8Array): ReadKey | undefined;
  /** `(acl_head, read_key_id)` a local change by `author` names now; AccessDenied if none. */
  writePosition(author: Uint8Array): { aclHead: Uint8Array; readKeyId: Uint8Array };
}

/** The ACL as document keys: the latest ACL head at which the author may write, its current key
 * (Python `Acl.write_position`; the one implementation is `writePosition` in bootstrap.ts, which
 * the sync layer's `createChange` uses too). */
export function aclKeys(acl: Acl): DocKeys {
  return {
    readKey: (id) => acl.readKey(id),
    writePosition: (author) => {
      const [aclHead, readKeyId] = writePosition(acl, author);
      return { aclHead, readKeyId };
    },
  };
}

/** A tree change whose content is left out of the document, and why. */
export interface Quarantined {
  readonly changeId: string;
  readonly author: string;
  readonly reason: string;
}

const ALLOWED_ACTIONS = new Set(["makeMap", "makeList", "makeText", "set", "del"]);

/** Refuse Automerge changes Python's build cannot render (see the module doc). */
export function screen(change: Uint8Array): void {
  let decoded: A.DecodedChange;
  try {
    decoded = A.decodeChange(change);
  } catch (e) {
    throw new UnsupportedContent(`not an Automerge change: ${String(e)}`);
  }
  for (const op of decoded.ops) {
    if (!ALLOWED_ACTIONS.has(op.action)) throw new UnsupportedContent(`Automerge op "${op.action}" is not supported (counters: makeCounter/increment)`);
    if ("datatype" in op && op.datatype === "counter") throw new UnsupportedContent("native Automerge counters are not supported (use makeCounter/increment)");
  }
}

/** Create a counter at `obj[key]` inside a change function, with this actor's share = start. */
export function makeCounter(obj: Record<string, unknown>, key: string, actor: string, start = 0): void {
  const c: Record<string, unknown> = { [COUNTER_MARK]: true };
  if (start !== 0) c[actor] = start;
  obj[key] = c;
}

/** Add `delta` to the counter at `obj[key]` by bumping only this actor's entry. */
export function increment(obj: Record<string, unknown>, key: string, actor: string, delta = 1): void {
  const c = obj[key];
  if (typeof c !== "object" || c === null || !(COUNTER_MARK in c)) throw new DocumentError(`${key} is not a counter (create it with makeCounter)`);
  const m = c as Record<string, unknown>;
  const mine = m[actor];
  m[actor] = (typeof mine === "number" ? mine : 0) + delta;
}

function toB64(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s);
}

/** JSON view of Automerge values (docs/replica.md): text and strings → string, counters → sum,
 * bytes → {"$bytes": base64}, timestamps → {"$timestamp": iso}. */
export function renderJson(v: unknown): unknown {
  if (v === null || typeof v === "string" || typeof v === "number" || typeof v === "boolean") return v;
  if (v instanceof A.ImmutableString) return v.toString();
  if (v instanceof A.Counter) return v.value;
  if (v instanceof Uint8Array) return { $bytes: toB64(v) };
  if (v instanceof Date) return { $timestamp: v.toISOString() };
  if (Array.isArray(v)) return v.map(renderJson);
  if (typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (COUNTER_MARK in o) {
      let total = 0;
      for (const [k, x] of Object.entries(o)) if (k !== COUNTER_MARK && typeof x === "number" && Number.isInteger(x)) total += x;
      return total;
    }
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(o).sort()) out[k] = renderJson(o[k]);
    return out;
  }
  return null;
}

interface Pending {
  items: Uint8Array[];
  links: { hash: Uint8Array; deps: Uint8Array[] }[];
  since: number | null;
}

export interface DocumentOptions {
  /** Coalescing window in ms (0: every change flushes at once). */
  windowMs?: number;
  /** Materialise from the latest snapshot change (default true). */
  useSnapshots?: boolean;
  /** Called with every tree change this document makes (to store and send it). */
  onLocalChange?: (changes: Change[]) => void;
  /**
   * Sign `plaintext` as the next change of this document's tree and attach it (default: build
   * it here and add it to the tree). The Repo passes its replica's writer so the change also
   * reaches storage and every connected peer.
   */
  write?: (plaintext: Uint8Array, snapshot: boolean) => Change;
}

export type ChangeFn<T> = (doc: T) => void;

export class Document<T extends object = Record<string, unknown>> {
  readonly actor: string;
  readonly windowMs: number;
  readonly useSnapshots: boolean;
  onLocalChange: ((changes: Change[]) => void) | undefined;
  private readonly write: ((plaintext: Uint8Array, snapshot: boolean) => Change) | undefined;
  /** change id hex -> why its content is left out of the document */
  readonly quarantined = new Map<string, Quarantined>();
  /** id (hex) of the snapshot change the document was materialised from (null: full replay). */
  loadedSnapshot: string | null = null;
  private am: A.Doc<T> | null = null;
  private pending: Pending = { items: [], links: [], since: null };
  private readonly amHeads = new Map<string, readonly Uint8Array[]>();
  private readonly snapFlags = new Map<string, boolean>();
  private readonly seen = new Set<string>();
  private cursor = 0;

  constructor(
    readonly tree: ObjectTree,
    readonly keys: DocKeys,
    readonly author: SigningKey,
    device: Uint8Array,
    opts: DocumentOptions = {},
  ) {
    this.actor = hex(actorFor(author.public, device));
    this.windowMs = opts.windowMs ?? DEFAULT_WINDOW_MS;
    this.useSnapshots = opts.useSnapshots ?? true;
    this.onLocalChange = opts.onLocalChange;
    this.write = opts.write;
  }

  /** A new, empty document: a new tree whose root carries an empty payload (as Python's). */
  static create<T extends object = Record<string, unknown>>(
    spaceId: string, keys: DocKeys, gate: AclGate | null, author: SigningKey, device: Uint8Array, opts: DocumentOptions = {},
  ): Document<T> {
    const { aclHead, readKeyId } = keys.writePosition(author.public);
    const key = keys.readKey(readKeyId);
    if (key === undefined) throw new UnknownReadKey("cannot create a document: this replica holds no current read key");
    const root = buildChange(author, key, encodePayload([], []), { spaceId, treeId: null, prevIds: [], aclHead, readKeyId });
    const doc = new Document<T>(new ObjectTree(spaceId, root, gate), keys, author, device, opts);
    doc.onLocalChange?.([root]);
    return doc;
  }

  get id(): Uint8Array {
    return this.tree.id;
  }

  get materialized(): boolean {
    return this.am !== null;
  }

  // --- materialisation ---------------------------------------------------------------------
  private payload(ch: Change): ChangePayload {
    const key = this.keys.readKey(ch.readKeyId);
    if (key === undefined) throw new UnknownReadKey("this replica does not hold the read key of the change");
    const sealed = ch.open(key);
    this.snapFlags.set(hex(ch.id), sealed.snapshot);
    const p = decodePayload(sealed.plaintext);
    this.amHeads.set(hex(ch.id), p.amHeads);
    return p;
  }

  /** Whether a change is a snapshot: clear in change format 1, sealed with the content in
   * format 2 (so only a key holder knows; a change that does not open counts as not one). */
  private isSnapshot(ch: Change): boolean {
    if (ch.snapshot !== null) return ch.snapshot;
    const id = hex(ch.id);
    let flag = this.snapFlags.get(id);
    if (flag === undefined) {
      const key = this.keys.readKey(ch.readKeyId);
      try {
        flag = key === undefined ? false : ch.open(key).snapshot;
      } catch (e) {
        if (!(e instanceof P2PSyncError || e instanceof DocumentError)) throw e;
        flag = false;
      }
      this.snapFlags.set(id, flag);
    }
    return flag;
  }

  private payloads(changes: readonly Change[]): [Change, ChangePayload][] {
    const out: [Change, ChangePayload][] = [];
    for (const c of changes) {
      try {
        out.push([c, this.payload(c)]);
      } catch (e) {
        if (!(e instanceof DecryptionFailed || e instanceof DocumentError || e instanceof UnknownReadKey)) throw e;
        this.seen.add(hex(c.id));
        this.quarantine(c, `${e.name}: ${e.message}`);
      }
    }
    return out;
  }

  private quarantine(ch: Change, reason: string): void {
    const id = hex(ch.id);
    if (!this.quarantined.has(id)) this.quarantined.set(id, { changeId: id, author: hex(ch.author), reason });
  }

  /** Causal past of `ids` in the tree (ids included). */
  private past(ids: readonly Uint8Array[]): Set<string> {
    const out = new Set<string>();
    const stack = [...ids];
    while (stack.length > 0) {
      const id = stack.pop()!;
      const k = hex(id);
      if (out.has(k)) continue;
      out.add(k);
      const ch = this.tree.get(id);
      if (ch !== undefined) stack.push(...ch.prevIds);
    }
    return out;
  }

  private ensure(): A.Doc<T> {
    if (this.am !== null) {
      if (this.cursor !== this.tree.size) {
        const fresh = this.tree.attachedChanges().slice(this.cursor);
        this.cursor = this.tree.size;
        this.apply(this.payloads(fresh.filter((c) => !this.seen.has(hex(c.id)))));
      }
      return this.am;
    }
    let order = this.tree.replayOrder();
    let snap: Change | undefined;
    if (this.useSnapshots) {
      const attached = this.tree.attachedChanges();
      for (let i = attached.length - 1; i >= 0 && snap === undefined; i--) if (this.isSnapshot(attached[i]!)) snap = attached[i];
    }
    let doc: A.Doc<T> | null = null;
    if (snap !== undefined) {
      try {
        const p = this.payload(snap);
        doc = A.load<T>(p.items[0] ?? new Uint8Array(0), { actor: this.actor });
        renderJson(doc);
      } catch (e) {
        this.quarantine(snap, `snapshot not used: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
        doc = null;
      }
      if (doc !== null) {
        this.loadedSnapshot = hex(snap.id);
        const covered = this.past([snap.id]);
        for (const k of covered) this.seen.add(k);
        order = order.filter((c) => !covered.has(hex(c.id)));
      }
    }
    this.am = doc ?? A.init<T>({ actor: this.actor });
    this.apply(this.payloads(order));
    this.cursor = this.tree.size;
    return this.am;
  }

  /** Apply payloads in causal order; content that fails the screen or Automerge is quarantined. */
  private apply(items: readonly [Change, ChangePayload][]): void {
    let doc = this.am!;
    for (const [c] of items) this.seen.add(hex(c.id));
    for (const [c, p] of items) {
      if (this.isSnapshot(c)) continue;
      try {
        for (const b of p.items) screen(b);
        [doc] = A.applyChanges(doc, [...p.items]);
      } catch (e) {
        this.quarantine(c, e instanceof Error ? `${e.name}: ${e.message}` : String(e));
      }
    }
    this.am = doc;
  }

  private reset(): void {
    this.am = null;
    this.seen.clear();
    this.cursor = 0;
    this.loadedSnapshot = null;
  }

  // --- local edits ---------------------------------------------------------------------------
  /**
   * One Automerge change (Automerge's proxy API: `d.title = "x"`, `d.items.push(…)`, text via
   * `A.splice` / `A.updateText`). Content the screen refuses rolls back with
   * UnsupportedContent; nothing is signed. Flushes at once when the window is 0.
   */
  change(fn: ChangeFn<T>, now: number = Date.now()): void {
    const before = this.ensure();
    const heads = A.getHeads(before);
    const after = A.change(before, fn);
    const fresh = A.getChangesSince(after, heads);
    try {
      for (const b of fresh) screen(b);
      const room = encodePayload(A.getHeads(after).map(unhex), []).length;
      for (const b of fresh) {
        if (room + b.length + 9 > PAYLOAD_ROOM) {
          throw new ChangeTooLarge(`one edit makes a ${b.length}-byte Automerge change; a change may carry at most ${PAYLOAD_ROOM} bytes: big blobs belong in files`);
        }
      }
    } catch (e) {
      // never sign it: rebuild from the tree, keeping earlier pending edits
      const keep = this.pending.items;
      this.reset();
      if (keep.length > 0) [this.am] = A.applyChanges(this.ensure(), keep);
      throw e;
    }
    this.am = after;
    if (fresh.length > 0) {
      for (const b of fresh) {
        const d = A.decodeChange(b);
        this.pending.links.push({ hash: unhex(d.hash), deps: d.deps.map(unhex) });
      }
      this.pending.items.push(...fresh);
      this.pending.since ??= now;
    }
    if (this.windowMs <= 0) this.flush();
  }

  /** When the coalescing window of pending edits closes (ms; null: nothing pending). */
  get dueAt(): number | null {
    return this.pending.since === null ? null : this.pending.since + this.windowMs;
  }

  /** Automerge changes made locally and not yet in a tree change. */
  get pendingCount(): number {
    return this.pending.items.length;
  }

  /** Flush if the window has closed at `now`. */
  poll(now: number): Change[] {
    const due = this.dueAt;
    return due !== null && now >= due ? this.flush() : [];
  }

  private sign(plaintext: Uint8Array, snapshot: boolean): Change {
    if (this.write !== undefined) {
      const made = this.write(plaintext, snapshot);
      this.seen.add(hex(made.id)); // catch-up skips it (its content is in the doc already)
      return made;
    }
    const { aclHead, readKeyId } = this.keys.writePosition(this.author.public);
    const key = this.keys.readKey(readKeyId);
    if (key === undefined) throw new UnknownReadKey("cannot write: this replica holds no current read key");
    const ch = buildChange(this.author, key, plaintext, {
      spaceId: this.tree.spaceId, treeId: this.tree.id, prevIds: this.tree.heads, aclHead, readKeyId, snapshot,
    });
    this.tree.add([ch.raw]);
    this.seen.add(hex(ch.id));
    return ch;
  }

  /** Sign all pending Automerge changes as one tree change (a chain if they exceed one change's
   * room); returns the tree changes made (also given to onLocalChange). */
  flush(): Change[] {
    if (this.pending.items.length === 0) return [];
    const final = A.getHeads(this.ensure()).map(unhex);
    const { items, links } = this.pending;
    const runs: [number, number][] = [];
    let start = 0;
    let size = encodePayload(final, []).length;
    items.forEach((item, i) => {
      const extra = item.length + 9;
      if (i > start && size + extra > PAYLOAD_ROOM) {
        runs.push([start, i]);
        start = i;
        size = encodePayload(final, []).length;
      }
      size += extra;
    });
    runs.push([start, items.length]);
    const made: Change[] = [];
    for (const [n, [s, e]] of runs.entries()) {
      const heads = n === runs.length - 1 ? final : headsWithout(final, links.slice(e));
      const ch = this.sign(encodePayload(heads, items.slice(s, e)), false);
      this.amHeads.set(hex(ch.id), [...heads].sort(compareBytes));
      made.push(ch);
      this.pending = { items: items.slice(e), links: links.slice(e), since: this.pending.since };
    }
    this.pending = { items: [], links: [], since: null };
    this.onLocalChange?.(made);
    return made;
  }

  /** Flush, then emit a snapshot change (encrypted Automerge save()); null when too big. */
  snapshot(): Change | null {
    this.flush();
    const doc = this.ensure();
    const heads = A.getHeads(doc).map(unhex);
    const saved = A.save(doc);
    if (encodePayload(heads, [saved]).length > PAYLOAD_ROOM) return null;
    const ch = this.sign(encodePayload(heads, [saved]), true);
    this.amHeads.set(hex(ch.id), [...heads].sort(compareBytes));
    this.onLocalChange?.([ch]);
    return ch;
  }

  // --- remote changes ----------------------------------------------------------------------
  /**
   * Add changes from a peer. Every payload is decrypted first: one that does not decrypt under
   * the key it names (DecryptionFailed) or names a key this replica lacks (UnknownReadKey)
   * rejects the whole batch before the tree takes anything.
   */
  receive(raws: readonly Uint8Array[]): AddResult {
    const decoded = new Map<string, ChangePayload>();
    for (const raw of raws) {
      const ch = parseChange(raw);
      if (this.tree.has(ch.id)) continue;
      const key = this.keys.readKey(ch.readKeyId);
      if (key === undefined) throw new UnknownReadKey("this replica does not hold the read key of the change");
      let p: ChangePayload | null = null;
      try {
        p = decodePayload(ch.decrypt(key));
      } catch (e) {
        if (!(e instanceof DocumentError)) throw e; // DecryptionFailed rejects the batch
      }
      if (p !== null) decoded.set(hex(ch.id), p);
    }
    const res = this.tree.add(raws);
    if (this.am !== null && res.attached.length > 0) {
      const items: [Change, ChangePayload][] = [];
      for (const c of res.attached) {
        const p = decoded.get(hex(c.id));
        if (p === undefined) {
          this.seen.add(hex(c.id));
          this.quarantine(c, "DocumentError: malformed change payload");
          continue;
        }
        this.amHeads.set(hex(c.id), p.amHeads);
        items.push([c, p]);
      }
      this.apply(items);
      this.cursor = this.tree.size;
    }
    return res;
  }

  // --- reading -------------------------------------------------------------------------------
  /** The Automerge document (materialised on first use; read-only: edit with change()). */
  get doc(): A.Doc<T> {
    return this.ensure();
  }

  private amHeadsAt(treeHeads: readonly Uint8Array[]): string[] {
    const out = new Set<string>();
    for (const h of treeHeads) {
      const ch = this.tree.get(h);
      if (ch === undefined) throw new DocumentError(`unknown tree head ${hex(h).slice(0, 16)}…`);
      if (!this.amHeads.has(hex(h))) this.payload(ch);
      for (const a of this.amHeads.get(hex(h)) ?? []) out.add(hex(a));
    }
    return [...out].sort();
  }

  /** The whole document as JSON values, at current or past tree heads (Python `to_json`). */
  toJSON(heads?: readonly Uint8Array[]): unknown {
    const doc = this.ensure();
    return renderJson(heads === undefined ? doc : A.view(doc, this.amHeadsAt(heads)));
  }

  /** JSON value at `path` (null if absent). */
  get(path: readonly (string | number)[]): unknown {
    let cur: unknown = this.ensure();
    for (const k of path) {
      if (cur === null || typeof cur !== "object") return null;
      cur = (cur as Record<string | number, unknown>)[k];
      if (cur === undefined) return null;
    }
    return renderJson(cur);
  }

  automergeHeads(): string[] {
    return A.getHeads(this.ensure());
  }

  /** Automerge's own save(): a standard .automerge file. */
  saveAutomerge(): Uint8Array {
    return A.save(this.ensure());
  }
}

/** The Automerge heads before `later` (hash, deps) were made (Python `_heads_without`). */
function headsWithout(final: readonly Uint8Array[], later: readonly { hash: Uint8Array; deps: Uint8Array[] }[]): Uint8Array[] {
  const gone = new Set(later.map((l) => hex(l.hash)));
  const out = new Set(final.map(hex).filter((h) => !gone.has(h)));
  for (const l of later) for (const d of l.deps) if (!gone.has(hex(d))) out.add(hex(d));
  return [...out].sort().map(unhex);
}
