"""Generate the golden test vectors in tests/vectors/*.json (docs/protocol.md section 18).

Deterministic: every key, nonce, ephemeral key and timestamp comes from a labelled seed, so
running this twice without a code change writes byte-identical files. The vectors are the
contract for every other implementation; ``tests/test_vectors.py`` checks them against this
implementation and fails when the wire format changes until they are deliberately regenerated:

    python3 scripts/gen_vectors.py            # rewrite tests/vectors/
    python3 scripts/gen_vectors.py --check    # exit 1 if a file would change

Value encoding inside the JSON (``tests/vectors/README.md``): byte strings are lowercase hex;
msgpack values in codec cases are tagged (``{"int": "123"}`` with the integer as a decimal
string, ``{"str": ...}``, ``{"bin": hex}``, ``{"bool": b}``, ``{"nil": null}``,
``{"array": [...]}``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import nacl.bindings
from automerge import core as am_core
from mnemonic import Mnemonic

from p2psync.backup.receipt import Receipt, sign_receipt
from p2psync.codec import content_id, pack, unpack
from p2psync.crypto import box
from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.ids import account_id, peer_id, short_hash
from p2psync.crypto.keys import (
    AccountKey,
    DeviceKey,
    SigningKey,
    _signed_message,
    account_from_phrase,
    normalize_phrase,
    x25519_public,
)
from p2psync.crypto.signed import open_signed
from p2psync.replica import acl_records
from p2psync.replica import automerge_adapter as ad
from p2psync.replica import change as change_mod
from p2psync.replica.acl import Acl, InviteCode, wrap_aad
from p2psync.replica.acl_records import (
    Role,
    SpaceMeta,
    decode_record,
    join_proof_message,
    meta_aad,
)
from p2psync.replica.change import LEGACY_VERSION, PAYLOAD_AAD_PREFIX, build_change
from p2psync.replica.document import actor_for, encode_payload
from p2psync.replica.header import SpaceHeader
from p2psync.replica.tree import ObjectTree, heads_digest
from p2psync.sync import messages as m
from p2psync.sync.bootstrap import BOOTSTRAP_DOMAIN, bootstrap_message
from p2psync.sync.ldiff import HeadSyncSession, LDiff, element_hash, heads_hash
from p2psync.sync.spacex import SpaceExchange, header_exchange_key, space_token
from p2psync.transport.framing import HEADER, RecordType, encode_record
from p2psync.transport.handshake import Hello, Limits, SecureHandshake
from p2psync.transport.noise import KeyPair

OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors"
FORMAT = 1
BASE_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z


# --- deterministic randomness --------------------------------------------------------------------
def seed(label: str, n: int = 32) -> bytes:
    """Fixed bytes named by ``label`` (BLAKE2b, so labels never collide)."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.blake2b(f"{label}/{i}".encode(), digest_size=64,
                               person=b"p2psync-vectors").digest()
        i += 1
    return out[:n]


class Drbg:
    """A labelled stream of fixed bytes standing in for os.urandom."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.n = 0

    def __call__(self, size: int) -> bytes:
        self.n += 1
        return seed(f"{self.label}#{self.n}", size)


class Clock:
    """Stands in for the ``time`` module where records take their timestamp from it."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        self.now += 1
        return self.now


@contextlib.contextmanager
def fixed(label: str) -> Iterator[None]:
    """Every random byte and clock read the record builders make comes from ``label``."""
    drbg = Drbg(label)
    clock = Clock(BASE_TIME)
    with mock.patch.object(box, "random_bytes", drbg), \
            mock.patch.object(SigningKey, "generate",
                              classmethod(lambda cls: cls(drbg(32)))), \
            mock.patch.object(acl_records, "time", clock), \
            mock.patch.object(change_mod, "time", clock):
        yield


def h(b: bytes | None) -> str | None:
    return None if b is None else bytes(b).hex()


def account(name: str) -> AccountKey:
    return AccountKey(seed(f"account/{name}"))


def device(name: str) -> DeviceKey:
    return DeviceKey(seed(f"device/{name}"))


def key_info(k: SigningKey, kind: str) -> dict[str, Any]:
    return {"seed": h(k.seed), "public": h(k.public),
            "id": account_id(k.public) if kind == "a" else peer_id(k.public),
            "x25519_private": h(k.x25519_private()), "x25519_public": h(x25519_public(k.public))}


# --- codec ---------------------------------------------------------------------------------------
def tag(v: Any) -> Any:
    if v is None:
        return {"nil": None}
    if isinstance(v, bool):
        return {"bool": v}
    if isinstance(v, int):
        return {"int": str(v)}
    if isinstance(v, str):
        return {"str": v}
    if isinstance(v, bytes):
        return {"bin": v.hex()}
    if isinstance(v, list):
        return {"array": [tag(x) for x in v]}
    raise TypeError(type(v))


def untag(t: Any) -> Any:
    (kind, v), = t.items()
    return {"nil": lambda: None, "bool": lambda: v, "int": lambda: int(v), "str": lambda: v,
            "bin": lambda: bytes.fromhex(v), "array": lambda: [untag(x) for x in v]}[kind]()


CODEC_VALUES: list[Any] = [
    None, False, True, 0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63,
    2**64 - 1, -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
    "", "a", "é€😀", "x" * 31, "x" * 32, "y" * 255, "y" * 256, b"", b"\x00", bytes(range(255)),
    bytes(256), [], [1, "a", b"a"], list(range(15)), list(range(16)), [[[]], [None, True]],
]

CODEC_REFUSALS: list[tuple[str, str]] = [
    ("uint8 holding a positive fixint", "cc05"),
    ("uint16 holding a value that fits uint8", "cd00ff"),
    ("uint32 holding a value that fits uint16", "ce0000ffff"),
    ("uint64 holding a value that fits uint32", "cf00000000ffffffff"),
    ("int8 holding a non-negative value", "d005"),
    ("int8 holding a negative fixint", "d0ff"),
    ("int16 holding a value that fits int8", "d1ff80"),
    ("int64 holding -1", "d3ffffffffffffffff"),
    ("str8 holding a string that fits fixstr", "d90161"),
    ("str16 holding a short string", "da000161"),
    ("bin16 holding 1 byte", "c5000161"),
    ("bin32 holding 1 byte", "c60000000161"),
    ("array16 holding 1 item", "dc000101"),
    ("array32 holding 1 item", "dd0000000101"),
    ("float32", "ca3fc00000"),
    ("map with a duplicate key", "82a16101a16102"),
    ("map with a non-string key", "810101"),
    ("ext type", "d40100"),
    ("trailing bytes after the value", "9100c0"),
    ("truncated array", "9201"),
    ("reserved byte 0xc1", "c1"),
    ("str holding invalid UTF-8", "a1ff"),
    ("empty input", ""),
]


