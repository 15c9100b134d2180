"""The run's configuration as the workflow sees it: device resolved, CPU fallback applied, checked
(each job's spec is built from it in attnbench.jobs).

Runs in the Snakemake process at parse time, so it must stay cheap: torch is imported only when an
NVIDIA driver is present and the device is 'auto' or 'cuda' (attnbench.device).
"""

from __future__ import annotations

import copy
import shlex
from typing import Any

from attnbench import candidates, device, lock

# Keys that the `cpu:` section may override when the run falls back to the CPU.
CPU_OVERRIDABLE = ("dtype", "mode", "candidates", "reference", "shapes", "timing", "calibrate")
# The top-level defaults of workflow/schemas/config.schema.yaml (tests/test_defaults.py keeps them
# equal): Snakemake's validate fills only some of them (not those behind a $ref).
DEFAULTS: dict[str, Any] = {"device": "auto", "dtype": "bfloat16", "mode": "forward", "sanitize_crashes": False}


class ConfigError(ValueError):
    """The config cannot be run; the message names the field and the value."""


def effective(config: dict[str, Any]) -> dict[str, Any]:
    """The config this run uses, a new dict (Snakemake's `config` is left as it was): on the CPU the
    `cpu:` section replaces the keys it names.

    Both the GPU and the CPU view are checked whatever device runs, so a mistake in the section this
    machine does not run is found here too, not on the cluster. `device: cuda` on a machine where torch
    cannot use a GPU fails here, at parse time, before any job.
    """
    config = {**DEFAULTS, **copy.deepcopy(config)}
    gpu_view = {key: value for key, value in config.items() if key != "cpu"}
    cpu_view = gpu_view | {k: v for k, v in (config.get("cpu") or {}).items() if k in CPU_OVERRIDABLE}
    for view in (gpu_view, cpu_view) if config.get("cpu") else (gpu_view,):
        check(view)
    requested = config["device"]
    if requested == "cuda" and (reason := device.cuda_unusable_reason()):
        raise ConfigError(f"device: 'cuda', but {reason}; use device: auto (falls back to the CPU) or cpu")
    resolved = device.resolve(requested)
    run = cpu_view if resolved == "cpu" else gpu_view
    run |= {"device": resolved, "requested_device": requested}
    # Built once per parse, not once per job: a sweep can have thousands of jobs.
    run["shapes_by_name"] = {shape["name"]: shape for shape in run["shapes"]}
    run["kernel_hashes"] = {
        c: candidates.user_kernel_source_hash(c) for c in run["candidates"] if candidates.is_user_kernel(c)
    }
    return run


def check(run: dict[str, Any]) -> None:
    """What the schema cannot say: unique shape names, a reference among the candidates, known
    candidates, heads a multiple of kv_heads."""
    names = [shape["name"] for shape in run["shapes"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"shapes: duplicate shape names {duplicates}")
    if run["reference"] not in run["candidates"]:
        raise ConfigError(f"reference: {run['reference']!r} is not one of candidates {run['candidates']}")
    for name in run["candidates"]:
        if not candidates.known(name):
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


def job_env(run: dict[str, Any]) -> str:
    """`env A=1 B=2` prefix: the lock's start-up variables, set before the job's Python starts."""
    variables = lock.job_env(run.get("lock"))
    return "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(variables.items()))
