"""Compile ahead: every shape's compiling candidates called once, in parallel processes, before the
benchmark jobs, so that each job's first call finds Inductor's and Triton's on-disk caches warm.

Why: a benchmark job resets dynamo before its shape (attnbench.jobs), so FlexAttention compiles for
every shape: 67 of the 233 s of the H200 default sweep, one shape after another while 15 of the 16
cores idle (docs/scale.md, issue 21). A compile needs the GPU only for the first call that follows
it; the shapes' compiles are independent. So one job, holding the GPU lease like a benchmark job
(nothing is measured meanwhile), runs each shape's first calls in PROCESSES_MAX processes at once.
Each benchmark job then compiles as a rerun does: FX graph cache and Triton cache hits, the same
kernels (the caches key on the graph, the inputs' shapes, strides and dtypes, the configs and the
software), a fraction of the time. Nothing carries over in memory: the job still resets dynamo, and
a job whose key misses (another torch, a changed kernel) compiles as before.

What is called: the candidates whose first call compiles (`compiles`: flex, and user kernels, which
may be Triton or torch.compile), each exactly as a benchmark job makes its first call (the same
inputs, layout, lock and grad mode: attnbench.bench.first_call). What goes wrong here is recorded,
never raised: the benchmark job meets the same error and says it properly (attnbench.isolation).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from attnbench import host

log = logging.getLogger(__name__).info

# At most this many processes: each imports torch and makes a CUDA context (about 0.5 GB of device
# memory), and 16 first calls at once already keep 16 cores busy.
PROCESSES_MAX = 16
# A shape's first calls in one process end within this, or that process is stopped (its shapes then
# compile in their benchmark jobs, as without this step).
PROCESS_TIMEOUT_S = 600.0


def compiles(candidate: str) -> bool:
    """Whether a candidate's first call compiles something a disk cache keeps: flex (torch.compile),
    a user kernel (Triton's JIT, torch.compile). SDPA's backends have nothing to compile."""
    return candidate == "flex" or ":" in candidate


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """The first calls of spec["specs"] (benchmark specs, their candidates those that compile), in
    parallel processes: the document (compile_ahead.schema.yaml)."""
    specs = spec["specs"]
    processes = max(1, min(PROCESSES_MAX, host.available_cpus(), len(specs)))
    # The longest first: each process gets every processes-th shape by size, so they end together.
    ordered = sorted(specs, key=lambda s: -s["shape"]["batch"] * s["shape"]["seq"] * s["shape"]["dim"])
    chunks = [ordered[i::processes] for i in range(processes)]
    began = time.perf_counter()
    with ThreadPoolExecutor(processes) as pool:
        answers = list(pool.map(_in_process, chunks))
    shapes: dict[str, Any] = {}
    for chunk, (done, ended) in zip(chunks, answers, strict=True):
        for one in chunk:
            name = one["shape"]["name"]
            shapes[name] = done.get(name) or {c: {"seconds": None, "error": ended} for c in one["candidates"]}
    wall_s = time.perf_counter() - began
    failed = sorted({f"{name}: {c}" for name, calls in shapes.items() for c, r in calls.items() if r["error"]})
    log(f"first calls of {len(shapes)} shapes in {processes} processes: {wall_s:.1f} s")
    if failed:
        log(f"not compiled ahead (their benchmark jobs say why): {', '.join(failed)}")
    return {"device": spec["device"], "processes": processes, "wall_s": wall_s, "shapes": shapes}


def _in_process(chunk: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """One process's first calls: {shape: {candidate: {seconds, error}}} as it reported them, and how
    it ended (said for the shapes it did not report)."""
    command = [sys.executable, "-c", "from attnbench import ahead; ahead.serve()"]
    try:
        ran = subprocess.run(
            command, input=json.dumps(chunk), capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return {}, f"its process did not end within {PROCESS_TIMEOUT_S:g} s"
    done = {}
    for line in ran.stdout.splitlines():
        answer = json.loads(line)
        done[answer["shape"]] = answer["candidates"]
    last = ran.stderr.strip().splitlines()[-1:] or ["no output"]
    return done, f"its process ended with {ran.returncode} before it ({last[0][-200:]})"


def serve() -> None:
    """In a process of its own: the first calls of the benchmark specs on stdin, one JSON line per
    shape on stdout."""
    from attnbench.bench import first_calls

    for spec in json.loads(sys.stdin.read()):
        answer = {"shape": spec["shape"]["name"], "candidates": first_calls(spec)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
