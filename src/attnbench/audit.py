"""Was a timing earned? Checks that the time measured is the time of the work that gave the answer.

Passing the first-call check against float64 is not enough: harnesses in this field have been
fooled by kernels that return a kept answer, run their work on a stream the timer never waits for,
or are silently left out of a CUDA graph whose stale output still passes. So, for every candidate
that was timed:

* ``verify``: after sampling, the inputs are refilled in place with new random values (same
  tensors, same addresses), the outputs of the last timed unit are poisoned with NaN, and one unit
  is run exactly as the timed ones were (in graph mode: a replay). Its output must match a fresh
  float64 reference; otherwise the candidate is ``incorrect`` and the reason says what was seen.
* ``RoundProfile``: one timed round, drawn at random, under torch.profiler (CUPTI), each unit
  followed by a marker kernel on the timing stream: what ran (kernels, count, streams, device time), kernels still running on another stream
  after the marker started (work the timer never waited for), and device time far above the
  measured median (work outside the timed interval).
* ``bound``: the attainable time of the shape from the measured ceilings (a roofline:
  max(flops / matmul ceiling, bytes / read bandwidth)); a median below it beyond the ceilings' own
  CI and ``BOUND_MARGIN`` (per device) is impossible.
* ``determinism``: calls on the same inputs compared bitwise (five when the kernel claims it).

A result caught by ``profile`` or ``bound`` gets the status ``untrusted``: its samples are kept for
inspection, but it is never ranked, never in autotune and never a ratchet improvement.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from attnbench.documents import Bound
from attnbench.host import held_stderr
from attnbench.memory import is_out_of_memory, tensors
from attnbench.settings import BOUND_MARGIN
from attnbench.workloads import check_output

# Profiled device time of one call above this multiple of the measured median (plus PROFILE_SLACK_MS)
# means work ran outside the timed interval. Honest candidates stay well below it (the profiled
# call is warm, like the timed ones; docs/methodology.md, docs/scale.md), a kernel on an unjoined
# stream far above.
PROFILE_EXCESS = 1.5
PROFILE_SLACK_MS = 0.005
NAME_CHARS = 60


def poison(result: Any, inputs: tuple[Any, ...]) -> None:
    """NaN into every floating output that is not an input's storage: an output the next call does
    not rewrite then fails the check instead of passing with a stale answer."""
    import torch

    kept = {t.untyped_storage().data_ptr() for t in inputs}
    with torch.no_grad():
        for tensor in tensors(result):
            if tensor.is_floating_point() and tensor.untyped_storage().data_ptr() not in kept:
                tensor.fill_(float("nan"))


def verify(
    result: Any,
    expected_now: list[Any],
    expected_before: Callable[[], list[Any]],
    *,
    backward: bool,
    dtype: Any,
    tolerance: float,
    graph: bool,
) -> str | None:
    """Why the output of the check unit (run after the inputs were refilled) is wrong, or None.
    `expected_before` makes the answers to the inputs before the refill, asked only to tell a kept
    answer from a wrong one (making them takes device memory and time every shape would pay)."""
    error, mismatch = check_output(result, expected_now, backward, dtype, tolerance=tolerance)
    if mismatch:
        return f"timed work not verified: after the inputs were refilled, {mismatch}"
    if error <= tolerance:
        return None
    if any(t.isnan().all().item() for t in tensors(result)):
        made = "a replay of the timed CUDA graph" if graph else "a call made as the timed calls are"
        return (
            f"timed work not verified: output not rewritten by {made} (it still holds the NaN "
            "written into it before that call)"
        )
    try:
        before, _ = check_output(result, expected_before(), backward, dtype, tolerance=tolerance)
    except Exception as exc:  # out of memory beside the candidates' outputs and graphs: no diagnosis
        if not is_out_of_memory(exc):
            raise
        before = math.inf
    if before <= tolerance:
        return (
            "timed work not verified: answer did not change with the inputs (after new values were "
            f"written into the same input tensors it still matches the old inputs' reference, rel. "
            f"error {before:.2g}, and is off the new one by {error:.2g})"
        )
    return f"timed work not verified: relative error {error:.3g} after the inputs were refilled"


def determinism(first: Any, later: Iterable[Any]) -> dict[str, Any]:
    """Calls on the same inputs against the first, bitwise: kernels with atomics or split reductions
    differ. `later` is consumed one result at a time (each is let go before the next call)."""
    import torch

    identical, largest = True, 0.0
    for result in later:
        pairs = list(zip(tensors(first), tensors(result)))
        if all(torch.equal(a, b) for a, b in pairs):
            continue
        identical = False
        largest = max(
            largest,
            *(
                float((a.double() - b.double()).abs().nan_to_num(nan=math.inf).max().item())
                for a, b in pairs
                if a.numel()
            ),
        )
    return {"identical": identical, "max_abs_diff": largest}


def short_name(name: str) -> str:
    """A kernel's name without return type, namespaces, template arguments and parameters."""
    name = re.sub(r"^void |\(anonymous namespace\)::", "", name.strip())
    name = re.split(r"[<(]", name, maxsplit=1)[0].split("::")[-1] or name
    return name[:NAME_CHARS]


