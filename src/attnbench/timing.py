"""Timing: every candidate of a shape sampled in interleaved rounds on the device's own clock.

On CUDA a sample is the time between two events around one call, recorded without a host
synchronisation per call (the host only waits once, at the end), with the L2 cache flushed
between samples by writing a buffer twice its size. On the CPU a sample is perf_counter_ns
around one call. Rounds alternate the candidate order (A B C, C B A, ...) so clock and thermal
drift fall on every candidate alike: sample i of every candidate comes from round i.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Call = Callable[[], Any]


class L2Flusher:
    """Evicts the L2 between samples, so each call reads its inputs from device memory (cold)."""

    def __init__(self, device: str, enabled: bool) -> None:
        self.buffer = None
        if device == "cuda" and enabled:
            import torch

            l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
            self.buffer = torch.empty(2 * l2, dtype=torch.uint8, device="cuda")

    @property
    def nbytes(self) -> int | None:
        return None if self.buffer is None else int(self.buffer.numel())

    def __call__(self) -> None:
        if self.buffer is not None:
            self.buffer.zero_()


def round_order(names: list[str], index: int) -> list[str]:
    return names if index % 2 == 0 else names[::-1]


def sample_rounds(
    calls: dict[str, Call],
    *,
    device: str,
    rounds: int,
    flush: L2Flusher,
    max_time_s: float | None = None,
    on_failure: Callable[[str, BaseException], None],
) -> dict[str, list[float]]:
    """Milliseconds per call for each candidate. A call that raises drops its candidate only.

    Stops early, after whole rounds, when max_time_s of wall time has passed.
    """
    active = list(calls)
    pending: dict[str, list[Any]] = {name: [] for name in calls}
    if device == "cuda":
        import torch

        def timed(call: Call) -> Any:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            flush()
            start.record()
            call()
            end.record()
            return start, end

        def to_ms(stamp: Any) -> float:
            return stamp[0].elapsed_time(stamp[1])

    else:

        def timed(call: Call) -> Any:
            begin = time.perf_counter_ns()
            call()
            return time.perf_counter_ns() - begin

        def to_ms(stamp: Any) -> float:
            return stamp / 1e6

    began = time.perf_counter()
    for index in range(rounds):
        for name in round_order(active, index):
            try:
                pending[name].append(timed(calls[name]))
            except Exception as exc:  # noqa: BLE001 - one candidate's failure must not end the shape
                active.remove(name)
                pending.pop(name)
                on_failure(name, exc)
        if not active or (max_time_s is not None and time.perf_counter() - began > max_time_s):
            break
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    # A dropped candidate is gone whole, so the others stay paired by round.
    return {name: [to_ms(s) for s in stamps] for name, stamps in pending.items()}
