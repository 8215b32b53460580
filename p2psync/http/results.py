"""What each operation of the local API answers, as JSON Schema (the OpenAPI ``200`` bodies).

The ops return plain data (docs/local-api.md has the table), so their shapes are declared here
in a compact form: ``"space_id:s doc:s heads:[s]"`` is an object with those required fields
(``s`` string, ``i`` integer, ``n`` number, ``b`` boolean, ``o`` object, ``a`` array, ``*``
any JSON, ``[x]`` an array of x, a trailing ``?`` allows null); a leading ``[]`` makes it a
list of such objects. Fields not named are allowed (answers may grow). ``tests/test_http.py``
validates every real answer of its run against these schemas, and a test checks that every op
has one, so a new op without a declared result fails.
"""

from __future__ import annotations

from typing import Any

_TYPES = {"s": "string", "i": "integer", "n": "number", "b": "boolean", "o": "object",
          "a": "array"}

_HEADS = "space_id:s doc:s heads:[s]"

#: op -> compact result shape (see the module docstring)
SHAPES: dict[str, str] = {
    "ping": "api:i peer_id:s",
    "whoami": "account_id:s peer_id:s home:s",
    "status": "version:s peer_id:s account_id:s home:s listening:a uptime:n mdns:o spaces:a "
              "peers:a endpoints:a backup_receipts:*",
    "peers": "[] peer_id:s account_id:s? transport:s?",
    "device.add": "code:s addresses:[s] link:s attempts:i",
    "device.add_wait": "peer_id:s name:s paired:b",
    "device.list": "[] peer_id:s name:s? this_device:b state:s paired_at:i?",
    "device.remove": "peer_id:s removed:b",
    "space.create": "space_id:s name:s",
    "space.rename": "space_id:s name:s? alias:s?",
    "space.list": "[] space_id:s name:s shared_name:s? alias:s? role:s documents:i members:i",
    "space.invite": "space_id:s invite:s role:s approval_required:b addresses:[s] "
                    "expires_at:i?",
    "space.join": "space_id:s role:s documents:i state:s",
    "space.wait_access": "space_id:s state:s role:s",
    "space.join_state": "space_id:s state:s",
    "space.leave": "space_id:s left:b forgotten:b was:s",
    "space.members": "[] account_id:s role:s",
    "space.remove": "space_id:s",
    "space.requests": "[] request:s account_id:s invite:s",
    "space.invites": "[] invite:s role:s approval_required:b by:s expires_at:i? expired:b "
                     "pending_requests:i",
    "space.revoke": "space_id:s revoked:s",
    "space.decline": "space_id:s declined:s",
    "space.accept": "space_id:s accepted:s",
    "space.add_replicator": "space_id:s replicator:s",
    "space.replicate": "space_id:s documents:i",
    "space.sync_state": "space_id:s documents:i peers:i in_sync:i pending:i",
    "space.wait_synced": "space_id:s documents:i peers:i in_sync:i pending:i",
    "space.add_backup": "space_id:s",
    "space.backup_status": "space_id:s receipts:a",
    "space.delete_docs": "space_id:s deleted:[s]",
    "space.delete": "space_id:s deleted:b",
    "doc.new": "space_id:s doc:s",
    "doc.list": "[] doc:s heads:[s]",
    "doc.set": _HEADS,
    "doc.change": _HEADS + " edits:i",
    "doc.delete": _HEADS,
    "doc.insert": _HEADS,
    "doc.splice": _HEADS,
    "doc.increment": _HEADS,
    "doc.counter": _HEADS,
    "doc.export": "space_id:s doc:s bytes:i",
    "doc.import": _HEADS + " bytes:i",
    "doc.get": "*",
    "doc.history": "[] change:s author:s time:s parents:[s] snapshot:b signature_ok:b "
                   "quarantined:s? removed_after:s?",
    "file.add": "space_id:s file:s size:i chunks:i",
    "file.get": "space_id:s file:s out:s size:i",
    "file.list": "[] file:s name:s? size:i chunks:i held:i complete:b pinned:b",
    "file.info": "file:s name:s? size:i chunks:i held:i complete:b pinned:b",
    "file.pin": "file:s name:s? size:i chunks:i held:i complete:b pinned:b",
    "file.unpin": "file:s name:s? size:i chunks:i held:i complete:b pinned:b",
    "file.cache": "limit:i? cached_bytes:i evicted:[s]",
}


def _type(code: str) -> dict[str, Any]:
    nullable = code.endswith("?")
    code = code.rstrip("?")
    if code == "*":
        return {}
    if code.startswith("["):
        out: dict[str, Any] = {"type": "array", "items": _type(code[1:-1])}
    else:
        out = {"type": _TYPES[code]}
    if nullable:
        out["type"] = [out["type"], "null"]
    return out


def schema(shape: str) -> dict[str, Any]:
    """The JSON Schema of one compact shape."""
    words = shape.split()
    if words == ["*"]:
        return {}
    is_list = bool(words) and words[0] == "[]"
    fields = [w.split(":", 1) for w in words[is_list:]]
    obj = {"type": "object", "required": [k for k, _ in fields],
           "properties": {k: _type(t) for k, t in fields}}
    return {"type": "array", "items": obj} if is_list else obj


def result_schema(op: str) -> dict[str, Any]:
    """The declared result of ``op`` (KeyError: not declared — add it to SHAPES)."""
    return schema(SHAPES[op])
