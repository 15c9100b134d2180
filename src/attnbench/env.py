"""The environment fingerprint: everything that can change a timing, recorded next to the timings.

A result is only comparable with another when both ran on the same GPU, driver, clocks, libraries
and lock; the fingerprint lets a reader check that instead of assuming it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from attnbench import device as device_module

PACKAGES = (
    "attnbench",
    "torch",
    "triton",
    "numpy",
    "scipy",
    "pandas",
    "matplotlib",
    "snakemake",
    "nvidia-ml-py",
    "jsonschema",
    "pyyaml",
)

ENV_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_LAUNCH_BLOCKING",
    "PYTORCH_CUDA_ALLOC_CONF",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_CUDNN_V8_API_DISABLED",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "PYTHONHASHSEED",
    "SLURM_JOB_ID",
    "TORCHINDUCTOR_CACHE_DIR",
)

def fingerprint(
    device: str,
    lock_state: dict[str, Any],
    *,
    workflow_dir: str | Path = ".",
    requested_device: str | None = None,
) -> dict[str, Any]:
    """Everything that can change a timing, without the "schema" key (files.write_json stamps it).

    `requested_device` is the config's device (auto, cuda or cpu), so a report can say that an
    `auto` run fell back to the CPU and why (`gpu_reason`)."""
    machine = _machine(device)
    gpu_reason = None
    if device == "cpu":
        gpu_reason = "device is cpu: " + (
            device_module.no_cuda_reason() or "CUDA is available but the run was configured for the cpu"
        )
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **machine,
        "requested_device": requested_device or device,
        "gpu_reason": gpu_reason,
        "git": git_state(workflow_dir),
        "lock": lock_state,
    }


# What the fingerprint reads that moves from one moment to the next on the same machine and software.
MOMENTARY_GPU = ("temperature_c", "nvml_error")
MOMENTARY_CLOCKS = ("sm_mhz", "mem_mhz")  # the current clocks; their maxima stay
MOMENTARY_ENV_VARS = ("SLURM_JOB_ID",)


def identity(device: str) -> dict[str, Any]:
    """The machine and software a measurement on `device` depends on: the fingerprint without what
    moves from one moment to the next (time, temperature, current clocks, the commit, the Slurm job).
    Equal identities may share a measurement of the device (attnbench.calibrate reuses ceilings)."""
    machine = _machine(device)
    if (gpu := machine["gpu"]) is not None:
        clocks = {key: value for key, value in gpu["clocks"].items() if key not in MOMENTARY_CLOCKS}
        machine["gpu"] = {k: v for k, v in gpu.items() if k not in MOMENTARY_GPU} | {"clocks": clocks}
    machine["env_vars"] = {k: v for k, v in machine["env_vars"].items() if k not in MOMENTARY_ENV_VARS}
    return machine


def _machine(device: str) -> dict[str, Any]:
    """The device, host and software, as read now."""
    import torch

    device_module.require(device)
    return {
        "python": platform.python_version(),
        "torch": {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "triton": _triton_version(),
        },
        "device": device,
        "gpu": _gpu(torch.cuda.current_device()) if device == "cuda" else None,
        "cpu": {
            "model": _cpu_model(),
            "logical_cores": os.cpu_count(),
            # The cores this process may run on: fewer than logical_cores under taskset or Slurm.
            "affinity_cores": (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None),
        },
        "host": {
            "hostname": socket.gethostname(),
            "os": platform.platform(),
            "kernel": platform.release(),
        },
        "packages": {name: _package_version(name) for name in PACKAGES},
        "env_vars": {name: os.environ.get(name) for name in ENV_VARS},
    }


def device_summary(device: str) -> dict[str, Any]:
    """The small identity {name, index, uuid} each result carries, so it records where it ran."""
    device_module.require(device)
    if device == "cpu":
        return {"name": _cpu_model(), "index": None, "uuid": None}
    import torch

    gpu = _torch_gpu(torch.cuda.current_device())
    return {"name": gpu["name"], "index": device_module.board_index(gpu["uuid"], gpu["index"]), "uuid": gpu["uuid"]}


def _torch_gpu(index: int) -> dict[str, Any]:
    """What torch knows of the GPU; fingerprint and device_summary share it to name it alike."""
    import torch

    props = torch.cuda.get_device_properties(index)
    return {
        "index": index,
        "name": props.name,
        "uuid": device_module.torch_uuid(props),
        "compute_capability": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count,
        "l2_cache_mb": _mib(props.L2_cache_size),
        "memory_total_mb": _mib(props.total_memory),
    }


def _gpu(index: int) -> dict[str, Any]:
    gpu = _torch_gpu(index)
    try:
        with device_module.nvml() as nv:
            board = device_module.board(nv, gpu["uuid"])
            readings = _nvml_readings(lambda call: device_module.ask(nv, call), nv, board)
            return gpu | readings | {"index": device_module.host_index(nv, board, index), "nvml_error": None}
    except Exception as exc:
        readings = _nvml_readings(lambda call: None, None, None)
        return gpu | readings | {"nvml_error": f"{type(exc).__name__}: {exc}"}


def _nvml_readings(ask: Callable[[Callable[[], Any]], Any], nv: Any, board: Any) -> dict[str, Any]:
    """Driver-side state that moves timings; the one list of these fields, each read through `ask`.

    `ask` runs one query, or answers None without running it when NVML is unusable, so the fields
    are the same either way.
    """
    return {
        "driver_version": ask(lambda: nv.nvmlSystemGetDriverVersion()),
        "clocks": {
            "sm_mhz": ask(lambda: nv.nvmlDeviceGetClockInfo(board, nv.NVML_CLOCK_SM)),
            "sm_max_mhz": ask(lambda: nv.nvmlDeviceGetMaxClockInfo(board, nv.NVML_CLOCK_SM)),
            "mem_mhz": ask(lambda: nv.nvmlDeviceGetClockInfo(board, nv.NVML_CLOCK_MEM)),
            "mem_max_mhz": ask(lambda: nv.nvmlDeviceGetMaxClockInfo(board, nv.NVML_CLOCK_MEM)),
        },
        "power_limit_w": ask(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(board) / 1000),
        "temperature_c": ask(lambda: nv.nvmlDeviceGetTemperature(board, nv.NVML_TEMPERATURE_GPU)),
        "ecc_mode": ask(lambda: bool(nv.nvmlDeviceGetEccMode(board)[0])),
        "mig_mode": ask(lambda: bool(nv.nvmlDeviceGetMigMode(board)[0])),
        "persistence_mode": ask(lambda: bool(nv.nvmlDeviceGetPersistenceMode(board))),
        "pci_bus_id": ask(lambda: nv.nvmlDeviceGetPciInfo(board).busId),
    }


def _mib(n_bytes: int) -> float:
    return round(n_bytes / 2**20, 1)


def _cpu_model() -> str:
    """/proc/cpuinfo names the CPU on Linux x86; platform.processor() is often empty there."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _triton_version() -> str | None:
    """The triton torch imports, which can differ from the installed distribution's metadata."""
    try:
        import triton
    except ImportError:
        return None
    return str(triton.__version__)


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# Results are not code that ran: a checkout that tracks its results/ stays clean while a run writes them
# (else each run would change the diff the fingerprint's param holds, and rerun it, forever).
GIT_SCOPE = (":(top)", ":(exclude)results")
GIT_TIMEOUT_S = 20


