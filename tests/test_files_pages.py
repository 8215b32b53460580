"""Paged (version-2) file manifests (docs/files.md "bigfile"): a file whose manifest does not fit
in one document change lists its chunks in encrypted manifest pages, blobs of the chunk table.

No multi-GiB file here: the page size and the one-change limit are module constants, lowered
by the ``paged`` fixture (pages of 8 entries, a 1 000-byte change), so a 3 MB file of ~45 chunks
takes the paged path end to end: add → head sync → fetch in two phases (pages, then chunks) →
byte-identical file; a backup pulls, keeps and collects pages like chunks (also when the keep
statement goes in CHUNK_KEEP_PARTs, and never on an incomplete set of parts); every page is
verified before any entry is used, and a wrong one is a typed error."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest

from p2psync.codec import pack
from p2psync.crypto import AccountKey, DeviceKey
from p2psync.crypto.ids import short_hash
from p2psync.errors import FileIncomplete, ManifestPageInvalid
from p2psync.node import Node
from p2psync.replica import files as F
from p2psync.replica import filespace as FS
from p2psync.replica.document import ROOT
from p2psync.replica.space import Space
from p2psync.replica.store import Store
from p2psync.sync import files_io
from p2psync.sync.messages import ChunkKeep, ChunkKeepPart, ChunkResponse
from tests.backup_helpers import NO_PERIODIC
from tests.conftest import Fleet
from tests.sync_helpers import fast_config, wait_any
from tests.test_files_agents import call, call_err, has_file, pair
from tests.test_files_gc import keep_reply

SIZE = 3_000_000  #: ~45 chunks: 6 pages of 8 entries
PER_PAGE = 8


@pytest.fixture
def paged(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pages of 8 entries, and a manifest over 1 000 bytes does not fit in one change."""
    monkeypatch.setattr(F, "PAGE_ENTRIES", PER_PAGE)
    monkeypatch.setattr(F, "MAX_MANIFEST_BYTES", 1000)
    yield


