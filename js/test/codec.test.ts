/**
 * Canonical msgpack against the Python codec: the same values encode to the same bytes, and
 * every input Python refuses (or accepts) the TypeScript decoder refuses (or accepts) too.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { contentId, pack, readArrayHeader, readInt, Reader, unpack, unpackBounded, type Value } from "../src/codec.js";
import { DecodeError, UnsupportedVersion } from "../src/errors.js";
import { hex, pythonJson, unhex, utf8 } from "./helpers.js";

/** Tagged JSON form shared with the Python side: ints as strings, bytes as hex. */
type Tagged = null | boolean | { i: string } | { f: number } | { s: string } | { b: string } | Tagged[];

function tag(v: Value): Tagged {
  if (v === null || typeof v === "boolean") return v;
  if (typeof v === "bigint") return { i: v.toString() };
  if (typeof v === "number") return Number.isInteger(v) ? { i: String(v) } : { f: v };
  if (typeof v === "string") return { s: v };
  if (v instanceof Uint8Array) return { b: hex(v) };
  if (Array.isArray(v)) return v.map(tag);
  throw new Error("maps are not used in these tests");
}

const PY_TAG = `
import json, sys
from p2psync.codec import pack, unpack
from p2psync.errors import DecodeError
def untag(t):
    if t is None or isinstance(t, bool): return t
    if isinstance(t, list): return [untag(x) for x in t]
    if 'i' in t: return int(t['i'])
    if 'f' in t: return float(t['f'])
    if 's' in t: return t['s']
    return bytes.fromhex(t['b'])
def tag(v):
    if v is None or isinstance(v, bool): return v
    if isinstance(v, int): return {'i': str(v)}
    if isinstance(v, float): return {'f': v}
    if isinstance(v, str): return {'s': v}
    if isinstance(v, bytes): return {'b': v.hex()}
    if isinstance(v, list): return [tag(x) for x in v]
    if isinstance(v, dict): return {'m': len(v)}
    raise TypeError(type(v))
`;

const VALUES: Value[] = [
  0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER, 2n ** 63n, 2n ** 64n - 1n,
  -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, Number.MIN_SAFE_INTEGER, -(2n ** 63n),
  true, false, null, "", "a", "é€😀", "x".repeat(31), "x".repeat(32), "x".repeat(255), "x".repeat(256), "x".repeat(65536),
  new Uint8Array(0), new Uint8Array(255), new Uint8Array(256), new Uint8Array(65536),
  [], [1, [2, [3, []]]], Array.from({ length: 15 }, (_, i) => i), Array.from({ length: 16 }, (_, i) => i),
  Array.from({ length: 65536 }, () => 0), 1.5, -0.25,
  [1, utf8("body"), "text", null, true, [new Uint8Array([1, 2, 3])]],
];

test("pack: the same bytes as Python's pack for every kind of value", () => {
  const pyHex = pythonJson(PY_TAG + "print(json.dumps([pack(untag(t)).hex() for t in json.load(sys.stdin)]))",
    VALUES.map(tag)) as string[];
  VALUES.forEach((v, i) => {
    assert.equal(hex(pack(v)), pyHex[i], `value #${i}`);
  });
});

test("pack: small bigints take the smallest header; unsafe integral numbers and odd types are refused", () => {
  assert.equal(hex(pack(5n)), "05");
  assert.equal(hex(pack(2n ** 40n)), "cf0000010000000000");
  assert.throws(() => pack(2 ** 60), DecodeError);
  assert.throws(() => pack(2n ** 64n), DecodeError);
  assert.throws(() => pack(-(2n ** 63n) - 1n), DecodeError);
  assert.throws(() => pack(undefined), DecodeError);
  assert.throws(() => pack(new Map()), DecodeError);
  assert.throws(() => pack(new Date()), DecodeError);
  assert.throws(() => pack("\ud800"), DecodeError);
});

