/**
 * Sans-IO authenticated handshake (p2psync/transport/handshake.py): Noise XX whose payloads
 * carry a Hello.
 *
 * Message 1 (initiator → responder) is a bare ephemeral key. Message 2 carries the responder's
 * Hello, message 3 the initiator's. A responder may defer its certificate (it then travels in
 * the ACCEPT record): the initiator checks the Noise static key against `expectedPeer` before
 * revealing itself, and verifies the certificate later with checkDeferredCertificate. Each side
 * checks the other's certificate, that its device key is the one the Noise static key proved,
 * the expected peer id and the protocol version.
 */
import { blake2b } from "@noble/hashes/blake2.js";
import { codePoints, pack, Reader, unpack } from "../codec.js";
import { DeviceCertificate } from "../crypto/cert.js";
import { decodeKey } from "../crypto/ids.js";
import { type DeviceKey, equalBytes, x25519Public } from "../crypto/keys.js";
import {
  BadCertificate,
  BadId,
  BadSignature,
  DecodeError,
  HandshakeError,
  IncompatibleVersion,
  PeerCertificateInvalid,
  UnexpectedPeer,
} from "../errors.js";
import { type CipherState, HandshakeState, KeyPair, Suite } from "./noise.js";

/** Version of the wire protocol and record formats (p2psync.PROTOCOL_VERSION). */
export const PROTOCOL_VERSION = 1;
export const MIN_PROTOCOL_VERSION = 1;
export const HELLO_FORMAT = 1;
export const MAX_HELLO_SIZE = 2048;
export const MAX_FEATURES = 32;
/** Domain separation for everything derived from the Noise chaining key. */
export const PROLOGUE_PREFIX = new TextEncoder().encode("p2psync/noise/1\0");

/** What a side accepts from its peer; announced in the Hello. */
export class Limits {
  constructor(
    readonly maxStreams = 64,
    readonly streamWindow = 1 << 20,
    readonly maxMessage = 1 << 20,
  ) {
    if (maxStreams < 1 || maxStreams > 1 << 16) throw new Error("maxStreams must be within 1..65536");
    if (!(1024 <= maxMessage && maxMessage <= streamWindow && streamWindow <= 1 << 30)) {
      throw new Error("need 1 KiB <= maxMessage <= streamWindow <= 1 GiB (a whole message must fit in the window)");
    }
  }
}

/** Handshake payload: pack([1, max_version, min_version, certificate, features, max_streams, stream_window, max_message]). */
export class Hello {
  constructor(
    readonly maxVersion: number,
    readonly minVersion: number,
    readonly certificate: Uint8Array,
    readonly features: readonly string[] = [],
    readonly limits: Limits = new Limits(),
  ) {}

  encode(): Uint8Array {
    const l = this.limits;
    return pack([HELLO_FORMAT, this.maxVersion, this.minVersion, this.certificate, [...this.features], l.maxStreams, l.streamWindow, l.maxMessage]);
  }

  /** Parse a peer's Hello strictly; any defect is a HandshakeError. */
  static decode(raw: Uint8Array): Hello {
    try {
      const r = new Reader(unpack(raw, { maxSize: MAX_HELLO_SIZE, what: "handshake hello" }), "handshake hello");
      r.version([HELLO_FORMAT]);
      const maxV = r.integer("max_version", 0, 2 ** 32);
      const minV = r.integer("min_version", 0, maxV);
      const cert = r.blob("certificate", { maxLen: 1024 });
      const feats = r.array("features", MAX_FEATURES);
      if (!feats.every((f) => typeof f === "string" && f.length > 0 && codePoints(f) <= 64)) {
        throw new DecodeError("handshake hello.features: expected short strings");
      }
      const limits = new Limits(r.integer("max_streams", 1, 1 << 16), r.integer("stream_window", 1024, 1 << 30), r.integer("max_message", 1024, 1 << 30));
      r.end();
      return new Hello(maxV, minV, cert, feats as string[], limits);
    } catch (exc) {
      if (exc instanceof DecodeError || (exc instanceof Error && !(exc instanceof HandshakeError))) {
        throw new HandshakeError(`peer sent a malformed handshake payload: ${exc.message}`);
      }
      throw exc;
    }
  }
}

