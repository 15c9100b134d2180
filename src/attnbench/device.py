"""The one place that asks the driver and torch about GPUs: NVML sessions, whether CUDA is usable (and
why not), which physical board and nvidia-smi index a torch device is.

Why one place: the workflow decides at parse time (config), each job again before it measures (bench,
calibrate, env) and before CUDA starts (lease); when they asked in their own ways a config could be
accepted that a job then refused, with other words. The cheap questions (`gpu_present`, `uuids`) never
import torch, and parsing asks torch once per host, driver and torch build, so parsing stays fast.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from attnbench import files

DEVICES = ("cuda", "cpu")


@contextmanager
def nvml() -> Iterator[ModuleType]:
    """NVML must be initialised before a query and shut down after, also when a query fails."""
    import pynvml

    pynvml.nvmlInit()
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def ask(nv: ModuleType, query: Callable[..., Any], *args: Any) -> Any:
    """A query the GPU or driver cannot answer (NVMLError_NotSupported...) gives None, no crash."""
    try:
        return query(*args)
    except nv.NVMLError:
        return None


def gpu_present() -> bool:
    """Whether NVML sees a GPU; without a driver or the library there is none."""
    try:
        with nvml() as nv:
            return bool(nv.nvmlDeviceGetCount() > 0)
    except Exception:
        return False


def uuids() -> list[str]:
    """GPU UUIDs in NVML (PCI bus) order; empty without a driver."""
    try:
        with nvml() as nv:
            return [
                str(nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i)))
                for i in range(nv.nvmlDeviceGetCount())
            ]
    except Exception:
        return []


def no_cuda_reason() -> str | None:
    """Why torch cannot use a GPU here, or None when it can (imports torch)."""
    import torch

    if torch.version.cuda is None:
        return "torch.cuda.is_available() is False (torch built without CUDA)"
    if torch.cuda.is_available():
        return None
    try:
        with nvml() as nv:
            count = nv.nvmlDeviceGetCount()
    except Exception as exc:
        return f"no NVIDIA driver: {type(exc).__name__}: {exc}"
    return (
        f"torch.cuda.is_available() is False although NVML sees {count} GPU(s) "
        f"(check CUDA_VISIBLE_DEVICES and that the driver supports CUDA {torch.version.cuda})"
    )


def cuda_unusable_reason() -> str | None:
    """no_cuda_reason, cheap at parse time: torch is imported only when NVML sees a GPU and no earlier
    parse on this host answered for the same driver, GPUs, visible devices and torch build.

    Importing torch with CUDA was a large part of every `snakemake` (docs/scale.md). The
    remembered answer only decides the plan; every cuda job asks torch again (require).
    """
    key = cuda_answer_key()
    if key is None:
        return "no NVIDIA GPU or driver is visible (NVML found none)"
    remembered = CUDA_ANSWERS.recall(key)
    if remembered is not None:
        return remembered["reason"]
    reason = no_cuda_reason()
    CUDA_ANSWERS.remember(key, {"reason": reason})
    return reason


CUDA_ANSWERS = files.Memo(files.cache_dir() / "cuda-usable")
"""Where cuda_unusable_reason remembers torch's answer."""


def cuda_answer_key() -> str | None:
    """What torch's answer depends on, read without torch: the host, the driver and its GPUs, the
    variables that choose the visible devices, and the torch build (its version.py, by path and stat).
    None when NVML sees no GPU."""
    try:
        with nvml() as nv:
            count = nv.nvmlDeviceGetCount()
            if count == 0:
                return None
            gpus = [str(nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
            driver = str(nv.nvmlSystemGetDriverVersion())
    except Exception:
        return None
    spec = importlib.util.find_spec("torch")
    version_file = Path(spec.origin).with_name("version.py") if spec and spec.origin else None
    try:
        stat = version_file.stat() if version_file else None
    except OSError:
        stat = None
    build = f"{version_file}:{stat.st_mtime_ns}:{stat.st_size}" if stat else "no torch"
    visible = [f"{name}={os.environ.get(name)}" for name in VISIBILITY]
    return "|".join([socket.gethostname(), sys.executable, driver, *gpus, *visible, build])


VISIBILITY = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")


def resolve(requested: str) -> str:
    """auto takes CUDA when torch can use it, else the CPU; cuda and cpu are taken as asked."""
    if requested != "auto":
        return requested
    return "cuda" if cuda_unusable_reason() is None else "cpu"


def require(device: str) -> None:
    """Fail early on a cuda job without CUDA: torch's own error comes later and says less."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    if device == "cuda" and (reason := no_cuda_reason()) is not None:
        raise RuntimeError(f"device is cuda but {reason}; set device: auto or cpu in config/config.yaml")


def torch_uuid(props: Any) -> str:
    """str(props.uuid) is the bare 8-4-4-4-12 hex; nvidia-smi and NVML print it with "GPU-"."""
    return f"GPU-{props.uuid}"


def bare_uuid(uuid: str) -> str:
    """The hex part, comparable between torch ("GPU-" added by us) and NVML ("GPU-" or "MIG-")."""
    prefix, _, rest = uuid.partition("-")
    return (rest if prefix in ("GPU", "MIG") else uuid).lower()


def board(nv: ModuleType, uuid: str) -> Any:
    """The NVML handle of the physical GPU that holds the device with this UUID.

    NVML numbers every GPU; torch numbers only the visible ones (CUDA_VISIBLE_DEVICES,
    CUDA_DEVICE_ORDER), so the indices differ in general. A MIG instance has its own UUID; its
    clocks, power and modes are those of the board it is carved from.
    """
    wanted = bare_uuid(uuid)
    for i in range(nv.nvmlDeviceGetCount()):
        handle = ask(nv, nv.nvmlDeviceGetHandleByIndex, i)
        if handle is None:
            continue
        slots = ask(nv, nv.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
        instances = [ask(nv, nv.nvmlDeviceGetMigDeviceHandleByIndex, handle, j) for j in range(slots)]
        handles = [h for h in (handle, *instances) if h is not None]
        if wanted in {bare_uuid(ask(nv, nv.nvmlDeviceGetUUID, h) or "") for h in handles}:
            return handle
    raise LookupError(f"no NVML device has UUID {wanted}")


def host_index(nv: ModuleType, handle: Any, torch_index: int) -> int:
    """The index nvidia-smi shows. torch's is relative to CUDA_VISIBLE_DEVICES: 0 in every pinned job."""
    index = ask(nv, nv.nvmlDeviceGetIndex, handle)
    return torch_index if index is None else int(index)


def board_index(uuid: str, torch_index: int) -> int:
    """nvidia-smi's index of the board holding `uuid`; torch's index where NVML cannot tell."""
    try:
        with nvml() as nv:
            return host_index(nv, board(nv, uuid), torch_index)
    except Exception:
        return torch_index


@contextmanager
def board_of(index: int) -> Iterator[tuple[ModuleType, Any]]:
    """NVML and the board of torch device `index`, open for as long as the caller needs them."""
    import torch

    with nvml() as nv:
        yield nv, board(nv, torch_uuid(torch.cuda.get_device_properties(index)))
