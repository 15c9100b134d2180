"""What a run prints (attnbench.terminal): one line per candidate after each shape, the answer at the
end, and the exit decision for fail_on_failed_candidates."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fixtures_report import EVIL, build, write_run

from attnbench import __version__, headline, jobs, terminal


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
    lines = terminal.candidate_lines(bench, compare)
    assert lines[0] == f"{compare['shape']} (reference {compare['reference']}):"
    assert len(lines) == 1 + len(bench["candidates"])
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert by_name["math"].split()[1] == "ok" and by_name["math"].endswith("reference")
    flash = next(c for c in compare["comparisons"] if c["candidate"] == "flash")
    assert f"{bench['candidates']['flash']['median_ms']:.4g} ms ±" in by_name["flash"]
    assert "× [" in by_name["flash"] and by_name["flash"].endswith(flash["verdict"])
    for name, entry in bench["candidates"].items():
        if entry["status"] != "ok":
            assert entry["status"] in by_name[name] and entry["reason"].split()[0] in by_name[name]


def test_the_end_of_a_run_prints_the_answer_and_decides_the_exit(run, capsys, monkeypatch) -> None:
    results = _results(run)
    report = Path(run["out"]["html"])
    assert terminal.finished(results, report, fail_on_failed=False) is None
    printed = capsys.readouterr().out
    assert printed.strip() == headline.terminal(headline.load(results), report).strip()
    assert EVIL in printed and f"report: {report}" in printed
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
    assert "Run the same command again" in out


def test_a_failed_reference_and_long_reasons_keep_the_lines_readable() -> None:
    """Found in review: with the reference failed, ok candidates showed no speedup and no why; a
    multi-line reason broke the table."""
    bench = {"candidates": {
        "math": {"status": "error", "reason": "RuntimeError: boom", "median_ms": None},
        "flash": {"status": "ok", "reason": None, "median_ms": 0.5, "rel_ci": 0.004},
        "mine": {"status": "unsupported", "reason": "line one\nline two " + "x" * 300, "median_ms": None},
    }}  # fmt: skip
    compare = {"shape": "s1", "reference": "math", "reason": "reference math is error", "comparisons": []}
    lines = terminal.candidate_lines(bench, compare)
    assert lines[:2] == ["s1 (reference math):", "  no speedups: reference math is error"]
    assert all("\n" not in line and len(line) <= terminal.LINE_WIDTH for line in lines)
    assert lines[4].startswith("  mine   unsupported  line one line two x") and lines[4].endswith("…")


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
