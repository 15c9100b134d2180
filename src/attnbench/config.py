"""The run's configuration as the workflow sees it: device resolved, CPU fallback applied, one spec per job.

Runs in the Snakemake process at parse time, so it must stay cheap: torch is imported only when an
NVIDIA driver is present and the device is 'auto' or 'cuda'.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from attnbench import candidates, lock
from attnbench.workloads import Shape

# Keys that the `cpu:` section may override when the run falls back to the CPU.
CPU_OVERRIDABLE = ("dtype", "mode", "candidates", "reference", "shapes", "timing", "calibrate")


class ConfigError(ValueError):
    """The config cannot be run; the message names the field and the value."""


def nvidia_gpu_present() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, no library: no GPU
        return False


def cuda_unusable_reason() -> str | None:
    """Why torch cannot use a GPU here (None when it can); torch is imported only with a driver."""
    if not nvidia_gpu_present():
        return "no NVIDIA GPU or driver is visible (NVML found none)"
    from attnbench.env import no_cuda_reason

    return no_cuda_reason()


def resolve_device(requested: str) -> str:
    """auto takes CUDA when torch can use it, else the CPU; cuda and cpu are taken as asked."""
    if requested != "auto":
        return requested
    if not nvidia_gpu_present():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def effective(config: dict[str, Any]) -> dict[str, Any]:
    """The config this run uses: on the CPU the `cpu:` section replaces the keys it names.

    `device: cuda` on a machine where torch cannot use a GPU fails here, at parse time, before any job.
    """
    device = resolve_device(config.get("device", "auto"))
    if device == "cuda" and config.get("device") == "cuda" and (reason := cuda_unusable_reason()):
        raise ConfigError(f"device: 'cuda', but {reason}; use device: auto (falls back to the CPU) or cpu")
    run = {key: value for key, value in config.items() if key != "cpu"}
    if device == "cpu":
        run.update({k: v for k, v in (config.get("cpu") or {}).items() if k in CPU_OVERRIDABLE})
    run["device"] = device
    run["requested_device"] = config.get("device", "auto")
    check(run)
    # Built once per parse, not once per job: a sweep can have thousands of jobs.
    run["shapes_by_name"] = {shape["name"]: shape for shape in run["shapes"]}
    # Hashed once per parse, not once per job: a sweep can have a thousand jobs.
    run["kernel_hashes"] = {
        c: candidates.user_kernel_source_hash(c) for c in run["candidates"] if candidates.is_user_kernel(c)
    }
    return run


def check(run: dict[str, Any]) -> None:
    names = [shape["name"] for shape in run["shapes"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"shapes: duplicate shape names {duplicates}")
    if run["reference"] not in run["candidates"]:
        raise ConfigError(f"reference: {run['reference']!r} is not one of candidates {run['candidates']}")
    for name in run["candidates"]:
        if name not in candidates.BUILTIN and not candidates.is_user_kernel(name):
            raise ConfigError(
                f"candidates: unknown candidate {name!r}: use {list(candidates.BUILTIN)} or module:function"
            )
    for shape in run["shapes"]:
        heads, kv_heads = shape["heads"], shape.get("kv_heads") or shape["heads"]
        if heads % kv_heads:
            raise ConfigError(
                f"shapes: {shape['name']}: heads {heads} is not a multiple of kv_heads {kv_heads}"
            )


def shape_names(run: dict[str, Any]) -> list[str]:
    return [shape["name"] for shape in run["shapes"]]


def benchmark_spec(run: dict[str, Any], name: str, ceilings: str) -> str:
    """Everything that determines one shape's result; it is the rule's params, so a change reruns it.
    `ceilings` is the calibrate job's output, which bounds every result."""
    shape = run["shapes_by_name"][name]
    spec = {
        "shape": Shape.from_config(shape).as_dict(),
        "device": run["device"],
        "dtype": run["dtype"],
        "mode": shape.get("mode", run.get("mode", "forward")),
        "candidates": run["candidates"],
        "timing": run.get("timing", {}),
        "lock": lock.resolve(run.get("lock")),
        "tolerance": (run.get("tolerance") or {}).get(run["dtype"]),
        "kernel_hashes": run["kernel_hashes"],
        "ceilings": ceilings,
    }
    if run.get("sanitize_crashes"):  # absent while off: the jobs' parameters stay those of earlier runs
        spec["sanitize_crashes"] = True
    return json.dumps(spec, sort_keys=True)


def fingerprint_spec(run: dict[str, Any]) -> str:
    return json.dumps(
        {
            "device": run["device"],
            "requested_device": run["requested_device"],
            "lock": lock.resolve(run.get("lock")),
        },
        sort_keys=True,
    )


def calibrate_spec(run: dict[str, Any]) -> str:
    settings = dict(run.get("calibrate") or {})
    dtypes = settings.pop("dtypes", None) or [run["dtype"]]
    return json.dumps(
        {
            "device": run["device"],
            "dtypes": dtypes,
            "settings": settings,
            "lock": lock.resolve(run.get("lock")),
        },
        sort_keys=True,
    )


def job_env(run: dict[str, Any]) -> str:
    """`env A=1 B=2` prefix: the lock's start-up variables, set before the job's Python starts."""
    variables = lock.job_env(run.get("lock"))
    return "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(variables.items()))
