"""Timing: every candidate of a shape sampled in interleaved rounds until its median is known well enough.

A round takes one sample of every candidate, in alternating order (A B C, C B A, ...), so clock and
thermal drift fall on every candidate alike and sample i of every candidate comes from round i.

On CUDA a sample is the time between two events around the candidate's unit of work:

* ``cold``: one call, after the L2 is flushed by reading a buffer twice its size (read from the
  device), so every call reads its inputs from device memory as it would inside a model.
* ``warm``: one call, no flush.
* ``graph``: one replay of a CUDA graph holding k unrolled calls; the sample is the replay over k.
  Launch gaps and event overhead (about 1-2 us) vanish, so kernels of a few microseconds are
  timed as the profiler sees them; the L2 stays warm between the k calls.
* ``auto``: ``graph`` when the shape's fastest candidate takes under GRAPH_BELOW_MS (0.15 ms)
  per call, else ``cold``: an event pair's own cost is a visible part of a kernel that short, and
  one timed per call read above the profiler (docs/validation, docs/scale.md).

Each round starts with a spin kernel that holds the stream while the host enqueues the whole
round (nvbench's "blocking kernel"), so host-side Python overhead never shows up as GPU idle
time between the events. On the CPU a sample is perf_counter_ns around one call.

Warm-up ends when the timings (and, where NVML can read it, the SM clock) have settled, not after
a fixed count. Sampling then stops when every candidate's median has a 95% CI no wider than
±target_rel_ci, or at max_time_s / max_rounds; rounds during which the GPU slowed itself down for
heat or a hardware event are dropped whole (see attnbench.clocks).
"""

from __future__ import annotations

import math
import random
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from attnbench import clocks, guard, stats
from attnbench.settings import TimingSettings

Call = Callable[[], Any]

GRAPH_BELOW_MS = 0.15
GRAPH_REPLAY_MS = 0.5  # calls per graph: about this much work per replay, so event overhead is < 0.5%
MAX_GRAPH_CALLS = 1000
WARMUP_BATCH_ROUNDS = 3
SETTLED = 0.02  # a warm-up batch's medians within 2% of the previous batch's
CLOCK_SETTLED = 0.01
HOLD_MARGIN = 1.5
HOLD_MAX_MS = 50.0
CHECK_RESAMPLES = 1000  # bootstrap resamples of the stopping rule's interim screening
FINAL_RESAMPLES = 10_000
CHECK_GROWTH = 1.1  # the next interim check after 10% more rounds
_RANDOM = random.SystemRandom()  # which round is profiled: from the OS, not a seed a kernel could read


