"""attnbench: benchmark attention kernels and report claims that hold up statistically."""

__version__ = "0.1.0"
SCHEMA_VERSION = 2

from attnbench.candidates import Unsupported  # noqa: E402  (a kernel raises it to decline a shape)

__all__ = ["SCHEMA_VERSION", "Unsupported", "__version__", "compare"]


def __getattr__(name: str):
    """`attnbench.compare` (attnbench.api) is imported on first use: `import attnbench` stays cheap
    (the Snakefile imports the package at parse time; the API needs torch and pandas)."""
    if name == "compare":
        from attnbench.api import compare

        return compare
    raise AttributeError(f"module 'attnbench' has no attribute {name!r}")
