"""The package's layout (issue 10, item 8): no import cycles between neuropc's modules, and no
module over 600 lines (a module that long holds more than one concept: split it by concept).

The import graph is read from the source with ``ast`` (nothing is imported): the imports a
module runs when it is imported, that is, at module level (also inside a top-level ``try``,
``if`` or class body), but not those inside functions nor under ``if TYPE_CHECKING:``.
``from P import x`` imports the submodule ``P.x`` when ``x`` is one, else the module ``P``.
Importing ``a.b.c`` also initialises the packages ``a`` and ``a.b`` first, so they count as
imported too, except the importer's own parent packages (always initialised before it).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "neuropc"
MAX_LINES = 600

# The one file allowed over MAX_LINES, for a reason of the tool, not of taste: numba's on-disk
# cache (cache=True) is keyed on the file that defines a jitted function and does not notice
# edits to jitted helpers in other files, so splitting the kernels would serve stale compiled
# code after an edit. An entry that is not over the limit fails the test.
ALLOWED_LONG = {"neuropc/backends/_numba_kernels.py"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``__init__`` is the
    package's name)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(body: list[ast.stmt]):
    """The import statements run when the module is imported."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_level_imports(block)
            for handler in node.handlers:
                yield from _module_level_imports(handler.body)
        elif isinstance(node, ast.ClassDef | ast.With):
            yield from _module_level_imports(node.body)
        # functions (def, async def, lambda bodies) run later: not an import-time dependency


def _base(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name of ``from <...> import`` (``node.module`` with its leading dots)."""
    if not node.level:
        return node.module or ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _with_parents(target: str, importer: str, modules: dict[str, Path]) -> set[str]:
    """``target`` and the packages it initialises that are not parents of ``importer``."""
    parts = target.split(".")
    mine = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}
    out = set()
    for i in range(1, len(parts) + 1):
        m = ".".join(parts[:i])
        if m in modules and m not in mine and m != importer:
            out.add(m)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the neuropc modules it imports at import time."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        deps: set[str] = set()
        for node in _module_level_imports(tree.body):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _base(name, path, node)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            for t in targets:
                if t.split(".")[0] == "neuropc":
                    deps |= _with_parents(t, name, modules)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)) is not None:
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_reads_relative_and_absolute_imports() -> None:
    """A few edges known from the source, so a reader that found nothing would not pass."""
    g = import_graph()
    assert "neuropc.record.recording" in g["neuropc.simulator"]  # from .record import recording
    assert "neuropc.dynamics.plan" in g["neuropc.record.probes"]  # from ..dynamics.plan import
    assert "neuropc.record.schema" in g["neuropc.record.reader"]  # from .schema import ...
    assert "neuropc.errors" in g["neuropc.record.reader"]  # from ..errors import ...
    assert "neuropc.record" in g["neuropc.analysis.plotting"]  # initialises the package
    # inside a function, or under ``if TYPE_CHECKING:``: not an import-time dependency
    assert "neuropc.analysis.alignment" not in g["neuropc.record.per_batch"]
    assert "neuropc.record.recording" not in g["neuropc.record.per_batch"]


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle between neuropc modules: " + " -> ".join(cycle or ())


def test_no_module_over_600_lines() -> None:
    lengths = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for p in _modules().values()
    }
    long = {p: n for p, n in lengths.items() if n > MAX_LINES and p not in ALLOWED_LONG}
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): {long}"
    stale = {p: lengths.get(p) for p in ALLOWED_LONG if lengths.get(p, 0) <= MAX_LINES}
    assert not stale, f"ALLOWED_LONG lists files that are not over {MAX_LINES} lines: {stale}"
