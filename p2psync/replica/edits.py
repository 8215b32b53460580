"""Document edits as data: every Automerge edit an app needs, checked, several in one change.

An edit is a small JSON object (``{"op": "put", "path": "items/0", "value": "milk"}``) decoded
into one of the msgspec structs below; :func:`apply_edits` makes a list of them inside one
:meth:`~p2psync.replica.document.Document.edit` transaction, so they become ONE signed change
(or, on any error, none: the transaction rolls back). The local API (``doc.change`` and the
single-edit ops), the CLI (``doc delete/insert/splice/increment/counter/change``) and Python
callers (:func:`change`) all go through here.

Paths are ``/``-separated from the document root; a segment indexes a list when the object it
is applied to is a list. Every edit is checked against the document *as the transaction sees
it* (so a later edit in the same change sees the earlier ones) before Automerge is called, so a
bad edit is a typed error that says what is there instead — :class:`InvalidPath` (missing key,
index out of range, a segment that is not a number in a list) or :class:`WrongType` (splicing
into something that is not text, incrementing something that is not a counter, inserting into
a map) — never an Automerge exception.

Counters: automerge 1.0.0rc1's native counters panic (docs/replica.md), so ``counter`` creates
the map-of-actor-shares counter and ``increment`` bumps our own share; the JSON view shows the
sum. Text: ``splice`` deletes then inserts one code point per element, so two writers typing in
one text merge character by character (no marks: the rc1 binding's marks are screened out as
unrenderable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec

from p2psync.errors import InvalidPath, WrongType
from p2psync.replica.document import ROOT, Document, Editor, ObjId, Text

EditPath = Annotated[str, msgspec.Meta(max_length=4096)]
Index = Annotated[int, msgspec.Meta(ge=0, le=1 << 40)]
Int64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
MAX_EDITS = 10_000  #: edits in one change


class _Edit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
            tag_field="op"):
    path: EditPath


class Put(_Edit, frozen=True, tag="put"):
    """Set a map key, replace a list element, or append (index = length). ``text``: store a
    string as editable text."""

    value: Any
    text: bool = False


class Delete(_Edit, frozen=True, tag="delete"):
    """Delete a map key or a list element."""


class Insert(_Edit, frozen=True, tag="insert"):
    """Insert into a list before ``index`` (the last path segment; = length appends)."""

    value: Any
    text: bool = False


class Splice(_Edit, frozen=True, tag="splice"):
    """In the text at ``path``: delete ``delete`` characters at ``pos``, then insert ``insert``."""

    pos: Index
    delete: Index = 0
    insert: Annotated[str, msgspec.Meta(max_length=1 << 20)] = ""


class Increment(_Edit, frozen=True, tag="increment"):
    """Add ``by`` to the counter at ``path``."""

    by: Int64 = 1


class MakeCounter(_Edit, frozen=True, tag="counter"):
    """Create a counter at ``path`` (our share starts at ``value``). Create it once, before
    sharing: two devices creating the same key concurrently is an ordinary map conflict."""

    value: Int64 = 0


Edit = Put | Delete | Insert | Splice | Increment | MakeCounter
EditList = Annotated[list[Edit], msgspec.Meta(min_length=1, max_length=MAX_EDITS)]


def decode_edits(data: Any) -> list[Edit]:
    """JSON-decoded edits (a list of objects) as structs; InvalidParams-style errors are left
    to the caller's schema (the local API declares ``EditList`` in its params)."""
    return msgspec.convert(data, list[Edit])


def _split(path: str) -> list[str]:
    return [p for p in str(path).strip("/").split("/") if p != ""]


def _index(where: str, part: str, n: int, *, end_ok: bool) -> int:
    if not (part.isascii() and part.isdigit()):
        raise InvalidPath(f"{where} is a list: use a number, not {part!r}")
    idx = int(part)
    if idx > n or (idx == n and not end_ok):
        span = f"0–{n - 1}" if n else "none"
        extra = f", or {n} to append" if end_ok else ""
        raise InvalidPath(f"{where} has {n} element(s): index {idx} is past the end "
                          f"(use {span}{extra})")
    return idx