def codec_vectors() -> dict[str, Any]:
    return {
        "about": "Canonical msgpack (docs/protocol.md section 2). 'encode': pack(value) must be "
                 "exactly 'hex', and decoding 'hex' must give 'value'. 'refuse': valid or "
                 "invalid msgpack that a record decoder must refuse (non-canonical forms, "
                 "trailing bytes, ext, bad UTF-8, truncation).",
        "format": FORMAT,
        "encode": [{"value": tag(v), "hex": pack(v).hex()} for v in CODEC_VALUES],
        "refuse": [{"why": why, "hex": raw} for why, raw in CODEC_REFUSALS],
    }


# --- ids and keys --------------------------------------------------------------------------------
def ids_vectors() -> dict[str, Any]:
    acc = account("alice")
    dev = device("alice-laptop")
    good_a = account_id(acc.public)
    flipped = good_a[:10] + ("a" if good_a[10] != "a" else "b") + good_a[11:]
    contents = [b"", b"abc", pack([1, b"x"])]
    heads = [seed("head/2"), seed("head/1"), seed("head/2")]
    return {
        "about": "Ids and hashes (section 3). key_ids: printable account ('a…') and peer ('p…') "
                 "ids of public keys. content_ids: BLAKE2b-256 of bytes and its printable form. "
                 "heads: heads_hash (head sync) and the tree's local heads digest of a head "
                 "list (duplicates ignored). element: the head-sync element hash (as 32 "
                 "big-endian bytes). bad_ids: strings that must be refused for that kind.",
        "format": FORMAT,
        "key_ids": [
            {"kind": "a", "public": h(acc.public), "id": good_a},
            {"kind": "p", "public": h(dev.public), "id": peer_id(dev.public)},
        ],
        "content_ids": [{"bytes": h(c), "id": h(content_id(c)), "printable":
                         short_hash(content_id(c))} for c in contents],
        "heads": {"heads": [h(x) for x in heads], "heads_hash": h(heads_hash(heads)),
                  "heads_digest": h(heads_digest(set(heads)))},
        "element": {"object_id": h(seed("object/1")), "heads_hash": h(heads_hash(heads)),
                    "element_hash": h(element_hash(seed("object/1"), heads_hash(heads))
                                      .to_bytes(32, "big"))},
        "bad_ids": [
            {"kind": "a", "id": flipped, "why": "bad checksum"},
            {"kind": "p", "id": good_a, "why": "account id where a peer id is expected"},
            {"kind": "a", "id": good_a[:-2], "why": "wrong length"},
        ],
    }


def keys_vectors() -> dict[str, Any]:
    mn = Mnemonic("english")
    phrases = [" ".join(["abandon"] * 11 + ["about"]),
               mn.to_mnemonic(seed("phrase/24", 32)),
               "  Legal WINNER thank year wave sausage worth useful legal winner thank yellow "]
    out = []
    for p in phrases:
        norm = normalize_phrase(p)
        entry: dict[str, Any] = {"phrase": p, "normalized": norm,
                                 "bip39_seed": h(mn.to_seed(norm, passphrase="")),
                                 "accounts": []}
        for index in (0, 1):
            k = account_from_phrase(p, index)
            entry["accounts"].append({"index": index, **key_info(k, "a")})
        out.append(entry)
    dev = device("alice-laptop")
    msg = b"hello"
    return {
        "about": "Keys (section 4). phrases: BIP39 phrase -> normalized form -> BIP39 seed -> "
                 "SLIP-0010 m/44'/7337'/index' Ed25519 seed -> public key, account id, X25519 "
                 "twins. bad_phrases must be refused. device: a device key. signature: "
                 "Ed25519 over 'p2psync/' + domain + '\\0' + data (signed_message shown).",
        "format": FORMAT,
        "phrases": out,
        "bad_phrases": [
            {"phrase": " ".join(["abandon"] * 12), "why": "checksum"},
            {"phrase": " ".join(["abandon"] * 11 + ["aboutt"]), "why": "unknown word"},
            {"phrase": " ".join(["abandon"] * 8 + ["about"]), "why": "word count"},
        ],
        "device": key_info(dev, "p"),
        "signature": {"key_seed": h(dev.seed), "public": h(dev.public), "domain": "tree-change",
                      "data": h(msg), "signed_message": h(_signed_message("tree-change", msg)),
                      "signature": h(dev.sign("tree-change", msg))},
    }


def certificates_vectors() -> dict[str, Any]:
    acc = account("alice")
    out = []
    for name, expires in (("alice-laptop", 0), ("alice-phone", BASE_TIME + 86400)):
        dev = device(name)
        cert = DeviceCertificate.issue(acc, dev, issued_at=BASE_TIME, expires_at=expires)
        body = pack([1, acc.public, dev.public, BASE_TIME, expires])
        out.append({"account_seed": h(acc.seed), "account": h(acc.public),
                    "device_seed": h(dev.seed), "device": h(dev.public),
                    "issued_at": BASE_TIME, "expires_at": expires, "body": h(body),
                    "raw": h(cert.raw), "id": h(content_id(cert.raw)),
                    "account_id": cert.account_id, "peer_id": cert.peer_id})
    good = bytes.fromhex(out[0]["raw"])
    bad_sig = good[:-1] + bytes([good[-1] ^ 1])
    other = DeviceCertificate.issue(account("mallory"), device("alice-laptop"),
                                    issued_at=BASE_TIME).raw
    forged = pack([pack([1, acc.public, device("alice-laptop").public, BASE_TIME, 0]),
                   open_signed(other, "x", 4096)[1]])
    longer = bytes.fromhex("dc0002") + good[1:]
    return {
        "about": "Device certificates (section 5). valid: raw = pack([body, sig]) with body = "
                 "pack([1, account, device, issued_at, expires_at]); verify at 'now'. refuse: "
                 "must not verify at 'now'.",
        "format": FORMAT,
        "now": BASE_TIME + 3600,
        "valid": out,
        "refuse": [
            {"why": "signature altered", "raw": h(bad_sig)},
            {"why": "signed by another account than the one named", "raw": h(forged)},
            {"why": "expired", "raw": out[1]["raw"], "now": BASE_TIME + 86401},
            {"why": "non-canonical envelope (array16 header)", "raw": h(longer)},
        ],
    }


def space_header() -> SpaceHeader:
    return SpaceHeader.create(account("alice"), created=BASE_TIME, seed=seed("header", 16),
                              replication_key=int.from_bytes(seed("rkey", 8), "big"))


