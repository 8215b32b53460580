"""Switches that turn one safety mechanism off, for tests/test_switch_off.py.

Each switch monkeypatches the single place that enforces a property, the way a regression or
a careless refactor would remove it. A switch-off test flips one on and checks that the core
assertion of the test guarding that property now FAILS; the same assertion passes with the
mechanism on. This keeps the guarding tests honest: a test that passes either way guards
nothing (issue 21: the backup no-plaintext test once passed with encryption off).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from p2psync.crypto.box import NONCE_SIZE, ReadKey


def encryption_off(mp: pytest.MonkeyPatch) -> None:
    """Read keys become a null cipher: random nonce + the plaintext in the clear.

    The nonce stays because it is what makes two otherwise identical records (e.g. two empty
    document roots made in the same second) distinct; only the secrecy is switched off.
    """
    mp.setattr(ReadKey, "encrypt",
               lambda self, plaintext, aad=b"": os.urandom(NONCE_SIZE) + bytes(plaintext))
    mp.setattr(ReadKey, "decrypt",
               lambda self, ciphertext, aad=b"": bytes(ciphertext[NONCE_SIZE:]))


def fails(check: Callable[[], Any]) -> BaseException:
    """Run ``check`` and return the AssertionError / typed error it raised (fail if none)."""
    try:
        check()
    except Exception as exc:
        return exc
    raise AssertionError("the guarding assertion still passes with its mechanism switched off")
