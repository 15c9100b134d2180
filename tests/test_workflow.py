"""The whole workflow on the CPU through the snakemake CLI, in a fresh copy of the repository."""

import json
import os
import re
import shutil
import time

import pytest
import yaml
from helpers import CPU_CONFIG, check_finished_run, copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    copy_workflow(workdir)
    (workdir / "config.yaml").write_text(yaml.safe_dump(CPU_CONFIG, sort_keys=False))
    snakemake(workdir)
    return workdir


def test_every_output_exists_and_matches_its_schema(finished_run):
    check_finished_run(finished_run)


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


def test_what_snakemake_report_imports_is_a_dependency():
    """Found by trying the Quick start: `snakemake --report` failed after `pip install -e .` alone,
    because pygments came only with the test extra (through pytest)."""
    from importlib.metadata import requires

    declared = {re.split(r"[<>=!~; \[]", requirement, maxsplit=1)[0].lower() for requirement in requires("attnbench")}
    assert {"pygments", "jinja2", "psutil"} <= declared
