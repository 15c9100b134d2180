"""The environment lock: numerics and seeds fixed so that results are comparable run to run.

Variables that CUDA or Python read at start-up (CUBLAS_WORKSPACE_CONFIG, PYTHONHASHSEED) cannot be
set from inside a running process; `job_env` gives them to the rule, which puts them in the job's
environment. `apply` sets the rest inside the process and `state` reports what is in force.
"""

from __future__ import annotations

import os
import random
from typing import Any

DEFAULT_LOCK: dict[str, Any] = {
    "tf32": False,
    "float32_matmul_precision": "highest",
    "deterministic": False,
    "seed": 0,
}

# Read by the CUDA runtime or the interpreter before any of our code runs.
STARTUP_VARIABLES = ("CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")


def resolve(lock: dict[str, Any] | None) -> dict[str, Any]:
    return {**DEFAULT_LOCK, **(lock or {})}


def job_env(lock: dict[str, Any] | None) -> dict[str, str]:
    """Environment variables the rule must set before the job's process starts."""
    settings = resolve(lock)
    env = {"PYTHONHASHSEED": str(settings["seed"])}
    if settings["deterministic"]:
        # cuBLAS refuses deterministic mode without a fixed workspace configuration.
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    return env


def apply(lock: dict[str, Any] | None) -> dict[str, Any]:
    """Apply the in-process part of the lock and return the settings in force."""
    import numpy as np
    import torch

    settings = resolve(lock)
    torch.backends.cuda.matmul.allow_tf32 = bool(settings["tf32"])
    torch.backends.cudnn.allow_tf32 = bool(settings["tf32"])
    torch.set_float32_matmul_precision(settings["float32_matmul_precision"])
    torch.use_deterministic_algorithms(bool(settings["deterministic"]), warn_only=False)
    seed = int(settings["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    missing = {k: v for k, v in job_env(settings).items() if os.environ.get(k) != v}
    if missing:
        raise RuntimeError(
            "the environment lock needs these variables set before the process starts "
            f"(the workflow's rules do this): {missing}"
        )
    return state(settings)


def state(requested: dict[str, Any] | None = None) -> dict[str, Any]:
    """What is in force now, read back from torch, plus the start-up variables as seen."""
    import torch

    return {
        "requested": resolve(requested),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "seed": resolve(requested)["seed"],
        "env": {name: os.environ.get(name) for name in STARTUP_VARIABLES},
    }
