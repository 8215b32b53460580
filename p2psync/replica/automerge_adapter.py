"""The one place that talks to ``automerge.core`` internals.

automerge 1.0.0rc1 has no ``apply_changes``: raw change bytes are applied by wrapping them in a
hand-built sync message (``0x42``, heads, empty need/have, the changes) and feeding it to
``receive_sync_message`` — idempotent, incremental, and changes with missing dependencies are
queued by Automerge until they arrive. Everything that can fail raises :class:`DocumentError`.
"""

from __future__ import annotations

from collections.abc import Sequence

from automerge import core

from p2psync.errors import DocumentError

_SYNC_MESSAGE_TYPE = 0x42


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sync_message(changes: Sequence[bytes], heads: Sequence[bytes] = ()) -> bytes:
    """Encode a sync message that carries ``changes`` and asks for nothing."""
    out = bytearray([_SYNC_MESSAGE_TYPE])
    out += _uleb(len(heads))
    for h in heads:
        out += h
    out += _uleb(0) + _uleb(0) + _uleb(len(changes))
    for c in changes:
        out += _uleb(len(c)) + c
    return bytes(out)


def apply_changes(doc: core.Document, changes: Sequence[bytes]) -> None:
    """Apply raw Automerge change bytes to ``doc`` (idempotent; missing deps are queued)."""
    if not changes:
        return
    try:
        msg = core.Message.decode(sync_message(changes))
        doc.receive_sync_message(core.SyncState(), msg)
    except Exception as exc:  # automerge raises bare Exception ("bad checksum", ...)
        raise DocumentError(f"corrupt Automerge change bytes: {exc}") from exc


def new_document(actor: bytes) -> core.Document:
    """An empty document with our stable actor id."""
    return core.Document(actor)


def load(saved: bytes, actor: bytes) -> core.Document:
    """Load a ``save()``d document and set our actor (``load`` picks a random one)."""
    try:
        doc = core.Document.load(saved)
    except Exception as exc:
        raise DocumentError(f"corrupt Automerge snapshot: {exc}") from exc
    doc.set_actor(actor)
    return doc


def save(doc: core.Document) -> bytes:
    return bytes(doc.save())


def heads(doc: core.Document) -> list[bytes]:
    return [bytes(h) for h in doc.get_heads()]


def changes_since(doc: core.Document, have: Sequence[bytes]) -> list[bytes]:
    """Raw bytes of the changes not in the causal past of ``have``, in causal order."""
    return [bytes(c.bytes) for c in doc.get_changes(list(have))]
