"""Measured device ceilings: what this device really does on dense matmul, a copy, a read and a write.

Attention results are stated as fractions of these measured numbers rather than of datasheet peaks,
with the same timing code that measures the candidates; the matmul and read ceilings also bound
every result (attnbench.audit: a roofline). A copy (read + write) is not the ceiling of a kernel
that mostly reads, so read bandwidth is measured on its own: a sum over a buffer many times the L2.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np

from attnbench import SCHEMA_VERSION, clocks, env, files, host, lock, timing
from attnbench import device as device_module
from attnbench.env import device_summary
from attnbench.settings import TimingSettings

log = logging.getLogger(__name__).info

# The CPU's time bounds: a shared CPU seldom meets the 1% CI target, and without them calibrate took
# half of a one-minute `attnbench run` (docs/scale.md); each ceiling still gets its CI.
DEFAULT_CALIBRATION = {
    "cuda": {"matmul_size": 8192, "copy_mb": 2048, "rounds": 20, "max_time_s": 20.0, "warmup_max_s": 5.0},
    "cpu": {"matmul_size": 1024, "copy_mb": 256, "rounds": 10, "max_time_s": 5.0, "warmup_max_s": 1.0},
}


REMEMBERED = files.Memo(files.cache_dir() / "ceilings")
"""Ceilings measured on this machine, by what they depend on (reuse_key)."""
REUSE_MAX_AGE = dt.timedelta(days=7)
"""Older ceilings are measured again: a disturbance no check saw (another job on the GPU, clocks
locked for a while) stays at most this long."""


def ceilings(spec: dict[str, Any]) -> dict[str, Any]:
    """The calibrate job: the ceilings measured earlier on this device with the same driver, software,
    attnbench and settings, within REUSE_MAX_AGE (seconds of every sweep, paid again by every new working
    directory: docs/scale.md), else measured now and remembered unless other processes
    kept the CPU busy meanwhile. `reuse: false` in the spec measures again whatever was remembered."""
    key = reuse_key(spec)
    if spec.get("reuse") is not False and (earlier := _recall(key)) is not None:
        where = str(REMEMBERED.path(key))
        log(
            f"ceilings measured {earlier['measured_at']} on this device with the same driver, software"
            f" and settings: reused ({where}); calibrate: {{reuse: false}} measures again"
        )
        return earlier | {"reused": {"from": where, "measured_at": earlier["measured_at"]}}
    measured = measure_ceilings(
        spec["device"], spec["dtypes"], spec["settings"], spec["lock"], spec.get("threads")
    )
    measured["measured_at"] = _now().isoformat(timespec="seconds")
    if measured["host"]["busy"]:
        log(f"ceilings not remembered for later runs: {measured['host']['why']}")
    else:
        REMEMBERED.remember(key, files.jsonable(measured))
    return measured


def reuse_key(spec: dict[str, Any]) -> dict[str, Any]:
    """What a calibration depends on: its settings, the device, driver and software as the fingerprint
    reads them (attnbench.env.identity), attnbench's source and the result files' schema version."""
    return {
        "spec": {key: value for key, value in spec.items() if key != "reuse"},
        "machine": env.identity(spec["device"]),
        "attnbench": files.source_digest(),
        "schema": SCHEMA_VERSION,
    }


def _recall(key: dict[str, Any]) -> dict[str, Any] | None:
    """The ceilings remembered under `key`, when whole and younger than REUSE_MAX_AGE."""
    earlier = REMEMBERED.recall(key)
    try:
        measured_at = dt.datetime.fromisoformat(earlier["measured_at"])
        whole = isinstance(earlier.get("matmul"), dict) and isinstance(earlier.get("copy"), dict)
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    return earlier if whole and _now() - measured_at <= REUSE_MAX_AGE else None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def measure_ceilings(
    device: str,
    dtypes: list[str],
    settings: dict[str, Any] | None,
    lock_settings: dict[str, Any] | None,
    threads: int | None = None,
) -> dict[str, Any]:
    """The ceilings, with torch's CPU threads as the benchmark jobs set them (attnbench.host): on the
    CPU a matmul ceiling taken with one thread would not bound a result taken with eight."""
    import torch

    device_module.require(device)
    threads = host.use_threads(threads)
    load = host.LoadWatch.start(threads)
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
    sink = torch.empty((), device=device)
    calls["copy"] = lambda: dst.copy_(src)
    calls["read"] = lambda: torch.sum(src, dim=0, out=sink)
    calls["write"] = lambda: dst.fill_(1.0)
    failures: dict[str, str] = {}
    # Warm (no flush): the operands are far larger than the L2 anyway, and the ceilings are rates.
    settings = TimingSettings(
        mode="warm",
        min_rounds=int(config["rounds"]),
        max_time_s=float(config["max_time_s"]),
        warmup_max_s=float(config["warmup_max_s"]),
    )
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

    def ceiling(name: str, work: float, unit: str, what: str) -> dict[str, Any]:
        median = float(np.median(samples[name]))
        return {
            unit: work / (median * 1e-3) / (1e12 if unit == "tflops" else 1e9),
            "median_ms": median,
            # A rate's CI has the median's relative width: the bound widens its margin by it.
            "rel_ci": timing.relative_half_width(measured.ci95[name], samples[name]),
            "method": f"{what}, {method}",
        }

    matmul = {
        name: {"size": n, **ceiling(f"matmul_{name}", 2 * n**3, "tflops", f"{n}x{n}x{n} torch.matmul")}
        for name in dtypes
    }
    for name in dtypes:
        log(f"matmul {name}: {matmul[name]['tflops']:.1f} TFLOP/s")
    moved = {
        "copy": (2 * copy_bytes, f"device-to-device copy of {copy_bytes} bytes, bytes read + written"),
        "read": (copy_bytes, f"torch.sum over {copy_bytes} bytes, bytes read"),
        "write": (copy_bytes, f"fill of {copy_bytes} bytes, bytes written"),
    }
    bandwidth = {
        name: {"bytes": copy_bytes, **ceiling(name, work, "gbytes_per_s", what)}
        for name, (work, what) in moved.items()
    }
    log(", ".join(f"{name}: {b['gbytes_per_s']:.1f} GB/s" for name, b in bandwidth.items()))
    identity = device_summary(device)
    return {
        "device": device,
        "device_name": identity["name"],
        "device_info": identity,
        "lock": lock_state,
        "matmul": matmul,
        **bandwidth,
        "cache_bytes": _cache_bytes(device),
        "threads": threads,
        "host": load.record(),
    }


def _cache_bytes(device: str) -> int | None:
    """The GPU's L2: inputs smaller than it may stay cached between warm or graph-replayed calls.
    None on the CPU, whose caches the memory bound is then never applied against."""
    if device != "cuda":
        return None
    import torch

    return int(torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size)
