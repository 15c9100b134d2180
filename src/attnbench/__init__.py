"""attnbench: benchmark attention kernels and report claims that hold up statistically."""

__version__ = "0.1.0"
SCHEMA_VERSION = 2

# A kernel raises Unsupported to decline a shape; `kernel` declares its form, layout and grid; a
# factory kernel is handed a Workload (docs/kernels.md).
from attnbench.candidates import Unsupported, kernel  # noqa: E402
from attnbench.workloads import Workload  # noqa: E402

__all__ = ["SCHEMA_VERSION", "Unsupported", "Workload", "__version__", "compare", "kernel"]


def __getattr__(name: str):
    """`attnbench.compare` (attnbench.api) is imported on first use: `import attnbench` stays cheap
    (the Snakefile imports the package at parse time; the API needs torch and pandas)."""
    if name == "compare":
        from attnbench.api import compare

        return compare
    raise AttributeError(f"module 'attnbench' has no attribute {name!r}")
