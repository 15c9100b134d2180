"""attnbench: benchmark attention kernels and report claims that hold up statistically."""

from typing import TYPE_CHECKING

__version__ = "0.1.0"
SCHEMA_VERSION = 3

__all__ = ["SCHEMA_VERSION", "Unsupported", "Workload", "__version__", "compare", "kernel"]

# Where each public name lives, imported on first use: a kernel raises Unsupported to decline a
# shape; `kernel` declares its form, layout and grid; a factory kernel is handed a Workload
# (docs/kernels.md); `compare` (attnbench.api) needs torch and pandas. `import attnbench` stays
# cheap: the Snakefile imports the package at parse time, and every job's process starts with it
# (docs/scale.md, "Measurements behind the code").
_LAZY = {"Unsupported": "candidates", "kernel": "candidates", "Workload": "workloads", "compare": "api"}

if TYPE_CHECKING:  # what type checkers and IDEs see
    from attnbench.api import compare
    from attnbench.candidates import Unsupported, kernel
    from attnbench.workloads import Workload


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"attnbench.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'attnbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
