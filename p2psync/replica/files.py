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

A manifest rides in one document change (≤ 1 MiB). A file with more chunks than fit there
(~23 600, ~1.4 GiB) gets a **paged manifest** (:class:`PagedManifest`, body version 2): the
signed manifest names *manifest pages*, encrypted blobs stored and moved exactly like chunks
(addressed by the hash of their ciphertext, under the file key with their own AAD and nonce
domain), each listing up to :data:`MAX_PAGE_ENTRIES` ``[address, length]`` entries, plus a
hash over the whole entry list. :func:`resolve` reads and verifies every page (address, tag,
entry count, then the list hash and the size) before any entry is used. Smaller files keep the
version-1 body unchanged (docs/files.md "bigfile").
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
from p2psync.errors import (
    DiskFull,
    FileChunkInvalid,
    FileIncomplete,
    FileTooLarge,
    ManifestInvalid,
    ManifestPageInvalid,
)

#: FastCDC bounds: 16 KiB .. 256 KiB, 64 KiB on average.
MIN_CHUNK = 16 * 1024
AVG_CHUNK = 64 * 1024
MAX_CHUNK = 256 * 1024
#: Version-1 manifest bound: 65 536 chunks listed inline (never reached: a v1 manifest must
#: also fit in one change, MAX_MANIFEST_BYTES, ~23 600 chunks).
MAX_CHUNKS = 1 << 16
#: a manifest rides in one document change (≤ 1 MiB raw): leave room for the change itself.
#: A file whose version-1 manifest would be larger gets a paged (version-2) manifest.
MAX_MANIFEST_BYTES = 900 * 1024
#: Chunks of one file, either version: 262 144 = 16 GiB at the average chunk size (64 GiB at
#: most). ``add_file`` refuses a file with more (FileTooLarge), as soon as it counts them.
MAX_FILE_CHUNKS = 1 << 18
#: Entries of one manifest page (format bound): a page is one blob of the chunk table, so its
#: plaintext stays ≤ MAX_CHUNK (6 144 × ≤ 40 B + header = 240 KiB) and it moves as a chunk.
MAX_PAGE_ENTRIES = 6144
#: Entries per page the writer makes (tests lower it to page a few-MiB file).
PAGE_ENTRIES = MAX_PAGE_ENTRIES
#: Pages of one manifest (format bound: 64 × 6 144 ≥ MAX_FILE_CHUNKS).
MAX_PAGES = 64
MAX_NAME = 255
MAX_MEDIA_TYPE = 127
NONCE_SIZE = 24
TAG_SIZE = 16
ADDR_SIZE = 32
FILE_ID_SIZE = 32
MANIFEST_VERSION = 1
PAGED_VERSION = 2
MANIFEST_DOMAIN = "p2psync/file-manifest/v1"  #: both body versions (the version is signed)
_KEY_PERSON = b"p2psync-filekey1"  # 16 bytes, BLAKE2b personalisation
_NONCE_PERSON = b"p2psync-chnonce1"
_AAD = b"p2psync/file-chunk/v1\0"
_PAGE_NONCE_PERSON = b"p2psync-pgnonce1"  #: pages: their own nonce and AAD domain
_PAGE_AAD = b"p2psync/file-page/v2\0"
_LIST_PERSON = b"p2psync-chlist01"  #: the hash over a paged manifest's entry list


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
#: a paged manifest's body (version 2): the chunk list is in pages, named here in file order
_BODY_V2 = fields(
    integer(PAGED_VERSION, PAGED_VERSION),
    text(max_len=200, min_len=1),                   # space id
    blob(size=FILE_ID_SIZE),                        # file id
    text(max_len=MAX_NAME),                         # name
    text(max_len=MAX_MEDIA_TYPE),                   # media type
    integer(0, MAX_FILE_CHUNKS * MAX_CHUNK),        # size
    blob(size=32),                                  # read key id
    array(fields(blob(size=ADDR_SIZE), integer(1, MAX_PAGE_ENTRIES)), max_items=MAX_PAGES),
    blob(size=32),                                  # list hash (over every entry, in order)
    blob(size=32),                                  # author
)
#: a page's plaintext: ``[[address, length]]``, 1..MAX_PAGE_ENTRIES entries
_PAGE = array(fields(blob(size=ADDR_SIZE), integer(1, MAX_CHUNK)), max_items=MAX_PAGE_ENTRIES)
_SIGNED = fields(blob(max_len=MAX_CHUNKS * 48 + 4096), blob(size=64))
_body_dec: Any = msgspec.msgpack.Decoder(_BODY)
_body_v2_dec: Any = msgspec.msgpack.Decoder(_BODY_V2)
_page_dec: Any = msgspec.msgpack.Decoder(_PAGE)
_signed_dec: Any = msgspec.msgpack.Decoder(_SIGNED)
#: how a version-2 body starts (canonical msgpack: a 10-item fixarray, then the version)
_V2_PREFIX = bytes([0x9A, PAGED_VERSION])


