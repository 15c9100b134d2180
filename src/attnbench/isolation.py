"""A candidate that crashes its process or the CUDA context costs only its own result.

Why: CUDA makes some errors sticky (an illegal address, a device-side assert, ...): every later call in
that process fails, so one faulting kernel under development used to lose every candidate's result on
every shape, without naming the kernel. A process can also simply die (a segfault in a binding, an
abort, exit()).

So the benchmark job, which writes the shape's result, never measures in its own process: the shape is
measured in the warm worker or in a child of the job (attnbench.worker). When that process dies or
reports a sticky error (it stops measuring at once: bench raises ContextLost):

1. the culprit is the candidate whose checks were running, if any: they synchronise after every call,
   so an error or a death there is that candidate's own;
2. otherwise (in the timed rounds, which synchronise once per round, or the audit) each remaining
   candidate is replayed alone in a fresh process with CUDA_LAUNCH_BLOCKING=1, user kernels first; the
   first one whose process dies or loses its context is the culprit;
3. the shape is measured again in a fresh process without the culprits, until none crashes (at most
   once per candidate), and each culprit is recorded with the status `crashed`, what happened, and a
   command that replays it alone (with `sanitize_crashes: true`, also under compute-sanitizer
   --tool memcheck, whose first report lines are kept).

A crash while the shape is set up, before any candidate ran (inputs, the float64 reference), is no
candidate's: the job fails with it, as any other error of the harness does.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

# CUDA errors after which the context is unusable (cudaGetErrorString's words), and the library errors
# that a kernel launched into a lost context reports.
STICKY_ERRORS = (
    "illegal memory access",
    "misaligned address",
    "illegal instruction",
    "unspecified launch failure",
    "device-side assert",
    "hardware stack error",
    "invalid program counter",
    "the launch timed out and was terminated",
    "operation not supported on global/shared address space",
    "CUBLAS_STATUS_EXECUTION_FAILED",
    "CUDNN_STATUS_EXECUTION_FAILED",
)
# A replay stops at the culprit's own call: the error surfaces at the launch that caused it.
REPLAY_VARIABLES = {"CUDA_LAUNCH_BLOCKING": "1"}
SANITIZER = ("compute-sanitizer", "--tool", "memcheck")
SANITIZER_LINES = 20
SANITIZER_TIMEOUT_S = 600.0  # memcheck slows kernels down 10-100x
DEBUG_HINT = {
    "cuda": "debug it alone: crash.replay under compute-sanitizer --tool memcheck, or with CUDA_LAUNCH_BLOCKING=1",
    "cpu": "debug it alone: crash.replay (faulthandler prints where it crashed)",
}


def is_sticky(exc: BaseException) -> bool:
    """Whether `exc` says the CUDA context is lost, whichever library raised it (torch, Triton, cuBLAS)."""
    text = str(exc).lower()
    return any(words.lower() in text for words in STICKY_ERRORS)


class ContextLost(Exception):
    """A sticky CUDA error in the measuring process: it can measure nothing more. `candidate` is the
    one whose synchronised checks were running, when it is known."""

    def __init__(self, error: str, candidate: str | None) -> None:
        super().__init__(error)
        self.error = error
        self.candidate = candidate


class Crash(RuntimeError):
    """The process measuring a shape died or lost its CUDA context. `what` happened (the same words on
    every shape), `candidate` was running its checks then (None: unknown), `checked`: all checks were
    done; `process` says which one. Outside a benchmark job (a fingerprint in a worker that died) it is
    the job's error."""

    def __init__(self, what: str, candidate: str | None, process: str, checked: bool) -> None:
        super().__init__(f"{process} {what}")
        self.what = what
        self.candidate = candidate
        self.process = process
        self.checked = checked

    def no_candidate_ran(self, shape: str) -> RuntimeError | None:
        """The error for a crash while the shape was set up (inputs, float64 reference): nobody's."""
        if self.candidate is None and not self.checked:
            return RuntimeError(f"shape {shape}: {self} while setting up the shape, before any candidate ran")
        return None


