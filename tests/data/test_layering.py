"""The data layer imports downward only: no module imports another in a circle, weaver/ never
imports staged/, and the leaves (reader, batch) import no other data module.

Imports are read from the source with ``ast``, including those inside functions and
``if TYPE_CHECKING:`` blocks, so a cycle cannot hide behind a late import.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import trainyard.data

PACKAGE = "trainyard.data"
ROOT = Path(trainyard.data.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> Iterator[str]:
    """The modules of ``known`` that the file at ``path`` imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` names the module; `from module import name` the module.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        yield from (target for target in targets if target in known and target != name)


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imported(path, known)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_graph_is_read_from_the_source() -> None:
    graph = import_graph()
    assert "trainyard.data.weaver.pipeline" in graph
    assert "trainyard.data.staged.loader" in graph
    assert "trainyard.data.weaver.types" in graph["trainyard.data.weaver.pipeline"]
    assert "trainyard.data.weaver.pipeline" in graph["trainyard.data.staged.sources"]


def test_cycle_finder_finds_late_and_indirect_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"x": {"y"}, "y": set()}) == []


def test_no_data_module_imports_another_in_a_circle() -> None:
    assert cycles(import_graph()) == []


def test_weaver_never_imports_staged() -> None:
    graph = import_graph()
    wrong = {
        name: sorted(target for target in targets if target.startswith(f"{PACKAGE}.staged"))
        for name, targets in graph.items()
        if name.startswith(f"{PACKAGE}.weaver")
    }
    assert {name: targets for name, targets in wrong.items() if targets} == {}


def test_leaves_import_no_other_data_module() -> None:
    graph = import_graph()
    for leaf in ("trainyard.data.reader", "trainyard.data.batch", "trainyard.data.weaver.types"):
        assert graph[leaf] == set(), leaf
