"""The shape of golden_fast's imports: no cycle between modules, and no arrow running upward.

Read statically (`ast`, nothing is imported), so a cycle that happens to work today because of
the order in which modules are first imported is still found. The graph:

- Nodes: every module under golden_fast/ (a package is its __init__.py).
- Edges: every `import` / `from ... import` statement anywhere in a module: at top level, inside
  functions, classes and try blocks, since a function-level import is a dependency as much as a
  top-level one (it only runs later). Statements under `if TYPE_CHECKING:` are left out (they never
  run). Relative imports are resolved against the importing module's package. `from pkg import x`
  is an edge to the module pkg.x when there is one, else to pkg (x is a name defined by pkg).
- Parent packages: importing a.b.c first runs a/__init__.py and a/b/__init__.py, so it is also an
  edge to those packages, except to the packages that contain the importer: when a module's code
  runs, its own packages are already in sys.modules (being imported, or done), and importing a
  sibling does not run them again. Hence a package __init__ that imports its submodules (to
  re-export their names) is not in a cycle with them as long as they import only their siblings;
  a submodule importing the package itself (`from golden_fast.edit import Editor` inside
  golden_fast/edit/x.py) is an edge to the __init__ and closes a real cycle.
- Not edges: names resolved at run time by `importlib.import_module(...)`: golden_fast/__init__.py's
  and golden_fast/edit/__init__.py's lazy export tables, the CLI's subcommand list, the ops
  registry's kernels. They run on first attribute access or call, never during an import, and the
  export tables name the package's own submodules, which the previous rule counts as harmless anyway.

Rules:

1. No cycle: each strongly connected component of the graph is a single module.
2. Layers: a module of the lower layers (`LOWER`) reaches no module of golden_fast.experiment or
   golden_fast.cli, directly or through other modules. The experiment and the CLI are built on the
   library; the library never needs them.
3. golden_fast.fileio, which every layer uses, imports nothing from golden_fast.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import golden_fast

ROOT = Path(golden_fast.__file__).resolve().parent
PKG = "golden_fast"
LOWER = tuple(
    f"{PKG}.{name}"
    for name in ("locate", "edit", "stats", "evaluate", "data", "models", "ops", "report", "fileio", "hooks",
                 "tokens", "native", "gradients")
)
UPPER = (f"{PKG}.experiment", f"{PKG}.cli")


def _modules() -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is a package)} of every module under golden_fast/."""
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts.pop()
        mods[".".join(parts)] = (path, is_pkg)
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under `node`, except those under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.append(child)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                found += [stmt] if isinstance(stmt, (ast.Import, ast.ImportFrom)) else _import_nodes(stmt)
        else:
            found += _import_nodes(child)
    return found


def _targets(name: str, is_pkg: bool, node: ast.Import | ast.ImportFrom, mods) -> set[str]:
    """The golden_fast modules one import statement of module `name` names."""
    if isinstance(node, ast.Import):
        wanted = [alias.name for alias in node.names]
    else:
        if node.level:
            package = name.split(".") if is_pkg else name.split(".")[:-1]
            base = package[: len(package) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        wanted = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
    out = set()
    for target in wanted:
        if target != PKG and not target.startswith(PKG + "."):
            continue
        while target not in mods:  # `import golden_fast.x.y` where y is an attribute, not a module
            target = target.rpartition(".")[0]
        out.add(target)
    return out


def _contains(package: str, module: str) -> bool:
    return module == package or module.startswith(package + ".")


def import_graph() -> dict[str, set[str]]:
    """{module: the golden_fast modules it imports}, by the rules of the module docstring."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, is_pkg) in mods.items():
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for target in _targets(name, is_pkg, node, mods):
                parents = []
                p = target.rpartition(".")[0]
                while p:
                    parents.append(p)
                    p = p.rpartition(".")[0]
                for t in [target, *parents]:
                    if t != name and not (t != target and _contains(t, name)):
                        graph[name].add(t)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
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
                        found.append(sorted(comp))
    return found


def _path(graph: dict[str, set[str]], start: str, goal) -> list[str] | None:
    """A shortest chain of imports from `start` to a module satisfying `goal`, or None."""
    prev: dict[str, str | None] = {start: None}
    todo = deque([start])
    while todo:
        v = todo.popleft()
        if v != start and goal(v):
            chain = [v]
            while prev[chain[-1]] is not None:
                chain.append(prev[chain[-1]])
            return chain[::-1]
        for w in sorted(graph[v]):
            if w not in prev:
                prev[w] = v
                todo.append(w)
    return None


def test_the_graph_is_read():
    """Guards against a test that passes because it sees nothing."""
    graph = import_graph()
    assert len(graph) > 50
    assert f"{PKG}.fileio" in graph[f"{PKG}.locate.brute_force"]  # top level, absolute
    assert f"{PKG}.edit.common" in graph[f"{PKG}.edit.values"]  # relative
    assert f"{PKG}.edit.base" in graph[f"{PKG}.edit.editor"]  # inside a function
    assert f"{PKG}.models" in graph[f"{PKG}.edit.context"]  # the parent package of models.zoo
    assert f"{PKG}.edit" not in graph[f"{PKG}.edit.methods.rome"]  # ...but not the importer's own package


def test_cycle_finder():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert sorted(strongly_connected(g)) == [["a", "b", "c"], ["d", "e"]]


def test_no_import_cycle():
    graph = import_graph()
    cycles = strongly_connected(graph)
    detail = [
        " <-> ".join(comp) + "\n    " + "\n    ".join(f"{m} -> {sorted(graph[m] & set(comp))}" for m in comp)
        for comp in cycles
    ]
    assert not cycles, "import cycles (each module's imports within its cycle shown):\n" + "\n".join(detail)


def test_lower_layers_never_reach_experiment_or_cli():
    graph = import_graph()
    upward = []
    for module in sorted(graph):
        if any(_contains(layer, module) for layer in LOWER):
            chain = _path(graph, module, lambda m: any(_contains(u, m) for u in UPPER))
            if chain:
                upward.append(" -> ".join(chain))
    assert not upward, "lower layers importing experiment/ or cli/:\n" + "\n".join(upward)


def test_fileio_stands_alone():
    assert import_graph()[f"{PKG}.fileio"] == set()


#: rooms that are below another one in the README's architecture table (room -> rooms it must not
#: reach): editing and statistics never need the locators, evaluation never needs the editors
BELOW = {
    f"{PKG}.edit": (f"{PKG}.locate",),
    f"{PKG}.stats": (f"{PKG}.locate", f"{PKG}.edit", f"{PKG}.evaluate"),
    f"{PKG}.evaluate": (f"{PKG}.locate", f"{PKG}.edit"),
    f"{PKG}.data": (f"{PKG}.locate", f"{PKG}.edit", f"{PKG}.evaluate", f"{PKG}.stats"),
    f"{PKG}.gradients": (f"{PKG}.locate", f"{PKG}.edit"),
}


def test_rooms_never_reach_the_rooms_above_them():
    graph = import_graph()
    upward = []
    for room, above in BELOW.items():
        for module in sorted(graph):
            if _contains(room, module):
                chain = _path(graph, module, lambda m, above=above: any(_contains(a, m) for a in above))
                if chain:
                    upward.append(" -> ".join(chain))
    assert not upward, "imports running upward in the architecture:\n" + "\n".join(upward)