def header_vectors() -> dict[str, Any]:
    hd = space_header()
    body = pack([1, hd.owner, hd.created, hd.seed, hd.replication_key, hd.space_type])
    return {
        "about": "Space header (section 7): body, signed raw, and the space id derived from "
                 "them.",
        "format": FORMAT,
        "owner_seed": h(account("alice").seed), "owner": h(hd.owner), "created": hd.created,
        "seed": h(hd.seed), "replication_key": str(hd.replication_key),
        "space_type": hd.space_type, "body": h(body), "raw": h(hd.raw),
        "header_id": h(content_id(hd.raw)), "space_id": hd.space_id,
    }


# --- ACL -----------------------------------------------------------------------------------------
PEOPLE = ("alice", "bob", "carol", "dave", "erin", "frank", "backup")


def record_json(raw: bytes) -> dict[str, Any]:
    rec = decode_record(raw)
    return {"id": h(rec.id), "kind": int(rec.kind), "name": rec.kind.name,
            "author": h(rec.author), "prev": [h(p) for p in rec.prev],
            "timestamp": rec.timestamp, "raw": h(raw)}


def state_json(acl: Acl) -> dict[str, Any]:
    st = acl.state
    return {
        "heads": [h(x) for x in acl.heads],
        "owner": h(st.owner),
        "members": {h(k): int(v) for k, v in sorted(st.members.items())},
        "replicators": sorted(h(x) for x in st.replicators),  # type: ignore[type-var]
        "invites": sorted(h(x) for x in st.invites),  # type: ignore[type-var]
        "requests": sorted(h(x) for x in st.requests),  # type: ignore[type-var]
        "departed": {h(k): h(v) for k, v in sorted(st.departed.items())},
        "skipped": sorted(h(x) for x in st.skipped),  # type: ignore[type-var]
        "tips": [h(x) for x in st.tips],
        "current_key_id": h(st.current_key_id),
        "rotation_needed": st.rotation_needed,
        "deleted_objects": sorted(h(x) for x in st.deleted),  # type: ignore[type-var]
        "space_deleted": h(st.space_deleted),
        "meta": h(st.meta),
    }


def acl_vectors() -> dict[str, Any]:
    sid = space_header().space_id
    p = {n: account(n) for n in PEOPLE}
    alice, bob, carol, dave, erin, frank = (p[n] for n in PEOPLE[:6])
    with fixed("acl/kinds"):
        acl = Acl.create(sid, alice)
        _, admin_code = acl.invite(alice, Role.ADMIN)                        # INVITE (approval)
        req = acl.request_join(bob, admin_code)                               # REQUEST_JOIN
        acl.accept(alice, decode_record(req).id, Role.ADMIN)                  # ACCEPT
        _, open_code = acl.invite(bob, Role.WRITER, anyone_can_join=True)     # INVITE (open)
        acl.join(carol, open_code)                                            # INVITE_JOIN
        _, r_code = acl.invite(bob, Role.READER, expires_at=BASE_TIME + 10**6)
        acl.accept(bob, decode_record(acl.request_join(dave, r_code)).id)
        _, x_code = acl.invite(bob, Role.READER)
        acl.decline(bob, decode_record(acl.request_join(erin, x_code)).id)    # DECLINE
        acl.revoke_invite(bob, x_code.invite_id)                              # REVOKE_INVITE
        acl.change_permission(bob, dave.public, Role.WRITER)                  # PERMISSION_CHANGE
        acl.add_replicator(bob, p["backup"].public)                           # ADD_REPLICATOR
        acl.rotate(bob)                                                       # ROTATE
        acl.delete_objects(carol, [seed("object/9"), seed("object/8")])       # DELETE_OBJECTS
        acl.leave(dave)                                                       # LEAVE
        acl.remove(alice, [carol.public])                                     # REMOVE
        acl.remove_replicator(bob, p["backup"].public)                        # REMOVE_REPLICATOR
        acl.transfer_ownership(alice, bob.public)                             # TRANSFER_OWNERSHIP
        # MERGE: two admins act concurrently on the same head, then one merges.
        fork = Acl.from_records(sid, acl.export())
        acl.invite(alice, Role.READER)
        fork.invite(bob, Role.WRITER)
        for raw in fork.export():
            acl.add(raw)
        acl.merge(bob)                                                        # MERGE
        meta_raw = acl.set_meta(bob, {"name": "Notes"})                       # SPACE_META
        acl.delete_space(bob)                                                 # DELETE_SPACE
        kinds_records = acl.export()
        kinds_state = state_json(acl)
        keys = {h(k): h(v.key) for k, v in sorted(acl.keys_of(bob).items())}

    # A replay with concurrent conflicts (docs/acl.md rules 1, 4, 6): from a common head, the
    # owner removes admin bob while bob removes writer carol; two admins lower and raise dave
    # concurrently; two removals of erin race.
    with fixed("acl/replay"):
        base = Acl.create(sid, alice)
        _, c1 = base.invite(alice, Role.ADMIN)
        base.accept(alice, decode_record(base.request_join(bob, c1)).id, Role.ADMIN)
        _, c1b = base.invite(alice, Role.ADMIN)
        base.accept(alice, decode_record(base.request_join(frank, c1b)).id, Role.ADMIN)
        _, c2 = base.invite(bob, Role.WRITER, anyone_can_join=True)
        base.join(carol, c2)
        base.join(dave, c2)
        base.join(erin, c2)
        common = base.export()
        a = Acl.from_records(sid, common)
        b = Acl.from_records(sid, common)
        c = Acl.from_records(sid, common)
        a.remove(alice, [bob.public])                 # owner removes admin bob ...
        a.remove(alice, [erin.public])                # ... and erin
        a.change_permission(alice, dave.public, Role.READER)  # lowest role wins over c's raise
        b.remove(bob, [carol.public])                 # ... while bob removes carol (vetoed)
        b.change_permission(bob, dave.public, Role.READER)
        c.change_permission(frank, dave.public, Role.READER)
        c.change_permission(frank, dave.public, Role.WRITER)  # raise, concurrent with alice
        c.remove(frank, [erin.public])                # a second, concurrent removal of erin
        extra = [r for x in (a, b, c) for r in x.export() if r not in set(common)]
        merged = Acl.from_records(sid, common + extra)
        replay_state = state_json(merged)
        replay_reasons = {h(k): v for k, v in sorted(merged.state.skipped.items())}

    # The kind-17 record's sealed name, re-derived with the nonce it carries (set_meta drew it
    # from the fixed DRBG), so another implementation can check the AEAD and AAD byte for byte.
    meta_rec = decode_record(meta_raw)
    assert isinstance(meta_rec.payload, SpaceMeta)
    meta_kid, meta_sealed = meta_rec.payload.key_id, meta_rec.payload.sealed
    meta_nonce, meta_plain = meta_sealed[:24], pack({"name": "Notes"})
    meta_aad_ = meta_aad(sid, meta_kid)
    assert meta_nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        meta_plain, meta_aad_, meta_nonce, bytes.fromhex(keys[h(meta_kid)])) == meta_sealed
    space_meta = {"record_id": h(meta_rec.id), "key_id": h(meta_kid), "name": "Notes",
                  "plaintext": h(meta_plain), "aad": h(meta_aad_), "nonce": h(meta_nonce),
                  "sealed": h(meta_sealed)}

    merge_raw = next(r for r in kinds_records if decode_record(r).kind.name == "MERGE")
    body = unpack(open_signed(merge_raw, "acl", 1 << 20)[0])
    unsorted = [*body[:2], body[2][::-1], *body[3:]]
    rooted = [body[0], body[1], body[2][:1], body[3], body[4], 0, [bytes(80)]]
    forged = [body[0], body[1], body[2], alice.public, *body[4:]]

    def signed(fields: list[Any], key: SigningKey = bob) -> str:
        b_ = pack(fields)
        return pack([b_, key.sign("acl-record", b_)]).hex()

    refuse = [
        {"why": "signature altered", "raw": h(merge_raw[:-1] + bytes([merge_raw[-1] ^ 1]))},
        {"why": "prev not sorted", "raw": signed(unsorted)},
        {"why": "root kind with a parent", "raw": signed(rooted)},
        {"why": "signed by someone else than the named author", "raw": signed(forged)},
        {"why": "signed under another domain", "raw": pack([
            pack(body), bob.sign("tree-change", pack(body))]).hex()},
        {"why": "non-canonical envelope (array16 header)",
         "raw": h(bytes.fromhex("dc0002") + merge_raw[1:])},
    ]
    return {
        "about": "ACL records (section 8). 'refuse': records that must not decode/verify. "
                 "'kinds': a space's records in admission order, "
                 "covering every kind, each with its decoded envelope fields, and the state "
                 "after replaying them ('read_keys': every read key id -> key, as bob holds "
                 "them; sealed keys open with the X25519 twins of 'accounts'; 'space_meta': "
                 "the SPACE_META record's sealed name = nonce || XChaCha20-Poly1305(pack("
                 "{'name': ...}), aad) under read key 'key_id'). 'replay': "
                 "records of three replicas that diverged from 'common' (owner alice removes "
                 "admin bob while bob removes carol: vetoed; alice lowers dave to reader while "
                 "admin frank raises him back: lowest role wins; alice and frank both remove "
                 "erin: the second is skipped, two key tips); any replica holding all of "
                 "them, in any order, must reach "
                 "'expected' ('skipped_reasons' are the reference's texts, informative).",
        "format": FORMAT,
        "space_id": sid,
        "accounts": {n: key_info(k, "a") for n, k in p.items()},
        "wrap_aad_example": {"old_key_id": h(seed("key")), "aad": h(wrap_aad(sid, seed("key")))},
        "kinds": {"records": [record_json(r) for r in kinds_records], "expected": kinds_state,
                  "read_keys": keys, "space_meta": space_meta},
        "refuse": refuse,
        "replay": {"common": [h(r) for r in common], "concurrent": [h(r) for r in extra],
                   "expected": replay_state, "skipped_reasons": replay_reasons},
    }


