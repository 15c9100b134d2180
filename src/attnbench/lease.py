"""One GPU per job: a lease held for the job's lifetime, so that concurrent jobs never share a GPU.

Snakemake counts `gpu` resources but never says which GPU a job should use: with `--resources gpu=4`
four benchmark jobs would all start on GPU 0 and corrupt each other's timings. Each job therefore
takes an exclusive, non-blocking `flock` on one file per GPU before CUDA starts, and pins itself to
that GPU with CUDA_VISIBLE_DEVICES. The kernel drops the lock when the process ends, however it ends
(kill -9 included), so a dead job's GPU is free again at once; nothing has to clean up after it.

Under SLURM the scheduler has already chosen (and usually fenced off) the job's GPUs: the lease then
takes nothing and records the assignment.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench import device

# ATTNBENCH_GPUS: the GPUs jobs may lease (comma-separated indices or UUIDs), e.g. to leave some GPUs
# of a shared box to others. Any text is a valid slot, which is how the CPU tests fake GPUs.
POOL_VARIABLE = "ATTNBENCH_GPUS"
# Where the lock files live. Host-wide on purpose: two workflows on one host must not share a GPU.
DIR_VARIABLE = "ATTNBENCH_LEASE_DIR"
WAIT_VARIABLE = "ATTNBENCH_LEASE_WAIT_S"
DEFAULT_WAIT_S = 3600.0
POLL_S = 0.2
REPORT_EVERY_S = 60.0
# SLURM sets one of these when it allocated GPUs to the job (gres/gpu).
SLURM_GPU_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS")


class LeaseTimeout(RuntimeError):
    """Every GPU of the pool stayed leased for longer than the wait allowed."""


@dataclass
class Lease:
    """Which GPU this process was given and how; `record()` goes into every result."""

    source: str  # lease (a lock taken here) | slurm (the scheduler's choice) | none (no GPU to pin)
    slot: str | None = None
    lock_path: str | None = None
    waited_s: float = 0.0
    pool_size: int = 0
    leased_at: float | None = None
    _fd: int | None = field(default=None, repr=False)

    def record(self, environ: MutableMapping[str, str] = os.environ) -> dict[str, Any]:
        return {
            "source": self.source,
            "slot": self.slot,
            "pool_size": self.pool_size,
            "waited_s": round(self.waited_s, 3),
            "leased_at": self.leased_at,
            "lock": self.lock_path,
            "cuda_visible_devices": environ.get("CUDA_VISIBLE_DEVICES"),
            "slurm_job_id": environ.get("SLURM_JOB_ID"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    def release(self) -> None:
        """Only for tests and long-lived callers: a job's lease ends with its process."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lease_dir(environ: MutableMapping[str, str] = os.environ) -> Path:
    return Path(environ.get(DIR_VARIABLE) or Path(tempfile.gettempdir()) / "attnbench-gpu-leases")


def pool(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """The GPUs a job may lease: ATTNBENCH_GPUS, else CUDA_VISIBLE_DEVICES, else every GPU NVML sees.

    UUIDs rather than indices wherever NVML can tell them: CUDA numbers GPUs fastest-first unless
    CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML and nvidia-smi in PCI order, so the same index can name two
    different GPUs, while a UUID names one GPU for every process on the host.
    """
    listed = environ.get(POOL_VARIABLE) or environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        entries = [entry.strip() for entry in listed.split(",") if entry.strip()]
        uuids = device.uuids()
        if uuids and all(entry.isdigit() for entry in entries):
            # CUDA_VISIBLE_DEVICES indices follow CUDA's order; the lease pins with
            # CUDA_DEVICE_ORDER=PCI_BUS_ID so that they mean what NVML means.
            return [uuids[int(entry)] for entry in entries if int(entry) < len(uuids)]
        return entries
    return device.uuids()


def acquire(
    slots: list[str],
    directory: Path,
    *,
    holder: str,
    wait_s: float = DEFAULT_WAIT_S,
    log: Callable[[str], None] | None = None,
) -> Lease:
    """Lock the first free slot, waiting (and saying so) while all are taken."""
    directory.mkdir(parents=True, exist_ok=True)
    _share(directory, 0o1777)
    began = time.monotonic()
    next_report = 0.0
    while True:
        for slot in slots:
            path = directory / f"{_file_name(slot)}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            _share(path, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            now = time.time()
            note = {"pid": os.getpid(), "host": socket.gethostname(), "holder": holder, "since": now}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(note) + "\n").encode(), 0)
            waited = time.monotonic() - began
            return Lease("lease", slot, str(path), waited, len(slots), now, fd)
        waited = time.monotonic() - began
        if waited >= wait_s:
            raise LeaseTimeout(
                f"no free GPU after {waited:.0f} s ({WAIT_VARIABLE}={wait_s:g}); "
                f"held: {holders(slots, directory)}"
            )
        if log is not None and waited >= next_report:
            log(f"all {len(slots)} GPUs are leased, waiting: {holders(slots, directory)}")
            next_report = waited + REPORT_EVERY_S
        time.sleep(POLL_S)


def holders(slots: list[str], directory: Path) -> str:
    """Who holds each slot, as their lock files say (for a waiting job's log)."""
    described = []
    for slot in slots:
        try:
            note = json.loads((directory / f"{_file_name(slot)}.lock").read_text() or "{}")
        except (OSError, ValueError):
            note = {}
        who = f"pid {note['pid']} ({note.get('holder')})" if "pid" in note else "?"
        described.append(f"{slot}: {who}")
    return "; ".join(described)


def for_job(
    holder: str,
    *,
    want_gpu: bool,
    environ: MutableMapping[str, str] = os.environ,
    log: Callable[[str], None] | None = None,
) -> Lease:
    """Pin this process to one GPU; call it before torch is imported, or CUDA ignores the pinning."""
    if environ.get("SLURM_JOB_ID") and any(environ.get(v) for v in SLURM_GPU_VARIABLES):
        return Lease("slurm", environ.get("CUDA_VISIBLE_DEVICES"))
    if not (want_gpu or environ.get(POOL_VARIABLE)):
        return Lease("none")
    slots = pool(environ)
    if not slots:
        return Lease("none")
    wait_s = float(environ.get(WAIT_VARIABLE) or DEFAULT_WAIT_S)
    lease = acquire(slots, lease_dir(environ), holder=holder, wait_s=wait_s, log=log)
    environ["CUDA_VISIBLE_DEVICES"] = lease.slot or ""
    environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return lease


def _file_name(slot: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in slot)


def _share(path: Path, mode: int) -> None:
    """Let every user of the host lease: the first creator's umask must not lock others out."""
    try:
        os.chmod(path, mode)
    except PermissionError:  # made by another user, who already shared it
        pass
