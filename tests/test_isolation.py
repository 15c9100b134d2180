"""Found on an H200: a kernel with an out-of-bounds store (a sticky CUDA error) listed with flash, cuDNN and
math lost every result on every shape, unnamed. Now a candidate that crashes its process or the CUDA
context costs only its own result (attnbench.isolation). On the CPU: kernels that exit, abort, segfault
or raise CUDA's sticky error, among honest candidates; on a GPU, a Triton kernel with an out-of-bounds
store."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import helpers
import pytest
from helpers import ROOT, SCHEMAS, alive, copy_workflow, wait_until, write_config

from attnbench import config, files, host, isolation, jobs
from attnbench.bench import run_shape

SHAPE = {
    "name": "s64",
    "batch": 1,
    "heads": 2,
    "kv_heads": 2,
    "seq": 64,
    "seq_kv": 64,
    "dim": 16,
    "causal": False,
}
TIMING = {"warmup": 1, "warmup_max_s": 0.2, "min_rounds": 6, "max_rounds": 6}
STICKY = "RuntimeError: CUDA error: an illegal memory access was encountered"
# Stands in for compute-sanitizer --tool memcheck: runs the replay and reports its last line as memcheck would.
FAKE_SANITIZER = """#!/bin/sh
shift 2
echo "========= COMPUTE-SANITIZER"
"$@" 2>&1 | tail -n 1 | sed 's/^/========= /'
"""


def spec(candidates, **overrides):
    return helpers.complete_spec({"shape": SHAPE, "device": "cpu", "dtype": "float32", "mode": "forward",
                                  "candidates": candidates, "timing": TIMING, "lock": {"seed": 0}, **overrides})  # fmt: skip


@pytest.fixture
def job_env(tmp_path, monkeypatch):
    return helpers.job_environment(tmp_path, monkeypatch)


def benchmark(job_spec, out, **variables):
    """`attnbench benchmark` as the workflow runs it: the result, validated, and the job's log."""
    argv = [sys.executable, "-m", "attnbench", "benchmark", "--spec", json.dumps(job_spec), "--out", str(out),
            "--schemas", str(SCHEMAS)]  # fmt: skip
    job = subprocess.run(
        argv, env={**os.environ, **variables}, capture_output=True, text=True, timeout=300, check=False
    )
    assert job.returncode == 0, job.stderr
    return files.read_json(out, SCHEMAS / "bench.schema.yaml"), job.stderr


def statuses(document):
    return {name: entry["status"] for name, entry in document["candidates"].items()}


def test_sticky_cuda_errors_are_told_apart_from_the_others():
    sticky = [
        "CUDA error: an illegal memory access was encountered",
        "Triton Error [CUDA]: misaligned address",
        "CUDA error: device-side assert triggered\nCompile with `TORCH_USE_CUDA_DSA` ...",
        "CUDA error: unspecified launch failure",
        "CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, opb, ...)`",
    ]
    others = [
        "CUDA out of memory. Tried to allocate 20.00 GiB",
        "this kernel always fails",
        "No available kernel.",
    ]
    assert all(isolation.is_sticky(RuntimeError(text)) for text in sticky)
    assert not any(isolation.is_sticky(RuntimeError(text)) for text in others)


def test_a_crash_before_any_candidate_ran_is_no_candidates():
    """Setting up the shape (inputs, float64 reference) runs no candidate: nobody is blamed or replayed."""

    def measure(job_spec):
        raise isolation.Crash("was killed by SIGSEGV", None, "pid 1", checked=False)

    def replay(job_spec, variables):
        raise AssertionError(f"replayed {job_spec['candidates']}")

    with pytest.raises(RuntimeError, match="s64: pid 1 was killed by SIGSEGV while setting up the shape"):
        isolation.supervise(spec(["math", "flash"]), measure, replay, log=print)


def test_the_sanitizer_switch_is_a_job_parameter_only_while_on():
    """Off, the jobs' parameters are those of earlier runs: adding the switch reruns nothing."""
    run_config = {
        "device": "cpu",
        "dtype": "float32",
        "candidates": ["math"],
        "reference": "math",
        "shapes": [SHAPE],
    }
    files.validate({**run_config, "sanitize_crashes": True}, SCHEMAS / "config.schema.yaml", source="config")
    run = config.resolve(run_config)
    off = json.loads(jobs.spec("benchmark", run, "s64"))
    on = json.loads(jobs.spec("benchmark", {**run, "sanitize_crashes": True}, "s64"))
    assert "sanitize_crashes" not in off and on == {**off, "sanitize_crashes": True}


def test_a_sticky_error_stops_the_shape_and_names_the_candidate_whose_checks_raised_it(
    monkeypatch, locked_env
):
    """The checks synchronise after every call, so the error is the candidate's own; the rounds do not."""
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    heard = []
    with pytest.raises(isolation.ContextLost) as lost:
        run_shape(spec(["math", "crashing_kernels:loses_context", "flash"]), heard.append)
    assert (lost.value.candidate, lost.value.error) == ("crashing_kernels:loses_context", STICKY)
    assert heard == ["math", "crashing_kernels:loses_context"]  # flash never ran in a lost context
    with pytest.raises(isolation.ContextLost) as lost:
        run_shape(spec(["math", "crashing_kernels:loses_context_while_timed"]))
    assert lost.value.candidate is None


