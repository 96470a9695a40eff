"""The import rules the layout depends on, read from the source (no imports executed):
the layer order written in docs/architecture.md, no cycles in src/probewatch, and tests that
import factories from tests/helpers.py rather than from conftest or other test modules."""

import ast
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
TESTS = ROOT / "tests"
DOC = ROOT / "docs" / "architecture.md"

# Imports that break the order today, each waiting on its owner's change (issue 11).
# An entry may go as soon as its import does; nothing may be added to make a test pass.
KNOWN: dict[tuple[str, str], str] = {}


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def source_modules() -> dict[str, Path]:
    return {_module_name(p, SRC): p for p in sorted((SRC / "probewatch").rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return skipped


def imported_names(path: Path, package: str) -> set[str]:
    """Every module name an import statement in `path` names, at any depth (lazy imports
    inside functions included), except under `if TYPE_CHECKING:`; relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """module -> the probewatch modules it imports (a package's __init__ included, since
    importing `a.b.c` runs `a` and `a.b` first)."""
    modules = source_modules()
    graph: dict[str, frozenset[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for imported in imported_names(path, package):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            parts = imported.split(".") if imported else []
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        graph[name] = frozenset(found - {name})
    return graph


def reachable(start: str) -> set[str]:
    graph, seen, todo = import_graph(), set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def layers() -> list[tuple[str, list[str]]]:
    """(layer, module patterns) from the ```layers block of docs/architecture.md, top first."""
    block = re.search(r"```layers\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block, f"{DOC} has no ```layers block"
    rows = [line.split(":", 1) for line in block.group(1).splitlines() if line.strip()]
    return [(name.strip(), patterns.split()) for name, patterns in rows]


def layer_of(module: str) -> tuple[int, str]:
    """(rank, layer name): the layer whose pattern matches `module` longest; 0 is the bottom."""
    table = layers()
    best: tuple[int, int, str] | None = None
    for position, (name, patterns) in enumerate(table):
        for pattern in patterns:
            prefix = pattern.removesuffix("*")
            exact = module == pattern or module.startswith(pattern + ".")
            if exact or (pattern.endswith("*") and module.startswith(prefix)):
                length = len(prefix)
                if best is None or length > best[0]:
                    best = (length, len(table) - 1 - position, name)
    assert best is not None, f"{module} is in no layer of {DOC}: add it to the table"
    return best[1], best[2]


def _cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(iter(children), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
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


def _is_package_init(module: str, dep: str) -> bool:
    """A package's __init__ re-exporting its own submodules is not a layering edge."""
    return module.startswith(dep + ".") or dep.startswith(module + ".")


def test_every_import_goes_down_the_layers() -> None:
    violations = []
    for module, deps in sorted(import_graph().items()):
        rank, name = layer_of(module)
        for dep in sorted(deps):
            dep_rank, dep_name = layer_of(dep)
            upward = dep_rank > rank and not _is_package_init(module, dep)
            if upward and (module, dep) not in KNOWN:
                violations.append(f"{module} ({name}) imports {dep} ({dep_name})")
    assert not violations, "imports up the layers of docs/architecture.md:\n" + "\n".join(
        violations
    )


def test_no_import_cycles() -> None:
    graph = {
        m: frozenset(d for d in deps if not m.startswith(d + "."))
        for m, deps in import_graph().items()
    }
    cycles = _cycles(graph)
    assert not cycles, "import cycles (lazy imports count):\n" + "\n".join(map(str, cycles))


def test_the_monitor_does_not_load_training_or_analysis() -> None:
    loaded = {layer_of(m)[1] for m in reachable("probewatch.monitor")}
    assert not loaded & {"training", "analysis", "cli"}, sorted(loaded)


def test_no_test_imports_conftest_or_another_test_module() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for name in imported_names(path, ""):
            last = name.rsplit(".", 1)[-1]
            if name.startswith("tests.") and (last == "conftest" or last.startswith("test_")):
                offenders.append(f"{path.relative_to(TESTS)} imports {name}")
    assert not offenders, "move shared code to tests/helpers.py:\n" + "\n".join(offenders)
