"""What one process per job costs: the pipeline's wall time against one process that loops over the
same shapes with the same measurements (issue 5; docs/scale.md has the results).

    python benchmarks/process_cost.py [--config config.yaml] [--out docs/process-cost/GPU.json]

From the repository root, with snakemake, attnbench and torch importable. Two arms, one after the
other, on the same device:
  pipeline  `snakemake --cores 1 --resources gpu=1` on the config, in a fresh working directory
            (-s Snakefile --directory WORK): fingerprint, calibrate, one benchmark job per shape,
            compare, report.
  loop      one Python process that calls attnbench.bench.run_shape on the spec of every shape
            (the same spec the benchmark rule passes) and writes the same result files.
Each arm starts with empty torch.compile and Triton caches of its own, so neither reuses kernels the
other compiled. The ratio is pipeline wall / loop wall; the breakdown splits the pipeline into its
benchmark jobs (each from process creation to its write, from the result's `process` record), the
fingerprint and calibrate jobs, and the rest (compare, report, Snakemake's scheduling).
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
    """The loop arm: every shape measured in this one process, written as the benchmark rule would."""
    import yaml

    from attnbench import config as run_config
    from attnbench import io
    from attnbench.bench import run_shape

    began = time.time()
    run = run_config.effective(yaml.safe_load(config_path.read_text()))
    seconds = {}
    for name in run_config.shape_names(run):
        start = time.perf_counter()
        spec = json.loads(run_config.benchmark_spec(run, name))
        io.write_json(out_dir / f"{name}.json", run_shape(spec), ROOT / "workflow/schemas/bench.schema.yaml")
        seconds[name] = time.perf_counter() - start
        print(f"loop: {name} {seconds[name]:.1f} s", file=sys.stderr, flush=True)
    print(json.dumps({"imports_s": began - _started_at(), "shapes_s": seconds}))


def _started_at() -> float:
    from attnbench.cli import _process_started_at

    return _process_started_at() or time.time()


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
    run = run_config.effective(yaml.safe_load((work / "config.yaml").read_text()))
    lock_env = lock.job_env(run.get("lock"))
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **lock_env, **caches, "PYTHONPATH": path}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    parser.add_argument("--out", type=Path, help="JSON of the measurement (default: print only)")
    parser.add_argument("--work", type=Path, help="working directory (default: a new temporary one)")
    parser.add_argument("--loop-arm", nargs=2, type=Path, metavar=("CONFIG", "OUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop_arm:
        return loop(*args.loop_arm)

    work = args.work or Path(tempfile.mkdtemp(prefix="attnbench-process-cost-"))
    (work / "pipeline").mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(args.config.read_text())
    (work / "pipeline" / "config.yaml").write_text(args.config.read_text())
    print(f"working in {work}", file=sys.stderr, flush=True)

    snakemake = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
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

    bench = {path.stem: job_seconds(path) for path in sorted((results / "bench").glob("*.json"))}
    setup = {name: job_seconds(results / "env" / f"{name}.json") for name in ("fingerprint", "ceilings")}
    fingerprint = json.loads((results / "env" / "fingerprint.json").read_text())
    loop_shapes = loop_record["shapes_s"]
    extra = {name: bench[name] - loop_shapes[name] for name in bench}
    return {
        "command": "python benchmarks/process_cost.py",
        "device": (fingerprint.get("gpu") or {}).get("name") or fingerprint["cpu"]["model"],
        "torch": fingerprint["torch"]["version"],
        "shapes": len(bench),
        "pipeline_wall_s": pipeline_wall,
        "loop_wall_s": loop_wall,
        "ratio": pipeline_wall / loop_wall,
        "pipeline_breakdown_s": {
            "benchmark_jobs": sum(bench.values()),
            "fingerprint_and_calibrate_jobs": sum(setup.values()),
            "compare_report_and_scheduling": pipeline_wall - sum(bench.values()) - sum(setup.values()),
        },
        "loop_breakdown_s": {
            "interpreter_and_imports": loop_record["imports_s"],
            "shapes": sum(loop_shapes.values()),
        },
        "per_shape_s": {
            name: {"job": bench[name], "in_loop": loop_shapes[name], "extra": extra[name]} for name in bench
        },
        "median_extra_per_benchmark_job_s": sorted(extra.values())[len(extra) // 2],
    }


if __name__ == "__main__":
    main()
