"""The backup never materialises a document: this makes any attempt fail loudly and counted.

:func:`forbid_documents` replaces the only entry points that build an Automerge document
(``automerge_adapter.new_document`` / ``load``) and ``Space.document`` with functions that
raise :class:`DocumentsForbidden`. A backup holds no read keys, so a document could not be
decrypted anyway; the guard turns a bug into an error and a metric instead of memory growth.
"""

from __future__ import annotations

from typing import Any

from p2psync.errors import P2PSyncError


class DocumentsForbidden(P2PSyncError):
    """Something tried to load an Automerge document inside a backup process."""


attempts = 0  #: how many times something tried (exported as a metric)
_installed = False


def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    global attempts
    attempts += 1
    raise DocumentsForbidden("a backup peer never loads documents (it holds no read keys)")


def forbid_documents() -> None:
    """Install the guard in this process (idempotent)."""
    global _installed
    if _installed:
        return
    from p2psync.replica import automerge_adapter
    from p2psync.replica.space import Space

    automerge_adapter.new_document = _refuse
    automerge_adapter.load = _refuse
    Space.document = _refuse  # type: ignore[method-assign]
    _installed = True
