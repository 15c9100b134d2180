"""One benchmark job: every candidate of one shape checked, measured and recorded, nothing lost.

Each candidate ends with a status: ok, unsupported (the library declines, with its reason),
incorrect (output off the float64 reference by more than the dtype's tolerance; never ranked),
oom, error, or timeout. A failure of one candidate never stops the others.

Except a sticky CUDA error (an illegal address, a device-side assert): the process can measure nothing
more, so run_shape raises isolation.ContextLost, naming the candidate when its synchronised checks
were running. The job then records that candidate as crashed and measures the others again in a fresh
process (attnbench.isolation), as it does when the process dies.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import random
import secrets
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from attnbench import (
    __version__,
    audit,
    candidates,
    clocks,
    files,
    guard,
    host,
    isolation,
    lock,
    memory,
    timing,
)
from attnbench import (
    device as device_module,
)
from attnbench.benchspec import BenchSpec
from attnbench.documents import BENCH_MINOR
from attnbench.env import device_summary
from attnbench.results import Status, empty_entry
from attnbench.settings import TimingSettings
from attnbench.workloads import (
    DEFAULT_LAYOUT,
    OutputCheck,
    Shape,
    Workload,
    check_output,
    flops,
    hard_inputs,
    in_layout,
    inputs_in_layout,
    inspect_output,
    make_inputs,
    min_bytes,
    padded_length,
    reference,
    refill_layout,
    takes_padded,
    tolerance_for,
)

log = logging.getLogger(__name__).info


def make_call(kernel: candidates.Kernel, inputs: tuple[Any, ...], backward: bool) -> Callable[[], Any]:
    """The unit that is timed: forward, or forward plus the gradients of q, k, v."""
    q, k, v, dout = inputs
    if not backward:
        return lambda: kernel(q, k, v)
    import torch

    def forward_backward() -> Any:
        out = kernel(q, k, v)
        return out, *torch.autograd.grad(out, (q, k, v), dout)

    return forward_backward


INPUT_NAMES = ("q", "k", "v", "dout")
CLAIMED_DETERMINISM_CALLS = 5  # calls compared bitwise when a candidate claims to be deterministic


@dataclass
class InputSet:
    """One set of input values of the shape (bhsd) and their float64 answers."""

    label: str
    bhsd: tuple[Any, ...]
    expected: Sealed | None


TAMPERED = "wrote into attnbench's float64 reference answers while it ran"


class TamperedAnswers(RuntimeError):
    """The float64 answers attnbench holds changed while a candidate ran: it wrote into them."""


class Sealed:
    """Float64 answers kept where a kernel that scans the process for them (gc.get_objects, its
    callers' frames: pygpubench's gc_copy and heap_sig_scan) does not find them as what it looks for:
    one flat buffer behind a random-length prefix, scaled by a factor drawn at random. `open()` gives
    them back only for a check, after the candidate's call has returned, and first checks that no
    one wrote into the buffer (gc_nan, gpu_scan_zeros: an answer zeroed so a zero output passes).
    This defeats scans for tensors of the output's shape and values; a kernel that reads attnbench's
    own code to undo it is out of scope (docs/exploits.md)."""

    def __init__(self, answers: list[Any]) -> None:
        import torch

        device = answers[0].device
        self.shapes = [tuple(t.shape) for t in answers]
        self.factor = 1.0 + _RANDOM.random()
        self.prefix = _RANDOM.randrange(1, 4096)
        generator = torch.Generator(device=device).manual_seed(_RANDOM.randrange(2**62))
        # filled in place: the answers and one buffer their size at the peak, never more
        self.buffer = torch.empty(
            self.prefix + sum(t.numel() for t in answers), dtype=torch.float64, device=device
        )
        self.buffer[: self.prefix].uniform_(generator=generator)
        start = self.prefix
        for answer in answers:
            piece = self.buffer[start : start + answer.numel()]
            piece.copy_(answer.detach().reshape(-1))
            piece.mul_(self.factor)
            start += answer.numel()
        self.digest = self._digest()

    @property
    def intact(self) -> bool:
        return self._digest() == self.digest

    def _digest(self) -> int:
        import torch

        return int(self.buffer.view(torch.int64).sum().item())

    def open(self) -> list[Any]:
        if not self.intact:
            raise TamperedAnswers(TAMPERED)
        answers, start = [], self.prefix
        for shape in self.shapes:
            count = math.prod(shape)
            answers.append((self.buffer[start : start + count] / self.factor).view(shape))
            start += count
        return answers


def sealed_answers(shape: Shape, values: tuple[Any, ...], backward: bool) -> Sealed:
    """The float64 answers to q, k, v (and, with `backward`, the gradients for the output gradient),
    sealed (Sealed)."""
    return Sealed(reference(shape, *values[:3], values[3] if backward else None))


class Inputs:
    """The shape's input sets, kept pristine per layout, and each candidate's own tensors.

    A candidate never gets the pristine tensors: it gets copies of its own (`own`), so a kernel that
    writes into its inputs changes nothing another candidate reads, and the change is found by
    comparing its tensors bit for bit with the pristine set last written into them (`changed`). The
    timed rounds write the next set's values into them before each unit (`write`, untimed), so a
    cache keyed on the input values or on the call count meets other values from one unit to the next.
    """

    def __init__(self, sets: list[InputSet], workload: Workload) -> None:
        self.sets = sets
        self.workload = workload
        self.roles = 4 if workload.mode == "forward_backward" else 3  # the output gradient: backward only
        self._pristine: dict[tuple[str, int], tuple[Any, ...]] = {}

    def pristine(self, key: str, index: int) -> tuple[Any, ...]:
        if (key, index) not in self._pristine:
            layout = key.split("+")[0]
            self._pristine[key, index] = inputs_in_layout(self.sets[index].bhsd, layout, self.workload)
        return self._pristine[key, index]

    def own(self, key: str) -> tuple[Any, ...]:
        """A candidate's own tensors, holding the first set's values."""
        return tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in self.pristine(key, 0))

    def write(self, tensors: tuple[Any, ...], key: str, index: int, q_scale: float = 1.0) -> None:
        """Set `index`'s values into `tensors`, q times `q_scale` (values no call has met before)."""
        import torch

        with torch.no_grad():
            for role, (made, values) in enumerate(zip(tensors[: self.roles], self.pristine(key, index))):
                made.copy_(scaled(values, q_scale) if role == 0 else values)

    def changed(self, tensors: tuple[Any, ...], key: str, index: int, q_scale: float = 1.0) -> list[str]:
        """The inputs whose bits differ from what `write` put there (NaN where a paged pool holds it
        included)."""
        import torch

        with torch.no_grad():
            return [
                name
                for role, (name, made, values) in enumerate(
                    zip(INPUT_NAMES[: self.roles], tensors, self.pristine(key, index))
                )
                if not same_bits(made, scaled(values, q_scale) if role == 0 else values)
            ]

    @property
    def intact(self) -> bool:
        """No one wrote into any kept set's answers."""
        return all(values.expected is None or values.expected.intact for values in self.sets)

    def answer_again(self) -> None:
        """Every kept set's answers made again (a candidate wrote into them)."""
        backward = self.workload.mode == "forward_backward"
        for index, values in enumerate(self.sets):
            if values.expected is not None:
                self.sets[index] = replace(
                    values, expected=sealed_answers(self.workload.shape, values.bhsd, backward)
                )

    def keep_timed_values_only(self) -> None:
        """Before the timed rounds: the timed sets' values, no answers (they hold no device memory
        through the rounds), and nothing of the sets that are never timed."""
        for index in range(len(self.sets)):
            if index >= TIMED_SETS:
                self.drop(index)
            else:
                self.sets[index] = replace(self.sets[index], expected=None)

    def drop(self, index: int) -> None:
        """Let a set go once its checks are done (the hard set is never timed)."""
        self.sets[index] = replace(self.sets[index], bhsd=(), expected=None)
        for key in [key for key in self._pristine if key[1] == index]:
            del self._pristine[key]