def git_state(workflow_dir: str | Path = ".") -> dict[str, Any]:
    """The commit checked out, whether tracked files differ from it (untracked files are not code
    run; results/ is not code), and the digest of that difference ("sha256:..." of `git diff HEAD`;
    None when clean): what a result was measured at. `reason` says why commit is None."""

    def git(*args: str) -> bytes:
        return subprocess.run(
            ["git", "-C", str(workflow_dir), *args],  # cmd[3:] names the step that failed
            capture_output=True,
            check=True,
            timeout=GIT_TIMEOUT_S,
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").decode().strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", *GIT_SCOPE).strip())
        diff = (
            git("-c", "core.quotepath=off", "diff", "--no-ext-diff", "--no-textconv", "--no-color", "--binary",
                "HEAD", "--", *GIT_SCOPE)
            if dirty
            else None
        )  # fmt: skip
    except FileNotFoundError:
        return {"commit": None, "dirty": None, "diff_digest": None, "reason": "git is not installed"}
    except subprocess.CalledProcessError as exc:
        failed = "git " + " ".join(exc.cmd[3:5])
        # git's first line says what is wrong; the hints after it only add noise.
        stderr = (exc.stderr or b"").decode(errors="replace")
        detail = stderr.strip().splitlines()[:1] or [f"exit status {exc.returncode}"]
        return {"commit": None, "dirty": None, "diff_digest": None, "reason": f"{failed} failed: {detail[0]}"}
    except subprocess.TimeoutExpired:
        return {"commit": None, "dirty": None, "diff_digest": None, "reason": "git timed out"}
    digest = None if diff is None else "sha256:" + hashlib.sha256(diff).hexdigest()
    return {"commit": commit, "dirty": dirty, "diff_digest": digest, "reason": None}


def git_key(workflow_dir: str | Path = ".") -> str:
    """git_state in one line, the fingerprint rule's param: a commit, or an edit to a tracked file,
    changes it, so Snakemake runs the fingerprint (and the report) again; no measurement reads it."""
    state = git_state(workflow_dir)
    if state["commit"] is None:
        return f"no commit: {state['reason']}"
    return state["commit"] + (f" dirty {state['diff_digest']}" if state["dirty"] else "")
