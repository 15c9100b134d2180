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
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from attnbench import (
    __version__,
    audit,
    candidates,
    clocks,
    files,
    host,
    isolation,
    lock,
    memory,
    timing,
)
from attnbench import (
    device as device_module,
)
from attnbench.env import device_summary
from attnbench.workloads import (
    Shape,
    Workload,
    check_output,
    flops,
    in_layout,
    inputs_in_layout,
    make_inputs,
    min_bytes,
    padded_length,
    reference,
    refill_inputs,
    refill_layout,
    takes_padded,
    tolerance_for,
)

log = logging.getLogger(__name__).info


def empty_entry(status: str, reason: str | None, **fields: Any) -> dict[str, Any]:
    return {
        "status": status,
        "reason": reason,
        "samples_ms": [],
        "median_ms": None,
        "ci95_ms": None,
        "tflops": None,
        "peak_mem_mb": None,
        "rel_error": None,
        "rel_ci": None,
        "target_met": None,
        "calls_per_sample": None,
        **fields,
    }


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


def prepare(
    name: str,
    workload: Workload,
    inputs_for: Callable[[str], tuple[Any, ...]],
    expected: list[Any],
    spec: dict[str, Any],
) -> tuple[dict[str, Any], Callable[[], Any] | None]:
    """Build, check and warm one candidate; its entry and, when it is fit to time, its call.

    The candidate gets q, k, v in the layout it declares (`inputs_for`), made before any timing, and
    its output is checked against the reference in that layout. A factory kernel's setup runs here,
    timed apart (setup_ms), like the first call's compilation (compile_ms)."""
    import torch

    backward = spec["mode"] == "forward_backward"
    dtype = getattr(torch, spec["dtype"])
    tolerance = spec.get("tolerance") or tolerance_for(spec["dtype"], workload.shape)
    timeout = timing.Settings.from_config(spec.get("timing")).call_timeout_s
    layout: dict[str, str] = {}
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            declared = candidates.declaration(name, workload)
            layout = {"layout": declared.layout}
            candidates.check_layout(name, declared.layout, replace(workload, layout=declared.layout))
            inputs = inputs_for(declared.layout)
            began = time.perf_counter()
            with timing.deadline(timeout):
                kernel = candidates.build(name, replace(workload, layout=declared.layout), inputs[:3])
                if workload.device == "cuda":
                    torch.cuda.synchronize()
            setup = {"setup_ms": (time.perf_counter() - began) * 1e3} if declared.factory else {}
            call = make_call(kernel, inputs, backward)
            began = time.perf_counter()
            # where each job's time goes (benchmarks/duty.py): making the candidate, a factory's setup apart
            spent_ms = {"build_ms": max((began - started) * 1e3 - setup.get("setup_ms", 0.0), 0.0)}
            with timing.deadline(timeout):
                result = call()
                if workload.device == "cuda":
                    torch.cuda.synchronize()
            first_call_ms = (time.perf_counter() - began) * 1e3
            began = time.perf_counter()
            wanted = in_layout(expected, declared.layout, workload)
            error, mismatch = check_output(result, wanted, backward, dtype)
            spent_ms["verify_ms"] = (time.perf_counter() - began) * 1e3
            # the first call's time is kept whatever the answer: it is time the job spent (benchmarks/duty.py)
            spent = {"compile_ms": first_call_ms, **setup, **spent_ms, **layout}
            if mismatch:
                return empty_entry("incorrect", mismatch, tolerance=tolerance, **spent), None
            if not error <= tolerance:
                why = (
                    "output contains NaN or Inf"
                    if math.isinf(error)
                    else f"relative error {error:.3g} exceeds the {spec['dtype']} tolerance {tolerance:g}"
                )
                return empty_entry("incorrect", why, rel_error=error, tolerance=tolerance, **spent), None
            # A copy: a kernel may hand back the same buffer every call.
            first = [t.detach().clone() for t in audit.tensors(result)]
            del result
            with timing.deadline(timeout):
                repeat = audit.determinism(first, call())
                del first
                footprint = memory.footprint(kernel, inputs, backward, workload.device)
            spent_ms["verify_ms"] = (time.perf_counter() - began) * 1e3
        except Exception as exc:
            # with the layout it was offered: the report says what a decline was given
            failed = {
                **failure_entry(name, workload.device, exc, [str(w.message) for w in seen], culprit=name),
                **layout,
            }
            # A built-in's decline leaves nothing to collect (0.3 s a time on the H200); a user kernel's
            # may come from code that allocated before it declined.
            if failed["status"] != "unsupported" or candidates.is_user_kernel(name):
                memory.release(workload.device)
            return failed, None
    entry = empty_entry(
        "ok",
        None,
        rel_error=error,
        tolerance=tolerance,
        compile_ms=first_call_ms,
        deterministic=repeat,
        **setup,
        **spent_ms,
        **layout,
    )
    entry.update(
        peak_mem_mb=footprint.pop("peak_mem_mb"),
        peak_reserved_mb=footprint.pop("peak_reserved_mb"),
        footprint=footprint,
    )
    return entry, call


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
        return empty_entry("timeout", str(exc))
    if memory.is_out_of_memory(exc):
        return empty_entry("oom", memory.oom_reason(exc))
    declined = candidates.unsupported_reason(name, device, exc, warnings_seen)
    if declined is not None:
        reason, detail = declined
        return empty_entry("unsupported", reason, reason_detail=detail)
    trace = "".join(traceback.format_exception(exc)).rstrip()
    log(f"  {name}: {trace}")
    return empty_entry("error", describe(exc), traceback=trace)


