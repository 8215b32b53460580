"""``host:port`` text: the one place that knows an IPv6 literal goes in brackets."""

from __future__ import annotations


def bracket(host: str) -> str:
    """``host`` as it stands before ``:port`` in an address: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def host_port(host: str, port: int) -> str:
    """``host:port`` (``[v6]:port`` for an IPv6 literal), the form every dialler takes."""
    return f"{bracket(host)}:{port}"