def scaled(values: Any, factor: float) -> Any:
    """`values` times `factor` in its own dtype (through float32 for fp8, which has no arithmetic)."""
    if factor == 1.0:
        return values
    if values.element_size() == 1:
        return (values.float() * factor).to(values.dtype)
    return values * factor


def same_bits(a: Any, b: Any) -> bool:
    """Bitwise equality (NaN equal to the same NaN; what torch.equal cannot say)."""
    import torch

    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    width = ints[a.element_size()]
    return torch.equal(a.detach().view(width), b.detach().view(width))


def changed_inputs(names: list[str], when: str) -> str:
    inputs = ", ".join(names)
    return f"changed its input{'s' if len(names) > 1 else ''} {inputs} in place ({when}): inputs are read, never written"


def answers_of(values: InputSet) -> list[Any]:
    assert values.expected is not None, f"the {values.label} input set's answers were let go"
    return values.expected.open()


def judge_output(
    result: Any,
    inputs: Inputs,
    index: int,
    layout: str,
    job: BenchSpec,
    tolerance: float,
    exact: float | None = None,
) -> tuple[OutputCheck | None, str | None, bool]:
    """The output against input set `index`'s reference (None where it is no plain output), why it
    is wrong (None when it is right) within `tolerance`, which widens the row and element bounds with
    it, and whether a right one needed more than `exact`, the run dtype's tolerance, where `tolerance`
    is a kernel's declared one (norm-wise, or a row or element beyond the dtype's bounds): an
    approximate result. Off on a later set but right for the first: the answer did not change with
    the inputs."""
    import torch

    if problem := guard.plain_output_problem(result):
        return None, problem, False
    workload = inputs.workload
    backward, dtype = job.backward, getattr(torch, job.dtype)
    expected = in_layout(answers_of(inputs.sets[index]), layout, workload)
    checked = inspect_output(result, expected, backward, dtype, tolerance=tolerance)
    error, why = checked.norm_error, checked.reason
    if why is None and not error <= tolerance:
        why = (
            "output contains NaN or Inf"
            if math.isinf(error)
            else f"relative error {error:.3g} exceeds the {job.dtype if exact is None else 'declared'} tolerance {tolerance:g}"
        )
        if index and not math.isinf(error):
            before, _ = check_output(
                result,
                in_layout(answers_of(inputs.sets[0]), layout, workload),
                backward,
                dtype,
                tolerance=tolerance,
            )
            if before <= tolerance:
                why = (
                    f"answer did not change with the inputs (it matches the first input set's reference, rel. "
                    f"error {before:.2g}, and is off this set's by {error:.2g})"
                )
    if why is not None and index:
        why = f"on the {inputs.sets[index].label} input set: {why}"
    beyond_exact = False
    if why is None and exact is not None:
        strict = inspect_output(result, expected, backward, dtype, tolerance=exact)
        beyond_exact = strict.reason is not None or not strict.norm_error <= exact
    return checked, why, beyond_exact


