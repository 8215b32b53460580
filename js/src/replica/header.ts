/**
 * Space header and space id (p2psync/replica/header.py). The header is signed by the owner:
 * body = pack([1, owner, created, seed16, replication_key, space_type]). The space id is
 * "<base32 content id of the signed header>.<replication key in base36>", so anyone can check a
 * header against its id without keys.
 */
import { randomBytes } from "@noble/hashes/utils.js";
import { contentId, pack, Reader, unpack } from "../codec.js";
import { accountId, shortHash } from "../crypto/ids.js";
import { type SigningKey, verify } from "../crypto/keys.js";
import { makeSigned, openSigned } from "../crypto/signed.js";
import { BadSignature, DecodeError, P2PSyncError } from "../errors.js";

export class BadSpaceHeader extends P2PSyncError {}

export const HEADER_DOMAIN = "space-header";
const VERSION = 1;
export const MAX_HEADER_SIZE = 1024;
const B36 = "0123456789abcdefghijklmnopqrstuvwxyz";

export function base36(n: bigint): string {
  let out = "";
  do {
    out = B36[Number(n % 36n)]! + out;
    n /= 36n;
  } while (n > 0n);
  return out;
}

export function spaceIdOf(rawHeader: Uint8Array, replicationKey: bigint): string {
  return `${shortHash(contentId(rawHeader))}.${base36(replicationKey)}`;
}

export class SpaceHeader {
  constructor(
    readonly owner: Uint8Array,
    readonly created: number,
    readonly seed: Uint8Array,
    readonly replicationKey: bigint,
    readonly spaceType: string,
    readonly raw: Uint8Array,
  ) {}

  get spaceId(): string {
    return spaceIdOf(this.raw, this.replicationKey);
  }

  get ownerId(): string {
    return accountId(this.owner);
  }

  static create(owner: SigningKey, spaceType = "default", o: { created?: number; seed?: Uint8Array; replicationKey?: bigint } = {}): SpaceHeader {
    const created = o.created ?? Math.floor(Date.now() / 1000);
    const seed = o.seed ?? randomBytes(16);
    const rkey = o.replicationKey ?? new DataView(randomBytes(8).buffer).getBigUint64(0);
    const body = pack([VERSION, owner.public, created, seed, rkey, spaceType]);
    return new SpaceHeader(owner.public, created, seed, rkey, spaceType, makeSigned(owner, HEADER_DOMAIN, body));
  }

  /** Parse and verify a signed header (and its id, when one is expected). */
  static verify(raw: Uint8Array, expectedSpaceId?: string): SpaceHeader {
    let body: Uint8Array, sig: Uint8Array, header: SpaceHeader;
    try {
      [body, sig] = openSigned(raw, "space header", MAX_HEADER_SIZE);
      const r = new Reader(unpack(body, { what: "space header body" }), "space header body");
      r.version([VERSION]);
      const owner = r.blob("owner", { size: 32 });
      const created = r.integer("created", 0);
      const seed = r.blob("seed", { size: 16 });
      const rkey = r.bigInteger("replication_key", 0n, (1n << 64n) - 1n);
      const stype = r.text("space_type", 64);
      r.end();
      header = new SpaceHeader(owner, created, seed, rkey, stype, Uint8Array.from(raw));
    } catch (exc) {
      if (exc instanceof DecodeError) throw new BadSpaceHeader(`malformed space header: ${exc.message}`);
      throw exc;
    }
    try {
      verify(header.owner, HEADER_DOMAIN, body, sig);
    } catch (exc) {
      if (exc instanceof BadSignature) throw new BadSpaceHeader("space header is not signed by its owner");
      throw exc;
    }
    if (expectedSpaceId !== undefined && header.spaceId !== expectedSpaceId) {
      throw new BadSpaceHeader(`space header does not match space id ${expectedSpaceId} (it hashes to ${header.spaceId})`);
    }
    return header;
  }
}
