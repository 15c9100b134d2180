"""The run's measurement settings and their defaults, standard library only: a job's own process reads
them before it hands the job to the warm worker (the watchdog's limits, the lines a compare job prints),
and importing numpy there for them was a visible part of every job's start on a GPU machine
(docs/exploits.md, Cost). attnbench.timing and attnbench.stats use them; each default is here once."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# Differences this small are below what interleaved timing can attribute to a kernel: two copies of
# one kernel measured side by side differ systematically (placement of their buffers, graph
# instances: docs/validation, docs/scale.md). The test asks whether a difference exceeds it.
RESOLUTION = 0.005
# The significance level wherever a run does not set stats.alpha: compare, autotune and the ratchet.
ALPHA = 0.05
# The smallest difference a verdict of faster or slower reports (stats.threshold).
THRESHOLD = 0.02

# A median faster than the roofline bound by more than this (plus the binding ceiling's own 95% CI)
# is impossible (attnbench.audit; attnbench.documents for files that did not record it). On a GPU
# the best honest attention kernels reach 84-87% of the measured bound (docs/methodology.md, 7). A CPU's ceilings are measured in seconds on cores that others
# share: a disturbed calibration reads low, and the same shape moves far between two runs on a busy
# machine (docs/scale.md), so there only a result twice as fast as its bound is called impossible.
BOUND_MARGIN = {"cuda": 0.10, "cpu": 1.0}


@dataclass(frozen=True)
class TimingSettings:
    """The `timing:` section of the config (workflow/schemas/config.schema.yaml documents each key)."""

    mode: str = "auto"
    warmup: int = 5
    warmup_max_s: float = 5.0
    min_rounds: int = 50
    max_rounds: int = 5000
    target_rel_ci: float = 0.01
    max_time_s: float = 30.0
    discard_throttled: bool = True
    call_timeout_s: float = 300.0

    @classmethod
    def from_config(cls, section: dict[str, Any] | None) -> TimingSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (section or {}).items() if k in known})
