"""The per-GPU worker, on the CPU: jobs reuse one warm process, a job's death stops the worker at once,
a failed candidate retires it, and anything that changes what it would run gets a fresh one."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import alive, wait_until

from attnbench import worker

ROOT = Path(__file__).resolve().parents[1]
FINGERPRINT = {"device": "cpu", "requested_device": "cpu", "lock": {"seed": 0}}


@pytest.fixture
def worker_env(tmp_path, monkeypatch):
    """Jobs' start-up variables, a socket folder of the test's own, and workers that idle out fast."""
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    monkeypatch.setenv(worker.IDLE_VARIABLE, "20")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_jobs_reuse_one_warm_worker(worker_env):
    first, by_first = worker.run("fingerprint", FINGERPRINT, worker_env, log=print)
    second, by_second = worker.run("fingerprint", FINGERPRINT, worker_env, log=print)
    assert first["device"] == second["device"] == "cpu"
    assert by_first["pid"] == by_second["pid"]
    assert (by_first["jobs_before"], by_second["jobs_before"]) == (0, 1)


def benchmark_spec(candidates, max_time_s):
    shape = {"name": "s64", "batch": 1, "heads": 2, "seq": 64, "dim": 16, "causal": False}
    timing = {"warmup": 1, "warmup_max_s": 0.2, "min_rounds": 10**6, "max_rounds": 10**6, "max_time_s": max_time_s}
    return {"device": "cpu", "dtype": "float32", "mode": "forward", "candidates": candidates,
            "shape": shape, "timing": timing, "lock": {"seed": 0}}  # fmt: skip


def test_worker_stops_when_its_job_dies(worker_env, tmp_path):
    """kill -9 of the job mid-shape: the worker exits too, instead of measuring for nobody."""
    spec = benchmark_spec(["math"], max_time_s=120)
    job = subprocess.Popen(
        [sys.executable, "-m", "attnbench", "benchmark", "--spec", json.dumps(spec), "--out", str(tmp_path / "o.json")],
        env={**os.environ, "ATTNBENCH_LEASE_DIR": str(worker_env)},
        stderr=subprocess.PIPE,
        text=True,
    )
    pid = None
    for line in job.stderr:
        if match := re.search(r"worker pid (\d+)", line):
            pid = int(match[1])
        if "math: ok" in line:  # the worker is measuring now
            break
    assert pid is not None and alive(pid)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=10)
    assert wait_until(lambda: not alive(pid)), "the worker outlived its job"
    assert not (tmp_path / "o.json").exists()


def test_a_failed_candidate_retires_the_worker(worker_env):
    document, by = worker.run("benchmark", benchmark_spec(["math", "user_kernels:raises"], 0.5), worker_env, log=print)
    assert document["candidates"]["user_kernels:raises"]["status"] == "error"
    assert wait_until(lambda: not alive(by["pid"]))
    _, by_next = worker.run("fingerprint", FINGERPRINT, worker_env, log=print)
    assert by_next["pid"] != by["pid"] and by_next["jobs_before"] == 0


def job(command, spec, out, workdir, sockets):
    """One job as the workflow runs it: `python -m attnbench` in its working directory."""
    argv = [sys.executable, "-m", "attnbench", command, "--spec", json.dumps(spec), "--out", out]
    env = {**os.environ, "ATTNBENCH_LEASE_DIR": str(sockets)}
    return subprocess.run(
        argv, check=False, cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )


def served_by(path):
    return json.loads(Path(path).read_text())["process"]["worker"]


def moved(directory):
    directory.rename(directory.with_name("moved"))


@pytest.mark.parametrize("replace", [shutil.rmtree, moved], ids=["removed", "moved"])
def test_a_directory_replaced_at_the_same_path_gets_a_fresh_worker(worker_env, replace):
    """Found on an H200: a CI workspace wiped and recreated at the same path while the last run's worker
    idled; that worker resolved the new run's relative paths in its own, removed, directory."""
    work, sockets = worker_env / "work", worker_env / "sockets"
    bench = work / "results/bench/s64.json"
    compare = {"bench": "results/bench/s64.json", "reference": "math",
               "stats": {"n_resamples": 200}}  # fmt: skip
    work.mkdir()
    assert job("benchmark", benchmark_spec(["math", "flash"], 0.3), str(bench), work, sockets).returncode == 0
    assert job("compare", compare, "c.json", work, sockets).returncode == 0
    before = served_by(work / "c.json")
    assert before["jobs_before"] == 1  # the compare ran in the benchmark's worker
    saved = bench.read_bytes()
    replace(work)
    bench.parent.mkdir(parents=True)
    bench.write_bytes(saved)
    rerun = job("compare", compare, "c.json", work, sockets)
    assert rerun.returncode == 0, rerun.stderr
    assert f"worker pid {before['pid']} did not start in this job's directory" in rerun.stderr
    after = served_by(work / "c.json")
    assert after["pid"] != before["pid"] and after["jobs_before"] == 0
    assert wait_until(lambda: not alive(before["pid"])), "the stale worker stays"


