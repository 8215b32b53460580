"""The backup peer: the agent in replicator mode (stores and serves ciphertext it cannot read).

See docs/backup.md. ``config`` (the ``[replicator]`` table), ``quota`` (sans-IO accounting),
``receipt`` (signed storage receipts), ``policy`` (admission rules hooked into the sync layer),
``metrics`` (Prometheus text over HTTP), ``guard`` (no Automerge document in this process),
``service`` (``p2psync backup run`` / ``backup id``). The device side (add-backup,
backup-status) is :mod:`p2psync.agent.backups`; ``client`` is a deprecated alias of it.
"""
