"""Where a home's HTTP API is and how to get in: what ``p2psync http`` prints (no aiohttp
import, so the command stays fast).

A running server writes its URL to ``<home>/http-url`` (it may have picked an ephemeral port)
and removes it when it stops; the key is ``<home>/http-api-key`` (mode 0600).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from p2psync.config import HttpConfig
from p2psync.hostport import host_port
from p2psync.http.auth import key_path, load_or_create_key

URL_FILE = "http-url"


def url_path(home: Path) -> Path:
    return home / URL_FILE


def http_info(home: Path, config: HttpConfig, *, running: bool,
              with_key: bool = False) -> dict[str, Any]:
    """``{enabled, running, url, key_file[, page]}``; ``page`` (with ``with_key``) is the
    status page's URL with the key in its fragment, ready to open in a browser."""
    if config.enabled:
        load_or_create_key(home)  # so the key can be given to a tool before the agent starts
    url = None
    if running and config.enabled:
        try:
            url = url_path(home).read_text().strip() or None
        except OSError:
            url = None
    out: dict[str, Any] = {
        "enabled": config.enabled, "running": url is not None,
        "url": url or f"http://{host_port(config.listen, config.port)}/",
        "key_file": str(key_path(home)), "openapi": None, "metrics": None}
    out["openapi"] = out["url"] + "api/v1/openapi.json"
    out["metrics"] = out["url"] + "metrics"
    if with_key:
        try:
            out["page"] = out["url"] + "#key=" + key_path(home).read_text().strip()
        except OSError:
            out["page"] = None
    return out
