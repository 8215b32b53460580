"""Who may talk to the local HTTP API: the API key, and the browser checks (Host, Origin).

Sans-IO apart from :func:`load_or_create_key` (one small file). The model is Syncthing's
``X-API-Key``: a random key in ``<home>/http-api-key`` (mode 0600, so only the user who runs the
agent can read it), sent by clients as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY`` and
compared in constant time.

A browser adds two more risks, both closed here: a page of another site calling the API
(refused by its ``Origin``), and DNS rebinding (a hostile name re-pointed at 127.0.0.1, so the
browser thinks the API is same-origin with the hostile page; refused because the ``Host`` it
sends is that name, not an IP literal or ``localhost``). The key alone would already stop both
(a hostile page does not know it), these checks are defence in depth.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from p2psync.errors import OriginRefused, Unauthorized

KEY_FILE = "http-api-key"
KEY_HEADER = "X-API-Key"
_KEY_BYTES = 32  #: 256 bits of randomness, URL-safe base64 (43 characters)


def key_path(home: Path) -> Path:
    return home / KEY_FILE


def load_or_create_key(home: Path) -> str:
    """The API key of this home, created (mode 0600, atomically) on first use.

    A key file that is empty or unreadable as text is replaced; one readable by others is
    tightened to 0600 (as :meth:`p2psync.home.Home.secure` does for the rest of the home)."""
    path = key_path(home)
    with contextlib.suppress(FileNotFoundError, UnicodeDecodeError):
        key = path.read_text("ascii").strip()
        if key:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            return key
    key = secrets.token_urlsafe(_KEY_BYTES)
    tmp = path.with_name(KEY_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (key + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries: ``X-API-Key``, else ``Authorization: Bearer``."""
    key = headers.get(KEY_HEADER)
    if key is not None:
        return key.strip()
    scheme, _, token = (headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def check_key(headers: Mapping[str, str], key: str) -> None:
    """Raise :class:`Unauthorized` unless the request carries ``key`` (constant-time compare:
    the time taken does not tell an attacker how many leading characters were right)."""
    given = presented_key(headers)
    if given is None:
        raise Unauthorized(f"send the API key in {KEY_HEADER} (it is in <home>/{KEY_FILE})")
    if not hmac.compare_digest(given.encode("utf-8", "replace"), key.encode()):
        raise Unauthorized(f"wrong API key (it is in <home>/{KEY_FILE})")


def _host_name(host_header: str) -> str:
    """``host`` of a ``Host: host[:port]`` header (IPv6 in brackets)."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_browser(headers: Mapping[str, str], scheme: str, allowed: Iterable[str]) -> None:
    """Raise :class:`OriginRefused` for DNS rebinding or a cross-origin browser request.

    ``Host`` must be an IP literal, ``localhost`` or the host of an ``allowed`` origin; an
    ``Origin`` (sent by browsers on cross-origin and on non-GET requests) must be this server's
    own (``scheme://Host``) or one of ``allowed``. Requests without ``Origin`` (curl, apps,
    Prometheus) pass this check; they still need the key."""
    allowed = set(allowed)
    host = headers.get("Host", "")
    name = _host_name(host).lower()
    hosts = {(urlsplit(o).hostname or "").lower() for o in allowed}
    if not (name == "localhost" or _is_ip(name) or name in hosts):
        raise OriginRefused(f"Host {host!r} is not an IP address or localhost (DNS rebinding?); "
                            "add its origin to [http] origins to allow it")
    origin = headers.get("Origin")
    if origin is not None and origin != f"{scheme}://{host}" and origin not in allowed:
        raise OriginRefused(f"requests from origin {origin!r} are not allowed "
                            "(add it to [http] origins)")
