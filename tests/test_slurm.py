"""The default CPU pipeline to its report on a real SLURM, through the user profile profiles/slurm (plus the
CI layer .ci/slurm/profile): each GPU job is its own sbatch job holding one GPU, compare and report run
locally, and the results are those of a local run.

CI starts a one-node SLURM with two fake GPUs (.ci/slurm/up.sh) and sets ATTNBENCH_REQUIRE_SLURM=1, which
turns "no SLURM here" into a failure; elsewhere the test skips when no SLURM controller answers.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
from helpers import ROOT, copy_workflow, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TIMEOUT_S = 900
# The rules that declare `resources: gpu=1`, each with its wildcard names per SLURM job.
GPU_JOBS = {
    "env_fingerprint": [""],
    "calibrate": [""],
    "benchmark": [shape["name"] for shape in helpers.CPU_SHAPES],
}


def slurm_unavailable() -> str | None:
    """Why no SLURM controller answers here, or None when one does."""
    if shutil.which("sinfo") is None:
        return "sinfo is not installed"
    try:
        proc = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    return None if proc.returncode == 0 else f"sinfo failed: {proc.stderr.strip()}"


def scontrol_job(job_id: str) -> dict[str, str]:
    """The controller's record of one job (kept for MinJobAge after it ended)."""
    out = subprocess.run(
        ["scontrol", "-d", "-o", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"(\S+?)=(\S*)", out))


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    why = slurm_unavailable()
    if why and os.environ.get("ATTNBENCH_REQUIRE_SLURM") == "1":
        pytest.fail(f"ATTNBENCH_REQUIRE_SLURM=1, but no SLURM controller answers: {why}")
    if why:
        pytest.skip(f"no SLURM controller answers: {why}")
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm"))
    write_config(workdir, helpers.CPU_CONFIG)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # Snakemake ignores SIGTERM while jobs run; on SIGINT it cancels its SLURM jobs (scancel), and -k kills
    # it if that hangs. --foreground: one SIGINT to Snakemake alone; timeout's default also signals the
    # process group, and the second SIGINT interrupts the scancel. gpu=2 lifts the workflow profile's
    # one-GPU-job-at-a-time cap: the two fake GPUs run two jobs at once.
    command = [
        *("timeout", "--foreground", "-s", "INT", "-k", "60", str(TIMEOUT_S)),
        *(sys.executable, "-m", "snakemake", "--resources", "gpu=2"),
        *("--profile", "profiles/slurm", "--profile", str(ROOT / ".ci" / "slurm" / "profile")),
    ]
    proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        # A killed Snakemake leaves its jobs queued: cancel them (the job name is the run's ID).
        for run_id in re.findall(r"SLURM run ID: (\S+)", output):
            subprocess.run(["scancel", "--name", run_id])
    assert proc.returncode == 0, output
    return workdir, output


def slurm_jobs(workdir: Path) -> dict[tuple[str, str], str]:
    """(rule, wildcards) -> SLURM job ID, from the plugin's logs: rule_<rule>/<wildcards>/<job ID>.log"""
    logs = workdir / ".snakemake" / "slurm_logs"
    jobs = {}
    for log in logs.rglob("*.log"):
        rule, *wildcards = log.parent.relative_to(logs).parts
        key = (rule.removeprefix("rule_"), "/".join(wildcards))
        assert key not in jobs, f"submitted twice: {log}"
        jobs[key] = log.stem
    return jobs


def test_results_match_a_local_run(slurm_run):
    workdir, output = slurm_run
    helpers.check_finished_run(workdir)
    # Job states came from squeue, as the profile says (the plugin says so when it falls back to sacct).
    assert "Falling back to 'sacct'" not in output, output


def test_every_gpu_job_is_one_slurm_job_with_one_gpu(slurm_run):
    workdir, _ = slurm_run
    jobs = slurm_jobs(workdir)
    # compare and report are local rules: only the GPU jobs went through sbatch.
    assert set(jobs) == {(rule, name) for rule, names in GPU_JOBS.items() for name in names}
    for (rule, name), job_id in jobs.items():
        record = scontrol_job(job_id)
        assert record["JobState"] == "COMPLETED", record
        assert record["Comment"] == f"rule_{rule}" + (f"_wildcards_{name}" if name else ""), record
        assert record["TresPerJob"] == "gres:gpu:1", record  # what sbatch asked for: --gpus=1
        assert record["JOB_GRES"] == "gpu:1", record  # what the job was given


def test_benchmarks_record_their_slurm_job(slurm_run):
    workdir, _ = slurm_run
    jobs = slurm_jobs(workdir)
    for name in GPU_JOBS["benchmark"]:
        placement = json.loads((workdir / "results" / "bench" / f"{name}.json").read_text())["placement"]
        assert placement["source"] == "slurm", placement
        assert placement["slurm_job_id"] == jobs["benchmark", name], placement
