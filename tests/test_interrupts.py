"""Every interrupt ends cleanly (issue 34): a terminal's Ctrl-C (SIGINT to the process group), `timeout
-s INT` (SIGINT relayed by timeout to Snakemake and its group) and a CI's cancel (SIGTERM to the
group), each landing in each phase of a run (fingerprint, calibrate, benchmark, compare, report). Each
ends without a traceback or a job's shell command, with at most one line per interrupted job and the
"stopped ..." line; the same command then continues.

One working directory per signal: each test interrupts the next phase of the run the previous test
stopped (the phases before it are done), and the last test of a signal finishes the run.

The signal lands where the phase's job runs its own code: in the benchmark and report jobs once the
warm worker has the job (their work takes seconds); the fingerprint, calibrate and compare jobs end
within a second here, so a `python` first on the jobs' PATH holds the phase's job process for a few
seconds at its start (with Ctrl-C held, as attnbench.jobs.launcher starts it), and the signal lands
there.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CPU_CONFIG, check_finished_run, copy_workflow, wait_until, write_config

pytestmark = pytest.mark.slow

CONFIG = copy.deepcopy(CPU_CONFIG)
CONFIG["cpu"]["timing"] = {**CONFIG["cpu"]["timing"], "min_rounds": 100000, "max_time_s": 4}
SIGNALS = {  # how the signal is sent: (signal, to the process group?, through `timeout`?)
    "ctrl-c": (signal.SIGINT, True, False),
    "timeout-int": (signal.SIGINT, False, True),
    "sigterm": (signal.SIGTERM, True, False),
}
PHASES = ["fingerprint", "calibrate", "benchmark", "compare", "report"]
HELD = {"fingerprint", "calibrate", "compare"}  # too short here to land in: held at their start
HOLD_S = 6
LOGS = {"benchmark": "results/logs/bench/*.log", "report": "results/logs/report.log"}
# Fingerprint and calibrate depend on nothing: either may run first, so each test makes its own run again.
REMADE = {"fingerprint": "results/env/fingerprint.json", "calibrate": "results/env/ceilings.json"}
WORKDIRS: dict[str, Path] = {}


def _workdir(mode: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if mode not in WORKDIRS:
        workdir = copy_workflow(tmp_path_factory.mktemp(f"interrupt-{mode}"))
        write_config(workdir, CONFIG)
        hold = workdir / "hold-bin"
        hold.mkdir()
        (hold / "python").write_text(
            "#!/bin/sh\n"
            f'if [ "$3" = "$HOLD_PHASE" ]; then touch "$HOLD_MARKER"; sleep {HOLD_S}; fi\n'
            f'exec {sys.executable} "$@"\n'
        )
        (hold / "python").chmod(0o755)
        WORKDIRS[mode] = workdir
    return WORKDIRS[mode]


def _start(workdir: Path, mode: str, phase: str | None) -> subprocess.Popen[str]:
    marker = workdir / f"held-{phase}"
    env = {
        **os.environ,
        "PATH": f"{workdir / 'hold-bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOLD_PHASE": phase if phase in HELD else "",
        "HOLD_MARKER": str(marker),
    }
    through_timeout = ["timeout", "-s", "INT", "900"] if SIGNALS[mode][2] else []
    command = [*through_timeout, sys.executable, "-m", "snakemake", "--cores", "1", "--resources", "gpu=1"]
    return subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _in_phase(workdir: Path, phase: str) -> bool:
    if phase in HELD:
        return (workdir / f"held-{phase}").exists()
    return any("running in worker" in log.read_text(errors="replace") for log in workdir.glob(LOGS[phase]))


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("mode", list(SIGNALS))
def test_an_interrupt_ends_cleanly(mode: str, phase: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = _workdir(mode, tmp_path_factory)
    sig, group, _ = SIGNALS[mode]
    if phase in REMADE:
        (workdir / REMADE[phase]).unlink(missing_ok=True)
    for log in workdir.glob(LOGS.get(phase, "-")):  # an earlier run's (a benchmark may run before fingerprint)
        log.unlink()
    run = _start(workdir, mode, phase)
    try:
        wait_until(lambda: _in_phase(workdir, phase) or run.poll() is not None, timeout=300)
        assert run.poll() is None, f"the run ended before its {phase} job ran:\n{run.communicate()[0]}"
        (os.killpg if group else os.kill)(run.pid, sig)
        out, _ = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    said = f"{mode} during {phase}:\n{out}"
    for noise in (
        "Traceback",
        "--spec",
        "RuleException",
        "CalledProcessError",
        "message: None",
        "Error in rule",
    ):
        assert noise not in out, said
    stopped = [line for line in out.splitlines() if line.startswith("attnbench: stopped ")]
    assert len(stopped) == 1 and "run the same command to" in stopped[0], said
    job_lines = [line for line in out.splitlines() if line.startswith("✗ ")]
    assert len(job_lines) <= 1 and all("interrupted" in line for line in job_lines), said
    assert run.returncode != 0, said


@pytest.mark.parametrize("mode", list(SIGNALS))
def test_after_an_interrupt_the_same_command_continues(mode: str, tmp_path_factory) -> None:
    workdir = _workdir(mode, tmp_path_factory)
    run = _start(workdir, mode, None)
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    assert "report: results/report/report.html" in out
    check_finished_run(workdir)
