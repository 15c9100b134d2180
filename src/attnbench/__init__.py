"""attnbench: benchmark attention kernels and report claims that hold up statistically."""

__version__ = "0.1.0"
SCHEMA_VERSION = 2
