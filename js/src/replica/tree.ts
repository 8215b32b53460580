/**
 * The object tree (p2psync/replica/tree.py, reduced): an in-memory DAG of verified tree
 * changes. A change attaches once its signature verifies, it belongs to this tree and space, and
 * all its parents are attached; until then it waits and attaches when the missing parent comes.
 * An optional gate (the ACL) may refuse a change or hold it until its ACL head is known.
 *
 * Not ported yet: persistence hooks, the waiting-set bound/eviction. The tree never decrypts, and
 * since change format 2 the snapshot flag is sealed with the content, so finding the latest
 * snapshot is the document's job (it holds the read key), as in Python.
 */
import { compareBytes } from "../hashes.js";
import { type Change, InvalidChange, ReplicaError, verifyChange } from "./change.js";

export class WrongTree extends ReplicaError {}

/** What the ACL side provides to the tree (replica/acl_gate.py). */
export interface AclGate {
  knowsHead(aclHead: Uint8Array): boolean;
  /** Throw (AccessDenied, UnknownReadKey, …) if `author` may not write this change. */
  checkChange(author: Uint8Array, aclHead: Uint8Array, readKeyId: Uint8Array, prevs: readonly Change[]): void;
}

const key = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

export interface AddResult {
  attached: Change[];
  waiting: Uint8Array[];
  duplicates: Uint8Array[];
  heads: Uint8Array[];
}

export class ObjectTree {
  readonly root: Change;
  private readonly changes = new Map<string, Change>();
  private readonly order: Change[] = [];
  private readonly headSet = new Map<string, Uint8Array>();
  private readonly waiting = new Map<string, Change>();

  constructor(
    readonly spaceId: string,
    root: Change,
    readonly gate: AclGate | null = null,
  ) {
    if (!root.isRoot) throw new InvalidChange("a tree starts from a root change (one without a tree id)");
    if (root.spaceId !== spaceId) throw new WrongTree(`root change belongs to space ${root.spaceId}, not ${spaceId}`);
    if (gate !== null) {
      if (!gate.knowsHead(root.aclHead)) throw new InvalidChange("root change names an ACL head this replica does not know");
      gate.checkChange(root.author, root.aclHead, root.readKeyId, []);
    }
    this.root = root;
    this.attach(root);
  }

  /** Verify a received root change and start a tree from it. */
  static fromRoot(spaceId: string, rawRoot: Uint8Array, gate: AclGate | null = null): ObjectTree {
    return new ObjectTree(spaceId, verifyChange(rawRoot), gate);
  }

  get id(): Uint8Array {
    return this.root.id;
  }

  /** Current heads, sorted (equal trees give equal lists). */
  get heads(): Uint8Array[] {
    return [...this.headSet.values()].sort(compareBytes);
  }

  get size(): number {
    return this.order.length;
  }

  has(id: Uint8Array): boolean {
    return this.changes.has(key(id));
  }

  get(id: Uint8Array): Change | undefined {
    return this.changes.get(key(id));
  }

  get waitingIds(): Uint8Array[] {
    return [...this.waiting.values()].map((c) => c.id);
  }

  /** All attached changes in attach order (a topological order, root first). */
  attachedChanges(): Change[] {
    return [...this.order];
  }

  private attach(ch: Change): void {
    this.changes.set(key(ch.id), ch);
    this.order.push(ch);
    for (const p of ch.prevIds) this.headSet.delete(key(p));
    this.headSet.set(key(ch.id), ch.id);
  }

  private structuralCheck(ch: Change): void {
    if (ch.isRoot) throw new WrongTree("a second root change cannot join an existing tree");
    if (compareBytes(ch.tree, this.id) !== 0) throw new WrongTree(`change ${key(ch.id).slice(0, 16)}… belongs to another tree`);
    if (ch.spaceId !== this.spaceId) throw new WrongTree(`change belongs to space ${ch.spaceId}, not ${this.spaceId}`);
  }

  /**
   * Verify and add raw changes (any order). All-or-nothing for the verification: a bad change
   * throws before anything is attached.
   */
  add(raws: readonly Uint8Array[]): AddResult {
    const res: AddResult = { attached: [], waiting: [], duplicates: [], heads: [] };
    const fresh: Change[] = [];
    for (const raw of raws) {
      const ch = verifyChange(raw);
      this.structuralCheck(ch);
      if (this.changes.has(key(ch.id)) || this.waiting.has(key(ch.id)) || fresh.some((f) => compareBytes(f.id, ch.id) === 0)) {
        res.duplicates.push(ch.id);
        continue;
      }
      fresh.push(ch);
    }
    for (const ch of fresh) this.waiting.set(key(ch.id), ch);
    let progress = true;
    while (progress) {
      progress = false;
      for (const [k, ch] of this.waiting) {
        if (!ch.prevIds.every((p) => this.changes.has(key(p)))) continue;
        if (this.gate !== null) {
          if (!this.gate.knowsHead(ch.aclHead)) continue;
          try {
            this.gate.checkChange(ch.author, ch.aclHead, ch.readKeyId, ch.prevIds.map((p) => this.changes.get(key(p))!));
          } catch (e) {
            this.waiting.delete(k); // refused for good: do not retry it on every later add
            throw e;
          }
        }
        this.waiting.delete(k);
        this.attach(ch);
        res.attached.push(ch);
        progress = true;
      }
    }
    res.waiting = this.waitingIds;
    res.heads = this.heads;
    return res;
  }

  /** Deterministic topological order: among ready changes the smallest id goes first (Kahn). */
  replayOrder(): Change[] {
    const children = new Map<string, Change[]>();
    const pending = new Map<string, number>();
    for (const ch of this.order) {
      pending.set(key(ch.id), ch.prevIds.length);
      for (const p of ch.prevIds) {
        const list = children.get(key(p)) ?? [];
        list.push(ch);
        children.set(key(p), list);
      }
    }
    const ready: Change[] = [this.root];
    const out: Change[] = [];
    while (ready.length > 0) {
      ready.sort((a, b) => compareBytes(a.id, b.id));
      const ch = ready.shift()!;
      out.push(ch);
      for (const c of children.get(key(ch.id)) ?? []) {
        const n = pending.get(key(c.id))! - 1;
        pending.set(key(c.id), n);
        if (n === 0) ready.push(c);
      }
    }
    return out;
  }
}
