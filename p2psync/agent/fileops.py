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

import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from p2psync.agent.ops import LOCAL_OPS, LocalOp, Name, Params, Ref
from p2psync.crypto.ids import short_hash
from p2psync.device import LocalDevice, doc_ref
from p2psync.errors import FileIncomplete, InvalidParams
from p2psync.replica import filespace as FS
from p2psync.replica.files import MAX_MEDIA_TYPE
from p2psync.sync.files_io import fetch_file

if TYPE_CHECKING:  # pragma: no cover
    from p2psync.agent.core import Agent

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


def _row(info: FS.FileInfo) -> dict[str, Any]:
    return {"file": short_hash(info.file_id), "name": info.name, "media_type": info.media_type,
            "size": info.size, "chunks": info.chunks, "held": info.held,
            "complete": info.complete}


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
    return [_row(i) for i in FS.list_files(dev.resolve_space(space))]


def file_info(dev: LocalDevice, space: str, file: str) -> dict[str, Any]:
    sp = dev.resolve_space(space)
    return _row(FS.file_info(sp, doc_ref(sp, file)))


FILE_OPS: dict[str, LocalOp] = {
    "file.add": LocalOp(FileAddParams, file_add),
    "file.get": LocalOp(FileGetParams, file_get),
    "file.list": LocalOp(FileListParams, file_list),
    "file.info": LocalOp(FileParams, file_info),
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
    if not await fetch_file(agent.node.engines, sp, fid):
        info = FS.file_info(sp, fid)  # what the connected peers (if any) had is kept
        raise FileIncomplete(info.chunks - info.held, info.chunks)
    return dev, sp, fid


async def agent_file_get(agent: Agent, space: str, file: str, out: str) -> dict[str, Any]:
    dev, _sp, _fid = await fetch(agent, space, file)
    return file_get(dev, space, file, out)


AgentRun = Callable[[Any, Params], Awaitable[Any]]


def _on_agent(fn: Callable[..., Awaitable[Any]]) -> AgentRun:
    """``fn(agent, **params)`` as an API runner ``run(ctx, params)`` (ctx.agent is the agent)."""
    async def run(ctx: Any, p: Params) -> Any:
        return await fn(ctx.agent, **msgspec.structs.asdict(p))
    return run


#: ops that need the running agent (its peers): ``p2psync.api`` puts them over FILE_OPS
AGENT_FILE_OPS: dict[str, tuple[type[Params], AgentRun]] = {
    "file.get": (FileGetParams, _on_agent(agent_file_get)),
}
