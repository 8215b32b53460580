"""The agent: a long-running device (``p2psync run``), its operations and its connections.

``core.Agent`` wraps the node with discovery and dialling; ``ops`` holds the operations the CLI
and the local API share; ``links`` the sans-IO dial and duplicate-connection rules; ``run`` the
process shell (logging, uvloop, signals).
"""
