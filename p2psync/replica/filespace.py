"""Encrypted files in a space: the glue between the storage model (:mod:`.files`), a
:class:`~p2psync.replica.space.Space` and its store (docs/files.md).

A file **is a document** of the space: its tree id is the file id, and its Automerge content
holds the signed manifest under :data:`MANIFEST_KEY`. So a file syncs, is gated by the ACL,
encrypted under the space's read key and deleted by a signed tombstone exactly like any
document, with no new record type. Re-adding a file under the same id (an edit) writes a new
manifest into the same document; its file key is unchanged while the read key is, so only
changed chunks are new. After a key rotation the next manifest names the new read key, and
chunks written from then on are under a key a removed member never had.

Chunks live in the store's chunk table (ciphertext only). A manifest can arrive long before its
chunks (sync is lazy): :func:`file_info` tells how many are held, :func:`get_file` refuses to
report a partial file as complete.

A file too large for its manifest to fit in one change has a **paged manifest**
(:class:`~p2psync.replica.files.PagedManifest`): its chunk list is in manifest pages, stored in
the chunk table like chunks. Every reader works in two phases: the pages first (fetched,
verified, :func:`~p2psync.replica.files.resolve`), then the data chunks they list —
:func:`missing_chunks` names the missing pages until all are here, :func:`file_info` counts
pages among the chunks, :func:`live_chunks` names pages and chunks (and nothing, i.e. "keep
everything", while it cannot read the pages).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2psync.errors import (
    AccessDenied,
    FileNotFound,
    FileTooLarge,
    ManifestInvalid,
    ObjectDeleted,
    P2PSyncError,
)
from p2psync.replica import files as F
from p2psync.replica.document import ROOT
from p2psync.replica.space import Space

#: the key of a file document's manifest (a byte string)
MANIFEST_KEY = "p2psync.file"
_BATCH = 64  #: chunks per store write while adding (≤ 16 MiB of ciphertext in memory)


@dataclass(frozen=True)
class AddResult:
    """What :func:`add_file` did: the manifest, and how much was new (an edit re-stores only
    the chunks it changed)."""

    manifest: F.Manifest
    chunks: int
    new_chunks: int
    new_bytes: int


@dataclass(frozen=True)
class FileInfo:
    """A file as listed: its manifest's facts and how many distinct chunks are held here."""

    file_id: bytes
    name: str
    media_type: str
    size: int
    chunks: int
    held: int

    @property
    def complete(self) -> bool:
        return self.held == self.chunks


class _Fetch:
    """``fetch(address)`` over the store, with ``has`` for the completeness check."""

    def __init__(self, space: Space) -> None:
        self.store = space.store

    def __call__(self, address: bytes) -> bytes | None:
        return self.store.get_chunk(address)

    def has(self, address: bytes) -> bool:
        return bool(self.store.has_chunks([address]))


def _key_for(space: Space, file_id: bytes, read_key_id: bytes) -> bytes:
    rk = space.acl.read_key(read_key_id)
    if rk is None:
        raise AccessDenied("this device holds no read key for this file (not a member when "
                           "it was written, or removed since)")
    return F.file_key(rk, space.id, file_id)


