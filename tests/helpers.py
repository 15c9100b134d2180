"""What the tests share: paths, the workflow copied to a fresh folder, the snakemake CLI, a small CPU
run's config and the check of its outputs, and process helpers. Test modules import from here,
never from each other."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from attnbench import config, files

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "workflow" / "schemas"
WORKFLOW_FILES = ("workflow", "profiles", "examples")
# The checkout's config (Snakemake's standard layout), and where a run's config goes in its folder.
CONFIG = ROOT / config.CONFIG_FILE


def copy_workflow(dest: Path) -> Path:
    """The workflow without results or config, for tests that run the snakemake CLI in a fresh folder."""
    for name in WORKFLOW_FILES:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, dest / name)
    return dest


def write_config(workdir: Path, run_config: dict[str, Any]) -> Path:
    """`run_config` as the config of the workflow run in `workdir` (copy_workflow's folder)."""
    path = workdir / config.CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(run_config, sort_keys=False))
    return path


# A small CPU run of the whole workflow (device: auto on a machine without CUDA).
CPU_SHAPES = [
    {"name": "s64", "batch": 1, "heads": 2, "seq": 64, "dim": 16, "causal": False},
    {"name": "s96_causal", "batch": 1, "heads": 2, "seq": 96, "dim": 16, "causal": True},
]
CPU_CONFIG = {
    "device": "auto",
    "dtype": "bfloat16",
    "candidates": ["flash", "math"],
    "reference": "math",
    "shapes": [{"name": "gpu_only", "batch": 1, "heads": 2, "seq": 4096, "dim": 64}],
    "cpu": {
        "dtype": "float32",
        "candidates": ["flash", "efficient", "math", "examples.kernels:naive_attention"],
        "reference": "math",
        "shapes": CPU_SHAPES,
        "timing": {"warmup": 1, "warmup_max_s": 0.2, "min_rounds": 6, "max_time_s": 1},
        "calibrate": {"matmul_size": 128, "copy_mb": 8, "rounds": 3},
    },
}


def compiled_kernel(**compile_options: Any) -> str:
    """A user kernel module whose attention is torch.compile'd with a backend that counts the graphs
    dynamo compiles (`compiles.frame_count`) and runs them eagerly: no Inductor, so cheap."""
    options = "".join(f", {key}={value!r}" for key, value in compile_options.items())
    return f"""
import torch
from torch._dynamo.testing import CompileCounter

compiles = CompileCounter()


@torch.compile(backend=compiles{options})
def _attend(q, k, v, scale):
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v


def attention(q, k, v, *, causal, scale):
    return _attend(q, k, v, scale)
"""


# One small causal shape, what a benchmark job's tests measure when the shape does not matter.
TINY_SHAPE = {
    "name": "tiny",
    "batch": 1,
    "heads": 2,
    "kv_heads": 2,
    "seq": 64,
    "seq_kv": 64,
    "dim": 16,
    "causal": True,
}
# A GPU shape that fills the device and is timed per call (cold) in auto mode: the GPU audit tests'.
GPU_SHAPE = {
    "name": "g",
    "batch": 4,
    "heads": 16,
    "kv_heads": 16,
    "seq": 2048,
    "seq_kv": 2048,
    "dim": 128,
    "causal": False,
}


def bench_spec(default_shape: dict, candidates: list[str], rounds: int = 4, **overrides) -> dict:
    """A benchmark job's spec for one small CPU shape (`overrides` may replace it), timed briefly
    (bench.run_shape's input)."""
    return {
        "shape": default_shape,
        "device": "cpu",
        "dtype": "float32",
        "mode": "forward",
        "candidates": candidates,
        "timing": {"warmup": 1, "warmup_max_s": 0.2, "min_rounds": rounds, "max_rounds": rounds},
        "lock": {"seed": 0},
        **overrides,
    }


def complete_spec(spec: dict) -> dict:
    """A hand-made benchmark spec as attnbench.jobs writes one, every default applied: what a benchmark
    job checks against workflow/schemas/benchspec.schema.yaml before it measures."""
    from attnbench import lock
    from attnbench.benchspec import BenchSpec

    return BenchSpec.from_json(spec).to_json() | {"lock": lock.resolve(spec.get("lock"))}


