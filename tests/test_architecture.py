"""The package's structure: its modules import each other without a loop, counting every import
(a function-local one and one under TYPE_CHECKING too), so no module stands both above and below
another. Sub-packages count too: the module attnbench.report.data is the node `report.data`, the
sub-package's __init__ the node `report`. `from attnbench.report import NAME` counts as importing
`report` and the module `report.NAME` where there is one (so `from attnbench import NAME`, the module
NAME); importing a sub-package's module does not count its __init__, which Python runs first but which
only hands names on. The package's own __init__ hands names on (lazily) and is not a node."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "src" / "attnbench"


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules (dotted below attnbench) that the file at `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            package, _, module = name.partition(".")
            if package == "attnbench" and module in modules:
                found.add(module)
    return found


def package_modules() -> dict[str, Path]:
    """Every module of the package, sub-packages' included, by its dotted name below attnbench."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:  # attnbench/__init__.py: not a node
            modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(path, set(modules)) - {name} for name, path in modules.items()}


def test_the_graph_sees_a_function_local_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from attnbench.bench import run_shape\n    from attnbench import stats, SCHEMA_VERSION\n"
    )
    assert imported_modules(module, {"bench", "stats", "jobs"}) == {"bench", "stats"}


def test_the_graph_sees_a_sub_package(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from attnbench.report import build_report, data\nimport attnbench.report.sections.overview\n"
    )
    modules = {"report", "report.data", "report.sections", "report.sections.overview", "data"}
    assert imported_modules(module, modules) == {"report", "report.data", "report.sections.overview"}


def test_the_package_imports_without_a_cycle() -> None:
    graph = import_graph()
    assert {"bench", "jobs", "report", "report.data", "report.sections.overview", "workloads"} <= graph.keys()
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert order.index("results") < order.index("bench") < order.index("jobs")


def job_name_branches(path: Path, commands: set[str]) -> list[str]:
    """Comparisons of a `command` (a name or attribute so called) with a job's name: behaviour that
    belongs to the registry (attnbench.jobs.Job), decided elsewhere by the job's name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        named = any(getattr(side, "id", getattr(side, "attr", None)) == "command" for side in sides)
        constants = {
            item.value
            for side in sides
            for item in (side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side])
            if isinstance(item, ast.Constant)
        }
        if named and constants & commands:
            found.append(f"{path.name}:{node.lineno}")
    return found


def test_a_job_name_branch_is_seen(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('if job.command in ("benchmark", "calibrate"):\n    pass\nif args.command == "run":\n    pass\n')
    assert job_name_branches(module, {"benchmark", "compare"}) == ["m.py:1"]


def test_only_the_registry_branches_on_a_job_name() -> None:
    from attnbench import jobs

    outside = [path for name, path in package_modules().items() if name != "jobs"]
    assert [hit for path in outside for hit in job_name_branches(path, set(jobs.JOBS))] == []


def test_a_jobs_own_process_starts_and_prints_without_numpy() -> None:
    """A job's process only hands the job to the warm worker and writes what comes back: the watchdog's
    limits before, a compare's lines after. Importing numpy (or scipy) there for a default or two was
    part of every job's start on a GPU machine (docs/exploits.md, Cost)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from attnbench import cli, formatting, isolation, terminal\n"
        "assert isolation.limits({'device': 'cuda', 'candidates': ['flash'], 'timing': {}}) is not None\n"
        "formatting.speedup_interval(1.1, 1.05, 1.15)\n"
        "print(sorted(m for m in ('numpy', 'scipy', 'torch', 'pandas') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src")}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
