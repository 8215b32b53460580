"""Mutation testing of the security-critical code, one module group at a time (mutmut 3).

Not part of CI (a full run takes over an hour on two cores). For every group below this script
builds a workspace ``.mutation/<group>/`` holding a copy of ``p2psync/`` and ``tests/`` and a
``pyproject.toml`` whose ``[tool.mutmut]`` mutates only that group's files and runs only that
group's test files; mutmut then maps each mutated function to the tests that call it and runs
just those per mutant. It prints a table (module, mutants, killed, survived, score, time) and
writes JSON (``bench-results/mutation-<time>.json`` or ``--out``).

    python3 scripts/mutation.py                      # every group
    python3 scripts/mutation.py crypto change        # some groups
    python3 scripts/mutation.py --survivors crypto   # also list surviving mutants
    python3 scripts/mutation.py acl --only '*ǁAclǁ_add__mutmut_*'   # some functions only
    (cd .mutation/crypto && python3 -m mutmut show p2psync.crypto.box.x_open__mutmut_3)

Score = killed / (mutants - "no tests"), timeouts count as killed (the mutant hung the test).
Survivors are classified from the mutant's AST: ``message`` (only what an exception says),
``text`` (only a str literal: labels, field names quoted in errors), ``identical`` (the same
code as the original) or ``logic`` (anything
else: these are the ones to kill or to explain in docs/testing.md).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".mutation"

#: group -> (files to mutate, test files run against them). Test files are the focused unit
#: tests of the group; slow process/netns tests are left out so a run stays feasible.
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "crypto": (
        ["p2psync/crypto/box.py", "p2psync/crypto/cert.py", "p2psync/crypto/ids.py",
         "p2psync/crypto/keys.py", "p2psync/crypto/keystore.py", "p2psync/crypto/signed.py"],
        ["tests/test_crypto.py", "tests/test_keystore.py", "tests/test_change.py",
         "tests/test_acl_records.py", "tests/test_bite_crypto.py", "tests/test_vectors.py"],
    ),
    "change": (
        ["p2psync/replica/change.py"],
        ["tests/test_change.py", "tests/test_tree.py", "tests/test_access.py",
         "tests/test_bite_change.py", "tests/test_change_seal.py", "tests/test_store_lazy.py",
         "tests/test_vectors.py"],
    ),
    "backup": (
        ["p2psync/backup/guard.py", "p2psync/backup/policy.py", "p2psync/backup/receipt.py"],
        ["tests/test_backup.py", "tests/test_bite_backup.py", "tests/test_policy_conformance.py"],
    ),
    "noise": (
        ["p2psync/transport/noise.py", "p2psync/transport/handshake.py"],
        ["tests/test_noise.py", "tests/test_framing.py", "tests/test_bite_noise.py",
         "tests/test_transport_privacy.py", "tests/test_vectors.py"],
    ),
    "framing": (
        ["p2psync/transport/framing.py"],
        ["tests/test_framing.py", "tests/test_bite_framing.py"],
    ),
    "acl_records": (
        ["p2psync/replica/acl_records.py"],
        ["tests/test_acl_records.py", "tests/test_access.py", "tests/test_bite_acl_records.py",
         "tests/test_acl_records_mutants.py", "tests/test_acl_joins.py"],
    ),
    "acl": (
        ["p2psync/replica/acl.py"],
        ["tests/test_acl_scenarios.py", "tests/test_acl_properties.py",
         "tests/test_acl_records.py", "tests/test_access.py", "tests/test_acl_removal.py",
         "tests/test_acl_flood.py", "tests/test_bite_acl.py", "tests/test_acl_mutants.py"],
    ),
    "tree": (
        ["p2psync/replica/tree.py"],
        ["tests/test_tree.py", "tests/test_store.py", "tests/test_bite_tree.py",
         "tests/test_tree_mutants.py", "tests/test_parallel_verify.py", "tests/test_shallow.py",
         "tests/test_store_lazy.py", "tests/test_store_open.py", "tests/test_snapshots.py",
         "tests/test_snapshot_fetch.py"],
    ),
    "sync": (
        ["p2psync/sync/responder.py", "p2psync/sync/ingest.py", "p2psync/replica/acl_gate.py",
         "p2psync/sync/peerstate.py", "p2psync/sync/replicas.py", "p2psync/sync/sched.py",
         "p2psync/backup/quota.py", "p2psync/sync/memberlimits.py"],
        ["tests/test_sync_cores.py", "tests/test_access.py", "tests/test_sync_inbound.py",
         "tests/test_full_sync_raw.py", "tests/test_sync_sched.py", "tests/test_shallow.py",
         "tests/test_store_usage.py", "tests/test_backup.py", "tests/test_limits_config.py",
         "tests/test_policy_conformance.py", "tests/test_parse_once.py", "tests/test_engine.py",
         "tests/test_tree.py", "tests/test_bite_sync.py"],
    ),
}

KILLED = {1, 3, -24, 24, 152, 255, 36}  # failing tests, pytest internal error, or a timeout
SURVIVED = {0}
NO_TESTS = {33, 5}


def prepare(group: str, files: list[str], tests: list[str]) -> Path:
    ws = WORK / group
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.sqlite3*", ".hypothesis")
    shutil.copytree(REPO / "p2psync", ws / "p2psync", ignore=ignore)
    shutil.copytree(REPO / "tests", ws / "tests", ignore=ignore)
    # test_vectors re-derives the vectors with scripts/gen_vectors*.py: without scripts/ it
    # fails at collection (pytest exit 4) and every mutant it covers is left unjudged
    shutil.copytree(REPO / "scripts", ws / "scripts",
                    ignore=shutil.ignore_patterns("__pycache__", "*.json"))
    base = tomllib.loads((REPO / "pyproject.toml").read_text())
    pytest_opts = base["tool"]["pytest"]["ini_options"]
    keep = [t for t in tests if (REPO / t).exists()]
    every = [str(p.relative_to(REPO)) for p in (REPO / "p2psync").rglob("*.py")]
    skip = sorted(p for p in every if p not in files)
    lines = ["[tool.pytest.ini_options]"]
    for k, v in pytest_opts.items():
        lines.append(f"{k} = {json.dumps(v)}")
    lines += ["", "[tool.mutmut]", 'paths_to_mutate = ["p2psync/"]',
              f"do_not_mutate = {json.dumps(skip)}", f"tests_dir = {json.dumps(keep)}",
              'also_copy = ["scripts/"]', ""]
    (ws / "pyproject.toml").write_text("\n".join(lines))
    return ws


def _functions(path: Path) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text())
    return {n.name: n for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def _diffs(a: Any, b: Any, path: tuple[ast.AST, ...]) -> Iterator[tuple[Any, Any, tuple]]:
    """The smallest differing sub-trees of two ASTs, each with its ancestors."""
    if type(a) is not type(b):
        yield a, b, path
    elif isinstance(a, ast.AST):
        for f in a._fields:
            if f != "ctx":
                yield from _diffs(getattr(a, f, None), getattr(b, f, None), (*path, a))
    elif isinstance(a, list):
        if len(a) != len(b):
            yield a, b, path
        else:
            for x, y in zip(a, b, strict=True):
                yield from _diffs(x, y, path)
    elif a != b:
        yield a, b, path


LABEL_KWARGS = {"what"}  #: keyword arguments that only name a thing in error messages


def _dropped_label(a: Any, b: Any) -> bool:
    """A keyword argument that only labels error messages was dropped."""
    if not (isinstance(a, list) and isinstance(b, list) and len(a) == len(b) + 1
            and all(isinstance(k, ast.keyword) for k in a + b)):
        return False
    gone = {k.arg for k in a} - {k.arg for k in b}
    return gone <= LABEL_KWARGS


def _is_label(node: Any, path: tuple[ast.AST, ...]) -> bool:
    """``node`` only names a thing for error messages: a ``what=`` argument, or the name
    argument of ``Reader(value, name)``."""
    if any(isinstance(n, ast.keyword) and n.arg in LABEL_KWARGS for n in path):
        return True
    call = next((n for n in reversed(path) if isinstance(n, ast.Call)), None)
    return (call is not None and isinstance(call.func, ast.Name) and call.func.id == "Reader"
            and any(node is x for x in call.args[1:]))


def classify(funcs: dict[str, Any], key: str) -> str:
    """``message`` if the mutant only changes what an exception says, ``text`` if it only
    changes a str literal (labels, field names in error messages), ``identical`` if it is the
    original code (mutmut lower-cased an already lower-case literal), else ``logic``."""
    name = key.rsplit(".", 1)[-1]
    orig = funcs.get(name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
    mut = funcs.get(name)
    if orig is None or mut is None:
        return "logic"
    kinds = set()
    for a, b, path in _diffs([orig.args, orig.body], [mut.args, mut.body], ()):
        if any(isinstance(n, ast.Raise) for n in path):
            kinds.add("message")
        elif (isinstance(a, str) and isinstance(b, str | None)) or any(
                isinstance(n, ast.JoinedStr) for n in path) or _dropped_label(a, b) \
                or _is_label(a, path):
            kinds.add("text")
        else:
            kinds.add("logic")
    if not kinds:
        return "identical"  # e.g. lower-casing an already lower-case literal
    if "logic" in kinds:
        return "logic"
    return "text" if "text" in kinds else "message"


def mutant_diff(funcs: dict[str, Any], key: str) -> list[str]:
    """The changed lines of a mutant against its original (``-`` old, ``+`` new)."""
    name = key.rsplit(".", 1)[-1]
    orig = funcs.get(name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
    mut = funcs.get(name)
    if orig is None or mut is None:
        return []
    a = ast.unparse(orig).replace(orig.name, "f", 1).splitlines()
    b = ast.unparse(mut).replace(mut.name, "f", 1).splitlines()
    return [ln for ln in difflib.unified_diff(a, b, lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


def collect(ws: Path, files: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for f in files:
        meta = ws / "mutants" / (f + ".meta")
        codes: dict[str, int | None] = {}
        if meta.exists():
            codes = json.loads(meta.read_text())["exit_code_by_key"]
        killed = sorted(k for k, c in codes.items() if c in KILLED)
        survived = sorted(k for k, c in codes.items() if c in SURVIVED)
        no_tests = sorted(k for k, c in codes.items() if c in NO_TESTS)
        not_run = sorted(k for k, c in codes.items() if c is None)  # --only, or stopped
        other = sorted(k for k, c in codes.items()
                       if c is not None and c not in KILLED | SURVIVED | NO_TESTS)
        tested = len(codes) - len(no_tests) - len(not_run)
        funcs = _functions(ws / "mutants" / f) if survived else {}
        kinds = {k: classify(funcs, k) for k in survived}
        diffs = {k: mutant_diff(funcs, k) for k in survived}
        logic = sorted(k for k in survived if kinds[k] == "logic")
        out[f] = {"mutants": len(codes), "killed": len(killed), "survived": len(survived),
                  "survived_logic": len(logic), "survivor_kinds": kinds, "diffs": diffs,
                  "no_tests": len(no_tests), "other": len(other), "not_run": len(not_run),
                  "score": round(len(killed) / tested, 3) if tested else None,
                  "survivors": survived, "untested": no_tests, "unclassified": other}
    return out


WALL_LIMIT = 240.0  #: seconds a mutant's test run may take before it counts as a timeout


def mutmut_cli() -> int:
    """mutmut's CLI with its timeout checker fixed (runs inside the mutmut process).

    mutmut 3.3.1 judges a mutant "timeout" (counted as killed) from per-test durations that
    cover only the test call, not its fixtures (a real-socket test "takes" 5 ms), and its
    wall-clock checker compares *every* running child of a file with each mutant's estimate in
    turn: any child is killed after 15 × (the smallest estimate + 1 s), i.e. ~15 s. On a
    loaded shared machine most mutants of ``acl.py`` were thus reported killed without having
    failed anything (2026-12-03: 50 "timeouts" in 123 mutants). Here a child gets 240 s of wall
    time and its CPU limit is 10 × mutmut's + 120 s: a mutant that really loops is still
    stopped (by the CPU limit), a slow but finishing one is judged by its tests.
    """
    import resource
    import signal
    from datetime import datetime

    import mutmut.__main__ as mm  # type: ignore[import-untyped]

    class _Resource:
        RLIMIT_CPU = resource.RLIMIT_CPU

        @staticmethod
        def setrlimit(which: int, limits: tuple[int, int]) -> None:
            soft, hard = limits
            resource.setrlimit(which, (soft * 10 + 120, hard * 10 + 121))

    mm.resource = _Resource

    def timeout_checker(mutants: list[Any]) -> Any:
        files = list({id(m): m for m, _, _ in mutants}.values())

        def check() -> None:
            while True:
                time.sleep(1)
                now = datetime.now()
                for m in files:
                    with mm.START_TIMES_BY_PID_LOCK:
                        starts = dict(m.start_time_by_pid)
                    for pid, t0 in starts.items():
                        if (now - t0).total_seconds() > WALL_LIMIT:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, signal.SIGXCPU)
        return check

    def forget_verify_pool() -> None:
        # mutmut forks one child per mutant from a process whose clean run already started
        # the tree's signature-verification thread pool: in the child its threads are gone,
        # a submitted batch never completes and the child hangs (then "timeout" = killed).
        tree = sys.modules.get("p2psync.replica.tree")
        if tree is not None:
            tree._pool = None  # type: ignore[attr-defined]

    os.register_at_fork(after_in_child=forget_verify_pool)
    mm.timeout_checker = timeout_checker
    return int(mm.cli() or 0)


def logic_mutants(ws: Path, files: list[str], only: list[str] | None,
                  logic: bool = True) -> list[str]:
    """Names of the generated mutants (matching ``only``, if given) that change logic, not only
    a message or a label (:func:`classify`): the ones worth a test run (all if not ``logic``).
    """
    import fnmatch

    names: list[str] = []
    stats = ws / "mutants" / "mutmut-stats.json"
    tested = (json.loads(stats.read_text())["tests_by_mangled_function_name"]
              if stats.exists() else {})
    for f in files:
        meta = ws / "mutants" / (f + ".meta")
        if not meta.exists():
            continue
        funcs = _functions(ws / "mutants" / f)
        for key in json.loads(meta.read_text())["exit_code_by_key"]:
            if only and not any(fnmatch.fnmatch(key, pat) for pat in only):
                continue
            # mutmut looks each named mutant's function up in its test map (KeyError if none)
            if (not logic or classify(funcs, key) == "logic") \
                    and tested.get(key.partition("__mutmut_")[0]):
                names.append(key)
    return names


INPROC_TIMEOUT = 120  #: seconds one mutant's tests may take in-process (then: killed)

#: Runs inside the workspace (``cwd``), mutants/ first on sys.path: one pytest session per
#: mutant in ONE process, the mutant picked by MUTANT_UNDER_TEST, which mutmut's trampolines
#: read at every call. No fork, no re-import: per mutant only its tests run. Caveat: state a
#: module creates lazily outlives a mutant (the tree's verify pool is reset here; a survivor
#: of this mode that touches other such state is worth a re-check in fork mode or by hand).
INPROC_DRIVER = r"""
import json, os, signal, sys, time
os.chdir("mutants")  # as mutmut does: the mutated p2psync/ and the tests' copy live there
sys.path[:0] = [os.getcwd()]
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.getcwd())]
os.environ["MUTANT_UNDER_TEST"] = "none"
import pytest
from hypothesis import Phase, settings
# a failing property is a killed mutant: shrinking its example only costs time
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate],
                          deadline=None)
