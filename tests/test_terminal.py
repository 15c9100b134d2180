"""What a run prints (attnbench.terminal): one line per candidate after each shape, the answer at the
end, and the exit decision for fail_on_failed_candidates."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fixtures_report import (
    EDGE,
    EVIL,
    FEW_ROUNDS,
    SHAPES,
    agrees,
    build,
    printed_speedup,
    read_back,
    write_run,
    write_verdict_run,
)
from helpers import shape_result

from attnbench import __version__, formatting, headline, jobs, quality, report, terminal
from attnbench.documents import ShapeComparisons, ShapeResult
from attnbench.stats import MIN_ROUNDS, TOO_FEW_ROUNDS


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    kwargs = write_run(tmp_path_factory.mktemp("run"))
    build(kwargs)
    return kwargs


def _results(run: dict[str, Any]) -> Path:
    return Path(run["out"]["html"]).parents[1]


def test_each_candidate_gets_one_line_with_its_numbers_or_its_reason(run: dict[str, Any]) -> None:
    bench_path, compare_path = run["bench_paths"][0], run["compare_paths"][0]
    bench, compare = (json.loads(Path(p).read_text()) for p in (bench_path, compare_path))
    lines = terminal.candidate_lines(ShapeResult.from_json(bench), ShapeComparisons.from_json(compare))
    reference = bench["candidates"][compare["reference"]]
    # the reference's median in the shape's line: one line fewer per shape
    assert lines[0] == (
        f"{compare['shape']} (reference {compare['reference']} {reference['median_ms']:.4g} ms"
        f" ±{reference['rel_ci']:.1%}; 95% intervals, this shape alone):"
    )
    assert len(lines) == len(bench["candidates"])
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert compare["reference"] not in by_name
    flash = next(c for c in compare["comparisons"] if c["candidate"] == "flash")
    assert f"{bench['candidates']['flash']['median_ms']:.4g} ms ±" in by_name["flash"]
    printed = formatting.speedup_interval(flash["speedup"], *flash["speedup_ci"])
    assert by_name["flash"].endswith(f"  {printed} faster") and flash["verdict"] == "faster"
    # undecided: "same", and about how many rounds in all would decide it, at the shape's pace
    flex = next(c for c in compare["comparisons"] if c["candidate"] == "flex")
    assert flex["verdict"] == "same" and flex["rounds_to_decide"] > flex["rounds"]
    seconds = (flex["rounds_to_decide"] - flex["rounds"]) * 2.5 / bench["timing"]["rounds_kept"]
    assert by_name["flex"].endswith(
        f" same (about {flex['rounds_to_decide']} rounds would decide, ~{quality.seconds(seconds)} s more sampling)"
    )
    for name, entry in bench["candidates"].items():
        if entry["status"] != "ok":
            assert entry["status"] in by_name[name] and entry["reason"].split()[0] in by_name[name]


def test_the_end_of_a_run_prints_the_answer_and_decides_the_exit(run, capsys, monkeypatch) -> None:
    results = _results(run)
    report = Path(run["out"]["html"])
    assert terminal.finished(results, report, fail_on_failed=False) is None
    printed = capsys.readouterr().out
    # the headline, then one line on the measurement's quality, then the report's path
    lines = printed.strip().splitlines()
    assert lines[:-2] == headline.terminal(headline.load(results)).splitlines()
    assert lines[-2].startswith("⚠ measurement: ") and lines[-1] == f"report: {report}"
    assert EVIL in printed
    why = terminal.finished(results, report, fail_on_failed=True)
    assert why is not None and "fail_on_failed_candidates is on" in why
    monkeypatch.setenv(terminal.HEADLINE_VARIABLE, "1")  # attnbench run prints it itself
    capsys.readouterr()
    assert terminal.finished(results, report, fail_on_failed=True) == why
    assert capsys.readouterr().out == ""


def test_a_stopped_run_says_what_finished_and_how_to_resume(run, capsys) -> None:
    results = _results(run)
    names = [Path(p).stem for p in run["bench_paths"]]
    terminal.stopped(results, [*names, "never_measured"])
    out = capsys.readouterr().out
    assert f"stopped with {len(names)} of {len(names) + 1} shapes measured" in out
    assert "run the same command to continue" in out
    terminal.stopped(results, names)  # every shape measured: the report is what is left
    out = capsys.readouterr().out
    assert f"stopped after all {len(names)} shapes were measured" in out and "run the same command to finish" in out


def test_a_failed_reference_and_long_reasons_keep_the_lines_readable() -> None:
    """Found in review: with the reference failed, ok candidates showed no speedup and no why; a
    multi-line reason broke the table."""
    bench = shape_result({"shape": {"name": "s1"}, "candidates": {
        "math": {"status": "error", "reason": "RuntimeError: boom", "median_ms": None},
        "flash": {"status": "ok", "reason": None, "median_ms": 0.5, "rel_ci": 0.004},
        "mine": {"status": "unsupported", "reason": "line one\nline two " + "x" * 300, "median_ms": None},
    }})  # fmt: skip
    compare = ShapeComparisons.from_json(
        {"shape": "s1", "reference": "math", "reason": "reference math is error", "comparisons": []}
    )
    lines = terminal.candidate_lines(bench, compare)
    assert lines[:2] == ["s1 (reference math):", "  no speedups: reference math is error"]
    assert all("\n" not in line for line in lines)
    # a reason is never cut (its fix comes last): one line, however long
    assert lines[4].startswith("  mine   unsupported  line one line two x") and lines[4].endswith("x" * 300)


@pytest.mark.skipif(shutil.which("env") is None, reason="no env on PATH")
def test_a_ctrl_c_while_a_job_starts_ends_it_with_one_line() -> None:
    """The Ctrl-C lands before the job's interpreter has started (as when a run is interrupted the
    moment a job begins): held by the launcher, it reaches cli.main, which ends the job with one line
    instead of a start-up traceback."""
    launcher = shlex.split(str(jobs.launcher()))
    assert launcher[:2] == ["env", "--block-signal=INT"], "GNU env (coreutils >= 8.31) holds Ctrl-C here"
    python = shlex.join([sys.executable, *launcher[3:]])  # launcher[2] is `python` on the job's PATH
    ran = subprocess.run(
        [*launcher[:2], "sh", "-c", f"kill -INT $$; exec {python} --version"], capture_output=True, text=True
    )
    assert ran.returncode == 130, (ran.returncode, ran.stdout, ran.stderr)
    assert "interrupted (Ctrl-C) while starting" in ran.stderr
    assert "Traceback" not in ran.stderr and "Fatal Python error" not in ran.stderr
    assert __version__ not in ran.stdout  # ended before it did anything


@pytest.mark.parametrize("window_s, said", [(30, "first\nsecond was the same interrupt\n"), (0, "first\nsecond\n")])
def test_a_sigint_repeated_at_once_is_one_interrupt(window_s: float, said: str) -> None:
    """`timeout -s INT` signals Snakemake twice; the second KeyboardInterrupt landed in Snakemake's
    shutdown and printed its tracebacks. The workflow's process takes SIGINTs that close as one."""
    probe = (
        "import os, signal, time\n"
        "from attnbench import jobs\n"
        f"jobs.coalesce_interrupts(window_s={window_s})\n"
        "for name in ('first', 'second'):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT); time.sleep(0.5)\n"
        "        print(name, 'was the same interrupt')\n"
        "    except KeyboardInterrupt:\n"
        "        print(name)\n"
    )
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert ran.stdout == said, ran.stdout + ran.stderr