@pytest.mark.slow
def test_without_a_worker_the_job_names_the_signal_and_replays_to_find_a_crash_in_the_rounds(job_env):
    """ATTNBENCH_WORKER=0 (and SLURM): the shape is measured in a child of the job, never the job itself."""
    names = ["math", "crashing_kernels:segfaults_while_timed", "crashing_kernels:aborts"]
    document, log = benchmark(spec(names), job_env / "out.json", ATTNBENCH_WORKER="0")
    assert statuses(document) == {
        "math": "ok",
        "crashing_kernels:segfaults_while_timed": "crashed",
        "crashing_kernels:aborts": "crashed",
    }
    assert len(document["candidates"]["math"]["samples_ms"]) == TIMING["min_rounds"]
    aborts = document["candidates"]["crashing_kernels:aborts"]
    assert aborts["reason"].startswith("in its checks, its process was killed by SIGABRT; debug it alone")
    assert aborts["crash"]["found_by"] == "it was running its checks when its process crashed"
    segfaults = document["candidates"]["crashing_kernels:segfaults_while_timed"]["crash"]
    assert (segfaults["what"], segfaults["phase"]) == (
        "was killed by SIGSEGV",
        "the timed rounds or the audit",
    )
    assert segfaults["found_by"] == "replayed alone in a fresh process, it crashed"
    assert "a child of this job" in segfaults["process"] and document["process"]["worker"] is None
    for function in ("aborts", "segfaults_while_timed"):  # faulthandler, in the job's log
        assert re.search(rf'crashing_kernels.py", line \d+ in {function}\n', log)
    # The replay command measures the culprit alone, the rest of the job's spec unchanged.
    replayed = json.loads(shlex.split(segfaults["replay"])[-1])
    # ...with the CPU threads the job measured with (its OMP_NUM_THREADS, else every core: attnbench.host)
    assert replayed == spec(["crashing_kernels:segfaults_while_timed"]) | {"threads": host.job_threads(None)}


@pytest.mark.slow
def test_a_lost_context_in_the_rounds_is_replayed_alone_sanitized_and_retires_the_worker(job_env):
    sanitizer = job_env / "bin" / "compute-sanitizer"
    sanitizer.parent.mkdir()
    sanitizer.write_text(FAKE_SANITIZER)
    sanitizer.chmod(0o755)
    names = ["math", "crashing_kernels:loses_context_while_timed", "flash"]
    document, log = benchmark(
        spec(names, sanitize_crashes=True),
        job_env / "out.json",
        PATH=f"{sanitizer.parent}:{os.environ['PATH']}",
    )
    assert statuses(document) == {
        "math": "ok",
        "crashing_kernels:loses_context_while_timed": "crashed",
        "flash": "ok",
    }
    crash = document["candidates"]["crashing_kernels:loses_context_while_timed"]["crash"]
    assert crash["what"] == f"lost the CUDA context ({STICKY})"
    assert crash["phase"] == "the timed rounds or the audit"
    assert crash["found_by"] == "replayed alone in a fresh process, it crashed"
    # The sanitizer ran the replay, which reproduced the error.
    assert crash["sanitizer"] == [
        "========= COMPUTE-SANITIZER",
        f"========= attnbench.isolation.ContextLost: {STICKY}",
    ]
    # The worker that lost its context exited; the shape was measured again in a fresh one.
    first = int(re.search(r"running in worker pid (\d+)", log)[1])
    assert document["process"]["worker"]["pid"] != first and document["process"]["worker"]["jobs_before"] == 0
    assert wait_until(lambda: not alive(first))


