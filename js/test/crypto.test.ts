/**
 * Keys, ids, signatures, sealed boxes, read keys and certificates, cross-checked against the
 * Python implementation run in a child process on the same inputs.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  accountFromPhrase,
  accountId,
  decodeKey,
  DeviceCertificate,
  DeviceKey,
  newRecoveryPhrase,
  normalizePhrase,
  parseHash,
  peerId,
  ReadKey,
  seal,
  shortHash,
  unseal,
  verify,
  x25519Public,
  AccountKey,
} from "../src/crypto/index.js";
import { BadCertificate, BadId, BadRecoveryPhrase, BadSignature, DecryptionFailed } from "../src/errors.js";
import { hex, pythonJson, unhex, utf8 } from "./helpers.js";

const PHRASE =
  "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

const PY_DERIVE = `
import json, sys
from p2psync.crypto.keys import account_from_phrase, DeviceKey, x25519_public
from p2psync.crypto.ids import short_hash
args = json.load(sys.stdin)
out = []
for phrase, index in args:
    k = account_from_phrase(phrase, index)
    out.append({"seed": k.seed.hex(), "public": k.public.hex(), "id": k.id,
                "x_priv": k.x25519_private().hex(), "x_pub": x25519_public(k.public).hex(),
                "sig": k.sign("test-domain", b"hello").hex(),
                "peer": DeviceKey(k.seed).id, "short": short_hash(k.public)})
print(json.dumps(out))
`;

test("account keys from a recovery phrase match Python's derivation (SLIP-0010 m/44'/7337'/i')", () => {
  const fresh = newRecoveryPhrase(24);
  const cases: [string, number][] = [
    [PHRASE, 0],
    [PHRASE, 3],
    ["  ABANDON abandon\tabandon abandon abandon abandon abandon abandon abandon abandon abandon about ", 0],
    [fresh, 0],
    [newRecoveryPhrase(12), 7],
  ];
  const py = pythonJson(PY_DERIVE, cases) as Record<string, string>[];
  cases.forEach(([phrase, index], i) => {
    const k = accountFromPhrase(phrase, index);
    const p = py[i]!;
    assert.equal(hex(k.seed), p.seed, `seed #${i}`);
    assert.equal(hex(k.public), p.public);
    assert.equal(k.id, p.id);
    assert.equal(hex(k.x25519Private()), p.x_priv);
    assert.equal(hex(x25519Public(k.public)), p.x_pub);
    // Ed25519 is deterministic: the same key signs the same message to the same bytes.
    assert.equal(hex(k.sign("test-domain", utf8("hello"))), p.sig);
    assert.equal(new DeviceKey(k.seed).id, p.peer);
    assert.equal(shortHash(k.public), p.short);
    assert.deepEqual(parseHash(p.short!), k.public);
    assert.deepEqual(decodeKey("a", p.id!), k.public);
    assert.deepEqual(decodeKey("p", p.peer!), k.public);
  });
});

test("recovery phrases: unknown words and bad checksums are refused", () => {
  assert.throws(() => normalizePhrase(PHRASE.replace("about", "abound")), BadRecoveryPhrase);
  assert.throws(() => normalizePhrase(PHRASE.replace("about", "zzzz")), /unknown word/);
  assert.throws(() => normalizePhrase("abandon abandon about"), BadRecoveryPhrase);
  assert.equal(normalizePhrase(PHRASE.toUpperCase()), PHRASE);
});

test("ids: a kind mix-up or a typo fails the checksum", () => {
  const k = DeviceKey.generate();
  assert.throws(() => decodeKey("a", "a" + k.id.slice(1)), /bad checksum/);
  assert.throws(() => decodeKey("a", k.id), BadId);
  const typo = k.id.slice(0, 10) + (k.id[10] === "a" ? "b" : "a") + k.id.slice(11);
  assert.throws(() => decodeKey("p", typo), BadId);
  assert.throws(() => decodeKey("p", "p!!!"), /not valid base32/);
  assert.throws(() => parseHash("aaaa"), /not a 32-byte/);
  assert.equal(peerId(k.public), k.id);
  assert.equal(accountId(k.public)[0], "a");
});

test("signatures cross-verify both ways and are domain-separated", () => {
  const k = AccountKey.generate();
  const sig = k.sign("acl", utf8("data"));
  verify(k.public, "acl", utf8("data"), sig);
  assert.throws(() => { verify(k.public, "tree", utf8("data"), sig); }, BadSignature);
  assert.throws(() => { verify(k.public, "acl", utf8("datb"), sig); }, BadSignature);
  assert.throws(() => { verify(k.public, "acl", utf8("data"), sig.subarray(1)); }, BadSignature);
  const py = pythonJson(`
import json, sys
from p2psync.crypto.keys import AccountKey, verify
from p2psync.errors import BadSignature
a = json.load(sys.stdin)
pub, sig = bytes.fromhex(a["pub"]), bytes.fromhex(a["sig"])
verify(pub, "acl", b"data", sig)
try:
    verify(pub, "tree", b"data", sig); ok_other = True
except BadSignature: ok_other = False
k = AccountKey(bytes(range(32)))
print(json.dumps({"ok_other": ok_other, "pub": k.public.hex(), "sig": k.sign("acl", b"py").hex()}))`,
  { pub: hex(k.public), sig: hex(sig) }) as { ok_other: boolean; pub: string; sig: string };
  assert.equal(py.ok_other, false);
  verify(unhex(py.pub), "acl", utf8("py"), unhex(py.sig));
});

test("sealed boxes open across implementations (libsodium crypto_box_seal format)", () => {
  const mine = AccountKey.generate();
  const toPython = seal(utf8("secret for python"), unhex(pythonJson(`
import json
from p2psync.crypto.keys import AccountKey
print(json.dumps(AccountKey(bytes([7]*32)).public.hex()))`) as string));
  const py = pythonJson(`
import json, sys
from p2psync.crypto.box import seal, unseal
from p2psync.crypto.keys import AccountKey
a = json.load(sys.stdin)
opened = unseal(bytes.fromhex(a["ct"]), AccountKey(bytes([7]*32)))
print(json.dumps({"opened": opened.decode(), "sealed": seal(b"secret for js", bytes.fromhex(a["pub"])).hex()}))`,
  { ct: hex(toPython), pub: hex(mine.public) }) as { opened: string; sealed: string };
  assert.equal(py.opened, "secret for python");
  assert.equal(new TextDecoder().decode(unseal(unhex(py.sealed), mine)), "secret for js");
  assert.throws(() => unseal(unhex(py.sealed), AccountKey.generate()), DecryptionFailed);
  const tampered = unhex(py.sealed);
  tampered[40]! ^= 1;
  assert.throws(() => unseal(tampered, mine), DecryptionFailed);
  assert.throws(() => unseal(new Uint8Array(10), mine), DecryptionFailed);
});

test("read keys: XChaCha20-Poly1305 ciphertexts decrypt across implementations, AAD bound", () => {
  const key = ReadKey.generate();
  const ct = key.encrypt(utf8("payload"), utf8("aad"));
  const py = pythonJson(`
import json, sys
from p2psync.crypto.box import ReadKey
from p2psync.errors import DecryptionFailed
a = json.load(sys.stdin)
k = ReadKey(bytes.fromhex(a["key"]))
pt = k.decrypt(bytes.fromhex(a["ct"]), b"aad").decode()
try:
    k.decrypt(bytes.fromhex(a["ct"]), b"other"); moved = True
except DecryptionFailed: moved = False
print(json.dumps({"pt": pt, "moved": moved, "ct": k.encrypt(b"from python", b"ctx").hex()}))`,
  { key: hex(key.key), ct: hex(ct) }) as { pt: string; moved: boolean; ct: string };
  assert.equal(py.pt, "payload");
  assert.equal(py.moved, false);
  assert.equal(new TextDecoder().decode(key.decrypt(unhex(py.ct), utf8("ctx"))), "from python");
  assert.throws(() => key.decrypt(unhex(py.ct), utf8("ctx2")), DecryptionFailed);
  assert.throws(() => key.decrypt(new Uint8Array(39)), /too short/);
});

test("device certificates: byte-identical to Python's for the same inputs, verified both ways", () => {
  const account = accountFromPhrase(PHRASE);
  const device = new DeviceKey(new Uint8Array(32).fill(9));
  const cert = DeviceCertificate.issue(account, device, { issuedAt: 1_700_000_000, expiresAt: 1_900_000_000 });
  const py = pythonJson(`
import json, sys
from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.keys import account_from_phrase, DeviceKey
a = json.load(sys.stdin)
acc = account_from_phrase(a["phrase"])
c = DeviceCertificate.issue(acc, DeviceKey(bytes([9]*32)), issued_at=1_700_000_000, expires_at=1_900_000_000)
v = DeviceCertificate.verify(bytes.fromhex(a["raw"]), now=1_800_000_000)
print(json.dumps({"raw": c.raw.hex(), "peer": v.peer_id, "account": v.account_id}))`,
  { phrase: PHRASE, raw: hex(cert.raw) }) as { raw: string; peer: string; account: string };
  assert.equal(hex(cert.raw), py.raw);
  assert.equal(py.peer, device.id);
  assert.equal(py.account, account.id);
  const back = DeviceCertificate.verify(unhex(py.raw), 1_800_000_000);
  assert.equal(back.peerId, device.id);
  assert.throws(() => DeviceCertificate.verify(cert.raw, 2_000_000_000), /expired/);
  const forged = Uint8Array.from(cert.raw);
  forged[10]! ^= 1;
  assert.throws(() => DeviceCertificate.verify(forged, 1_800_000_000), BadCertificate);
  assert.throws(() => DeviceCertificate.verify(new Uint8Array(600)), /malformed/);
});