def run_shape(spec: dict[str, Any], running: Callable[[str | None], None] | None = None) -> dict[str, Any]:
    """Measure every candidate of spec["shape"]; the returned document matches bench.schema.yaml.
    `running(name)` is told whose checks start, `running(None)` when they are all done."""
    try:
        return _measure_shape(spec, running or (lambda name: None))
    except isolation.ContextLost:
        raise
    except Exception as exc:
        # Outside any one candidate's call (a round's synchronisation, the audit): culprit unknown.
        if isolation.is_sticky(exc):
            raise isolation.ContextLost(describe(exc), None) from exc
        raise


def _measure_shape(spec: dict[str, Any], running: Callable[[str | None], None]) -> dict[str, Any]:
    import torch

    device = spec["device"]
    device_module.require(device)
    threads = host.use_threads(spec.get("threads"))
    load = host.LoadWatch.start(threads)
    # The measured ceilings bound every result (attnbench.audit); read first, so a missing file fails early.
    ceilings = files.read_json(spec["ceilings"]) if spec.get("ceilings") else None
    lock_state = lock.apply(spec.get("lock"))
    shape = Shape.from_config(spec["shape"])
    settings = timing.Settings.from_config(spec.get("timing"))
    direction = spec["mode"]  # the config's `mode`: forward, or forward and backward
    dtype = getattr(torch, spec["dtype"])
    log(f"{shape.name}: {shape.as_dict()} {spec['dtype']} {direction} on {device}, {threads} CPU threads")

    seed = int(lock_state["seed"])
    available = memory.device_memory(device)  # before this shape's inputs: what the workload may use
    began = time.perf_counter()
    inputs = make_inputs(shape, dtype, device, seed, direction == "forward_backward")
    expected = reference(shape, *inputs[:3], inputs[3] if direction == "forward_backward" else None)
    if device == "cuda":
        torch.cuda.synchronize()
    reference_s = time.perf_counter() - began
    # The inputs in each layout a candidate declares, made once, before any timing: the same values.
    # With an fp8 cache or fp8 queries, a candidate gets those inputs in fp8 (SDPA declines them).
    layouts = {"bhsd": inputs}

    def inputs_for(layout: str) -> tuple[Any, ...]:
        key = inputs_key(layout, workload)
        if key not in layouts:
            layouts[key] = inputs_in_layout(inputs, layout, workload)
        return layouts[key]

    workload = Workload.of(shape, spec["dtype"], device, mode=direction)
    entries: dict[str, dict[str, Any]] = {}
    calls: dict[str, Callable[[], Any]] = {}
    for name in spec["candidates"]:
        running(name)
        entries[name], call = prepare(name, workload, inputs_for, expected, spec)
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
    # a check fails; a copy kept on the host for it cost every shape 0.2 s on an H200 (docs/scale.md).
    del expected

    def on_failure(name: str, exc: BaseException) -> None:
        entries[name] = failure_entry(name, device, exc, [])
        memory.release(device)
        log(f"  {name}: {entries[name]['status']} while timing: {entries[name]['reason']}")

    flush = timing.L2Flusher(device, settings.mode in ("auto", "cold"))
    with clocks.watch(device) as watch:
        measured = timing.measure(
            calls, device=device, settings=settings, flush=flush, watch=watch, on_failure=on_failure
        )
    log(f"  timing: {measured.mode} ({measured.mode_reason}); warm-up {measured.warmup['reason']}")
    work = flops(shape, direction)
    nbytes = min_bytes(shape, dtype.itemsize, direction)
    for name, values in measured.samples.items():
        if not values:
            entries[name] = empty_entry("error", f"no samples kept: {measured.stop_reason}")
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
    limit = audit.bound(ceilings, spec["dtype"], work, nbytes, cold=measured.mode == "cold")
    began = time.perf_counter()
    audit_timed_work(entries, calls, measured, layouts, limit, workload=workload, spec=spec, seed=seed)
    audit_s = time.perf_counter() - began
    log(f"  audit: {audit_s:.2f} s")
    conditions = load.record()
    if conditions["busy"]:
        log(f"  busy host: {conditions['why']}")

    return {
        "attnbench_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "shape": shape.as_dict(),
        "device": device,
        "device_info": device_summary(device),
        "dtype": spec["dtype"],
        "mode": direction,
        "timing": measured.record(settings, device),
        "lock": lock_state,
        "kernel_hashes": spec.get("kernel_hashes", {}),
        "flops": work,
        "min_bytes": nbytes,
        # per head: the pairs the mask lets through (what flops counts) and all seq x seq_kv of them
        # (what a dense attn_mask or padding computes anyway)
        "pairs": {
            "attended": shape.attended_pairs(),
            "dense": shape.batch * shape.seq * shape.seq_kv,
            "sdpa_dense_mask": candidates.sdpa_needs_dense_mask(shape),
            # a decode batch padded to its longest cache, as SDPA gets it (workloads.PADDED; flex skips the padding)
            **({"padded": shape.seq * padded_length(workload)} if takes_padded(shape) else {}),
        },
        "bound": limit,
        "audit_s": audit_s,
        "stages": {"reference_s": reference_s},  # the inputs and the float64 reference (benchmarks/duty.py)
        "memory": memory.device_memory(device),
        "host": conditions,
        "candidates": entries,
    }


