"""Canonical encoding and content ids.

Records are msgpack *arrays* with a fixed field order (never maps), so one value has one
encoding. A content id is the BLAKE2b-256 hash of the exact raw bytes received: we never
re-encode and re-hash. Decoding is strict: trailing bytes, wrong types, unknown versions and
oversize fields raise :class:`~p2psync.errors.DecodeError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NoReturn

import msgpack

from p2psync.errors import DecodeError, UnsupportedVersion

#: Hard ceiling for any single record; transport frames have their own (smaller) caps.
MAX_RECORD_SIZE = 16 * 1024 * 1024
ID_SIZE = 32


def pack(obj: Any) -> bytes:
    """Encode ``obj`` (lists, ints, bytes, str, bool, None) as canonical msgpack."""
    try:
        return msgpack.packb(obj, use_bin_type=True, strict_types=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"cannot encode value: {exc}") from exc


def unpack(raw: bytes, *, max_size: int = MAX_RECORD_SIZE, what: str = "record") -> Any:
    """Decode one msgpack value from ``raw``, rejecting trailing bytes and oversize input."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise DecodeError(f"{what}: expected bytes, got {type(raw).__name__}")
    if len(raw) > max_size:
        raise DecodeError(f"{what}: {len(raw)} bytes exceeds the {max_size}-byte limit")
    try:
        return msgpack.unpackb(
            raw,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=max_size,
            max_str_len=max_size,
            max_array_len=max_size,
            max_map_len=max_size,
            max_ext_len=0,
        )
    except msgpack.ExtraData as exc:
        raise DecodeError(f"{what}: trailing bytes after the value") from exc
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise DecodeError(f"{what}: malformed msgpack ({exc})") from exc


def content_id(raw: bytes) -> bytes:
    """The content id of ``raw``: BLAKE2b-256 of the exact bytes."""
    return hashlib.blake2b(raw, digest_size=ID_SIZE).digest()


class Reader:
    """Reads the positional fields of a decoded record array, checking each type and size.

    >>> r = Reader([1, b"x"], "demo"); r.integer("v"); r.blob("x", max_len=4); r.end()
    """

    def __init__(self, value: Any, what: str, *, min_fields: int = 0) -> None:
        if not isinstance(value, list):
            raise DecodeError(f"{what}: expected an array, got {type(value).__name__}")
        if len(value) < min_fields:
            raise DecodeError(f"{what}: {len(value)} fields, expected at least {min_fields}")
        self._items: list[Any] = value
        self._pos = 0
        self.what = what

    def _fail(self, name: str, msg: str) -> NoReturn:
        raise DecodeError(f"{self.what}.{name}: {msg}")

    def _next(self, name: str) -> Any:
        if self._pos >= len(self._items):
            self._fail(name, "missing field")
        item = self._items[self._pos]
        self._pos += 1
        return item

    def version(self, supported: Sequence[int]) -> int:
        """Read the leading format version and refuse versions we do not know."""
        v = self.integer("version", min_value=0)
        if v not in supported:
            raise UnsupportedVersion(f"{self.what}: format version {v} is not supported")
        return v

    def integer(self, name: str, *, min_value: int = -(2**63), max_value: int = 2**64 - 1) -> int:
        v = self._next(name)
        if not isinstance(v, int) or isinstance(v, bool):
            self._fail(name, f"expected int, got {type(v).__name__}")
        if not min_value <= v <= max_value:
            self._fail(name, f"{v} out of range [{min_value}, {max_value}]")
        return v

    def boolean(self, name: str) -> bool:
        v = self._next(name)
        if not isinstance(v, bool):
            self._fail(name, f"expected bool, got {type(v).__name__}")
        return v

    def blob(self, name: str, *, size: int | None = None, max_len: int = MAX_RECORD_SIZE) -> bytes:
        v = self._next(name)
        return self._check_bytes(name, v, size, max_len)

    def optional_blob(
        self, name: str, *, size: int | None = None, max_len: int = MAX_RECORD_SIZE
    ) -> bytes | None:
        v = self._next(name)
        if v is None:
            return None
        return self._check_bytes(name, v, size, max_len)

    def _check_bytes(self, name: str, v: Any, size: int | None, max_len: int) -> bytes:
        if not isinstance(v, bytes):
            self._fail(name, f"expected bytes, got {type(v).__name__}")
        if size is not None and len(v) != size:
            self._fail(name, f"expected {size} bytes, got {len(v)}")
        if len(v) > max_len:
            self._fail(name, f"{len(v)} bytes exceeds {max_len}")
        return v

    def text(self, name: str, *, max_len: int = 1024) -> str:
        v = self._next(name)
        if not isinstance(v, str):
            self._fail(name, f"expected str, got {type(v).__name__}")
        if len(v) > max_len:
            self._fail(name, f"{len(v)} chars exceeds {max_len}")
        return v

    def blob_list(
        self, name: str, *, size: int | None = None, max_items: int = 1024,
        max_len: int = MAX_RECORD_SIZE,
    ) -> list[bytes]:
        v = self._next(name)
        if not isinstance(v, list):
            self._fail(name, f"expected array, got {type(v).__name__}")
        if len(v) > max_items:
            self._fail(name, f"{len(v)} items exceeds {max_items}")
        return [self._check_bytes(f"{name}[{i}]", x, size, max_len) for i, x in enumerate(v)]

    def array(self, name: str, *, max_items: int = 1024) -> list[Any]:
        v = self._next(name)
        if not isinstance(v, list):
            self._fail(name, f"expected array, got {type(v).__name__}")
        if len(v) > max_items:
            self._fail(name, f"{len(v)} items exceeds {max_items}")
        return v

    def value(self, name: str) -> Any:
        return self._next(name)

    def end(self) -> None:
        """Require that every field was consumed (no unknown trailing fields)."""
        if self._pos != len(self._items):
            raise DecodeError(
                f"{self.what}: {len(self._items) - self._pos} unexpected trailing field(s)"
            )
