"""The package's imports go one way: no cycles, no lower layer importing a higher one.

Walks every module of ``p2psync`` with :mod:`ast` (top-level, function-local and
``TYPE_CHECKING`` imports alike: a lazy import is still a dependency) and checks the graph
against :data:`LAYERS`. A module may import its own layer or lower ones. Every top-level module
and package needs a row; a sub-module may have its own row when it sits higher than its
package (an entry point, the backup service which runs the agent).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

import p2psync

FOUNDATION, CRYPTO, LOWER, SYNC, NODE, DEVICE, AGENT, API, SHELL, ENTRY = range(10)

#: module or package -> layer (the longest matching prefix wins)
LAYERS: dict[str, int] = {
    "p2psync": FOUNDATION,  # the package itself: version constants
    "p2psync.errors": FOUNDATION,
    "p2psync.codec": FOUNDATION,
    "p2psync.hostport": FOUNDATION,
    "p2psync.timefmt": FOUNDATION,
    "p2psync.backoff": FOUNDATION,
    "p2psync.crypto": CRYPTO,
    "p2psync.replica": LOWER,
    "p2psync.transport": LOWER,
    "p2psync.discovery": LOWER,
    "p2psync.home": LOWER,
    "p2psync.sync": SYNC,
    "p2psync.node": NODE,
    "p2psync.dialer": NODE,
    "p2psync.backup": NODE,  # the replicator: config, quota, receipts, storage policy
    "p2psync.config": DEVICE,
    "p2psync.device": DEVICE,
    "p2psync.agent": AGENT,
    "p2psync.api": API,
    "p2psync.apiclient": FOUNDATION,  # local-API client + JSON value parsing: stdlib only
    "p2psync.http": API,  # the local HTTP API and status page: REST over the same op table
    "p2psync.agent.run": SHELL,  # the process: signals, logging, the API socket
    "p2psync.backup.service": SHELL,  # `p2psync backup run`: the agent in replicator mode
    "p2psync.cli": SHELL,
    "p2psync.service": SHELL,  # `p2psync service install`: the agent as a user service
    "p2psync.demo": SHELL,
    "p2psync.__main__": ENTRY,
    "p2psync.discovery.__main__": ENTRY,
}

Graph = Mapping[str, set[str]]


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under the package directory ``root``."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in the file)."""
    mods = modules(root)
    top = root.name
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{target}.{alias.name}"
                    deps.add(sub if sub in mods else target)
        graph[name] = {d for d in deps if d in mods and d != name and
                       (d == top or d.startswith(top + "."))}
    return graph


def layer_of(module: str, layers: Mapping[str, int]) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in layers:
            if n == 1 and len(parts) > 1:
                return None  # only the package root matched: the module has no row
            return layers[key]
    return None


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def problems(graph: Graph, layers: Mapping[str, int]) -> list[str]:
    """Every rule the graph breaks, as sentences."""
    out = []
    for mod in sorted(graph):
        if layer_of(mod, layers) is None:
            top = ".".join(mod.split(".")[:2])
            out.append(f"{mod} has no layer: add a row for {top!r} to LAYERS in "
                       f"tests/test_layers.py")
    for mod in sorted(graph):
        mine = layer_of(mod, layers)
        for dep in sorted(graph[mod]):
            theirs = layer_of(dep, layers)
            if mine is not None and theirs is not None and theirs > mine:
                out.append(f"{mod} (layer {mine}) imports {dep} (layer {theirs}): a lower "
                           f"layer must not import a higher one")
    out += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return out


ROOT = Path(p2psync.__file__).parent


def test_package_imports_follow_the_layers_without_cycles() -> None:
    assert problems(import_graph(ROOT), LAYERS) == []


def test_every_module_is_in_the_graph() -> None:
    graph = import_graph(ROOT)
    assert {"p2psync.agent.core", "p2psync.agent.backups", "p2psync.node",
            "p2psync.dialer", "p2psync.crypto.cert"} <= set(graph)
    assert "p2psync.crypto.signed" in graph["p2psync.crypto.cert"]
    assert "p2psync.agent.core" not in graph["p2psync.agent.backups"]


def test_an_injected_cycle_fails() -> None:
    graph = {k: set(v) for k, v in import_graph(ROOT).items()}
    graph["p2psync.agent.backups"].add("p2psync.agent.core")  # same layer, so only a cycle
    (msg,) = problems(graph, LAYERS)
    assert msg.startswith("import cycle:") and "p2psync.agent.backups" in msg


def test_an_upward_import_fails() -> None:
    graph = {k: set(v) for k, v in import_graph(ROOT).items()}
    graph["p2psync.replica.space"].add("p2psync.sync.replicas")
    assert any("p2psync.replica.space (layer 2) imports p2psync.sync.replicas" in p
               for p in problems(graph, LAYERS))


def test_a_module_without_a_row_fails_with_a_hint() -> None:
    graph = {k: set(v) for k, v in import_graph(ROOT).items()}
    graph["p2psync.newthing"] = set()
    assert problems(graph, LAYERS) == [
        "p2psync.newthing has no layer: add a row for 'p2psync.newthing' to LAYERS in "
        "tests/test_layers.py"]


def test_the_checker_reads_real_sources(tmp_path: Path) -> None:
    """On files: a lazy import inside a function still closes a cycle."""
    pkg = tmp_path / "p2psync"
    (pkg / "agent").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "agent" / "__init__.py").write_text("")
    (pkg / "agent" / "a.py").write_text("from p2psync.agent import b\n")
    (pkg / "agent" / "b.py").write_text("def f():\n    from . import a\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [["p2psync.agent.a", "p2psync.agent.b"]]


@pytest.mark.parametrize("module", ["p2psync.backup.policy", "p2psync.backup.receipt"])
def test_the_replicator_stays_below_the_agent(module: str) -> None:
    assert layer_of(module, LAYERS) == NODE < AGENT