# --- tree ----------------------------------------------------------------------------------------
class _Gate:
    """Accepts every change: the tree vectors are about structure and encryption (the ACL
    write rule has its own vectors)."""

    def knows_head(self, acl_head: bytes) -> bool:
        return True

    def check_change(self, author: bytes, acl_head: bytes, read_key_id: bytes,
                     parent_acl_heads: Any) -> None:
        return None


def payload(heads: list[bytes], items: list[bytes]) -> bytes:
    return encode_payload(heads, items)


#: What each author does in the tree vector: (change, author, parents, snapshot, puts).
TREE_STEPS: list[tuple[str, str, list[str], bool, dict[str, Any]]] = [
    ("root", "alice", [], False, {"title": "shopping"}),
    ("a1", "alice", ["root"], False, {"milk": 2}),
    ("b1", "bob", ["root"], False, {"bread": "rye", "title": "groceries"}),
    ("a2", "alice", ["a1"], False, {"eggs": 12}),
    ("merge", "bob", ["a2", "b1"], False, {"done": False}),
    ("snap", "alice", ["merge"], True, {}),
    ("tail", "bob", ["snap"], False, {"done": True}),
]


def am_put(doc: am_core.Document, puts: dict[str, Any]) -> None:
    if not puts:
        return
    with doc.transaction() as tx:
        for k, v in puts.items():
            kind = (am_core.ScalarType.Boolean if isinstance(v, bool) else
                    am_core.ScalarType.Int if isinstance(v, int) else am_core.ScalarType.Str)
            tx.put(am_core.ROOT, k, kind, v)


def am_json(doc: am_core.Document) -> dict[str, Any]:
    out = {}
    for k in doc.keys(am_core.ROOT):
        got = doc.get(am_core.ROOT, k)
        assert got is not None
        out[k] = got[0][1]
    return out