def _walk(e: Editor, parts: Sequence[str]) -> tuple[str, ObjId, str]:
    """The object holding the last segment: (its kind, its id, where it is, for messages)."""
    kind, obj = "map", ROOT
    for i, part in enumerate(parts):
        where = "/".join(parts[:i]) or "the document root"
        key: str | int = part
        if kind == "list":
            key = _index(where, part, e.length(obj), end_ok=False)
        elif kind != "map":
            raise WrongType(f"{where} is {_a(kind)}: there is nothing inside it")
        kind, obj = e.node(obj, key)
        if kind == "missing":
            raise InvalidPath(f"no {'/'.join(parts[:i + 1])} in the document: set it to an "
                              "object or a list first")
    return kind, obj, "/".join(parts) or "the document root"


def _a(kind: str) -> str:
    return {"scalar": "a plain value", "missing": "missing", "text": "text"}.get(
        kind, f"a {kind}")


def _target(e: Editor, path: str) -> tuple[str, ObjId, str, list[str]]:
    parts = _split(path)
    if not parts:
        raise InvalidPath("give a path inside the document (e.g. title or items/0)")
    kind, parent, where = _walk(e, parts[:-1])
    return kind, parent, where, parts


def _value(edit: Put | Insert) -> Any:
    if edit.text:
        if not isinstance(edit.value, str):
            raise WrongType("text needs a string value")
        return Text(edit.value)
    return edit.value


def apply_edit(e: Editor, edit: Edit) -> None:
    """Check one edit against the document inside the transaction, then make it."""
    if isinstance(edit, Splice | Increment):
        kind, obj, where = _walk(e, _split(edit.path))
        if isinstance(edit, Splice):
            if kind != "text":
                raise WrongType(f"{where} is {_a(kind)}, not text: splice edits text (store "
                                "a string as text with put --text)")
            n = e.length(obj)
            if edit.pos > n or edit.pos + edit.delete > n:
                raise InvalidPath(f"{where} has {n} character(s): cannot delete {edit.delete} "
                                  f"at {edit.pos}")
            e.splice_text(obj, edit.pos, edit.delete, edit.insert)
            return
        if kind != "counter":
            raise WrongType(f"{where} is {_a(kind)}, not a counter (create one with the "
                            "counter edit)")
        parts = _split(edit.path)
        pkind, parent, _ = _walk(e, parts[:-1])
        key: str | int = parts[-1] if pkind == "map" else int(parts[-1])
        e.increment(parent, key, edit.by)
        return
    kind, parent, where, parts = _target(e, edit.path)
    last = parts[-1]
    if kind == "map":
        if isinstance(edit, Insert):
            raise WrongType(f"{where or 'the document root'} is a map: insert is for lists "
                            "(use put)")
        if isinstance(edit, Delete):
            if e.node(parent, last)[0] == "missing":
                raise InvalidPath(f"no {'/'.join(parts)} in the document to delete")
            e.delete(parent, last)
        elif isinstance(edit, MakeCounter):
            e.make_counter(parent, last, edit.value)
        else:
            e.put(parent, last, _value(edit))
        return
    if kind != "list":
        raise WrongType(f"{where or 'the document root'} is {_a(kind)}: there is nothing "
                        "inside it")
    n = e.length(parent)
    if isinstance(edit, Delete):
        e.delete(parent, _index(where, last, n, end_ok=False))
    elif isinstance(edit, MakeCounter):
        idx = _index(where, last, n, end_ok=True)
        if idx == n:
            e.insert(parent, idx, {})
        e.make_counter(parent, idx, edit.value)
    elif isinstance(edit, Insert):
        e.insert(parent, _index(where, last, n, end_ok=True), _value(edit))
    else:
        idx = _index(where, last, n, end_ok=True)
        if idx == n:
            e.insert(parent, idx, _value(edit))
        else:
            e.put(parent, idx, _value(edit))


def apply_edits(e: Editor, edits: Sequence[Edit]) -> None:
    """Make every edit in order inside one transaction (the first bad one raises, and the
    caller's ``with doc.edit()`` rolls all of them back)."""
    for i, edit in enumerate(edits):
        try:
            apply_edit(e, edit)
        except (InvalidPath, WrongType) as exc:
            if len(edits) == 1:
                raise
            raise type(exc)(f"edit {i} ({edit.path!r}): {exc}; nothing was changed") from None


def change(doc: Document, edits: Sequence[Edit]) -> None:
    """The Python API: apply ``edits`` to ``doc`` as one change (all or nothing), e.g.
    ``change(doc, [Put(path="title", value="Hi"), Splice(path="body", pos=0, insert="x")])``."""
    with doc.edit() as e:
        apply_edits(e, edits)
