"""Golden vectors (tests/vectors/*.json, docs/protocol.md section 18) against this implementation.

Two kinds of checks per file:

* **regeneration**: ``scripts/gen_vectors.py`` rebuilt in memory gives the committed file byte
  for byte, so any change to the wire format (or to the generator's determinism) fails here
  until the vectors are deliberately regenerated;
* **semantic**: the file's bytes are decoded, verified and recomputed with the library itself,
  the way another implementation would use them (``check_<name>`` below).

``test_a_changed_encoding_rule_fails_the_vectors`` shows the checks bite: with one canonical
rule changed (byte strings encoded as msgpack str), the vector checks fail.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest

from p2psync import codec
from p2psync.backup.receipt import verify_receipt
from p2psync.codec import content_id, pack, unpack
from p2psync.crypto.box import ReadKey, unseal
from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.ids import account_id, decode_key, peer_id, short_hash
from p2psync.crypto.keys import (
    AccountKey,
    DeviceKey,
    SigningKey,
    account_from_phrase,
    normalize_phrase,
    verify,
    x25519_public,
)
from p2psync.errors import (
    BadCertificate,
    BadId,
    BadRecoveryPhrase,
    DecodeError,
    ManifestPageInvalid,
    P2PSyncError,
)
from p2psync.replica import automerge_adapter as ad
from p2psync.replica import files as F
from p2psync.replica.acl import Acl, InviteCode, wrap_aad
from p2psync.replica.acl_records import SpaceMeta, decode_record, join_proof_message, meta_aad
from p2psync.replica.change import (
    FORMAT_VERSION,
    LEGACY_VERSION,
    PAYLOAD_AAD_PREFIX,
    verify_change,
)
from p2psync.replica.document import decode_payload
from p2psync.replica.header import SpaceHeader
from p2psync.replica.tree import ObjectTree, heads_digest
from p2psync.sync import messages as m
from p2psync.sync.bootstrap import BOOTSTRAP_DOMAIN, bootstrap_message, parse_proof
from p2psync.sync.ldiff import LDiff, element_hash, heads_hash
from p2psync.sync.spacex import header_exchange_key, space_token
from p2psync.transport.framing import FrameDecoder
from p2psync.transport.framing import decode_record as decode_frame_record
from p2psync.transport.handshake import Hello, Limits, SecureHandshake
from p2psync.transport.noise import CipherState, KeyPair

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"


def _generator() -> Any:
    path = ROOT / "scripts" / "gen_vectors.py"
    spec = importlib.util.spec_from_file_location("gen_vectors", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_vectors"] = mod
    spec.loader.exec_module(mod)
    return mod


GEN = _generator()
NAMES = sorted(GEN.BUILDERS)


def load(name: str) -> Any:
    return json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))


def b(hexstr: str) -> bytes:
    return bytes.fromhex(hexstr)


def test_every_vector_file_is_generated_and_checked() -> None:
    on_disk = sorted(p.stem for p in VECTORS.glob("*.json"))
    assert on_disk == NAMES
    assert sorted(CHECKS) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_regenerating_gives_the_committed_file(name: str) -> None:
    assert GEN.render(name) == (VECTORS / f"{name}.json").read_text(encoding="utf-8"), (
        f"tests/vectors/{name}.json no longer matches the implementation: a wire format "
        "changed. If that is deliberate, run `python3 scripts/gen_vectors.py` and say so.")


# --- semantic checks -----------------------------------------------------------------------------
def check_codec(v: Any) -> None:
    for case in v["encode"]:
        value = GEN.untag(case["value"])
        assert codec.pack(value).hex() == case["hex"], case
        assert unpack(b(case["hex"])) == value
    for case in v["refuse"]:
        with pytest.raises(DecodeError):
            unpack(b(case["hex"]))


def check_ids(v: Any) -> None:
    for k in v["key_ids"]:
        enc = account_id if k["kind"] == "a" else peer_id
        assert enc(b(k["public"])) == k["id"]
        assert decode_key(k["kind"], k["id"]) == b(k["public"])
        assert decode_key(k["kind"], k["kind"] + k["id"][1:].upper()) == b(k["public"])
    for c in v["content_ids"]:
        assert content_id(b(c["bytes"])).hex() == c["id"]
        assert short_hash(b(c["id"])) == c["printable"]
    heads = [b(x) for x in v["heads"]["heads"]]
    assert heads_hash(heads).hex() == v["heads"]["heads_hash"]
    assert heads_digest(set(heads)).hex() == v["heads"]["heads_digest"]
    e = v["element"]
    assert element_hash(b(e["object_id"]), b(e["heads_hash"])).to_bytes(32, "big").hex() \
        == e["element_hash"]
    for bad in v["bad_ids"]:
        with pytest.raises(BadId):
            decode_key(bad["kind"], bad["id"])


def _check_key(k: SigningKey, info: dict[str, Any], kind: str) -> None:
    assert k.seed.hex() == info["seed"]
    assert k.public.hex() == info["public"]
    assert (account_id if kind == "a" else peer_id)(k.public) == info["id"]
    assert k.x25519_private().hex() == info["x25519_private"]
    assert x25519_public(k.public).hex() == info["x25519_public"]


def check_keys(v: Any) -> None:
    for p in v["phrases"]:
        assert normalize_phrase(p["phrase"]) == p["normalized"]
        for acc in p["accounts"]:
            _check_key(account_from_phrase(p["phrase"], acc["index"]), acc, "a")
    for bad in v["bad_phrases"]:
        with pytest.raises(BadRecoveryPhrase):
            account_from_phrase(bad["phrase"])
    _check_key(DeviceKey(b(v["device"]["seed"])), v["device"], "p")
    s = v["signature"]
    key = SigningKey(b(s["key_seed"]))
    assert key.sign(s["domain"], b(s["data"])).hex() == s["signature"]
    assert s["signed_message"] == (b"p2psync/" + s["domain"].encode() + b"\0" + b(s["data"])).hex()
    verify(b(s["public"]), s["domain"], b(s["data"]), b(s["signature"]))


def check_certificates(v: Any) -> None:
    for c in v["valid"]:
        cert = DeviceCertificate.verify(b(c["raw"]), now=v["now"])
        assert (cert.account.hex(), cert.device.hex()) == (c["account"], c["device"])
        assert (cert.issued_at, cert.expires_at) == (c["issued_at"], c["expires_at"])
        assert (cert.account_id, cert.peer_id) == (c["account_id"], c["peer_id"])
        again = DeviceCertificate.issue(AccountKey(b(c["account_seed"])), b(c["device"]),
                                        issued_at=c["issued_at"], expires_at=c["expires_at"])
        assert again.raw.hex() == c["raw"]
        assert unpack(b(c["raw"]))[0].hex() == c["body"]
    for bad in v["refuse"]:
        with pytest.raises(BadCertificate):
            DeviceCertificate.verify(b(bad["raw"]), now=bad.get("now", v["now"]))


def check_space_header(v: Any) -> None:
    hd = SpaceHeader.verify(b(v["raw"]), v["space_id"])
    assert (hd.owner.hex(), hd.created, hd.seed.hex()) == (v["owner"], v["created"], v["seed"])
    assert (hd.replication_key, hd.space_type) == (int(v["replication_key"]), v["space_type"])
    assert content_id(hd.raw).hex() == v["header_id"]
    again = SpaceHeader.create(AccountKey(b(v["owner_seed"])), v["space_type"],
                               created=v["created"], seed=b(v["seed"]),
                               replication_key=int(v["replication_key"]))
    assert again.raw.hex() == v["raw"]


def _acl_in_order(sid: str, raws: list[bytes]) -> Acl:
    """Records added one at a time in the given order (parents may come later: they wait)."""
    roots = [r for r in raws if not decode_record(r).prev]
    acl = Acl(sid, roots[0])
    for r in raws:
        if r is not roots[0]:
            acl.add(r)
    assert not acl.waiting and not acl.rejected
    return acl


def check_acl(v: Any) -> None:
    sid = v["space_id"]
    assert wrap_aad(sid, b(v["wrap_aad_example"]["old_key_id"])).hex() \
        == v["wrap_aad_example"]["aad"]
    kinds = v["kinds"]
    raws = [b(r["raw"]) for r in kinds["records"]]
    for r, raw in zip(kinds["records"], raws, strict=True):
        rec = decode_record(raw, sid)
        assert (rec.id.hex(), int(rec.kind), rec.author.hex()) == (r["id"], r["kind"], r["author"])
        assert [p.hex() for p in rec.prev] == r["prev"] and rec.timestamp == r["timestamp"]
    assert len({r["kind"] for r in kinds["records"]}) == 18  # every kind, SPACE_META included
    assert GEN.state_json(_acl_in_order(sid, raws)) == kinds["expected"]
    bob = AccountKey(b(v["accounts"]["bob"]["seed"]))
    acl = Acl.from_records(sid, raws, me=bob)
    assert {k.hex(): key.key.hex() for k, key in acl.keys_of(bob).items()} == kinds["read_keys"]
    # Kind 17: the sealed name re-derived with libsodium directly (nonce, AAD, key), and opened
    # by the library as bob reads it.
    sm = kinds["space_meta"]
    meta = decode_record(raws[[r["id"] for r in kinds["records"]].index(sm["record_id"])], sid)
    assert isinstance(meta.payload, SpaceMeta) and kinds["expected"]["meta"] == sm["record_id"]
    assert (meta.payload.key_id.hex(), meta.payload.sealed.hex()) == (sm["key_id"], sm["sealed"])
    assert meta_aad(sid, b(sm["key_id"])).hex() == sm["aad"]
    assert codec.pack({"name": sm["name"]}).hex() == sm["plaintext"]
    assert b(sm["nonce"]) + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        b(sm["plaintext"]), b(sm["aad"]), b(sm["nonce"]), b(kinds["read_keys"][sm["key_id"]])
    ) == b(sm["sealed"])
    assert acl.meta(bob) == {"name": sm["name"]}
    # The root's sealed key opens with the owner's account key (libsodium sealed box).
    alice = AccountKey(b(v["accounts"]["alice"]["seed"]))
    root = decode_record(raws[0])
    assert unseal(root.payload.sealed_key, alice).hex() == kinds["read_keys"][root.id.hex()]  # type: ignore[union-attr]
    for bad in v["refuse"]:
        with pytest.raises(P2PSyncError):
            decode_record(b(bad["raw"]), sid)
    rp = v["replay"]
    common = [b(x) for x in rp["common"]]
    extra = [b(x) for x in rp["concurrent"]]
    for order in (common + extra, common + extra[::-1],
                  random.Random(7).sample(common + extra, len(common + extra))):
        assert GEN.state_json(_acl_in_order(sid, order)) == rp["expected"]


def check_tree(v: Any) -> None:
    sid = v["space_id"]
    key = ReadKey(b(v["read_key"]))
    for c in [*v["changes"], v["legacy"]]:
        ch = verify_change(b(c["raw"]), expected_id=b(c["id"]))
        f = c["fields"]
        sealed = ch.open(key)
        assert (ch.version, ch.space_id, ch.tree_id and ch.tree_id.hex()) == (
            f["version"], f["space_id"], f["tree_id"])
        assert (sealed.snapshot, sealed.timestamp) == (f["snapshot"], f["timestamp_ms"])
        if ch.version == 1:  # legacy: the same values in the clear header
            assert (ch.snapshot, ch.timestamp) == (f["snapshot"], f["timestamp_ms"])
        else:
            assert ch.snapshot is None and ch.timestamp is None
        assert [x.hex() for x in ch.prev_ids] == f["prev_ids"]
        assert (ch.acl_head.hex(), ch.read_key_id.hex(), ch.author.hex()) == (
            f["acl_head"], f["read_key_id"], f["author"])
        assert (ch.header.hex(), ch.payload.hex(), ch.body.hex()) == (
            c["header"], c["payload"], c["body"])
        assert key.decrypt(ch.payload, PAYLOAD_AAD_PREFIX + ch.header).hex() == c["sealed"]
        assert ch.decrypt(key).hex() == c["plaintext"]
    assert [c["fields"]["version"] for c in v["changes"]] == [FORMAT_VERSION] * 7
    assert v["legacy"]["fields"]["version"] == LEGACY_VERSION
    tree = ObjectTree.from_root(sid, GEN._Gate(), b(v["changes"][0]["raw"]))
    rest = [b(c["raw"]) for c in v["changes"][1:]]
    tree.add(rest[::-1])  # any order: children wait for their parents
    assert tree.id.hex() == v["tree_id"]
    assert [x.hex() for x in tree.heads] == v["heads"]
    assert [c.id.hex() for c in tree.replay_order()] == v["replay_order"]
    legacy = tree.add([b(v["legacy"]["raw"])])  # a format-1 change attaches among format 2
    assert [c.id.hex() for c in legacy.attached] == [v["legacy"]["id"]]
    for bad in v["refuse"]:
        with pytest.raises(P2PSyncError):
            verify_change(b(bad["raw"]))
    # The plaintexts carry real Automerge content: replaying it gives the document.
    doc = ad.new_document(bytes(16))
    by_id = {c["id"]: c for c in v["changes"]}
    for cid in v["replay_order"]:
        pl = decode_payload(b(by_id[cid]["plaintext"]))
        if by_id[cid]["fields"]["snapshot"]:
            snap = ad.load(pl.items[0], bytes(16))
            assert sorted(ad.heads(snap)) == sorted(pl.am_heads)
            continue
        ad.apply_changes(doc, list(pl.items))
        assert set(pl.am_heads) <= {bytes(x) for x in ad.heads(doc)} | _past(doc)
    assert sorted(x.hex() for x in ad.heads(doc)) == v["automerge_heads"]
    assert GEN.am_json(doc) == v["document"]


def _past(doc: Any) -> set[bytes]:
    """Hashes of every change in ``doc`` (a change's heads may be behind the replay's)."""
    return {bytes(c.hash) for c in doc.get_changes([])}


def check_handshake(v: Any) -> None:
    i, r = v["initiator"], v["responder"]
    icert = DeviceCertificate.verify(b(i["certificate"]), now=v["now"])
    rcert = DeviceCertificate.verify(b(r["certificate"]), now=v["now"])
    hello_i, hello_r = Hello.decode(b(i["hello"])), Hello.decode(b(r["hello"]))
    assert hello_i.certificate == icert.raw and hello_r.certificate == rcert.raw
    limits = hello_i.limits
    assert isinstance(limits, Limits)
    init = SecureHandshake(initiator=True, device_key=DeviceKey(b(i["device_seed"])),
                           certificate=icert, binding=b"tcp", expected_peer=r["peer_id"],
                           limits=limits,
                           ephemeral=KeyPair.from_private(b(i["ephemeral_private"])))
    resp = SecureHandshake(initiator=False, device_key=DeviceKey(b(r["device_seed"])),
                           certificate=rcert, binding=b"tcp", limits=hello_r.limits,
                           ephemeral=KeyPair.from_private(b(r["ephemeral_private"])))
    frames = FrameDecoder().feed(b"".join(b(x["frame"]) for x in v["messages"]))
    assert [f.hex() for f in frames] == [x["message"] for x in v["messages"]]
    assert init.start() == frames[0]
    assert resp.receive(frames[0]) == frames[1]
    assert init.receive(frames[1]) == frames[2]
    assert resp.receive(frames[2]) is None
    assert init.result is not None and resp.result is not None
    assert init.result.handshake_hash.hex() == resp.result.handshake_hash.hex() \
        == v["handshake_hash"]
    assert init.result.stream_secret.hex() == v["stream_secret"]
    assert init.result.send_cipher.k is not None
    assert init.result.send_cipher.k.hex() == v["initiator_send_key"]
    recv = {"initiator": CipherState(b(v["initiator_send_key"])),
            "responder": CipherState(b(v["responder_send_key"]))}
    for rec in v["records"]:
        (body,) = FrameDecoder().feed(b(rec["frame"]))
        plain = recv[rec["from"]].decrypt_with_ad(None, body)
        assert plain.hex() == rec["record"]
        parsed = decode_frame_record(plain)
        if parsed.type.name == "DATA_END":
            assert isinstance(m.decode(parsed.payload).message, m.SpaceHello)
    d = v["deferred"]
    init = SecureHandshake(initiator=True, device_key=DeviceKey(b(i["device_seed"])),
                           certificate=icert, binding=b"tcp", expected_peer=r["peer_id"],
                           limits=limits, ephemeral=KeyPair.from_private(
                               b(d["ephemeral_private"]["initiator"])))
    resp = SecureHandshake(initiator=False, device_key=DeviceKey(b(r["device_seed"])),
                           certificate=rcert, binding=b"tcp", limits=hello_r.limits,
                           defer_certificate=True, ephemeral=KeyPair.from_private(
                               b(d["ephemeral_private"]["responder"])))
    assert init.start().hex() == d["messages"][0]
    assert resp.receive(b(d["messages"][0])).hex() == d["messages"][1]  # type: ignore[union-attr]
    assert init.receive(b(d["messages"][1])).hex() == d["messages"][2]  # type: ignore[union-attr]
    assert resp.receive(b(d["messages"][2])) is None
    assert init.result is not None and init.result.certificate is None
    assert init.result.handshake_hash.hex() == d["handshake_hash"]
    (body,) = FrameDecoder().feed(b(d["accept"]["frame"]))
    accept = decode_frame_record(
        CipherState(b(d["responder_send_key"])).decrypt_with_ad(None, body))
    assert accept.type.name == "ACCEPT" and accept.payload.hex() == d["accept"]["record"][10:]
    assert init.check_deferred_certificate(accept.payload).peer_id == r["peer_id"]


def check_messages(v: Any) -> None:
    for case in v["messages"]:
        env = m.decode(b(case["hex"]))
        assert int(env.message.TYPE) == case["type"] and env.request_id == case["request_id"]
        assert env.message.fields() == GEN.untag(case["body"])
        assert m.encode(env.message, env.request_id).hex() == case["hex"]
    for bad in v["refuse"]:
        with pytest.raises(P2PSyncError) as err:
            m.decode(b(bad["hex"]))
        assert m.error_for(err.value).code.name == bad["error"], bad["why"]


def check_headsync(v: Any) -> None:
    for case in v["cases"]:
        local = LDiff((b(k), b(x)) for k, x in case["local"].items())
        remote = LDiff((b(k), b(x)) for k, x in case["remote"].items())
        assert (local.hash().hex(), len(local)) == (case["local_root"]["hash"],
                                                    case["local_root"]["count"])
        assert (remote.hash().hex(), len(remote)) == (case["remote_root"]["hash"],
                                                      case["remote_root"]["count"])
        for rnd in case["rounds"]:  # the responder is stateless: every answer is determined
            for ex in rnd:
                env = m.decode(b(ex["request"]))
                assert isinstance(env.message, m.HeadSyncRequest)
                assert m.encode(remote.answer(env.message), env.request_id).hex() \
                    == ex["response"]
        got = GEN.run_headsync(local, remote, case["threshold"])
        assert got == {k: case[k] for k in ("rounds", "remote_only", "local_only", "changed")}


def check_spacex(v: Any) -> None:
    binding = b(v["handshake_hash"])
    headers = {sid: b(raw) for sid, raw in v["headers"].items()}
    for sid, raw in headers.items():
        SpaceHeader.verify(raw, sid)
    sides = (v["a"], v["b"])
    for me, peer in (sides, sides[::-1]):
        my_nonce = m.decode(b(me["hello"])).message.nonce  # type: ignore[union-attr]
        peer_nonce = m.decode(b(peer["hello"])).message.nonce  # type: ignore[union-attr]
        for sid, key in me["spaces"].items():
            assert header_exchange_key(headers[sid], sid).hex() == key
            assert space_token(b(key), b(me["device"]), b(peer["device"]), my_nonce, peer_nonce,
                               binding).hex() == me["tokens"][sid]
        sent = m.decode(b(me["tokens_message"])).message
        assert isinstance(sent, m.SpaceTokens) and len(sent.tokens) == 16
        assert list(sent.tokens) == sorted(sent.tokens)
        assert set(me["tokens"].values()) <= {t.hex() for t in sent.tokens}
        # What the peer concludes from our tokens: the spaces both hold.
        expected = {space_token(b(k), b(me["device"]), b(peer["device"]), my_nonce, peer_nonce,
                                binding): sid for sid, k in peer["spaces"].items()}
        assert sorted(expected[t] for t in sent.tokens if t in expected) == v["shared"]


def check_invites(v: Any) -> None:
    for c in v["codes"]:
        code = InviteCode.decode(c["text"])
        assert (code.invite_id.hex(), code.seed.hex()) == (c["invite_id"], c["seed"])
        assert (code.space_id, list(code.addresses)) == (c["space_id"], c["addresses"])
        assert code.encode() == c["text"]
        assert InviteCode.decode(c["text"].lower()) == code
    for bad in v["bad_codes"]:
        with pytest.raises(BadId):
            InviteCode.decode(bad["text"])
    ikey = SigningKey(b(v["invite_key"]["seed"]))
    assert ikey.public.hex() == v["invite_key"]["public"]
    j = v["join_proof"]
    msg = join_proof_message(j["space_id"], b(j["invite_id"]), b(j["joiner"]))
    assert msg.hex() == j["message"]
    verify(ikey.public, "acl-join", msg, b(j["signature"]))
    p = v["bootstrap_proof"]
    bmsg = bootstrap_message(p["space_id"], b(p["invite_id"]), b(p["responder_nonce"]),
                             b(p["joiner_device"]), b(p["responder_device"]),
                             b(p["handshake_hash"]))
    assert bmsg.hex() == p["message"]
    invite_id, sig = parse_proof(b(p["proof"]))
    assert invite_id.hex() == p["invite_id"]
    verify(ikey.public, BOOTSTRAP_DOMAIN, bmsg, sig)


def check_receipts(v: Any) -> None:
    for r in v["receipts"]:
        rc = verify_receipt(b(r["raw"]), device=b(r["device"]), space_id=r["space_id"],
                            nonce=b(r["nonce"]))
        assert rc.body().hex() == r["body"] and rc.root.hex() == r["root"]
        objs = None if rc.objects is None else {k.hex(): x.hex() for k, x in rc.objects.items()}
        assert objs == r["objects"]


def check_files(v: Any) -> None:
    sid, fid = v["space_id"], b(v["file_id"])
    key = F.file_key(ReadKey(b(v["read_key"])), sid, fid)
    assert key.hex() == v["file_key"]
    for c in v["chunks"]:
        addr, ct = F.encrypt_chunk(key, fid, b(c["plaintext"]))
        assert (addr.hex(), ct.hex(), ct[:F.NONCE_SIZE].hex()) == (
            c["address"], c["ciphertext"], c["nonce"])
        assert F.chunk_address(ct).hex() == c["address"]
        assert F.decrypt_chunk(key, fid, addr, ct, len(b(c["plaintext"]))).hex() == c["plaintext"]
    mf = v["manifest"]
    man = F.Manifest.parse(b(mf["signed"]))
    assert man.body().hex() == mf["body"]
    assert (man.space_id, man.file_id.hex(), man.read_key_id.hex()) == (
        sid, v["file_id"], v["read_key_id"])
    assert [(a.hex(), n) for a, n in man.chunks] == [
        (c["address"], len(b(c["plaintext"]))) for c in v["chunks"]]
    author = AccountKey(b(mf["author_seed"]))
    assert man.author == author.public and man.sign(author).hex() == mf["signed"]
    tampered = bytearray(b(mf["signed"]))
    tampered[-1] ^= 1
    with pytest.raises(P2PSyncError):
        F.Manifest.parse(bytes(tampered))
    check_paged_manifest(v, key, author)
    assert {c["type"] for c in v["messages"]} == {60, 61, 62, 64, 65}
    check_messages(v)


def check_paged_manifest(v: Any, key: bytes, author: AccountKey) -> None:
    """The v2 manifest: each page re-encrypted byte for byte, the list hash, the signed body;
    resolving it from its pages gives the entries; a flipped byte in a page is refused."""
    mf = v["manifest_v2"]
    fid = b(v["file_id"])
    head = F.parse_manifest(b(mf["signed"]))
    assert isinstance(head, F.PagedManifest) and head.body().hex() == mf["body"]
    assert head.sign(author).hex() == mf["signed"] and head.list_hash.hex() == mf["list_hash"]
    entries: list[tuple[bytes, int]] = []
    for page, (addr, n) in zip(mf["pages"], head.pages, strict=True):
        part = [(b(a), k) for a, k in page["entries"]]
        paddr, ct = F.encrypt_page(key, fid, part)
        assert (paddr.hex(), ct.hex(), ct[:F.NONCE_SIZE].hex(), addr.hex(), n) == (
            page["address"], page["ciphertext"], page["nonce"], page["address"], len(part))
        assert pack([[a, k] for a, k in part]).hex() == page["plaintext"]
        assert F.decrypt_page(key, fid, paddr, ct, n) == part
        entries += part
    assert F.list_hash(entries).hex() == mf["list_hash"]
    blobs = {b(p["address"]): b(p["ciphertext"]) for p in mf["pages"]}
    got = F.resolve(head, key, blobs.get)
    assert list(got.chunks) == entries and got.size == head.size and got.paged == head
    with pytest.raises(P2PSyncError):
        F.Manifest.parse(b(mf["signed"]))  # a v1-only reader refuses it, never misreads it
    first = next(iter(blobs))
    blobs[first] = blobs[first][:-1] + bytes([blobs[first][-1] ^ 1])
    with pytest.raises(ManifestPageInvalid):
        F.resolve(head, key, blobs.get)


CHECKS: dict[str, Callable[[Any], None]] = {
    "codec": check_codec, "ids": check_ids, "keys": check_keys,
    "certificates": check_certificates, "space_header": check_space_header, "acl": check_acl,
    "tree": check_tree, "handshake": check_handshake, "messages": check_messages,
    "headsync": check_headsync, "spacex": check_spacex, "invites": check_invites,
    "receipts": check_receipts, "files": check_files,
}


@pytest.mark.parametrize("name", NAMES)
def test_vector_file_checks_out(name: str) -> None:
    CHECKS[name](load(name))


def test_a_changed_encoding_rule_fails_the_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch off one canonical rule — byte strings as msgpack bin, not str — and the codec,
    certificate and header vectors no longer check out (regeneration differs too)."""
    import msgpack

    real = msgpack.packb

    def str_for_bytes(obj: Any, **kw: Any) -> bytes:
        return real(obj, **{**kw, "use_bin_type": False})  # type: ignore[no-any-return]

    monkeypatch.setattr(codec.msgpack, "packb", str_for_bytes)
    for name in ("codec", "certificates", "space_header"):
        with pytest.raises((AssertionError, P2PSyncError)):
            CHECKS[name](load(name))
    assert GEN.render("codec") != (VECTORS / "codec.json").read_text(encoding="utf-8")
