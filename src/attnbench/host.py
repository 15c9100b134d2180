"""The host around a shape's measurement: how many CPU threads torch uses, and how busy the other
processes kept the machine.

Why: on the CPU the threads decide the result (Snakemake sets OMP_NUM_THREADS to the job's threads,
1 by default), and on a shared machine other processes move a median far outside its CI (docs/scale.md,
Measurements behind the code) while every sample looks sound. So the thread
count is set from the config and recorded, and the CPU time that other processes used while the
shape was measured is sampled (psutil) and a busy machine is flagged in the report.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psutil

# Busy: other processes kept more than this share of the cores this job left free busy.
BUSY_SHARE = 0.5


def usable_cpus() -> list[int]:
    """The cores this process may run on (its affinity mask, e.g. a SLURM allocation or a cpuset)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def available_cpus() -> int:
    return len(usable_cpus())


# The CPU threads Snakemake gives a benchmark job (its OMP_NUM_THREADS): the rule asks for none, so one,
# whatever --cores says. attnbench.compare measures with the same unless told otherwise.
WORKFLOW_THREADS = 1


def job_threads(requested: int | None) -> int:
    """The CPU threads for torch: the config's `threads`, else the job's OMP_NUM_THREADS (Snakemake
    sets it to the threads it gives the job), else every available core."""
    if requested:
        return int(requested)
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else available_cpus()


def use_threads(requested: int | None) -> int:
    """Set torch's CPU threads for this job (job_threads) and return them: a warm worker serves jobs
    that may ask for others, so every job sets its own."""
    import torch

    threads = job_threads(requested)
    torch.set_num_threads(threads)
    return threads


def _load_average() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return None


def _busy_seconds(times: Any) -> float:
    """CPU seconds spent on anything but idling or waiting for I/O."""
    idle = getattr(times, "idle", 0.0) + getattr(times, "iowait", 0.0)
    return float(sum(times)) - idle


def _busy_on(cpus: list[int]) -> float:
    """Busy seconds of the cores this job may use: others' load elsewhere on the host is not its."""
    import psutil  # here, not at the top: a job's client process needs only job_threads (docs/scale.md)

    per_cpu = psutil.cpu_times(percpu=True)
    return sum(_busy_seconds(per_cpu[i]) for i in cpus if i < len(per_cpu))


def _own_seconds(process: psutil.Process) -> float:
    own = process.cpu_times()
    return own.user + own.system + own.children_user + own.children_system


@dataclass
class LoadWatch:
    """The whole machine's and this process's CPU time at the start; `record` compares at the end."""

    threads: int
    cpus: list[int]
    started: float
    system_busy: float
    own_busy: float
    load_before: float | None
    process: psutil.Process

    @classmethod
    def start(cls, threads: int) -> LoadWatch:
        import psutil

        process = psutil.Process()
        cpus = usable_cpus()
        return cls(
            threads=threads,
            cpus=cpus,
            started=time.monotonic(),
            system_busy=_busy_on(cpus),
            own_busy=_own_seconds(process),
            load_before=_load_average(),
            process=process,
        )

    def record(self) -> dict[str, Any]:
        """The bench file's `host`: threads, cores, load average before and after, the cores other
        processes kept busy meanwhile, and whether that makes the machine busy (with why)."""
        wall = max(time.monotonic() - self.started, 1e-9)
        others = (_busy_on(self.cpus) - self.system_busy) - (_own_seconds(self.process) - self.own_busy)
        other_cores = max(others / wall, 0.0)
        cpus = len(self.cpus)
        free = max(cpus - self.threads, 1)
        busy = other_cores > BUSY_SHARE * free
        why = (
            f"other processes kept {other_cores:.1f} of the {free} cores this job left free busy"
            f" while it measured (flagged above {BUSY_SHARE:.0%})"
            if busy
            else None
        )
        return {
            "threads": self.threads,
            "cpus": cpus,
            "load_before": self.load_before,
            "load_after": _load_average(),
            "other_cores": other_cores,
            "busy": busy,
            "why": why,
        }


# What libkineto writes to the process's stderr at each profiler session's start and stop: 12 lines a
# shape in a notebook (attnbench.compare), each job's log in the workflow
PROFILER_CHATTER = re.compile(r"^USDT:.*\] profiler_(start|stop)\s*$")


@contextmanager
def held_stderr() -> Iterator[None]:
    """The process's stderr (file descriptor 2, where libkineto writes) held in a temporary file while
    a profiler session runs, then written out without PROFILER_CHATTER: whatever else was written
    (a kernel's own warnings) still shows, after the round."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not PROFILER_CHATTER.match(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
