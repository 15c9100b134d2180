"""Faults from outside attnbench end with attnbench's own line (issue 31, item 6): a full disk, an
input deleted while the run used it, a failed metadata record; no outputs of that job left behind."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest
from helpers import CPU_CONFIG, copy_workflow, run_snakemake, write_config

from attnbench import faults, terminal

Usage = namedtuple("Usage", "total used free")

# What Snakemake's log said in each case, as the hostile-user run recorded it.
FULL = "OSError: [Errno 28] No space left on device: 'results/report/plots/.latency.png.tmp'"
DELETED = (
    "MissingOutputException: Missing files after 5 seconds. This might be due to filesystem latency. "
    "If that is the case, consider to increase the wait time with --latency-wait:\nresults/env/ceilings.json"
)
METADATA = (
    "WorkflowError: Error recording metadata for finished job ([Errno 28] No space left on device). "
    "Please ensure write permissions for the directory /run/.snakemake"
)


@pytest.mark.parametrize(
    ("log", "says"),
    [
        (FULL, "attnbench: the disk is full (OSError: [Errno 28] No space left on device"),
        (DELETED, "attnbench: a file the run needed was deleted while it ran (MissingOutputException"),
        (METADATA, "attnbench: the disk is full (WorkflowError: Error recording metadata"),
        ("WorkflowError: Error recording metadata for finished job (Permission denied).", "could not record"),
    ],
)
def test_a_fault_in_snakemakes_log_is_said_in_attnbenchs_words(log: str, says: str) -> None:
    said = faults.cause(f"Building DAG of jobs...\n{log}\n")
    assert said is not None and said.startswith("attnbench: ") and says in said
    assert "\n" not in said and "run the same command again" in said


def test_an_ordinary_failure_is_left_to_its_own_message() -> None:
    assert faults.cause("Error in rule benchmark:\n    RuntimeError: boom\n") is None


def record(workdir: Path, output: str, content: str) -> Path:
    """A metadata record as snakemake.persistence.file writes it (long names split into @-folders)."""
    encoded = base64.urlsafe_b64encode(output.encode()).decode()
    parts = [encoded[i : i + 40] for i in range(0, len(encoded), 40)]
    path = workdir.joinpath(faults.METADATA, *["@" + part for part in parts[:-1]], parts[-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def test_outputs_whose_record_failed_are_removed_with_the_record(tmp_path: Path) -> None:
    kept, lost = "results/report/report.md", "results/report/plots/a-long-name-that-is-split-over-folders.png"
    for output in (kept, lost):
        (tmp_path / output).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / output).write_text("made")
    good = record(tmp_path, kept, json.dumps({"rule": "report"}))
    empty = record(tmp_path, lost, "")
    assert faults.remove_unrecorded(tmp_path) == [tmp_path / lost]
    assert not (tmp_path / lost).exists() and not empty.exists()
    assert (tmp_path / kept).exists() and good.exists()


def test_a_stopped_run_says_the_cause_then_what_finished(tmp_path: Path, capsys) -> None:
    log = tmp_path / "snakemake.log"
    log.write_text(f"Select jobs to execute...\n{DELETED}\n")
    terminal.stopped(tmp_path / "results", ["s64"], [str(log)])  # as Snakemake 9's onerror passes it
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("attnbench: a file the run needed was deleted while it ran")
    assert lines[1].startswith("attnbench: stopped with 0 of 1 shapes measured")


def test_a_stopped_run_removes_what_a_failed_record_left(tmp_path: Path, capsys) -> None:
    made = tmp_path / "results" / "report" / "summary.csv"
    made.parent.mkdir(parents=True)
    made.write_text("shape\n")
    record(tmp_path, "results/report/summary.csv", "")
    log = tmp_path / "snakemake.log"
    log.write_text(METADATA)
    terminal.stopped(tmp_path / "results", ["s64"], str(log))
    out = capsys.readouterr().out
    assert not made.exists() and f"attnbench: removed {made}" in out


def test_a_disk_too_full_is_refused_before_the_run(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(1 << 40, 1 << 40, 5 << 20))
    said = faults.free_space_problem(tmp_path)
    assert said is not None and "has 5.0 MiB free, less than the 32 MiB a run needs" in said
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(1 << 40, 0, faults.MIN_FREE_BYTES))
    assert faults.free_space_problem(tmp_path) is None


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 48 MiB tmpfs (needs root, as CI is); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True
    ).returncode:
        pytest.skip("needs root and a tmpfs mount")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_attnbenchs_line_and_leaves_nothing(small_disk: Path) -> None:
    workdir = small_disk / "run"
    workdir.mkdir()
    copy_workflow(workdir)
    write_config(workdir, CPU_CONFIG)
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * (free - (1 << 20)))
    ran = run_snakemake(workdir)
    assert ran.returncode == 1
    said = [line for line in (ran.stdout + ran.stderr).splitlines() if line.startswith("attnbench:")]
    assert len(said) == 1 and "MiB free, less than the 32 MiB a run needs" in said[0]
    assert "Traceback" not in ran.stdout + ran.stderr and "Logging error" not in ran.stderr
    assert not (workdir / "results").exists()