def _sign(body: bytes, author: bytes, key: SigningKey) -> bytes:
    if key.public != author:
        raise ValueError("a manifest is signed by its author")
    return pack([body, key.sign(MANIFEST_DOMAIN, body)])


@dataclass(frozen=True)
class PagedManifest:
    """The signed manifest of a file too large for one document change (body version 2): the
    facts of :class:`Manifest`, but the chunk list lives in ``pages`` — ``(address, entries)``
    of encrypted manifest pages in file order (blobs of the chunk table, fetched like chunks)
    — and ``list_hash`` (:func:`list_hash` of the whole list) binds it. Nothing of the list
    is known before :func:`resolve` has read and verified every page."""

    space_id: str
    file_id: bytes
    name: str
    media_type: str
    size: int
    read_key_id: bytes
    pages: tuple[tuple[bytes, int], ...]
    list_hash: bytes
    author: bytes

    def body(self) -> bytes:
        return pack([PAGED_VERSION, self.space_id, self.file_id, self.name, self.media_type,
                     self.size, self.read_key_id, [[a, n] for a, n in self.pages],
                     self.list_hash, self.author])

    def sign(self, key: SigningKey) -> bytes:
        """The signed encoding ``[body, signature]`` (author must be ``key``)."""
        return _sign(self.body(), self.author, key)

    @property
    def page_addresses(self) -> list[bytes]:
        return [a for a, _ in self.pages]

    @property
    def entries(self) -> int:
        """How many chunk entries the pages hold (as the signed manifest says)."""
        return sum(n for _, n in self.pages)


@dataclass(frozen=True)
class Manifest:
    """What a file is: its chunks in order (address, plaintext length), total size, name,
    media type and the read key its file key derives from; signed by ``author``. For a file
    with a paged manifest, ``paged`` is that signed manifest, whose pages were read and
    verified to list exactly ``chunks`` (:func:`resolve`)."""

    space_id: str
    file_id: bytes
    name: str
    media_type: str
    size: int
    read_key_id: bytes
    chunks: tuple[tuple[bytes, int], ...]
    author: bytes
    paged: PagedManifest | None = None

    def body(self) -> bytes:
        if self.paged is not None:
            return self.paged.body()
        return pack([MANIFEST_VERSION, self.space_id, self.file_id, self.name, self.media_type,
                     self.size, self.read_key_id, [[a, n] for a, n in self.chunks], self.author])

    def sign(self, key: SigningKey) -> bytes:
        """The signed encoding ``[body, signature]`` (author must be ``key``)."""
        return _sign(self.body(), self.author, key)

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        """Decode a version-1 manifest within bounds and verify the signature;
        :class:`ManifestInvalid` otherwise (also for a paged one: :func:`parse_manifest`)."""
        m = parse_manifest(raw)
        if isinstance(m, PagedManifest):
            raise ManifestInvalid("a paged file manifest: its pages must be read (resolve)")
        return m

    @property
    def addresses(self) -> list[bytes]:
        return [a for a, _ in self.chunks]

    @property
    def page_addresses(self) -> list[bytes]:
        """The manifest pages' addresses (none for a version-1 manifest)."""
        return [] if self.paged is None else self.paged.page_addresses