def tree_vectors() -> dict[str, Any]:
    sid = space_header().space_id
    people = {"alice": account("alice"), "bob": account("bob")}
    laptop = seed("tree/device")
    with fixed("tree"):
        acl = Acl.create(sid, people["alice"])
        root_rec = acl.export()[0]
        kid = content_id(root_rec)
        key = acl.keys_of(people["alice"])[kid]
        docs = {n: ad.new_document(actor_for(k.public, laptop)) for n, k in people.items()}
        made: dict[str, Any] = {}
        plain: dict[str, bytes] = {}
        am_of: dict[str, list[bytes]] = {}  # change name -> its Automerge changes
        tree_id: bytes | None = None
        for n, (name, who, parents, snap, puts) in enumerate(TREE_STEPS):
            doc = docs[who]
            # The author's document holds exactly the change's causal past.
            past: list[str] = []
            stack = list(parents)
            while stack:
                q = stack.pop()
                if q not in past:
                    past.append(q)
                    stack.extend(TREE_STEPS[[s_[0] for s_ in TREE_STEPS].index(q)][2])
            ad.apply_changes(doc, [c for q in past for c in am_of[q]])
            before = ad.heads(doc)
            am_put(doc, puts)
            am_of[name] = ad.changes_since(doc, before)
            items = [ad.save(doc)] if snap else am_of[name]
            pt = payload(ad.heads(doc), items)
            ch = build_change(people[who], key, pt, space_id=sid, tree_id=tree_id,
                              prev_ids=[made[q].id for q in parents], acl_head=kid,
                              read_key_id=kid, snapshot=snap,
                              timestamp=BASE_TIME * 1000 + n)
            if tree_id is None:
                tree_id = ch.id
            made[name] = ch
            plain[name] = pt
        final = ad.new_document(bytes(16))
        ad.apply_changes(final, [c for name, *_ in TREE_STEPS for c in am_of[name]])
        document = am_json(final)
        steps = TREE_STEPS
        assert tree_id is not None
        tree = ObjectTree.from_root(sid, _Gate(), made["root"].raw)  # type: ignore[arg-type]
        tree.add([made[n].raw for n, *_ in steps[1:]])
        final_heads = sorted(ad.heads(final))
        # a change in the legacy format 1 (clear timestamp and snapshot flag): still read
        plain["legacy"] = payload([], [])
        made["legacy"] = build_change(
            people["bob"], key, plain["legacy"], space_id=sid, tree_id=tree_id,
            prev_ids=[made["tail"].id], acl_head=kid, read_key_id=kid,
            timestamp=BASE_TIME * 1000 + len(TREE_STEPS), version=LEGACY_VERSION)

    def change_vector(name: str) -> dict[str, Any]:
        ch = made[name]
        sealed = ch.open(key)
        return {
            "name": name, "id": h(ch.id), "raw": h(ch.raw), "body": h(ch.body),
            "header": h(ch.header), "signature": h(ch.signature), "payload": h(ch.payload),
            "nonce": h(ch.payload[:24]), "aad": h(PAYLOAD_AAD_PREFIX + ch.header),
            "sealed": h(key.decrypt(ch.payload, PAYLOAD_AAD_PREFIX + ch.header)),
            "plaintext": h(plain[name]),
            "fields": {"version": ch.version, "space_id": ch.space_id, "tree_id": h(ch.tree_id),
                       "prev_ids": [h(x) for x in ch.prev_ids], "acl_head": h(ch.acl_head),
                       "read_key_id": h(ch.read_key_id), "snapshot": sealed.snapshot,
                       "author": h(ch.author), "timestamp_ms": sealed.timestamp},
        }

    changes = [change_vector(name) for name, *_ in steps]
    tampered = bytearray(made["a1"].raw)
    tampered[-70] ^= 1  # inside the payload ciphertext: the signature no longer verifies
    return {
        "about": "A tree of signed, encrypted changes (section 9) with two authors, a merge "
                 "and a snapshot, in change format 2. Decrypt 'payload' (nonce = first 24 "
                 "bytes) with 'read_key' and aad = 'p2psync/tree-change-payload\\0' + header "
                 "to get 'sealed' = pack([timestamp_ms, snapshot, plaintext]) (the header holds "
                 "neither: 'fields' lists header and sealed values together); 'plaintext' = "
                 "(pack([1, sorted Automerge heads after the change, items]); items are real "
                 "Automerge changes, or one save() for the snapshot; Automerge actor = "
                 "BLAKE2b-128(person='p2psync-actor')(author || 'device')). Applying every "
                 "change's items gives 'document' (root map) at 'automerge_heads'. 'heads' "
                 "after adding all; 'replay_order' = Kahn, smallest "
                 "id first. 'refuse': raw changes that must not verify. 'legacy': a change "
                 "in format 1 (header [1, space_id, tree_id, prev_ids, acl_head, read_key_id, "
                 "snapshot, author, timestamp_ms], 'sealed' = 'plaintext') that must still "
                 "verify, decrypt and attach as a child of 'tail'.",
        "format": FORMAT,
        "space_id": sid,
        "acl_root": h(root_rec),
        "read_key_id": h(kid),
        "read_key": h(key.key),
        "authors": {n: key_info(k, "a") for n, k in people.items()},
        "tree_id": h(tree_id),
        "changes": changes,
        "heads": [h(x) for x in tree.heads],
        "device": h(laptop),
        "document": document,
        "automerge_heads": [h(x) for x in final_heads],
        "replay_order": [h(c.id) for c in tree.replay_order()],
        "legacy": change_vector("legacy"),
        "refuse": [
            {"why": "payload altered (signature fails)", "raw": h(bytes(tampered))},
            {"why": "non-canonical envelope (array16 header)",
             "raw": h(bytes.fromhex("dc0002") + made["a1"].raw[1:])},
        ],
    }


