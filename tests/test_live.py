"""The live view (attnbench.live): Snakemake's log records in, progress and each shape's candidate
lines out, the bookkeeping left out; the plugin Snakemake finds by name."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest
from fixtures_report import write_run

from attnbench import live, terminal


def record(message: str = "", level: int = logging.INFO, **fields: Any) -> logging.LogRecord:
    made = logging.LogRecord("snakemake", level, __file__, 0, message, None, None)
    made.__dict__.update(fields)
    return made


def job_info(jobid: int, rule: str, name: str | None, run: dict[str, Any] | None = None) -> logging.LogRecord:
    inputs, outputs = [], []
    if rule == "compare" and run is not None:
        index = [Path(p).stem for p in run["bench_paths"]].index(name)
        inputs, outputs = [run["bench_paths"][index]], [run["compare_paths"][index]]
    return record(
        f" Rule: {rule}, Jobid: {jobid}",
        event="job_info",
        jobid=jobid,
        rule_name=rule,
        wildcards={"name": name} if name else {},
        input=inputs,
        output=outputs,
        log=[],
    )


def benchmark_error(log: Path, **fields: Any) -> logging.LogRecord:
    """Snakemake's record of shape s64's failed benchmark job."""
    return record(
        "Error in rule benchmark", logging.ERROR, event="job_error", rule_name="benchmark",
        wildcards={"name": "s64"}, log=[str(log)], **fields,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def run(tmp_path: Path) -> dict[str, Any]:
    # every shape has the same CUDA-only candidate unsupported for the same reason (write_run's CANDIDATES)
    return write_run(tmp_path)


def test_each_shape_prints_its_candidates_with_the_progress_and_no_bookkeeping(run) -> None:
    written: list[str] = []
    statuses: list[str] = []
    clock = Clock()
    view = live.LiveView(written.append, statuses.append, now=clock)
    shapes = [Path(p).stem for p in run["bench_paths"]]
    view.handle(record("Job stats: ...", event="run_info", stats={"benchmark": 3, "compare": 3, "total": 8}))
    assert written == ["attnbench: 3 shapes to measure and compare"]
    for noise in ("Select jobs to execute...", "Execute 1 jobs...", "Using shell: /usr/bin/bash"):
        view.handle(record(noise))
    view.handle(record(event="progress", done=1, total=8))
    assert written == ["attnbench: 3 shapes to measure and compare"]  # Snakemake's bookkeeping: nothing
    for jobid, name in enumerate(shapes):
        view.handle(job_info(10 + jobid, "benchmark", name))
        clock.t += 10
        view.handle(record(event="job_finished", job_id=10 + jobid))
        view.handle(job_info(20 + jobid, "compare", name, run))
        view.handle(record(event="job_finished", job_id=20 + jobid))
    assert statuses[0] == f"[0/3, 0:00] benchmark {shapes[0]}"  # the redrawn line on a terminal
    blocks = written[1:]
    assert len(blocks) == 3
    first = blocks[0].splitlines()
    assert first[0].startswith(f"[1/3, 0:10, ~0:20 left] {shapes[0]} (reference math ")
    assert blocks[2].startswith(f"[3/3, 0:30] {shapes[2]} (reference math ")
    # a candidate unsupported here for one reason is said once, at the first shape
    unsupported = [line for block in blocks for line in block.splitlines() if " unsupported " in line]
    assert len(unsupported) == len({line.split()[0] for line in unsupported}) > 0
    assert first[1:] == terminal.candidate_lines(*_documents(run, 0))[1:]


def _documents(run: dict[str, Any], index: int):
    from attnbench import files
    from attnbench.documents import ShapeComparisons

    bench = files.read_bench(run["bench_paths"][index], None)
    return bench, ShapeComparisons.from_json(files.read_json(run["compare_paths"][index], None))


def test_a_failed_job_is_one_line_and_its_logs_end_never_its_command(tmp_path: Path) -> None:
    log = tmp_path / "s64.log"
    log.write_text("".join(f"line {i}\n" for i in range(30)) + "benchmark: error: CUDA out of memory\n")
    written: list[str] = []
    view = live.LiveView(written.append)
    view.handle(
        benchmark_error(log, shellcmd="env --block-signal=INT python -m attnbench benchmark --spec '{...}'")
    )
    (said,) = written
    lines = said.splitlines()
    assert lines[0] == f"✗ benchmark s64 failed; log: {log}"
    assert lines[-1] == "    benchmark: error: CUDA out of memory"
    assert len(lines) == 1 + live.FAILED_LOG_LINES and "--spec" not in said


def test_snakemakes_other_lines_still_show_its_bookkeeping_does_not() -> None:
    written: list[str] = []
    view = live.LiveView(written.append)
    kept = [
        "Nothing to be done (all requested files are present and up to date).",
        "Congratulations, your workflow is in a good condition!",  # snakemake --lint
        "Unlocking working directory.",  # snakemake --unlock
    ]
    for line in [*kept, *(f"{prefix} ..." for prefix in live.BOOKKEEPING)]:
        view.handle(record(line))
    view.handle(record("debugging", logging.DEBUG))
    view.handle(record("a warning", logging.WARNING))
    view.handle(record("MissingInputException: Missing input files for rule report", logging.ERROR))
    assert written == [*kept, "a warning", "MissingInputException: Missing input files for rule report"]


def test_a_shape_whose_results_cannot_be_read_says_so_instead_of_stopping_the_view(tmp_path: Path) -> None:
    written: list[str] = []
    view = live.LiveView(written.append)
    view.handle(record(event="run_info", stats={"compare": 1}))
    missing = {"bench_paths": [str(tmp_path / "s1.json")], "compare_paths": [str(tmp_path / "c.json")]}
    view.handle(job_info(3, "compare", "s1", missing))
    view.handle(record(event="job_finished", job_id=3))
    assert written[-1].startswith("[1/1, 0:00] s1: its results could not be read (")


def test_on_a_terminal_the_status_line_is_redrawn_and_cleared_before_a_line() -> None:
    stream = io.StringIO()
    write, status = live.stream_writers(stream, tty=True)
    status("[0/2] benchmark s1")
    status("[0/2] benchmark s2")
    write("done")
    assert stream.getvalue() == "\r\033[K[0/2] benchmark s1\r\033[K[0/2] benchmark s2\r\033[Kdone\n"
    plain = io.StringIO()
    write, status = live.stream_writers(plain, tty=False)
    assert status is None  # a CI log gets permanent lines only
    write("done")
    assert plain.getvalue() == "done\n"


def test_a_compare_job_leaves_its_lines_to_the_live_view(run, monkeypatch, capsys) -> None:
    from attnbench import files

    compare = files.read_json(run["compare_paths"][0], None)
    terminal.print_shape(run["bench_paths"][0], compare)
    assert "(reference math " in capsys.readouterr().out
    monkeypatch.setenv(terminal.LIVE_VARIABLE, "1")
    terminal.print_shape(run["bench_paths"][0], compare)
    assert capsys.readouterr().out == ""


class Settings:
    printshellcmds = False
    nocolor = True
    quiet = None
    debug_dag = False
    verbose = False
    show_failed_logs = True
    stdout = False
    dryrun = False


@pytest.mark.parametrize("asked", ["verbose", "printshellcmds", "dryrun", "debug_dag"])
def test_verbose_p_and_dry_runs_get_snakemakes_own_output(asked, monkeypatch) -> None:
    from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry

    monkeypatch.delenv(terminal.LIVE_VARIABLE, raising=False)
    plugin = LoggerPluginRegistry().get_plugin("attnbench")  # found by its package's name
    settings = Settings()
    quiet = plugin.log_handler(settings, None)
    assert quiet.fallback is None and quiet.writes_to_stream and quiet.has_filter
    import os

    assert os.environ[terminal.LIVE_VARIABLE] == "1"  # the jobs it starts leave their lines to it
    monkeypatch.delenv(terminal.LIVE_VARIABLE)
    setattr(settings, asked, True)
    loud = plugin.log_handler(settings, None)
    assert loud.fallback is not None and terminal.LIVE_VARIABLE not in os.environ


def test_clock() -> None:
    assert [live.clock(s) for s in (0, 42.4, 725, 3729)] == ["0:00", "0:42", "12:05", "1:02:09"]


def test_an_interrupt_says_each_running_job_once_and_none_of_snakemakes_exceptions(tmp_path: Path) -> None:
    """Found by interrupting runs: Snakemake printed each job's exception with its ~900-character
    command, and a job it cancelled (no error of its own) went unmentioned."""
    log = tmp_path / "report.log"
    log.write_text("attnbench report: running in worker pid 9 after 3 jobs\n")
    written: list[str] = []
    view = live.LiveView(written.append)
    view.handle(job_info(1, "benchmark", "s64"))
    view.handle(record(event="job_finished", job_id=1))
    report = job_info(2, "report", None)
    report.log = [str(log)]
    view.handle(report)
    view.handle(
        record(
            "RuleException:\nCalledProcessError in file rules/benchmark.smk, line 20:\nCommand 'python -m attnbench"
            " benchmark --spec ...' returned non-zero exit status 130.",
            logging.ERROR,
            event="error",
            exception="RuleException",
        )
    )
    view.handle(record("Terminating processes on user request, this might take some time."))
    view.handle(
        record(
            "Error in rule report",
            logging.ERROR,
            event="job_error",
            jobid=2,
            rule_name="report",
            log=[str(log)],
        )
    )
    view.handle(
        record(
            "WorkflowError:\nAt least one job did not complete successfully.", logging.ERROR, event="error"
        )
    )
    assert written == [
        live.STOPPING["Terminating processes on user request"],
        f"✗ report interrupted, wrote nothing; log: {log}",
    ]


@pytest.mark.parametrize(
    "exception, last_line, interrupted",
    [
        (
            "returned non-zero exit status 130.",
            "attnbench benchmark: interrupted (Ctrl-C); this job wrote nothing",
            True,
        ),
        ("died with <Signals.SIGTERM: 15>.", "[attnbench 23:29:53] s64: float32 forward on cpu", True),
        ("returned non-zero exit status 1.", "attnbench benchmark: error: boom", False),
    ],
)
def test_a_job_ended_by_a_signal_is_interrupted_not_failed(
    tmp_path: Path, exception, last_line, interrupted
) -> None:
    log = tmp_path / "s64.log"
    log.write_text(f"attnbench benchmark: running in worker\n{last_line}\n")
    written: list[str] = []
    view = live.LiveView(written.append)
    view.handle(
        record(
            f"RuleException:\nCalledProcessError in file x, line 1:\nCommand '...' {exception}",
            logging.ERROR,
            event="error",
        )
    )
    view.handle(benchmark_error(log))
    (said,) = written
    if interrupted:
        assert said == f"✗ benchmark s64 interrupted, wrote nothing; log: {log}"
    else:
        assert said.splitlines() == [
            f"✗ benchmark s64 failed; log: {log}",
            "    attnbench benchmark: running in worker",
            f"    {last_line}",
        ]


def test_a_sigterm_says_the_running_jobs_finish() -> None:
    written: list[str] = []
    view = live.LiveView(written.append)
    view.handle(record("Will exit after finishing currently running jobs (scheduler)."))
    view.handle(record("Will exit after finishing currently running jobs (scheduler)."))
    assert written == [live.STOPPING["Will exit after finishing currently running jobs"]]


def test_the_configfiles_given_to_snakemake_are_found_on_its_command_line() -> None:
    argv = [
        "snakemake",
        "--cores",
        "1",
        "--configfile",
        "a.yaml",
        "b.yaml",
        "-n",
        "--configfiles=c.yaml",
        "all",
    ]
    assert live.given_configfiles(argv) == ["a.yaml", "b.yaml", "c.yaml"]
