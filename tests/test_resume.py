"""Resuming after `kill -9`: the whole process group dies inside a benchmark job, then `snakemake --unlock`
and the same command finish the run. Finished shapes are kept as they are, and no reader of results/ ever
sees a partial or invalid JSON file (io writes a temporary file, then renames it)."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import helpers
import pytest
from helpers import SCHEMAS, copy_workflow, measured, snakemake, write_config

from attnbench import files

pytestmark = pytest.mark.slow

# Each benchmark job samples for max_time_s (min_rounds and max_rounds are out of reach), so a job lasts
# a couple of seconds plus the interpreter's start-up: long enough for the kill to land inside one.
SHAPES = [
    {"name": f"s{seq}", "batch": 1, "heads": 2, "seq": seq, "dim": 16, "causal": seq % 128 == 0}
    for seq in (64, 96, 128, 160)
]
CONFIG = copy.deepcopy(helpers.CPU_CONFIG)
CONFIG["cpu"].update(
    candidates=["flash", "math"],
    shapes=SHAPES,
    timing={"warmup": 1, "warmup_max_s": 0.2, "min_rounds": 100000, "max_rounds": 100000, "max_time_s": 1.5},
)
COMMAND = [sys.executable, "-m", "snakemake", "--cores", "1", "--resources", "gpu=1"]
START_TIMEOUT_S = 240  # until the kill: fingerprint, calibrate, one shape, the start of the next
POLL_S = 0.02


def schema_for(path: Path) -> Path | None:
    """The schema a result file must match (None: only parse it)."""
    kind = {"bench": "bench", "compare": "compare"}.get(path.parent.name)
    if path.parent.name == "env" and path.stem in ("fingerprint", "ceilings"):
        kind = path.stem
    return SCHEMAS / f"{kind}.schema.yaml" if kind else None


class Watcher(threading.Thread):
    """Every POLL_S, read every *.json under results/ as a reader would and validate it against its schema.

    A file is checked again whenever its inode, size or mtime changes. Temporary files (io names them
    `.<name>.<random>.tmp`) are skipped; a file removed between listing and reading (Snakemake deletes
    the outputs of a job it reruns) is not a failure.
    """

    def __init__(self, results: Path):
        super().__init__(daemon=True)
        self.results = results
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.seen: dict[Path, tuple[int, int, int]] = {}
        self.checks = 0

    def run(self):
        while True:
            last = self.stop.is_set()  # one more look after the test asks to stop
            try:
                self.poll()
            except Exception as exc:
                self.failures.append(f"watcher error: {exc!r}")
            if last:
                return
            self.stop.wait(POLL_S)

    def poll(self):
        if not self.results.is_dir():
            return
        for path in self.results.rglob("*.json"):
            if path.name.startswith("."):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if self.seen.get(path) == signature:
                continue
            try:
                files.read_json(path, schema_for(path))
            except files.ResultFileError as exc:
                if isinstance(exc.__cause__, FileNotFoundError):
                    continue
                self.failures.append(f"{exc} (size {stat.st_size})")
            self.seen[path] = signature
            self.checks += 1


def read_if_any(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def sampling(logs: Path, name: str) -> bool:
    """The benchmark job of this shape is sampling: its last candidate passed the correctness check
    and timing has not ended. Sampling lasts at least max_time_s, so a kill now lands inside it."""
    text = read_if_any(logs / f"{name}.log")
    return f"  {CONFIG['cpu']['candidates'][-1]}: ok" in text and "  timing:" not in text


def tail(path: Path, chars: int = 6000) -> str:
    return read_if_any(path)[-chars:] or "(no output)"


def start_then_kill_inside_a_benchmark(workdir: Path) -> str:
    """Start the workflow in its own process group; once one shape is finished and the next one is
    timing its candidates, SIGKILL the whole group. Returns the interrupted shape's name."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    output = workdir / "first_run.out"
    bench, logs = workdir / "results/bench", workdir / "results/logs/bench"
    with output.open("w") as sink:
        proc = subprocess.Popen(
            COMMAND, cwd=workdir, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert (
                proc.poll() is None
            ), f"snakemake exited ({proc.returncode}) before a second benchmark job started:\n" + tail(output)
            assert time.monotonic() < deadline, (
                f"after {START_TIMEOUT_S} s, no benchmark job was sampling while another shape was finished:\n"
                + tail(output)
            )
            finished = {p.stem for p in bench.glob("*.json")} if bench.is_dir() else set()
            running = [s["name"] for s in SHAPES if s["name"] not in finished and sampling(logs, s["name"])]
            if finished and running:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:  # a failed assertion above: leave nothing running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"snakemake ended with {proc.returncode}:\n" + tail(output)
    return running[0]


def test_kill_9_inside_a_benchmark_then_unlock_and_rerun_completes(tmp_path):
    copy_workflow(tmp_path)
    write_config(tmp_path, CONFIG)
    results = tmp_path / "results"
    watcher = Watcher(results)
    watcher.start()
    try:
        interrupted = start_then_kill_inside_a_benchmark(tmp_path)
        time.sleep(0.5)  # let the kernel finish tearing the group down before taking the snapshot
        kept = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (results / "bench").glob("*.json")}
        assert kept, "no benchmark result was finished before the kill"
        assert not (results / "bench" / f"{interrupted}.json").exists(), f"{interrupted} finished after all"
        locks = tmp_path / ".snakemake/locks"
        assert locks.is_dir() and any(locks.iterdir()), "the killed run left no lock: nothing to --unlock"

        snakemake(tmp_path, "--unlock")
        out = snakemake(tmp_path)
    finally:
        watcher.stop.set()
        watcher.join(timeout=30)

    assert not watcher.failures, "a reader saw a partial or invalid JSON file:\n" + "\n".join(
        watcher.failures
    )
    expected = {"env/fingerprint.json", "env/ceilings.json"}
    for shape in SHAPES:
        expected |= {f"bench/{shape['name']}.json", f"compare/{shape['name']}.json"}
    for relative in sorted(expected):
        files.read_json(results / relative, schema_for(results / relative))
    for name in ("report.html", "report.md", "summary.csv", "plots/latency.png"):
        assert (results / "report" / name).stat().st_size > 0, name
    assert watcher.checks >= len(expected), f"the watcher validated only {watcher.checks} files"

    for path, (mtime_ns, content) in kept.items():
        assert (
            path.stat().st_mtime_ns == mtime_ns and path.read_bytes() == content
        ), f"{path.name} was finished before the kill but was rewritten by the resumed run:\n{out[-6000:]}"
    assert measured(out, interrupted), out[-6000:]

    leftovers = [str(p.relative_to(results)) for p in results.rglob("*.tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"