# ------------------------------------------------------------------ measurement quality, verdicts


def _line(run: dict[str, Any]) -> str | None:
    return terminal.quality_line(_results(run))


def _benches_and_compares(results: Path) -> tuple[list[ShapeResult], list[ShapeComparisons]]:
    read = lambda folder, kind: [kind.from_json(json.loads(p.read_text())) for p in sorted((results / folder).glob("*.json"))]  # noqa: E731
    return read("bench", ShapeResult), read("compare", ShapeComparisons)


def test_a_cpu_run_names_the_cpu_sections_knobs(tmp_path: Path) -> None:
    missed = write_run(tmp_path / "cpu", device="cpu", conditions={})
    line = terminal.quality_line(Path(missed["out"]["html"]).parents[1])
    assert "(raise cpu.timing.max_time_s, or loosen cpu.timing.target_rel_ci)" in line, line


def test_the_end_of_a_run_tells_the_measurements_quality_in_one_line(run: dict[str, Any]) -> None:
    """What the report's first screen says about the measurement, the same facts in the same words."""
    line = _line(run)
    # each problem with the setting that fixes it (the report's first screen: the facts alone)
    assert line == (
        "⚠ measurement: 1 of 12 timed results missed their ±1.0% CI target (raise timing.max_time_s, or loosen"
        " timing.target_rel_ci); throttled rounds on 1 of 3 shapes (3 rounds discarded for thermal or hardware"
        " slowdowns) (cool the GPU or lock its clocks (nvidia-smi -lgc); keep timing.discard_throttled on);"
        " warm-up did not settle on 1 of 3 shapes (raise timing.warmup_max_s)"
    )
    headline_section, *_ = report.document(read_back(run))
    (said,) = [
        b.text for b in headline_section.blocks if getattr(b, "text", "").startswith("⚠ Measurement: ")
    ]
    facts = quality.text(quality.summarize(*_benches_and_compares(_results(run))))
    assert said == f"⚠ Measurement: {facts[0].upper()}{facts[1:]} (see Measurement conditions)."


