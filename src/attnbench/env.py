"""The environment fingerprint: everything that can change a timing, recorded next to the timings.

A result is only comparable with another when both ran on the same GPU, driver, clocks, libraries
and lock; the fingerprint lets a reader check that instead of assuming it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

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

DEVICES = ("cuda", "cpu")


def fingerprint(
    device: str,
    lock_state: dict[str, Any],
    *,
    workflow_dir: str | Path = ".",
    requested_device: str | None = None,
) -> dict[str, Any]:
    """Everything that can change a timing, without the "schema" key (io.write_json stamps it).

    `requested_device` is the config's device (auto, cuda or cpu), so a report can say that an
    `auto` run fell back to the CPU and why (`gpu_reason`)."""
    import torch

    _check_device(device)
    if device == "cuda":
        gpu: dict[str, Any] | None = _gpu(torch.cuda.current_device())
        gpu_reason = None
    else:
        gpu = None
        gpu_reason = "device is cpu: " + (
            no_cuda_reason() or "CUDA is available but the run was configured for the cpu"
        )
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "triton": _triton_version(),
        },
        "device": device,
        "requested_device": requested_device or device,
        "gpu": gpu,
        "gpu_reason": gpu_reason,
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
        "git": _git(workflow_dir),
        "packages": {name: _package_version(name) for name in PACKAGES},
        "env_vars": {name: os.environ.get(name) for name in ENV_VARS},
        "lock": lock_state,
    }


def device_summary(device: str) -> dict[str, Any]:
    """The small identity {name, index, uuid} each result carries, so it records where it ran."""
    _check_device(device)
    if device == "cpu":
        return {"name": _cpu_model(), "index": None, "uuid": None}
    import torch

    gpu = _torch_gpu(torch.cuda.current_device())
    try:
        with _nvml() as nv:
            index = _host_index(nv, _nvml_board(nv, _bare_uuid(gpu["uuid"])), gpu["index"])
    except Exception:  # no NVML: torch's index is all there is
        index = gpu["index"]
    return {"name": gpu["name"], "index": index, "uuid": gpu["uuid"]}


def _check_device(device: str) -> None:
    """Fail early on a cuda run without CUDA: torch's own error comes later and says less."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    if device == "cuda" and (reason := no_cuda_reason()) is not None:
        raise RuntimeError(f"device is cuda but {reason}")


def no_cuda_reason() -> str | None:
    """Why torch cannot use a GPU here, or None when it can."""
    import torch

    if torch.version.cuda is None:
        return "torch.cuda.is_available() is False (torch built without CUDA)"
    if torch.cuda.is_available():
        return None
    try:
        with _nvml() as nv:
            count = nv.nvmlDeviceGetCount()
    except Exception as exc:  # no pynvml, no libnvidia-ml or an NVMLError: no usable driver
        return f"no NVIDIA driver: {type(exc).__name__}: {exc}"
    return (
        f"torch.cuda.is_available() is False although NVML sees {count} GPU(s) "
        f"(check CUDA_VISIBLE_DEVICES and that the driver supports CUDA {torch.version.cuda})"
    )


def _torch_gpu(index: int) -> dict[str, Any]:
    """What torch knows of the GPU; fingerprint and device_summary share it to name it alike."""
    import torch

    props = torch.cuda.get_device_properties(index)
    return {
        "index": index,
        "name": props.name,
        # str(props.uuid) is the bare 8-4-4-4-12 hex; nvidia-smi and NVML print it with "GPU-".
        "uuid": f"GPU-{props.uuid}",
        "compute_capability": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count,
        "l2_cache_mb": _mib(props.L2_cache_size),
        "memory_total_mb": _mib(props.total_memory),
    }


def _gpu(index: int) -> dict[str, Any]:
    gpu = _torch_gpu(index)
    try:
        with _nvml() as nv:
            board = _nvml_board(nv, _bare_uuid(gpu["uuid"]))
            readings = _nvml_readings(lambda call: _ask(nv, call), nv, board)
            return gpu | readings | {"index": _host_index(nv, board, index), "nvml_error": None}
    except Exception as exc:  # NVML is telemetry: the torch fields still identify the GPU
        readings = _nvml_readings(lambda call: None, None, None)
        return gpu | readings | {"nvml_error": f"{type(exc).__name__}: {exc}"}


def _host_index(nv: ModuleType, board: Any, torch_index: int) -> int:
    """The index nvidia-smi shows. torch's is relative to CUDA_VISIBLE_DEVICES: 0 in every pinned job."""
    index = _ask(nv, nv.nvmlDeviceGetIndex, board)
    return torch_index if index is None else int(index)


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


@contextmanager
def _nvml() -> Iterator[ModuleType]:
    """NVML must be initialised before a query and shut down after, also when a query fails."""
    import pynvml

    pynvml.nvmlInit()
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def _ask(nv: ModuleType, query: Callable[..., Any], *args: Any) -> Any:
    """A query the GPU or driver cannot answer (NVMLError_NotSupported...) gives None, no crash."""
    try:
        return query(*args)
    except nv.NVMLError:
        return None


def _nvml_board(nv: ModuleType, uuid: str) -> Any:
    """The NVML handle of the physical GPU that holds the torch device, found by UUID.

    NVML numbers every GPU; torch numbers only the visible ones (CUDA_VISIBLE_DEVICES,
    CUDA_DEVICE_ORDER), so the indices differ in general. A MIG instance has its own UUID; its
    clocks, power and modes are those of the board it is carved from.
    """
    for i in range(nv.nvmlDeviceGetCount()):
        board = _ask(nv, nv.nvmlDeviceGetHandleByIndex, i)
        if board is None:
            continue
        slots = _ask(nv, nv.nvmlDeviceGetMaxMigDeviceCount, board) or 0
        instances = [_ask(nv, nv.nvmlDeviceGetMigDeviceHandleByIndex, board, j) for j in range(slots)]
        handles = [h for h in (board, *instances) if h is not None]
        if uuid in {_bare_uuid(_ask(nv, nv.nvmlDeviceGetUUID, h) or "") for h in handles}:
            return board
    raise LookupError(f"no NVML device has UUID {uuid}")


@contextmanager
def nvml_board_of(index: int) -> Iterator[tuple[ModuleType, Any]]:
    """NVML and the board of torch device `index`, open for as long as the caller needs them."""
    with _nvml() as nv:
        yield nv, _nvml_board(nv, _bare_uuid(_torch_gpu(index)["uuid"]))


def _bare_uuid(uuid: str) -> str:
    """The hex part, comparable between torch ("GPU-" added by us) and NVML ("GPU-" or "MIG-")."""
    prefix, _, rest = uuid.partition("-")
    return (rest if prefix in ("GPU", "MIG") else uuid).lower()


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


def _git(workflow_dir: str | Path) -> dict[str, Any]:
    """The commit, and whether tracked files differ from it (untracked files are not code run)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(workflow_dir), *args],  # cmd[3:] names the step that failed
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except FileNotFoundError:
        return {"commit": None, "dirty": None, "reason": "git is not installed"}
    except subprocess.CalledProcessError as exc:
        failed = "git " + " ".join(exc.cmd[3:])
        # git's first line says what is wrong; the hints after it only add noise.
        detail = (exc.stderr or "").strip().splitlines()[:1] or [f"exit status {exc.returncode}"]
        return {"commit": None, "dirty": None, "reason": f"{failed} failed: {detail[0]}"}
    except subprocess.TimeoutExpired:
        return {"commit": None, "dirty": None, "reason": "git timed out"}
    return {"commit": commit, "dirty": dirty, "reason": None}
