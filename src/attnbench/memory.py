"""Memory: what each candidate's call allocates for itself, how that grows across a sweep, device
totals, and out-of-memory handling.

Why apart from the inputs: a peak counted from zero is mostly the inputs and whatever else the job
holds (on an H200, 2.3 GB for flash, cuDNN and a Triton kernel alike, 1 GB of it the float64
reference), so what a kernel allocates for itself could not be read. A call's footprint is measured
from what was allocated just before it: its workspace (the peak above that, its output excluded),
its output, the allocations it made, and the cached memory it made the allocator reserve.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnbench.documents import ShapeResult
from attnbench.host import held_stderr
from attnbench.results import Status

MB = 2**20
OOM_RISK_FRACTION = 0.85
# The CPU allocator keeps no counters; torch.profiler's memory events see its allocations.
CPU_SOURCE = "torch.profiler memory events (CPU allocator)"
CUDA_SOURCE = "CUDA caching allocator counters (torch.cuda.memory_stats)"
# Workspace below this is noise for the growth fit (a kernel that allocates nothing but its output).
FIT_FLOOR_MB = 1 / 1024
# A growth exponent above this reads as a materialised seq x seq matrix (2), below as streaming (1).
QUADRATIC_ABOVE = 1.5


def device_memory(device: str) -> dict[str, float | None]:
    if device != "cuda":
        return {"device_total_mb": None, "device_free_mb": None}
    import torch

    free, total = torch.cuda.mem_get_info()
    return {"device_total_mb": total / MB, "device_free_mb": free / MB}


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's refusal (a RuntimeError of its own)."""
    import torch

    text = str(exc).lower()
    return (
        isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text
    )


def oom_reason(exc: BaseException) -> str:
    """Keep the size that failed at the front of the reason: CUDA says 'Tried to allocate 20.00 GiB',
    the CPU allocator 'you tried to allocate 281474976710656 bytes'."""
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    size = re.search(r"Tried to allocate [0-9.]+ [KMGT]i?B", text)
    if size is None and (cpu := re.search(r"tried to allocate (\d+) bytes", text)):
        first = first[first.find("DefaultCPUAllocator") :] if "DefaultCPUAllocator" in first else first
        return f"Tried to allocate {int(cpu.group(1)) / 2**30:.2f} GiB: {first}"
    return f"{size.group(0)}: {first}" if size and size.group(0) not in first else first


def release(device: str) -> None:
    """Give memory back after a failure so the next candidate starts from the same state."""
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()


@dataclass
class Phase:
    """One measured stretch of work: bytes above what was allocated before it."""

    peak: int = 0  # highest allocated during it
    retained: int = 0  # still allocated after it (its outputs, saved activations)
    allocations: int = 0  # allocation requests made during it
    reserved_growth: int | None = None  # growth of the allocator's reserved memory (CUDA only)
    absolute_peak: int | None = None  # CUDA: highest allocated, everything the process holds included
    absolute_reserved: int | None = None  # CUDA: highest reserved


@contextlib.contextmanager
def _cuda_phase() -> Iterator[Phase]:
    import torch

    torch.cuda.synchronize()
    before, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    count = torch.cuda.memory_stats().get("allocation.all.allocated", 0)
    torch.cuda.reset_peak_memory_stats()
    phase = Phase()
    yield phase
    torch.cuda.synchronize()
    phase.peak = torch.cuda.max_memory_allocated() - before
    phase.retained = torch.cuda.memory_allocated() - before
    phase.allocations = torch.cuda.memory_stats().get("allocation.all.allocated", 0) - count
    phase.reserved_growth = torch.cuda.max_memory_reserved() - reserved
    phase.absolute_peak, phase.absolute_reserved = (
        torch.cuda.max_memory_allocated(),
        torch.cuda.max_memory_reserved(),
    )


@contextlib.contextmanager
def _cpu_phase() -> Iterator[Phase]:
    from torch.profiler import ProfilerActivity, profile

    phase = Phase()
    with held_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        yield phase
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    running = 0
    for _, nbytes in events:
        running += nbytes
        phase.peak = max(phase.peak, running)
        phase.allocations += nbytes > 0
    phase.retained = running


def _phase(device: str) -> contextlib.AbstractContextManager[Phase]:
    return _cuda_phase() if device == "cuda" else _cpu_phase()


def tensor_bytes(tensors: Any) -> int:
    """Bytes of the distinct storages behind `tensors` (a view of another output counts once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def tensors(result: Any) -> list[Any]:
    """The tensors among a call's outputs (one tensor, or a tuple of output and gradients)."""
    items = result if isinstance(result, (tuple, list)) else [result]
    return [item for item in items if hasattr(item, "untyped_storage")]


