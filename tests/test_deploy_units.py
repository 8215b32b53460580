"""The systemd units in deploy/ are valid (``systemd-analyze verify``) and keep the settings a
long-running agent needs: restart on failure, a file-descriptor limit above 1024, a private
umask. The ``ExecStart`` binary is swapped for one that exists here (verify checks it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = sorted(DEPLOY.glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_keeps_what_a_service_needs(unit: Path) -> None:
    text = unit.read_text()
    assert re.search(r"^Restart=on-failure$", text, re.M)
    limit = re.search(r"^LimitNOFILE=(\d+)$", text, re.M)
    assert limit and int(limit.group(1)) >= 4096
    assert re.search(r"^UMask=0077$", text, re.M)
    assert re.search(r"^ExecStart=\S*p2psync( .*)? (backup )?run$", text, re.M)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    true = shutil.which("true")
    assert true is not None
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={true}", unit.read_text(), flags=re.M)
    text = re.sub(r"^User=.*$", "", text, flags=re.M)  # the service user need not exist here
    rendered = tmp_path / unit.name
    rendered.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(rendered)], capture_output=True,
                          text=True, timeout=60)
    # unknown keys and bad values are warnings on stderr with exit code 0: refuse those too
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines()
                  if unit.name in line or rendered.name in line]
    assert proc.returncode == 0 and complaints == [], proc.stdout + proc.stderr
