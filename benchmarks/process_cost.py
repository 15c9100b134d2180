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
    """The loop arm: the pipeline's work (fingerprint, calibrate, every shape, compare, report) in this
    one process, calling the library functions the jobs call, and writing the same files."""
    import yaml

    from attnbench import config as run_config
    from attnbench import files, jobs, stats
    from attnbench.cli import configure_logging
    from attnbench.report import OUTPUT_KEYS, build_report

    configure_logging()

    began = time.time()
    schemas = ROOT / "workflow" / "schemas"
    run = run_config.resolve(yaml.safe_load(config_path.read_text()))
    seconds = {}

    def timed_step(name: str, step):
        start = time.perf_counter()
        step()
        seconds[name] = time.perf_counter() - start
        print(f"loop: {name} {seconds[name]:.1f} s", file=sys.stderr, flush=True)

    for command, out in (("fingerprint", "fingerprint"), ("calibrate", "ceilings")):
        spec, target, schema = json.loads(jobs.spec(command, run)), out_dir / f"{out}.json", schemas / f"{out}.schema.yaml"
        timed_step(command, lambda c=command, s=spec, t=target, v=schema: files.write_json(t, jobs.run(c, s), v))
    names = run_config.shape_names(run)
    for name in names:
        spec = json.loads(jobs.spec("benchmark", run, name)) | {"ceilings": str(out_dir / "ceilings.json")}
        timed_step(name, lambda n=name, s=spec: files.write_json(out_dir / f"bench-{n}.json", jobs.run("benchmark", s), schemas / "bench.schema.yaml"))

    def compare_and_report() -> None:
        for name in names:
            bench = files.read_json(out_dir / f"bench-{name}.json", schemas / "bench.schema.yaml")
            document = stats.compare_shape(bench, run["reference"], **run.get("stats", {}))
            files.write_json(out_dir / f"compare-{name}.json", document, schemas / "compare.schema.yaml")
        names_of = {"html": "report.html", "md": "report.md", "csv": "summary.csv", "autotune": "autotune.csv"}
        outputs = {key: str(out_dir / "report" / names_of.get(key, f"{key}.png")) for key in OUTPUT_KEYS}
        build_report([str(out_dir / f"bench-{n}.json") for n in names],
                     [str(out_dir / f"compare-{n}.json") for n in names],
                     str(out_dir / "fingerprint.json"), str(out_dir / "ceilings.json"), outputs,
                     schema_dir=schemas, alpha=run.get("stats", {}).get("alpha", stats.ALPHA))  # fmt: skip

    timed_step("compare_and_report", compare_and_report)
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
