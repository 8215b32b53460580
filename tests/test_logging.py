"""Log lines (issue 17): one ``event=`` key everywhere, timestamps with their UTC offset,
``--log-format json``, syslog priorities under journald; ``--version`` names the protocol."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

from p2psync import PROTOCOL_VERSION, __version__
from p2psync.agent.core import kv
from p2psync.agent.run import JsonFormatter, KeyValueFormatter
from tests.http_helpers import env, start_agent

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def record(msg: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("p2psync.agent", level, __file__, 1, msg, (), None)


def test_text_lines_carry_a_zoned_timestamp_and_the_event() -> None:
    line = KeyValueFormatter(journald=False).format(record(kv("connected", peer="p1",
                                                               endpoint="tcp://a b")))
    assert re.fullmatch(rf'ts={TS} level=warning logger=p2psync.agent event=connected '
                        r'peer=p1 endpoint="tcp://a b"', line), line
    assert 'msg="plain text"' in KeyValueFormatter(journald=False).format(record("plain text"))


def test_under_journald_lines_start_with_the_syslog_priority() -> None:
    f = KeyValueFormatter(journald=True)
    assert f.format(record(kv("x"), logging.ERROR)).startswith("<3>level=error ")
    assert f.format(record(kv("x"), logging.INFO)).startswith("<6>level=info ")
    assert "ts=" not in f.format(record(kv("x")))  # journald stamps lines itself


def test_json_lines_have_the_fields_as_keys() -> None:
    out = json.loads(JsonFormatter().format(record(kv("joined", space="s1", note="a b"))))
    assert re.fullmatch(TS, out.pop("ts"))
    assert out == {"level": "warning", "logger": "p2psync.agent", "event": "joined",
                   "space": "s1", "note": "a b"}
    assert json.loads(JsonFormatter().format(record("free text")))["msg"] == "free text"


async def test_run_logs_json_when_asked(tmp_path: Path) -> None:
    home = tmp_path / "h"
    async with start_agent(home, 'log_level = "info"\nlog_format = "json"'):
        pass
    lines = [json.loads(x) for x in (home / "agent.log").read_text().splitlines()
             if x.startswith("{")]
    events = [x.get("event") for x in lines]
    assert "started" in events and "stopped" in events and "http_started" in events
    assert all(re.fullmatch(TS, x["ts"]) for x in lines)


def test_version_names_the_protocol() -> None:
    out = subprocess.run([sys.executable, "-m", "p2psync", "--version"], capture_output=True,
                         text=True, env=env(), timeout=60, check=True).stdout
    assert out.strip() == f"p2psync {__version__} (protocol {PROTOCOL_VERSION}, local API 1)"
