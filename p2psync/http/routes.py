"""The REST face of the local API, generated from its dispatch table :data:`p2psync.api.OPS`.

Every operation ``a.b`` of the table is ``POST /api/v1/a/b`` with its parameters as the JSON
body, validated by the op's own msgspec schema (the same check as on the Unix socket); an op
that changes nothing (:data:`SAFE_OPS`) also answers ``GET`` with its parameters in the query
string. Because the routes are computed from the table when the server starts, an op added to
``OPS`` is an HTTP endpoint (and in the OpenAPI description) without a line here; a new op is
POST-only until it is listed as safe, the safe default.

The streaming ops (``subscribe``/``unsubscribe``) need a connection that carries events: over
HTTP that is ``GET /api/v1/events`` (Server-Sent Events), not an endpoint per op.

Every error is answered ``{"error": {"type": ..., "message": ...}}`` with the status of
:func:`http_status`: the error class (or its nearest ancestor) in :data:`STATUS_BY_TYPE`.
Sans-IO: no aiohttp here.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from p2psync.agent import ops
from p2psync.errors import InvalidParams, P2PSyncError

PREFIX = "/api/v1"
EVENTS_PATH = PREFIX + "/events"
OPENAPI_PATH = PREFIX + "/openapi.json"
STREAM_OPS = frozenset({"subscribe", "unsubscribe"})  #: served by EVENTS_PATH

#: Ops that read and change nothing: they also answer GET (query-string parameters). The two
#: waits change nothing either (they return when something else did).
SAFE_OPS = frozenset({"ping", "whoami", "status", "peers", "space.list", "space.members",
                      "space.requests", "space.invites", "space.join_state",
                      "space.sync_state", "space.wait_access", "space.wait_synced",
                      "doc.list", "doc.get", "doc.history", "device.list", "file.list",
                      "file.info"})

#: Ops that write (or have effects a GET must not have): POST only. Every op is in exactly one
#: of the two sets (a test checks it), so a new op is classified on purpose.
WRITE_OPS = frozenset({
    "space.create", "space.rename", "space.invite", "space.join", "space.leave",
    "space.remove", "space.accept", "space.decline", "space.revoke", "space.add_replicator",
    "space.replicate", "space.add_backup", "space.delete_docs", "space.delete",
    # asks the backup for a signed receipt and keeps it as evidence (a write)
    "space.backup_status",
    "doc.new", "doc.set", "doc.change", "doc.delete", "doc.insert", "doc.splice",
    "doc.increment", "doc.counter", "doc.import",
    "doc.export",  # writes a file when given `file`
    "file.add", "file.get",  # file.get writes `out`
    "file.pin", "file.unpin", "file.cache",  # fetch, mark, evict
    "device.add", "device.add_wait", "device.remove",
})

#: error type (class name) -> HTTP status; a class not listed takes its nearest ancestor's
STATUS_BY_TYPE: dict[str, int] = {
    "InvalidRequest": 400,
    "Unauthorized": 401,
    "OriginRefused": 403,
    "AccessDenied": 403,
    "UnknownOperation": 404,
    "NotFound": 404,
    "MethodNotAllowed": 405,
    "InvalidParams": 422,
    "InvalidPath": 422,
    "BadId": 422,
    "DecodeError": 422,
    "PayloadTooLarge": 413,
    "TransportError": 502,
    "JoinError": 502,
    "StoreError": 503,
    "Timeout": 504,
    "InternalError": 500,
    "P2PSyncError": 409,  #: the operation was refused as asked (OpError, AccessDenied, …)
}


@dataclass(frozen=True)
class Route:
    """One operation as an HTTP endpoint."""

    op: str
    path: str
    methods: tuple[str, ...]
    params: type[ops.Params]


def op_path(op: str) -> str:
    """``space.sync_state`` -> ``/api/v1/space/sync_state``."""
    return f"{PREFIX}/{op.replace('.', '/')}"


def routes(table: Mapping[str, Any] | None = None) -> list[Route]:
    """The endpoints of every op of ``table`` (default: :data:`p2psync.api.OPS` as it is now),
    sorted by path; the table's entries need a ``params`` schema."""
    if table is None:
        from p2psync.api import OPS

        table = OPS
    out = []
    for name, op in table.items():
        if name in STREAM_OPS:
            continue
        methods = ("GET", "POST") if name in SAFE_OPS else ("POST",)
        out.append(Route(name, op_path(name), methods, op.params))
    return sorted(out, key=lambda r: r.path)


def _subclasses(cls: type) -> list[type]:
    out, todo = [], [cls]
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c.__subclasses__())
    return out


def http_status(error_type: str) -> int:
    """The HTTP status of an error answered with type ``error_type`` (a class name)."""
    if error_type in STATUS_BY_TYPE:
        return STATUS_BY_TYPE[error_type]
    for cls in _subclasses(P2PSyncError):
        if cls.__name__ == error_type:
            for base in cls.__mro__:
                if base.__name__ in STATUS_BY_TYPE:
                    return STATUS_BY_TYPE[base.__name__]
    return 500


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message}}


def _is_list(tp: Any) -> bool:
    """Whether a (possibly Annotated / Optional) field type is a list."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin is list:
            return True
        elif origin in (typing.Union, types.UnionType):
            return any(_is_list(a) for a in typing.get_args(tp) if a is not type(None))
        else:
            return False


def query_params(op: str, schema: type[ops.Params],
                 query: Mapping[str, list[str]]) -> dict[str, Any]:
    """A GET request's query string (each key with its list of values) as the op's params:
    list fields take every value, others exactly one; strings are converted to the declared
    types (``?timeout=5`` is a float, ``?text=true`` a bool); then checked like a body."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(schema)}
    raw: dict[str, Any] = {}
    for key, values in query.items():
        f = fields.get(key)
        if f is None:
            raw[key] = values[-1]  # refused below as an unknown parameter
        elif _is_list(f.type):
            raw[key] = list(values)
        elif len(values) != 1:
            raise InvalidParams(f"{op}: give {key} once, not {len(values)} times")
        else:
            raw[key] = values[0]
    try:
        converted = msgspec.convert(raw, schema, strict=False)
    except msgspec.ValidationError as exc:
        msg = (str(exc).replace("Object contains unknown field", "unknown parameter")
               .replace("Object missing required field", "missing parameter")
               .replace("`$.", "`"))
        raise InvalidParams(f"{op}: {msg}") from None
    out: dict[str, Any] = msgspec.to_builtins(converted)
    return {k: v for k, v in out.items() if k in raw}
