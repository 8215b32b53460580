"""The document-type seam: what a space's objects *mean*, chosen by the header's ``space_type``.

The sync path (trees, ACL, store) never looks inside a payload, so it is the same for every
type: a device or backup can replicate a space whose type it does not know. Only the app path
— :meth:`Space.new_document` and :meth:`Space.document` — asks :func:`doctype_for` for the
:class:`DocumentType` of the space, and a type nobody registered raises
:class:`~p2psync.errors.UnknownSpaceType` there.

Automerge (:class:`AutomergeType`) is the one implementation, registered for ``"default"``
(the type every space has had so far) and ``"automerge"``. A new type (files, a key/value
log…) implements :class:`DocumentType`, calls :func:`register_doctype`, and must pass
``tests/conformance/doctype_suite.py``. See docs/seams.md.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from p2psync.crypto.keys import SigningKey
from p2psync.errors import UnknownSpaceType
from p2psync.replica.change import Change
from p2psync.replica.document import DEFAULT_WINDOW, Document, encode_payload
from p2psync.replica.tree import AddResult, ObjectTree, Persist


@runtime_checkable
class ReplicaDocument(Protocol):
    """What :class:`~p2psync.replica.space.Space` itself needs of an open document: its tree,
    a flush of pending local edits into one signed change, and applying remote changes.
    Editing and reading are the type's own API (Automerge: :class:`Document`)."""

    @property
    def tree(self) -> ObjectTree: ...

    def flush(self) -> Change | None:
        """Turn pending local edits into one tree change (None if nothing was pending)."""

    def receive(self, raws: list[bytes]) -> AddResult:
        """Verify, store and apply changes from a peer (all or nothing)."""


@runtime_checkable
class DocumentType(Protocol):
    """One kind of document: how a new object starts and how an object tree is opened."""

    #: Short name for status and errors ("automerge").
    name: str

    def root_plaintext(self) -> bytes:
        """Plaintext of the root change of a new, empty object (encrypted by the tree)."""

    def open(self, tree: ObjectTree, author: SigningKey, device: bytes, *,
             window: float = DEFAULT_WINDOW, persist: Persist | None = None) -> ReplicaDocument:
        """The document over ``tree`` (lazy: nothing is decrypted until first use)."""


class AutomergeType:
    """Automerge documents (docs/replica.md "Payload plaintext" and "Documents")."""

    name = "automerge"

    def root_plaintext(self) -> bytes:
        return encode_payload([], [])

    def open(self, tree: ObjectTree, author: SigningKey, device: bytes, *,
             window: float = DEFAULT_WINDOW, persist: Persist | None = None) -> Document:
        return Document(tree, author, device, window=window, persist=persist)


_types: dict[str, DocumentType] = {}


def register_doctype(space_type: str, doctype: DocumentType, *, replace: bool = False) -> None:
    """Serve spaces whose header says ``space_type`` with ``doctype``. A taken name is an
    error unless ``replace`` (the header is signed: a type must never silently change)."""
    if not space_type or len(space_type) > 64:
        raise ValueError("space_type must be 1..64 characters (the header's limit)")
    if space_type in _types and not replace:
        raise ValueError(f"space type {space_type!r} is already registered")
    _types[space_type] = doctype


def unregister_doctype(space_type: str) -> None:
    """Remove a registration (tests); unknown names are ignored."""
    _types.pop(space_type, None)


def doctype_for(space_type: str) -> DocumentType:
    """The document type of spaces of ``space_type``; :class:`UnknownSpaceType` if none."""
    try:
        return _types[space_type]
    except KeyError:
        raise UnknownSpaceType(
            f"this device cannot open documents of space type {space_type!r} (known: "
            f"{', '.join(sorted(_types))}); it still replicates the space") from None


def space_types() -> list[str]:
    """Every registered space type, sorted."""
    return sorted(_types)


def _conforms(t: AutomergeType, d: Document) -> tuple[DocumentType, ReplicaDocument]:
    """Static check (mypy): Automerge implements the declared seam."""
    return t, d


AUTOMERGE = AutomergeType()
register_doctype("default", AUTOMERGE)
register_doctype("automerge", AUTOMERGE)
