/**
 * Device certificates (p2psync/crypto/cert.py): the account key vouches for a device key.
 * Raw form: makeSigned(account, "device-cert", pack([1, account_pub, device_pub, issued_at,
 * expires_at])) with expires_at 0 = never. Sent in the Noise handshake payload.
 */
import { pack, Reader, unpack } from "../codec.js";
import { BadCertificate, BadSignature, DecodeError } from "../errors.js";
import { accountId, peerId } from "./ids.js";
import { type AccountKey, verify } from "./keys.js";
import { makeSigned, openSigned } from "./signed.js";

export const CERT_DOMAIN = "device-cert";
const VERSION = 1;
export const MAX_CERT_SIZE = 512;

export class DeviceCertificate {
  constructor(
    readonly account: Uint8Array,
    readonly device: Uint8Array,
    readonly issuedAt: number,
    readonly expiresAt: number,
    readonly raw: Uint8Array,
  ) {}

  get accountId(): string {
    return accountId(this.account);
  }

  get peerId(): string {
    return peerId(this.device);
  }

  static issue(account: AccountKey, device: Uint8Array | { public: Uint8Array }, opts: { issuedAt?: number; expiresAt?: number } = {}): DeviceCertificate {
    const devicePub = device instanceof Uint8Array ? device : device.public;
    const now = opts.issuedAt ?? Math.floor(Date.now() / 1000);
    const expires = opts.expiresAt ?? 0;
    const body = pack([VERSION, account.public, devicePub, now, expires]);
    return new DeviceCertificate(account.public, devicePub, now, expires, makeSigned(account, CERT_DOMAIN, body));
  }

  /** Parse and check a certificate; throws BadCertificate with the reason. */
  static verify(raw: Uint8Array, now?: number): DeviceCertificate {
    let body: Uint8Array, sig: Uint8Array, account: Uint8Array, device: Uint8Array, issued: number, expires: number;
    try {
      [body, sig] = openSigned(raw, "device certificate", MAX_CERT_SIZE);
      const r = new Reader(unpack(body, { what: "certificate body" }), "certificate body");
      r.version([VERSION]);
      account = r.blob("account", { size: 32 });
      device = r.blob("device", { size: 32 });
      issued = r.integer("issued_at", 0);
      expires = r.integer("expires_at", 0);
      r.end();
    } catch (exc) {
      if (exc instanceof DecodeError) throw new BadCertificate(`malformed device certificate: ${exc.message}`);
      throw exc;
    }
    try {
      verify(account, CERT_DOMAIN, body, sig);
    } catch (exc) {
      if (exc instanceof BadSignature) throw new BadCertificate("device certificate is not signed by its account");
      throw exc;
    }
    const t = now ?? Date.now() / 1000;
    if (expires && t > expires) throw new BadCertificate("device certificate has expired");
    return new DeviceCertificate(account, device, issued, expires, Uint8Array.from(raw));
  }
}