def parse_manifest(raw: bytes) -> Manifest | PagedManifest:
    """Decode a signed manifest of either version within bounds and verify its signature;
    :class:`ManifestInvalid` otherwise. A version-1 manifest is complete; a version-2 one
    (:class:`PagedManifest`) must go through :func:`resolve` before its chunks are known."""
    try:
        body, sig = _signed_dec.decode(raw)
        paged = body[:2] == _V2_PREFIX
        fields_ = (_body_v2_dec if paged else _body_dec).decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ManifestInvalid(f"malformed file manifest: {exc}") from exc
    try:
        verify(fields_[-1], MANIFEST_DOMAIN, body, sig)
    except Exception as exc:
        raise ManifestInvalid("file manifest signature does not verify") from exc
    if paged:
        (_v, space_id, file_id, name, media, size, rk, pages, lh, author) = fields_
        pm = PagedManifest(space_id, file_id, name, media, size, rk,
                           tuple((a, n) for a, n in pages), lh, author)
        if not pm.pages or pm.entries > MAX_FILE_CHUNKS:
            raise ManifestInvalid("paged file manifest: no pages, or more than "
                                  f"{MAX_FILE_CHUNKS} chunks")
        if not pm.entries <= size <= pm.entries * MAX_CHUNK:
            raise ManifestInvalid("paged file manifest: size out of its chunks' bounds")
        return pm
    (_v, space_id, file_id, name, media, size, rk, chunks, author) = fields_
    m = Manifest(space_id, file_id, name, media, size, rk,
                 tuple((a, n) for a, n in chunks), author)
    if sum(n for _, n in m.chunks) != size:
        raise ManifestInvalid("file manifest size does not match its chunks")
    return m


# --- manifest pages ----------------------------------------------------------------------------
def list_hash(entries: Sequence[tuple[bytes, int]]) -> bytes:
    """BLAKE2b-256 (person ``p2psync-chlist01``) over every entry in order, each as its
    32-byte address then its length as 4 bytes big-endian: what a paged manifest signs for
    its whole chunk list."""
    h = _list_hasher()
    _feed(h, entries)
    return h.digest()


def _list_hasher() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=32, person=_LIST_PERSON)


def _feed(h: hashlib.blake2b, entries: Sequence[tuple[bytes, int]]) -> None:
    h.update(b"".join(a + n.to_bytes(4, "big") for a, n in entries))


def encrypt_page(key: bytes, file_id: bytes,
                 entries: Sequence[tuple[bytes, int]]) -> tuple[bytes, bytes]:
    """``(address, ciphertext)`` of one manifest page listing ``entries``: like a chunk
    (deterministic nonce, address = BLAKE2b-256 of the ciphertext), in its own domain (nonce
    personalisation and AAD), so a page can never be read as a data chunk or the reverse."""
    plain = pack([[a, n] for a, n in entries])
    if not entries or len(entries) > MAX_PAGE_ENTRIES or len(plain) > MAX_CHUNK:
        raise ValueError("a manifest page lists 1..MAX_PAGE_ENTRIES entries")
    nonce = hashlib.blake2b(plain, digest_size=NONCE_SIZE, key=key,
                            person=_PAGE_NONCE_PERSON).digest()
    ct = nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, _PAGE_AAD + file_id, nonce, key)
    return chunk_address(ct), ct


