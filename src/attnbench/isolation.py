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

A hang is found the same way. `call_timeout_s` is cooperative: SIGALRM raises in the measuring process,
and a kernel that catches it (`except BaseException` in a loop) keeps that process busy for ever. So the
job keeps a watchdog from outside it (`Limits`, enforced by attnbench.worker): each phase of the request
has a wall-clock limit derived from the config, and when one passes, the job kills the measuring
process (the warm worker's process group, or its child) and raises `Hung`, a Crash: the candidate
whose checks were running, or the one that hangs when replayed alone, ends `timeout` with the limit in
its reason, and the shape is measured again without it. Before any candidate ran, the job fails with
the limit named.
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
from dataclasses import dataclass
from typing import Any

from attnbench.results import Status, empty_entry
from attnbench.settings import TimingSettings
from attnbench.usercode import is_user_kernel

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


class Hung(Crash):
    """The process measuring a shape ran past the job's watchdog (`Limits`) and the job killed it: `what`
    names the limit. Its culprit ends `timeout`, not `crashed`."""


# The watchdog's limits (Limits): what a benchmark request legitimately spends, from its config.
# Before any candidate: a fresh process's interpreter and torch (worker.START_TIMEOUT_S allows as much
# for a slow shared file system), the user's changed modules reloaded, the inputs and their float64 reference.
SETUP_S = 300.0
# The scopes of one candidate's checks that call_timeout_s bounds each (bench.prepare): its module's
# import, its build (a factory's setup), the first call, the second and hard input sets, the calls for
# determinism and memory; and one more for the checks' own work between them (a comparison with the
# float64 answer costs less than a call), plus a fixed allowance.
CHECK_CALLS = 7
CHECK_SLACK_S = 5.0
# The timed phase: a warm-up ends after the batch of rounds (timing.WARMUP_BATCH_ROUNDS) that passes
# warmup_max_s, on CUDA once per call form (per call, then graphs); sampling after the round that passes
# max_time_s, and one round is profiled; the audit calls each candidate twice; a candidate caught by the
# audit has the shape sampled a second time. Each call is bounded by call_timeout_s.
WARMUP_OVERRUN_ROUNDS = 3
SAMPLING_OVERRUN_ROUNDS = 2
SAMPLING_PASSES = 2
AUDIT_CALLS = 2
# attnbench's own work in the timed phase: the profiled round's profiler, the final statistics, and per
# candidate and round of max_rounds the bootstraps of its median (run up to twice a pass: the stopping
# rule's last check, then the result's; docs/scale.md has their cost); the audit's
# float64 answers are allowed the time the setup's took (worker.Watchdog adds it).
TIMED_SLACK_S = 10.0
STATS_S_PER_ROUND = 1e-3


@dataclass(frozen=True)
class Limits:
    """A benchmark request's wall-clock limits, enforced by the job from outside the measuring process
    (attnbench.worker): `setup_s` until the first candidate's checks start, `checks_s` for each
    candidate's checks, `timed_s` (plus what the setup took, at most `setup_s`) for the timed rounds and
    the audit; `limit_s`, their sum, for the whole request."""

    call_timeout_s: float
    candidates: int
    setup_s: float
    checks_s: float
    timed_s: float
    timed_formula: str

    @property
    def limit_s(self) -> float:
        return 2 * self.setup_s + self.candidates * self.checks_s + self.timed_s

    def explain(self, phase: str) -> str:
        """How the limit of `phase` (setup, checks, timed, request) is made."""
        checks = f"{CHECK_CALLS} x call_timeout_s {self.call_timeout_s:g} s + {CHECK_SLACK_S:g} s"
        if phase == "setup":
            return f"{self.setup_s:g} s for the interpreter, torch, the inputs and the float64 reference"
        if phase == "checks":
            return checks
        if phase == "timed":
            return f"{self.timed_formula}, plus the setup's own time"
        return (
            f"2 x {self.setup_s:g} s for the setup and the audit's float64 answers"
            f" + {self.candidates} candidates x ({checks})"
            f" + {seconds(self.timed_s)} s for the timed rounds and the audit ({self.timed_formula})"
        )

    def record(self) -> dict[str, Any]:
        """The bench document's `watchdog` (bench.schema.yaml)."""
        return {
            "limit_s": round(self.limit_s, 3),
            "setup_s": self.setup_s,
            "checks_s": round(self.checks_s, 3),
            "timed_s": round(self.timed_s, 3),
            "call_timeout_s": self.call_timeout_s,
            "formula": self.explain("request"),
        }


def seconds(value: float) -> str:
    """A limit as the reasons and the log say it: to a tenth of a second, never in e-notation."""
    return f"{value:.1f}".removesuffix(".0")


def limits(spec: dict[str, Any]) -> Limits | None:
    """The watchdog's limits for measuring `spec`, from its timing settings and candidates; None when
    its calls have no timeout (a hand-made spec)."""
    settings = TimingSettings.from_config(spec.get("timing"))
    call_s = settings.call_timeout_s
    if not call_s:
        return None
    n = max(len(spec.get("candidates") or ()), 1)
    round_s = n * call_s
    warmups = 2 if spec.get("device") == "cuda" else 1
    warmup_s = settings.warmup_max_s + WARMUP_OVERRUN_ROUNDS * round_s
    sampling_s = warmups * warmup_s + settings.max_time_s + SAMPLING_OVERRUN_ROUNDS * round_s
    slack_s = TIMED_SLACK_S + n * settings.max_rounds * STATS_S_PER_ROUND
    timed_s = SAMPLING_PASSES * sampling_s + AUDIT_CALLS * round_s + slack_s
    rounds = WARMUP_OVERRUN_ROUNDS * warmups + SAMPLING_OVERRUN_ROUNDS
    formula = (
        f"{SAMPLING_PASSES} x ({warmups} x warmup_max_s {settings.warmup_max_s:g} s + max_time_s"
        f" {settings.max_time_s:g} s + {rounds} rounds) + {AUDIT_CALLS} rounds + {seconds(slack_s)} s,"
        f" a round being {n} candidates x call_timeout_s {call_s:g} s"
    )
    return Limits(
        call_timeout_s=call_s,
        candidates=n,
        setup_s=SETUP_S,
        checks_s=CHECK_CALLS * call_s + CHECK_SLACK_S,
        timed_s=timed_s,
        timed_formula=formula,
    )


def exit_status(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


Measure = Callable[[dict[str, Any]], tuple[dict[str, Any], Any]]
Replay = Callable[..., dict[str, Any]]


def supervise(
    spec: dict[str, Any], measure: Measure, replay: Replay, *, log: Callable[[str], None]
) -> tuple[dict[str, Any], Any]:
    """The shape's document, measured by `measure(spec)` again without each candidate that crashed it or
    hung (Hung: ran past the watchdog); `replay(spec, variables=...)` measures in a fresh process of its
    own. Both raise Crash."""
    culprits: dict[str, dict[str, Any]] = {}
    while True:
        remaining = [name for name in spec["candidates"] if name not in culprits]
        try:
            if remaining:
                document, served_by = measure({**spec, "candidates": remaining})
            else:  # every one crashed: the shape's record without a candidate, which only the job completes
                document, served_by = replay({**spec, "candidates": remaining}), None
            break
        except Crash as crash:
            name, entry = _culprit(crash, {**spec, "candidates": remaining}, replay, log)
            culprits[name] = entry
            verb = "timed out" if entry["status"] == Status.TIMEOUT else "crashed"
            log(f"{name} {verb}: {entry['reason']}; measuring {spec['shape']['name']} again without it")
    measured = document["candidates"]
    document["candidates"] = {name: culprits.get(name) or measured[name] for name in spec["candidates"]}
    return document, served_by


def rewritten(document: dict[str, Any]) -> list[str]:
    """The candidates whose entries `supervise` may have written into a shape's document (crashed, or
    timeout after the watchdog): the job validates such a document itself."""
    entries = document["candidates"].items()
    return [name for name, entry in entries if entry["status"] in (Status.CRASHED, Status.TIMEOUT)]


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
    for name in sorted(spec["candidates"], key=lambda name: not is_user_kernel(name)):
        try:
            replay({**spec, "candidates": [name]}, variables=REPLAY_VARIABLES)
        except Crash as alone:
            if error := alone.no_candidate_ran(spec["shape"]["name"]):
                raise error from crash
            did = "ran past its watchdog" if isinstance(alone, Hung) else "crashed"
            return name, _entry(name, alone, spec, f"replayed alone in a fresh process, it {did}")
    raise RuntimeError(
        f"shape {spec['shape']['name']}: {crash} during the timed rounds or the audit, and no candidate "
        f"crashed or hung when replayed alone ({', '.join(spec['candidates']) or 'none left'})"
    )


def _entry(name: str, crash: Crash, spec: dict[str, Any], found_by: str) -> dict[str, Any]:
    """The culprit's entry (bench.schema.yaml: status crashed, `crash`; or timeout, after Hung)."""
    # the job loads numpy (attnbench.lock) only once a crash is recorded
    from attnbench import lock

    phase = "its checks" if crash.candidate is not None else "the timed rounds or the audit"
    if isinstance(crash, Hung):
        alone = " (replayed alone in a fresh process)" if found_by.startswith("replayed") else ""
        return empty_entry(
            Status.TIMEOUT, f"in {phase}, its process {crash.what}{alone}: it did not stop at its call_timeout_s"
        )
    command = replay_command({**spec, "candidates": [name]})
    variables = [f"{k}={v}" for k, v in sorted(lock.job_env(spec.get("lock")).items())]
    return empty_entry(
        Status.CRASHED,
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