def prepare(
    name: str,
    workload: Workload,
    inputs: Inputs,
    job: BenchSpec,
) -> tuple[dict[str, Any], Callable[[], Any] | None, tuple[Any, ...]]:
    """Build, check and warm one candidate; its entry, its call when it is fit to time, and its own
    input tensors (which the call reads).

    The candidate gets q, k, v in the layout it declares, copies of its own made before any timing,
    and its output is checked against the reference in that layout on every input set (the first,
    one drawn for this run, a hard one). A factory kernel's setup runs here, timed apart (setup_ms),
    like the first call's compilation (compile_ms)."""
    import torch

    backward = job.backward
    tolerance = tolerance_for(job.dtype, workload.shape, job.tolerance)
    timeout = job.timing.call_timeout_s
    layout: dict[str, str] = {}
    own: tuple[Any, ...] = ()
    started = time.perf_counter()

    def sync() -> None:
        if workload.device == "cuda":
            torch.cuda.synchronize()

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            try:  # a user kernel's module is imported here: bounded like a call
                with timing.deadline(timeout):
                    declared = candidates.declaration(name, workload)
            except timing.CandidateTimeout as exc:
                raise timing.CandidateTimeout(f"importing its module: {exc}") from None
            # A declared approximation (the config's, else the kernel's): its error may reach this.
            declared_tolerance = job.tolerances.get(name, declared.tolerance)
            exact_tolerance = tolerance
            if declared_tolerance is not None and declared_tolerance > tolerance:
                tolerance = declared_tolerance
            layout = {"layout": declared.layout}
            candidates.check_layout(name, declared.layout, replace(workload, layout=declared.layout))
            key = inputs_key(declared.layout, workload)
            own = inputs.own(key)
            began = time.perf_counter()
            with timing.deadline(timeout):
                kernel = candidates.build(name, replace(workload, layout=declared.layout), own[:3])
                sync()
            setup = {"setup_ms": (time.perf_counter() - began) * 1e3} if declared.factory else {}
            call = make_call(kernel, own, backward)
            began = time.perf_counter()
            # where each job's time goes (benchmarks/duty.py): making the candidate, a factory's setup apart
            spent_ms = {"build_ms": max((began - started) * 1e3 - setup.get("setup_ms", 0.0), 0.0)}
            with timing.deadline(timeout):
                result = call()
                sync()
            first_call_ms = (time.perf_counter() - began) * 1e3
            began = time.perf_counter()
            error = math.nan
            accuracy: dict[str, Any] = {}  # the first input set's metrics, per output (the report's)
            approximate_on: str | None = None  # the first input set it needed its declared tolerance on
            why = None
            first: list[Any] = []
            for index, values in enumerate(inputs.sets):
                if index:
                    inputs.write(own, key, index)
                    with timing.deadline(timeout):
                        result = call()
                        sync()
                exact = exact_tolerance if tolerance != exact_tolerance else None
                checked, why, beyond_exact = judge_output(
                    result, inputs, index, declared.layout, job, tolerance, exact
                )
                if beyond_exact and approximate_on is None:
                    approximate_on = values.label
                if index == 0 and checked is not None:
                    error = checked.norm_error
                    accuracy = (
                        {"accuracy": {t.name: t.accuracy() for t in checked.tensors}}
                        if checked.tensors
                        else {}
                    )
                if changed := inputs.changed(own, key, index):
                    why = changed_inputs(changed, f"called on the {values.label} input set")
                if why is not None:
                    break
                if index == 0:
                    # A copy: a kernel may hand back the same buffer every call.
                    first = [t.detach().clone() for t in memory.tensors(result)]
            del result
            spent_ms["verify_ms"] = (time.perf_counter() - began) * 1e3

            # the first call's time is kept whatever the answer: it is time the job spent (benchmarks/duty.py)
            def spent() -> dict[str, Any]:  # read when an entry is made: verify_ms grows with the checks
                return {"compile_ms": first_call_ms, **setup, **spent_ms, **layout, **accuracy}

            if why is not None:
                rel = {"rel_error": error} if not math.isnan(error) else {}
                return empty_entry(Status.INCORRECT, why, tolerance=tolerance, **rel, **spent()), None, own
            inputs.write(own, key, 0)
            claimed = declared.deterministic or (
                not candidates.is_user_kernel(name) and torch.are_deterministic_algorithms_enabled()
            )
            with timing.deadline(timeout):
                compared = CLAIMED_DETERMINISM_CALLS if claimed else 2
                repeat = audit.determinism(first, (call() for _ in range(compared - 1)))
                del first
                footprint = memory.footprint(kernel, own, backward, workload.device)
                sync()
            spent_ms["verify_ms"] = (time.perf_counter() - began) * 1e3
            why = None
            if changed := inputs.changed(own, key, 0):
                why = changed_inputs(changed, "called again on the first input set")
            elif claimed and not repeat["identical"]:
                why = (
                    f"claims to be deterministic, but {CLAIMED_DETERMINISM_CALLS} calls on the same inputs "
                    f"differ (largest difference {repeat['max_abs_diff']:.3g})"
                )
            if why is not None:
                return (
                    empty_entry(Status.INCORRECT, why, rel_error=error, tolerance=tolerance, **spent()),
                    None,
                    own,
                )
        except Exception as exc:
            # with the layout it was offered: the report says what a decline was given
            failed = {
                **failure_entry(name, workload.device, exc, [str(w.message) for w in seen], culprit=name),
                **layout,
            }
            # A built-in's decline leaves nothing to collect (a collection costs time); a user kernel's
            # may come from code that allocated before it declined.
            if failed["status"] != Status.UNSUPPORTED or candidates.is_user_kernel(name):
                memory.release(workload.device)
            return failed, None, own
    # beyond the run dtype's tolerance or bounds on some input set, within its declared one: ok, but
    # approximate (ranked apart)
    approximate = (
        {
            "approximate": {
                "declared": tolerance,
                "dtype_tolerance": exact_tolerance,
                "input_set": approximate_on,
            }
        }
        if approximate_on is not None
        else {}
    )
    entry = empty_entry(
        Status.OK,
        None,
        rel_error=error,
        tolerance=tolerance,
        compile_ms=first_call_ms,
        deterministic=repeat | {"claimed": claimed, "calls": compared},
        **setup,
        **spent_ms,
        **layout,
        **accuracy,
        **approximate,
    )
    entry.update(
        peak_mem_mb=footprint.pop("peak_mem_mb"),
        peak_reserved_mb=footprint.pop("peak_reserved_mb"),
        footprint=footprint,
    )
    return entry, call, own