# --- handshake -----------------------------------------------------------------------------------
def handshake_vectors() -> dict[str, Any]:
    ia, ra = account("alice"), account("bob")
    idev, rdev = device("alice-laptop"), device("bob-phone")
    icert = DeviceCertificate.issue(ia, idev, issued_at=BASE_TIME)
    rcert = DeviceCertificate.issue(ra, rdev, issued_at=BASE_TIME)
    ie = KeyPair.from_private(seed("noise/initiator-ephemeral"))
    re_ = KeyPair.from_private(seed("noise/responder-ephemeral"))
    limits = Limits(max_streams=64, stream_window=16 << 20, max_message=m.MAX_MESSAGE_SIZE + 4096)
    init = SecureHandshake(initiator=True, device_key=idev, certificate=icert, binding=b"tcp",
                           expected_peer=rcert.peer_id, limits=limits, ephemeral=ie)
    resp = SecureHandshake(initiator=False, device_key=rdev, certificate=rcert, binding=b"tcp",
                           limits=limits, ephemeral=re_)
    m1 = init.start()
    m2 = resp.receive(m1)
    assert m2 is not None
    m3 = init.receive(m2)
    assert m3 is not None and resp.receive(m3) is None
    ir, rr = init.result, resp.result
    assert ir is not None and rr is not None and ir.handshake_hash == rr.handshake_hash

    def frame(body: bytes) -> str:
        return (HEADER.pack(len(body)) + body).hex()

    records = []
    accept = encode_record(RecordType.ACCEPT, 0)
    records.append(("responder", "ACCEPT", accept, rr.send_cipher.encrypt_with_ad(None, accept)))
    hello_i = m.encode(m.SpaceHello(seed("spacex/nonce-i")), 0)
    rec_i = encode_record(RecordType.DATA_END, 4, hello_i)
    records.append(("initiator", "DATA_END stream 4: SPACE_HELLO", rec_i,
                    ir.send_cipher.encrypt_with_ad(None, rec_i)))
    hello_r = m.encode(m.SpaceHello(seed("spacex/nonce-r")), 0)
    rec_r = encode_record(RecordType.DATA_END, 1, hello_r)
    records.append(("responder", "DATA_END stream 1: SPACE_HELLO", rec_r,
                    rr.send_cipher.encrypt_with_ad(None, rec_r)))
    credit = encode_record(RecordType.CREDIT, 4, (32 << 20).to_bytes(8, "big"))
    records.append(("responder", "CREDIT stream 4", credit,
                    rr.send_cipher.encrypt_with_ad(None, credit)))
    ping = encode_record(RecordType.PING, 0, bytes(range(8)))
    records.append(("initiator", "PING", ping, ir.send_cipher.encrypt_with_ad(None, ping)))
    close = encode_record(RecordType.CLOSE, 0, (0).to_bytes(2, "big") + b"bye")
    records.append(("initiator", "CLOSE", close, ir.send_cipher.encrypt_with_ad(None, close)))
    deferred = deferred_handshake(idev, icert, rdev, rcert, limits)
    return {
        "about": "A complete TCP handshake (section 6): Noise_XX_25519_ChaChaPoly_BLAKE2b with "
                 "prologue 'p2psync/noise/1\\0tcp', fixed static (device) and ephemeral keys, "
                 "both Hello payloads, the three handshake frames (u32 length + message), the "
                 "handshake hash, split keys, stream secret, then transport records in send "
                 "order per direction (each direction's nonces start at 0): 'record' is the "
                 "plaintext, 'frame' what goes on the wire. 'deferred': the same devices with "
                 "the responder deferring its certificate (empty in its Hello, sent in "
                 "ACCEPT).",
        "format": FORMAT,
        "protocol_name": "Noise_XX_25519_ChaChaPoly_BLAKE2b",
        "prologue": h(b"p2psync/noise/1\x00tcp"),
        "initiator": {"account_seed": h(ia.seed), "device_seed": h(idev.seed),
                      "device": h(idev.public), "static_private": h(idev.x25519_private()),
                      "static_public": h(x25519_public(idev.public)),
                      "ephemeral_private": h(ie.private), "ephemeral_public": h(ie.public),
                      "certificate": h(icert.raw), "peer_id": icert.peer_id,
                      "hello": h(init.hello.encode())},
        "responder": {"account_seed": h(ra.seed), "device_seed": h(rdev.seed),
                      "device": h(rdev.public), "static_private": h(rdev.x25519_private()),
                      "static_public": h(x25519_public(rdev.public)),
                      "ephemeral_private": h(re_.private), "ephemeral_public": h(re_.public),
                      "certificate": h(rcert.raw), "peer_id": rcert.peer_id,
                      "hello": h(resp.hello.encode())},
        "now": BASE_TIME + 60,
        "messages": [{"from": "initiator", "message": h(m1), "frame": frame(m1)},
                     {"from": "responder", "message": h(m2), "frame": frame(m2)},
                     {"from": "initiator", "message": h(m3), "frame": frame(m3)}],
        "handshake_hash": h(ir.handshake_hash),
        "initiator_send_key": h(ir.send_cipher.k),
        "responder_send_key": h(rr.send_cipher.k),
        "stream_secret": h(ir.stream_secret),
        "version": ir.version,
        "records": [{"from": who, "what": what, "record": h(rec),
                     "frame": frame(ct)} for who, what, rec, ct in records],
        "deferred": deferred,
    }


def deferred_handshake(idev: DeviceKey, icert: DeviceCertificate, rdev: DeviceKey,
                       rcert: DeviceCertificate, limits: Limits) -> dict[str, Any]:
    """The same two devices, the responder deferring its certificate (6.3): message 2 carries a
    Hello with an empty certificate, ACCEPT carries the certificate."""
    ie = KeyPair.from_private(seed("noise/deferred/initiator-ephemeral"))
    re_ = KeyPair.from_private(seed("noise/deferred/responder-ephemeral"))
    init = SecureHandshake(initiator=True, device_key=idev, certificate=icert, binding=b"tcp",
                           expected_peer=rcert.peer_id, limits=limits, ephemeral=ie)
    resp = SecureHandshake(initiator=False, device_key=rdev, certificate=rcert, binding=b"tcp",
                           limits=limits, ephemeral=re_, defer_certificate=True)
    m1 = init.start()
    m2 = resp.receive(m1)
    assert m2 is not None
    m3 = init.receive(m2)
    assert m3 is not None and resp.receive(m3) is None
    ir, rr = init.result, resp.result
    assert ir is not None and rr is not None and ir.certificate is None
    accept = encode_record(RecordType.ACCEPT, 0, rcert.raw)
    ct = rr.send_cipher.encrypt_with_ad(None, accept)
    return {
        "ephemeral_private": {"initiator": h(ie.private), "responder": h(re_.private)},
        "responder_hello": h(Hello(resp.hello.max_version, resp.hello.min_version, b"",
                                   resp.hello.features, resp.hello.limits).encode()),
        "messages": [h(m1), h(m2), h(m3)],
        "handshake_hash": h(ir.handshake_hash),
        "accept": {"record": h(accept), "frame": (HEADER.pack(len(ct)) + ct).hex()},
        "initiator_send_key": h(ir.send_cipher.k),
        "responder_send_key": h(rr.send_cipher.k),
    }


# --- sync messages -------------------------------------------------------------------------------
def message_examples() -> list[tuple[int, Any]]:
    sid = space_header().space_id
    oid, c1, c2 = seed("object/1"), seed("change/1"), seed("change/2")
    q = m.RangeQuery(4, 9, seed("rangehash"), 12)
    res = m.RangeResult(4, 9, seed("rangehash2"), 2, ((seed("o/a"), seed("hh/a")),
                                                      (seed("o/b"), seed("hh/b"))))
    return [
        (0, m.SpaceHello(seed("nonce"))),
        (0, m.SpaceTokens(tuple(sorted(seed(f"tok/{i}", 16) for i in range(16))))),
        (7, m.HeadSyncRequest(sid, 32, (m.RangeQuery(0, 0, seed("root"), 300), q))),
        (7, m.HeadSyncResponse(sid, (res, m.RangeResult(0, 0, seed("root2"), 301, None)))),
        (0, m.HeadUpdate(sid, oid, (c1, c2), (b"raw change bytes",))),
        (8, m.FullSyncRequest(sid, oid, (c1,), (), (), 1 << 20, False)),
        (8, m.FullSyncResponse(sid, oid, (c2,), (b"raw1", b"raw2"), True)),
        (0, m.AclHeadUpdate(sid, (c1,), (b"acl record",))),
        (9, m.AclSyncRequest(sid, (c1, c2), (), 0)),
        (9, m.AclSyncResponse(sid, (c2,), (b"acl record",), False)),
        (10, m.BootstrapRequest(sid, b"proof bytes", None, 100)),
        (10, m.BootstrapResponse(sid, b"header bytes", (b"acl record",), (oid,), oid)),
        (0, m.SpaceOffer(sid)),
        (11, m.ReceiptRequest(sid, seed("receipt-nonce"))),
        (11, m.ReceiptResponse(b"receipt bytes")),
        (0, m.StorageRefused(sid, oid, m.ErrorCode.QUOTA_EXCEEDED, "quota exceeded")),
        (12, m.ErrorMessage(m.ErrorCode.RATE_LIMITED, "slow down", 1500)),
        (13, m.ErrorMessage(m.ErrorCode.UNKNOWN_SPACE, "unknown space", None)),
    ]