settings.load_profile("mutation")

import fcntl
names = json.loads(sys.argv[1]); timeout = int(sys.argv[2])
stats = json.load(open("mutmut-stats.json"))
tests_of = stats["tests_by_mangled_function_name"]; dur = stats["duration_by_test"]
metas = {}
kills = {}  # test node id -> mutants it killed (seeded from earlier runs' log lines)
if os.path.exists("../mutmut.log"):
    for line in open("../mutmut.log", errors="replace"):
        parts = line.split("RESULT ", 1)[-1].split(" ") if "RESULT " in line else []
        if len(parts) > 3 and parts[1] not in ("0", "-24") and "::" in parts[3]:
            kills[parts[3]] = kills.get(parts[3], 0) + 1
class Timeout(BaseException):
    pass
timed_out = False
def alarm(*_):
    # pytest reports an exception raised inside a test as that test's failure (exit code 1):
    # the flag, not the exit code, says the mutant was stopped by the clock
    global timed_out
    timed_out = True
    raise Timeout()
signal.signal(signal.SIGALRM, alarm)
# records the first failing test and its message: a kill must be a real failure (not a
# Hypothesis health check or a timeout), and the log says which test did it
class Why:
    def __init__(self):
        self.first = None
    def pytest_runtest_logreport(self, report):
        if report.failed and self.first is None:
            exc = getattr(getattr(report, "longrepr", None), "reprcrash", None)
            msg = (exc.message.splitlines() or [""])[0][:100] if exc is not None else ""
            self.first = f"{report.nodeid} [{report.when}] {msg}"