def describe(exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}".rstrip(": ")


def failure_entry(
    name: str, device: str, exc: BaseException, warnings_seen: list[str], culprit: str | None = None
) -> dict[str, Any]:
    """Candidate `name`'s entry after `exc`, with the library's whole text (reason_detail) and, for an
    error, the traceback (also in the job's log); a sticky CUDA error raises ContextLost instead
    (naming `culprit`, the candidate whose synchronised checks raised it), before anything else
    touches the device."""
    if isolation.is_sticky(exc):
        raise isolation.ContextLost(describe(exc), culprit) from exc
    if isinstance(exc, timing.CandidateTimeout):
        return empty_entry(Status.TIMEOUT, str(exc))
    if isinstance(exc, TamperedAnswers):
        return empty_entry(Status.UNTRUSTED, str(exc))
    if memory.is_out_of_memory(exc):
        return empty_entry(Status.OOM, memory.oom_reason(exc))
    declined = candidates.unsupported_reason(name, device, exc, warnings_seen)
    if declined is not None:
        reason, detail = declined
        return empty_entry(Status.UNSUPPORTED, reason, reason_detail=detail)
    trace = "".join(traceback.format_exception(exc)).rstrip()
    log(f"  {name}: {trace}")
    return empty_entry(Status.ERROR, describe(exc), traceback=trace)