def add_file(space: Space, source: bytes | str | Path, *, name: str | None = None,
             media_type: str = "application/octet-stream",
             file_id: bytes | None = None) -> AddResult:
    """Add a file to the space (a new document), or replace the content of file ``file_id``.
    Chunks are encrypted under the current read key and stored; then the signed manifest is
    written into the file's document (so no manifest ever names a chunk not stored here)."""
    if name is None:
        name = Path(source).name if not isinstance(source, bytes) else "file"
    doc = space.document(file_id) if file_id is not None else space.new_document()
    fid = doc.tree.id
    _head, key_id = space.acl.write_position(space.me.public)
    key = _key_for(space, fid, key_id)
    chunks: list[tuple[bytes, int]] = []
    new_chunks = new_bytes = size = 0
    batch: dict[bytes, bytes] = {}
    added: list[bytes] = []  #: chunks this call stored (removed again if the file is refused)

    def flush() -> None:
        nonlocal new_chunks, new_bytes
        have = space.store.has_chunks(list(batch))
        new = [(a, c) for a, c in batch.items() if a not in have]
        space.store.put_chunks(space.id, fid, new)
        added.extend(a for a, _ in new)
        new_chunks += len(new)
        new_bytes += sum(len(c) for _, c in new)
        batch.clear()

    def too_large() -> FileTooLarge:
        space.store.delete_chunks(added)  # nothing of a refused file stays behind
        return FileTooLarge(f"over {size} bytes, {len(chunks)} chunks: too many for a "
                            f"manifest (at most {F.MAX_FILE_CHUNKS} chunks, 16 GiB at the "
                            f"average chunk size; docs/files.md)")

    for addr, n, ct in F.encrypt_stream(source, key, fid):  # bounded memory: batches
        chunks.append((addr, n))
        size += n
        batch[addr] = ct
        if len(batch) >= _BATCH:
            flush()
        if len(chunks) > F.MAX_FILE_CHUNKS:  # stop now rather than chunk, encrypt and
            batch.clear()  # store the rest first
            raise too_large()
    flush()
    manifest = F.Manifest(space.id, fid, name, media_type, size, key_id, tuple(chunks),
                          space.me.public)
    # a version-1 manifest when it fits in one document change (no entry is under 38 bytes),
    # else a paged one: its pages are stored first, like chunks (docs/files.md "bigfile")
    raw = (manifest.sign(space.me) if len(chunks) * 38 <= F.MAX_MANIFEST_BYTES
           and len(chunks) <= F.MAX_CHUNKS else b"")
    if not raw or len(raw) > F.MAX_MANIFEST_BYTES:
        try:
            pages, lhash, blobs = F.paginate(key, fid, chunks)
        except FileTooLarge:
            raise too_large() from None
        batch.update(blobs)
        flush()
        head = F.PagedManifest(space.id, fid, name, media_type, size, key_id, pages, lhash,
                               space.me.public)
        manifest = F.Manifest(space.id, fid, name, media_type, size, key_id, tuple(chunks),
                              space.me.public, paged=head)
        raw = head.sign(space.me)
    if len(raw) > F.MAX_MANIFEST_BYTES:  # one document change carries it (docs/files.md)
        raise too_large()
    with doc.edit() as e:
        e.put(ROOT, MANIFEST_KEY, raw)
    doc.flush()
    if file_id is not None:  # an edit: the chunks only the replaced version named go
        collect_file_garbage(space, fid)
    return AddResult(manifest, len(chunks), new_chunks, new_bytes)


def head_of(space: Space, file_id: bytes) -> F.Manifest | F.PagedManifest:
    """The signed manifest of a live file as its document holds it, verified (signature, this
    space, this file), its pages not read: a :class:`~p2psync.replica.files.PagedManifest`
    for a paged file. :class:`FileNotFound` if there is none."""
    if space.is_deleted(file_id) or not space.has_tree(file_id):
        raise FileNotFound(f"no file {file_id.hex()[:16]} in this space")
    try:
        value: Any = space.document(file_id).get([MANIFEST_KEY])
    except ObjectDeleted as exc:
        raise FileNotFound(f"file {file_id.hex()[:16]} was deleted") from exc
    raw = _as_bytes(value)
    if raw is None:
        raise FileNotFound(f"document {file_id.hex()[:16]} is not a file")
    m = F.parse_manifest(raw)
    if m.space_id != space.id or m.file_id != file_id:
        raise ManifestInvalid("file manifest was made for another file or space")
    return m


def manifest_of(space: Space, file_id: bytes) -> F.Manifest:
    """The verified manifest of a live file with its whole chunk list: a paged manifest's
    pages are read from the store and verified first (:class:`FileIncomplete` while one is
    not here, :class:`~p2psync.errors.ManifestPageInvalid` if one is wrong).
    :class:`FileNotFound` if there is no such file."""
    return _resolved(space, head_of(space, file_id))


def _resolved(space: Space, m: F.Manifest | F.PagedManifest) -> F.Manifest:
    if isinstance(m, F.Manifest):
        return m
    return F.resolve(m, _key_for(space, m.file_id, m.read_key_id), _Fetch(space))


def _as_bytes(value: Any) -> bytes | None:
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict) and isinstance(value.get("$bytes"), str):
        return base64.b64decode(value["$bytes"])
    return None


def file_info(space: Space, file_id: bytes) -> FileInfo:
    """A file's facts and how many of its distinct chunks are held. A paged file counts its
    manifest pages among its chunks; while a page is missing, its chunk count is the pages
    plus the entries they hold (the distinct count is not known yet) and only pages count as
    held, so it is never complete before every page and chunk is here."""
    head = head_of(space, file_id)
    if isinstance(head, F.PagedManifest):
        pages = list(dict.fromkeys(head.page_addresses))
        held_pages = len(space.store.has_chunks(pages))
        if held_pages < len(pages):
            return FileInfo(file_id, head.name, head.media_type, head.size,
                            len(pages) + head.entries, held_pages)
    m = _resolved(space, head)
    distinct = list(dict.fromkeys(m.page_addresses + m.addresses))
    held = len(space.store.has_chunks(distinct))
    return FileInfo(file_id, m.name, m.media_type, m.size, len(distinct), held)


