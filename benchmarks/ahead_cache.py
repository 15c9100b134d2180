"""Does a first call made ahead (attnbench.ahead) leave what a benchmark job's compile finds? On a GPU:

    python3 benchmarks/ahead_cache.py [SHAPE ...]

For each shape of config.yaml named (default: two), in fresh Inductor and Triton cache directories,
each step its own process: (A) the first calls as compile_ahead makes them (ahead.serve), (B) the
benchmark job with flex as a warm worker runs it (jobs.run, threads as a job's client sets them),
(C) the same job again. Each prints its seconds and Inductor's cache counters (hits, misses, bypasses).
(A) is also run with TORCHINDUCTOR_COMPILE_THREADS=1 (no compile workers of its own) for its time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

STEP = r"""
import json, sys, time
from torch._dynamo.utils import counters
from attnbench import jobs, host
spec = json.loads(sys.argv[1])
began = time.perf_counter()
if sys.argv[2] == "ahead":
    from attnbench.bench import first_calls
    answer = first_calls(spec)
else:
    spec["threads"] = host.job_threads(None)
    answer = jobs.run("benchmark", spec)["candidates"]["flex"]
    answer = {k: answer.get(k) for k in ("status", "compile_ms")}
print(json.dumps({"step": sys.argv[2], "s": round(time.perf_counter() - began, 2), "answer": answer,
                  "inductor": dict(counters["inductor"]), "aot": dict(counters["aot_autograd"])}))
"""


def main() -> None:
    import yaml

    from attnbench import config as run_config
    from attnbench import jobs

    run = run_config.effective(yaml.safe_load(open("config.yaml")))
    names = sys.argv[1:] or ["b8_h16_s2048_d64", "b2_h16_s8192_d128_causal"]
    for name in names:
        spec = jobs._benchmark_spec(run, name) | {"candidates": ["flex"], "ceilings": None}
        spec["timing"] = {"max_time_s": 1}
        with tempfile.TemporaryDirectory() as caches:
            env = {
                **os.environ,
                "TORCHINDUCTOR_CACHE_DIR": f"{caches}/inductor",
                "TRITON_CACHE_DIR": f"{caches}/triton",
            }
            for step, extra in (
                ("ahead", {"TORCHINDUCTOR_COMPILE_THREADS": "1"}),
                ("ahead", {}),
                ("job", {}),
                ("job", {}),
            ):
                began = time.perf_counter()
                out = subprocess.run(
                    [sys.executable, "-c", STEP, json.dumps(spec), step],
                    env=env | extra,
                    capture_output=True,
                    text=True,
                )
                line = out.stdout.strip().splitlines()[-1:] or [out.stderr[-400:]]
                print(name, step, extra, f"process {time.perf_counter() - began:.1f} s", line[0], flush=True)


if __name__ == "__main__":
    main()
