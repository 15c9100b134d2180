"""The kernel engineer's edit loop: edit a user kernel, rerun one shape, read the report (issue 15, item 6;
docs/scale.md, "The edit loop", has the results).

    python benchmarks/edit_loop.py [--device auto|cpu|cuda] [--repeats 5] [--shape b8_h16_s1024_d64] [--out FILE.json] [--keep]

From anywhere, with snakemake and attnbench's dependencies importable (the jobs run this checkout's
src/ first on PYTHONPATH); nothing is downloaded. In a fresh temporary run directory (the workflow copied
from this checkout, a one-shape config whose candidates are `math` and a small user kernel module,
edit_kernel.py, in the run directory):
  (a) warm-up  `snakemake --cores 1 --resources gpu=1` once: every job, the warm worker started; not counted;
  (b) no-op    the same command again, with nothing to do (--repeats times);
  (c) edit     the kernel module edited (a real, output-neutral code change: the attention is computed in
               1 or 2 chunks of heads, alternately, and a revision number counts up), then timed:
               `python -c "import snakemake.cli"` (Snakemake's import with its plugins), `snakemake -n`
               (its import, the Snakefile's parse and the DAG, planning the same jobs), and the rerun
               that ends with the report written again (--repeats times, after one edit not counted:
               the warm worker may have idled out during (b), ATTNBENCH_WORKER_IDLE_S, and the loop is
               measured with it warm).
For each edit the rerun is taken apart with the timestamps the run leaves: each job's start (the
incomplete marker Snakemake writes) and end (its output's mtime) from .snakemake/metadata, and inside the
benchmark job its process's creation, its connection to the warm worker and its end (the result's
`process` record), and the sampling time (`timing.elapsed_s`) and audit (`audit_s`).

Device: `auto` (the default) is CUDA where torch can use it, else the CPU. On the CPU the timing is cut
down (as in tests/) so the loop's overhead shows; on CUDA the config's defaults apply (a real loop). The
shape defaults to b8_h16_s1024_d64 on CUDA and b2_h8_s128_d64 on the CPU.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("workflow", "profiles")
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--cores", "1", "--resources", "gpu=1"]
KERNEL = "edit_kernel"
# The user kernel: SDPA over its heads in SPLIT chunks. Each edit flips SPLIT between 1 and 2 (another call
# sequence, the same output) and counts REVISION up, so that no edit brings back a source seen before: an
# edit back to an earlier source would find a worker that an older attnbench kept for that source's hash.
KERNEL_SOURCE = '''"""A user kernel for benchmarks/edit_loop.py, which edits SPLIT and REVISION between runs."""

import torch
import torch.nn.functional as F

SPLIT = 1
REVISION = 0


def attention(q, k, v, *, causal, scale):
    if REVISION < 0:
        raise ValueError("REVISION counts edits")
    if q.shape[1] != k.shape[1] or SPLIT == 1:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    parts = zip(q.chunk(SPLIT, dim=1), k.chunk(SPLIT, dim=1), v.chunk(SPLIT, dim=1))
    return torch.cat([F.scaled_dot_product_attention(*p, is_causal=causal, scale=scale) for p in parts], dim=1)
'''
SHAPES = {"cuda": "b8_h16_s1024_d64", "cpu": "b2_h8_s128_d64"}
CPU_TIMING = {"warmup": 1, "warmup_max_s": 0.2, "min_rounds": 6, "max_time_s": 1}
CPU_CALIBRATE = {"matmul_size": 128, "copy_mb": 8, "rounds": 3}


def config(device: str, shape: dict) -> dict:
    """One shape, the reference and the user kernel; on the CPU, timing cut down as in tests/."""
    candidates = ["math", f"{KERNEL}:attention"]
    return {
        "device": device,
        "dtype": "bfloat16",
        "candidates": candidates,
        "reference": "math",
        "shapes": [shape],
        "cpu": {"dtype": "float32", "candidates": candidates, "reference": "math", "shapes": [shape],
                "timing": CPU_TIMING, "calibrate": CPU_CALIBRATE},
    }  # fmt: skip


def environment() -> dict[str, str]:
    """This interpreter's directory first on PATH: the jobs run `python -m attnbench`, from this checkout
    (first on PYTHONPATH), whose workflow the run directory holds."""
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": path,
    }


def timed(command: list[str], work: Path, log: Path) -> tuple[float, float]:
    """(start, wall) of `command` in `work`, which must succeed; its output is appended to `log`."""
    start = time.time()
    began = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command[2:])}\n")
        out.flush()
        proc = subprocess.run(
            command, cwd=work, env=environment(), stdout=out, stderr=subprocess.STDOUT, check=False
        )
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command[2:])} failed (exit {proc.returncode}); see {log}")
    return start, wall


def metadata(work: Path, output: str) -> dict:
    key = base64.urlsafe_b64encode(output.encode()).decode()
    return json.loads((work / ".snakemake" / "metadata" / key).read_text())


def edit(path: Path, revision: int) -> int:
    """Flip SPLIT between 1 and 2 and set REVISION; the new SPLIT."""
    text = path.read_text()
    split = 2 if "SPLIT = 1\n" in text else 1
    text = text.replace(f"SPLIT = {3 - split}\n", f"SPLIT = {split}\n")
    path.write_text(re.sub(r"^REVISION = \d+$", f"REVISION = {revision}", text, flags=re.M))
    return split


def breakdown(work: Path, name: str, start: float, wall: float) -> dict:
    """Where one rerun's seconds went, from the timestamps it left (see the module's docstring)."""
    outputs = {"benchmark": f"results/bench/{name}.json", "compare": f"results/compare/{name}.json",
               "autotune": "results/report/autotune.json", "report": "results/report/report.html"}  # fmt: skip
    jobs = {rule: metadata(work, output) for rule, output in outputs.items()}
    stale = [rule for rule, record in jobs.items() if record["starttime"] < start]
    if stale:
        sys.exit(
            f"the rerun after the edit did not run {', '.join(stale)} again; see {work / 'edit_loop.log'}"
        )
    bench = json.loads((work / outputs["benchmark"]).read_text())
    process, worker = bench["process"], bench["process"]["worker"] or {}
    spans = {rule: record["endtime"] - record["starttime"] for rule, record in jobs.items()}
    first, last = jobs["benchmark"]["starttime"], jobs["report"]["endtime"]
    row = {
        "total_s": wall,
        "snakemake_before_first_job_s": first - start,
        "snakemake_after_report_s": start + wall - last,
        "between_jobs_s": (last - first) - sum(spans.values()),
        **{f"{rule}_job_s": span for rule, span in spans.items()},
        "benchmark_process_start_s": process["started_at"] - jobs["benchmark"]["starttime"],
        "benchmark_to_worker_s": None,
        "benchmark_in_worker_s": None,
        "benchmark_sampling_s": bench["timing"]["elapsed_s"],
        "benchmark_audit_s": bench["audit_s"],
        "benchmark_after_s": jobs["benchmark"]["endtime"] - process["finished_at"],
        "worker_pid": worker.get("pid"),
        "worker_jobs_before": worker.get("jobs_before"),
        "reloaded": worker.get("reloaded"),
    }
    if worker.get("connected_at") is not None:
        row["benchmark_to_worker_s"] = worker["connected_at"] - process["started_at"]
        row["benchmark_in_worker_s"] = process["finished_at"] - worker["connected_at"]
    return row


def spread(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{statistics.median(values):7.2f} s  [{min(values):.2f}, {max(values):.2f}]"


ROWS = [
    ("no-op rerun (nothing to do)", "noop"),
    ("python -c 'import snakemake.cli' (with its plugins)", "snakemake_import"),
    ("snakemake -n after the edit (import, parse, DAG)", "dry_run"),
    ("edit to report (the rerun)", "total_s"),
    ("  Snakemake: start, parse, DAG, up to the benchmark job", "snakemake_before_first_job_s"),
    ("  benchmark job (Snakemake's start to its output)", "benchmark_job_s"),
    ("    its process's creation (shell, env)", "benchmark_process_start_s"),
    ("    Python start, imports, lease, connect to the worker", "benchmark_to_worker_s"),
    ("    in the worker: reload, checks, sampling, audit, answer", "benchmark_in_worker_s"),
    ("      of which sampling (timing.elapsed_s)", "benchmark_sampling_s"),
    ("      of which the audit (audit_s)", "benchmark_audit_s"),
    ("    write and exit", "benchmark_after_s"),
    ("  compare job", "compare_job_s"),
    ("  autotune job (in the warm worker)", "autotune_job_s"),
    ("  report job (in the warm worker)", "report_job_s"),
    ("  Snakemake between jobs", "between_jobs_s"),
    ("  Snakemake after the report (onsuccess: headline, exit)", "snakemake_after_report_s"),
]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--repeats", type=int, default=5, help="no-op reruns and edits, each (default 5)")
    parser.add_argument(
        "--shape", help=f"one shape; default {SHAPES['cuda']} on CUDA, {SHAPES['cpu']} on the CPU"
    )
    parser.add_argument("--out", type=Path, help="write the measurements here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (printed)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "src"))  # this checkout's attnbench, as in the jobs
    from attnbench import device as devices
    from attnbench.shape_syntax import parse_shape

    resolved = devices.resolve(args.device)
    shape = parse_shape(args.shape or SHAPES[resolved])
    work = Path(tempfile.mkdtemp(prefix="attnbench-edit-loop-"))
    log = work / "edit_loop.log"
    print(
        f"run directory {work} (device {resolved}, shape {shape['name']}; snakemake output in {log.name})",
        flush=True,
    )
    for name in WORKFLOW_FILES:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)
    (work / "config").mkdir(exist_ok=True)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config(args.device, shape), sort_keys=False))
    kernel = work / f"{KERNEL}.py"
    kernel.write_text(KERNEL_SOURCE)

    _, warmup = timed(SNAKEMAKE, work, log)
    print(f"(a) warm-up run: {warmup:.1f} s (not counted)", flush=True)
    bench_file = work / "results" / "bench" / f"{shape['name']}.json"
    first_worker = (json.loads(bench_file.read_text())["process"]["worker"] or {}).get("pid")
    results: dict[str, list] = {"noop": [], "snakemake_import": [], "dry_run": [], "edits": []}
    for _ in range(args.repeats):
        results["noop"].append(timed(SNAKEMAKE, work, log)[1])
    print(f"(b) no-op rerun: {spread(results['noop'])}", flush=True)
    for i in range(args.repeats + 1):
        split = edit(kernel, i + 1)
        if i:
            results["snakemake_import"].append(
                timed([sys.executable, "-c", "import snakemake.cli"], work, log)[1]
            )
            results["dry_run"].append(timed([*SNAKEMAKE, "-n"], work, log)[1])
        start, wall = timed(SNAKEMAKE, work, log)
        row = breakdown(work, shape["name"], start, wall)
        if i:
            results["edits"].append(row)
        print(
            f"(c) edit {i} (SPLIT = {split}): {wall:.2f} s to the report{'' if i else ' (not counted)'}; the benchmark"
            f" job ran in worker pid {row['worker_pid']} after {row['worker_jobs_before']} jobs, which reloaded"
            f" {row['reloaded']}",
            flush=True,
        )
    warm = all(row["worker_jobs_before"] and row["reloaded"] == [KERNEL] for row in results["edits"])
    pids = sorted({row["worker_pid"] for row in results["edits"]}, key=str)
    print(
        f"\nevery counted edit reloaded {KERNEL} in a warm worker: {warm} (worker pids {pids}; warm-up's {first_worker})"
    )
    print(f"median [min, max] over {args.repeats} runs:")
    for label, key in ROWS:
        values = (
            results[key]
            if key in ("noop", "snakemake_import", "dry_run")
            else [row[key] for row in results["edits"]]
        )
        print(f"  {label:<60} {spread(values)}")
    if args.out:
        fingerprint = json.loads((work / "results" / "env" / "fingerprint.json").read_text())
        record = {
            "command": "python benchmarks/edit_loop.py " + " ".join(sys.argv[1:]),
            "device": (fingerprint.get("gpu") or {}).get("name") or fingerprint["cpu"]["model"],
            "torch": fingerprint["torch"]["version"],
            "shape": shape,
            "warmup_s": warmup,
            "warmup_worker_pid": first_worker,
            **results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
