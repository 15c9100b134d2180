"""One benchmark job's settings, read once: the JSON spec that attnbench.jobs builds from the run's
config (the rule's params, handed to the job on its command line and on to a worker or a child) as
the typed values the measurement uses. Why a type: the job's leaves read the same fields (the timing
settings, the direction, the dtype) in several places, and each once re-read and re-defaulted them."""

from __future__ import annotations

import dataclasses
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
    sanitize_crashes: bool = False
    tolerances: dict[str, float] = field(default_factory=dict)  # the config's declared, per candidate

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
            sanitize_crashes=bool(spec.get("sanitize_crashes")),
            tolerances=dict(spec.get("tolerances") or {}),
        )

    def to_json(self) -> dict[str, Any]:
        """The spec complete (workflow/schemas/benchspec.schema.yaml): every timing setting written out,
        so the job's leaves and its watchdog read values, not defaults. `threads`, `sanitize_crashes` and
        `tolerances` only when set: the rule's params, and so what is measured again, change only when
        they do."""
        spec: dict[str, Any] = {
            "shape": self.shape.as_dict(),
            "device": self.device,
            "dtype": self.dtype,
            "mode": self.direction,
            "candidates": list(self.candidates),
            "timing": dataclasses.asdict(self.timing),
            "lock": self.lock,
            "tolerance": self.tolerance,
            "kernel_hashes": dict(self.kernel_hashes),
            "ceilings": self.ceilings,
        }
        if self.threads:
            spec["threads"] = self.threads
        if self.sanitize_crashes:
            spec["sanitize_crashes"] = True
        if self.tolerances:
            spec["tolerances"] = dict(self.tolerances)
        return spec

    @property
    def backward(self) -> bool:
        return self.direction == "forward_backward"
