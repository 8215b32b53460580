/**
 * File storage for Node (not in the browser bundle): one directory per device.
 *
 *   <root>/meta/<key>.json                    small JSON values (written to a temp file, renamed)
 *   <root>/spaces/<space>/header              the signed space header (temp file, renamed)
 *   <root>/spaces/<space>/acl.log             ACL records, append-only
 *   <root>/spaces/<space>/trees/<tree>.log    one tree's changes, append-only
 *
 * A log is a sequence of batches, one per add call: `u32 length | 16-byte BLAKE2b of body |
 * body`, body = `(u32 length | raw)*`. A batch is appended and fsynced in one write, so a call
 * is all-or-nothing: after a crash a torn or garbled last batch fails its length or hash, is
 * ignored, and is cut off before the next append. Names are percent-encoded (space ids hold
 * dots; tree ids are hex). Operations run one at a time (a promise queue), so concurrent callers
 * never interleave appends.
 */
import { blake2b } from "@noble/hashes/blake2.js";
import { mkdir, open, readdir, readFile, rename, rm, stat, truncate } from "node:fs/promises";
import { join } from "node:path";
import { contentId } from "../codec.js";
import { type Item, type Storage, StorageError } from "./types.js";

const enc = (s: string): string => encodeURIComponent(s).replace(/\./g, "%2E");
const dec = (s: string): string => decodeURIComponent(s);

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

interface LogState {
  ids: Set<string>;
  raws: Uint8Array[];
  /** bytes of complete batches; anything after is a torn tail */
  valid: number;
  size: number;
}

/** Parse a log; stops at the first incomplete or garbled batch. */
export function parseLog(data: Uint8Array): { raws: Uint8Array[]; valid: number } {
  const raws: Uint8Array[] = [];
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let off = 0;
  while (off + 20 <= data.length) {
    const len = dv.getUint32(off);
    if (off + 20 + len > data.length) break;
    const body = data.subarray(off + 20, off + 20 + len);
    const sum = blake2b(body, { dkLen: 16 });
    if (!sum.every((x, i) => x === data[off + 4 + i])) break;
    const batch: Uint8Array[] = [];
    let p = 0;
    let ok = true;
    while (p < body.length) {
      if (p + 4 > body.length) { ok = false; break; }
      const n = new DataView(body.buffer, body.byteOffset + p, 4).getUint32(0);
      if (p + 4 + n > body.length) { ok = false; break; }
      batch.push(Uint8Array.from(body.subarray(p + 4, p + 4 + n)));
      p += 4 + n;
    }
    if (!ok) break;
    raws.push(...batch);
    off += 20 + len;
  }
  return { raws, valid: off };
}

function frame(raws: readonly Uint8Array[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const r of raws) parts.push(u32(r.length), r);
  const bodyLen = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(20 + bodyLen);
  let o = 20;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  out.set(u32(bodyLen), 0);
  out.set(blake2b(out.subarray(20), { dkLen: 16 }), 4);
  return out;
}

export class FileStorage implements Storage {
  private queue: Promise<unknown> = Promise.resolve();
  private readonly logs = new Map<string, LogState>();

  private constructor(readonly root: string) {}

  static async open(root: string): Promise<FileStorage> {
    await mkdir(join(root, "meta"), { recursive: true });
    await mkdir(join(root, "spaces"), { recursive: true });
    return new FileStorage(root);
  }

  private run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private spaceDir(spaceId: string): string {
    return join(this.root, "spaces", enc(spaceId));
  }

  private async writeAtomic(path: string, data: Uint8Array | string): Promise<void> {
    const tmp = `${path}.tmp`;
    const fh = await open(tmp, "w");
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  }