def _mb(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / MB


def footprint(kernel: Any, inputs: tuple[Any, ...], backward: bool, device: str) -> dict[str, Any]:
    """What one call of `kernel` allocates for itself, measured from what was allocated just before it:
    the forward's workspace (its peak above that, its output excluded), output and allocations; with
    `backward`, the activations the forward saved for it and the backward's own workspace (its
    gradients excluded). `projected_mb` adds the inputs: the memory the workload needs on its own."""
    import torch

    q, k, v, dout = inputs
    inputs_bytes = tensor_bytes([q, k, v, *([dout] if backward else [])])
    # In the grad mode the timed call runs in: a compiled kernel guards on it, so another mode would
    # compile it again (seconds a shape for FlexAttention) and measure another compilation.
    with _phase(device) as forward:
        out = kernel(q, k, v)
    out_bytes = tensor_bytes(tensors(out))
    record: dict[str, Any] = {
        "source": CUDA_SOURCE if device == "cuda" else CPU_SOURCE,
        "inputs_mb": _mb(inputs_bytes),
        "output_mb": _mb(out_bytes),
        "workspace_mb": _mb(max(forward.peak - out_bytes, 0)),
        "allocations": forward.allocations,
        "reserved_growth_mb": _mb(forward.reserved_growth),
        "saved_mb": None,
        "backward": None,
    }
    projected = inputs_bytes + forward.peak
    phases = [forward]
    if backward:
        saved = max(forward.retained - out_bytes, 0)
        with _phase(device) as backward_phase:
            grads = torch.autograd.grad(out, (q, k, v), dout)
        grads_bytes = tensor_bytes(grads)
        record["saved_mb"] = _mb(saved)
        record["backward"] = {
            "workspace_mb": _mb(max(backward_phase.peak - grads_bytes, 0)),
            "gradients_mb": _mb(grads_bytes),
            "allocations": backward_phase.allocations,
            "reserved_growth_mb": _mb(backward_phase.reserved_growth),
        }
        projected = inputs_bytes + max(forward.peak, forward.retained + backward_phase.peak)
        phases.append(backward_phase)
        del grads
    del out
    record["projected_mb"] = _mb(projected)
    # As before the footprint existed: the peak counted from zero (the inputs and all the job holds).
    peaks = [p.absolute_peak for p in phases if p.absolute_peak is not None]
    reserved = [p.absolute_reserved for p in phases if p.absolute_reserved is not None]
    record["peak_mem_mb"] = _mb(max(peaks)) if peaks else None
    record["peak_reserved_mb"] = _mb(max(reserved)) if reserved else None
    return record


def oom_risk(projected_mb: float | None, total_mb: float | None, free_mb: float | None) -> bool | None:
    """The workload (inputs and the call's own peak) above 85% of the device, or above what was free
    when the shape started; None without the device's numbers (the CPU)."""
    if projected_mb is None or total_mb is None:
        return None
    limit = OOM_RISK_FRACTION * total_mb
    return projected_mb > (limit if free_mb is None else min(limit, free_mb))


def growth(benches: list[ShapeResult]) -> dict[str, dict[str, Any]]:
    """Per candidate, how its forward workspace grows with the sequence length across the run's
    shapes: the slope of log(workspace per (batch, head)) against log(seq), over the shapes where it
    ran ok (about 2: a materialised seq x seq score matrix; about 1 or less: streaming). Per (batch,
    head) because a sweep at fixed tokens per batch shrinks the batch as seq grows."""
    points: dict[str, list[tuple[float, float]]] = {}
    for bench in benches:
        shape = bench.shape
        for name, result in bench.candidates.items():
            workspace = result.footprint.get("workspace_mb")
            if result.status == Status.OK and workspace is not None and workspace >= FIT_FLOOR_MB:
                points.setdefault(name, []).append(
                    (shape["seq"], workspace / (shape["batch"] * shape["heads"]))
                )
    fits: dict[str, dict[str, Any]] = {}
    for name, found in points.items():
        seqs = sorted({seq for seq, _ in found})
        if len(seqs) < 2:
            fits[name] = {
                "exponent": None,
                "points": len(found),
                "reading": "fewer than two sequence lengths",
            }
            continue
        x, y = (np.log([p[i] for p in found]) for i in (0, 1))
        slope = float(np.polyfit(x, y, 1)[0])
        reading = (
            "materialises a seq x seq matrix" if slope > QUADRATIC_ABOVE else "streams (no seq x seq matrix)"
        )
        fits[name] = {"exponent": slope, "points": len(found), "reading": reading}
    return fits
