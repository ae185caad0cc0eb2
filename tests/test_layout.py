"""The package's layout keeps its architecture (docs/architecture.md): imports go one way, from the
CLI down to the study, the engine, the library and the utilities; no module imports itself back
through others; no module or function outgrows the size limits. Read from the source with ast, so
a lazy import inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "segattack"

LIBRARY = ("attacks", "data", "metrics", "models", "evaluation")
# what each layer may import (besides itself); the root module is the public API over the library
MAY_IMPORT = {
    "util": set(),
    "library": {"util"},
    "api": {"util", "library"},
    "engine": {"util"},
    "study": {"util", "library", "api", "engine"},
    "cli": {"util", "library", "api", "engine", "study"},
    "main": {"cli"},
}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100
MAX_ATTACK_LINES = 160  # an attack's own algorithm function (adv_lib's run as long)


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def layer(module: str) -> str:
    """The layer of a module of the package: its first-level package decides."""
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    top = parts[1]
    if top == "__main__":
        return "main"
    if top in LIBRARY:
        return "library"
    if top in ("util", "engine", "study", "cli"):
        return top
    raise AssertionError(f"{module}: in no layer; add its package to tests/test_layout.py and docs/architecture.md")


def imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` (at ``path``) imports: a ``from a.b import c`` names the
    module ``a.b.c`` when there is one, else ``a.b`` (a parent package's ``__init__`` run on the way
    is not counted, as import-linter does not)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    root = name.split(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module for alias in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t.split(".")[0] == root and t in modules and t != name}
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = source_modules(root)
    return {name: imports(path, name, modules) for name, path in modules.items()}


def crossed_layers(graph: dict[str, set[str]]) -> list[str]:
    crossed = []
    for module, targets in sorted(graph.items()):
        mine = layer(module)
        for target in sorted(targets):
            theirs = layer(target)
            if theirs != mine and theirs not in MAY_IMPORT[mine]:
                crossed.append(f"{module} ({mine}) imports {target} ({theirs})")
    return crossed


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(_one_cycle(sorted(group), graph))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _one_cycle(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A path start -> ... -> start inside a strongly connected group (for the message)."""
    start, members = group[0], set(group)
    path, seen = [start], {start}
    while True:
        options = sorted(graph[path[-1]] & members)
        if start in options and len(path) > 1:
            return [*path, start]
        nxt = next((o for o in options if o not in seen), start)
        if nxt == start:
            return [*path, start]
        path.append(nxt)
        seen.add(nxt)


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same imports between first-level packages (``segattack.models`` -> ``segattack.attacks``)."""
    top = lambda m: ".".join(m.split(".")[:2])
    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        out.setdefault(top(module), set()).update(top(t) for t in targets if top(t) != top(module))
    return out


def oversized(root: Path = PACKAGE) -> list[str]:
    found = []
    for name, path in source_modules(root).items():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
        in_attacks = name.split(".")[1:2] == ["attacks"]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                limit = MAX_ATTACK_LINES if in_attacks and not node.name.startswith("_") else MAX_FUNCTION_LINES
                if length > limit:
                    found.append(f"{name}.{node.name}: {length} lines (at most {limit})")
    return found


def test_no_layer_is_crossed() -> None:
    assert crossed_layers(import_graph()) == []


def test_no_module_imports_itself_back() -> None:
    assert cycles(import_graph()) == []


def test_no_package_imports_itself_back() -> None:
    assert cycles(package_graph(import_graph())) == []


def test_no_module_or_function_outgrows_the_limits() -> None:
    assert oversized() == []


def test_the_library_stands_alone() -> None:
    """The library's modules reach nothing of the engine, study or CLI even through others."""
    graph = import_graph()
    for start in (m for m in graph if layer(m) == "library"):
        reached, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - reached:
                reached.add(nxt)
                todo.append(nxt)
        assert {layer(m) for m in reached} <= {"library", "util"}, start


def _write(root: Path, files: dict[str, str]) -> Path:
    package = root / "segattack"
    for rel, text in files.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(text)
    return package


def test_the_checks_name_a_crossed_layer_a_cycle_and_an_oversized_function(tmp_path: Path) -> None:
    """The walker on a made-up package: each rule fails with the modules named."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    package = _write(
        tmp_path,
        {
            "__init__.py": "",
            "models/__init__.py": "",
            "models/a.py": "from segattack.models import b\n",
            "models/b.py": "def f():\n    from .a import g\n",
            "metrics.py": "from segattack.study.runner import run\n",
            "study/__init__.py": "",
            "study/runner.py": f"def run():\n{body}\n",
            "attacks/pgd.py": f"def pgd():\n{body}\n",
        },
    )
    graph = import_graph(package)
    assert crossed_layers(graph) == ["segattack.metrics (library) imports segattack.study.runner (study)"]
    assert cycles(graph) == [["segattack.models.a", "segattack.models.b", "segattack.models.a"]]
    assert cycles(package_graph(graph)) == []
    assert oversized(package) == [f"segattack.study.runner.run: {MAX_FUNCTION_LINES + 1} lines (at most 100)"]


@pytest.mark.parametrize("module", ["segattack.nowhere", "segattack.tools.x"])
def test_a_module_outside_every_layer_is_refused(module: str) -> None:
    with pytest.raises(AssertionError, match="in no layer"):
        layer(module)
