"""The GPU's clock while it is being measured: SM clock and clock-event (throttle) reasons via NVML.

A sample taken while the GPU slows itself down for heat or a hardware event does not describe the
kernel, so such rounds are dropped (whole rounds, so the candidates stay paired). The power cap is
only counted: an H100 under sustained dense load runs at its power limit as its normal state, and
dropping those rounds would drop the operating point users actually get.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

# NVML clock-event reason bits (nvmlClocksEventReason*, formerly nvmlClocksThrottleReason*).
REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
DISCARDED = 0x8 | 0x20 | 0x40 | 0x80  # thermal and hardware slowdowns: the round is not representative
COUNTED = 0x4 | DISCARDED  # everything that lowers the clock under load; idle and settings are not events


def reason_names(bits: int) -> list[str]:
    return [name for bit, name in REASONS.items() if bits & bit]


@dataclass(frozen=True)
class Reading:
    sm_mhz: int | None
    reasons: int


@dataclass
class ClockLog:
    """What the clock did during the measured rounds; `summary()` is what each result records."""

    source: str | None
    reason: str | None = None
    sm_mhz: list[int | None] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    throttled_rounds: int = 0
    discarded_rounds: int = 0

    def record(self, reading: Reading, kept: bool) -> None:
        self.sm_mhz.append(reading.sm_mhz)
        self.events.update(reason_names(reading.reasons & COUNTED))
        self.throttled_rounds += bool(reading.reasons & COUNTED)
        self.discarded_rounds += not kept

    def summary(self) -> dict[str, Any]:
        clocks = [c for c in self.sm_mhz if c is not None]
        return {
            "source": self.source,
            "reason": self.reason,
            "mean_sm_mhz": sum(clocks) / len(clocks) if clocks else None,
            "min_sm_mhz": min(clocks, default=None),
            "max_sm_mhz": max(clocks, default=None),
            "throttled_rounds": self.throttled_rounds,
            "discarded_rounds": self.discarded_rounds,
            "events": dict(self.events),
        }


class ClockWatch:
    """Reads one GPU's SM clock and reasons; without NVML (or on the CPU) every reading is empty."""

    def __init__(self, nv: Any = None, board: Any = None, reason: str | None = None) -> None:
        self.nv, self.board, self.reason = nv, board, reason
        query = None
        if nv is not None:
            query = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or nv.nvmlDeviceGetCurrentClocksThrottleReasons
        self._reasons = query

    @property
    def source(self) -> str | None:
        return "nvml" if self.nv is not None else None

    def read(self) -> Reading:
        if self.nv is None:
            return Reading(None, 0)
        try:
            return Reading(
                int(self.nv.nvmlDeviceGetClockInfo(self.board, self.nv.NVML_CLOCK_SM)),
                int(self._reasons(self.board)),
            )
        except self.nv.NVMLError:
            return Reading(None, 0)

    def log(self) -> ClockLog:
        return ClockLog(self.source, self.reason)


@contextmanager
def watch(device: str) -> Iterator[ClockWatch]:
    """A ClockWatch on the GPU this process uses, NVML open for the whole measurement."""
    if device != "cuda":
        yield ClockWatch(reason="no GPU clock on the cpu")
        return
    import torch

    from attnbench.device import board_of

    with ExitStack() as stack:
        try:
            found = ClockWatch(*stack.enter_context(board_of(torch.cuda.current_device())))
        except Exception as exc:
            found = ClockWatch(reason=f"NVML unusable: {type(exc).__name__}: {exc}")
        yield found