def record(meta_path, name, code):
    # several drivers (--jobs) share one meta file: read-modify-write under a lock
    with open(meta_path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(meta_path) as f:
            fresh = json.load(f)
        fresh["exit_code_by_key"][name] = code
        with open(meta_path + ".tmp", "w") as f:
            json.dump(fresh, f, indent=1)
        os.replace(meta_path + ".tmp", meta_path)
# import every test module once under the original code: module-level fixtures (worlds,
# trees built at import) must not be built by whichever mutant happens to run first
files = sorted({t.split("::")[0] for ts in tests_of.values() for t in ts})
pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *files])
for name in names:
    fn = name.partition("__mutmut_")[0]
    path = fn.rpartition(".")[0]
    while path and not os.path.exists(path.replace(".", "/") + ".py"):
        path = path.rpartition(".")[0]
    meta_path = path.replace(".", "/") + ".py.meta"
    meta = metas.setdefault(meta_path, json.load(open(meta_path)))
    if meta["exit_code_by_key"].get(name) is not None:  # --resume: judged already
        continue
    # cheapest expected kill first: a test's duration over the kills it made before (a test
    # that killed many mutants tends to kill the next one, but a 30 s killer must not run
    # before a 0.1 s test that kills nearly as often: that made resumed runs ~4x slower)
    tests = sorted(tests_of.get(fn, []),
                   key=lambda t: (dur.get(t, 0) / (1 + kills.get(t, 0)), -kills.get(t, 0)))
    if not tests:
        record(meta_path, name, 33)
        continue
    os.environ["MUTANT_UNDER_TEST"] = name
    tree = sys.modules.get("p2psync.replica.tree")  # module state a mutant may create lazily
    if tree is not None and tree._pool is not None:
        tree._pool.shutdown(wait=False)
        tree._pool = None
    if tree is not None:  # the stored-change interning cache, filled by the original
        getattr(tree, "_shared", {}).clear()  # code, hides mutants storing a wrong value
    t0 = time.monotonic()
    why = Why()
    timed_out = False
    signal.alarm(timeout)
    try:
        # no pytest-timeout: it re-arms SIGALRM per test (cancelling the alarm above) and
        # reports a hang as an ordinary test failure. --tb=native: pytest's own traceback
        # parses each frame's module for statement ranges, and the trampolined module is
        # thousands of lines: a mutant killed by a 0.1 s test took 30-60 s to report
        code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "--no-header",
                                "-p", "no:warnings", "-p", "no:timeout", "--tb=native",
                                *tests],
                               plugins=[why]))
    except Timeout:
        code = -24
    finally:
        signal.alarm(0)
        os.environ["MUTANT_UNDER_TEST"] = "none"
    if timed_out:  # only our clock: a test failing on its own asyncio TimeoutError is a kill
        code = -24
    record(meta_path, name, code)
    if code not in {1, 3, -24, 24, 152, 255, 36, 0, 33, 5}:  # KILLED | SURVIVED | NO_TESTS
        print(f"ERROR {name}: pytest exit {code} (collection or usage error): NOT judged; "
              "fix the test list and re-run it with --resume --only", file=sys.stderr, flush=True)
    if why.first:
        killer = why.first.split(" ")[0]
        kills[killer] = kills.get(killer, 0) + 1
    print(f"RESULT {name} {code} {time.monotonic() - t0:.1f}s {why.first or ''}",
          file=sys.stderr, flush=True)