def _data(seed: int, n: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(n)


def _devices(tmp_path: Path) -> tuple[Space, Space]:
    """Two devices of one account in one space (B holds what document sync gave it)."""
    me = AccountKey.generate()
    a = Space.create(Store(tmp_path / "a.sqlite3"), me, DeviceKey.generate().public, window=0)
    b = Space.adopt(Store(tmp_path / "b.sqlite3"), me, DeviceKey.generate().public, a.id,
                    a.header.raw, a.acl_records(), window=0)
    return a, b


def _ship_docs(src: Space, dst: Space) -> None:
    dst.add_acl_records(src.acl_records())
    for tid in src.tree_ids():
        dst.add_changes(tid, [c.raw for c in src.tree(tid).changes()])


def _ship(src: Space, dst: Space, fid: bytes, addresses: list[bytes]) -> None:
    """What a chunk fetch stores: these blobs, each checked against its address."""
    pairs = [(x, src.store.get_chunk(x)) for x in addresses]
    FS.accept_chunks(dst, fid, [(x, c) for x, c in pairs if c is not None])


def _raw_manifest(space: Space, fid: bytes) -> bytes:
    raw = FS._as_bytes(space.document(fid).get([FS.MANIFEST_KEY]))
    assert raw is not None
    return raw


# --- the model: add, two phases, get ----------------------------------------------------------
def test_a_paged_file_is_read_in_two_phases(tmp_path: Path, paged: None) -> None:
    a, b = _devices(tmp_path)
    data = _data(1)
    added = FS.add_file(a, data, name="film.mkv")
    fid, m = added.manifest.file_id, added.manifest
    head = FS.head_of(a, fid)
    assert isinstance(head, F.PagedManifest) and m.paged == head
    assert len(m.chunks) > 3 * PER_PAGE and len(head.pages) == -(-len(m.chunks) // PER_PAGE)
    assert len(_raw_manifest(a, fid)) <= 1000  # the pages keep it within one change
    assert set(a.store.list_chunks(a.id, fid)) == set(m.addresses) | set(head.page_addresses)
    small = FS.add_file(a, _data(2, 200_000), name="small").manifest  # fits: v1, unchanged
    assert small.paged is None and isinstance(FS.head_of(a, small.file_id), F.Manifest)
    assert F.parse_manifest(_raw_manifest(a, small.file_id)) == small

    _ship_docs(a, b)  # B has the manifest, no page, no chunk
    pages = list(dict.fromkeys(head.page_addresses))
    info = FS.file_info(b, fid)
    assert (info.chunks, info.held, info.complete) == (len(pages) + len(m.chunks), 0, False)
    assert FS.missing_chunks(b, fid) == pages  # phase one: the pages, nothing else
    with pytest.raises(FileIncomplete):
        FS.get_file(b, fid, tmp_path / "out")
    assert FS.live_chunks(b, fid)[1] == set()  # unknown: keep everything, say nothing
    _ship(a, b, fid, pages[:2])
    assert FS.missing_chunks(b, fid) == pages[2:]
    _ship(a, b, fid, pages[2:])
    wanted = FS.missing_chunks(b, fid)  # phase two: the data chunks the pages list
    assert wanted == list(dict.fromkeys(m.addresses))
    info = FS.file_info(b, fid)
    assert (info.chunks, info.held) == (len(pages) + len(set(m.addresses)), len(pages))
    _ship(a, b, fid, wanted[:5])
    assert not FS.file_info(b, fid).complete
    _ship(a, b, fid, wanted[5:])
    assert FS.file_info(b, fid).complete and FS.missing_chunks(b, fid) == []
    assert FS.live_chunks(b, fid)[1] == set(m.addresses) | set(pages)
    assert FS.get_file(b, fid, tmp_path / "out") == SIZE
    assert (tmp_path / "out").read_bytes() == data
    assert {i.name for i in FS.list_files(b)} == {"film.mkv", "small"}


def test_an_edit_of_a_paged_file_keeps_its_new_pages(tmp_path: Path, paged: None) -> None:
    """The device's own GC after an edit: the new version's pages are live, the old ones go."""
    a, _b = _devices(tmp_path)
    data = _data(3)
    v1 = FS.add_file(a, data, name="f").manifest
    fid = v1.file_id
    edited = data[:SIZE // 2] + b"an edit" + data[SIZE // 2:]
    v2 = FS.add_file(a, edited, name="f", file_id=fid).manifest
    assert v2.paged is not None and v1.paged is not None
    assert set(v1.page_addresses) - set(v2.page_addresses)  # pages after the edit changed
    assert set(a.store.list_chunks(a.id, fid)) == set(v2.addresses) | set(v2.page_addresses)
    FS.get_file(a, fid, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == edited


# --- hostile pages ----------------------------------------------------------------------------
def _hostile(tmp_path: Path) -> tuple[Space, Space, AccountKey, bytes, F.Manifest, bytes]:
    a, b = _devices(tmp_path)
    m = FS.add_file(a, _data(4), name="f").manifest
    _ship_docs(a, b)
    _ship(a, b, m.file_id, a.store.list_chunks(a.id, m.file_id))
    rk = a.acl.read_key(m.read_key_id)
    assert rk is not None
    return a, b, a.me, F.file_key(rk, a.id, m.file_id), m, m.file_id


def _rewrite(space: Space, author: AccountKey, head: F.PagedManifest) -> None:
    """A writer member replaces the file's manifest (signed: only its content is hostile)."""
    doc = space.document(head.file_id)
    with doc.edit() as e:
        e.put(ROOT, FS.MANIFEST_KEY, head.sign(author))
    doc.flush()


def test_tampered_or_substituted_page_refused(tmp_path: Path, paged: None) -> None:
    """A page in the store whose bytes are not those of its address (corrupted, substituted),
    or over a chunk's size: ManifestPageInvalid before any entry is used, nothing written."""
    _a, b, _me, key, m, fid = _hostile(tmp_path)
    assert m.paged is not None
    page = m.paged.page_addresses[1]
    good = b.store.get_chunk(page)
    assert good is not None
    out = tmp_path / "out"
    for bad in (good[:-1] + bytes([good[-1] ^ 1]),  # a flipped bit
                good[:len(good) // 2],  # truncated
                b.store.get_chunk(m.addresses[0]),  # a data chunk in its place
                bytes(F.MAX_CHUNK + F.NONCE_SIZE + F.TAG_SIZE + 1)):  # oversize
        assert bad is not None
        b.store.delete_chunks([page])
        b.store.put_chunks(b.id, fid, [(page, bad)])  # the store seam does not check
        for read in (lambda: FS.get_file(b, fid, out), lambda: FS.missing_chunks(b, fid),
                     lambda: FS.manifest_of(b, fid)):
            with pytest.raises(ManifestPageInvalid):
                read()
        assert not out.exists()
        assert FS.live_chunks(b, fid)[1] == set()  # unreadable: nothing may be collected
        assert FS.collect_file_garbage(b, fid) == 0
    with pytest.raises(ManifestPageInvalid, match="over"):  # refused by size, first
        F.decrypt_page(key, fid, page, bytes(10 << 20), PER_PAGE)


def test_hostile_pages_from_a_writer_refused(tmp_path: Path, paged: None) -> None:
    """Pages that match their addresses and decrypt, from a (hostile or buggy) writer: too many
    entries, truncated plaintext, under another key, a list that does not hash to the signed
    list hash. Each is ManifestPageInvalid; none of its entries is used."""
    a, b, me, key, m, fid = _hostile(tmp_path)
    head = m.paged
    assert head is not None
    entries = list(m.chunks)

    def page_with(plain: bytes, k: bytes = key) -> bytes:
        nonce = bytes(F.NONCE_SIZE)
        ct = nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plain, F._PAGE_AAD + fid, nonce, k)
        b.store.put_chunks(b.id, fid, [(F.chunk_address(ct), ct)])
        return F.chunk_address(ct)

    first = [[x, n] for x, n in entries[:PER_PAGE]]
    cases = {
        "9 entries where the manifest says 8": page_with(pack([*first, first[0]])),
        "truncated plaintext": page_with(pack(first)[:-7]),
        "over the format's entries": page_with(pack([first[0]] * (F.MAX_PAGE_ENTRIES + 1))),
        "another file key": page_with(pack(first), k=bytes(32)),
        "not a page at all": page_with(b"\x00" * 64),
        "a data chunk named as a page": entries[0][0],  # matches its address: AAD differs
    }
    out = tmp_path / "out"
    for why, addr in cases.items():
        bad = F.PagedManifest(head.space_id, fid, head.name, head.media_type, head.size,
                              head.read_key_id, ((addr, PER_PAGE), *head.pages[1:]),
                              head.list_hash, head.author)
        _rewrite(a, me, bad)
        _ship_docs(a, b)
        with pytest.raises(ManifestPageInvalid):
            FS.get_file(b, fid, out)
        with pytest.raises(ManifestPageInvalid):
            FS.missing_chunks(b, fid)
        assert not out.exists(), why
    # the list hashes right, but page 1 holds 9 entries (page 2's first) and page 2 holds 7:
    # a page must hold exactly what the signed manifest says
    shifted = [F.encrypt_page(key, fid, entries[:PER_PAGE + 1]),
               F.encrypt_page(key, fid, entries[PER_PAGE + 1:2 * PER_PAGE])]
    b.store.put_chunks(b.id, fid, shifted)
    bad = F.PagedManifest(head.space_id, fid, head.name, head.media_type, head.size,
                          head.read_key_id, ((shifted[0][0], PER_PAGE),
                                             (shifted[1][0], PER_PAGE), *head.pages[2:]),
                          head.list_hash, head.author)
    _rewrite(a, me, bad)
    _ship_docs(a, b)
    with pytest.raises(ManifestPageInvalid, match="entries"):
        FS.get_file(b, fid, out)
    # well-formed pages listing other entries than the signed list hash covers
    swapped = [entries[1], entries[0], *entries[2:PER_PAGE]]
    paddr, pct = F.encrypt_page(key, fid, swapped)
    b.store.put_chunks(b.id, fid, [(paddr, pct)])
    bad = F.PagedManifest(head.space_id, fid, head.name, head.media_type, head.size,
                          head.read_key_id, ((paddr, PER_PAGE), *head.pages[1:]),
                          head.list_hash, head.author)
    _rewrite(a, me, bad)
    _ship_docs(a, b)
    with pytest.raises(ManifestPageInvalid, match="list hash"):
        FS.get_file(b, fid, out)
    assert not out.exists()
    _rewrite(a, me, head)  # the honest manifest again: the file reads
    _ship_docs(a, b)
    assert FS.get_file(b, fid, out) == SIZE


def test_pages_are_encrypted_in_their_own_domain(tmp_path: Path, paged: None) -> None:
    """A page and a data chunk of the same file with the same plaintext differ (own nonce
    personalisation and AAD): one can never stand for the other."""
    _a, _b, _me, key, m, fid = _hostile(tmp_path)
    entries = list(m.chunks[:PER_PAGE])
    paddr, pct = F.encrypt_page(key, fid, entries)
    caddr, cct = F.encrypt_chunk(key, fid, pack([[x, n] for x, n in entries]))
    assert paddr != caddr and pct[:F.NONCE_SIZE] != cct[:F.NONCE_SIZE]
    with pytest.raises(ManifestPageInvalid):
        F.decrypt_page(key, fid, caddr, cct, PER_PAGE)


# --- end to end: two agents on loopback -------------------------------------------------------
@pytest.mark.parametrize("carrier", ["tcp", "quic"])
async def test_paged_file_between_two_agents(fleet: Fleet, carrier: str, tmp_path: Path,
                                             paged: None) -> None:
    """``file.add`` on A, ``file.get`` on B: B fetches the pages, then the chunks they list,
    over the engines' chunk streams, and writes the file byte for byte."""
    (a, b), space = await pair(fleet, carrier, "a", "b")
    data = _data(5)
    src = tmp_path / "film.mkv"
    src.write_bytes(data)
    added = await call(a, "file.add", space=space.id, path=str(src))
    fid = FS.list_files(space)[0].file_id
    assert isinstance(FS.head_of(space, fid), F.PagedManifest)
    await has_file(b, space.id, fid)
    [row] = await call(b, "file.list", space=space.id)
    assert row["held"] == 0 and not row["complete"]
    out = tmp_path / "got.mkv"
    got = await call(b, "file.get", space=space.id, file=added["file"], out=str(out))
    assert got["size"] == SIZE and out.read_bytes() == data
    [row] = await call(b, "file.list", space=space.id)
    assert row["complete"] and row["held"] == row["chunks"] > SIZE // F.MAX_CHUNK


async def test_a_peer_serving_a_tampered_page_is_refused(fleet: Fleet, tmp_path: Path,
                                                         paged: None,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """A serves a flipped page: B stores nothing of it, the get fails typed, writes nothing."""
    (_a, b), space = await pair(fleet, "tcp", "a", "b")
    fid = FS.add_file(space, _data(6), name="f").manifest.file_id
    head = FS.head_of(space, fid)
    assert isinstance(head, F.PagedManifest)
    await has_file(b, space.id, fid)
    real = files_io.answer

    def tampering(store: Any, req: Any) -> Any:
        resp = real(store, req)
        chunks = tuple((x, c[:-1] + bytes([c[-1] ^ 1]) if x in head.page_addresses else c)
                       for x, c in resp.chunks)
        return type(resp)(resp.space_id, resp.file_id, chunks, resp.missing)

    monkeypatch.setattr(files_io, "answer", tampering)
    out = tmp_path / "got"
    err = await call_err(b, "file.get", space=space.id, file=short_hash(fid), out=str(out))
    assert err["type"] == "FileIncomplete"  # the page was refused on arrival, not stored
    assert not out.exists()
    sb = b.node.replicas.spaces[space.id]
    assert not sb.store.has_chunks(head.page_addresses)  # nothing of the bad answers stored
    assert not sb.store.list_chunks(space.id, fid)  # and no data chunk: pages come first


# --- the backup -------------------------------------------------------------------------------
def _held(node: Node, space_id: str, fid: bytes) -> set[bytes]:
    assert node.store is not None
    return set(node.store.list_chunks(space_id, fid))


def _blobs(m: F.Manifest) -> set[bytes]:
    return set(m.addresses) | set(m.page_addresses)


async def _backed_up(fleet: Fleet) -> tuple[Node, Any, Node, Space, bytes, F.Manifest]:
    """A laptop with one paged file, its backup holding every page and chunk of it."""
    backup, policy = await fleet.backup(head_sync_interval=NO_PERIODIC)
    laptop = await fleet.node("laptop", config=fast_config(head_sync_interval=NO_PERIODIC))
    space = laptop.create_space()
    space.emit_acl(lambda acl: acl.add_replicator(laptop.account, backup.account.public))
    v1 = FS.add_file(space, _data(7), name="f").manifest
    assert v1.paged is not None
    await laptop.connect(backup.address())
    await wait_any([backup], lambda: space.id in backup.spaces
                   and _held(backup, space.id, v1.file_id) == _blobs(v1))
    return backup, policy, laptop, space, v1.file_id, v1


@pytest.mark.parametrize("in_parts", [False, True])
async def test_backup_keeps_pages_of_a_live_file_and_drops_them_with_it(
        fleet: Fleet, paged: None, in_parts: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backup pulls a paged file's pages and chunks (offers name them all); after an edit
    the laptop's CHUNK_KEEP names the new pages, so the backup keeps them and collects the
    replaced ones; a tombstone frees the rest, pages included. ``in_parts``: the statement
    does not fit in one message (lowered to 16 addresses) and goes as CHUNK_KEEP_PARTs."""
    backup, policy, laptop, space, fid, v1 = await _backed_up(fleet)
    sent: list[Any] = []
    if in_parts:
        monkeypatch.setattr(files_io, "MAX_KEEP_ADDRESSES", 16)
        real = files_io.encode

        def spy(msg: Any, rid: int) -> bytes:
            sent.append(msg)
            return real(msg, rid)

        monkeypatch.setattr(files_io, "encode", spy)
    data = _data(7)
    v2 = FS.add_file(space, data[:SIZE // 3] + _data(8, SIZE // 3) + data[2 * SIZE // 3:],
                     name="f", file_id=fid).manifest
    assert v2.paged is not None and set(v1.page_addresses) - set(v2.page_addresses)
    await files_io.offer_file(laptop.engines, space, fid)  # new pages + chunks, CHUNK_KEEP
    await wait_any([backup], lambda: _held(backup, space.id, fid) == _blobs(v2))
    puller = files_io.Puller.of(backup.replicas)
    assert puller.collected == len(_blobs(v1) - _blobs(v2))
    assert set(v2.page_addresses) <= _held(backup, space.id, fid)
    if in_parts:
        parts = [m for m in sent if isinstance(m, ChunkKeepPart)]
        assert len(parts) == -(-len(_blobs(v2)) // 16) > 1
        assert not [m for m in sent if type(m) is ChunkKeep]
    used = policy.usage.spaces[space.id].bytes
    space.delete_objects([fid])
    await wait_any([backup], lambda: not _held(backup, space.id, fid))
    assert backup.store is not None
    assert not backup.store.has_chunks(list(_blobs(v2)))
    await wait_any([backup], lambda: policy.usage.spaces[space.id].bytes < used - SIZE)


async def test_an_incomplete_keep_statement_deletes_nothing(fleet: Fleet, paged: None) -> None:
    """Parts of a statement are acted on only once all of them (same heads, same count) are
    here: a lone part, or parts of two different statements, delete nothing."""
    backup, _policy, laptop, space, fid, _v1 = await _backed_up(fleet)
    everything = _held(backup, space.id, fid)
    puller = files_io.Puller.of(backup.replicas)
    engine = files_io.peers_for(laptop.engines, space.id)[0]
    heads = tuple(space.heads(fid))
    one, two = sorted(everything)[:1], sorted(everything)[1:2]

    async def say(part: ChunkKeepPart) -> None:
        assert isinstance(await keep_reply(engine, part), ChunkResponse)
        await wait_any([backup], lambda: puller.idle.is_set())

    await say(ChunkKeepPart(space.id, fid, heads, tuple(one), 0, 2))  # 1 of 2
    assert _held(backup, space.id, fid) == everything and puller.parts
    await say(ChunkKeepPart(space.id, fid, (b"\x01" * 32,), tuple(two), 1, 2))  # other heads
    assert _held(backup, space.id, fid) == everything
    await say(ChunkKeepPart(space.id, fid, heads, tuple(two), 1, 3))  # another count
    assert _held(backup, space.id, fid) == everything and puller.collected == 0
    assert puller.kept == 1  # only the latest statement's part waits
    await say(ChunkKeepPart(space.id, fid, heads, tuple(one), 0, 2))
    await say(ChunkKeepPart(space.id, fid, heads, tuple(two), 1, 2))  # complete: applied
    await wait_any([backup], lambda: _held(backup, space.id, fid) == set(one) | set(two))
    assert not puller.parts and puller.kept == 0
