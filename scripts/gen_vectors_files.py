"""Golden vectors for encrypted files (docs/files.md): the file key, chunk encryption and
address, the signed manifest (version 1, and a paged version-2 one with its pages), and chunk
messages 60/61/62/64/65 with cases a receiver must refuse.

Wired into ``scripts/gen_vectors.py`` (``BUILDERS["files"]``), which writes
``tests/vectors/files.json``; ``tests/test_vectors.py`` ``check_files`` re-derives every value
with this implementation. Standalone:

    python3 scripts/gen_vectors_files.py [--out files.json]

Deterministic: keys and data come from gen_vectors' labelled seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from gen_vectors import FORMAT, account, h, seed, space_header, tag  # noqa: E402

from p2psync.codec import pack  # noqa: E402
from p2psync.crypto.box import ReadKey  # noqa: E402
from p2psync.replica import files as F  # noqa: E402
from p2psync.sync import messages as m  # noqa: E402


def files_vectors() -> dict[str, Any]:
    sid = space_header().space_id
    rk = ReadKey(seed("files/read-key"))
    rk_id = seed("files/read-key-id")
    fid = seed("files/file-id")
    author = account("alice")
    key = F.file_key(rk, sid, fid)
    plains = [seed("files/chunk/0", 100), seed("files/chunk/1", 300), b""]
    chunks = []
    for p in plains[:2]:
        addr, ct = F.encrypt_chunk(key, fid, p)
        chunks.append({"plaintext": h(p), "nonce": h(ct[:F.NONCE_SIZE]), "ciphertext": h(ct),
                       "address": h(addr)})
    manifest = F.Manifest(sid, fid, "photo.jpg", "image/jpeg", sum(len(p) for p in plains[:2]),
                          rk_id, tuple((bytes.fromhex(c["address"]), len(bytes.fromhex(
                              c["plaintext"]))) for c in chunks), author.public)
    raw = manifest.sign(author)
    a0, a1 = (bytes.fromhex(c["address"]) for c in chunks)
    # a paged (v2) manifest of the same chunks plus chunk 0 again (a repeat is legal), in
    # pages of 2 entries: [c0, c1], [c0]
    entries = [*manifest.chunks, manifest.chunks[0]]
    pages = []
    for i in range(0, len(entries), 2):
        part = entries[i:i + 2]
        paddr, pct = F.encrypt_page(key, fid, part)
        pages.append({"entries": [[h(a), n] for a, n in part],
                      "plaintext": h(pack([[a, n] for a, n in part])),
                      "nonce": h(pct[:F.NONCE_SIZE]), "ciphertext": h(pct), "address": h(paddr)})
    paged = F.PagedManifest(sid, fid, "film.mkv", "video/x-matroska",
                            sum(n for _, n in entries), rk_id,
                            tuple((bytes.fromhex(p["address"]), len(p["entries"]))
                                  for p in pages), F.list_hash(entries), author.public)
    ct0 = bytes.fromhex(chunks[0]["ciphertext"])
    msgs = [
        (21, m.ChunkRequest(sid, fid, (a0, a1))),
        (21, m.ChunkResponse(sid, fid, ((a0, ct0),), (a1,))),
        (22, m.ChunkOffer(sid, fid, (a0, a1))),
        (23, m.ChunkKeep(sid, fid, (bytes(range(32)),), (a0,))),
        (24, m.ChunkKeepPart(sid, fid, (bytes(range(32)),), (a1,), 1, 2)),
    ]
    refuse = [
        ("CHUNK_REQUEST with 17 addresses", pack([1, 60, 5, [sid, fid, [a0] * 17]])),
        ("CHUNK_REQUEST address of 31 bytes", pack([1, 60, 5, [sid, fid, [a0[:31]]]])),
        ("CHUNK_RESPONSE chunk over 256 KiB + 40",
         pack([1, 61, 5, [sid, fid, [[a0, bytes(256 * 1024 + 41)]], []]])),
        ("CHUNK_OFFER with 4097 addresses", pack([1, 62, 5, [sid, fid, [a0] * 4097]])),
        ("CHUNK_KEEP with 257 heads", pack([1, 64, 5, [sid, fid, [a0] * 257, [a0]]])),
        ("CHUNK_KEEP_PART part 2 of 2", pack([1, 65, 5, [sid, fid, [a0], 2, 2, [a0]]])),
        ("CHUNK_KEEP_PART of 17 parts", pack([1, 65, 5, [sid, fid, [a0], 0, 17, [a0]]])),
    ]
    return {
        "about": "Encrypted files (docs/files.md): file_key = BLAKE2b-256(key=read key, "
                 "person='p2psync-filekey1', space_id || 0x00 || file_id); each chunk is "
                 "nonce || XChaCha20-Poly1305(plaintext, aad='p2psync/file-chunk/v1\\0' || "
                 "file_id) with nonce = BLAKE2b-192(key=file_key, person='p2psync-chnonce1', "
                 "plaintext); address = BLAKE2b-256(ciphertext). The manifest is "
                 "[body, signature] signed under 'p2psync/file-manifest/v1'.",
        "format": FORMAT,
        "space_id": sid, "file_id": h(fid), "read_key": h(rk.key), "read_key_id": h(rk_id),
        "file_key": h(key), "chunks": chunks,
        "manifest": {"author_seed": h(author.seed), "body": h(manifest.body()), "signed": h(raw)},
        "manifest_v2": {
            "about": "A paged manifest (docs/files.md 'bigfile'): body [2, space_id, file_id, "
                     "name, media_type, size, read_key_id, [[page_address, entries]], "
                     "list_hash, author], signed as v1. Each page is nonce || "
                     "XChaCha20-Poly1305(msgpack [[address, length]], aad="
                     "'p2psync/file-page/v2\\0' || file_id), nonce = BLAKE2b-192(key="
                     "file_key, person='p2psync-pgnonce1', plaintext), address = "
                     "BLAKE2b-256(ciphertext). list_hash = BLAKE2b-256(person="
                     "'p2psync-chlist01', address || u32be(length) for every entry in order).",
            "pages": pages, "list_hash": h(paged.list_hash), "body": h(paged.body()),
            "signed": h(paged.sign(author))},
        "messages": [{"type": int(x.TYPE), "name": x.TYPE.name, "request_id": rid,
                      "body": tag(x.fields()), "hex": m.encode(x, rid).hex()} for rid, x in msgs],
        "refuse": [{"why": why, "hex": raw_.hex(), "error": "MALFORMED"} for why, raw_ in refuse],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write here (default: print)")
    args = ap.parse_args()
    text = json.dumps(files_vectors(), indent=1, ensure_ascii=False) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
