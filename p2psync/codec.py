"""Canonical encoding and content ids.

Records are msgpack *arrays* with a fixed field order (never maps), so one value has one
encoding. A content id is the BLAKE2b-256 hash of the exact raw bytes received: we never
re-encode and re-hash. Decoding is strict: trailing bytes, wrong types, unknown versions and
oversize fields raise :class:`~p2psync.errors.DecodeError`.

Decoding is also *bounded*: sync messages are decoded against a per-type schema
(:func:`unpack_schema`: element counts, sizes and nesting fixed per field), and the generic
:func:`unpack` / :func:`unpack_bounded` used for signed records caps the total number of arrays
and maps it builds, so no input can make a decoder allocate millions of objects.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Annotated, Any, NoReturn

import msgpack
import msgspec

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


#: Default cap on the arrays and maps one generic :func:`unpack` may build in total. Every record
#: we sign is a short array of scalars and a few lists (the biggest legitimate shape: a receipt
#: listing 4 096 object pairs), so 16 384 containers is generous; without this cap one 8 MiB
#: message of empty arrays builds 8 million lists (~4 s, ~500 MB).
DEFAULT_MAX_CONTAINERS = 16384


class _TooManyContainers(Exception):
    """Raised from inside msgpack's container hooks to stop decoding early."""


def _check_input(raw: Any, max_size: int, what: str) -> None:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise DecodeError(f"{what}: expected bytes, got {type(raw).__name__}")
    if len(raw) > max_size:
        raise DecodeError(f"{what}: {len(raw)} bytes exceeds the {max_size}-byte limit")


def unpack_bounded(
    raw: bytes, *, max_size: int = MAX_RECORD_SIZE, max_containers: int = DEFAULT_MAX_CONTAINERS,
    max_array: int | None = None, what: str = "record", canonical: bool = True,
) -> Any:
    """Decode one msgpack value from ``raw`` with its *total* work bounded.

    For self-describing signed records (ACL records, tree changes, certificates, receipts)
    whose shape is checked afterwards by a :class:`Reader`: at most ``max_containers`` arrays
    and maps in total (counted while decoding, refused at the first one over), each holding at
    most ``max_array`` items; scalars are bounded by the byte size. Sync messages are decoded by
    their schema instead (:func:`unpack_schema`). Trailing bytes, ext types and non-string map
    keys are refused. Raises only :class:`DecodeError`.

    With ``canonical`` (the default) the bytes must also be exactly :func:`pack` of the decoded
    value (docs/protocol.md, "Canonical msgpack"): every signed or hashed record then has one
    encoding, so nobody can re-encode a signed envelope into a second record with another
    content id and the same signature, and every implementation hashes the same bytes.
    """
    _check_input(raw, max_size, what)
    limit = min(max_size, max_array if max_array is not None else max_size)
    built = 0

    def count(value: Any) -> Any:
        nonlocal built
        built += 1
        if built > max_containers:
            raise _TooManyContainers
        return value

    try:
        value = msgpack.unpackb(
            raw,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=max_size,
            max_str_len=max_size,
            max_array_len=limit,
            max_map_len=limit,
            max_ext_len=0,
            list_hook=count,
            object_hook=count,
        )
    except _TooManyContainers:
        raise DecodeError(
            f"{what}: more than {max_containers} nested arrays/maps (refused while decoding)"
        ) from None
    except msgpack.ExtraData as exc:
        raise DecodeError(f"{what}: trailing bytes after the value") from exc
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise DecodeError(f"{what}: malformed msgpack ({exc})") from exc
    if canonical and not is_canonical(raw, value):
        raise DecodeError(f"{what}: not canonical msgpack (a value is encoded in a longer or "
                          "other form than the one canonical encoding prescribes)")
    return value


def is_canonical(raw: bytes | bytearray | memoryview, value: Any) -> bool:
    """Whether ``raw`` is the canonical encoding of ``value`` (its decoded form): shortest
    integer, string, binary and array headers; str for text, bin for bytes; float64 only;
    maps keep their received key order (records never contain maps)."""
    try:
        return pack(value) == raw
    except DecodeError:  # pragma: no cover - decoded values always encode
        return False


