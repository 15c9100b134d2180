"""The whole workflow on the CPU through the snakemake CLI, in a fresh copy of the repository."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import SCHEMAS, copy_workflow

from attnbench import files

pytestmark = pytest.mark.slow

SHAPES = [
    {"name": "s64", "batch": 1, "heads": 2, "seq": 64, "dim": 16, "causal": False},
    {"name": "s96_causal", "batch": 1, "heads": 2, "seq": 96, "dim": 16, "causal": True},
]
CONFIG = {
    "device": "auto",
    "dtype": "bfloat16",
    "candidates": ["flash", "math"],
    "reference": "math",
    "shapes": [{"name": "gpu_only", "batch": 1, "heads": 2, "seq": 4096, "dim": 64}],
    "cpu": {
        "dtype": "float32",
        "candidates": ["flash", "efficient", "math", "examples.kernels:naive_attention"],
        "reference": "math",
        "shapes": SHAPES,
        "timing": {"warmup": 1, "warmup_max_s": 0.2, "min_rounds": 6, "max_time_s": 1},
        "calibrate": {"matmul_size": 128, "copy_mb": 8, "rounds": 3},
    },
    "stats": {"n_resamples": 2000},
}


def snakemake(workdir, *args, gpus=1, env=None):
    env = {**os.environ, **(env or {}), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", str(gpus), "--resources", f"gpu={gpus}", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def planned_jobs(workdir):
    """Job counts per rule from a dry run ({} when there is nothing to do)."""
    out = snakemake(workdir, "--dry-run")
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1]
    return {
        m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] not in ("total", "all")
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    copy_workflow(workdir)
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    snakemake(workdir)
    return workdir


def test_every_output_exists_and_matches_its_schema(finished_run):
    results = finished_run / "results"
    checks = {"env/fingerprint.json": "fingerprint", "env/ceilings.json": "ceilings"}
    for shape in SHAPES:
        checks[f"bench/{shape['name']}.json"] = "bench"
        checks[f"compare/{shape['name']}.json"] = "compare"
    for relative, schema in checks.items():
        files.read_json(results / relative, SCHEMAS / f"{schema}.schema.yaml")
    bench = json.loads((results / "bench/s96_causal.json").read_text())
    assert bench["device"] == "cpu" and bench["shape"]["causal"] is True
    statuses = {name: entry["status"] for name, entry in bench["candidates"].items()}
    assert statuses == {
        "flash": "ok",
        "efficient": "unsupported",
        "math": "ok",
        "examples.kernels:naive_attention": "ok",
    }
    for entry in bench["candidates"].values():
        if entry["status"] == "ok":
            assert entry["median_ms"] == pytest.approx(float(np.median(entry["samples_ms"])))
    compare = json.loads((results / "compare/s96_causal.json").read_text())
    assert {c["candidate"] for c in compare["comparisons"]} == {"flash", "examples.kernels:naive_attention"}
    report = results / "report"
    for name in ("report.html", "report.md", "summary.csv", "plots/latency.png", "plots/speedup.png"):
        assert (report / name).stat().st_size > 0
    assert "efficient" in (report / "report.md").read_text()
    # device: auto on a machine without CUDA: the report says the run fell back, and why
    assert "cpu (device: auto fell back to the CPU: device is cpu: " in (report / "report.md").read_text()
    assert not list(results.rglob(".*.tmp")), "temporary files left behind"


def test_touching_every_file_reruns_nothing(finished_run):
    later = time.time() + 5
    for path in finished_run.rglob("*"):
        if ".snakemake" not in path.parts and "results" not in path.parts:
            os.utime(path, (later, later))
    assert planned_jobs(finished_run) == {}


def test_a_finished_run_moved_to_another_path_reruns_nothing(finished_run, tmp_path):
    """Found by trying it: a finished run cloned to another checkout, a container mount or a CI
    workspace reran every job, because the jobs' params held absolute schema paths."""
    moved = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(finished_run, moved, symlinks=True)  # copy2: modification times kept
    assert planned_jobs(moved) == {}


def test_editing_one_shape_reruns_only_that_shape_and_the_report(finished_run):
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    config["cpu"]["shapes"][0]["batch"] = 2
    (finished_run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert planned_jobs(finished_run) == {"benchmark": 1, "compare": 1, "autotune": 1, "report": 1}
    out = snakemake(finished_run, "--dry-run")
    assert "output: results/bench/s64.json" in out
    assert "output: results/bench/s96_causal.json" not in out


def test_snakemake_report_builds(finished_run):
    snakemake(finished_run, "--report", "report.zip")
    assert (finished_run / "report.zip").stat().st_size > 0


def test_jobs_ran_in_a_warm_worker(finished_run):
    """Benchmark and compare jobs hand their work to a long-lived worker (attnbench.worker) and say so."""
    documents = [
        json.loads(path.read_text())
        for folder in ("bench", "compare")
        for path in sorted((finished_run / "results" / folder).glob("*.json"))
    ]
    workers = [document["process"]["worker"] for document in documents]
    assert all(workers), "every job records the worker that ran it"
    assert max(w["jobs_before"] for w in workers) > 0, "later jobs reuse a worker instead of starting one"