def list_files(space: Space) -> list[FileInfo]:
    """Every live file of the space (documents holding a valid manifest), by name."""
    out: list[FileInfo] = []
    for tid in space.tree_ids():
        try:
            out.append(file_info(space, tid))
        except (FileNotFound, ManifestInvalid, AccessDenied):
            continue
    return sorted(out, key=lambda i: (i.name, i.file_id))


def missing_chunks(space: Space, file_id: bytes) -> list[bytes]:
    """Addresses of a file's chunks not held here, in file order (what a fetch asks for).
    For a paged file, phase one: its missing manifest pages, until every page is here; then
    (the pages verified) its missing data chunks. Empty only when the file is complete."""
    head = head_of(space, file_id)
    if isinstance(head, F.PagedManifest):
        pages = list(dict.fromkeys(head.page_addresses))
        have = space.store.has_chunks(pages)
        if len(have) < len(pages):
            return [a for a in pages if a not in have]
    m = _resolved(space, head)
    return F.missing(m, space.store.has_chunks(m.addresses))


def get_file(space: Space, file_id: bytes, out: str | Path) -> int:
    """Write the file to ``out`` once every chunk is here and verified (temp file + rename);
    :class:`~p2psync.errors.FileIncomplete` otherwise, nothing written."""
    m = manifest_of(space, file_id)
    return F.assemble(m, _key_for(space, file_id, m.read_key_id), _Fetch(space), Path(out))


def accept_chunks(space: Space, file_id: bytes, pairs: Sequence[tuple[bytes, bytes]]) -> int:
    """Store chunks received from a peer or a backup after checking each address (a device
    or backup without the read key can still refuse a substituted chunk). Returns new count."""
    F.check_chunks(pairs)
    return space.store.put_chunks(space.id, file_id, pairs)


def live_chunks(space: Space, file_id: bytes) -> tuple[tuple[bytes, ...], set[bytes]]:
    """The heads of a file's document and every chunk address a manifest **at any one of those
    heads** names: with concurrent edits (two heads) both sides' manifests count, whichever
    Automerge shows, so no chunk a current version may need is ever collected. Older versions
    in the document's history do not count (docs/files.md "Backup GC": a file's chunks are
    kept for its current version(s) only). A paged manifest's pages are live too. Empty for a
    deleted or unreadable file, and when a paged manifest at a head cannot be read here (a
    page missing, no key): an empty set means "unknown, keep everything"."""
    if space.is_deleted(file_id) or not space.has_tree(file_id):
        return (), set()
    heads = tuple(sorted(space.heads(file_id)))
    doc = space.document(file_id)
    live: set[bytes] = set()
    for h in heads:
        raw = _as_bytes(doc.get([MANIFEST_KEY], heads=[h]))
        if raw is None:
            continue
        try:
            m = F.parse_manifest(raw)
        except ManifestInvalid:
            continue
        if m.space_id != space.id or m.file_id != file_id:
            continue
        if isinstance(m, F.PagedManifest):
            try:
                m = _resolved(space, m)
            except P2PSyncError:  # its pages are not all here (or wrong): what it names is
                return heads, set()  # unknown, so nothing may be collected
        live.update(m.page_addresses)
        live.update(m.addresses)
    return heads, live


def collect_file_garbage(space: Space, file_id: bytes) -> int:
    """Drop this file's chunks no manifest at its current heads names (replaced by an edit);
    returns how many went. Needs the read key (a backup learns the live set from a member:
    CHUNK_KEEP)."""
    heads, live = live_chunks(space, file_id)
    if not heads or not live:
        return 0  # deleted (the tombstone frees the chunks) or unreadable: keep everything
    dead = [a for a in space.store.list_chunks(space.id, file_id) if a not in live]
    return space.store.delete_chunks(dead) if dead else 0


def collect_garbage(space: Space) -> int:
    """Drop chunks of the space no live manifest references (after a deletion or an edit);
    returns how many went."""
    live: set[bytes] = set()
    for info in list_files(space):
        live.update(live_chunks(space, info.file_id)[1])
    dead = [a for a in space.store.list_chunks(space.id) if a not in live]
    return space.store.delete_chunks(dead)