KERNEL = """from pathlib import Path

import torch.nn.functional as F

FACTOR = float((Path(__file__).parent / "factor.txt").read_text())


def attention(q, k, v, *, causal, scale):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale) * FACTOR
"""


def test_directories_with_the_same_files_never_share_a_worker(worker_env, monkeypatch):
    """Same kernel source, same spec: only the directory tells the jobs apart, and its data file
    decides whether the kernel is correct."""
    spec = benchmark_spec(["math", "dir_kernel:attention"], 0.2)
    results = []
    for name, factor in [("a", "1"), ("b", "2"), ("a", "1")]:
        directory = worker_env / name
        directory.mkdir(exist_ok=True)
        (directory / "dir_kernel.py").write_text(KERNEL)
        (directory / "factor.txt").write_text(factor)
        monkeypatch.chdir(directory)
        document, by = worker.run("benchmark", spec, worker_env / "sockets", log=print)
        results.append((document["candidates"]["dir_kernel:attention"]["status"], by["pid"]))
    (a_status, a_pid), (b_status, b_pid), (again_status, again_pid) = results
    assert (a_status, b_status, again_status) == ("ok", "incorrect", "ok")
    assert a_pid == again_pid != b_pid


def test_key_changes_with_what_the_worker_would_run():
    environ = {"PYTHONHASHSEED": "0", "CUDA_VISIBLE_DEVICES": "GPU-a", "HOME": "/x"}
    base = worker.key({"kernel_hashes": {"m:f": "1"}}, environ)
    assert worker.key({"kernel_hashes": {"m:f": "2"}}, environ) != base  # the user edited a kernel
    assert worker.key({"kernel_hashes": {"m:f": "1"}}, environ | {"CUDA_VISIBLE_DEVICES": "GPU-b"}) != base
    assert worker.key({"kernel_hashes": {"m:f": "1"}}, environ | {"HOME": "/y"}) == base


def test_worker_is_off_under_slurm_and_on_request():
    assert worker.enabled({}, "lease") and worker.enabled({}, "none")
    assert not worker.enabled({}, "slurm")
    assert not worker.enabled({worker.ENABLE_VARIABLE: "0"}, "lease")


def test_an_unknown_command_is_an_error_not_a_benchmark():
    """The worker used to run any command it did not know as a benchmark."""
    from attnbench import jobs

    with pytest.raises(jobs.UnknownJob, match="unknown job 'benchmarks'"):
        jobs.run("benchmarks", benchmark_spec(["math"], 0.2))


@pytest.mark.parametrize("command", ["benchmark", "calibrate"])
def test_the_jobs_threads_travel_in_its_spec_to_the_worker(command, monkeypatch, tmp_path):
    """A warm worker was started by some earlier job with that job's OMP_NUM_THREADS: the threads a
    job measures with are its own, so the job puts them in the spec it hands over."""
    from attnbench import cli

    handed: list[dict] = []

    def measure(spec, in_worker, schemas, log):  # stands in for the worker
        handed.append(spec)
        return {"candidates": {}}, None

    def run(name, spec, lease_dir, log, schemas):
        handed.append(spec)
        return {"device": "cpu"}, None

    monkeypatch.setattr(cli, "_benchmark", measure)
    monkeypatch.setattr(cli.worker, "run", run)
    monkeypatch.setattr(cli.worker, "enabled", lambda env, source: True)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    spec = {"device": "cpu"}
    assert cli.main([command, "--spec", json.dumps(spec), "--out", str(tmp_path / "out.json")]) == 0
    assert handed[0]["threads"] == 3
    given = {"device": "cpu", "threads": 2}  # the config's `threads` wins over the job's environment
    assert cli.main([command, "--spec", json.dumps(given), "--out", str(tmp_path / "out.json")]) == 0
    assert handed[1]["threads"] == 2