"""


def forget_timeouts(ws: Path, files: list[str]) -> None:
    """Set the timeouts (-24) of earlier runs back to "not run": a timeout on a loaded
    machine is no proof that the mutant hangs."""
    for f in files:
        meta = ws / "mutants" / (f + ".meta")
        if meta.exists():
            data = json.loads(meta.read_text())
            codes = data["exit_code_by_key"]
            for k, c in codes.items():
                if c in (-24, 24, 36, 152, 255):
                    codes[k] = None
            meta.write_text(json.dumps(data, indent=1))


def run_group(group: str, children: int, only: list[str] | None = None,
              tests_override: list[str] | None = None,
              logic_only: bool = False,
              in_process: bool = False,
              resume: bool = False, jobs: int = 1,
              timeout: int = INPROC_TIMEOUT) -> tuple[dict[str, dict[str, Any]], float]:
    files, tests = GROUPS[group]
    tests = tests_override or tests
    ws = WORK / group
    if not (resume and (ws / "mutants").is_dir()):
        ws = prepare(group, files, tests)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutants/ must win
    # the Noise test vectors sit next to the checkout (../shared/vectors), not next to the
    # workspace copy: point the tests at them so they run under mutation too
    for base in (REPO.parent, *REPO.parents):
        vectors = base / "shared" / "vectors"
        if vectors.is_dir():
            env.setdefault("P2PSYNC_NOISE_VECTORS", str(vectors))
            break
    t0 = time.monotonic()
    log = (ws / "mutmut.log").open("a" if resume else "w")
    # not ``-m mutmut``: its trampolines import mutmut.__main__ again, which then fails
    here = str(Path(__file__).resolve().parent)
    cli = (f"import sys; sys.path.insert(0, {here!r}); import mutation; "
           "sys.exit(mutation.mutmut_cli())")
    # ``only``: mutmut's own name filter (fnmatch patterns on mutant names, e.g.
    # ``*ǁAclǁ_add__mutmut_*``): the other mutants are generated but not run (no result)
    names = list(only or [])
    if logic_only or in_process:
        # a first call that matches nothing only generates the mutants and maps tests to
        # functions (mutmut then stops: "nothing matches"); then run just the logic ones
        if not resume:
            subprocess.run([sys.executable, "-c", cli, "run", "__generate_only__"],
                           cwd=ws, env=env, stdout=log, stderr=subprocess.STDOUT)
        names = logic_mutants(ws, files, only, logic=logic_only)
        print(f"[{group}] {len(names)} mutants to run", file=sys.stderr, flush=True)
    if in_process:
        # ``jobs`` drivers, each its share of the mutants (round robin: neighbours in a
        # function tend to cost alike); they record results in the meta file under a lock
        procs = [subprocess.Popen([sys.executable, "-c", INPROC_DRIVER,
                                   json.dumps(names[j::jobs]), str(timeout)],
                                  cwd=ws, env=env, stdout=log, stderr=subprocess.STDOUT)
                 for j in range(max(1, jobs))]
        codes = [p.wait() for p in procs]
        proc = subprocess.CompletedProcess([], max(codes, key=abs))
    else:
        proc = subprocess.run([sys.executable, "-c", cli, "run", "--max-children",
                               str(children), *names],
                              cwd=ws, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        print(f"[{group}] mutmut exited {proc.returncode}; see {ws / 'mutmut.log'}",
              file=sys.stderr)
    return collect(ws, files), elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("groups", nargs="*", help=f"groups to run (default: all): {list(GROUPS)}")
    ap.add_argument("--children", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--survivors", action="store_true", help="list surviving mutants")
    ap.add_argument("--logic", action="store_true",
                    help="with --survivors: only those that change logic, not text")
    ap.add_argument("--only", action="append", metavar="PATTERN",
                    help="run only the mutants whose name matches this fnmatch pattern "
                         "(repeatable), e.g. '*ǁAclǁ_add__mutmut_*' or '*.check_change__*'; "
                         "scores then cover those mutants only")
    ap.add_argument("--tests", action="append", metavar="FILE",
                    help="run these test files instead of the group's (repeatable): a quick "
                         "first pass on a loaded machine; re-check its survivors with the "
                         "group's full list")
    ap.add_argument("--logic-only", action="store_true",
                    help="run only mutants that change logic (not messages or labels): "
                         "message/text mutants are left unrun and out of the score")
    ap.add_argument("--in-process", action="store_true",
                    help="after mutmut generated the mutants and mapped the tests, run every "
                         "mutant's tests in ONE process (no fork, no re-import; several times "
                         f"faster on a loaded machine; {INPROC_TIMEOUT} s per mutant, then "
                         "killed)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="with --in-process: this many driver processes share the mutants "
                         "(run under nice on a shared machine)")
    ap.add_argument("--timeout", type=int, default=INPROC_TIMEOUT,
                    help=f"with --in-process: seconds per mutant (default {INPROC_TIMEOUT}); "
                         "a mutant stopped by it is recorded -24 (killed) and logged: "
                         "re-judge such ones with --rejudge-timeouts and a larger value")
    ap.add_argument("--rejudge-timeouts", action="store_true",
                    help="with --resume: forget the timeouts (-24) of earlier runs so they "
                         "run again")
    ap.add_argument("--resume", action="store_true",
                    help="with --in-process: keep the group's workspace and results, run only "
                         "the mutants not judged yet")
    ap.add_argument("--collect", action="store_true",
                    help="do not run: re-read the results of earlier runs in .mutation/")
    args = ap.parse_args()
    groups = args.groups or list(GROUPS)
    if unknown := [g for g in groups if g not in GROUPS]:
        ap.error(f"unknown groups {unknown}; choose from {list(GROUPS)}")
    results: dict[str, Any] = {"groups": {}, "modules": {}}
    t_all = time.monotonic()
    for g in groups:
        if args.collect:
            mods, elapsed = collect(WORK / g, GROUPS[g][0]), float("nan")
            timing = WORK / g / "elapsed.txt"
            if timing.exists():
                elapsed = float(timing.read_text())
        else:
            print(f"[{g}] running ...", file=sys.stderr, flush=True)
            if args.rejudge_timeouts:
                forget_timeouts(WORK / g, GROUPS[g][0])
            mods, elapsed = run_group(g, args.children, args.only, args.tests,
                                      args.logic_only, args.in_process, args.resume,
                                      args.jobs, args.timeout)
            (WORK / g / "elapsed.txt").write_text(f"{elapsed:.1f}")
        results["groups"][g] = {"seconds": round(elapsed, 1), "tests": GROUPS[g][1]}
        results["modules"].update(mods)
    results["total_seconds"] = round(time.monotonic() - t_all, 1)

    print(f"{'module':34} {'mutants':>7} {'killed':>6} {'surv':>5} {'logic':>5} "
          f"{'notest':>6} {'notrun':>6} {'score':>6} {'group time':>10}")
    for g in groups:
        for f in GROUPS[g][0]:
            m = results["modules"][f]
            score = f"{m['score']:.0%}" if m["score"] is not None else "-"
            print(f"{f.removeprefix('p2psync/'):34} {m['mutants']:7} {m['killed']:6} "
                  f"{m['survived']:5} {m['survived_logic']:5} {m['no_tests']:6} "
                  f"{m.get('not_run', 0):6} {score:>6} "
                  f"{results['groups'][g]['seconds']:9.0f}s")
    print(f"total {results['total_seconds']:.0f}s")
    if args.survivors:
        for m in results["modules"].values():
            for s in m["survivors"]:
                if not args.logic or m["survivor_kinds"][s] == "logic":
                    print(f"survived  {m['survivor_kinds'][s]:8} {s}")
                    for ln in m["diffs"][s]:
                        print(f"        {ln.strip()[:150]}")
    out = args.out or REPO / "bench-results" / f"mutation-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