  private async log(path: string): Promise<LogState> {
    let st = this.logs.get(path);
    if (st !== undefined) return st;
    let data: Uint8Array;
    try {
      data = await readFile(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new StorageError(`cannot read ${path}: ${String(e)}`);
      data = new Uint8Array(0);
    }
    const { raws, valid } = parseLog(data);
    const ids = new Set(raws.map((r) => Array.from(contentId(r), (x) => x.toString(16).padStart(2, "0")).join("")));
    st = { ids, raws, valid, size: data.length };
    this.logs.set(path, st);
    return st;
  }

  private async append(dir: string, path: string, items: readonly Item[]): Promise<void> {
    const st = await this.log(path);
    const fresh: Item[] = [];
    const batchIds = new Set<string>();
    for (const it of items) {
      if (st.ids.has(it.id) || batchIds.has(it.id)) continue;
      batchIds.add(it.id);
      fresh.push(it);
    }
    if (fresh.length === 0) return;
    await mkdir(dir, { recursive: true });
    if (st.size > st.valid) await truncate(path, st.valid); // cut a torn tail first
    const data = frame(fresh.map((f) => f.raw));
    const fh = await open(path, "a");
    try {
      await fh.write(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    st.valid += data.length;
    st.size = st.valid;
    for (const f of fresh) {
      st.ids.add(f.id);
      st.raws.push(Uint8Array.from(f.raw));
    }
  }

  putSpace(spaceId: string, header: Uint8Array): Promise<void> {
    return this.run(async () => {
      await mkdir(this.spaceDir(spaceId), { recursive: true });
      await this.writeAtomic(join(this.spaceDir(spaceId), "header"), header);
    });
  }

  getSpace(spaceId: string): Promise<Uint8Array | undefined> {
    return this.run(async () => {
      try {
        return new Uint8Array(await readFile(join(this.spaceDir(spaceId), "header")));
      } catch {
        return undefined;
      }
    });
  }

  listSpaces(): Promise<string[]> {
    return this.run(async () => {
      const out: string[] = [];
      for (const name of await readdir(join(this.root, "spaces"))) {
        try {
          await stat(join(this.root, "spaces", name, "header"));
          out.push(dec(name));
        } catch { /* no header yet: not a space */ }
      }
      return out.sort();
    });
  }

  deleteSpace(spaceId: string): Promise<void> {
    return this.run(async () => {
      const dir = this.spaceDir(spaceId);
      for (const k of [...this.logs.keys()]) if (k.startsWith(dir)) this.logs.delete(k);
      await rm(dir, { recursive: true, force: true });
    });
  }

  addAclRecords(spaceId: string, items: readonly Item[]): Promise<void> {
    const dir = this.spaceDir(spaceId);
    return this.run(() => this.append(dir, join(dir, "acl.log"), items));
  }

  aclRecords(spaceId: string): Promise<Uint8Array[]> {
    return this.run(async () => (await this.log(join(this.spaceDir(spaceId), "acl.log"))).raws.map((r) => Uint8Array.from(r)));
  }

  addChanges(spaceId: string, treeId: string, items: readonly Item[]): Promise<void> {
    const dir = join(this.spaceDir(spaceId), "trees");
    return this.run(() => this.append(dir, join(dir, `${enc(treeId)}.log`), items));
  }

  changes(spaceId: string, treeId: string): Promise<Uint8Array[]> {
    return this.run(async () => (await this.log(join(this.spaceDir(spaceId), "trees", `${enc(treeId)}.log`))).raws.map((r) => Uint8Array.from(r)));
  }

  listTrees(spaceId: string): Promise<string[]> {
    return this.run(async () => {
      try {
        return (await readdir(join(this.spaceDir(spaceId), "trees"))).filter((n) => n.endsWith(".log")).map((n) => dec(n.slice(0, -4))).sort();
      } catch {
        return [];
      }
    });
  }

  getMeta(key: string): Promise<unknown> {
    return this.run(async () => {
      try {
        return JSON.parse(await readFile(join(this.root, "meta", `${enc(key)}.json`), "utf8")) as unknown;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw new StorageError(`cannot read meta ${key}: ${String(e)}`);
      }
    });
  }

  putMeta(key: string, value: unknown): Promise<void> {
    return this.run(() => this.writeAtomic(join(this.root, "meta", `${enc(key)}.json`), JSON.stringify(value)));
  }

  close(): Promise<void> {
    return this.run(() => Promise.resolve());
  }
}

