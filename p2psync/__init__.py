"""p2psync: a LAN-first peer-to-peer sync agent for Automerge documents in encrypted spaces."""

__version__ = "0.1.0"

#: Version of the wire protocol and record formats; carried in the handshake payload.
PROTOCOL_VERSION = 1
