"""Sync protocol cores (sans-IO): wire messages, head sync, space exchange, request scheduling.

Nothing here opens a socket or reads a clock: state machines take messages (and the current
time, where it matters) in and hand messages out, so they run the same over QUIC, TCP or an
in-memory pipe. See docs/sync-protocol.md for the wire format and the algorithms.
"""
