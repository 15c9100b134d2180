"""Provenance per result (issue 31): each job's document records the commit, dirty flag and diff
digest of the checkout it ran in, the digest of its spec and attnbench's source digest; the report
says which shapes came from which checkout when they differ; a new commit records the environment
again (the fingerprint and the report run again) without measuring anything again."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fixtures_report import SCHEMAS, build, write_run
from helpers import CPU_CONFIG, copy_workflow, measured, planned_jobs, snakemake, write_config

from attnbench import files, jobs, report
from attnbench.documents import ShapeResult
from attnbench.report import Para, Table
from attnbench.report.sections.environment import provenance_section

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def git_of(commit: str | None, dirty: bool = False) -> dict[str, Any]:
    return {
        "commit": commit,
        "dirty": dirty if commit else None,
        "diff_digest": "sha256:" + "c" * 64 if dirty else None,
        "reason": None if commit else "git is not installed",
    }


def test_a_jobs_provenance_names_its_spec_and_attnbenchs_source() -> None:
    made = jobs.provenance({"shape": "s64", "device": "cpu"})
    assert set(made) == {"git", "spec_digest", "attnbench"}
    assert made["spec_digest"] == jobs.provenance({"device": "cpu", "shape": "s64"})["spec_digest"]
    assert made["spec_digest"] != jobs.provenance({"shape": "s96", "device": "cpu"})["spec_digest"]
    assert made["attnbench"]["source_digest"] == files.source_digest()
    assert set(made["git"]) == {"commit", "dirty", "diff_digest", "reason"}


def with_provenance(run: dict[str, Any], commits: dict[str, dict[str, Any] | None]) -> None:
    """The run's bench files as measured at the given checkouts (None: written before provenance)."""
    for path in run["bench_paths"]:
        document = json.loads(Path(path).read_text())
        git = commits[document["shape"]["name"]]
        if git is not None:
            document["provenance"] = jobs.provenance({}) | {"git": git}
        files.write_json(path, document, SCHEMAS / "bench.schema.yaml")


def fingerprint_at(run: dict[str, Any], git: dict[str, Any]) -> None:
    document = json.loads(Path(run["fingerprint_path"]).read_text())
    files.write_json(run["fingerprint_path"], document | {"git": git}, SCHEMAS / "fingerprint.schema.yaml")


