"""The whole workflow on the CPU through the snakemake CLI, in a fresh copy of the repository."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import (
    CPU_CONFIG,
    check_finished_run,
    copy_workflow,
    planned_jobs,
    run_snakemake,
    snakemake,
    wait_until,
    write_config,
)

from attnbench import files, headline
from attnbench.config import CONFIG_FILE

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    copy_workflow(workdir)
    write_config(workdir, CPU_CONFIG)
    (workdir / "first-run.out").write_text(snakemake(workdir))
    return workdir


def test_every_output_exists_and_matches_its_schema(finished_run):
    check_finished_run(finished_run)


def test_touching_every_file_reruns_nothing(finished_run):
    later = time.time() + 5
    for path in finished_run.rglob("*"):
        if ".snakemake" not in path.parts and "results" not in path.parts:
            os.utime(path, (later, later))
    assert planned_jobs(finished_run) == {}


def test_a_machine_whose_env_cannot_hold_ctrl_c_reruns_nothing(finished_run, tmp_path):
    """How a job is started (attnbench.jobs.launcher) depends on the machine's `env`; it must never
    rerun a finished shape, e.g. one measured on a node with a newer coreutils."""
    old_env = tmp_path / "bin" / "env"
    old_env.parent.mkdir()
    old_env.write_text('#!/bin/sh\ncase "$1" in --block-signal*) exit 125;; esac\nexec /usr/bin/env "$@"\n')
    old_env.chmod(0o755)
    path = f"{old_env.parent}:{os.environ['PATH']}"
    assert "--block-signal" not in subprocess.run(
        [sys.executable, "-c", "from attnbench import jobs; print(jobs.launcher())"],
        env={**os.environ, "PATH": path}, capture_output=True, text=True, check=True
    ).stdout
    assert planned_jobs(finished_run, env={"PATH": path}) == {}


def test_a_finished_run_moved_to_another_path_reruns_nothing(finished_run, tmp_path):
    """Found by trying it: a finished run cloned to another checkout, a container mount or a CI
    workspace reran every job, because the jobs' params held absolute schema paths."""
    moved = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(finished_run, moved, symlinks=True)  # copy2: modification times kept
    assert planned_jobs(moved) == {}


def test_editing_one_shape_reruns_only_that_shape_and_the_report(finished_run):
    config = yaml.safe_load((finished_run / CONFIG_FILE).read_text())
    config["cpu"]["shapes"][0]["batch"] = 2
    write_config(finished_run, config)
    assert planned_jobs(finished_run) == {"benchmark": 1, "compare": 1, "autotune": 1, "report": 1}
    out = snakemake(finished_run, "--dry-run")
    assert "Benchmark s64:" in out
    assert "Benchmark s96_causal:" not in out


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


def test_the_terminal_shows_each_candidate_and_ends_with_the_answer(finished_run):
    """What a newcomer sees (attnbench.live): per shape the progress and one line per candidate, then
    the headline, the measurement's quality and the report's path; no job's shell command or JSON spec,
    none of Snakemake's per-job bookkeeping, a CUDA-only backend's reason once."""
    out = (finished_run / "first-run.out").read_text()
    assert "--spec" not in out and "python -m attnbench" not in out
    for bookkeeping in ("Select jobs to execute", "Execute 1 jobs", "Finished jobid", "steps (", "Job stats"):
        assert bookkeeping not in out, bookkeeping
    progress = [re.match(r"\[(\d)/2, \d+:\d\d(, ~\d+:\d\d left)?\] (\S+) ", line) for line in out.splitlines()]
    assert sorted(m[3] for m in progress if m) == ["s64", "s96_causal"]
    assert [m[1] for m in progress if m] == ["1", "2"]
    assert re.search(r"\] s96_causal \(reference math [\d.]+ ms ±[\d.]+%; 95% intervals, this shape alone\):", out)
    lines = out.splitlines()
    naive = next(line for line in lines if line.split()[:2] == ["examples.kernels:naive_attention", "ok"])
    assert " ms ±" in naive and "× [" in naive  # median with its CI, speedup with its CI
    assert sum(line.split()[:2] == ["efficient", "unsupported"] for line in lines) == 1  # said once
    assert "report: results/report/report.html" in out
    summary = headline.load(finished_run / "results")
    assert headline.terminal(summary) in out
    assert len(lines) <= 60, out


def _with_a_failed_candidate(finished_run, tmp_path):
    """A copy of the finished run in which one candidate's result says it failed (s96_causal: another
    test edits s64's config)."""
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir, symlinks=True)
    write_config(workdir, CPU_CONFIG)  # the run's own
    bench = workdir / "results" / "bench" / "s96_causal.json"
    document = json.loads(bench.read_text())
    document["candidates"]["flash"].update(status="error", reason="RuntimeError: boom", samples_ms=[],
                                           median_ms=None, ci95_ms=None)
    files.write_json(bench, document)  # as a benchmark job would write it: its digest too
    return workdir


def test_a_failed_candidate_is_listed_and_fails_the_run_only_when_asked(finished_run, tmp_path):
    workdir = _with_a_failed_candidate(finished_run, tmp_path)
    out = snakemake(workdir, "--forcerun", "report")
    # the edited result stands (its compare job runs again, on it: the live view shows the shape again)
    assert json.loads((workdir / "results/bench/s96_causal.json").read_text())["candidates"]["flash"]["status"] == "error"
    assert "  flash  error on s96_causal\n    RuntimeError: boom\n" in out
    failing = run_snakemake(workdir, "--forcerun", "report", "--config", "fail_on_failed_candidates=True")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "fail_on_failed_candidates is on" in failing.stdout + failing.stderr
    assert (workdir / "results" / "report" / "report.html").exists()  # written before the exit


def test_ctrl_c_ends_with_one_line_and_the_same_command_resumes(tmp_path):
    workdir = copy_workflow(tmp_path)
    write_config(workdir, CPU_CONFIG)
    run = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--resources", "gpu=1"],
        cwd=workdir,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    first = workdir / "results" / "bench" / "s64.json"
    wait_until(lambda: first.exists() or run.poll() is not None, timeout=300)
    os.killpg(run.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    out, _ = run.communicate(timeout=120)
    assert run.returncode != 0
    assert "attnbench: stopped with" in out and "run the same command to continue" in out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    snakemake(workdir, "--unlock")
    snakemake(workdir)
    check_finished_run(workdir)


def test_parsing_the_workflow_imports_neither_the_report_nor_matplotlib():
    """Found by profiling a 1,000-shape dry run: the report's default title was read from
    attnbench.report, whose import (scipy, matplotlib) cost every parse of the Snakefile 2 s."""
    probe = (
        "import sys\n"
        "from attnbench import config, jobs, terminal\n"
        "jobs.report_title({})\n"
        "print(sorted(m for m in ('attnbench.report', 'attnbench.plots', 'matplotlib') if m in sys.modules))\n"
    )
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "[]", ran.stdout
