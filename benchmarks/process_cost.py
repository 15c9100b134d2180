"""What one process per job costs: the pipeline's wall time against one process that does the same
work (issue 5; docs/scale.md has the results).

    python benchmarks/process_cost.py [--config config/config.yaml] [--out docs/process-cost/GPU.json]

From the repository root, with snakemake, attnbench and torch importable. Two arms, one after the
other, on the same device:
  pipeline  `snakemake --cores 1 --resources gpu=1` on the config, in a fresh working directory
            (-s workflow/Snakefile --directory WORK): fingerprint, calibrate, one benchmark job per shape,
            compare, report. Set ATTNBENCH_WORKER=0 to measure it without the per-GPU worker.
  loop      one Python process that calls the same library functions on the same specs, in the
            same order, and writes the same files; each shape through attnbench.jobs.run("benchmark", ...),
            which resets torch.compile's state between shapes as the worker does.
Each arm starts with empty torch.compile and Triton caches of its own, so neither reuses kernels the
other compiled, after one untimed import of torch, torch.compile, scipy, pandas, matplotlib and snakemake that
warms the page cache for both. `ratio` is pipeline wall / loop wall; `benchmark_ratio` compares the benchmark jobs
(each from its process's creation to its write, the result's `process` record) with the loop's
time for the same shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loop(config_path: Path, out_dir: Path) -> None:
    """The loop arm: the pipeline's jobs (fingerprint, calibrate, every shape, compare, autotune,
    report) in this one process, through the registry the jobs run from (attnbench.jobs), with the
    same specs, writing the same files under OUT_DIR. Its `compare_and_report` step counts the compare
    jobs, autotune and the report (JSON files from before autotune was a job count compare and report)."""
    import yaml

    from attnbench import config as run_config
    from attnbench import files, jobs
    from attnbench.cli import configure_logging

    configure_logging()
    began = time.time()
    schemas = ROOT / "workflow" / "schemas"
    run = run_config.resolve(yaml.safe_load(config_path.read_text()))
    names = run_config.shape_names(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(out_dir)  # the specs name their files relative to the working directory, as in a run
    seconds: dict[str, float] = {}

    def step(command: str, name: str | None = None) -> float:
        """One job, as its rule runs it; its seconds."""
        spec = json.loads(jobs.spec(command, run, name))
        start = time.perf_counter()
        document = jobs.run(command, spec, schemas)
        files.write_json(jobs.output(command, name), document, jobs.output_schema(command, schemas))
        took = time.perf_counter() - start
        print(f"loop: {command} {name or ''} {took:.1f} s", file=sys.stderr, flush=True)
        return took

    for command in ("fingerprint", "calibrate"):
        seconds[command] = step(command)
    for name in names:  # a benchmark job's seconds under its shape's name: summarise pairs them
        seconds[name] = step("benchmark", name)
    seconds["compare_and_report"] = sum(step("compare", name) for name in names)
    seconds["compare_and_report"] += step("autotune") + step("report")
    print(json.dumps({"imports_s": began - _started_at(), "steps_s": seconds, "shapes": names}))


def _started_at() -> float:
    from attnbench.cli import process_started_at

    return process_started_at() or time.time()


def timed(command: list[str], log: Path, env: dict[str, str], cwd: Path = ROOT) -> tuple[float, str]:
    start = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=handle, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} … failed ({proc.returncode}); see {log}")
    return wall, proc.stdout


def arm_env(work: Path, arm: str) -> dict[str, str]:
    """Job environment (the lock's start-up variables) plus caches of the arm's own."""
    import yaml

    from attnbench import config as run_config
    from attnbench import lock

    caches = {
        "TORCHINDUCTOR_CACHE_DIR": str(work / arm / "inductor-cache"),
        "TRITON_CACHE_DIR": str(work / arm / "triton-cache"),
    }
    run = run_config.resolve(yaml.safe_load((work / "config.yaml").read_text()))
    lock_env = lock.job_env(run.get("lock"))
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **lock_env, **caches, "PYTHONPATH": path}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--out", type=Path, help="JSON of the measurement (default: print only)")
    parser.add_argument("--work", type=Path, help="working directory (default: a new temporary one)")
    parser.add_argument("--loop-arm", nargs=2, type=Path, metavar=("CONFIG", "OUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop_arm:
        return loop(*args.loop_arm)

    work = args.work or Path(tempfile.mkdtemp(prefix="attnbench-process-cost-"))
    (work / "pipeline" / "config").mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(args.config.read_text())
    (work / "pipeline" / "config" / "config.yaml").write_text(args.config.read_text())
    print(f"working in {work}", file=sys.stderr, flush=True)

    # Untimed: read the libraries into the page cache once, so that the first arm does not pay for the
    # cold disk on the second's behalf.
    warm = "torch, torch._dynamo, torch._inductor.compile_fx, torch.nn.attention.flex_attention, scipy.stats, pandas, matplotlib.pyplot, snakemake"
    subprocess.run([sys.executable, "-c", f"import {warm}"], check=True)
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile"), "--directory",
                 str(work / "pipeline"), "--cores", "1", "--resources", "gpu=1"]  # fmt: skip
    pipeline_wall, _ = timed(snakemake, work / "pipeline.log", arm_env(work, "pipeline"))
    print(f"pipeline: {pipeline_wall:.1f} s", file=sys.stderr, flush=True)
    loop_command = [sys.executable, __file__, "--loop-arm", str(work / "config.yaml"), str(work / "loop")]
    loop_wall, printed = timed(loop_command, work / "loop.log", arm_env(work, "loop"))
    print(f"loop: {loop_wall:.1f} s", file=sys.stderr, flush=True)

    result = summarise(work, pipeline_wall, loop_wall, json.loads(printed.splitlines()[-1]))
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def summarise(work: Path, pipeline_wall: float, loop_wall: float, loop_record: dict) -> dict:
    results = work / "pipeline" / "results"

    def job_seconds(path: Path) -> float:
        process = json.loads(path.read_text())["process"]
        return process["finished_at"] - process["started_at"]

    bench = {name: job_seconds(results / "bench" / f"{name}.json") for name in loop_record["shapes"]}
    steps = loop_record["steps_s"]
    fingerprint = json.loads((results / "env" / "fingerprint.json").read_text())
    workers = {json.loads((results / "bench" / f"{n}.json").read_text())["process"]["worker"] is not None for n in bench}
    return {
        "command": "python benchmarks/process_cost.py",
        "device": (fingerprint.get("gpu") or {}).get("name") or fingerprint["cpu"]["model"],
        "torch": fingerprint["torch"]["version"],
        "shapes": len(bench),
        "worker": sorted(workers),
        "pipeline_wall_s": pipeline_wall,
        "loop_wall_s": loop_wall,
        "ratio": pipeline_wall / loop_wall,
        "benchmark_jobs_s": sum(bench.values()),
        "loop_shapes_s": sum(steps[n] for n in bench),
        "benchmark_ratio": sum(bench.values()) / sum(steps[n] for n in bench),
        "pipeline_other_s": pipeline_wall - sum(bench.values()),
        "loop_other_s": loop_wall - sum(steps[n] for n in bench),
        "loop_steps_s": steps,
        "benchmark_job_s": bench,
    }


if __name__ == "__main__":
    main()