def audit_timed_work(
    entries: dict[str, dict[str, Any]],
    calls: dict[str, Callable[[], Any]],
    measured: timing.Measurement,
    layouts: dict[str, tuple[Any, ...]],
    limit: dict[str, Any] | None,
    *,
    workload: Workload,
    spec: dict[str, Any],
    seed: int,
) -> None:
    """After sampling: what each timed candidate ran, whether its timing was earned, and whether
    the timed unit still computes its answer once the inputs change (attnbench.audit). `layouts`
    holds the inputs in each layout the candidates declared (bhsd first), all refilled together."""
    import torch

    device = spec["device"]
    backward = spec["mode"] == "forward_backward"
    timeout = timing.Settings.from_config(spec.get("timing")).call_timeout_s
    timed = [name for name in measured.samples if entries[name]["status"] == "ok"]
    last: dict[str, Any] = {}
    for name in timed:
        entry = entries[name]
        sampler = measured.samplers[name]
        try:
            with timing.deadline(timeout):
                ran = audit.profile(calls[name], device)
                last[name] = sampler.check_call()
                if device == "cuda":
                    torch.cuda.synchronize()  # an error here is this candidate's own
        except Exception as exc:
            audit_failed(entries, name, exc, device)
            continue
        median = entry["median_ms"]
        entry["ran"] = ran | {"device_share": None if ran["device_ms"] is None else ran["device_ms"] / median}
        if limit is not None:
            entry["fraction_of_bound"] = limit["bound_ms"] / median
        flags = audit.judge(median, ran, limit)
        if flags:
            entry.update(status="untrusted", reason="; ".join(flags))
            log(f"  {name}: untrusted: {entry['reason']}")
    if not last:
        return
    inputs = layouts["bhsd"]
    try:
        refill_inputs(inputs, seed + 1, workload.shape)
        for key, tensors in layouts.items():
            refill_layout(tensors, inputs, key.split("+")[0], workload)
        fresh = reference(workload.shape, *inputs[:3], inputs[3] if backward else None)
    except Exception as exc:  # out of memory beside the candidates' outputs and graph pools
        for name in last:
            audit_failed(entries, name, exc, device)
        return
    dtype = getattr(torch, spec["dtype"])

    @functools.cache
    def first_answers() -> list[Any]:
        """The float64 answers to the inputs the candidates were timed on, from their seed; on the
        host, so the candidates checked after this one have the device memory they had."""
        first = make_inputs(workload.shape, dtype, device, seed, backward)
        return [t.cpu() for t in reference(workload.shape, *first[:3], first[3] if backward else None)]

    for name, previous in last.items():
        sampler = measured.samplers[name]
        try:
            layout = entries[name].get("layout", "bhsd")
            with timing.deadline(timeout):  # the candidate's call; the checks after it are not its time
                audit.poison(previous, layouts[inputs_key(layout, workload)])
                result = sampler.check_call()
                if device == "cuda":
                    torch.cuda.synchronize()
            why = audit.verify(
                result,
                in_layout(fresh, layout, workload),
                lambda layout=layout: in_layout(first_answers(), layout, workload),
                backward=backward,
                dtype=dtype,
                tolerance=entries[name]["tolerance"],
                graph=sampler.outputs is not None,
            )
        except Exception as exc:
            audit_failed(entries, name, exc, device)
            continue
        if why:
            flagged = entries[name]["reason"] if entries[name]["status"] == "untrusted" else None
            entries[name].update(status="incorrect", reason=f"{why}; also {flagged}" if flagged else why)
            log(f"  {name}: incorrect: {why}")


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
