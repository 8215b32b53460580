"""Encrypted-file operations of a device (issue 18, docs/files.md): ``file.add``,
``file.get``, ``file.list``, ``file.info``. Importing this module registers them into
:data:`p2psync.agent.ops.LOCAL_OPS` (``p2psync.api`` imports it before building ``OPS``), so the
CLI (without an agent) and the local API (with one) dispatch them like every other op; ops.py
itself does not import it (that would be an import cycle).

Paths are paths on the machine of the agent (the local API is a local socket).

With an agent running, ``file.get`` first fetches the chunks this store lacks from every
connected peer sharing the space (:data:`AGENT_FILE_OPS`, which ``p2psync.api`` puts over the
local ones): chunks are fetched lazily, when a file is opened, never with head sync."""

from __future__ import annotations

import json
import mimetypes
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec

from p2psync.agent.ops import LOCAL_OPS, LocalOp, Name, Params, Ref
from p2psync.crypto.ids import short_hash
from p2psync.device import LocalDevice, doc_ref
from p2psync.errors import FileIncomplete, InvalidParams, P2PSyncError
from p2psync.replica import filespace as FS
from p2psync.replica.files import MAX_MEDIA_TYPE
from p2psync.sync.files_io import fetch_file, offer_file

#: the running agent (p2psync.agent.core.Agent; not imported: core imports this module)
Agent = Any

FilePath = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
MediaType = Annotated[str, msgspec.Meta(max_length=MAX_MEDIA_TYPE)]


class FileAddParams(Params, frozen=True):
    space: Ref
    path: FilePath
    name: Name | None = None
    media_type: MediaType | None = None
    file: Ref | None = None  #: replace this file's content (an edit: only changed chunks)


class FileGetParams(Params, frozen=True):
    space: Ref
    file: Ref
    out: FilePath


class FileParams(Params, frozen=True):
    space: Ref
    file: Ref


class FileListParams(Params, frozen=True):
    space: Ref


class FileCacheParams(Params, frozen=True):
    max_bytes: Annotated[int, msgspec.Meta(ge=0)] | None = None
    unlimited: bool = False


PINS = "pinned-files.json"  #: in the home: {space id: [file id hex, ...]}


def pins(dev: LocalDevice) -> dict[str, set[str]]:
    """Pinned files of this device: kept complete (fetched when pinned) and never evicted."""
    try:
        data = json.loads((dev.home.path / PINS).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidParams(f"{dev.home.path / PINS} is unreadable: {exc}") from exc
    return {str(k): {str(f) for f in v} for k, v in data.items()} if isinstance(
        data, dict) else {}


def _save_pins(dev: LocalDevice, data: dict[str, set[str]]) -> None:
    path = dev.home.path / PINS
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: sorted(v) for k, v in data.items() if v}, indent=1,
                              sort_keys=True))
    os.replace(tmp, path)


CACHE = "file-cache.json"  #: in the home: {"limit": bytes|null, "files": {space: {fid: time}}}


