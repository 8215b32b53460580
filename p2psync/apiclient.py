"""The client side of the local API, kept light: what the CLI needs to talk to a running agent.

A command answered through a running agent should start in well under 150 ms, so this module
imports only the standard library and :mod:`p2psync.errors` — no asyncio, no sync stack, no
Automerge, no crypto (``tests/test_cli_thin.py`` checks it). :mod:`p2psync.api` re-exports
everything here next to the server.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from p2psync.errors import InvalidParams, P2PSyncError

#: version of the local API's request/response format (``p2psync --version`` shows it)
API_VERSION = 1

SOCKET = "agent.sock"


class ApiError(P2PSyncError):
    """The agent answered a request with an error, or the socket failed."""

    def __init__(self, message: str, kind: str = "ApiError") -> None:
        super().__init__(message)
        self.kind = kind


def socket_path(home: Path) -> Path:
    return home / SOCKET


def _alive(path: Path) -> bool:
    """Whether an agent answers on ``path`` (a stale socket file from a crash does not)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(str(path))
    except OSError:
        return False
    finally:
        s.close()
    return True


def agent_running(home: Path) -> bool:
    path = socket_path(home)
    return path.exists() and _alive(path)


class ApiClient:
    """A blocking JSON-lines client (what the CLI uses; apps may copy it in ~40 lines)."""

    def __init__(self, home: Path, timeout: float | None = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(socket_path(home)))
        except OSError as exc:
            self.sock.close()
            raise ApiError(f"no agent answers on {socket_path(home)}: {exc}") from exc
        self.file = self.sock.makefile("rb")
        self._next = 0
        self._events: list[dict[str, Any]] = []  #: events read while waiting for a response

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, op: str, **params: Any) -> Any:
        """Send one request; return its result or raise :class:`ApiError`."""
        self._next += 1
        rid = self._next
        self.sock.sendall(json.dumps({"id": rid, "op": op, "params": params}).encode() + b"\n")
        while True:
            msg = self._read_line()
            if msg.get("id") == rid and "ok" in msg:
                break
            if "event" in msg:
                self._events.append(msg)
        if not msg["ok"]:
            err = msg.get("error") or {}
            raise ApiError(str(err.get("message", "error")), str(err.get("type", "ApiError")))
        return msg.get("result")

    def read(self) -> dict[str, Any]:
        """The next line from the agent (events first, in order of arrival)."""
        if self._events:
            return self._events.pop(0)
        return self._read_line()

    def _read_line(self) -> dict[str, Any]:
        try:
            line = self.file.readline()
        except OSError as exc:
            raise ApiError(f"agent connection failed: {exc}") from exc
        if not line:
            raise ApiError("the agent closed the connection")
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ApiError("malformed line from the agent")
        return obj


def decode_json_value(text: str) -> Any:
    """The JSON value of a CLI argument, with a hint for the usual mistake (unquoted text)."""
    import msgspec  # ~10 ms; only `doc set` needs it

    try:
        return msgspec.json.decode(text.encode("utf-8", "surrogatepass"))
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidParams(f"value is not JSON: {exc} (quote strings: '\"text\"')") from None
