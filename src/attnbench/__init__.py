"""attnbench: benchmark attention kernels and report claims that hold up statistically."""

__version__ = "0.1.0"
SCHEMA_VERSION = 2

from attnbench.candidates import Unsupported  # noqa: E402  (a kernel raises it to decline a shape)

__all__ = ["SCHEMA_VERSION", "Unsupported", "__version__"]
