"""The example GitHub Actions workflow (.github/workflows/gpu-benchmark.yml) is clean under actionlint and
keeps its promises: PRs to main are gated against a baseline saved by pushes to main, on a self-hosted GPU
runner that only one benchmark uses at a time."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "gpu-benchmark.yml"
MARKER = "<!-- attnbench-ratchet -->"


def actionlint() -> str | None:
    beside = Path(sys.executable).parent / "actionlint"
    return str(beside) if beside.exists() else shutil.which("actionlint")


@pytest.fixture(scope="module")
def text() -> str:
    return WORKFLOW.read_text()


@pytest.fixture(scope="module")
def workflow(text) -> dict:
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def job(workflow) -> dict:
    (only,) = workflow["jobs"].values()
    return only


def runs(job) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def step_using(job, action: str) -> list[dict]:
    return [step for step in job["steps"] if step.get("uses", "").startswith(action + "@")]


def test_actionlint_is_clean():
    binary = actionlint()
    if binary is None:
        pytest.skip("actionlint is not installed (pip install -e '.[test]')")
    proc = subprocess.run(
        [binary, "-no-color", "-config-file", str(ROOT / ".github" / "actionlint.yaml"), str(WORKFLOW)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"actionlint exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"


def test_triggers_on_pull_requests_and_pushes_to_main(workflow):
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert set(on) == {"pull_request", "push"}
    assert on["pull_request"]["branches"] == ["main"]
    assert on["push"]["branches"] == ["main"]


def test_runs_alone_on_a_self_hosted_gpu_runner(workflow, job):
    assert set(job["runs-on"]) == {"self-hosted", "gpu"}
    concurrency = workflow.get("concurrency") or job.get("concurrency")
    assert concurrency and concurrency["group"], "no concurrency group: two runs could share the GPU"
    assert concurrency.get("cancel-in-progress", False) is False, "a running benchmark must not be cancelled"


def test_permissions_are_minimal(workflow):
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write", "actions": "read"}


def test_pipeline_baseline_and_gate_commands(job):
    script = runs(job)
    assert "snakemake" in script and "--cores 1 --resources gpu=1" in script
    assert "--config baseline=baseline.json" in script
    assert "attnbench baseline save results baseline.json" in script
    assert "attnbench gate results/ratchet/verdict.json" in script
    assert not re.search(r"pip install[^\n]*\btorch\b", script), "torch comes preinstalled on the runner"


def test_baseline_artifact_is_saved_on_push_and_fetched_on_pull_requests(job):
    uploads = step_using(job, "actions/upload-artifact")
    (baseline,) = [step for step in uploads if step["with"]["name"] == "attnbench-baseline"]
    assert "push" in baseline["if"]
    assert int(baseline["with"]["retention-days"]) >= 30
    assert any(step["with"]["path"].rstrip("/") == "results" for step in uploads)
    script = runs(job)
    assert "gh run list" in script and "gh run download" in script and "--name attnbench-baseline" in script
    assert "GITHUB_STEP_SUMMARY" in script


def test_one_pr_comment_found_by_its_marker(text, job):
    assert MARKER in text
    (comment,) = step_using(job, "actions/github-script")
    script = comment["with"]["script"]
    assert "results/ratchet/comment.md" in script
    assert "updateComment" in script and "createComment" in script and "marker" in script


def test_job_fails_with_the_gates_exit_code(job):
    gate = next(step for step in job["steps"] if "attnbench gate" in step.get("run", ""))
    assert "|| code=$?" in gate["run"], "the gate's exit code must be captured, not fail the step at once"
    last = job["steps"][-1]
    assert f"steps.{gate['id']}.outputs.code" in last["if"] + str(last.get("env", {}))
    assert 'exit "$GATE_CODE"' in last["run"]


def test_actions_are_pinned_to_a_major_version(job):
    for step in job["steps"]:
        if "uses" in step:
            assert re.fullmatch(r"actions/[\w-]+@v\d+", step["uses"]), step["uses"]