def shape_result(document: dict) -> Any:
    """A hand-made bench document as a reader gets it (attnbench.documents.ShapeResult): the
    document's fields kept, those a test leaves out as a current CPU run writes them, each candidate's
    entry on top of results.empty_entry (its status given, ok by default)."""
    from attnbench.documents import BENCH_MINOR, ShapeResult
    from attnbench.results import Status, empty_entry

    shape = {
        "name": "s",
        "batch": 1,
        "heads": 1,
        "kv_heads": 1,
        "seq": 1,
        "seq_kv": 1,
        "dim": 1,
        "causal": False,
    }
    candidates = {
        name: {**empty_entry(Status(entry.get("status", "ok")), entry.get("reason")), **entry}
        for name, entry in document.get("candidates", {}).items()
    }
    return ShapeResult.from_json(
        {
            "schema": 3,
            "schema_minor": BENCH_MINOR,
            "device": "cpu",
            "dtype": "float32",
            "mode": "forward",
            "timing": {
                "mode": "warm",
                "target_rel_ci": 0.01,
                "warmup": {"rounds": 3, "seconds": 0.1, "settled": True, "reason": "settled"},
                "rounds_run": 3,
                "rounds_kept": 3,
                "stop_reason": "max_rounds",
                "discard_throttled": True,
                "clocks": {"source": None, "throttled_rounds": 0, "discarded_rounds": 0, "events": {}},
            },
            "lock": {},
            "flops": 1.0,
            "min_bytes": 1,
            **document,
            "shape": {**shape, **document.get("shape", {})},
            "candidates": candidates,
        }
    )


def run_snakemake(workdir, *args, gpus=1, env=None) -> subprocess.CompletedProcess:
    """The snakemake CLI in `workdir` with this Python's environment, whatever its exit code."""
    env = {**os.environ, **(env or {})}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", str(gpus), "--resources", f"gpu={gpus}", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def snakemake(workdir, *args, gpus=1, env=None):
    """The snakemake CLI in `workdir`, which must succeed; its output."""
    proc = run_snakemake(workdir, *args, gpus=gpus, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def measured(out: str, shape: str) -> bool:
    """Whether a run's terminal shows `shape` measured and compared: the live view's line for it
    (attnbench.live: `[2/3, 0:04, ~0:02 left] s64 (reference math ...`)."""
    return f"] {shape} (reference " in out


def planned_jobs(workdir, env=None):
    """Job counts per rule from a dry run ({} when there is nothing to do)."""
    out = snakemake(workdir, "--dry-run", env=env)
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1]
    return {
        m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] not in ("total", "all")
    }


def check_finished_run(workdir: Path) -> None:
    """Every output of a CPU run of CPU_CONFIG exists, matches its schema and says what it should."""
    results = workdir / "results"
    checks = {"env/fingerprint.json": "fingerprint", "env/ceilings.json": "ceilings"}
    for shape in CPU_SHAPES:
        checks[f"bench/{shape['name']}.json"] = "bench"
        checks[f"compare/{shape['name']}.json"] = "compare"
    for relative, schema in checks.items():
        files.read_json(results / relative, SCHEMAS / f"{schema}.schema.yaml")
    bench = json.loads((results / "bench/s96_causal.json").read_text())
    assert bench["device"] == "cpu" and bench["shape"]["causal"] is True
    statuses = {name: entry["status"] for name, entry in bench["candidates"].items()}
    assert statuses == {
        "flash": "ok",
        "efficient": "unsupported",
        "math": "ok",
        "examples.kernels:naive_attention": "ok",
    }
    for entry in bench["candidates"].values():
        if entry["status"] == "ok":
            assert entry["median_ms"] == pytest.approx(float(np.median(entry["samples_ms"])))
    compare = json.loads((results / "compare/s96_causal.json").read_text())
    assert {c["candidate"] for c in compare["comparisons"]} == {"flash", "examples.kernels:naive_attention"}
    report = results / "report"
    for name in ("report.html", "report.md", "summary.csv", "plots/latency.png", "plots/speedup.png"):
        assert (report / name).stat().st_size > 0
    assert "efficient" in (report / "report.md").read_text()
    # device: auto on a machine without CUDA: the report says the run fell back, and why
    assert "cpu (device: auto fell back to the CPU: device is cpu: " in (report / "report.md").read_text()
    assert not list(results.rglob(".*.tmp")), "temporary files left behind"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_until(condition, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def job_environment(tmp_path: Path, monkeypatch) -> Path:
    """A benchmark job's environment in `tmp_path`: the lock's variable, the fixtures importable,
    sockets of its own, a short-lived worker."""
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    # prepended, not replacing: packages may come from PYTHONPATH (the GPU machine's snakemake wheels)
    paths = [str(ROOT / "src"), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    monkeypatch.setenv("ATTNBENCH_LEASE_DIR", str(tmp_path / "sockets"))
    monkeypatch.setenv("ATTNBENCH_WORKER_IDLE_S", "10")
    monkeypatch.chdir(tmp_path)
    return tmp_path