/** Inputs on the edge of what Python's decoder accepts; the verdicts must agree. */
const RAW_CASES: string[] = [
  "c0", "c1", "c2", "c3", "00", "7f", "ff", "e0", "cd0001", "cf0000000000000001", "d3ffffffffffffffff",
  "cf8000000000000000", "d38000000000000000", "ca00000000", "cb3ff8000000000000",
  "a0", "a161", "a1ff", "a2c3a9", "a3eda080", "d90161", "da000161", "db0000000161", "c40101", "c5000101", "c600000001ff",
  "90", "9101", "dc000101", "dd0000000101", "c0c0", "9102", "92", "a2", "c4", "c402", "cd00",
  "80", "81a16101", "810102", "81c0c0", "81c4016102", "8190c0", "81a161", "de0001a16101",
  "d40100", "d50100ff", "c70100ff", "c6ffffffff",
  // non-canonical forms (valid msgpack, refused by the canonical rule) and their canonical twins
  "cc05", "cc80", "cd00ff", "cd0100", "ce0000ffff", "ce00010000", "cf00000000ffffffff", "cf0000000100000000",
  "d005", "d0e0", "d0df", "d1ffff", "d1ff7f", "d1ff80", "d2ffff8000", "d2ffff7fff", "d3ffffffff80000000", "d3ffffffff7fffffff",
  "d90161", "d91f" + "61".repeat(31), "d920" + "61".repeat(32), "da000161", "da00ff" + "61".repeat(255), "db000000ff" + "61".repeat(255),
  "c5000161", "c500ff" + "00".repeat(255), "c50100" + "00".repeat(256), "c600000001ff",
  "dc000101", "dc000f" + "00".repeat(15), "dc0010" + "00".repeat(16), "dd0000000101",
  "de0001a16101", "82a16101a16102", "82a16101a16202", "ca3fc00000",
  "dc0002" + "c40161c440" + "00".repeat(64),
  "91".repeat(1024) + "c0", "91".repeat(1025) + "c0",
  "dc4000" + "90".repeat(16384), "dc4001" + "90".repeat(16385), "dc3fff" + "90".repeat(16383),
];

test("unpack: accepts and refuses exactly what Python's unpack does, canonical rule included", () => {
  const py = pythonJson(PY_TAG + `
import inspect
from p2psync.codec import unpack_bounded
lenient = 'canonical' in inspect.signature(unpack_bounded).parameters
out = []
for h in json.load(sys.stdin):
    raw = bytes.fromhex(h)
    try: v = unpack_bounded(raw, canonical=False) if lenient else unpack(raw)
    except DecodeError as e:
        out.append({'err': str(e)})
        continue
    canon = pack(v) == raw  # the spec's rule: the bytes are exactly pack() of the value
    try: out.append({'ok': tag(v), 'canon': canon})
    except RecursionError: out.append({'deep': True, 'canon': canon})
print(json.dumps(out))`, RAW_CASES) as ({ ok: Tagged; canon: boolean } | { err: string } | { deep: true; canon: boolean })[];
  RAW_CASES.forEach((h, i) => {
    const expected = py[i]!;
    const raw = unhex(h);
    const label = `case ${h.length > 40 ? h.slice(0, 40) + "…" : h}`;
    if ("err" in expected) {
      assert.throws(() => unpack(raw, { canonical: false }), DecodeError, `${label}: Python refused (${expected.err})`);
      assert.throws(() => unpack(raw), DecodeError, label);
      return;
    }
    if (h === "81c4016102") {
      // bytes map keys: Python accepts, this decoder refuses (documented; no record has maps)
      assert.throws(() => unpack(raw, { canonical: false }), DecodeError, label);
      return;
    }
    if (expected.canon) assert.doesNotThrow(() => unpack(raw), label);
    else assert.throws(() => unpack(raw), /not canonical/, `${label}: not pack(value)`);
    const lenient = unpack(raw, { canonical: false });
    if ("deep" in expected || h.startsWith("8") || h.startsWith("de")) return;
    const ok = expected.ok;
    if (ok !== null && typeof ok === "object" && "f" in ok) {
      // JS has one number type: a float that happens to be integral reads back as that number
      assert.equal(lenient, ok.f, label);
      return;
    }
    assert.deepEqual(tag(lenient), ok, label);
  });
});