def test_the_report_groups_shapes_by_the_checkout_that_measured_them(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    with_provenance(run, {"s1024_d64": git_of(COMMIT_A), "s4096_d64": git_of(COMMIT_B, dirty=True),
                          "s4096_d128_causal_gqa": git_of(COMMIT_A)})  # fmt: skip
    fingerprint_at(run, git_of(COMMIT_B, dirty=True))
    build(run)
    found = report.read_run(
        run["bench_paths"], run["compare_paths"], run["fingerprint_path"], run["ceilings_path"],
        run["autotune_path"], schema_dir=SCHEMAS,
    ).provenance  # fmt: skip
    dirty_b = f"{COMMIT_B} (dirty, diff sha256:cccccccccccc)"
    assert [(g["label"], g["shapes"]) for g in found["groups"]] == [
        (COMMIT_A, ["s1024_d64", "s4096_d128_causal_gqa"]),
        (dirty_b, ["s4096_d64"]),
    ]
    assert found["several"] and found["elsewhere"] and found["current"] == dirty_b
    (section,) = provenance_section(found)
    (para, table) = section.blocks
    assert isinstance(para, Para) and "measured at 2 checkouts" in para.text and dirty_b in para.text
    assert isinstance(table, Table)
    assert table.rows == [[COMMIT_A, "s1024_d64, s4096_d128_causal_gqa"], [dirty_b, "s4096_d64"]]
    markdown = Path(run["out"]["md"]).read_text()
    assert "## Provenance" in markdown and f"| {COMMIT_A} | s1024_d64, s4096_d128_causal_gqa |" in markdown


def test_the_report_says_nothing_of_provenance_when_every_shape_came_from_the_fingerprints_checkout(
    tmp_path: Path,
) -> None:
    run = write_run(tmp_path)
    with_provenance(run, dict.fromkeys(("s1024_d64", "s4096_d64", "s4096_d128_causal_gqa"), git_of(COMMIT_A)))
    fingerprint_at(run, git_of(COMMIT_A))
    build(run)
    assert "Provenance" not in Path(run["out"]["md"]).read_text()
    benches = [ShapeResult.from_json(json.loads(Path(p).read_text())) for p in run["bench_paths"]]
    assert report.provenance(benches, {"git": git_of(COMMIT_A)})["several"] is False


def test_the_report_names_results_read_without_a_digest(tmp_path: Path) -> None:
    run = write_run(tmp_path, shapes=None)
    path = Path(run["bench_paths"][1])
    document = json.loads(path.read_text())
    del document[files.DIGEST]  # as an attnbench older than digests wrote it
    path.write_text(json.dumps(document))
    build(run)
    markdown = Path(run["out"]["md"]).read_text()
    assert "## Provenance" in markdown
    assert (
        "1 result file carries no content digest" in markdown
        and "): s4096_d64. Measure them again" in markdown
    )


# --- the workflow, in a git checkout -------------------------------------------------------------------


def git(workdir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(workdir), "-c", "user.name=t", "-c", "user.email=t@e.org", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def commit_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())["provenance"]["git"]


@needs_git
@pytest.mark.slow
def test_each_result_records_its_commit_and_a_new_commit_records_the_environment_again(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    copy_workflow(workdir)
    write_config(workdir, CPU_CONFIG)
    (workdir / "notes.txt").write_text("one\n")
    env = {
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CEILING_DIRECTORIES": str(tmp_path),
    }
    git(workdir, "init", "-q")
    git(workdir, "add", "-A")
    git(workdir, "commit", "-q", "-m", "first")
    first = git(workdir, "rev-parse", "HEAD")

    snakemake(workdir, env=env)
    results = workdir / "results"
    for name in ("s64", "s96_causal"):
        made = json.loads((results / "bench" / f"{name}.json").read_text())["provenance"]
        assert made["git"] == {"commit": first, "dirty": False, "diff_digest": None, "reason": None}
        assert made["spec_digest"].startswith("sha256:") and made["attnbench"]["source_digest"]
    assert commit_of(results / "compare" / "s64.json")["commit"] == first
    assert json.loads((results / "env" / "fingerprint.json").read_text())["git"]["commit"] == first
    assert planned_jobs(workdir, env=env) == {}  # results/ is not code: writing it made nothing dirty

    # an edit: the environment is recorded again, nothing measured
    (workdir / "notes.txt").write_text("two\n")
    assert planned_jobs(workdir, env=env) == {"env_fingerprint": 1, "report": 1}
    git(workdir, "commit", "-q", "-am", "second")
    second = git(workdir, "rev-parse", "HEAD")
    assert planned_jobs(workdir, env=env) == {"env_fingerprint": 1, "report": 1}

    out = snakemake(workdir, "--forcerun", "results/bench/s64.json", env=env)
    assert measured(out, "s64") and not measured(out, "s96_causal")
    assert commit_of(results / "bench" / "s64.json")["commit"] == second
    assert commit_of(results / "bench" / "s96_causal.json")["commit"] == first
    fingerprint = json.loads((results / "env" / "fingerprint.json").read_text())["git"]
    assert fingerprint == {"commit": second, "dirty": False, "diff_digest": None, "reason": None}
    markdown = (results / "report" / "report.md").read_text()
    provenance = markdown[markdown.index("## Provenance") :]
    assert f"taken at {second}." in provenance
    assert f"| {first} | s96_causal |" in provenance and f"| {second} | s64 |" in provenance
    assert planned_jobs(workdir, env=env) == {}
