"""Results verified when read (issue 31): every document carries the digest of its content, and a
reader recomputes it and each benchmark result's invariants (a median is its samples' median and lies
in its interval; no result with status ok is faster than the shape's bound allows); a file that fails
is refused naming the file and the field, moved aside by the job that read it, and made again by the
same command, as is a deleted one."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fixtures_report import SCHEMAS, write_run
from helpers import (
    CPU_CONFIG,
    check_finished_run,
    copy_workflow,
    measured,
    run_snakemake,
    snakemake,
    write_config,
)

from attnbench import files, jobs
from attnbench.documents import ShapeResult

BENCH = SCHEMAS / "bench.schema.yaml"


@pytest.fixture
def bench_path(tmp_path: Path) -> Path:
    """One benchmark result as the workflow writes it (fixtures_report: write_json, its schema)."""
    run = write_run(tmp_path / "results", with_compare=False)
    return Path(run["bench_paths"][0])


def edited(path: Path, change: Any) -> dict[str, Any]:
    """The file's document after `change(document)`, written back as a hand edit would (its digest kept)."""
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=1))
    return document


def scale(document: dict[str, Any], factor: float) -> None:
    """Every candidate's samples, median and interval times `factor`: numbers that agree with each other."""
    for entry in document["candidates"].values():
        if entry["median_ms"] is not None:
            entry["samples_ms"] = [value * factor for value in entry["samples_ms"]]
            entry["median_ms"] *= factor
            entry["ci95_ms"] = [value * factor for value in entry["ci95_ms"]]


def test_a_result_carries_the_digest_of_its_content_and_reads_back(bench_path: Path) -> None:
    document = files.read_json(bench_path, BENCH)
    assert document[files.DIGEST] == files.content_digest(document)
    assert ShapeResult.from_json(document).verified
    assert list(document)[-1] == files.DIGEST  # written last, over everything before it


def test_a_median_edited_to_a_value_outside_its_samples_is_refused_naming_file_and_field(
    bench_path: Path,
) -> None:
    edited(bench_path, lambda d: d["candidates"]["flash"].update(median_ms=0.001))
    with pytest.raises(files.ResultFileError) as refused:
        files.read_json(bench_path, BENCH)
    message = str(refused.value)
    assert message.startswith(
        f"{bench_path}: field 'candidates/flash/median_ms': 0.001 is not the median of its 30"
    )
    assert "field 'candidates/flash/ci95_ms'" in message and "does not hold its median_ms 0.001" in message
    assert refused.value.path == str(bench_path)


def test_numbers_scaled_together_are_refused_by_the_digest(bench_path: Path) -> None:
    """Samples, medians and intervals x 0.1 agree with each other (no bound recorded here): the digest
    alone tells them from what was written."""
    edited(bench_path, lambda d: scale(d, 0.1))
    with pytest.raises(files.ResultFileError, match=r"field 'content_digest': sha256:\w+ is not the digest"):
        files.read_json(bench_path, BENCH)


def test_an_ok_result_faster_than_its_bound_allows_is_refused_even_with_a_fresh_digest(
    bench_path: Path,
) -> None:
    """The digest recomputed after the edit (or a file written before digests): the bound recorded in
    the same file still refuses an ok median faster than measured physics, as the audit would have."""
    document = json.loads(bench_path.read_text())
    fastest = min(e["median_ms"] for e in document["candidates"].values() if e["status"] == "ok")
    document["bound"] = {
        "bound_ms": fastest * 0.6,
        "margin": 0.1,
        "limited_by": "compute",
        "intensity": 100.0,
        "ceiling_rel_ci": 0.01,
        "memory_term": False,
    }
    files.write_json(bench_path, document, BENCH)
    files.read_json(bench_path, BENCH)  # 60% of the bound: honest
    scale(document, 0.1)
    files.write_json(bench_path, document, BENCH)
    with pytest.raises(
        files.ResultFileError, match="median_ms': .* with status ok, is 600% of the shape's bound"
    ):
        files.read_json(bench_path, BENCH)
    for entry in document["candidates"].values():  # what the audit writes for such a result
        if entry["status"] == "ok":
            entry.update(status="untrusted", reason="faster than measured physics")
    files.write_json(bench_path, document, BENCH)
    files.read_json(bench_path, BENCH)


