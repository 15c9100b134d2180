"""One benchmark job's settings, read once: the JSON spec that attnbench.jobs builds from the run's
config (the rule's params, handed to the job on its command line and on to a worker or a child) as
the typed values the measurement uses. Why a type: the job's leaves read the same fields (the timing
settings, the direction, the dtype) in several places, and each once re-read and re-defaulted them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attnbench.settings import TimingSettings
from attnbench.workloads import Shape


@dataclass(frozen=True)
class BenchSpec:
    shape: Shape
    device: str  # cuda or cpu, resolved by the config
    dtype: str
    direction: str  # the config's `mode`: forward, or forward_backward
    candidates: tuple[str, ...]
    timing: TimingSettings
    lock: dict[str, Any] | None = None
    tolerance: float | None = None  # the config's for the run dtype; workloads.tolerance_for completes it
    kernel_hashes: dict[str, str] = field(default_factory=dict)
    ceilings: str | None = None  # the calibrate job's output, relative to the working directory
    threads: int | None = None

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> BenchSpec:
        """The spec as jobs._benchmark_spec writes it (optional keys absent or null)."""
        return cls(
            shape=Shape.from_config(spec["shape"]),
            device=spec["device"],
            dtype=spec["dtype"],
            direction=spec["mode"],
            candidates=tuple(spec["candidates"]),
            timing=TimingSettings.from_config(spec.get("timing")),
            lock=spec.get("lock"),
            tolerance=spec.get("tolerance"),
            kernel_hashes=dict(spec.get("kernel_hashes") or {}),
            ceilings=spec.get("ceilings"),
            threads=spec.get("threads"),
        )

    @property
    def backward(self) -> bool:
        return self.direction == "forward_backward"
