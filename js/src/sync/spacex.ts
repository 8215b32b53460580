/**
 * Shared-space discovery between two authenticated peers (p2psync/sync/spacex.py, sans-IO).
 *
 * Each side sends a fresh 32-byte nonce (SPACE_HELLO), then one token per space it holds
 * (SPACE_TOKENS), padded with random tokens to a bucket size and sorted:
 *
 *   token = HMAC-SHA256(K_space, "p2psync/spacex/v1" || sender || receiver || sender_nonce
 *                       || receiver_nonce || channel_binding)[:16]
 *
 * The engine keys tokens with `headerExchangeKey` (HKDF-SHA256 over the full signed space
 * header), so members and replicators match and nobody else can. A match proves only that the
 * peer holds the header: the ACL is still checked before anything is served.
 */
import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, randomBytes } from "@noble/hashes/utils.js";
import { equalBytes } from "../crypto/keys.js";
import { compareBytes } from "../hashes.js";
import { ProtocolError } from "./errors.js";
import { MAX_SPACE_ID_LEN, type Message, MsgType, NONCE_SIZE, type SpaceHello, type SpaceTokens, TOKEN_BUCKETS, TOKEN_SIZE } from "./messages.js";

const enc = new TextEncoder();
const LABEL = enc.encode("p2psync/spacex/v1");
const KDF_SALT = enc.encode("p2psync space exchange key v1");
const HEADER_KDF_SALT = enc.encode("p2psync space exchange key from header v1");
export const KEY_SIZE = 32;

/** The exchange key derived from a space's first read key (the spec's original form). */
export function exchangeKey(firstReadKey: Uint8Array, spaceId: string): Uint8Array {
  if (firstReadKey.length !== 32) throw new RangeError("read keys are 32 bytes");
  return hkdf(sha256, firstReadKey, KDF_SALT, enc.encode(spaceId), KEY_SIZE);
}

/** The exchange key the engine uses: HKDF-SHA256 of the full signed space header. */
export function headerExchangeKey(headerRaw: Uint8Array, spaceId: string): Uint8Array {
  return hkdf(sha256, headerRaw, HEADER_KDF_SALT, enc.encode(spaceId), KEY_SIZE);
}

/** The token `sender` sends to `receiver` for the space whose exchange key is `key`. */
export function spaceToken(key: Uint8Array, sender: Uint8Array, receiver: Uint8Array, senderNonce: Uint8Array,
  receiverNonce: Uint8Array, channelBinding: Uint8Array = new Uint8Array(0)): Uint8Array {
  const mac = hmac.create(sha256, key);
  for (const part of [LABEL, sender, receiver, senderNonce, receiverNonce, channelBinding]) mac.update(part);
  return mac.digest().subarray(0, TOKEN_SIZE);
}

/** The bucket a list of n real tokens is padded to. */
export function paddedSize(n: number): number {
  for (const b of TOKEN_BUCKETS) if (n <= b) return b;
  throw new ProtocolError(`${n} spaces exceed one exchange (max ${TOKEN_BUCKETS.at(-1)})`);
}

/** One side of a space exchange: `start()` → send; feed each peer message to `receive()` and
 * send what it returns; when `done`, `shared` holds the space ids both sides hold. */
export class SpaceExchange {
  private nonce: Uint8Array | null = null;
  private remoteNonce: Uint8Array | null = null;
  shared: Set<string> | null = null;
  private readonly keys: Map<string, Uint8Array>;

  constructor(
    readonly localPeer: Uint8Array,
    readonly remotePeer: Uint8Array,
    spaceKeys: ReadonlyMap<string, Uint8Array>,
    private readonly binding: Uint8Array = new Uint8Array(0),
    private readonly random: (n: number) => Uint8Array = randomBytes,
  ) {
    if (localPeer.length !== 32 || remotePeer.length !== 32) throw new RangeError("peer keys are 32 bytes");
    if (equalBytes(localPeer, remotePeer)) throw new ProtocolError("space exchange with ourselves");
    for (const [sid, key] of spaceKeys) {
      if (key.length !== KEY_SIZE || sid.length === 0 || sid.length > MAX_SPACE_ID_LEN) throw new RangeError(`bad exchange key or space id for ${sid}`);
    }
    paddedSize(spaceKeys.size);
    this.keys = new Map(spaceKeys);
  }

  get done(): boolean {
    return this.shared !== null;
  }

  /** Our nonce (after start). */
  get myNonce(): Uint8Array | null {
    return this.nonce;
  }

  start(): SpaceHello {
    if (this.nonce !== null) throw new ProtocolError("space exchange already started");
    this.nonce = this.random(NONCE_SIZE);
    return { type: MsgType.SPACE_HELLO, nonce: this.nonce };
  }

  /** Take one message from the peer; returns the messages to send back. */
  receive(message: Message): Message[] {
    if (this.nonce === null) throw new ProtocolError("space exchange not started");
    if (message.type === MsgType.SPACE_HELLO) {
      if (this.remoteNonce !== null) throw new ProtocolError("second space hello from the peer");
      if (equalBytes(message.nonce, this.nonce)) throw new ProtocolError("peer echoed our nonce");
      this.remoteNonce = message.nonce;
      return [this.ourTokens()];
    }
    if (message.type === MsgType.SPACE_TOKENS) {
      if (this.remoteNonce === null) throw new ProtocolError("space tokens before the peer's hello");
      if (this.shared !== null) throw new ProtocolError("second token list from the peer");
      const expected = new Map<string, string>();
      for (const [sid, key] of this.keys) {
        expected.set(bytesToHex(spaceToken(key, this.remotePeer, this.localPeer, this.remoteNonce, this.nonce, this.binding)), sid);
      }
      this.shared = new Set();
      for (const t of message.tokens) {
        const sid = expected.get(bytesToHex(t));
        if (sid !== undefined) this.shared.add(sid);
      }
      return [];
    }
    throw new ProtocolError(`unexpected ${MsgType[message.type]} during space exchange`);
  }

  private ourTokens(): SpaceTokens {
    const tokens = [...this.keys.values()].map((key) =>
      spaceToken(key, this.localPeer, this.remotePeer, this.nonce!, this.remoteNonce!, this.binding));
    const pad = paddedSize(tokens.length) - tokens.length;
    for (let i = 0; i < pad; i++) tokens.push(this.random(TOKEN_SIZE));
    tokens.sort(compareBytes);
    return { type: MsgType.SPACE_TOKENS, tokens };
  }
}
