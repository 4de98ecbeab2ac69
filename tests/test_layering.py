"""The dependency direction of the tree, read from the source (every import, lazy ones included).

protocol/ imports nothing of the project; client/ and loadtest/ only hark.protocol; server/ nothing
of the client, the harness, the benchmarks or the stand-ins; standins/ never hark.server; bench/ may
use the harness but not the reverse. And no import cycle between any two modules at run time
(imports under `if TYPE_CHECKING:` count for the direction, not for cycles: they never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from conftest import REPO

# folder -> the name its modules are imported under
ROOTS = {
    "protocol": "hark.protocol",
    "server": "hark.server",
    "client": "hark.client",
    "loadtest": "hark.loadtest",
    "bench": "bench",
    "standins": "standins",
    "tools": "tools",
}
TOP = {"hark", "bench", "standins", "tools"}

# package -> packages of the project it must never import
FORBIDDEN = {
    "hark.protocol": {"hark.server", "hark.client", "hark.loadtest", "bench", "standins", "tools"},
    "hark.client": {"hark.server", "hark.loadtest", "bench", "standins", "tools"},
    "hark.loadtest": {"hark.server", "hark.client", "bench", "standins", "tools"},
    "hark.server": {"hark.client", "hark.loadtest", "bench", "standins", "tools"},  # tools/ is not installed
    "standins": {"hark.server"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = [ROOTS[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for folder in ROOTS:
        for path in sorted((REPO / folder).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def _type_only(tree: ast.Module) -> set[int]:
    """The import statements under `if TYPE_CHECKING:`: they never run, so they make no runtime cycle."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found |= {id(sub) for stmt in node.body for sub in ast.walk(stmt)}
    return found


def imports_of(name: str, path: Path, known: set[str], *, runtime_only: bool = False) -> Iterator[str]:
    """The project modules `name` imports, resolved to modules (a name imported from a package that
    is a submodule counts as that submodule); with `runtime_only`, not the type-checking imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_only(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            targets = [source, *(f"{source}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            if target.split(".")[0] not in TOP:
                continue
            while target and target not in known:  # `import hark.server.asr.x` -> hark.server.asr.x
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def graph(*, runtime_only: bool = False) -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: set(imports_of(name, path, known, runtime_only=runtime_only)) for name, path in modules.items()}


def package_of(module: str) -> str:
    for package in sorted(FORBIDDEN, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return package
    return module.split(".")[0] if not module.startswith("hark.") else ".".join(module.split(".")[:2])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_sees_the_imports_it_should() -> None:
    # a check that finds nothing proves nothing: these edges exist and must be found
    edges = graph()
    assert "hark.protocol.ready" in edges["hark.server.app"]
    assert "hark.loadtest.spawn" in edges["bench.run"]
    assert "standins.sglang.scheduler" in edges["standins.sglang.http_app"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    # a type-only import (`if TYPE_CHECKING:`) counts for the direction, not for cycles
    assert "hark.server.config" in edges["hark.server.registry"]
    assert "hark.server.config" not in graph(runtime_only=True)["hark.server.registry"]


def test_no_package_imports_what_it_must_not() -> None:
    wrong = []
    for module, targets in sorted(graph().items()):
        banned = FORBIDDEN.get(package_of(module), set())
        wrong += [f"{module} -> {t}" for t in sorted(targets) if package_of(t) in banned]
    assert wrong == [], "imports against the dependency direction:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    edges = graph(runtime_only=True)
    modules = set(edges)
    # a package's __init__ importing its own submodules is how packages export; not a cycle
    for module, targets in edges.items():
        targets -= {t for t in modules if t.startswith(module + ".")}
    found = cycles(edges)
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)