def test_the_quality_line_names_a_busy_host_and_is_plain_when_all_is_well(tmp_path: Path) -> None:
    busy = {"threads": 1, "cpus": 2, "load_before": 0.1, "load_after": 3.5, "other_cores": 1.6,
            "busy": True, "why": "other processes kept 1.6 of 2 cores busy"}  # fmt: skip
    noisy = write_run(tmp_path / "busy", device="cpu", hosts={"s4096_d64": busy}, conditions={}, missed=set())
    line = terminal.quality_line(Path(noisy["out"]["html"]).parents[1])
    assert line == (
        "⚠ measurement: all 12 timed results met their ±1.0% CI target; GPU clocks not monitored (cpu); "
        "the host was busy with other work during 1 of 3 shapes (stop the other work, then rerun with"
        " --forcerun benchmark)"
    )
    clean = write_run(tmp_path / "clean", shapes=SHAPES[1:], conditions={}, missed=set())
    results = Path(clean["out"]["html"]).parents[1]
    assert terminal.quality_line(results) == (
        "measurement: all 8 timed results met their ±1.0% CI target; no throttled rounds"
    )
    assert terminal.quality_line(tmp_path / "nothing") is None  # no bench file: no line


@pytest.fixture(scope="module")
def verdict_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    kwargs = write_verdict_run(tmp_path_factory.mktemp("verdicts"))
    build(kwargs)
    return kwargs


def _shape_lines(run: dict[str, Any], shape: str) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    results = _results(run)
    bench, compare = (
        json.loads((results / kind / f"{shape}.json").read_text()) for kind in ("bench", "compare")
    )
    lines = terminal.candidate_lines(ShapeResult.from_json(bench), ShapeComparisons.from_json(compare))
    return lines, bench, compare


def test_too_few_rounds_say_what_would_decide_and_how_the_shape_was_measured(verdict_run) -> None:
    shape = SHAPES[-1][0]
    lines, bench, compare = _shape_lines(verdict_run, shape)
    reference = bench["candidates"]["math"]
    # no interval on this shape
    assert lines[0] == f"{shape} (reference math {reference['median_ms']:.4g} ms ±{reference['rel_ci']:.1%}):"
    assert {c["verdict"] for c in compare["comparisons"]} == {TOO_FEW_ROUNDS}
    by_name = {line.split()[0]: line for line in lines[1:-1]}
    for comp in compare["comparisons"]:
        assert comp["rounds"] == FEW_ROUNDS and comp["rounds_to_decide"] == MIN_ROUNDS
        seconds = quality.seconds((MIN_ROUNDS - FEW_ROUNDS) * 2.5 / FEW_ROUNDS)
        assert by_name[comp["candidate"]].endswith(
            f"  too few rounds (2 rounds; at least 3 rounds would give an interval, ~{seconds} s more sampling)"
        )
        assert "×" not in by_name[comp["candidate"]]  # no speedup without an interval
    # the shape's measurement, as its Measurement conditions row flags it
    assert lines[-1] == (
        "  ⚠ measurement: 2 of 5 rounds kept in 2.5 s, stopped: every median's 95% CI within ±1.00%; "
        "warm-up not settled; 3 rounds discarded for slowdowns"
    )
    # and the end of the run counts them
    assert _line(verdict_run).endswith(
        "; 2 comparisons with too few rounds for an interval (raise timing.min_rounds or timing.max_time_s)"
    )
    # a shape where every comparison has an interval has no such line
    first, _, _ = _shape_lines(verdict_run, SHAPES[0][0])
    assert not any("measurement:" in line for line in first)


def test_each_shapes_lines_print_the_compare_files_own_interval_beside_its_verdict(verdict_run) -> None:
    """EDGE is decided alone (95%, "faster") but not across the run: the per-shape line says faster,
    with the compare file's interval, which clears 1."""
    for shape, *_ in SHAPES[:2]:
        lines, _, compare = _shape_lines(verdict_run, shape)
        by_name = {line.split()[0]: line for line in lines[1:]}
        for comp in compare["comparisons"]:
            line = by_name[comp["candidate"]]
            assert formatting.speedup_interval(comp["speedup"], *comp["speedup_ci"]) in line
            verdict = re.search(r"\] (faster|slower|same)", line).group(1)
            assert verdict == comp["verdict"] and agrees(verdict, line), line
    lines, _, compare = _shape_lines(verdict_run, SHAPES[0][0])
    (edge,) = [line for line in lines if line.split()[0] == EDGE]
    assert edge.endswith(" faster") and printed_speedup(edge)[1] > 1


def test_the_end_of_a_run_marks_only_what_its_interval_shows(verdict_run) -> None:
    """headline.terminal's per-shape lines: the mark * stands beside an interval that clears 1."""
    text = headline.terminal(headline.load(_results(verdict_run)))
    rows = [line for line in text.splitlines() if line.startswith("  s")]
    assert len(rows) == len(SHAPES)
    for line in rows:
        if TOO_FEW_ROUNDS in line:
            assert "×" not in line and " * " not in line
        else:
            point = printed_speedup(line)[0]
            marked = "] * vs " in line  # the mark, then what the speedup is against
            verdict = ("faster" if point > 1 else "slower") if marked else "same"
            assert agrees(verdict, line), line
