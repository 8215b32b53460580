"""Sync protocol: sans-IO cores plus one asyncio shell per connection.

The cores — wire messages (``messages``), head sync (``ldiff``), space exchange (``spacex``),
scheduling (``sched``), the responder (``responder``: everything on the peer's request
stream), ACL/tree/space pulls (``pull``), jobs and the in-sync check (``jobs``), bootstrap
(``bootstrap``), chunked ingest (``ingest``), pushes (``push``), per-peer state and status
(``peerstate``, ``status``) — open no socket, never sleep and read no clock: they take
messages (and the current time, where it matters) in and hand back messages and frozen
effects (``effects``). They do read and write the local store through ``replicas.Replicas``.
The asyncio part is ``channel`` (sending, request/answer matching, timeouts) and ``engine``
(``PeerEngine``: streams, tasks, timers, carrying out effects), so the same cores run over
QUIC, TCP or the in-memory carrier (``p2psync.transport.memory``) and directly in tests. See
docs/engine.md for the module map and docs/sync-protocol.md for the wire format.
"""
