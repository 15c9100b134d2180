"""What reusing the ceilings costs against measuring them, in one process (as in the warm worker).

Runs the fingerprint job, then the calibrate job twice on this machine's device: the first measures
(and remembers), the second reuses; the second is profiled. In a fresh cache folder of its own
(XDG_CACHE_HOME), so it measures first whatever earlier runs remembered.

    python3 benchmarks/calibrate_reuse.py [cuda|cpu]
"""

from __future__ import annotations

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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="calibrate_reuse-")

from attnbench import jobs, lock  # after XDG_CACHE_HOME: the cache folder is read at import


def timed(label: str, step: Any) -> Any:
    began = time.perf_counter()
    result = step()
    print(f"{label:40s} {time.perf_counter() - began:7.3f} s", flush=True)
    return result


def main() -> None:
    device = sys.argv[1] if len(sys.argv) > 1 else "cuda"
    run = {"device": device, "requested_device": device, "dtype": "bfloat16" if device == "cuda" else "float32"}
    os.environ.update(lock.job_env(None))  # as a rule's `env` prefix sets them
    os.chdir(tempfile.mkdtemp(prefix="calibrate_reuse-"))
    timed("import torch", lambda: __import__("torch"))
    timed("fingerprint job", lambda: jobs.run("fingerprint", json.loads(jobs.spec("fingerprint", run))))
    spec = json.loads(jobs.spec("calibrate", run))
    timed("calibrate (measures)", lambda: jobs.run("calibrate", spec))
    profiler = cProfile.Profile()
    profiler.enable()
    document = timed("calibrate (reuses)", lambda: jobs.run("calibrate", spec))
    profiler.disable()
    print("reused:", bool(document.get("reused")))
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    print(out.getvalue())


if __name__ == "__main__":
    main()
