"""Timestamps for people: one format for the CLI, the API's history rows and status."""

from __future__ import annotations

import time


def local_time(ms: int | float) -> str:
    """Milliseconds since the epoch as ``YYYY-MM-DD HH:MM:SS`` in local time."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))
