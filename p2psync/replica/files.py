"""Encrypted files, the storage model (sans-IO; docs/files.md).

A file is cut into content-defined chunks (FastCDC, the ``fastcdc`` library: an edit changes
only the chunks around it), each chunk is encrypted under a **file key** derived from the space's
read key and the file id, and addressed by the BLAKE2b-256 of its ciphertext. A signed
:class:`Manifest` lists the chunk addresses in order; it is stored in a document of the space
(:mod:`p2psync.replica.filespace`), so it follows the ACL, key rotation and tombstones.

Encryption is deterministic *within one file*: the nonce is a keyed hash of the plaintext under
the file key, so re-adding an edited file under the same file id yields byte-identical
ciphertext for unchanged chunks, hence the same addresses, hence nothing to store or send for
them. The cost (an observer who holds the ciphertexts learns that two chunks of the same file
are equal) is what any deduplicating store reveals; across files and spaces keys differ, so
nothing is learned. Every chunk is verified (address, then AEAD, then the length the manifest
records) before a byte of it is used.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nacl.bindings
import nacl.exceptions

from p2psync.codec import array, blob, fields, integer, pack, text
from p2psync.crypto.box import ReadKey
from p2psync.crypto.keys import SigningKey, verify
from p2psync.errors import DiskFull, FileChunkInvalid, FileIncomplete, ManifestInvalid

#: FastCDC bounds: 16 KiB .. 256 KiB, 64 KiB on average.
MIN_CHUNK = 16 * 1024
AVG_CHUNK = 64 * 1024
MAX_CHUNK = 256 * 1024
#: Manifest bound: 65 536 chunks (4 GiB at the average size, at most 16 GiB).
MAX_CHUNKS = 1 << 16
#: a manifest rides in one document change (≤ 1 MiB raw): leave room for the change itself
MAX_MANIFEST_BYTES = 900 * 1024
MAX_NAME = 255
MAX_MEDIA_TYPE = 127
NONCE_SIZE = 24
TAG_SIZE = 16
ADDR_SIZE = 32
FILE_ID_SIZE = 32
MANIFEST_VERSION = 1
MANIFEST_DOMAIN = "p2psync/file-manifest/v1"
_KEY_PERSON = b"p2psync-filekey1"  # 16 bytes, BLAKE2b personalisation
_NONCE_PERSON = b"p2psync-chnonce1"
_AAD = b"p2psync/file-chunk/v1\0"


def chunk_address(ciphertext: bytes) -> bytes:
    """The address of a chunk: BLAKE2b-256 of its ciphertext (nonce included)."""
    return hashlib.blake2b(ciphertext, digest_size=ADDR_SIZE).digest()


def file_key(read_key: ReadKey, space_id: str, file_id: bytes) -> bytes:
    """The key of one file's chunks: BLAKE2b keyed with the space read key, personalised for
    this use, over the space and file ids (a different file, space or read key gives an
    unrelated key)."""
    return hashlib.blake2b(space_id.encode() + b"\0" + file_id, digest_size=32,
                           key=read_key.key, person=_KEY_PERSON).digest()


def encrypt_chunk(key: bytes, file_id: bytes, plain: bytes) -> tuple[bytes, bytes]:
    """``(address, ciphertext)`` of one chunk; deterministic for a given key and plaintext."""
    nonce = hashlib.blake2b(plain, digest_size=NONCE_SIZE, key=key, person=_NONCE_PERSON).digest()
    ct = nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, _AAD + file_id, nonce, key)
    return chunk_address(ct), ct


def decrypt_chunk(key: bytes, file_id: bytes, address: bytes, ciphertext: bytes,
                  length: int) -> bytes:
    """Verify and open one chunk: its address, its tag, and the length the manifest records.
    Raises :class:`FileChunkInvalid` on any mismatch (a tampered or substituted chunk)."""
    if chunk_address(ciphertext) != address:
        raise FileChunkInvalid(f"chunk {address.hex()[:16]} does not match its address")
    if len(ciphertext) != NONCE_SIZE + TAG_SIZE + length:
        raise FileChunkInvalid(f"chunk {address.hex()[:16]} has the wrong length")
    try:
        plain: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext[NONCE_SIZE:], _AAD + file_id, ciphertext[:NONCE_SIZE], key)
    except nacl.exceptions.CryptoError as exc:
        raise FileChunkInvalid(f"chunk {address.hex()[:16]} fails authentication") from exc
    return plain


def split(source: bytes | str | Path) -> Iterator[bytes]:
    """Plaintext chunks of ``source`` (bytes, or a path read through the library's mmap)."""
    if isinstance(source, Path):
        source = str(source)
    if isinstance(source, str) and os.path.getsize(source) == 0:
        return
    if isinstance(source, bytes) and not source:
        return
    from fastcdc import fastcdc as _fastcdc  # type: ignore[import-untyped]  # lazy: CLI start

    for c in _fastcdc(source, min_size=MIN_CHUNK, avg_size=AVG_CHUNK, max_size=MAX_CHUNK,
                      fat=True, hf=None):
        yield bytes(c.data)


# --- manifest ----------------------------------------------------------------------------------
_BODY = fields(
    integer(MANIFEST_VERSION, MANIFEST_VERSION),
    text(max_len=200, min_len=1),                   # space id
    blob(size=FILE_ID_SIZE),                        # file id (the document's tree id)
    text(max_len=MAX_NAME),                         # name
    text(max_len=MAX_MEDIA_TYPE),                   # media type
    integer(0, MAX_CHUNKS * MAX_CHUNK),             # size
    blob(size=32),                                  # read key id
    array(fields(blob(size=ADDR_SIZE), integer(1, MAX_CHUNK)), max_items=MAX_CHUNKS),
    blob(size=32),                                  # author (device/account public key)
)
_SIGNED = fields(blob(max_len=MAX_CHUNKS * 48 + 4096), blob(size=64))
_body_dec: Any = msgspec.msgpack.Decoder(_BODY)
_signed_dec: Any = msgspec.msgpack.Decoder(_SIGNED)


@dataclass(frozen=True)
class Manifest:
    """What a file is: its chunks in order (address, plaintext length), total size, name,
    media type and the read key its file key derives from; signed by ``author``."""

    space_id: str
    file_id: bytes
    name: str
    media_type: str
    size: int
    read_key_id: bytes
    chunks: tuple[tuple[bytes, int], ...]
    author: bytes

    def body(self) -> bytes:
        return pack([MANIFEST_VERSION, self.space_id, self.file_id, self.name, self.media_type,
                     self.size, self.read_key_id, [[a, n] for a, n in self.chunks], self.author])

    def sign(self, key: SigningKey) -> bytes:
        """The signed encoding ``[body, signature]`` (author must be ``key``)."""
        if key.public != self.author:
            raise ValueError("a manifest is signed by its author")
        body = self.body()
        return pack([body, key.sign(MANIFEST_DOMAIN, body)])

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        """Decode within bounds and verify the signature; :class:`ManifestInvalid` otherwise."""
        try:
            body, sig = _signed_dec.decode(raw)
            (_v, space_id, file_id, name, media, size, rk, chunks, author) = \
                _body_dec.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ManifestInvalid(f"malformed file manifest: {exc}") from exc
        try:
            verify(author, MANIFEST_DOMAIN, body, sig)
        except Exception as exc:
            raise ManifestInvalid("file manifest signature does not verify") from exc
        m = cls(space_id, file_id, name, media, size, rk,
                tuple((a, n) for a, n in chunks), author)
        if sum(n for _, n in m.chunks) != size:
            raise ManifestInvalid("file manifest size does not match its chunks")
        return m

    @property
    def addresses(self) -> list[bytes]:
        return [a for a, _ in self.chunks]


@dataclass(frozen=True)
class Encrypted:
    """The result of encrypting a file: its chunk list and the new ciphertexts by address."""

    chunks: tuple[tuple[bytes, int], ...]
    size: int
    blobs: dict[bytes, bytes]


def encrypt_stream(source: bytes | str | Path, key: bytes,
                   file_id: bytes) -> Iterator[tuple[bytes, int, bytes]]:
    """``(address, plaintext length, ciphertext)`` per chunk, in file order, one at a time
    (memory stays at one chunk plus the library's mmap of a path)."""
    for n, plain in enumerate(split(source)):
        if n >= MAX_CHUNKS:
            raise ManifestInvalid(f"file too large: more than {MAX_CHUNKS} chunks")
        addr, ct = encrypt_chunk(key, file_id, plain)
        yield addr, len(plain), ct


def encrypt_file(source: bytes | str | Path, key: bytes, file_id: bytes) -> Encrypted:
    """Chunk and encrypt a whole file in memory (tests, small files; see
    :func:`encrypt_stream`)."""
    chunks: list[tuple[bytes, int]] = []
    blobs: dict[bytes, bytes] = {}
    size = 0
    for addr, n, ct in encrypt_stream(source, key, file_id):
        plain_len = n
        chunks.append((addr, plain_len))
        blobs.setdefault(addr, ct)
        size += plain_len
    return Encrypted(tuple(chunks), size, blobs)


def missing(manifest: Manifest, have: set[bytes]) -> list[bytes]:
    """Addresses of the manifest not in ``have``, in file order, without repeats."""
    out: list[bytes] = []
    seen: set[bytes] = set()
    for a in manifest.addresses:
        if a not in have and a not in seen:
            seen.add(a)
            out.append(a)
    return out


def assemble(manifest: Manifest, key: bytes, fetch: Any, out: Path) -> int:
    """Write the file to ``out``: every chunk from ``fetch(address) -> bytes | None`` is verified
    first, the bytes go to a temp file next to ``out`` that is fsynced and renamed into place
    only when complete. A missing chunk raises :class:`FileIncomplete` (nothing is left at
    ``out``), a bad one :class:`FileChunkInvalid`. Returns the size written."""
    gone = [a for a in dict.fromkeys(manifest.addresses) if not _has(fetch, a)]
    if gone:
        raise FileIncomplete(len(gone), len(set(manifest.addresses)))
    tmp = out.with_name(f".{out.name}.p2psync-part")
    written = 0
    try:
        with open(tmp, "wb") as f:
            for addr, n in manifest.chunks:
                ct = fetch(addr)
                if ct is None:
                    raise FileIncomplete(1, len(set(manifest.addresses)))
                plain = decrypt_chunk(key, manifest.file_id, addr, ct, n)
                f.write(plain)
                written += n
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"no space left to write {out.name} ({manifest.size} bytes): "
                           f"nothing was written") from exc
        raise
    return written


def _has(fetch: Any, addr: bytes) -> bool:
    has = getattr(fetch, "has", None)
    if has is not None:
        return bool(has(addr))
    return fetch(addr) is not None


def check_chunks(pairs: Sequence[tuple[bytes, bytes]]) -> None:
    """Refuse ``(address, ciphertext)`` pairs whose address is not their hash (what a receiver
    or backup checks before storing chunks it cannot decrypt)."""
    for addr, ct in pairs:
        if chunk_address(ct) != addr:
            raise FileChunkInvalid(f"chunk {addr.hex()[:16]} does not match its address")
