"""The host around a measurement: torch's CPU threads, and other processes' load flagged."""

import subprocess
import sys
import time

import psutil
import pytest

from attnbench import host


def test_threads_come_from_the_config_else_the_jobs_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert host.job_threads(None) == 3
    assert host.job_threads(2) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert host.job_threads(None) == host.available_cpus()


def test_a_busy_machine_is_flagged_with_why():
    """Another process spinning on the cores this job leaves free (here all but one) is seen."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(host.available_cpus() - 1, 1))
    ]
    try:
        time.sleep(0.3)  # the spinners are running
        watch = host.LoadWatch.start(threads=1)
        time.sleep(1.0)
        record = watch.record()
    finally:
        for spinner in spinners:
            spinner.kill()
    assert record["other_cores"] > 0.5 and record["busy"] is True
    assert "other processes kept" in record["why"] and record["threads"] == 1


def test_this_process_own_work_is_not_counted_as_others(monkeypatch):
    """The whole machine's busy time minus this process's: a CPU run's own threads never flag it."""
    from collections import namedtuple

    System = namedtuple("System", "user system idle iowait")
    Own = namedtuple("Own", "user system children_user children_system")
    clock = iter([100.0, 102.0])  # two seconds of wall time
    system = iter([System(10.0, 0.0, 50.0, 0.0), System(14.0, 0.2, 51.8, 0.0)])  # 4.2 s busy
    own = iter([Own(1.0, 0.0, 0.0, 0.0), Own(4.8, 0.2, 0.0, 0.0)])  # 4.0 s of them ours

    class Process:
        def cpu_times(self):
            return next(own)

    monkeypatch.setattr(host.time, "monotonic", lambda: next(clock))
    # cores 0 and 2 are this job's; core 1 (busy all along) is another cpuset's and never counted
    busy_elsewhere = System(99.0, 0.0, 0.0, 0.0)
    idle = System(0.0, 0.0, 1.0, 0.0)
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu: [next(system), busy_elsewhere, idle, idle])
    monkeypatch.setattr(psutil, "Process", Process)
    monkeypatch.setattr(host, "usable_cpus", lambda: [0, 2])
    record = host.LoadWatch.start(threads=1).record()
    assert record["cpus"] == 2 and record["other_cores"] == pytest.approx(0.1)
    assert record["busy"] is False and record["why"] is None
