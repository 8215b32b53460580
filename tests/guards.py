"""Switches that turn one safety mechanism off, for tests/test_switch_off.py.

Each switch monkeypatches the single place that enforces a property, the way a regression or
a careless refactor would remove it. A switch-off test runs the guarding test once as is (it
must pass), then with its switch on (it must FAIL). This keeps the guarding tests honest: a
test that passes either way guards nothing (issue 21: the backup no-plaintext test once passed
with encryption off, because Automerge compressed its marker away).
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from p2psync.backup.quota import Usage
from p2psync.crypto.box import NONCE_SIZE, ReadKey
from p2psync.replica import change as change_mod
from p2psync.replica.acl import Acl, AclState
from p2psync.replica.tree import ObjectTree
from p2psync.transport.noise import CipherState

Switch = Callable[[pytest.MonkeyPatch], None]


def encryption_off(mp: pytest.MonkeyPatch) -> None:
    """E2E: read keys become a null cipher, random nonce + the plaintext in the clear.

    The nonce stays because it is what makes two otherwise identical records (e.g. two empty
    document roots made in the same second) distinct; only the secrecy is switched off.
    """
    mp.setattr(ReadKey, "encrypt",
               lambda self, plaintext, aad=b"": os.urandom(NONCE_SIZE) + bytes(plaintext))
    mp.setattr(ReadKey, "decrypt",
               lambda self, ciphertext, aad=b"": bytes(ciphertext[NONCE_SIZE:]))


def signatures_off(mp: pytest.MonkeyPatch) -> None:
    """Signature check: every record parser accepts any signature."""
    for mod in ("p2psync.replica.change", "p2psync.replica.acl_records",
                "p2psync.replica.header", "p2psync.backup.receipt"):
        mp.setattr(f"{mod}.verify", lambda *_a, **_k: None)


def write_rule_off(mp: pytest.MonkeyPatch) -> None:
    """ACL write rule: anyone may write at any ACL head."""
    mp.setattr(AclState, "can_write", lambda self, account: True)


def removal_off(mp: pytest.MonkeyPatch) -> None:
    """Removal: a Remove (or Leave) record is accepted but the member stays."""
    mp.setattr(Acl, "_depart", staticmethod(lambda s, who, rid: None))


def rotation_off(mp: pytest.MonkeyPatch) -> None:
    """Key rotation: every "new" read key is the same key, so old holders read new content."""
    fixed = ReadKey(b"\x42" * 32)
    mp.setattr(ReadKey, "generate", classmethod(lambda cls: fixed))


def replay_off(mp: pytest.MonkeyPatch) -> None:
    """Replay protection: a Noise transport nonce does not advance on receive."""
    orig = CipherState.decrypt_with_ad

    def decrypt(self: CipherState, ad: bytes | None, ciphertext: bytes) -> bytes:
        n = self.n
        out = orig(self, ad, ciphertext)
        self.n = n
        return out
    mp.setattr(CipherState, "decrypt_with_ad", decrypt)


def binding_off(mp: pytest.MonkeyPatch) -> None:
    """Channel binding: the Noise prologue no longer names this QUIC connection."""
    mp.setattr("p2psync.transport.drivers.tls_binding", lambda quic: b"\x00" * 32)


def quotas_off(mp: pytest.MonkeyPatch) -> None:
    """Quotas: the backup admits every batch."""
    mp.setattr(Usage, "check", lambda self, space_id, bytes_, changes: None)


def rollback_off(mp: pytest.MonkeyPatch) -> None:
    """Crash safety (memory side): a tree no longer undoes its in-memory changes when the
    store write of the batch fails, so memory and disk disagree."""
    orig = ObjectTree._attach
    mp.setattr(ObjectTree, "_attach", lambda self, ch, undo: orig(self, ch, None))


def sealing_off(mp: pytest.MonkeyPatch) -> None:
    """Sealed change metadata (change format 2, issue 20 item 6): every change written as
    format 2 carries the author's claimed time and the snapshot flag in its signed clear
    header again, readable by any replicator (the legacy format-1 layout).

    Patched wherever ``build_change`` is bound (the tree's local writes, tests that build
    changes themselves), since modules import it by name.
    """
    orig = change_mod.build_change

    def clear_header(*args: Any, version: int = change_mod.FORMAT_VERSION,
                     **kwargs: Any) -> change_mod.Change:
        if version == change_mod.FORMAT_VERSION:
            version = change_mod.LEGACY_VERSION
        return orig(*args, version=version, **kwargs)

    for mod in list(sys.modules.values()):
        if getattr(mod, "__dict__", {}).get("build_change") is orig:
            mp.setattr(mod, "build_change", clear_header)


async def bites(guard: Callable[[], Any] | Callable[[], Awaitable[Any]],
                switch: Switch) -> BaseException:
    """Run ``guard`` (a guarding test, arguments bound) with the mechanism on: it must pass.
    Then with ``switch`` on: it must fail; return what it raised."""
    async def run() -> None:
        out = guard()
        if inspect.isawaitable(out):
            await out

    await run()
    with pytest.MonkeyPatch.context() as mp:
        switch(mp)
        try:
            await run()
        except (Exception, pytest.fail.Exception) as exc:
            return exc
    raise AssertionError(f"{getattr(guard, '__name__', guard)} still passes with "
                         f"{switch.__name__}: it does not guard its property")