def decrypt_page(key: bytes, file_id: bytes, address: bytes, ciphertext: bytes,
                 entries: int) -> list[tuple[bytes, int]]:
    """Verify and open one manifest page: its size (≤ a chunk's, checked first: bounded
    work), its address, its tag, then its plaintext decoded within the schema's bounds and
    holding exactly ``entries`` entries, as the signed manifest says. Raises
    :class:`ManifestPageInvalid` (a wrong, oversize, truncated or overfull page)."""
    tag = address.hex()[:16]
    if len(ciphertext) > NONCE_SIZE + TAG_SIZE + MAX_CHUNK:
        raise ManifestPageInvalid(f"manifest page {tag} is over {MAX_CHUNK} bytes")
    if chunk_address(ciphertext) != address:
        raise ManifestPageInvalid(f"manifest page {tag} does not match its address")
    try:
        plain: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext[NONCE_SIZE:], _PAGE_AAD + file_id, ciphertext[:NONCE_SIZE], key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise ManifestPageInvalid(f"manifest page {tag} fails authentication") from exc
    try:
        items = _page_dec.decode(plain)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ManifestPageInvalid(f"manifest page {tag} is malformed: {exc}") from exc
    if len(items) != entries:
        raise ManifestPageInvalid(f"manifest page {tag} holds {len(items)} entries, the "
                                  f"manifest says {entries}")
    return [(a, n) for a, n in items]


def paginate(key: bytes, file_id: bytes, chunks: Sequence[tuple[bytes, int]]
             ) -> tuple[tuple[tuple[bytes, int], ...], bytes, dict[bytes, bytes]]:
    """Cut a chunk list into encrypted pages of :data:`PAGE_ENTRIES` entries: ``(pages as
    (address, entries), list hash, ciphertext by address)``. :class:`FileTooLarge` beyond
    :data:`MAX_PAGES` pages or :data:`MAX_FILE_CHUNKS` chunks."""
    per = PAGE_ENTRIES
    if len(chunks) > MAX_FILE_CHUNKS or -(-len(chunks) // per) > MAX_PAGES:
        raise FileTooLarge(f"{len(chunks)} chunks: over {MAX_FILE_CHUNKS} chunks or "
                           f"{MAX_PAGES} manifest pages")
    pages: list[tuple[bytes, int]] = []
    blobs: dict[bytes, bytes] = {}
    for i in range(0, len(chunks), per):
        part = chunks[i:i + per]
        addr, ct = encrypt_page(key, file_id, part)
        pages.append((addr, len(part)))
        blobs.setdefault(addr, ct)
    return tuple(pages), list_hash(chunks), blobs


def resolve(head: PagedManifest, key: bytes, fetch: Any) -> Manifest:
    """Phase one of reading a paged file: every page from ``fetch(address) -> bytes | None``
    (a ``has`` attribute, if any, is asked first), each verified (:func:`decrypt_page`), then
    the whole list against the signed list hash and the sizes against the manifest's size —
    all before any entry is returned. :class:`FileIncomplete` when a page is not here,
    :class:`ManifestPageInvalid` / :class:`ManifestInvalid` when one is wrong. Memory: the
    entry list (≤ MAX_FILE_CHUNKS) plus one page at a time."""
    distinct = list(dict.fromkeys(head.page_addresses))
    gone = [a for a in distinct if not _has(fetch, a)]
    if gone:
        raise FileIncomplete(len(gone), len(distinct) + head.entries)
    h = _list_hasher()
    entries: list[tuple[bytes, int]] = []
    for addr, n in head.pages:
        ct = fetch(addr)
        if ct is None:
            raise FileIncomplete(1, len(distinct) + head.entries)
        page = decrypt_page(key, head.file_id, addr, ct, n)
        _feed(h, page)
        entries.extend(page)
    if h.digest() != head.list_hash:
        raise ManifestPageInvalid("the manifest pages' entries do not match the signed list "
                                  "hash")
    if sum(n for _, n in entries) != head.size:
        raise ManifestInvalid("file manifest size does not match its chunks")
    return Manifest(head.space_id, head.file_id, head.name, head.media_type, head.size,
                    head.read_key_id, tuple(entries), head.author, paged=head)


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
        if n > MAX_FILE_CHUNKS:  # one over: a caller counting chunks sees the excess first
            raise FileTooLarge(f"file too large: more than {MAX_FILE_CHUNKS} chunks")
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