/** The authenticated outcome: who the peer is and the keys of the session. */
export interface HandshakeResult {
  /** null only on an initiator whose responder deferred it (until ACCEPT brings it). */
  certificate: DeviceCertificate | null;
  version: number;
  features: ReadonlySet<string>;
  remoteLimits: Limits;
  sendCipher: CipherState;
  recvCipher: CipherState;
  handshakeHash: Uint8Array;
  /** Secret for per-stream keys (third HKDF output of the final chaining key). */
  streamSecret: Uint8Array;
}

/** The highest version both speak, or IncompatibleVersion saying who must upgrade. */
export function negotiateVersion(local: Hello, remote: Hello): number {
  const version = Math.min(local.maxVersion, remote.maxVersion);
  if (version < Math.max(local.minVersion, remote.minVersion)) {
    const older = remote.maxVersion < local.minVersion ? "the peer" : "this device";
    throw new IncompatibleVersion(
      `peer speaks protocol versions ${remote.minVersion}..${remote.maxVersion}, this device ${local.minVersion}..${local.maxVersion}: update p2psync on ${older}`,
    );
  }
  return version;
}

export interface SecureHandshakeOptions {
  initiator: boolean;
  deviceKey: DeviceKey;
  certificate: DeviceCertificate;
  binding?: Uint8Array;
  expectedPeer?: string | null;
  limits?: Limits;
  features?: readonly string[];
  maxVersion?: number;
  minVersion?: number;
  suite?: Suite;
  deferCertificate?: boolean;
  /** Tests only: a fixed ephemeral key (golden transcripts). */
  ephemeral?: KeyPair;
}

/** Drives Noise XX with Hello payloads; feed it peer messages, send what it returns. */
export class SecureHandshake {
  readonly initiator: boolean;
  readonly expectedPeer: string | null;
  readonly certificate: DeviceCertificate;
  readonly hello: Hello;
  deferred: boolean;
  readonly noise: HandshakeState;
  result: HandshakeResult | null = null;
  private remoteHello: Hello | null = null;
  private remoteCert: DeviceCertificate | null = null;

  constructor(o: SecureHandshakeOptions) {
    if (!equalBytes(o.certificate.device, o.deviceKey.public)) throw new Error("certificate is for another device key than the one given");
    this.initiator = o.initiator;
    this.expectedPeer = o.expectedPeer ?? null;
    this.certificate = o.certificate;
    this.hello = new Hello(o.maxVersion ?? PROTOCOL_VERSION, o.minVersion ?? MIN_PROTOCOL_VERSION, o.certificate.raw, o.features ?? [], o.limits ?? new Limits());
    this.deferred = (o.deferCertificate ?? false) && !o.initiator;
    const binding = o.binding ?? new Uint8Array(0);
    const prologue = new Uint8Array(PROLOGUE_PREFIX.length + binding.length);
    prologue.set(PROLOGUE_PREFIX);
    prologue.set(binding, PROLOGUE_PREFIX.length);
    this.noise = new HandshakeState({
      initiator: o.initiator,
      static: KeyPair.fromPrivate(o.deviceKey.x25519Private()),
      prologue,
      suite: o.suite ?? new Suite(),
      ephemeral: o.ephemeral ?? null,
    });
  }

  get complete(): boolean {
    return this.result !== null;
  }

  /** Initiator only: the first message (the bare ephemeral key). */
  start(): Uint8Array {
    if (!this.initiator) throw new HandshakeError("responder cannot start the handshake");
    return this.noise.writeMessage(new Uint8Array(0));
  }

