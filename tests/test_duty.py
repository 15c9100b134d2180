"""benchmarks/duty.py on a real small CPU run: where the pipeline's time went, and its measurement duty."""

import base64
import copy
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CPU_CONFIG, CPU_SHAPES, ROOT, copy_workflow, snakemake, write_config

SCRIPT = ROOT / "benchmarks" / "duty.py"
TOLERANCE_S = 0.05  # the clocks' resolution: the process's creation to 10 ms, file mtimes coarser than 1 ms


def load_duty():
    spec = importlib.util.spec_from_file_location("duty", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["duty"] = module
    spec.loader.exec_module(module)
    return module


duty = load_duty()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("duty_run")
    copy_workflow(workdir)
    config = copy.deepcopy(CPU_CONFIG)
    write_config(workdir, config)
    snakemake(workdir)
    return workdir


def run_script(run_dir, out):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(run_dir), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


@pytest.fixture(scope="module")
def report(finished_run, tmp_path_factory):
    return run_script(finished_run, tmp_path_factory.mktemp("duty_out") / "duty.json")


def snakemake_record(run_dir: Path, output: str) -> dict:
    """Snakemake's metadata record of one output, read here independently of the script."""
    name = base64.urlsafe_b64encode(output.encode()).decode()
    return json.loads((run_dir / ".snakemake" / "metadata" / name).read_text())


@pytest.mark.slow
def test_every_shape_has_every_phase_recorded_and_non_negative(report):
    _, result = report
    assert set(result["shapes"]) == {shape["name"] for shape in CPU_SHAPES}
    for name, shape in result["shapes"].items():
        assert set(shape["phases"]) == set(duty.PHASES)
        # a run of the current code records every phase; only other (the remainder) is derived
        assert all(value is not None for value in shape["phases"].values()), (name, shape["phases"])
        assert all(value >= 0 for value in shape["phases"].values()), (name, shape["phases"])
        assert shape["kinds"]["other"] == "derived"
        assert {shape["kinds"][phase] for phase in duty.PHASES if phase != "other"} == {"measured"}
        assert shape["worker"] is not None and shape["notes"] == [], shape["notes"]


@pytest.mark.slow
def test_phases_of_a_job_fit_in_its_wall_time(report):
    _, result = report
    for name, shape in result["shapes"].items():
        wall = shape["job"]["wall_s"]
        measured = sum(value for phase, value in shape["phases"].items() if phase != "other")
        assert measured <= wall + TOLERANCE_S, (name, wall, shape["phases"])
        assert sum(shape["phases"].values()) <= wall + TOLERANCE_S, (name, wall, shape["phases"])
        # the timed samples lie inside the sampling rounds
        assert 0 < shape["timed_s"] <= shape["phases"]["sampling"]


@pytest.mark.slow
def test_job_times_are_snakemakes_and_the_phases_attnbenchs(report, finished_run):
    _, result = report
    for name, shape in result["shapes"].items():
        record = snakemake_record(finished_run, f"results/bench/{name}.json")
        assert shape["job"]["wall_s"] == pytest.approx(record["endtime"] - record["starttime"])
        bench = json.loads((finished_run / "results" / "bench" / f"{name}.json").read_text())
        assert shape["phases"]["warm_up"] == bench["timing"]["warmup"]["seconds"]
        assert shape["phases"]["sampling"] == bench["timing"]["elapsed_s"]
        assert shape["phases"]["audit"] == bench["audit_s"]
        assert shape["phases"]["writing"] == pytest.approx(
            record["endtime"] - bench["process"]["finished_at"]
        )


@pytest.mark.slow
def test_the_run_its_other_jobs_and_its_duty(report):
    _, result = report
    pipeline = result["pipeline"]
    assert pipeline["jobs"] == {
        "env_fingerprint": 1,
        "calibrate": 1,
        "benchmark": 2,
        "compare": 2,
        "autotune": 1,
        "report": 1,
    }
    assert pipeline["jobs_without_outputs"] == ["all"]
    assert pipeline["earlier_invocations"] == {}
    assert set(result["other_jobs"]) == {"env_fingerprint", "calibrate", "compare", "autotune", "report"}
    assert result["other_jobs"]["compare"]["jobs"] == 2
    # autotune and report run through `python -m attnbench` (in the warm worker) and record their process
    assert result["other_jobs"]["report"]["start_up_s"] >= 0
    assert result["other_jobs"]["autotune"]["start_up_s"] >= 0
    assert result["other_jobs"]["calibrate"]["start_up_s"] > 0
    wall = pipeline["wall_s"]
    assert 0 < wall <= pipeline["snakemake_elapsed_s"]
    assert pipeline["benchmark_jobs_s"] + pipeline["other_jobs_s"] + pipeline[
        "between_jobs_s"
    ] == pytest.approx(wall)
    assert pipeline["between_jobs_s"] >= 0 and pipeline["max_concurrent_jobs"] == 1
    totals = result["totals"]["phases"]
    assert result["duty"]["measuring_s"] == pytest.approx(totals["warm_up"] + totals["sampling"])
    assert 0 < result["duty"]["value"] < 1
    assert 0 < result["timed_fraction"]["value"] <= result["duty"]["value"]


@pytest.mark.slow
def test_per_shape_overhead_is_the_job_beyond_measuring_plus_its_compare(report, finished_run):
    _, result = report
    overhead = result["per_shape_overhead"]
    assert set(overhead["shapes"]) == set(result["shapes"]) and overhead["counted"] == len(result["shapes"])
    assert overhead["left_out"] == {}
    for name, row in overhead["shapes"].items():
        shape, phases = result["shapes"][name], result["shapes"][name]["phases"]
        beyond = shape["job"]["wall_s"] - phases["warm_up"] - phases["sampling"]
        compare = snakemake_record(finished_run, f"results/compare/{name}.json")  # this shape's own
        assert row["compare_s"] == pytest.approx(compare["endtime"] - compare["starttime"])
        assert row["total_s"] == pytest.approx(beyond + row["compare_s"])
        assert row["less_compile_s"] == pytest.approx(row["total_s"] - phases["compile"])
    totals = sorted(row["total_s"] for row in overhead["shapes"].values())
    assert overhead["total"]["max_s"] == totals[-1]
    assert overhead["total"]["median_s"] == pytest.approx((totals[0] + totals[-1]) / 2)  # two shapes
    assert overhead["total"]["under_1s"] == sum(value < 1 for value in totals)


@pytest.mark.slow
def test_the_text_names_the_duty_and_every_shape(report):
    text, result = report
    assert "measurement duty = (warm-up + sampling) / pipeline wall" in text
    assert f"= {result['duty']['value']:.1%}" in text
    assert f"all of it: median {result['per_shape_overhead']['total']['median_s']:.3f} s" in text
    for name in result["shapes"]:
        assert name in text
    for rule in ("env_fingerprint", "calibrate", "compare", "autotune", "report"):
        assert rule in text
    assert "not recorded" not in text  # every job, autotune and report included, records its process


@pytest.mark.slow
def test_older_files_say_not_recorded(finished_run, tmp_path):
    """A result written before audit_s, timing.elapsed_s, stages, process, build_ms and verify_ms
    existed: those phases are not recorded, and other (the remainder) holds them."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, symlinks=True)
    path = copy / "results" / "bench" / "s64.json"
    bench = json.loads(path.read_text())
    del bench["audit_s"], bench["timing"]["elapsed_s"], bench["process"], bench["stages"]
    for entry in bench["candidates"].values():
        entry.pop("build_ms", None), entry.pop("verify_ms", None)
    path.write_text(json.dumps(bench))
    text, result = run_script(copy, tmp_path / "duty.json")
    shape = result["shapes"]["s64"]
    for phase in ("launch", "start_up", "reference", "build", "verify", "sampling", "audit", "writing"):
        assert shape["phases"][phase] is None and shape["kinds"][phase] == "not recorded"
    assert shape["phases"]["other"] == pytest.approx(
        shape["job"]["wall_s"] - shape["phases"]["compile"] - shape["phases"]["warm_up"]
    )
    assert "s64: launch, start-up, reference, build, verify, sampling, audit, writing not recorded: in other" in text
    assert result["shapes"]["s96_causal"]["phases"]["sampling"] is not None


@pytest.mark.slow
def test_a_later_no_op_rerun_is_skipped(finished_run, tmp_path):
    """`snakemake` on a finished run writes a log that finishes no job: the run is the one before it."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, symlinks=True)
    (copy / ".snakemake" / "log" / "2999-01-01T000000.000000.snakemake.log").write_text(
        "Building DAG of jobs...\nNothing to be done (all requested files are present and up to date).\n"
    )
    _, result = run_script(copy, tmp_path / "duty.json")
    assert set(result["shapes"]) == {shape["name"] for shape in CPU_SHAPES}
    assert any("finished no job" in note for note in result["notes"])


def test_jobs_of_earlier_invocations_are_left_out():
    """A rerun of one shape: the newest log finished one benchmark, compare, autotune and report."""
    jobs = [
        {"rule": "calibrate", "outputs": ["results/env/ceilings.json"], "start": 0.0, "end": 5.0},
        {"rule": "benchmark", "outputs": ["results/bench/b.json"], "start": 8.0, "end": 11.0},
        {"rule": "benchmark", "outputs": ["results/bench/a.json"], "start": 100.0, "end": 103.0},
        {"rule": "report", "outputs": ["results/report/report.html"], "start": 103.0, "end": 104.0},
    ]
    log = {"finished": {"benchmark": 1, "report": 1, "all": 1}, "span_s": 4.0}
    notes = []
    chosen, earlier, outputless = duty.select_invocation(jobs, log, notes)
    assert [(job["rule"], job["start"]) for job in chosen] == [("benchmark", 100.0), ("report", 103.0)]
    assert earlier == {"benchmark": 1, "calibrate": 1}
    assert outputless == ["all"]
    assert notes == ["jobs of earlier invocations are not counted: benchmark 1, calibrate 1"]


def test_per_shape_overhead_names_the_shapes_it_cannot_count():
    def shape(wall, warm_up, sampling, compile_s):
        phases = {"warm_up": warm_up, "sampling": sampling, "compile": compile_s}
        return {"job": {"wall_s": wall}, "phases": phases}

    shapes = {
        "a": shape(3.0, 0.5, 1.0, 1.0),
        "b": shape(2.0, 0.2, 0.3, None),  # compile not recorded: in the total, not in less_compile
        "c": shape(9.0, 1.0, 2.0, 0.0),
        "no_compare": shape(1.0, 0.1, 0.1, 0.0),
        "old": shape(1.0, None, 0.1, 0.0),
    }
    jobs = [
        {"rule": "compare", "outputs": [f"results/compare/{n}.json"], "start": 0.0, "end": 0.5}
        for n in ("a", "b", "c", "old")
    ]
    overhead = duty.per_shape_overhead(shapes, jobs)
    assert overhead["left_out"] == {
        "no_compare": "no compare job in this invocation",
        "old": "warm-up or sampling not recorded",
    }
    assert [overhead["shapes"][n]["total_s"] for n in "abc"] == pytest.approx([2.0, 2.0, 6.5])
    assert overhead["total"] == {"median_s": pytest.approx(2.0), "max_s": 6.5, "under_1s": 0, "shapes": 3}
    assert overhead["less_compile"] == {"median_s": 3.75, "max_s": 6.5, "under_1s": 0, "shapes": 2}
