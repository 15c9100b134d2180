"""Measured device ceilings: what this device really does on dense matmul and on a plain copy.

Attention results are stated as fractions of these measured numbers rather than of datasheet peaks,
with the same timing code that measures the candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnbench import clocks, lock, timing
from attnbench.bench import log, require_device
from attnbench.env import device_summary

DEFAULT_CALIBRATION = {
    "cuda": {"matmul_size": 8192, "copy_mb": 2048, "rounds": 20},
    "cpu": {"matmul_size": 1024, "copy_mb": 256, "rounds": 10},
}


def measure_ceilings(
    device: str, dtypes: list[str], settings: dict[str, Any] | None, lock_settings: dict[str, Any] | None
) -> dict[str, Any]:
    import torch

    require_device(device)
    lock_state = lock.apply(lock_settings)
    config = {**DEFAULT_CALIBRATION[device], **(settings or {})}
    n = int(config["matmul_size"])
    copy_bytes = int(config["copy_mb"]) * 2**20
    gen = torch.Generator(device=device).manual_seed(int(lock_state["seed"]))
    calls = {}
    for name in dtypes:
        dtype = getattr(torch, name)
        a, b = (torch.randn(n, n, generator=gen, device=device).to(dtype) for _ in range(2))
        calls[f"matmul_{name}"] = lambda a=a, b=b: a @ b
    src = torch.randn(copy_bytes // 4, generator=gen, device=device)
    dst = torch.empty_like(src)
    calls["copy"] = lambda: dst.copy_(src)
    failures: dict[str, str] = {}
    # Warm (no flush): the operands are far larger than the L2 anyway, and the ceilings are rates.
    settings = timing.Settings(mode="warm", min_rounds=int(config["rounds"]), max_time_s=20.0)
    with clocks.watch(device) as watch:
        measured = timing.measure(
            calls,
            device=device,
            settings=settings,
            flush=timing.L2Flusher(device, enabled=False),
            watch=watch,
            on_failure=lambda name, exc: failures.__setitem__(name, f"{type(exc).__name__}: {exc}"),
        )
    if failures:
        raise RuntimeError(f"calibration failed: {failures}")
    samples = measured.samples
    method = f"median of {measured.rounds_run} interleaved rounds on {device} ({measured.stop_reason}), " + (
        "CUDA events, L2 not flushed" if device == "cuda" else "perf_counter_ns"
    )
    matmul = {}
    for name in dtypes:
        median = float(np.median(samples[f"matmul_{name}"]))
        matmul[name] = {
            "tflops": 2 * n**3 / (median * 1e-3) / 1e12,
            "size": n,
            "median_ms": median,
            "method": f"{n}x{n}x{n} torch.matmul, {method}",
        }
        log(f"matmul {name}: {matmul[name]['tflops']:.1f} TFLOP/s")
    median = float(np.median(samples["copy"]))
    copy = {
        "gbytes_per_s": 2 * copy_bytes / (median * 1e-3) / 1e9,
        "bytes": copy_bytes,
        "median_ms": median,
        "method": f"device-to-device copy of {copy_bytes} bytes, bytes read + written, {method}",
    }
    log(f"copy: {copy['gbytes_per_s']:.1f} GB/s")
    identity = device_summary(device)
    return {
        "device": device,
        "device_name": identity["name"],
        "device_info": identity,
        "lock": lock_state,
        "matmul": matmul,
        "copy": copy,
    }