def _cache(dev: LocalDevice) -> dict[str, Any]:
    try:
        data = json.loads((dev.home.path / CACHE).read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as exc:
        raise InvalidParams(f"{dev.home.path / CACHE} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        data = {}
    files = data.get("files")
    return {"limit": data.get("limit") if isinstance(data.get("limit"), int) else None,
            "files": files if isinstance(files, dict) else {}}


def _save_cache(dev: LocalDevice, data: dict[str, Any]) -> None:
    path = dev.home.path / CACHE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _held_bytes(sp: Any, fid: bytes) -> int:
    """Ciphertext bytes of a file's chunks held here (plaintext length + 40 per chunk)."""
    try:
        m = FS.manifest_of(sp, fid)
    except P2PSyncError:
        return 0
    held = sp.store.has_chunks(list(dict.fromkeys(m.addresses)))
    return sum(n + 40 for a, n in dict(m.chunks).items() if a in held)


def touch(dev: LocalDevice, space_id: str, fid: bytes) -> None:
    """Note that a file fetched from peers was used now (the cache's LRU order). Only fetched
    files are cache: what this device added itself is its data and is never evicted."""
    data = _cache(dev)
    data["files"].setdefault(space_id, {})[fid.hex()] = time.time()
    _save_cache(dev, data)


def evict(dev: LocalDevice, limit: int | None) -> dict[str, Any]:
    """Drop the chunks of the least recently used fetched, unpinned files until those hold at
    most ``limit`` bytes (None: no limit; pinned files and files added here do not count).
    Dropped files stay listed (their manifests are documents) and are fetched again when
    opened."""
    data = _cache(dev)
    pinned = pins(dev)
    entries = []
    for sid, fs in data["files"].items():
        if sid not in dev.space_ids():
            continue
        sp = dev.open_space(sid)
        for fhex, ts in fs.items():
            if fhex not in pinned.get(sid, set()):  # pinned files are not cache
                entries.append((float(ts), sid, fhex, _held_bytes(sp, bytes.fromhex(fhex))))
    total = sum(e[3] for e in entries)
    evicted = []
    for _ts, sid, fhex, size in sorted(entries):
        if limit is None or total <= limit:
            break
        if not size:
            continue
        store = dev.open_space(sid).store
        store.delete_chunks(store.list_chunks(sid, bytes.fromhex(fhex)))
        total -= size
        evicted.append(fhex[:16])
        del data["files"][sid][fhex]
    _save_cache(dev, data)
    return {"limit": limit, "cached_bytes": total, "evicted": evicted}


def file_cache(dev: LocalDevice, max_bytes: int | None = None,
               unlimited: bool = False) -> dict[str, Any]:
    """Set the cache size (``max_bytes``; ``unlimited`` removes it) and evict down to it now;
    without arguments, report and apply the current one."""
    data = _cache(dev)
    if unlimited or max_bytes is not None:
        data["limit"] = None if unlimited else max_bytes
        _save_cache(dev, data)
    return evict(dev, data["limit"])


def _row(info: FS.FileInfo, pinned: bool = False) -> dict[str, Any]:
    return {"file": short_hash(info.file_id), "name": info.name, "media_type": info.media_type,
            "size": info.size, "chunks": info.chunks, "held": info.held,
            "complete": info.complete, "pinned": pinned}


def file_add(dev: LocalDevice, space: str, path: str, name: str | None = None,
             media_type: str | None = None, file: str | None = None) -> dict[str, Any]:
    sp = dev.resolve_space(space)
    src = Path(path).expanduser()
    if not src.is_file():
        raise InvalidParams(f"{path}: not a readable file")
    mt = media_type or mimetypes.guess_type(src.name)[0] or "application/octet-stream"
    fid = doc_ref(sp, file) if file else None
    res = FS.add_file(sp, src, name=name or src.name, media_type=mt, file_id=fid)
    return {"space_id": sp.id, "file": short_hash(res.manifest.file_id),
            "size": res.manifest.size, "chunks": res.chunks, "new_chunks": res.new_chunks,
            "new_bytes": res.new_bytes}


def file_get(dev: LocalDevice, space: str, file: str, out: str) -> dict[str, Any]:
    sp = dev.resolve_space(space)
    fid = doc_ref(sp, file)
    size = FS.get_file(sp, fid, Path(out).expanduser())
    return {"space_id": sp.id, "file": short_hash(fid), "out": out, "size": size}


def file_list(dev: LocalDevice, space: str) -> list[dict[str, Any]]:
    sp = dev.resolve_space(space)
    pinned = pins(dev).get(sp.id, set())
    return [_row(i, i.file_id.hex() in pinned) for i in FS.list_files(sp)]


def file_info(dev: LocalDevice, space: str, file: str) -> dict[str, Any]:
    sp = dev.resolve_space(space)
    fid = doc_ref(sp, file)
    return _row(FS.file_info(sp, fid), fid.hex() in pins(dev).get(sp.id, set()))


def file_pin(dev: LocalDevice, space: str, file: str) -> dict[str, Any]:
    """Mark a file pinned (the agent fetches it at once: see :func:`agent_file_pin`)."""
    sp = dev.resolve_space(space)
    fid = doc_ref(sp, file)
    FS.head_of(sp, fid)  # a live file (a paged one: its pages may not be here yet)
    data = pins(dev)
    data.setdefault(sp.id, set()).add(fid.hex())
    _save_pins(dev, data)
    return file_info(dev, space, file)


def file_unpin(dev: LocalDevice, space: str, file: str) -> dict[str, Any]:
    sp = dev.resolve_space(space)
    fid = doc_ref(sp, file)
    data = pins(dev)
    data.get(sp.id, set()).discard(fid.hex())
    _save_pins(dev, data)
    return file_info(dev, space, file)


FILE_OPS: dict[str, LocalOp] = {
    "file.add": LocalOp(FileAddParams, file_add),
    "file.get": LocalOp(FileGetParams, file_get),
    "file.list": LocalOp(FileListParams, file_list),
    "file.info": LocalOp(FileParams, file_info),
    "file.pin": LocalOp(FileParams, file_pin),
    "file.unpin": LocalOp(FileParams, file_unpin),
    "file.cache": LocalOp(FileCacheParams, file_cache),
}

LOCAL_OPS.update(FILE_OPS)


# --- with a running agent: chunks come from peers --------------------------------------------
async def fetch(agent: Agent, space: str, file: str) -> tuple[LocalDevice, Any, bytes]:
    """Fetch what this store lacks of a file from the connected peers sharing its space;
    :class:`FileIncomplete` (saying how much is here) when they do not have the rest."""
    dev = agent.device
    assert dev is not None
    sp = dev.resolve_space(space)
    fid = doc_ref(sp, file)
    if FS.missing_chunks(sp, fid):
        touch(dev, sp.id, fid)  # what is fetched is cache (LRU, evictable unless pinned)
    if not await fetch_file(agent.node.engines, sp, fid):
        info = FS.file_info(sp, fid)  # what the connected peers (if any) had is kept
        raise FileIncomplete(info.chunks - info.held, info.chunks)
    return dev, sp, fid


async def agent_file_get(agent: Agent, space: str, file: str, out: str) -> dict[str, Any]:
    dev, sp, fid = await _fetched(agent, space, file)
    res = file_get(dev, space, file, out)
    _used(dev, sp.id, fid)
    return res


async def _fetched(agent: Agent, space: str, file: str) -> tuple[LocalDevice, Any, bytes]:
    """:func:`fetch`, then a ``file`` event (origin ``fetched``) if chunks arrived."""
    dev = agent.device
    assert dev is not None
    sp = dev.resolve_space(space)
    fid = doc_ref(sp, file)
    had = FS.missing_chunks(sp, fid)
    try:
        return await fetch(agent, space, file)
    finally:
        if had and len(FS.missing_chunks(sp, fid)) < len(had):
            _announce(agent, sp, fid, "fetched")


def _used(dev: LocalDevice, space_id: str, fid: bytes) -> None:
    """A file was opened through the agent: note it in the cache, evict over the limit."""
    if fid.hex() not in _cache(dev)["files"].get(space_id, {}):
        return  # added here (or held from the start): this device's data, not cache
    touch(dev, space_id, fid)
    evict(dev, _cache(dev)["limit"])


async def agent_file_add(agent: Agent, space: str, path: str, name: str | None = None,
                         media_type: str | None = None, file: str | None = None
                         ) -> dict[str, Any]:
    """Add as without an agent, then offer the chunks to the connected backups of the space
    (they pull them at once; a backup away now gets them offered when it next connects)."""
    dev = agent.device
    assert dev is not None
    out = file_add(dev, space, path, name, media_type, file)
    sp = dev.resolve_space(out["space_id"])
    await offer_file(agent.node.engines, sp, doc_ref(sp, out["file"]))
    return out


async def agent_file_pin(agent: Agent, space: str, file: str) -> dict[str, Any]:
    """Pin, then fetch what is missing from the connected peers (FileIncomplete if they lack
    some: the pin stays, and ``file pin`` again later fetches the rest)."""
    dev = agent.device
    assert dev is not None
    file_pin(dev, space, file)
    _dev, sp, fid = await _fetched(agent, space, file)
    _used(dev, sp.id, fid)
    return file_info(dev, space, file)


def file_event(space: Any, file_id: bytes, origin: str) -> dict[str, Any] | None:
    """The ``file`` change event of a document that holds a file (None for other documents
    and for files this device cannot read): what apps show, with ``held``/``complete``."""
    try:
        info = FS.file_info(space, file_id)
    except P2PSyncError:
        return None
    return {"event": "file", "space_id": space.id, "doc": short_hash(file_id), **_row(info),
            "origin": origin}


def _announce(agent: Agent, space: Any, file_id: bytes, origin: str) -> None:
    ev = file_event(space, file_id, origin)
    if ev is not None:
        for sub in list(agent._subs.values()):
            sub.offer(ev)


AgentRun = Callable[[Any, Params], Awaitable[Any]]


def _on_agent(fn: Callable[..., Awaitable[Any]]) -> AgentRun:
    """``fn(agent, **params)`` as an API runner ``run(ctx, params)`` (ctx.agent is the agent)."""
    async def run(ctx: Any, p: Params) -> Any:
        return await fn(ctx.agent, **msgspec.structs.asdict(p))
    return run


#: ops that need the running agent (its peers): ``p2psync.api`` puts them over FILE_OPS
AGENT_FILE_OPS: dict[str, tuple[type[Params], AgentRun]] = {
    "file.add": (FileAddParams, _on_agent(agent_file_add)),
    "file.get": (FileGetParams, _on_agent(agent_file_get)),
    "file.pin": (FileParams, _on_agent(agent_file_pin)),
}
