"""The GPU lease on a CPU-only machine, with fake GPUs: distinct slots for concurrent jobs, a slot free
again as soon as its holder dies (kill -9 included), SLURM's assignment left alone, and the workflow
running three benchmark jobs at once on three fake GPUs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import helpers
import pytest
from helpers import copy_workflow, write_config

from attnbench import files, lease

# A job: take the lease as the CLI does, report the slot, hold it for `hold` seconds.
JOB = textwrap.dedent(
    """
    import json, os, sys, time
    from attnbench import lease
    taken = lease.for_job(sys.argv[1], want_gpu=True)
    print(json.dumps({"slot": taken.slot, "cuda": os.environ["CUDA_VISIBLE_DEVICES"],
                      "start": time.time()}), flush=True)
    time.sleep(float(sys.argv[2]))
    print(json.dumps({"end": time.time()}), flush=True)
    """
)


def start_job(name, hold, lease_dir, slots="fake0,fake1,fake2"):
    env = {"ATTNBENCH_GPUS": slots, "ATTNBENCH_LEASE_DIR": str(lease_dir), "PATH": "/usr/bin:/bin"}
    return subprocess.Popen(
        [sys.executable, "-c", JOB, name, str(hold)], env=env, stdout=subprocess.PIPE, text=True
    )


def finished(proc):
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    first, second = (json.loads(line) for line in out.splitlines())
    return {**first, **second}


@pytest.mark.slow
def test_concurrent_jobs_get_distinct_slots_and_never_share_one(tmp_path):
    # Six jobs on three fake GPUs: three run at once, the others wait for a slot to come free.
    jobs = [finished(p) for p in [start_job(f"job{i}", 1.0, tmp_path) for i in range(6)]]
    assert {job["slot"] for job in jobs} == {"fake0", "fake1", "fake2"}
    assert all(job["cuda"] == job["slot"] for job in jobs)
    for a in jobs:
        for b in jobs:
            overlap = a is not b and a["start"] < b["end"] and b["start"] < a["end"]
            assert not (overlap and a["slot"] == b["slot"]), (a, b)
    # Each slot served two jobs one after the other.
    assert sorted(job["slot"] for job in jobs) == ["fake0", "fake0", "fake1", "fake1", "fake2", "fake2"]


def test_a_killed_jobs_slot_is_reclaimed(tmp_path):
    holder = start_job("doomed", 600, tmp_path, slots="only")
    assert json.loads(holder.stdout.readline())["slot"] == "only"
    with pytest.raises(lease.LeaseTimeout, match=r"only: pid \d+ \(doomed\)"):
        lease.acquire(["only"], tmp_path, holder="too early", wait_s=0.5)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    began = time.monotonic()
    taken = lease.acquire(["only"], tmp_path, holder="next", wait_s=5)
    try:
        assert taken.slot == "only" and time.monotonic() - began < 1
    finally:
        taken.release()


def test_a_waiting_job_says_who_holds_the_gpus(tmp_path):
    first = lease.acquire(["g0"], tmp_path, holder="benchmark results/bench/a.json")
    messages = []
    try:
        with pytest.raises(lease.LeaseTimeout):
            lease.acquire(["g0"], tmp_path, holder="b", wait_s=0.3, log=messages.append)
    finally:
        first.release()
    assert messages and "benchmark results/bench/a.json" in messages[0]


def test_slurm_assignment_is_respected():
    environ = {"SLURM_JOB_ID": "42", "SLURM_JOB_GPUS": "3", "CUDA_VISIBLE_DEVICES": "0"}
    taken = lease.for_job("job", want_gpu=True, environ=environ)
    assert (taken.source, taken.slot, taken.lock_path) == ("slurm", "0", None)
    assert environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert taken.record(environ)["slurm_job_id"] == "42"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"ATTNBENCH_GPUS": "a,b", "CUDA_VISIBLE_DEVICES": "c"}, ["a", "b"]),
        ({"CUDA_VISIBLE_DEVICES": "x, y"}, ["x", "y"]),
        ({"CUDA_VISIBLE_DEVICES": ""}, []),  # no GPU visible: nothing to lease
    ],
)
def test_pool_precedence(environ, expected):
    assert lease.pool(environ) == expected


def test_cpu_jobs_take_no_lease_unless_a_pool_is_named(tmp_path):
    environ = {"ATTNBENCH_LEASE_DIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": "0"}
    assert lease.for_job("cpu job", want_gpu=False, environ=environ).source == "none"
    assert environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert lease.for_job("no GPU", want_gpu=True, environ={"CUDA_VISIBLE_DEVICES": ""}).source == "none"


@pytest.mark.slow
def test_workflow_runs_one_benchmark_job_per_fake_gpu(tmp_path):
    """`--cores 3 --resources gpu=3` on three fake GPUs: jobs overlap, and overlapping jobs differ in GPU."""
    workdir = tmp_path / "wf"
    workdir.mkdir()
    copy_workflow(workdir)
    config = dict(helpers.CPU_CONFIG)
    config["cpu"] = config["cpu"] | {
        "candidates": ["flash", "math"],
        "shapes": [{**helpers.CPU_SHAPES[0], "name": f"s{i}"} for i in range(6)],
    }
    write_config(workdir, config)
    env = {"ATTNBENCH_GPUS": "fake0,fake1,fake2", "ATTNBENCH_LEASE_DIR": str(tmp_path / "leases")}
    helpers.snakemake(workdir, gpus=3, env=env)

    spans = []
    for path in sorted((workdir / "results" / "bench").glob("*.json")):
        placement = files.read_json(path, helpers.SCHEMAS / "bench.schema.yaml")["placement"]
        assert placement["source"] == "lease" and placement["pool_size"] == 3
        assert placement["cuda_visible_devices"] == placement["slot"]
        spans.append((placement["leased_at"], path.stat().st_mtime, placement["slot"]))
    assert len(spans) == 6
    overlapping = [
        (a, b) for i, a in enumerate(spans) for b in spans[i + 1 :] if a[0] < b[1] and b[0] < a[1]
    ]
    assert overlapping, "with gpu=3, some benchmark jobs should have run at the same time"
    assert all(a[2] != b[2] for a, b in overlapping), overlapping