class CandidateTimeout(Exception):
    """A candidate's call did not return within `call_timeout_s`."""


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise CandidateTimeout in this thread after `seconds`: a hung kernel costs one candidate, not
    the job. SIGALRM interrupts Python code and sleeps, not a C call that never returns (a GPU kernel
    spinning forever blocks the next synchronisation); it only works in the main thread."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise CandidateTimeout(f"no return within call_timeout_s = {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class L2Flusher:
    """Evicts the L2 between samples by reading a buffer twice its size, so each call reads its
    inputs from device memory (cold). Reading, not writing: a write flush (triton's zero_, nvbench's
    memset) leaves the L2 full of dirty lines whose write-back lands inside the next sample
    (docs/scale.md, Measurements behind the code).

    A sweep does not evict lines a kernel made persisting (a stream's access policy window over its
    inputs; llm.c PR #851, nvbench #458), so the persisting set-aside is held at zero: reset at the
    start, and whenever a flush finds it raised since (a kernel's doing), the device is drained, the
    persisting lines reset to normal and the set-aside put back to zero before the sweep (`resets`)."""

    def __init__(self, device: str, enabled: bool) -> None:
        self.buffer = self.sink = None
        self.resets = 0
        self.persisting = PersistingL2.open() if device == "cuda" and enabled else None
        if device == "cuda" and enabled:
            import torch

            l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
            self.buffer = torch.ones(2 * l2 // 4, dtype=torch.float32, device="cuda")
            self.sink = torch.empty((), dtype=torch.float32, device="cuda")
            if self.persisting is not None and not self.persisting.reset():
                self.persisting = None  # no persisting L2 on this GPU: nothing to hold at zero

    @property
    def nbytes(self) -> int | None:
        return None if self.buffer is None else int(self.buffer.numel() * self.buffer.element_size())

    def __call__(self) -> None:
        if self.buffer is not None:
            import torch

            if self.persisting is not None and self.persisting.raised():
                torch.cuda.synchronize()  # the lines are set when the kernels run, not when launched
                self.persisting.reset()
                self.resets += 1
            torch.sum(self.buffer, dim=0, out=self.sink)

    def release(self) -> None:
        """The set-aside put back to zero once the shape is measured, if a kernel raised it after the
        last cold unit (its audit's calls): the next shape, and the process, start as this one did."""
        if self.persisting is not None and self.persisting.raised():
            import torch

            torch.cuda.synchronize()
            self.persisting.reset()


class PersistingL2:
    """The CUDA runtime's persisting-L2 controls, through the libcudart torch loaded (ctypes)."""

    LIMIT = 0x06  # cudaLimitPersistingL2CacheSize

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    @classmethod
    def open(cls) -> PersistingL2 | None:
        """None where no CUDA runtime library is loaded in this process (the result says so)."""
        import ctypes

        try:
            with open("/proc/self/maps") as maps:
                paths = {line.split()[-1] for line in maps if "libcudart" in line}
        except OSError:
            paths = set()
        for path in sorted(paths):
            try:
                return cls(ctypes.CDLL(path))
            except OSError:
                continue
        return None

    def raised(self) -> bool:
        import ctypes

        size = ctypes.c_size_t(0)
        if self.runtime.cudaDeviceGetLimit(ctypes.byref(size), self.LIMIT) != 0:
            self.runtime.cudaGetLastError()  # not left for torch's next launch check to raise
            return False
        return size.value > 0

    def reset(self) -> bool:
        """Whether the set-aside is zero and the persisting lines normal (False: a GPU without
        persisting L2; the error is cleared, not left for torch's next launch check to raise)."""
        import ctypes

        done = self.runtime.cudaDeviceSetLimit(self.LIMIT, ctypes.c_size_t(0)) == 0
        done = done and self.runtime.cudaCtxResetPersistingL2Cache() == 0
        if not done:
            self.runtime.cudaGetLastError()
        return done


@dataclass
class Sampler:
    """One candidate's unit of measurement: `before` (untimed), then `unit` = calls_per_sample calls.

    `outputs` holds what the unit's last call wrote where that persists between units (a CUDA
    graph's static outputs), so the audit can check that a replay rewrites them; a per-call unit
    returns its outputs instead."""

    unit: Call
    calls_per_sample: int = 1
    before: Call | None = None
    outputs: Any = None

    def check_call(self) -> Any:
        """One unit made exactly as the timed ones are, and the outputs of its last call."""
        if self.before is not None:
            self.before()
        result = self.unit()
        return result if self.outputs is None else self.outputs


class Clock(Protocol):
    """What a round is timed with. `framed`: the round's first and last samples run slow unless an
    untimed unit frames the round (a GPU's, see _Rounds)."""

    framed: bool

    def stamp(self, sampler: Sampler) -> Any: ...

    def ms(self, stamp: Any) -> float: ...

    def hold(self, ms: float) -> None: ...

    def wait(self) -> None: ...

    def recalibrate(self) -> None: ...


class RoundProfile(Protocol):
    """Watches one timed round (attnbench.audit.RoundProfile): `unit(name)` wraps a candidate's timed
    unit, after its untimed `before`."""

    def unit(self, name: str) -> AbstractContextManager[None]: ...


class HostClock:
    """perf_counter_ns around each unit; the CPU runs it synchronously."""

    framed = False

    def stamp(self, sampler: Sampler) -> Any:
        begin = guard.perf_counter_ns()
        sampler.unit()
        return guard.perf_counter_ns() - begin

    def ms(self, stamp: Any) -> float:
        return stamp / 1e6

    def hold(self, ms: float) -> None:
        pass

    def wait(self) -> None:
        pass

    def recalibrate(self) -> None:
        pass


class CudaClock:
    """CUDA events around each unit; one synchronisation per round, never one per call. Through
    torch.cuda's functions as bound before any user module ran (attnbench.guard): a kernel that
    replaces Event.elapsed_time changes nothing this clock reads."""

    framed = True

    def __init__(self) -> None:
        self.cuda = guard.cuda_timers()
        self.ms_per_cycle = self._calibrate_sleep()

    def _calibrate_sleep(self) -> float:
        cycles = 200_000
        start, end = self._events()
        self._record(start)
        self.cuda.sleep(cycles)
        self._record(end)
        self.cuda.synchronize()
        return self.cuda.elapsed_time(start, end) / cycles

    def recalibrate(self) -> None:
        """The spin kernel counts cycles, so its length moves with the clock: measure it warm."""
        self.ms_per_cycle = self._calibrate_sleep()

    def _events(self) -> tuple[Any, Any]:
        return self.cuda.Event(enable_timing=True), self.cuda.Event(enable_timing=True)

    def _record(self, event: Any) -> None:
        self.cuda.record(event, self.cuda.current_stream())

    def stamp(self, sampler: Sampler) -> Any:
        start, end = self._events()
        self._record(start)
        sampler.unit()
        self._record(end)
        return start, end

    def ms(self, stamp: Any) -> float:
        return self.cuda.elapsed_time(stamp[0], stamp[1])

    def hold(self, ms: float) -> None:
        self.cuda.sleep(int(min(ms, HOLD_MAX_MS) / self.ms_per_cycle))

    def wait(self) -> None:
        self.cuda.synchronize()


def round_order(names: list[str], index: int) -> list[str]:
    return names if index % 2 == 0 else names[::-1]


@dataclass
class _Rounds:
    """Runs interleaved rounds over the active samplers; a candidate that raises is dropped whole.

    On CUDA each round is framed by an untimed run of its fastest unit at both ends: the first and
    last samples of a round otherwise run slower (docs/scale.md), which would
    favour whichever candidates the order puts in the middle.
    """

    samplers: dict[str, Sampler]
    clock: Clock
    on_failure: Callable[[str, BaseException], None]
    timeout_s: float | None = None
    index: int = 0
    enqueue_ms: float = 0.0
    fastest: str | None = None

    def _guard(self) -> None:
        if self.clock.framed and self.fastest in self.samplers:
            sampler = self.samplers[self.fastest]
            if sampler.before is not None:
                sampler.before()
            sampler.unit()

    def run(self, profile: RoundProfile | None = None) -> dict[str, float]:
        """One round; under `profile`, each unit is marked for it (outside the timed interval)."""
        self.clock.hold(self.enqueue_ms * HOLD_MARGIN)
        began = guard.perf_counter()
        stamps = {}
        self._guard()
        for name in round_order(list(self.samplers), self.index):
            sampler = self.samplers[name]
            try:
                with deadline(self.timeout_s):
                    if sampler.before is not None:
                        sampler.before()  # untimed: next inputs, L2 flush
                    with profile.unit(name) if profile is not None else nullcontext():
                        stamps[name] = self.clock.stamp(sampler)
            except Exception as exc:
                del self.samplers[name]
                self.on_failure(name, exc)
        self._guard()
        self.enqueue_ms = (guard.perf_counter() - began) * 1e3
        self.clock.wait()
        self.index += 1
        sample = {
            name: self.clock.ms(stamp) / self.samplers[name].calls_per_sample
            for name, stamp in stamps.items()
            if name in self.samplers
        }
        if sample:
            self.fastest = min(sample, key=sample.__getitem__)
        return sample


@dataclass
class Measurement:
    """Per-candidate samples (ms per call, paired by round) and how they were taken."""

    samples: dict[str, list[float]]
    ci95: dict[str, tuple[float, float]]
    samplers: dict[str, Sampler]
    mode: str
    mode_reason: str
    warmup: dict[str, Any]
    stop_reason: str
    rounds_run: int
    clock_log: clocks.ClockLog
    flush_bytes: int | None
    elapsed_s: float = 0.0
    profile: Any = None  # the finished RoundProfile of the round drawn at random, if asked for
    persisting_l2: dict[str, Any] | None = None
    profiled_round: int | None = None

    def record(self, settings: TimingSettings, device: str) -> dict[str, Any]:
        """The `timing` block of a bench result."""
        return {
            "method": "cuda_events" if device == "cuda" else "perf_counter_ns",
            "requested_mode": settings.mode,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "graph_below_ms": GRAPH_BELOW_MS,
            "flush_l2": self.flush_bytes is not None,
            "flush_bytes": self.flush_bytes,
            "persisting_l2": self.persisting_l2,
            "warmup": self.warmup,
            "min_rounds": settings.min_rounds,
            "max_rounds": settings.max_rounds,
            "target_rel_ci": settings.target_rel_ci,
            "max_time_s": settings.max_time_s,
            "rounds_run": self.rounds_run,
            "rounds_kept": max((len(v) for v in self.samples.values()), default=0),
            "profiled_round": self.profiled_round,
            "stop_reason": self.stop_reason,
            "elapsed_s": self.elapsed_s,
            "discard_throttled": settings.discard_throttled,
            "clocks": self.clock_log.summary() | {"sm_mhz_per_round": self.clock_log.sm_mhz},
            "order": "interleaved rounds, alternating direction",
        }


def capture_graph(call: Call, calls: int) -> Sampler:
    """A CUDA graph of `calls` unrolled calls; warmed on a side stream first, as capture requires."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            outputs = call()
    return Sampler(graph.replay, calls, outputs=outputs)


def graph_calls(estimate_ms: float) -> int:
    return max(1, min(MAX_GRAPH_CALLS, math.ceil(GRAPH_REPLAY_MS / max(estimate_ms, 1e-6))))


def _warm_up(
    rounds: _Rounds, watch: clocks.ClockWatch, settings: TimingSettings
) -> tuple[dict[str, Any], dict[str, float]]:
    """Rounds in batches until each candidate's batch median is within 2% of the previous batch's and
    the SM clock within 1% of its previous reading (three settled batches in a row also do, for a
    clock that keeps moving under the power cap); never shorter than `warmup` rounds, never longer
    than `warmup_max_s`."""
    began = guard.perf_counter()
    calls, streak, previous, previous_mhz = 0, 0, None, None
    while rounds.samplers:
        batch: dict[str, list[float]] = {name: [] for name in rounds.samplers}
        for _ in range(WARMUP_BATCH_ROUNDS):
            for name, ms in rounds.run().items():
                batch[name].append(ms)
        calls += WARMUP_BATCH_ROUNDS
        medians = {name: float(np.median(v)) for name, v in batch.items() if v and name in rounds.samplers}
        mhz = watch.read().sm_mhz
        timings_settled = previous is not None and all(
            name in previous and abs(m / previous[name] - 1.0) <= SETTLED for name, m in medians.items()
        )
        streak = streak + 1 if timings_settled else 0
        clock_settled = mhz is None or (
            previous_mhz is not None and abs(mhz - previous_mhz) <= CLOCK_SETTLED * previous_mhz
        )
        elapsed = guard.perf_counter() - began
        if calls >= settings.warmup and streak and (clock_settled or streak >= 3):
            why = "timings and SM clock settled" if mhz is not None and clock_settled else "timings settled"
            return {
                "rounds": calls,
                "seconds": elapsed,
                "settled": True,
                "reason": why,
                "sm_mhz": mhz,
            }, medians
        if elapsed > settings.warmup_max_s:
            moved = "timings moved by more than 2%" if not streak else "the SM clock moved by more than 1%"
            why = f"not settled after {settings.warmup_max_s:g} s (in the last batch {moved})"
            return {
                "rounds": calls,
                "seconds": elapsed,
                "settled": False,
                "reason": why,
                "sm_mhz": mhz,
            }, medians
        previous, previous_mhz = medians, mhz
    return {
        "rounds": calls,
        "seconds": guard.perf_counter() - began,
        "settled": False,
        "reason": "every candidate failed",
        "sm_mhz": None,
    }, {}


def _graph_samplers(
    calls: dict[str, Call],
    estimates: dict[str, float],
    on_failure: Callable[[str, BaseException], None] | None,
    rotate: dict[str, Call],
) -> dict[str, Sampler]:
    """Graph samplers; a failed capture drops the candidate (on_failure) or, without it, raises."""
    samplers = {}
    for name, call in calls.items():
        k = graph_calls(estimates.get(name, GRAPH_BELOW_MS))
        try:
            samplers[name] = capture_graph(call, k)
        except Exception as exc:
            if on_failure is None:
                raise
            on_failure(name, RuntimeError(f"cannot be captured in a CUDA graph: {type(exc).__name__}: {exc}"))
            continue
        samplers[name].before = rotate.get(name)
    return samplers


def _before(*steps: Call | None) -> Call | None:
    """The untimed steps before a unit, in order (the next input set, then the L2 flush)."""
    chosen = [step for step in steps if step is not None]
    if len(chosen) < 2:
        return chosen[0] if chosen else None

    def before() -> None:
        for step in chosen:
            step()

    return before


def _choose_samplers(
    calls: dict[str, Call],
    settings: TimingSettings,
    device: str,
    flush: L2Flusher,
    rounds: _Rounds,
    watch: clocks.ClockWatch,
    on_failure: Callable[[str, BaseException], None],
    rotate: dict[str, Call],
) -> tuple[str, str, dict[str, Any]]:
    """Warm up in the mode's per-call form, then switch to graphs where the mode asks for them."""
    if device != "cuda":
        warmup, _ = _warm_up(rounds, watch, settings)
        return "warm", "the CPU has no L2 flush or CUDA graphs: wall time of one call", warmup
    per_call_mode = "warm" if settings.mode == "warm" else "cold"
    flushing = flush if per_call_mode == "cold" else None
    rounds.samplers = {
        name: Sampler(call, 1, _before(rotate.get(name), flushing)) for name, call in calls.items()
    }
    warmup, estimates = _warm_up(rounds, watch, settings)
    fastest = min(estimates.values(), default=math.inf)
    if settings.mode in ("cold", "warm"):
        return settings.mode, "as configured", warmup
    if settings.mode == "auto" and fastest >= GRAPH_BELOW_MS:
        return "cold", f"auto: fastest candidate {fastest:.3g} ms >= {GRAPH_BELOW_MS} ms", warmup
    alive = {name: calls[name] for name in rounds.samplers}
    if settings.mode == "graph":
        rounds.samplers = _graph_samplers(alive, estimates, on_failure, rotate)
        why = "as configured"
    else:
        try:
            rounds.samplers = _graph_samplers(alive, estimates, None, rotate)
        except Exception as exc:
            return (
                "cold",
                f"auto: CUDA graph capture failed, timed per call: {type(exc).__name__}: {exc}",
                warmup,
            )
        why = f"auto: fastest candidate {fastest:.3g} ms < {GRAPH_BELOW_MS} ms"
    graph_warmup, _ = _warm_up(rounds, watch, settings)
    warmup = {
        **graph_warmup,
        "rounds": warmup["rounds"] + graph_warmup["rounds"],
        "seconds": warmup["seconds"] + graph_warmup["seconds"],
    }
    return "graph", why, warmup


def _intervals(kept: dict[str, list[float]], target: float) -> dict[str, tuple[float, float]] | None:
    """Every median's final 95% CI when all are within ±target, else None. A cheap bootstrap screens
    first; the full one, which the result records, decides."""
    for n_resamples in (CHECK_RESAMPLES, FINAL_RESAMPLES):
        intervals = {name: stats.bootstrap_ci(v, n_resamples=n_resamples) for name, v in kept.items()}
        if not all(relative_half_width(ci, kept[name]) <= target for name, ci in intervals.items()):
            return None
    return intervals


def relative_half_width(interval: tuple[float, float], samples: list[float]) -> float:
    """Half the width of the median's CI over the median: the stopping rule's yardstick."""
    return (interval[1] - interval[0]) / 2.0 / float(np.median(samples))


def measure(
    calls: dict[str, Call],
    *,
    device: str,
    settings: TimingSettings,
    flush: L2Flusher,
    watch: clocks.ClockWatch,
    on_failure: Callable[[str, BaseException], None],
    clock: Clock | None = None,
    rotate: dict[str, Call] | None = None,
    profile: Callable[[], AbstractContextManager[RoundProfile]] | None = None,
) -> Measurement:
    """Warm up, choose the mode, then sample interleaved rounds until the stopping rule holds.
    `clock` times the units: by default CUDA events on a GPU, perf_counter_ns on the CPU.
    `rotate[name]`, untimed before each of that candidate's units, writes its next input set.
    `profile` makes a session that watches one sampling round chosen at random (not a separate
    call a kernel could recognise); that round's samples are not kept (the profiler's own cost)."""
    if clock is None:
        clock = CudaClock() if device == "cuda" else HostClock()
    rotate = rotate or {}
    rounds = _Rounds(
        {name: Sampler(call, 1, rotate.get(name)) for name, call in calls.items()},
        clock,
        on_failure,
        settings.call_timeout_s,
    )
    mode, mode_reason, warmup = _choose_samplers(
        calls, settings, device, flush, rounds, watch, on_failure, rotate
    )
    clock.recalibrate()
    log = watch.log()
    kept: dict[str, list[float]] = {name: [] for name in rounds.samplers}
    began = guard.perf_counter()
    next_check = settings.min_rounds
    previous_reasons = watch.read().reasons
    stop_reason = "every candidate failed"
    intervals = None
    profiled_at = (
        _RANDOM.randrange(max(1, min(settings.min_rounds, settings.max_rounds))) if profile else None
    )
    session = None
    while rounds.samplers:
        if len(log.sm_mhz) >= settings.max_rounds:
            stop_reason = f"max_rounds ({settings.max_rounds}) reached before the CI target"
            break
        if guard.perf_counter() - began > settings.max_time_s:
            stop_reason = f"max_time_s ({settings.max_time_s:g} s) reached before the CI target"
            break
        if profile is not None and session is None and len(log.sm_mhz) == profiled_at:
            session = _profiled_round(rounds, profile)
            continue
        sample = rounds.run()
        reading = watch.read()
        slowed = bool((previous_reasons | reading.reasons) & clocks.DISCARDED) and settings.discard_throttled
        previous_reasons = reading.reasons
        log.record(reading, kept=not slowed)
        kept = {name: kept[name] for name in rounds.samplers}
        if not slowed:
            for name, ms in sample.items():
                kept[name].append(ms)
        n = min((len(v) for v in kept.values()), default=0)
        if n >= next_check:
            intervals = _intervals(kept, settings.target_rel_ci)
            if intervals is not None:
                stop_reason = f"every median's 95% CI within ±{settings.target_rel_ci:.2%}"
                break
            next_check = math.ceil(n * CHECK_GROWTH) + 1
    if profile is not None and session is None and rounds.samplers:
        profiled_at = len(log.sm_mhz)  # sampling stopped before the round drawn: the next one
        session = _profiled_round(rounds, profile)
    kept = {name: kept[name] for name in rounds.samplers}
    if intervals is None:
        intervals = {
            name: stats.bootstrap_ci(v, n_resamples=FINAL_RESAMPLES) for name, v in kept.items() if v
        }
    return Measurement(
        samples=kept,
        ci95=intervals,
        samplers=rounds.samplers,
        mode=mode,
        mode_reason=mode_reason,
        warmup=warmup,
        stop_reason=stop_reason,
        rounds_run=len(log.sm_mhz),
        clock_log=log,
        flush_bytes=flush.nbytes if mode == "cold" else None,
        elapsed_s=guard.perf_counter() - began,
        persisting_l2=None
        if flush.buffer is None
        else {"held_at_zero": flush.persisting is not None, "resets": flush.resets},
        profile=session,
        profiled_round=profiled_at if session is not None else None,
    )


def _profiled_round(rounds: _Rounds, profile: Callable[[], AbstractContextManager[RoundProfile]]) -> Any:
    """One round under a profiling session; its samples are dropped. The session, finished."""
    with profile() as session:
        rounds.run(session)
    return session