  /** Process a peer message; return our next message, or null when nothing is owed. */
  receive(message: Uint8Array): Uint8Array | null {
    const payload = this.noise.readMessage(message);
    const step = this.noise.step;
    if (step === 1) {
      if (payload.length > 0) throw new HandshakeError("first handshake message must carry no payload");
      let hello = this.hello;
      if (this.deferred) hello = new Hello(hello.maxVersion, hello.minVersion, new Uint8Array(0), hello.features, hello.limits);
      return this.noise.writeMessage(hello.encode());
    }
    this.checkPeer(payload);
    if (step === 2) {
      const out = this.noise.writeMessage(this.hello.encode());
      this.finish();
      return out;
    }
    this.finish();
    return null;
  }

  private checkPeer(payload: Uint8Array): void {
    const hello = Hello.decode(payload);
    if (hello.certificate.length === 0 && this.initiator) {
      this.checkExpectedStatic();
      negotiateVersion(this.hello, hello);
      this.deferred = true;
      this.remoteHello = hello;
      return;
    }
    this.remoteCert = this.verifyCertificate(hello.certificate);
    negotiateVersion(this.hello, hello);
    this.remoteHello = hello;
  }

  private checkExpectedStatic(): void {
    if (this.expectedPeer === null) return;
    let stat: Uint8Array;
    try {
      stat = x25519Public(decodeKey("p", this.expectedPeer));
    } catch (exc) {
      if (exc instanceof BadId || exc instanceof BadSignature) throw new UnexpectedPeer(`expected peer id ${JSON.stringify(this.expectedPeer)} is invalid`);
      throw exc;
    }
    if (!equalBytes(stat, this.noise.remoteStatic ?? new Uint8Array(0))) {
      throw new UnexpectedPeer(`expected device ${this.expectedPeer} but reached another device key; the address may belong to another device now`);
    }
  }

  /** Initiator: verify the certificate a deferring responder sent with ACCEPT. */
  checkDeferredCertificate(raw: Uint8Array): DeviceCertificate {
    if (raw.length === 0) throw new PeerCertificateInvalid("peer accepted without sending its certificate");
    const cert = this.verifyCertificate(raw);
    this.remoteCert = cert;
    return cert;
  }

  private verifyCertificate(raw: Uint8Array): DeviceCertificate {
    let cert: DeviceCertificate;
    try {
      cert = DeviceCertificate.verify(raw);
    } catch (exc) {
      if (exc instanceof BadCertificate) throw new PeerCertificateInvalid(`peer's device certificate was refused: ${exc.message}`);
      throw exc;
    }
    let certStatic: Uint8Array;
    try {
      certStatic = x25519Public(cert.device);
    } catch {
      throw new PeerCertificateInvalid("peer's certificate names an invalid device key");
    }
    if (!equalBytes(certStatic, this.noise.remoteStatic ?? new Uint8Array(0))) {
      throw new PeerCertificateInvalid(`peer presented the certificate of ${cert.peerId} but does not hold that device key (copied certificate or impersonation attempt)`);
    }
    if (this.expectedPeer !== null && cert.peerId !== this.expectedPeer) {
      throw new UnexpectedPeer(`expected device ${this.expectedPeer} but reached ${cert.peerId} (account ${cert.accountId}); the address may belong to another device now`);
    }
    return cert;
  }

  private finish(): void {
    const n = this.noise;
    const remote = this.remoteHello!;
    const extra = n.ss.hkdf(new Uint8Array(0), 3)[2]!;
    const local = new Set(this.hello.features);
    this.result = {
      certificate: this.remoteCert,
      version: negotiateVersion(this.hello, remote),
      features: new Set(remote.features.filter((f) => local.has(f))),
      remoteLimits: remote.limits,
      sendCipher: n.sendCipher!,
      recvCipher: n.recvCipher!,
      handshakeHash: n.handshakeHash,
      streamSecret: blake2b(extra, { dkLen: 32, personalization: padPerson("p2psync-streams") }),
    };
  }
}

/** hashlib.blake2b pads `person` with zeros to 16 bytes; noble wants exactly 16. */
function padPerson(s: string): Uint8Array {
  const out = new Uint8Array(16);
  out.set(new TextEncoder().encode(s));
  return out;
}