def run_shape(
    spec: dict[str, Any],
    running: Callable[[str | None], None] | None = None,
    ceilings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure every candidate of spec["shape"] (a benchmark job's spec, jobs._benchmark_spec); the
    returned document matches bench.schema.yaml. `running(name)` is told whose checks start,
    `running(None)` when they are all done. The measured ceilings bound every result
    (attnbench.audit): `ceilings`, else the file spec["ceilings"] names."""
    job = BenchSpec.from_json(spec)
    if ceilings is None and job.ceilings:
        ceilings = files.read_json(job.ceilings)  # first, so a missing file fails early
    try:
        return _measure_shape(job, running or (lambda name: None), ceilings)
    except isolation.ContextLost:
        raise
    except Exception as exc:
        # Outside any one candidate's call (a round's synchronisation, the audit): culprit unknown.
        if isolation.is_sticky(exc):
            raise isolation.ContextLost(describe(exc), None) from exc
        raise


def _measure_shape(
    job: BenchSpec, running: Callable[[str | None], None], ceilings: dict[str, Any] | None
) -> dict[str, Any]:
    import torch

    device = job.device
    device_module.require(device)
    threads = host.use_threads(job.threads)
    load = host.LoadWatch.start(threads)
    lock_state = lock.apply(job.lock)
    shape, settings, direction = job.shape, job.timing, job.direction
    dtype = getattr(torch, job.dtype)
    log(f"{shape.name}: {shape.as_dict()} {job.dtype} {direction} on {device}, {threads} CPU threads")

    seed = int(lock_state["seed"])
    # Drawn for this run and recorded after it: the second and hard input sets and the audit's
    # refill, so no answer kept from an earlier run (or keyed on a known seed) fits them.
    run_seed = secrets.randbelow(2**31 - 3)
    available = memory.device_memory(device)  # before this shape's inputs: what the workload may use
    backward = direction == "forward_backward"
    workload = Workload.of(shape, job.dtype, device, mode=direction)
    began = time.perf_counter()
    sets, fewer_sets = check_sets(shape, dtype, device, seed, run_seed, backward)
    inputs = Inputs(sets, workload)
    if device == "cuda":
        torch.cuda.synchronize()
    reference_s = time.perf_counter() - began
    entries: dict[str, dict[str, Any]] = {}
    calls: dict[str, Callable[[], Any]] = {}
    owned: dict[str, tuple[Any, ...]] = {}
    process_changes: list[str] = []
    for name in job.candidates:
        running(name)
        before = guard.snapshot()
        entries[name], call, owned[name] = prepare(name, workload, inputs, job)
        if changed := put_back(before):
            process_changes += [f"{name}: {line}" for line in changed]
            entries[name] = changed_process(entries[name], changed)
            call = None  # it would change the process again in the rounds, beside the others
        if not inputs.intact:  # whatever set it wrote into: its own doing, not the next candidate's
            entries[name] = {**entries[name], "status": Status.UNTRUSTED, "reason": TAMPERED}
            inputs.answer_again()
            call = None
        if call is None:
            owned.pop(name)
        log(f"  {name}: {entries[name]['status']} {entries[name]['reason'] or ''}".rstrip())
        if call is not None:
            calls[name] = call
            entries[name]["oom_risk"] = memory.oom_risk(
                entries[name]["footprint"]["projected_mb"],
                available["device_total_mb"],
                available["device_free_mb"],
            )
    running(None)
    # Let go before the timed rounds, so the float64 answers hold no device memory through them. The
    # audit's diagnosis ("answer did not change with the inputs") makes them again from the seed when
    # a check fails; a copy kept on the host for it cost every shape time (docs/scale.md).
    inputs.keep_timed_values_only()
    rotation = Rotation(inputs, {name: (owned[name], key_of(entries[name], workload)) for name in calls})

    def on_failure(name: str, exc: BaseException) -> None:
        entries[name] = failure_entry(name, device, exc, [])
        memory.release(device)
        log(f"  {name}: {entries[name]['status']} while timing: {entries[name]['reason']}")

    flush = timing.L2Flusher(device, settings.mode in ("auto", "cold"))

    def sample(timed: dict[str, Callable[[], Any]]) -> timing.Measurement:
        rotation.active = True
        with clocks.watch(device) as watch:
            measured = timing.measure(
                timed,
                device=device,
                settings=settings,
                flush=flush,
                watch=watch,
                on_failure=on_failure,
                rotate={name: functools.partial(rotation.next, name) for name in timed},
                profile=functools.partial(audit.RoundProfile, device),
            )
        rotation.active = False
        log(f"  timing: {measured.mode} ({measured.mode_reason}); warm-up {measured.warmup['reason']}")
        return measured

    before = guard.snapshot()
    measured = sample(calls)
    if changed := put_back(before):
        process_changes += find_who_changed(calls, changed, entries)
    work = flops(shape, direction)
    nbytes = min_bytes(shape, dtype.itemsize, direction)
    record_samples(entries, measured, settings, work)
    limit = audit.bound(ceilings, job.dtype, work, nbytes, cold=measured.mode == "cold")
    began = time.perf_counter()
    changed_while_timed = audit_timed_work(
        entries, measured, rotation, limit, workload=workload, job=job, seed=run_seed + 2, first_seed=seed
    )
    again = remeasure_without_cheats(entries, calls, measured, changed_while_timed)
    if again:
        measured = sample(again)
        record_samples(entries, measured, settings, work)
        # the whole audit again, on refill values of their own: a candidate measured again as a
        # suspect was not verified after the first rounds
        audit_timed_work(
            entries, measured, rotation, limit, workload=workload, job=job, seed=run_seed + 3, first_seed=seed
        )
        for name in again:
            entries[name]["remeasured"] = sorted(set(calls) - set(again))
    flush.release()
    audit_s = time.perf_counter() - began
    log(f"  audit: {audit_s:.2f} s")
    for line in process_changes:  # a warm worker retires after this job (attnbench.worker)
        log(f"  process changed: {line}")
    # per head: the pairs the mask lets through (what flops counts) and all seq x seq_kv of them
    # (what a dense attn_mask or padding computes anyway)
    pairs = {
        "attended": shape.attended_pairs(),
        "dense": shape.batch * shape.seq * shape.seq_kv,
        "sdpa_dense_mask": candidates.sdpa_needs_dense_mask(shape),
        # a decode batch padded to its longest cache, as SDPA gets it (workloads.PADDED; flex skips the padding)
        **({"padded": shape.seq * padded_length(workload)} if takes_padded(shape) else {}),
    }
    for name, entry in entries.items():
        entry["dense_mask_work"] = candidates.sdpa_dense_mask_work(
            name, pairs, entry.get("layout", DEFAULT_LAYOUT)
        )
    conditions = load.record()
    if conditions["busy"]:
        log(f"  busy host: {conditions['why']}")

    return {
        "schema_minor": BENCH_MINOR,
        "attnbench_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "shape": shape.as_dict(),
        "device": device,
        "device_info": device_summary(device),
        "dtype": job.dtype,
        "mode": direction,
        "timing": measured.record(settings, device),
        "lock": lock_state,
        "kernel_hashes": job.kernel_hashes,
        "flops": work,
        "min_bytes": nbytes,
        "pairs": pairs,
        "bound": limit,
        "audit_s": audit_s,
        "process_changes": process_changes,
        "input_sets": {
            "checked": [values.label for values in inputs.sets],
            "timed": [values.label for values in inputs.sets[:TIMED_SETS]],
            "seed": seed,
            "run_seed": run_seed,
            "fewer": fewer_sets,
        },
        "stages": {"reference_s": reference_s},  # the inputs and the float64 reference (benchmarks/duty.py)
        "memory": memory.device_memory(device),
        "host": conditions,
        "candidates": entries,
    }


def judge_timed(
    entries: dict[str, dict[str, Any]],
    measured: timing.Measurement,
    rotation: Rotation,
    limit: dict[str, Any] | None,
    names: list[str],
) -> None:
    """What each of `names` ran in the round profiled at random, whether its timing was earned (the
    profile and the bound) and whether its inputs still hold what was last written into them; the
    names whose inputs did not."""
    changed_while_timed = []
    for name in names:
        entry = entries[name]
        sampler = measured.samplers[name]
        try:
            ran = measured.profile.summary(name, sampler.calls_per_sample) if measured.profile else None
            if ran is None:
                raise RuntimeError("the profiled round holds nothing this candidate ran")
        except Exception as exc:
            audit_failed(entries, name, exc, rotation.inputs.workload.device)
            continue
        median = entry["median_ms"]
        entry["ran"] = ran | {"device_share": None if ran["device_ms"] is None else ran["device_ms"] / median}
        if limit is not None:
            entry["fraction_of_bound"] = limit["bound_ms"] / median
        flags = audit.judge(median, ran, limit)
        if changed := rotation.changed(name):
            entry.update(status=Status.INCORRECT, reason=changed_inputs(changed, "while it was timed"))
            log(f"  {name}: incorrect: {entry['reason']}")
            changed_while_timed.append(name)
        elif flags:
            entry.update(status=Status.UNTRUSTED, reason="; ".join(flags))
            log(f"  {name}: untrusted: {entry['reason']}")
    return changed_while_timed


def audit_timed_work(
    entries: dict[str, dict[str, Any]],
    measured: timing.Measurement,
    rotation: Rotation,
    limit: dict[str, Any] | None,
    *,
    workload: Workload,
    job: BenchSpec,
    seed: int,
    first_seed: int,
) -> list[str]:
    """After sampling: what each timed candidate ran in the round profiled at random, whether its
    timing was earned, whether its inputs are as they were written, and whether the timed unit still
    computes its answer once the inputs change (attnbench.audit); refill values from `seed`. The
    names whose inputs changed while they were timed."""
    import torch

    device, backward, timeout = job.device, job.backward, job.timing.call_timeout_s
    timed = [name for name in measured.samples if entries[name]["status"] == Status.OK]
    changed_while_timed = judge_timed(entries, measured, rotation, limit, timed)
    last: dict[str, Any] = {}
    for name in timed:
        if entries[name]["status"] in (Status.OK, Status.UNTRUSTED):
            try:
                with timing.deadline(timeout):
                    last[name] = measured.samplers[name].check_call()
                    if device == "cuda":
                        torch.cuda.synchronize()  # an error here is this candidate's own
            except Exception as exc:
                audit_failed(entries, name, exc, device)
    if not last:
        return changed_while_timed
    dtype = getattr(torch, job.dtype)
    try:
        fresh = make_inputs(workload.shape, dtype, device, seed, backward)
        for name in last:
            own, key = rotation.owned[name]
            refill_layout(own, fresh, key.split("+")[0], workload)
        answers = sealed_answers(workload.shape, fresh, backward)
    except Exception as exc:  # out of memory beside the candidates' outputs and graph pools
        for name in last:
            audit_failed(entries, name, exc, device)
        return changed_while_timed

    @functools.cache
    def first_answers() -> Sealed:
        """The float64 answers to the first inputs the candidates were timed on, from their seed; on
        the host, so the candidates checked after this one have the device memory they had."""
        first = make_inputs(workload.shape, dtype, device, first_seed, backward)
        return Sealed(
            [t.cpu() for t in reference(workload.shape, *first[:3], first[3] if backward else None)]
        )

    for name, previous in last.items():
        sampler = measured.samplers[name]
        own, key = rotation.owned[name]
        try:
            layout = entries[name].get("layout", DEFAULT_LAYOUT)
            with timing.deadline(timeout):  # the candidate's call; the checks after it are not its time
                if sampler.outputs is not None:
                    # a graph's static outputs: a replay that launches nothing leaves the NaN. Per
                    # call, no poison: a NaN output would tell a kernel that this call is checked
                    audit.poison(previous, own)
                result = sampler.check_call()
                if device == "cuda":
                    torch.cuda.synchronize()
            why = audit.verify(
                result,
                in_layout(answers.open(), layout, workload),
                lambda layout=layout: in_layout(first_answers().open(), layout, workload),
                backward=backward,
                dtype=dtype,
                tolerance=entries[name]["tolerance"],
                graph=sampler.outputs is not None,
            )
        except Exception as exc:
            audit_failed(entries, name, exc, device)
            if isinstance(exc, TamperedAnswers):  # made again for the candidates after this one
                answers = sealed_answers(workload.shape, fresh, backward)
                first_answers.cache_clear()
            continue
        if why:
            flagged = entries[name]["reason"] if entries[name]["status"] == Status.UNTRUSTED else None
            entries[name].update(status=Status.INCORRECT, reason=f"{why}; also {flagged}" if flagged else why)
            log(f"  {name}: incorrect: {why}")
    return changed_while_timed


def put_back(before: guard.ProcessState) -> list[str]:
    """What was changed in the process since `before` (functions, timers, environment, threads,
    children, flags...), each put back."""
    changed = list(dict.fromkeys([*guard.changes(before, guard.snapshot()), *guard.replaced_timers()]))
    if changed:
        left = guard.restore(before)
        changed += [f"could not put back: {line}" for line in left]
    return changed


def changed_process(entry: dict[str, Any], changed: list[str]) -> dict[str, Any]:
    """`entry` made untrusted for changing the process (its samples, if any, kept for inspection)."""
    reason = f"changed the process it shares with the other candidates: {'; '.join(changed)} (put back)"
    return {**entry, "status": Status.UNTRUSTED, "reason": reason}


def find_who_changed(
    calls: dict[str, Callable[[], Any]], changed: list[str], entries: dict[str, dict[str, Any]]
) -> list[str]:
    """After the timed rounds changed the process (`changed`, already put back): call each timed
    candidate once more, alone, to find which one does it; those are untrusted. Without one that
    does it again, the change is the shape's, unattributed."""
    found = []
    for name, call in calls.items():
        before = guard.snapshot()
        try:
            call()
        except Exception:  # its failure is the rounds' business, already recorded
            pass
        if again := put_back(before):
            entries[name] = changed_process(entries[name], again)
            found += [f"{name}: {line}" for line in again]
    return found or [f"during the timed rounds (no candidate did it again alone): {line}" for line in changed]


def remeasure_without_cheats(
    entries: dict[str, dict[str, Any]],
    calls: dict[str, Callable[[], Any]],
    measured: timing.Measurement,
    changed_while_timed: list[str],
) -> dict[str, Callable[[], Any]]:
    """The calls to sample again: when a candidate that shared the rounds was caught after sampling
    (untrusted, or incorrect), the others were timed beside work that was not what it claimed (a
    cheater can slow its neighbours), so they are measured again without it.

    A candidate whose inputs changed while it shared the rounds with others is not yet to blame:
    work a neighbour left running (a stream never joined) writes into memory the allocator has since
    given to it. It is measured again too, without the candidates caught (alone if none was), and
    its inputs then decide (judge_timed)."""
    suspects = changed_while_timed if len(measured.samples) > 1 else []  # alone, its own doing
    caught = [
        name
        for name in measured.samples
        if entries[name]["status"] in (Status.UNTRUSTED, Status.INCORRECT) and name not in suspects
    ]
    for name in suspects:
        entries[name].update(status=Status.OK, reason=None)
    if not caught:
        return {name: calls[name] for name in suspects}
    return {name: calls[name] for name in measured.samples if entries[name]["status"] == Status.OK}


def record_samples(
    entries: dict[str, dict[str, Any]], measured: timing.Measurement, settings: TimingSettings, work: float
) -> None:
    """Each sampled candidate's samples, median, CI and throughput into its entry."""
    for name, values in measured.samples.items():
        if not values:
            entries[name] = empty_entry(Status.ERROR, f"no samples kept: {measured.stop_reason}")
            continue
        median = float(np.median(values))
        lo, hi = measured.ci95[name]
        rel_ci = timing.relative_half_width((lo, hi), values)
        entries[name].update(
            samples_ms=values,
            median_ms=median,
            ci95_ms=[lo, hi],
            rel_ci=rel_ci,
            target_met=rel_ci <= settings.target_rel_ci,
            calls_per_sample=measured.samplers[name].calls_per_sample,
            tflops=work / (median * 1e-3) / 1e12,
        )
        log(f"  {name}: median {median:.4f} ms ±{rel_ci:.2%} over {len(values)} rounds")
    log(f"  stopped: {measured.stop_reason}")


TIMED_SETS = 2  # the first and the second input set take turns in the timed rounds
Q_SCALES = (0.9, 1.0)  # each timed unit's q is its set's times a factor drawn from this range
_RANDOM = random.SystemRandom()  # the factors: from the OS, not from a seed a kernel could read


def check_sets(
    shape: Shape, dtype: Any, device: str, seed: int, run_seed: int, backward: bool
) -> tuple[list[InputSet], str | None]:
    """The input sets every candidate is checked on: the first from the lock's seed (reproducible),
    a second drawn for this run (the timed rounds alternate the two), and a hard one (scores near
    the softmax's overflow, nearly one-hot rows, all-equal scores, a row that sees no key where the
    mask allows one; never timed). Where the device has no memory for the later sets, fewer, and why."""
    made = []
    for label, maker, drawn in (
        ("first", make_inputs, seed),
        ("second", make_inputs, run_seed),
        ("hard", hard_inputs, run_seed + 1),
    ):
        try:
            values = maker(shape, dtype, device, drawn, backward)
            sealed = sealed_answers(shape, values, backward)
        except Exception as exc:
            if not made or not memory.is_out_of_memory(exc):
                raise
            memory.release(device)
            return made, f"no memory for the {label} input set and after: {memory.oom_reason(exc)}"
        made.append(InputSet(label, values, sealed))
    return made, None


class Rotation:
    """New input values for every timed unit, written untimed into the candidate's own tensors before
    it: the timed sets in turn, q scaled by a factor drawn for each unit, so no two units meet the
    same values (a cache keyed on the values, or kept from an earlier run, never answers a timed
    call). Off outside sampling (the audit writes values of its own)."""

    def __init__(self, inputs: Inputs, owned: dict[str, tuple[tuple[Any, ...], str]]) -> None:
        self.inputs = inputs
        self.owned = owned
        self.written = {name: (0, 1.0) for name in owned}
        self.sets = min(TIMED_SETS, len(inputs.sets))
        self.active = False

    def next(self, name: str) -> None:
        if self.active:
            own, key = self.owned[name]
            index = (self.written[name][0] + 1) % self.sets
            self.written[name] = (index, Q_SCALES[0] + _RANDOM.random() * (Q_SCALES[1] - Q_SCALES[0]))
            self.inputs.write(own, key, *self.written[name])

    def changed(self, name: str) -> list[str]:
        own, key = self.owned[name]
        return self.inputs.changed(own, key, *self.written[name])


def key_of(entry: dict[str, Any], workload: Workload) -> str:
    return inputs_key(entry.get("layout", DEFAULT_LAYOUT), workload)


def inputs_key(layout: str, workload: Workload) -> str:
    """Where a candidate's inputs are kept: by layout, and apart when some are fp8 (a bhsd candidate
    then gets fp8 copies, not the run dtype's inputs)."""
    return f"{layout}+fp8" if workload.kv_dtype or workload.q_dtype else layout


def audit_failed(entries: dict[str, dict[str, Any]], name: str, exc: BaseException, device: str) -> None:
    """A check after sampling raised: the candidate keeps its samples (status and reason say the
    timed work could not be verified), and a sticky CUDA error is its own."""
    failed = failure_entry(name, device, exc, [], culprit=name)
    memory.release(device)
    entries[name].update(
        status=failed["status"],
        reason=f"after sampling, the audit failed: {failed['reason']}",
        **{key: failed[key] for key in ("traceback", "reason_detail") if key in failed},
    )
    log(f"  {name}: {entries[name]['status']}: {entries[name]['reason']}")