def unpack(raw: bytes, *, max_size: int = MAX_RECORD_SIZE, what: str = "record") -> Any:
    """Decode one msgpack value from ``raw``, rejecting trailing bytes and oversize input.

    Bounded like :func:`unpack_bounded` with its default caps (kept as the name every record
    parser already calls)."""
    return unpack_bounded(raw, max_size=max_size, what=what)


# --- schema-bounded decoding (sync messages) ------------------------------------------------------
# A schema is a msgspec type built from the helpers below: every array has a fixed length
# (``fields``) or an explicit ``max_items``, every blob and string a size bound, every integer a
# range. msgspec checks each array's length against the schema *before* reading its items, so
# a hostile length is refused in O(1) and the decoded value never holds more than the schema
# allows (no generic "any structure up to N bytes").

def blob(*, size: int | None = None, max_len: int = MAX_RECORD_SIZE) -> Any:
    """Schema of a byte string of exactly ``size`` bytes, or at most ``max_len``."""
    if size is not None:
        return Annotated[bytes, msgspec.Meta(min_length=size, max_length=size)]
    return Annotated[bytes, msgspec.Meta(max_length=max_len)]


def text(*, max_len: int, min_len: int = 0) -> Any:
    """Schema of a UTF-8 string of ``min_len``..``max_len`` characters."""
    return Annotated[str, msgspec.Meta(min_length=min_len, max_length=max_len)]


def integer(lo: int, hi: int) -> Any:
    """Schema of an integer in ``[lo, hi]`` (never a bool or a float). Bounds beyond int64
    are left to the decoder, which refuses anything outside [-2^63, 2^64 - 1] anyway."""
    return Annotated[int, msgspec.Meta(ge=max(lo, -(2**63)),
                                       le=hi if hi < 2**63 else None)]


BOOLEAN: Any = bool


def array(item: Any, *, max_items: int) -> Any:
    """Schema of a list of at most ``max_items`` values of schema ``item``."""
    return Annotated[list[item], msgspec.Meta(max_length=max_items)]


def optional(item: Any) -> Any:
    """Schema of ``item`` or nil."""
    return item | None


def fields(*items: Any) -> Any:
    """Schema of a fixed-length array whose positions have the given schemas."""
    return tuple.__class_getitem__(items)


@functools.lru_cache(maxsize=256)
def _decoder(schema: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(schema)


def unpack_schema(raw: bytes | memoryview, schema: Any, *, max_size: int = MAX_RECORD_SIZE,
                  what: str = "record") -> Any:
    """Decode ``raw`` as exactly one value of ``schema`` (built with the helpers above).

    Work and memory are bounded by the schema: a wrong length, type or size is refused where
    it is read, before anything under it is decoded. Fixed-length arrays come back as tuples,
    the others as lists. Raises only :class:`DecodeError`."""
    _check_input(raw, max_size, what)
    try:
        return _decoder(schema).decode(raw)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"{what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise DecodeError(f"{what}: malformed msgpack ({exc})") from None


def read_array_header(buf: bytes | bytearray | memoryview, pos: int, what: str) -> tuple[int, int]:
    """The length of the msgpack array starting at ``buf[pos]`` and the offset after its
    header (for envelopes whose leading fields are read before the body's schema is known)."""
    if pos >= len(buf):
        raise DecodeError(f"{what}: truncated")
    b = buf[pos]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F, pos + 1
    if b in (0xDC, 0xDD):
        n = 2 if b == 0xDC else 4
        if pos + 1 + n > len(buf):
            raise DecodeError(f"{what}: truncated")
        return int.from_bytes(buf[pos + 1:pos + 1 + n], "big"), pos + 1 + n
    raise DecodeError(f"{what}: expected an array")


_INT_WIDTHS = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}


def read_int(buf: bytes | bytearray | memoryview, pos: int, what: str) -> tuple[int, int]:
    """The msgpack integer at ``buf[pos]`` (any width) and the offset after it."""
    if pos >= len(buf):
        raise DecodeError(f"{what}: truncated")
    b = buf[pos]
    if b <= 0x7F:
        return b, pos + 1
    if b >= 0xE0:
        return b - 0x100, pos + 1
    n = _INT_WIDTHS.get(b)
    if n is None:
        raise DecodeError(f"{what}: expected an integer")
    if pos + 1 + n > len(buf):
        raise DecodeError(f"{what}: truncated")
    return int.from_bytes(buf[pos + 1:pos + 1 + n], "big", signed=b >= 0xD0), pos + 1 + n


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
