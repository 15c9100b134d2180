"""The package's structure: its modules import each other without a loop, counting every import
(a function-local one and one under TYPE_CHECKING too), so no module stands both above and below
another. `from attnbench import NAME` counts as importing the module NAME where there is one; the
package's __init__ only hands names on (lazily) and is not a module of the graph."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "src" / "attnbench"


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that the file at `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "attnbench" and len(parts) > 1 and parts[1] in modules:
                found.add(parts[1])
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    return {name: imported_modules(PACKAGE / f"{name}.py", modules) - {name} for name in modules}


def test_the_graph_sees_a_function_local_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from attnbench.bench import run_shape\n    from attnbench import stats, SCHEMA_VERSION\n"
    )
    assert imported_modules(module, {"bench", "stats", "jobs"}) == {"bench", "stats"}


def test_the_package_imports_without_a_cycle() -> None:
    graph = import_graph()
    assert {"bench", "jobs", "report", "workloads"} <= graph.keys()
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert order.index("results") < order.index("bench") < order.index("jobs")