def messages_vectors() -> dict[str, Any]:
    out = []
    for rid, msg in message_examples():
        out.append({"type": int(msg.TYPE), "name": msg.TYPE.name, "request_id": rid,
                    "body": tag(msg.fields()), "hex": m.encode(msg, rid).hex()})
    bad = [
        ("unknown message type 99", pack([1, 99, 5, []]), "UNKNOWN_MESSAGE_TYPE"),
        ("envelope version 2", pack([2, 1, 5, [bytes(32)]]), "UNSUPPORTED_VERSION"),
        ("SPACE_HELLO with an extra field", pack([1, 1, 5, [bytes(32), 1]]), "MALFORMED"),
        ("SPACE_HELLO nonce of 31 bytes", pack([1, 1, 5, [bytes(31)]]), "MALFORMED"),
        ("SPACE_TOKENS with 15 tokens", pack([1, 2, 5, [[bytes(16)] * 15]]), "MALFORMED"),
        ("body is a map", pack([1, 1, 5, []])[:-1] + bytes.fromhex("81a16101"), "MALFORMED"),
        ("ERROR with unknown code 10", pack([1, 63, 5, [10, "", None]]), "MALFORMED"),
        ("range prefix does not fit its bits",
         pack([1, 10, 5, ["s", 32, [[2, 4, bytes(32), 1]]]]), "MALFORMED"),
        ("five envelope fields", pack([1, 1, 5, [bytes(32)], 0]), "MALFORMED"),
        ("trailing byte", pack([1, 1, 5, [bytes(32)]]) + b"\x00", "MALFORMED"),
    ]
    return {
        "about": "Sync messages (section 10): one example of every type; 'body' is the tagged "
                 "msgpack body, 'hex' the whole encoded envelope. 'refuse': messages a "
                 "receiver must refuse, with the error code it answers.",
        "format": FORMAT,
        "messages": out,
        "refuse": [{"why": why, "hex": raw.hex(), "error": code} for why, raw, code in bad],
    }


# --- head sync -----------------------------------------------------------------------------------
def object_set(prefix: str, n: int) -> dict[bytes, bytes]:
    return {seed(f"{prefix}/obj/{i}"): heads_hash([seed(f"{prefix}/head/{i}")])
            for i in range(n)}


def run_headsync(local: LDiff, remote: LDiff, threshold: int) -> dict[str, Any]:
    session = HeadSyncSession(local, "space-1.x", threshold=threshold)
    rounds = []
    while not session.done:
        flight = []
        while (nxt := session.next_request()) is not None:
            tag_, req = nxt
            raw_req = m.encode(req, tag_ + 1)
            resp = remote.answer(m.decode(raw_req).message)  # type: ignore[arg-type]
            flight.append((tag_, raw_req, m.encode(resp, tag_ + 1), resp))
        rounds.append([{"request": r.hex(), "response": a.hex()} for _, r, a, _ in flight])
        for tag_, _, _, resp in flight:
            session.receive(tag_, resp)
    res = session.result
    return {"rounds": rounds,
            "remote_only": sorted(h(x) for x in res.remote_only),  # type: ignore[type-var]
            "local_only": sorted(h(x) for x in res.local_only),  # type: ignore[type-var]
            "changed": sorted(h(x) for x in res.changed)}  # type: ignore[type-var]


def headsync_vectors() -> dict[str, Any]:
    common = object_set("common", 200)
    local = dict(common)
    remote = dict(common)
    ids = sorted(common)
    for i in range(3):
        remote[ids[i * 50]] = heads_hash([seed(f"changed/{i}")])
    remote.update(object_set("remote-only", 3))
    local.update(object_set("local-only", 2))
    cases = []
    for name, a, b, threshold in (
            ("equal sets", common, common, 32),
            ("3 changed, 3 only remote, 2 only local", local, remote, 32),
            ("same, threshold 2 (deeper search)", local, remote, 2),
            ("empty requester", {}, dict(list(common.items())[:20]), 32)):
        la, lb = LDiff(a.items()), LDiff(b.items())
        case = {"name": name, "threshold": threshold, "divide_bits": 4,
                "local": {h(k): h(v) for k, v in sorted(a.items())},
                "remote": {h(k): h(v) for k, v in sorted(b.items())},
                "local_root": {"hash": h(la.hash()), "count": len(la)},
                "remote_root": {"hash": h(lb.hash()), "count": len(lb)}}
        case.update(run_headsync(la, lb, threshold))
        cases.append(case)
    return {
        "about": "Head sync (section 11). Each case: the requester's ('local') and responder's "
                 "('remote') sets {object id: heads hash}, their root fingerprints, every "
                 "round of HEAD_SYNC_REQUEST/RESPONSE in order (request ids = tag + 1, all "
                 "requests of a round sent before any answer), and the resulting differences "
                 "from the requester's side. Requests depend on the reference's split order "
                 "(children in prefix order, FIFO, <= 256 ranges per request); responses are "
                 "determined by the remote set.",
        "format": FORMAT,
        "cases": cases,
    }