@pytest.mark.slow
def test_a_kernel_that_kills_its_process_costs_only_its_own_result(tmp_path):
    """The workflow over two shapes, the crasher among honest candidates: every other result, the report."""
    copy_workflow(tmp_path)
    shutil.copy(ROOT / "tests" / "crashing_kernels.py", tmp_path)
    config = copy.deepcopy(helpers.CPU_CONFIG)
    config["cpu"]["candidates"] = ["math", "flash", "crashing_kernels:exits"]
    write_config(tmp_path, config)
    helpers.snakemake(tmp_path)  # exits 0: every job wrote its result
    results = tmp_path / "results"
    for shape in helpers.CPU_SHAPES:
        document = files.read_json(results / "bench" / f"{shape['name']}.json", SCHEMAS / "bench.schema.yaml")
        assert statuses(document) == {"math": "ok", "flash": "ok", "crashing_kernels:exits": "crashed"}
        assert all(document["candidates"][name]["samples_ms"] for name in ("math", "flash"))
        crash = document["candidates"]["crashing_kernels:exits"]["crash"]
        assert (crash["what"], crash["phase"]) == ("ended without an answer or a traceback", "its checks")
        compare = files.read_json(results / "compare" / f"{shape['name']}.json", SCHEMAS / "compare.schema.yaml")
        assert [c["candidate"] for c in compare["comparisons"]] == ["flash"]
    report = (results / "report" / "report.md").read_text()
    assert (
        "| crashing_kernels:exits | crashed | in its checks, its process ended without an answer" in report
    )
    # A run with a crashed candidate is a baseline like any other.
    save = subprocess.run(
        [sys.executable, "-m", "attnbench", "baseline", "save", "results", "baseline.json"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert save.returncode == 0, save.stderr


@pytest.mark.gpu
def test_a_triton_kernel_with_an_out_of_bounds_store_costs_only_its_own_result(job_env):
    pytest.importorskip("triton")
    names = ["flash", "cudnn", "math", "triton_kernels:stores_out_of_bounds",
             "triton_kernels:stores_out_of_bounds_while_timed"]  # fmt: skip
    shape = {**SHAPE, "name": "b2_h8_s512_d64", "batch": 2, "heads": 8, "kv_heads": 8, "seq": 512, "seq_kv": 512,
             "dim": 64}  # fmt: skip
    timing = {"warmup": 1, "warmup_max_s": 1, "min_rounds": 20, "max_time_s": 2}
    document, _ = benchmark(
        spec(names, device="cuda", dtype="bfloat16", shape=shape, timing=timing), job_env / "out.json"
    )
    assert statuses(document) == {
        "flash": "ok",
        "cudnn": "ok",
        "math": "ok",
        "triton_kernels:stores_out_of_bounds": "crashed",
        "triton_kernels:stores_out_of_bounds_while_timed": "crashed",
    }
    first, timed = (
        document["candidates"][f"triton_kernels:stores_out_of_bounds{tail}"]["crash"]
        for tail in ("", "_while_timed")
    )
    assert "illegal memory access" in first["what"] and first["phase"] == "its checks"
    assert "illegal memory access" in timed["what"] and timed["phase"] == "the timed rounds or the audit"
    assert timed["found_by"] == "replayed alone in a fresh process, it crashed"


@pytest.mark.gpu
def test_compute_sanitizer_reports_the_out_of_bounds_store(job_env):
    pytest.importorskip("triton")
    if shutil.which("compute-sanitizer") is None:
        pytest.skip("compute-sanitizer is not on PATH")
    shape = {
        **SHAPE,
        "name": "b1_h4_s256_d64",
        "heads": 4,
        "kv_heads": 4,
        "seq": 256,
        "seq_kv": 256,
        "dim": 64,
    }
    job_spec = spec(["math", "triton_kernels:stores_out_of_bounds"], device="cuda", dtype="bfloat16", shape=shape,
                    sanitize_crashes=True)  # fmt: skip
    document, _ = benchmark(job_spec, job_env / "out.json")
    assert statuses(document) == {"math": "ok", "triton_kernels:stores_out_of_bounds": "crashed"}
    report = document["candidates"]["triton_kernels:stores_out_of_bounds"]["crash"]["sanitizer"]
    assert any("Invalid __global__ write" in line for line in report), report


def test_a_sanitizer_that_runs_out_of_time_leaves_no_replay_behind(tmp_path, monkeypatch):
    """The replay it started must not keep running (on the GPU, after the job gave its lease back)."""
    pid_file = tmp_path / "replay.pid"
    fake = tmp_path / "compute-sanitizer"
    fake.write_text(f"#!/bin/sh\nsleep 600 &\necho $! > {pid_file}\nwait\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(isolation, "SANITIZER_TIMEOUT_S", 1.0)
    assert isolation.sanitize(["replay"]) == ["no report within 1 s"]
    assert wait_until(lambda: pid_file.exists() and not alive(int(pid_file.read_text())))


@pytest.mark.slow
def test_a_shape_all_of_whose_candidates_crash_is_written_with_each_crash(job_env):
    """In the warm worker too: the shape's record without a candidate comes from a child, whose
    document no schema refuses for being empty, and the job writes it with the crashes."""
    document, _ = benchmark(spec(["crashing_kernels:aborts"]), job_env / "out.json")
    assert statuses(document) == {"crashing_kernels:aborts": "crashed"}


@pytest.mark.slow
def test_without_a_worker_a_spec_missing_a_setting_is_refused_too(job_env):
    """ATTNBENCH_WORKER=0 (and SLURM): the child checks the spec as the warm worker does."""
    partial = spec(["math"])
    del partial["timing"]["call_timeout_s"]
    argv = [sys.executable, "-m", "attnbench", "benchmark", "--spec", json.dumps(partial), "--out",
            str(job_env / "out.json"), "--schemas", str(SCHEMAS)]  # fmt: skip
    job = subprocess.run(argv, env={**os.environ, "ATTNBENCH_WORKER": "0"}, capture_output=True, text=True)
    assert job.returncode == 1 and "field 'timing'" in job.stderr and "call_timeout_s" in job.stderr
    assert not (job_env / "out.json").exists()