def test_a_median_outside_its_own_interval_is_refused(bench_path: Path) -> None:
    document = json.loads(bench_path.read_text())
    median = document["candidates"]["math"]["median_ms"]
    document["candidates"]["math"]["ci95_ms"] = [median * 1.1, median * 1.2]
    files.write_json(bench_path, document, BENCH)
    with pytest.raises(
        files.ResultFileError, match="'candidates/math/ci95_ms': .* does not hold its median_ms"
    ):
        files.read_json(bench_path, BENCH)


def test_a_file_written_before_digests_is_read_with_a_warning_unless_it_records_provenance(
    bench_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Decision: a schema-3 file without a digest is an older attnbench's (re-measuring every result on
    upgrading would cost GPU hours); its numbers are still checked against each other, and the reader
    warns. A file that records its provenance was written since digests: one without is refused."""
    document = edited(bench_path, lambda d: d.pop(files.DIGEST))
    with caplog.at_level(logging.WARNING, logger="attnbench.files"):
        files.read_json(bench_path, BENCH)
    assert f"{bench_path}: {files.UNVERIFIED}" in caplog.text
    document["provenance"] = jobs.provenance({"shape": "s1024_d64"})
    bench_path.write_text(json.dumps(document))
    with pytest.raises(
        files.ResultFileError, match="'content_digest': missing from a file that records its provenance"
    ):
        files.read_json(bench_path, BENCH)


def test_a_truncated_file_is_refused_naming_it(bench_path: Path) -> None:
    bench_path.write_bytes(bench_path.read_bytes()[:500])
    with pytest.raises(files.ResultFileError, match="cannot be read as JSON") as refused:
        files.read_json(bench_path, BENCH)
    assert refused.value.path == str(bench_path)


def test_a_job_reading_a_refused_result_moves_it_aside_and_says_how_to_make_it_again(
    bench_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = str(bench_path.relative_to(tmp_path))
    edited(bench_path, lambda d: d["candidates"]["flash"].update(median_ms=0.001))
    spec = {"bench": relative, "reference": "math", "stats": {}}
    with pytest.raises(files.ResultFileError) as refused:
        jobs.run("compare", spec, SCHEMAS)
    message = str(refused.value)
    assert message.startswith(f"{relative}: field 'candidates/flash/median_ms'")
    assert f"moved aside to {relative}.refused-" in message
    assert message.endswith("run the same command again to measure the shape again")
    assert not bench_path.exists()
    (aside,) = bench_path.parent.glob(f"{bench_path.name}.refused-*")
    assert json.loads(aside.read_text())["candidates"]["flash"]["median_ms"] == 0.001  # kept, for inspection


def test_a_file_that_no_step_makes_is_refused_but_left_in_place(bench_path: Path) -> None:
    """A path outside the workflow's results (attnbench.compare's scratch, a baseline) stays where it is."""
    edited(bench_path, lambda d: d["candidates"]["flash"].update(median_ms=0.001))
    with pytest.raises(files.ResultFileError, match="median_ms") as refused:
        jobs.run("compare", {"bench": str(bench_path), "reference": "math", "stats": {}}, SCHEMAS)
    assert "moved aside" not in str(refused.value) and bench_path.exists()


def test_each_result_path_names_the_step_that_makes_it() -> None:
    assert jobs.producer("results/bench/b2_h8_s512_d64.json") is jobs.JOBS["benchmark"]
    assert jobs.producer("results/compare/x.y-z.json") is jobs.JOBS["compare"]
    assert jobs.producer("results/env/ceilings.json") is jobs.JOBS["calibrate"]
    assert jobs.producer("results/env/fingerprint.json") is jobs.JOBS["fingerprint"]
    assert jobs.producer("results/report/autotune.json") is jobs.JOBS["autotune"]
    assert jobs.producer("baseline.json") is None
    assert jobs.producer("/abs/results/bench/x.json") is None
    assert jobs.producer("results/bench/a/b.json") is None
    assert jobs.producer(None) is None


# --- the same command recovers, in a CPU run of the whole workflow -------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("verified")
    copy_workflow(workdir)
    write_config(workdir, CPU_CONFIG)
    snakemake(workdir)
    return workdir


@pytest.fixture
def workdir(finished_run: Path, tmp_path: Path) -> Path:
    """A copy of the finished run, for one case alone (a finished run moved elsewhere plans no job)."""
    return Path(shutil.copytree(finished_run, tmp_path / "run", symlinks=True))


def bench_file(workdir: Path, shape: str) -> Path:
    return workdir / "results" / "bench" / f"{shape}.json"


def refused_then_recovered(workdir: Path, shape: str) -> tuple[str, str]:
    """The same command twice after a result of `shape` was damaged: the first refuses it, moves it
    aside and stops saying so; the second measures the shape again and finishes the run."""
    first = run_snakemake(workdir)
    out = first.stdout + first.stderr
    assert first.returncode != 0, out[-4000:]
    assert f"moved aside to results/bench/{shape}.json.refused-" in out, out[-4000:]
    assert "run the same command again to measure the shape again" in out
    assert "stopped with 1 of 2 shapes measured" in out
    assert not bench_file(workdir, shape).exists()
    second = snakemake(workdir)
    assert measured(second, shape), second[-4000:]
    check_recovered(workdir, shape)
    return out, second


def check_recovered(workdir: Path, shape: str) -> None:
    """Every result readable, verified, and the report made from the shape measured again."""
    check_finished_run(workdir)
    bench = files.read_json(bench_file(workdir, shape), BENCH)
    summary = pd.read_csv(workdir / "results" / "report" / "summary.csv").query("shape == @shape")
    reported = dict(zip(summary["candidate"], summary["median_ms"]))
    for name, entry in bench["candidates"].items():
        if entry["median_ms"] is not None:
            assert reported[name] == pytest.approx(entry["median_ms"], rel=1e-12)
    assert "Nothing to be done" in snakemake(workdir, "--dry-run")


@pytest.mark.slow
def test_a_truncated_result_is_moved_aside_and_measured_again(workdir: Path) -> None:
    path = bench_file(workdir, "s64")
    path.write_bytes(path.read_bytes()[:1000])
    first, _ = refused_then_recovered(workdir, "s64")
    assert "results/bench/s64.json: cannot be read as JSON" in first


@pytest.mark.slow
def test_a_median_edited_to_0_001_is_refused_and_measured_again(workdir: Path) -> None:
    edited(bench_file(workdir, "s96_causal"), lambda d: d["candidates"]["flash"].update(median_ms=0.001))
    first, _ = refused_then_recovered(workdir, "s96_causal")
    assert (
        "results/bench/s96_causal.json: field 'candidates/flash/median_ms': 0.001 is not the median" in first
    )


@pytest.mark.slow
def test_a_result_scaled_by_a_tenth_is_refused_and_measured_again(workdir: Path) -> None:
    edited(bench_file(workdir, "s64"), lambda d: scale(d, 0.1))
    first, _ = refused_then_recovered(workdir, "s64")
    assert "results/bench/s64.json: field " in first


@pytest.mark.slow
def test_a_deleted_result_is_measured_again_by_the_same_command(workdir: Path) -> None:
    before = copy.deepcopy(json.loads(bench_file(workdir, "s64").read_text()))
    bench_file(workdir, "s96_causal").unlink()
    out = snakemake(workdir)
    assert "Nothing to be done" not in out and measured(out, "s96_causal"), out[-4000:]
    assert not measured(out, "s64")
    assert json.loads(bench_file(workdir, "s64").read_text()) == before  # kept as it was
    check_recovered(workdir, "s96_causal")
