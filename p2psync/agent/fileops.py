"""Encrypted-file operations of a device (issue 18, docs/files.md): ``file.add``,
``file.get``, ``file.list``, ``file.info``. Importing this module registers them into
:data:`p2psync.agent.ops.LOCAL_OPS` (``p2psync.api`` imports it before building ``OPS``), so the
CLI (without an agent) and the local API (with one) dispatch them like every other op; ops.py
itself does not import it (that would be an import cycle).

Paths are paths on the machine of the agent (the local API is a local socket)."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated, Any

import msgspec

from p2psync.agent.ops import LOCAL_OPS, LocalOp, Name, Params, Ref
from p2psync.crypto.ids import short_hash
from p2psync.device import LocalDevice, doc_ref
from p2psync.errors import InvalidParams
from p2psync.replica import filespace as FS
from p2psync.replica.files import MAX_MEDIA_TYPE

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
