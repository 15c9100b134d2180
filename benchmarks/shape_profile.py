"""Where a benchmark job's time goes beyond warm-up and sampling, function by function.

benchmarks/duty.py says how long each phase of each job took; this says why. It runs shapes of a
config in this one process, as the warm worker does (calibrate first, then each shape's benchmark
job, its document validated and serialised as the worker sends it), under cProfile with the profiler
paused inside timing.measure (warm-up and sampling, what duty counts as measuring), and prints per
shape the job's wall time, the time measuring and the functions that took the most of the rest.

    python3 benchmarks/shape_profile.py [--config config/config.yaml] [--candidates flash,efficient,...]
        [--shapes NAME,NAME] [--top 20] [--out profile.json]

Run it from the repository root on the machine whose numbers it explains; cProfile slows Python
code (not the device), so its per-function times are upper bounds.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from attnbench import config as run_config
from attnbench import files, jobs, lock, timing


class _PausedWhileMeasuring:
    """timing.measure with the profiler off inside it: what is left is the job's overhead."""

    def __init__(self, profiler: cProfile.Profile) -> None:
        self.profiler = profiler
        self.measure = timing.measure
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.profiler.disable()
        began = time.perf_counter()
        try:
            return self.measure(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - began
            self.profiler.enable()


def _top(profiler: cProfile.Profile, key: str, count: int) -> list[dict[str, Any]]:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (path, line, function), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(path).name}:{line}({function})",
                "calls": calls,
                "tottime_s": tottime,
                "cumtime_s": cumtime,
            }
        )
    return sorted(rows, key=lambda row: row[key], reverse=True)[:count]


def profile_shape(run: dict[str, Any], name: str, schemas: Path, top: int) -> dict[str, Any]:
    profiler = cProfile.Profile()
    paused = _PausedWhileMeasuring(profiler)
    timing.measure = paused  # bench calls timing.measure through the module
    began = time.perf_counter()
    profiler.enable()
    try:
        spec = json.loads(jobs.spec("benchmark", run, name))
        result = jobs.run("benchmark", spec, schemas)
        files.validate(files.stamped(result), jobs.output_schema("benchmark", schemas), source=name)
        sent = json.dumps({"result": result})
    finally:
        profiler.disable()
        timing.measure = paused.measure
    wall = time.perf_counter() - began
    return {
        "shape": name,
        "wall_s": wall,
        "measure_s": paused.seconds,
        "rest_s": wall - paused.seconds,
        "document_bytes": len(sent),
        "by_cumulative": _top(profiler, "cumtime_s", top),
        "by_own_time": _top(profiler, "tottime_s", top),
    }


def _print(shape: dict[str, Any]) -> None:
    print(
        f"\n== {shape['shape']}: wall {shape['wall_s']:.3f} s, timing.measure {shape['measure_s']:.3f} s, "
        f"rest {shape['rest_s']:.3f} s, document {shape['document_bytes'] / 1e3:.0f} kB"
    )
    for title, key, rows in (
        ("cumulative", "cumtime_s", shape["by_cumulative"]),
        ("own time", "tottime_s", shape["by_own_time"]),
    ):
        print(f"  by {title}:")
        for row in rows:
            print(f"    {row[key]:8.3f} s  {row['calls']:7d}  {row['function']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--candidates", help="comma-separated; default the config's")
    parser.add_argument("--shapes", help="comma-separated shape names; default all of the config's")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--out", help="also write the numbers as JSON here")
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    overrides = {"candidates": args.candidates.split(",")} if args.candidates else {}
    run = run_config.resolve(config, overrides)
    variables = lock.job_env(run.get("lock"))
    if any(os.environ.get(key) != value for key, value in variables.items()):
        # the lock's start-up variables, as a rule's `env` prefix sets them before Python starts
        os.execve(sys.executable, [sys.executable, *sys.argv], os.environ | variables)
    names = args.shapes.split(",") if args.shapes else run_config.shape_names(run)
    schemas = ROOT / "workflow" / "schemas"
    os.chdir(tempfile.mkdtemp(prefix="shape_profile-"))  # the jobs' outputs are relative paths
    files.write_json(jobs.output("calibrate"), jobs.run("calibrate", json.loads(jobs.spec("calibrate", run))))
    shapes = []
    for name in names:
        shapes.append(profile_shape(run, name, schemas, args.top))
        _print(shapes[-1])
    rests = sorted(shape["rest_s"] for shape in shapes)
    print(f"\nrest (job beyond timing.measure, under cProfile): median {rests[len(rests) // 2]:.3f} s over {len(rests)} shapes")
    if args.out:
        Path(args.out).write_text(json.dumps({"tool": "benchmarks/shape_profile.py", "shapes": shapes}, indent=1))


if __name__ == "__main__":
    main()