UNIT_LABEL = "attnbench::unit::"


class RoundProfile:
    """One timed round watched by torch.profiler: what each candidate's unit ran.

    The round is drawn at random among the sampling rounds (attnbench.timing.measure), so the
    profiled call is one of the timed ones, not a separate call after sampling that a kernel could
    recognise. On CUDA each unit is bracketed by marker launches on a stream of the profile's own,
    whose launch order (CUPTI's correlation ids) tells which device work was launched by which unit,
    and the unit is followed by a marker on the timing stream: work still running on another stream
    after that marker started is work the timer never waited for. On the CPU each unit runs inside a
    record_function range, whose child operators are what it ran."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.order: list[str] = []
        self.prof: Any = None
        self._side: Any = None
        self._held: Any = None

    def __enter__(self) -> RoundProfile:
        import torch
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        cuda = self.device == "cuda"
        if cuda:
            torch.cuda.synchronize()
            self._side = torch.cuda.Stream(priority=-1)  # a pool kernels rarely draw from
        self.prof = torch_profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU])
        self._held = held_stderr()
        self._held.__enter__()
        self.prof.__enter__()
        if cuda:
            self._mark_side()  # the first launch: its stream is the side stream
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
        try:
            self.prof.__exit__(*exc)
        finally:
            self._held.__exit__(*exc)

    def _mark_side(self) -> None:
        import torch

        with torch.cuda.stream(self._side):
            torch.cuda._sleep(1)

    @contextmanager
    def unit(self, name: str) -> Iterator[None]:
        """Around one candidate's timed unit (outside its timing events). The closing markers are
        launched even when the unit raises, so the next units' windows stay their own."""
        import torch

        self.order.append(name)
        if self.device != "cuda":
            with torch.profiler.record_function(UNIT_LABEL + name):
                yield
            return
        self._mark_side()
        try:
            yield
        finally:
            torch.cuda._sleep(1)  # on the timing stream, after the unit's end event
            self._mark_side()

    @functools.cached_property
    def _device_events(self) -> list[Activity]:
        """The round's device activity in launch order, parsed once for every candidate's summary."""
        return sorted(device_activity(self.prof), key=lambda e: e.correlation)

    def summary(self, name: str, calls_per_sample: int = 1) -> dict[str, Any] | None:
        """What candidate `name`'s unit ran, per call; None when it was not in the round."""
        if name not in self.order:
            return None
        if self.device != "cuda":
            ops = [
                child.name
                for event in self.prof.events()
                if event.name == UNIT_LABEL + name
                for child in event.cpu_children
            ]
            return _summary("torch.profiler, top-level CPU operators", ops, streams=None, device_ms=None)
        events = self._device_events
        if not events:  # the profiler saw no device activity at all (CUPTI taken by nsys or ncu)
            return _summary("torch.profiler (CUPTI)", [], streams=[], device_ms=0.0)
        side = events[0].stream
        markers = [e for e in events if e.stream == side]
        if len(markers) != 1 + 2 * len(self.order):
            # a candidate launched work on the profile's own stream (torch hands streams out of a
            # pool): its markers cannot be told apart, so the round says nothing about this one
            raise RuntimeError(
                f"the profiled round's markers are not the {1 + 2 * len(self.order)} launched "
                f"({len(markers)} on their stream)"
            )
        index = self.order.index(name)
        begin, end = markers[1 + 2 * index].correlation, markers[2 + 2 * index].correlation
        launched = [e for e in events if begin < e.correlation < end and e.stream != side]
        if not launched:  # the timing-stream marker is always there; without it nothing is known
            return None
        marker = max(launched, key=lambda e: e.correlation)
        work = [e for e in launched if e is not marker]
        unjoined = [e for e in work if e.stream != marker.stream and e.end_us > marker.start_us]
        summary = _summary(
            "torch.profiler (CUPTI), a timed round drawn at random",
            [e.name for e in work],
            streams=sorted({e.stream for e in work}),
            device_ms=_busy_us([(e.start_us, e.end_us) for e in work]) / 1e3,
            calls=calls_per_sample,
        )
        summary["unjoined_kernels"] = sorted({short_name(e.name) for e in unjoined})
        return summary


