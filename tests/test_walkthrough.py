"""The README's "Use it" section, run literally: its shell block is parsed and every line is
executed as a real ``p2psync`` process against two real agents on loopback (issue 14).

Only what cannot be literal on one machine differs: each device's home is a temp folder with a
``config.toml`` (port 0, no mDNS: the invite code's address hints find the other agent), and
``doc watch`` gets ``--count 0`` (print the snapshot line and exit). Placeholders (DOC, CODE,
REQUEST) are filled from what earlier steps printed, and every ``# prints …`` comment is
checked against the real output — so the README cannot drift from the code.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tests.test_cli_agent import CONFIG, AgentProc, agents, env

__all__ = ["agents"]  # the fixture, re-exported for pytest

README = Path(__file__).resolve().parent.parent / "README.md"
RATE_WINDOW = 2.0  #: seconds over which the pending join's message rate is measured
MAX_RATE = 2.0  #: messages/s a pending join may cost (issue 14: "at most ~1 message/s")


def walkthrough() -> list[str]:
    """The lines of the shell block under "## Use it"."""
    text = README.read_text()
    section = text[text.index("## Use it"):]
    block = section[section.index("```sh") + len("```sh"):]
    return block[:block.index("```")].strip("\n").splitlines()


def run(home: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2psync", *args, "--home", str(home)],
                          capture_output=True, text=True, env=env(), timeout=60,
                          stdin=subprocess.DEVNULL)


def messages(home: Path) -> int:
    """Sync messages in + out on every connection of the agent of ``home``."""
    proc = run(home, ["--json", "status"])
    assert proc.returncode == 0, proc.stderr
    peers = json.loads(proc.stdout)["peers"]
    return sum(p["messages_in"] + p["messages_out"] for p in peers)


def check_prints(comment: str, out: str, line: str) -> None:
    """A ``# prints X`` comment against the real stdout."""
    m = re.match(r"prints (ok|accepted|\{.*\})\s*$", comment)
    if m is None:
        return
    want = m.group(1)
    if want.startswith("{"):
        assert json.loads(out) == json.loads(want), line
    else:
        assert out.strip() == want, line


def test_readme_use_it_runs_literally(tmp_path: Path, agents: list[AgentProc]) -> None:
    homes: dict[int, Path] = {}
    device = 0
    values: dict[str, str] = {}
    join: subprocess.Popen[str] | None = None
    join_err: list[str] = []
    ran: list[str] = []
    for raw in walkthrough():
        line = raw.strip()
        head = re.match(r"# Device (\d)", line)
        if head:
            device = int(head.group(1))
            homes.setdefault(device, tmp_path / f"device{device}")
            if join is not None and device == 1:
                # the join is waiting for approval: measure what waiting costs
                b = homes[2]
                before, t0 = messages(b), time.monotonic()
                time.sleep(RATE_WINDOW)  # a measurement window, not synchronisation
                rate = (messages(b) - before) / (time.monotonic() - t0)
                assert rate <= MAX_RATE, f"a pending join sends {rate:.1f} messages/s"
            if join is not None and device == 2:
                out, err = join.communicate(timeout=60)
                assert join.returncode == 0, "".join(join_err) + err
                assert re.fullmatch(r"joined notes \(\S+\) as writer \(1 documents\)\n",
                                    out), out
                join = None
            continue
        code, _, comment = line.partition(" #")
        if not code.strip() or code.startswith("#"):
            continue
        words = shlex.split(code)
        if words[0] == "export":
            continue
        assert words[0] == "p2psync", line
        args = [values.get(w, w) for w in words[1:]]
        home = homes[device]
        ran.append(" ".join(words[1:3]))
        if args == ["run", "&"]:
            agents.append(AgentProc(home))
            continue
        if args[:2] == ["space", "join"]:
            join = subprocess.Popen(
                [sys.executable, "-m", "p2psync", *args, "--home", str(home)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                stdin=subprocess.DEVNULL)
            assert join.stderr is not None
            while not any("p2psync space accept" in x for x in join_err):
                err_line = join.stderr.readline()
                assert err_line, f"join ended without waiting: {join.communicate()}"
                join_err.append(err_line)
            text = "".join(join_err)
            m = re.search(r"accept request (\w+) — .*\n\s+p2psync space accept (\S+) (\w+)",
                          text)
            assert m, text
            values["JOIN_REQUEST"], values["SPACE"] = m.group(1), m.group(2)
            continue
        if args[:2] == ["doc", "watch"]:
            args += ["--count", "0"]
        proc = run(home, args)
        assert proc.returncode == 0, f"{line}: {proc.stderr}"
        check_prints(comment.strip(), proc.stdout, line)
        if args[0] == "init":
            (home / "config.toml").write_text(CONFIG)
        elif args[:2] == ["doc", "new"]:
            values["DOC"] = proc.stdout.strip()
        elif args[:2] == ["space", "invite"]:
            values["CODE"] = proc.stdout.strip()
        elif args[:2] == ["space", "requests"]:
            values["REQUEST"] = proc.stdout.split()[0]
            # the joiner was told the request id the admin sees
            assert values["REQUEST"].startswith(values["JOIN_REQUEST"])
        elif args[:2] == ["space", "create"]:
            values["SPACE_ID"] = proc.stdout.strip()
        elif args[:2] == ["doc", "watch"]:
            snap = json.loads(proc.stdout.splitlines()[0])
            assert snap["event"] == "snapshot" and snap["value"] == {"title": "Groceries"}
            assert snap["heads"] and all(isinstance(h, str) for h in snap["heads"])
    assert join is None
    assert values["SPACE"] == values["SPACE_ID"]
    for step in ("space join", "space accept", "doc watch", "status"):
        assert step in ran, f"the README no longer runs {step}"
    # nothing half-joined on device 2: one space, a writer, named by the space itself (its
    # name travels sealed in its ACL: no --name on the join, no local alias; issue 14)
    rows = json.loads(run(homes[2], ["--json", "space", "list"]).stdout)
    assert [(r["name"], r["shared_name"], r["alias"], r["role"]) for r in rows] == [
        ("notes", "notes", None, "writer")]


def test_pending_join_times_out_with_exit_6_and_leave_cancels_it(
        tmp_path: Path, agents: list[AgentProc]) -> None:
    """Without an agent on the joining device, ``space join --wait`` gives up after its wait
    with exit code 6 and says how to cancel; ``space leave`` does, leaving nothing behind."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for home in (alice, bob):
        assert run(home, ["init"]).returncode == 0
        (home / "config.toml").write_text(CONFIG)
    agents.append(AgentProc(alice))
    assert run(alice, ["space", "create", "notes"]).returncode == 0
    code = run(alice, ["space", "invite", "notes"]).stdout.strip()
    proc = run(bob, ["space", "join", code, "--wait", "1", "--no-mdns"])
    assert proc.returncode == 6, proc.stderr
    assert "waiting for an admin to accept request" in proc.stderr
    assert "stays pending" in proc.stderr and "p2psync space leave" in proc.stderr
    rows = json.loads(run(bob, ["--json", "space", "list"]).stdout)
    assert [r["role"] for r in rows] == ["pending"]
    left = run(bob, ["space", "leave", rows[0]["space_id"]])
    assert left.returncode == 0 and left.stdout.startswith("cancelled the pending join")
    assert json.loads(run(bob, ["--json", "space", "list"]).stdout) == []
