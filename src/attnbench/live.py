"""The live view: what a workflow run shows in the terminal instead of Snakemake's bookkeeping.

Snakemake's own terminal prints, per job, a timestamp, "Select jobs to execute...", "Execute 1
jobs...", the job's message, "Finished jobid" and "N of M steps": 190 of a CPU quick start's 323
lines. Through Snakemake's logger plugin interface (the thin package
`snakemake_logger_plugin_attnbench`, named in profiles/default), a run shows instead:

- one line when the run starts (how many shapes), and, on a terminal, a progress line redrawn in
  place: shapes done of total, elapsed, an estimate of the rest, what runs now;
- after each shape, its candidate lines (attnbench.terminal.candidate_lines, read from the shape's
  result files, so it works the same for jobs on SLURM), prefixed with the progress; a candidate
  unsupported here for the same reason is said once, not per shape;
- a failed job in one line with its log's last lines; Snakemake's errors and warnings as they are.

The answer at the end is the workflow's `onsuccess` (attnbench.terminal.finished). `--verbose`,
`--printshellcmds` (-p), `--debug-dag` and dry runs (-n) get Snakemake's own output back, unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

FAILED_LOG_LINES = 12  # of a failed job's log: its end says why
# Snakemake's own info lines that are bookkeeping (the others, e.g. "Nothing to be done", lint's verdict
# or --unlock's, still show)
BOOKKEEPING = (
    "Select jobs to execute",
    "Execute ",
    "Building DAG of jobs",
    "Using shell:",
    "Provided cores:",
    "Rules claiming more threads",
    "Provided resources:",
    "Conda environments: ignored",
    "Singularity containers: ignored",
    "Assuming unrestricted shared filesystem usage",
    "Shutting down, this might take some time",
    "Complete log(s):",
    "Waiting for ",
    "Removing temporary output",
    "Touching output file",
)
# Snakemake's lines when a signal stops the run, and what the live view says instead: on SIGINT (a
# terminal's Ctrl-C, `timeout -s INT`) it cancels the running jobs; on SIGTERM (a CI's cancel) it lets
# them finish and starts no other.
STOPPING = {
    "Terminating processes on user request": "attnbench: interrupted; stopping the running jobs",
    "Will exit after finishing currently running jobs": (
        "attnbench: asked to stop (SIGTERM); the running jobs finish, no other starts"
    ),
}
# Snakemake's errors that a line of the live view already says: a job's exception (its shell command,
# once per failed job) and the run's "At least one job did not complete successfully" (the workflow's
# onerror says what finished and how to continue)
REPEATED_ERRORS = (
    "CalledProcessError in file",
    "At least one job did not complete successfully",
    "Exiting because a job execution failed",
)
# What Snakemake puts around a ConfigError: the Snakefile's line, and the stack frames it appends
SNAKEFILE_LINE = re.compile(r"^ConfigError in file .*?, line \d+:\n")
FRAME = re.compile(r"^\s+File \".*\", line \d+, in .*\n?", re.M)
# How a job's end reads when a signal ended it (its exit status, or its log's last line)
INTERRUPTED = re.compile(r"exit status (130|143|-2|-15)\b|Signals\.SIG(INT|TERM)|interrupted \(")


def clock(seconds: float) -> str:
    """`0:42`, `12:05`, `1:02:09`."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class LiveView:
    """Reads Snakemake's log records (their `event` and fields, snakemake_interface_logger_plugins),
    writes the live view through `write` (a permanent line) and `status` (the redrawn line, on a
    terminal only). Independent of Snakemake's classes, so a test can feed it records."""

    def __init__(
        self,
        write: Callable[[str], None],
        status: Callable[[str], None] | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write, self.status, self.now = write, status, now
        self.jobs: dict[int, dict[str, Any]] = {}
        self.total = 0  # shapes this run compares
        self.done = 0
        self.started: float | None = None  # the first shape's job
        self.said: dict[str, str] = {}  # candidate -> the reason it is unsupported here, once said
        self.running: set[int] = set()  # jobs started, neither finished nor failed
        self.stopping = False  # a signal stops the run: a job that ends now was interrupted
        self.last_exit = ""  # the last job exception's text: how its process ended

    def handle(self, record: logging.LogRecord) -> None:
        event = str(getattr(record, "event", "") or "")
        if event == "run_info":
            stats = getattr(record, "stats", {}) or {}
            self.total = int(stats.get("compare", 0))
            if self.total:
                self.write(
                    f"attnbench: {self.total} shape{'' if self.total == 1 else 's'} to measure and compare"
                )
        elif event == "job_info":
            jobid = int(record.jobid)
            self.jobs[jobid] = dict(
                rule=record.rule_name,
                name=(record.wildcards or {}).get("name"),
                input=list(record.input or []),
                output=list(record.output or []),
                log=list(record.log or []),
            )
            if record.rule_name != "all":
                self.running.add(jobid)
            if record.rule_name in ("benchmark", "compare") and self.started is None:
                self.started = self.now()
            self._status(self.jobs[jobid])
        elif event == "job_finished":
            self.running.discard(int(record.job_id))
            job = self.jobs.get(int(record.job_id))
            if job and job["rule"] == "compare":
                self.done += 1
                self._shape(job)
        elif event == "job_error":
            jobid = int(getattr(record, "jobid", -1))
            if jobid in self.running or jobid not in self.jobs:
                self.running.discard(jobid)
                self.write(self._failure(record))
        elif record.levelno >= logging.ERROR and any(text in record.getMessage() for text in REPEATED_ERRORS):
            self.last_exit = record.getMessage()
        elif (
            said := next((v for k, v in STOPPING.items() if record.getMessage().startswith(k)), None)
        ) is not None:
            if not self.stopping:
                self.write(said)
            self.stopping = True
            if said == STOPPING["Terminating processes on user request"]:  # cancelled without a job error
                for jobid in sorted(self.running):
                    self.write(
                        self._line(
                            self.jobs[jobid]["rule"], self.jobs[jobid]["name"], self.jobs[jobid]["log"], True
                        )
                    )
                self.running.clear()
        elif record.levelno >= logging.WARNING or not (event or record.getMessage().startswith(BOOKKEEPING)):
            if record.levelno >= logging.INFO and record.getMessage().strip():
                self.write(record.getMessage())

    def progress(self) -> str:
        """`[3/11, 0:42, ~1:30 left]`: shapes compared of the run's, time since the first shape's job,
        and the rest at the pace so far."""
        text = f"[{self.done}/{self.total}"
        if self.started is not None:
            elapsed = self.now() - self.started
            text += f", {clock(elapsed)}"
            if 0 < self.done < self.total:
                text += f", ~{clock(elapsed / self.done * (self.total - self.done))} left"
        return text + "]"

    def _status(self, job: dict[str, Any]) -> None:
        if self.status is not None:
            what = f"{job['rule']} {job['name']}" if job["name"] else job["rule"]
            self.status(f"{self.progress()} {what}")

    def _shape(self, job: dict[str, Any]) -> None:
        from attnbench import files, terminal
        from attnbench.documents import ShapeComparisons

        try:
            bench = files.read_bench(job["input"][0], None)
            compare = ShapeComparisons.from_json(files.read_json(job["output"][0], None))
        except (OSError, ValueError, KeyError, IndexError, files.ResultFileError) as exc:
            self.write(f"{self.progress()} {job['name']}: its results could not be read ({exc})")
            return
        lines = terminal.candidate_lines(bench, compare, said=self.said)
        lines[0] = f"{self.progress()} {lines[0]}"
        self.write("\n".join(lines))

    def _failure(self, record: logging.LogRecord) -> str:
        """A failed job in one line, then its log's last lines; an interrupted one in one line. Never
        its shell command."""
        name = (getattr(record, "wildcards", None) or {}).get("name")
        logs = list(getattr(record, "log", None) or [])
        tail: list[str] = []
        for path in logs:
            try:
                text = Path(path).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            tail += [line for line in text.splitlines()[-FAILED_LOG_LINES:] if line.strip()]
        interrupted = self.stopping or bool(INTERRUPTED.search(self.last_exit + "\n" + "\n".join(tail[-1:])))
        self.last_exit = ""
        line = self._line(record.rule_name, name, logs, interrupted)
        return line if interrupted else "\n".join([line, *(f"    {text}" for text in tail)])

    @staticmethod
    def _line(rule: str, name: str | None, logs: list[str], interrupted: bool) -> str:
        what = "interrupted, wrote nothing" if interrupted else "failed"
        return f"✗ {rule}{f' {name}' if name else ''} {what}" + (f"; log: {logs[0]}" if logs else "")


def clarify(record: logging.LogRecord, argv: list[str]) -> None:
    """Snakemake's errors about the config, as attnbench says them (in the live view and in Snakemake's
    own output): a ConfigError without the Snakefile's line and the stack frames Snakemake appends
    (attnbench's own, never the problem), and a --configfile that is not YAML at its line and column
    (Snakemake loads it before the Snakefile's own check, and says only "not valid JSON or YAML")."""
    message = record.getMessage()
    if getattr(record, "exception", None) == "ConfigError" or message.startswith("ConfigError in file"):
        text = FRAME.sub("", SNAKEFILE_LINE.sub("", message)).strip()
        record.msg, record.args = f"attnbench: the config cannot run: {text}", None
    elif "Config file is not valid JSON or YAML" in message:
        from attnbench import config, configfile

        for path in [config.CONFIG_FILE, *given_configfiles(argv)]:
            try:
                configfile.check_file(path)
            except (OSError, configfile.Invalid, configfile.Unbounded) as exc:
                record.msg, record.args = f"attnbench: {exc}", None
                return


def given_configfiles(argv: list[str]) -> list[str]:
    """The files after --configfile (or --configfiles) on Snakemake's command line."""
    files: list[str] = []
    taking = False
    for arg in argv[1:]:
        if arg.startswith("--configfile"):
            taking = "=" not in arg  # --configfiles=a.yaml names one file
            if not taking:
                files.append(arg.split("=", 1)[1])
        elif arg.startswith("-"):
            taking = False
        elif taking:
            files.append(arg)
    return files


def stream_writers(stream: TextIO, tty: bool) -> tuple[Callable[[str], None], Callable[[str], None] | None]:
    """`write` and `status` for a stream: on a terminal the status line is redrawn in place and
    cleared before each permanent line; elsewhere (a CI log, a pipe) there is no status line."""
    shown = {"status": False}

    def write(text: str) -> None:
        if shown["status"]:
            stream.write("\r\033[K")
            shown["status"] = False
        stream.write(text + "\n")
        stream.flush()

    def status(text: str) -> None:
        stream.write("\r\033[K" + text)
        stream.flush()
        shown["status"] = True

    return write, (status if tty else None)


def verbose(settings: Any) -> bool:
    """Whether Snakemake's own output was asked for: --verbose, -p, --debug-dag or a dry run."""
    return any(getattr(settings, key, False) for key in ("verbose", "printshellcmds", "debug_dag", "dryrun"))


def make_handler(base: type, settings_base: type) -> tuple[type, type]:
    """The plugin's LogHandler and LogHandlerSettings classes on Snakemake's base classes (imported by
    the plugin package, so that this module imports without Snakemake)."""
    from dataclasses import dataclass

    @dataclass
    class LogHandlerSettings(settings_base):  # type: ignore[misc, valid-type]
        """No settings: the view follows Snakemake's own --verbose, -p and --quiet."""

    class LogHandler(base):  # type: ignore[misc, valid-type]
        def __post_init__(self) -> None:
            stream = sys.stdout if getattr(self.common_settings, "stdout", False) else sys.stderr
            if verbose(self.common_settings):
                from snakemake.logging import ColorizingTextHandler, DefaultFilter, DefaultFormatter

                s = self.common_settings
                self.fallback = ColorizingTextHandler(nocolor=s.nocolor, stream=stream)
                self.fallback.addFilter(
                    DefaultFilter(s.quiet, s.debug_dag, s.verbose, s.dryrun, s.printshellcmds)
                )
                self.fallback.setFormatter(DefaultFormatter(s.quiet, s.show_failed_logs))
                return
            self.fallback = None
            from attnbench.terminal import LIVE_VARIABLE

            os.environ[LIVE_VARIABLE] = "1"
            self.view = LiveView(*stream_writers(stream, stream.isatty()))

        def emit(self, record: logging.LogRecord) -> None:
            try:
                if record.levelno >= logging.ERROR:
                    clarify(record, sys.argv)
                if self.fallback is not None:
                    self.fallback.handle(record)
                else:
                    self.view.handle(record)
            except Exception:  # the view must never stop the run
                self.handleError(record)

        writes_to_stream = True
        writes_to_file = False
        has_filter = True
        has_formatter = True
        needs_rulegraph = False

    return LogHandler, LogHandlerSettings
