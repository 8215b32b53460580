"""``p2psync service``: the rendered systemd user unit passes ``systemd-analyze verify`` and
matches deploy/p2psync-agent.service; install/status/uninstall write and remove it (without
touching the real service manager: ``--no-start``/``--no-stop``); the launchd plist."""

from __future__ import annotations

import json
import os
import plistlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from p2psync import service
from tests.http_helpers import env

DEPLOY_UNIT = Path(__file__).resolve().parent.parent / "deploy" / service.UNIT


def service_keys(text: str) -> dict[str, str]:
    section = text.split("[Service]", 1)[1].split("\n[", 1)[0]
    return dict(line.split("=", 1) for line in section.splitlines()
                if "=" in line and not line.startswith("#"))


def test_unit_runs_this_python_on_this_home_like_the_deploy_unit(tmp_path: Path) -> None:
    text = service.systemd_unit(service.agent_command(tmp_path / "my home"),
                                tmp_path / "agent.env")
    keys = service_keys(text)
    assert keys["ExecStart"] == f"{sys.executable} -m p2psync --home '{tmp_path}/my home' run"
    deploy = service_keys(DEPLOY_UNIT.read_text())
    for k in ("ExecStart", "EnvironmentFile"):
        keys.pop(k), deploy.pop(k)
    assert keys == deploy  # the same restart, limits and hardening as the documented unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_rendered_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / service.UNIT
    unit.write_text(service.systemd_unit(service.agent_command(tmp_path), tmp_path / "e.env"))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    complaints = [x for x in (proc.stdout + proc.stderr).splitlines() if service.UNIT in x]
    assert proc.returncode == 0 and complaints == [], proc.stdout + proc.stderr


def test_launchd_plist_keeps_the_agent_alive(tmp_path: Path) -> None:
    plist = plistlib.loads(service.launchd_plist(service.agent_command(tmp_path), tmp_path))
    assert plist["Label"] == service.LABEL
    assert plist["ProgramArguments"][-1] == "run" and plist["KeepAlive"] == {
        "SuccessfulExit": False}
    assert plist["SoftResourceLimits"]["NumberOfFiles"] >= 4096
    assert service.target("darwin").path.name == f"{service.LABEL}.plist"
    with pytest.raises(service.ServiceError, match="no service manager"):
        service.target("win32")


def test_install_status_uninstall(tmp_path: Path) -> None:
    e = dict(env(), XDG_CONFIG_HOME=str(tmp_path / "config"), HOME=str(tmp_path))
    home = tmp_path / "h"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "p2psync", "--json", *args, "--home",
                               str(home)], capture_output=True, text=True, env=e, timeout=60)

    assert cli("service", "install", "--no-start").returncode != 0  # no identity yet
    assert cli("init").returncode == 0
    proc = cli("service", "install", "--no-start")
    assert proc.returncode == 0, proc.stderr
    unit = tmp_path / "config" / "systemd" / "user" / service.UNIT
    assert json.loads(proc.stdout)["installed"] == str(unit)
    text = unit.read_text()
    assert re.search(rf"^ExecStart=.* --home {home} run$", text, re.M)
    assert f"EnvironmentFile=-{tmp_path}/config/p2psync/agent.env" in text
    assert os.stat(unit).st_mode & 0o777 == 0o644
    assert json.loads(cli("service", "status").stdout)["installed"] is True
    assert json.loads(cli("service", "uninstall", "--no-stop").stdout)["removed"] == str(unit)
    assert not unit.exists()
    assert json.loads(cli("service", "status").stdout)["installed"] is False