def exit_status(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


Measure = Callable[[dict[str, Any]], tuple[dict[str, Any], Any]]
Replay = Callable[..., dict[str, Any]]


def supervise(
    spec: dict[str, Any], measure: Measure, replay: Replay, *, log: Callable[[str], None]
) -> tuple[dict[str, Any], Any]:
    """The shape's document, measured by `measure(spec)` again without each candidate that crashed it;
    `replay(spec, variables=...)` measures in a fresh process of its own. Both raise Crash."""
    crashed: dict[str, dict[str, Any]] = {}
    while True:
        remaining = [name for name in spec["candidates"] if name not in crashed]
        try:
            document, served_by = measure({**spec, "candidates": remaining})
            break
        except Crash as crash:
            name, entry = _culprit(crash, {**spec, "candidates": remaining}, replay, log)
            crashed[name] = entry
            log(f"{name} crashed: {entry['reason']}; measuring {spec['shape']['name']} again without it")
    measured = document["candidates"]
    document["candidates"] = {name: crashed.get(name) or measured[name] for name in spec["candidates"]}
    return document, served_by


def crashed(document: dict[str, Any]) -> list[str]:
    """The candidates whose entries `supervise` wrote into a shape's document: only it makes them."""
    return [name for name, entry in document["candidates"].items() if entry["status"] == "crashed"]


def _culprit(
    crash: Crash, spec: dict[str, Any], replay: Replay, log: Callable[[str], None]
) -> tuple[str, dict[str, Any]]:
    if crash.candidate is not None:
        return crash.candidate, _entry(
            crash.candidate, crash, spec, "it was running its checks when its process crashed"
        )
    if error := crash.no_candidate_ran(spec["shape"]["name"]):
        raise error
    log(f"{crash}, not during any candidate's checks: replaying each candidate alone to find the culprit")
    # User kernels first: a kernel under development is the likely culprit, and each replay costs a process.
    for name in sorted(spec["candidates"], key=lambda name: ":" not in name):
        try:
            replay({**spec, "candidates": [name]}, variables=REPLAY_VARIABLES)
        except Crash as alone:
            if error := alone.no_candidate_ran(spec["shape"]["name"]):
                raise error from crash
            return name, _entry(name, alone, spec, "replayed alone in a fresh process, it crashed")
    raise RuntimeError(
        f"shape {spec['shape']['name']}: {crash} during the timed rounds or the audit, and no candidate "
        f"crashed when replayed alone ({', '.join(spec['candidates']) or 'none left'})"
    )


def _entry(name: str, crash: Crash, spec: dict[str, Any], found_by: str) -> dict[str, Any]:
    """The culprit's entry (bench.schema.yaml: status crashed, `crash`)."""
    # bench imports this module; and the job loads numpy only once a crash is recorded.
    from attnbench import lock
    from attnbench.bench import empty_entry

    phase = "its checks" if crash.candidate is not None else "the timed rounds or the audit"
    command = replay_command({**spec, "candidates": [name]})
    variables = [f"{k}={v}" for k, v in sorted(lock.job_env(spec.get("lock")).items())]
    return empty_entry(
        "crashed",
        f"in {phase}, its process {crash.what}; {DEBUG_HINT[spec['device']]}",
        crash={
            "what": crash.what,
            "phase": phase,
            "found_by": found_by,
            "process": crash.process,
            "replay": shlex.join(["env", *variables, *command]),
            "sanitizer": sanitize(command) if spec.get("sanitize_crashes") else None,
        },
    )


def replay_command(spec: dict[str, Any]) -> list[str]:
    """`attnbench replay` of this spec, to run in the job's directory and environment."""
    return [sys.executable, "-X", "faulthandler", "-m", "attnbench", "replay", "--spec", json.dumps(spec)]


def sanitize(command: list[str]) -> list[str]:
    """The first lines of compute-sanitizer's memcheck report on the replay."""
    if shutil.which(SANITIZER[0]) is None:
        return [f"{SANITIZER[0]} not found on PATH"]
    # A session of its own: on a timeout the replay under the sanitizer dies with it, never keeps the GPU.
    ran = subprocess.Popen(
        [*SANITIZER, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = ran.communicate(timeout=SANITIZER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(ran.pid, signal.SIGKILL)
        ran.communicate()
        return [f"no report within {SANITIZER_TIMEOUT_S:g} s"]
    lines = [line for line in output.splitlines() if line.startswith("=========")]
    return lines[:SANITIZER_LINES] or [f"no report; the replay {exit_status(ran.returncode)}"]
