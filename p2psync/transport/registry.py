"""Carriers by name: ``register_carrier("quic", QuicDriver())``, ``carrier("tcp")``.

:func:`~p2psync.transport.api.connect` and :func:`~p2psync.transport.api.listen` look the
carrier up here, so adding one (in-memory, WebSocket…) is a driver plus one registration, with
no branch to edit anywhere. Optional carrier modules listed in :data:`OPTIONAL_CARRIERS` are
imported on the first lookup if they exist; such a module registers itself on import (or
exposes a ``DRIVER`` object, registered under its ``name``).

Dial hints (invites, config, CLI) name their carrier: ``"quic:host:port"``,
``"tcp://[::1]:7337"``, or a bare ``"host:port"`` meaning :data:`DEFAULT_CARRIER`;
:func:`split_hint` parses them.
"""

from __future__ import annotations

import importlib
import re

from p2psync.errors import UnknownTransport
from p2psync.transport.drivers import QuicDriver, TcpDriver
from p2psync.transport.interface import CarrierDriver

#: Carrier used when a hint names none (QUIC: no head-of-line blocking between streams).
DEFAULT_CARRIER = "quic"

#: Carrier modules that may or may not be installed; imported (once) if present.
OPTIONAL_CARRIERS: tuple[str, ...] = ("p2psync.transport.memory",
                                      "p2psync.transport.websocket")

_drivers: dict[str, CarrierDriver] = {}
_optional_loaded = False
_NAME = re.compile(r"[a-z][a-z0-9_+-]{0,31}")


def register_carrier(name: str, driver: CarrierDriver, *, replace: bool = False) -> None:
    """Make ``driver`` available as ``transport=name``. Registering a taken name is an error
    unless ``replace`` (tests swapping in an instrumented driver)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"carrier name {name!r} must be a short lowercase identifier")
    if name in _drivers and not replace:
        raise ValueError(f"carrier {name!r} is already registered")
    _drivers[name] = driver


def unregister_carrier(name: str) -> None:
    """Remove a carrier (tests); unknown names are ignored."""
    _drivers.pop(name, None)


def _load_optional() -> None:
    global _optional_loaded
    if _optional_loaded:
        return
    _optional_loaded = True
    for modname in OPTIONAL_CARRIERS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:  # the module exists but something it needs does not
                raise
            continue
        driver = getattr(mod, "DRIVER", None)
        if driver is not None and getattr(driver, "name", None) not in _drivers:
            register_carrier(driver.name, driver)


def carrier(name: str) -> CarrierDriver:
    """The driver registered as ``name``; :class:`UnknownTransport` if there is none."""
    _load_optional()
    try:
        return _drivers[name]
    except KeyError:
        raise UnknownTransport(
            f"unknown transport {name!r} (available: {', '.join(carrier_names())})") from None


def carrier_names() -> list[str]:
    """Every registered carrier name, sorted."""
    _load_optional()
    return sorted(_drivers)


def split_hint(hint: str) -> tuple[str, str]:
    """``"quic:host:port"`` / ``"tcp://host:port"`` / ``"host:port"`` → ``(carrier,
    "host:port")``. A bare address means :data:`DEFAULT_CARRIER`. A prefix that looks like a
    carrier name followed by a full address (``"ws:host:80"``) but is not registered raises
    :class:`UnknownTransport` rather than being dialled as a host called ``ws``."""
    head, sep, rest = hint.partition(":")
    if rest.startswith("//"):
        rest = rest[2:]
    if sep and head in carrier_names():
        return head, rest
    if sep and _NAME.fullmatch(head) and ":" in rest and not _is_hex(head):
        raise UnknownTransport(f"address {hint!r} names an unknown transport {head!r} "
                               f"(available: {', '.join(carrier_names())})")
    return DEFAULT_CARRIER, hint


def _is_hex(word: str) -> bool:
    """An IPv6 group (``fe80`` of an unbracketed ``fe80::1:7337``) is not a carrier name."""
    return all(c in "0123456789abcdef" for c in word)


register_carrier(QuicDriver.name, QuicDriver())
register_carrier(TcpDriver.name, TcpDriver())