test("unpack: the container cap is enforced while scanning, before building", () => {
  const many = new Uint8Array(5 + 200000);
  many.set([0xdd, 0x00, 0x03, 0x0d, 0x40]); // array32 of 200000 empty arrays
  many.fill(0x90, 5);
  assert.throws(() => unpackBounded(many), /more than 16384 nested arrays/);
  assert.throws(() => unpackBounded(unhex("93909090"), { maxContainers: 3 }), /more than 3/);
  assert.deepEqual(unpackBounded(unhex("939090c0"), { maxContainers: 3 }), [[], [], null]);
  assert.throws(() => unpackBounded(unhex("93010203"), { maxArray: 2 }), DecodeError);
  assert.throws(() => unpack(new Uint8Array(11), { maxSize: 10 }), /exceeds the 10-byte limit/);
});

test("contentId is BLAKE2b-256 of the raw bytes, as in Python", () => {
  const raw = pack([1, utf8("x")]);
  const py = pythonJson("import json,sys\nfrom p2psync.codec import content_id\nprint(json.dumps(content_id(bytes.fromhex(json.load(sys.stdin))).hex()))", hex(raw));
  assert.equal(hex(contentId(raw)), py);
});

test("readArrayHeader / readInt read envelope prefixes", () => {
  assert.deepEqual(readArrayHeader(unhex("93"), 0, "t"), [3, 1]);
  assert.deepEqual(readArrayHeader(unhex("dc0100"), 0, "t"), [256, 3]);
  assert.throws(() => readArrayHeader(unhex("dc01"), 0, "t"), DecodeError);
  assert.throws(() => readArrayHeader(unhex("c0"), 0, "t"), DecodeError);
  assert.deepEqual(readInt(unhex("ff"), 0, "t"), [-1, 1]);
  assert.deepEqual(readInt(unhex("d1ff00"), 0, "t"), [-256, 3]);
  assert.deepEqual(readInt(unhex("cfffffffffffffffff"), 0, "t"), [2n ** 64n - 1n, 9]);
  assert.throws(() => readInt(unhex("a0"), 0, "t"), DecodeError);
});

test("Reader checks types, sizes, versions and trailing fields", () => {
  const r = new Reader([1, utf8("ab"), "t", true, null, [utf8("x")]], "demo");
  assert.equal(r.version([1]), 1);
  assert.deepEqual(r.blob("b", { size: 2 }), utf8("ab"));
  assert.equal(r.text("t", 1), "t");
  assert.equal(r.boolean("f"), true);
  assert.equal(r.optionalBlob("o"), null);
  assert.equal(r.blobList("l", { maxItems: 1 }).length, 1);
  r.end();
  assert.throws(() => new Reader([2], "v").version([1]), UnsupportedVersion);
  assert.throws(() => new Reader([true], "v").integer("i"), /expected int, got bool/);
  assert.throws(() => new Reader([2n ** 63n], "v").integer("i"), /out of range/);
  assert.equal(new Reader([2n ** 63n], "v").bigInteger("i"), 2n ** 63n);
  assert.throws(() => new Reader([utf8("abc")], "v").blob("b", { size: 2 }), /expected 2 bytes/);
  assert.throws(() => { new Reader([1, 2], "v").end(); }, /2 unexpected trailing/);
  assert.throws(() => new Reader([], "v").integer("i"), /missing field/);
  assert.throws(() => new Reader(null, "v"), /expected an array/);
  assert.throws(() => new Reader(["😀😀"], "v").text("t", 1), /2 chars exceeds 1/);
});