class Activity(NamedTuple):
    """One thing the device ran; `correlation` orders launches (CUPTI's correlation id)."""

    correlation: int
    name: str
    stream: int
    start_us: float
    end_us: float


def device_activity(prof: Any) -> list[Activity]:
    """What ran on the device in a finished torch.profiler session (kernels, copies, memsets; not the
    GPU side of user annotations), from the events the profiler already parsed rather than from a
    Chrome trace written to a temporary file and read back (which the H200 pipeline timed alike)."""
    from torch.autograd import DeviceType

    return [
        Activity(e.id, e.name, e.device_resource_id, e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == DeviceType.CUDA and not e.is_user_annotation
    ]


def _busy_us(intervals: list[tuple[float, float]]) -> float:
    """Time the device was running any of the (start, stop) intervals (overlaps counted once)."""
    busy, end = 0.0, -math.inf
    for start, stop in sorted(intervals):
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy


def _summary(
    source: str,
    names: list[str],
    *,
    streams: list[Any] | None,
    device_ms: float | None,
    calls: int = 1,
) -> dict[str, Any]:
    """Per call: a CUDA graph's replay holds `calls` calls."""
    counts = Counter(short_name(name) for name in names)
    return {
        "source": source,
        "kernels": [
            {"name": name, "count": max(1, round(count / calls))} for name, count in counts.most_common()
        ],
        "kernels_per_call": round(len(names) / calls),
        "streams": None if streams is None else len(streams),
        "device_ms": None if device_ms is None else device_ms / calls,
        "unjoined_kernels": [],
    }


def bound(
    ceilings: dict[str, Any] | None, dtype: str, flops: float, nbytes: int, cold: bool
) -> dict[str, Any] | None:
    """The shape's attainable time from the measured ceilings (a roofline), or None without them.

    The memory term uses the HBM read bandwidth and applies when the inputs cannot stay in the
    cache between calls: in cold mode (flushed), or when they are larger than the cache."""
    if not ceilings or dtype not in ceilings.get("matmul", {}):
        return None
    matmul = ceilings["matmul"][dtype]
    compute_ms = flops / (matmul["tflops"] * 1e12) * 1e3
    terms = {"compute": (compute_ms, matmul.get("rel_ci"))}
    read = ceilings.get("read")
    cache = ceilings.get("cache_bytes")
    resident = not cold and (cache is None or nbytes <= cache)
    if read and not resident:
        terms["memory"] = (nbytes / (read["gbytes_per_s"] * 1e9) * 1e3, read.get("rel_ci"))
    limited_by = max(terms, key=lambda k: terms[k][0])
    bound_ms, rel_ci = terms[limited_by]
    return {
        "bound_ms": bound_ms,
        "limited_by": limited_by,
        "intensity": flops / nbytes if nbytes else None,
        "ceiling_rel_ci": rel_ci or 0.0,
        "margin": BOUND_MARGIN[ceilings.get("device", "cuda")],
        "memory_term": "memory" in terms,
    }


def judge(median_ms: float, ran: dict[str, Any], limit: dict[str, Any] | None) -> list[str]:
    """Reasons this timing was not earned; empty when nothing is wrong."""
    reasons = []
    if ran["unjoined_kernels"]:
        reasons.append(
            "work the timer never waited for: kernels still running on another stream after the "
            f"call returned to the timing stream ({', '.join(ran['unjoined_kernels'][:3])})"
        )
    device_ms = ran["device_ms"]
    if device_ms is not None and device_ms > PROFILE_EXCESS * median_ms + PROFILE_SLACK_MS:
        reasons.append(
            f"work outside the timed interval: the profiler saw {device_ms:.4g} ms of device time per "
            f"call, {device_ms / median_ms:.1f}x the measured median {median_ms:.4g} ms "
            f"(limit {PROFILE_EXCESS:g}x)"
        )
    if limit is not None:
        fraction = limit["bound_ms"] / median_ms
        allowed = Bound.from_json(limit).allowed
        if fraction > allowed:
            reasons.append(
                f"faster than measured physics: {fraction:.0%} of the attainable bound "
                f"({limit['limited_by']}-bound, {limit['bound_ms']:.4g} ms; allowed {allowed:.0%})"
            )
    return reasons
