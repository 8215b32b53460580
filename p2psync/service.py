"""``p2psync service install|uninstall|status``: run the agent as a per-user service.

Linux: a systemd user unit (``~/.config/systemd/user/p2psync-agent.service``) rendered from
the same settings as ``deploy/p2psync-agent.service`` (restart on failure, ``LimitNOFILE``,
``UMask=0077``), with ``ExecStart`` pointing at this interpreter and home. macOS: a launchd agent
(``~/Library/LaunchAgents/net.p2psync.agent.plist``, ``KeepAlive`` on failure). The rendering
is pure (:func:`systemd_unit`, :func:`launchd_plist`); :func:`install` writes the file and,
unless told not to, asks the service manager to load it. The keystore passphrase is never put
in a unit: ``P2PSYNC_PASSPHRASE=...`` goes in ``~/.config/p2psync/agent.env`` (mode 0600),
which the unit reads when it exists.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from p2psync.errors import P2PSyncError

UNIT = "p2psync-agent.service"
LABEL = "net.p2psync.agent"


class ServiceError(P2PSyncError):
    """The service could not be installed, removed or queried (the message says why)."""


def agent_command(home: Path, python: str | None = None) -> list[str]:
    """``python -m p2psync --home HOME run``: this interpreter, so the service runs the same
    installation as the command that installed it (a venv included)."""
    return [python or sys.executable, "-m", "p2psync", "--home", str(home), "run"]


def systemd_unit(command: Sequence[str], env_file: Path) -> str:
    """The systemd user unit running ``command``."""
    return "\n".join([
        "# p2psync agent (installed by `p2psync service install`; docs/agent.md)",
        "[Unit]",
        "Description=p2psync agent (LAN-first sync of Automerge spaces)",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"EnvironmentFile=-{env_file}",
        "ExecStart=" + " ".join(shlex.quote(c) for c in command),
        "Restart=on-failure",
        "RestartSec=5s",
        "TimeoutStopSec=20s",
        "# An idle-socket flood must meet the transport's connection caps, not EMFILE at 1024.",
        "LimitNOFILE=65536",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "UMask=0077",
        "",
        "[Install]",
        "WantedBy=default.target",
        ""])


def launchd_plist(command: Sequence[str], log_dir: Path) -> bytes:
    """The launchd agent running ``command`` (restarted when it exits with an error)."""
    return plistlib.dumps({
        "Label": LABEL, "ProgramArguments": list(command), "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False}, "Umask": 0o077,
        "SoftResourceLimits": {"NumberOfFiles": 65536},
        "StandardErrorPath": str(log_dir / "agent.log")})


@dataclass(frozen=True)
class Target:
    """Where the service file goes and how to talk to the service manager."""

    kind: str  #: "systemd" or "launchd"
    path: Path

    def load(self) -> list[list[str]]:
        if self.kind == "systemd":
            return [["systemctl", "--user", "daemon-reload"],
                    ["systemctl", "--user", "enable", "--now", UNIT]]
        return [["launchctl", "load", "-w", str(self.path)]]

    def unload(self) -> list[list[str]]:
        if self.kind == "systemd":
            return [["systemctl", "--user", "disable", "--now", UNIT]]
        return [["launchctl", "unload", "-w", str(self.path)]]

    def status(self) -> list[str]:
        if self.kind == "systemd":
            return ["systemctl", "--user", "status", "--no-pager", UNIT]
        return ["launchctl", "list", LABEL]


def target(platform: str | None = None) -> Target:
    platform = platform or sys.platform
    home = Path.home()
    if platform == "darwin":
        return Target("launchd", home / "Library" / "LaunchAgents" / f"{LABEL}.plist")
    if platform.startswith("linux"):
        config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
        return Target("systemd", config / "systemd" / "user" / UNIT)
    raise ServiceError(f"no service manager support on {platform} (Linux: systemd, macOS: "
                       "launchd); run `p2psync run` from your own service setup")


def env_file() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "p2psync" / \
        "agent.env"


def render(t: Target, home: Path) -> bytes:
    command = agent_command(home)
    if t.kind == "systemd":
        return systemd_unit(command, env_file()).encode()
    return launchd_plist(command, home)


def _run(cmd: list[str]) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"{' '.join(cmd)}: {exc}") from None
    if proc.returncode != 0:
        raise ServiceError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout}")


def install(home: Path, *, start: bool = True, t: Target | None = None) -> dict[str, object]:
    """Write the service file (0644: it holds no secret) and, with ``start``, load it."""
    t = t or target()
    t.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = t.path.with_name(t.path.name + ".tmp")
    tmp.write_bytes(render(t, home))
    tmp.chmod(0o644)
    os.replace(tmp, t.path)
    if start:
        for cmd in t.load():
            _run(cmd)
    return {"installed": str(t.path), "manager": t.kind, "started": start,
            "env_file": str(env_file())}


def uninstall(*, stop: bool = True, t: Target | None = None) -> dict[str, object]:
    t = t or target()
    if stop and t.path.exists():
        for cmd in t.unload():
            _run(cmd)
    existed = t.path.exists()
    t.path.unlink(missing_ok=True)
    return {"removed": str(t.path) if existed else None, "manager": t.kind}


def status(t: Target | None = None) -> dict[str, object]:
    t = t or target()
    out: dict[str, object] = {"installed": t.path.exists(), "path": str(t.path),
                              "manager": t.kind}
    try:
        proc = subprocess.run(t.status(), capture_output=True, text=True, timeout=30)
        out["manager_says"] = (proc.stdout or proc.stderr).strip()
        out["running"] = proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired) as exc:
        out["manager_says"] = str(exc)
        out["running"] = None
    return out
