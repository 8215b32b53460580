"""Transport: Noise XX sessions over QUIC (aioquic) or TCP, with hardened framing.

Public API: :func:`connect`, :func:`listen`, :class:`Connection`, :class:`Stream`,
:class:`TransportConfig`, :class:`Limits`, :class:`Keepalive`. See ``docs/transport.md``.
"""

from p2psync.transport.api import Server, connect, listen
from p2psync.transport.connection import Connection, Stream, TransportConfig
from p2psync.transport.handshake import Limits
from p2psync.transport.session import Keepalive

__all__ = ["Connection", "Keepalive", "Limits", "Server", "Stream", "TransportConfig",
           "connect", "listen"]