# --- space exchange ------------------------------------------------------------------------------
def spacex_vectors() -> dict[str, Any]:
    da, db = device("alice-laptop"), device("bob-phone")
    binding = seed("handshake-hash", 64)
    hd = space_header()
    other = SpaceHeader.create(account("bob"), created=BASE_TIME, seed=seed("header2", 16),
                               replication_key=7)
    mine = SpaceHeader.create(account("alice"), created=BASE_TIME, seed=seed("header3", 16),
                              replication_key=8)
    keys_a = {hd.space_id: header_exchange_key(hd.raw, hd.space_id),
              mine.space_id: header_exchange_key(mine.raw, mine.space_id)}
    keys_b = {hd.space_id: header_exchange_key(hd.raw, hd.space_id),
              other.space_id: header_exchange_key(other.raw, other.space_id)}
    a = SpaceExchange(da.public, db.public, keys_a, channel_binding=binding,
                      random_bytes=Drbg("spacex/a"))
    b = SpaceExchange(db.public, da.public, keys_b, channel_binding=binding,
                      random_bytes=Drbg("spacex/b"))
    ha, hb = a.start(), b.start()
    (ta,) = a.receive(hb)
    (tb,) = b.receive(ha)
    a.receive(tb)
    b.receive(ta)
    assert a.shared == b.shared == {hd.space_id}
    return {
        "about": "Space exchange (section 12): headers of the spaces each side holds, their "
                 "exchange keys, both hellos, each side's real tokens and its padded, sorted "
                 "SPACE_TOKENS message, and the shared set. Padding tokens are random.",
        "format": FORMAT,
        "handshake_hash": h(binding),
        "a": {"device": h(da.public), "spaces": {s: h(k) for s, k in sorted(keys_a.items())},
              "hello": m.encode(ha, 0).hex(), "nonce": h(ha.nonce),
              "tokens": {s: h(space_token(k, da.public, db.public, ha.nonce, hb.nonce, binding))
                         for s, k in sorted(keys_a.items())},
              "tokens_message": m.encode(ta, 0).hex()},
        "b": {"device": h(db.public), "spaces": {s: h(k) for s, k in sorted(keys_b.items())},
              "hello": m.encode(hb, 0).hex(), "nonce": h(hb.nonce),
              "tokens": {s: h(space_token(k, db.public, da.public, hb.nonce, ha.nonce, binding))
                         for s, k in sorted(keys_b.items())},
              "tokens_message": m.encode(tb, 0).hex()},
        "headers": {x.space_id: h(x.raw) for x in (hd, other, mine)},
        "shared": sorted(a.shared),
    }


# --- invites and bootstrap -----------------------------------------------------------------------
def invites_vectors() -> dict[str, Any]:
    sid = space_header().space_id
    invite_id = seed("invite-id")
    ikey = SigningKey(seed("invite-key"))
    v1 = InviteCode(invite_id, ikey.seed)
    v2 = InviteCode(invite_id, ikey.seed, sid, ("tcp:192.168.1.7:7337", "quic:[fe80::1]:7337"))
    joiner = account("carol")
    jmsg = join_proof_message(sid, invite_id, joiner.public)
    da, db = device("carol-laptop"), device("alice-laptop")
    nonce = seed("responder-hello-nonce")
    binding = seed("handshake-hash", 64)
    bmsg = bootstrap_message(sid, invite_id, nonce, da.public, db.public, binding)
    proof = pack([invite_id, ikey.sign(BOOTSTRAP_DOMAIN, bmsg)])
    return {
        "about": "Invite codes and proofs (section 13). codes: text <-> fields (format 1 has "
                 "no space id or addresses). join_proof: the acl-join signature an INVITE_JOIN "
                 "/ REQUEST_JOIN carries. bootstrap_proof: BOOTSTRAP_REQUEST.proof for one "
                 "session. bad_codes must be refused.",
        "format": FORMAT,
        "invite_key": {"seed": h(ikey.seed), "public": h(ikey.public)},
        "codes": [
            {"text": v1.encode(), "invite_id": h(invite_id), "seed": h(ikey.seed),
             "space_id": "", "addresses": []},
            {"text": v2.encode(), "invite_id": h(invite_id), "seed": h(ikey.seed),
             "space_id": sid, "addresses": list(v2.addresses),
             "body": h(pack([invite_id, ikey.seed, sid, list(v2.addresses)]))},
        ],
        "bad_codes": [
            {"text": "p2psync-invite3:AAAA", "why": "unknown prefix"},
            {"text": v1.encode()[:-4], "why": "wrong length"},
        ],
        "join_proof": {"space_id": sid, "invite_id": h(invite_id), "joiner": h(joiner.public),
                       "message": h(jmsg), "signature": h(ikey.sign("acl-join", jmsg))},
        "bootstrap_proof": {"space_id": sid, "invite_id": h(invite_id),
                            "responder_nonce": h(nonce), "joiner_device": h(da.public),
                            "responder_device": h(db.public), "handshake_hash": h(binding),
                            "message": h(bmsg), "proof": h(proof)},
    }


# --- receipts ------------------------------------------------------------------------------------
def receipts_vectors() -> dict[str, Any]:
    sid = space_header().space_id
    dev, acc = device("backup-pi"), account("backup")
    objs = object_set("receipt", 3)
    ld = LDiff(objs.items())
    nonce = seed("receipt-nonce")
    rc = Receipt(sid, dev.public, acc.public, BASE_TIME * 1000, nonce,
                 (seed("acl-head/2"), seed("acl-head/1")), ld.hash(), 3, 17, 12345, objs)
    raw = sign_receipt(dev, rc)
    big = Receipt(sid, dev.public, acc.public, BASE_TIME * 1000, nonce, (seed("acl-head/1"),),
                  seed("root"), 5000, 9000, 10**9, None)
    return {
        "about": "Backup storage receipts (section 14): verify 'raw' for (device, space_id, "
                 "nonce); 'body' is the signed body. The second receipt lists no objects.",
        "format": FORMAT,
        "device_seed": h(dev.seed),
        "receipts": [
            {"device": h(dev.public), "space_id": sid, "nonce": h(nonce), "body": h(rc.body()),
             "raw": h(raw), "root": h(ld.hash()),
             "objects": {h(k): h(v) for k, v in sorted(objs.items())}},
            {"device": h(dev.public), "space_id": sid, "nonce": h(nonce), "body": h(big.body()),
             "raw": h(sign_receipt(dev, big)), "root": h(seed("root")), "objects": None},
        ],
    }


# --- driver --------------------------------------------------------------------------------------
def files_vectors() -> dict[str, Any]:
    """Encrypted files (docs/files.md): built by scripts/gen_vectors_files.py, which imports
    this module's helpers, hence the late import."""
    sys.modules.setdefault("gen_vectors", sys.modules[__name__])
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from gen_vectors_files import files_vectors as build

    return build()


BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "codec": codec_vectors, "ids": ids_vectors, "keys": keys_vectors,
    "certificates": certificates_vectors, "space_header": header_vectors, "acl": acl_vectors,
    "tree": tree_vectors, "handshake": handshake_vectors, "messages": messages_vectors,
    "headsync": headsync_vectors, "spacex": spacex_vectors, "invites": invites_vectors,
    "receipts": receipts_vectors, "files": files_vectors,
}


def render(name: str) -> str:
    """The exact text of ``tests/vectors/<name>.json``."""
    return json.dumps(BUILDERS[name](), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report files that would change")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    changed = []
    for name in BUILDERS:
        path = args.out / f"{name}.json"
        text = render(name)
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old != text:
            changed.append(path.name)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    verb = "would change" if args.check else "written"
    print(f"{verb}: {', '.join(changed) or 'nothing'}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
