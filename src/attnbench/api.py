"""The Python API for notebooks: `attnbench.compare` measures Python callables and built-in candidates
on a few shapes and returns a pandas DataFrame, one row per (shape, candidate).

Why not a shortcut of its own: the numbers must mean what the workflow's mean. Each shape's spec is
built by attnbench.jobs from a run config made by attnbench.config.resolve, measured by
attnbench.bench.run_shape (checks against float64, interleaved rounds, stopping rule, audit) and
compared as the workflow's compare job compares (attnbench.jobs.compared, i.e. stats.compare_shape), all on
documents in memory: nothing is written to disk.

What differs from the workflow, on purpose:
- Measurement runs in the caller's process: no crash isolation (a kernel that segfaults takes the
  notebook's kernel with it), no GPU lease, no warm worker. Use `attnbench run` for untrusted kernels.
- The environment lock (TF32, matmul precision, deterministic algorithms, seeds) and the shape's CPU
  threads (by default the workflow's: host.WORKFLOW_THREADS) are applied while a shape is measured; the caller's settings, thread count and random
  states are restored afterwards. Variables
  read at start-up (PYTHONHASHSEED, CUBLAS_WORKSPACE_CONFIG) cannot take effect in a running process:
  they are set for the call only so the lock's check passes, and nothing measured depends on them.
- Ceilings (the roofline bound of the audit's "faster than the hardware allows" check) are
  calibrated once per process and reused, by default on CUDA only: on a small CPU the calibrate
  job takes longer than the short CPU measurement below (docs/scale.md). Pass `ceilings=True` to calibrate on the CPU too, or
  the path of a workflow run's results/env/ceilings.json to reuse it.
- On the CPU the default timing is short (CPU_TIMING: at most 3 s of sampling per shape, CI target
  +-2%), as the workflow's `cpu:` section is; on CUDA the timing section's own defaults apply.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from attnbench import candidates as candidate_registry
from attnbench import config as run_config
from attnbench import files, host, isolation, jobs, lock
from attnbench.documents import ShapeComparisons, ShapeResult
from attnbench.results import Json, Status
from attnbench.shape_syntax import shape_entry

# A notebook wants an answer in seconds: like the workflow's `cpu:` section, with less sampling time.
CPU_TIMING = {"warmup": 3, "warmup_max_s": 1, "min_rounds": 20, "target_rel_ci": 0.02, "max_time_s": 3}
CPU_DTYPE = "float32"
COLUMNS = [
    "shape",
    "candidate",
    "status",
    "reason",
    "median_ms",
    "ci95_lo_ms",
    "ci95_hi_ms",
    "rel_ci",
    "target_met",
    "speedup",
    "speedup_ci_lo",  # the speedup's interval at `confidence` (1 - alpha), this shape's comparison alone
    "speedup_ci_hi",
    "confidence",
    "significant",
    "verdict",  # faster, slower, same, "too few rounds" (then no speedup, interval or p-value)
    "p_value",
    "rounds",
    "rounds_to_decide",  # about how many rounds in all would decide an undecided comparison
    "rel_error",
    "declared_tolerance",  # ok only by the tolerance its kernel declared: an approximate result
    "tflops",
    "reference",
    "device",
    "dtype",
    "mode",
]
# Ceilings measured in this process, by calibrate spec: calibrating costs seconds to a minute.
_CEILINGS: dict[str, dict[str, Any]] = {}


def _candidate_names(candidates: Mapping[str, Any] | Iterable[Any]) -> dict[str, Any]:
    """{label: callable or candidate name}; a list names its callables by their __name__."""
    if isinstance(candidates, Mapping):
        named = dict(candidates)
    else:
        named = {}
        for item in candidates:
            label = item if isinstance(item, str) else getattr(item, "__name__", None)
            if label is None:
                raise TypeError(f"candidate {item!r}: give it a name, e.g. compare({{'mine': fn}}, ...)")
            if label in named:  # two lambdas are both <lambda>: one would silently replace the other
                raise ValueError(
                    f"two candidates named {label!r}: name them, e.g. compare({{'a': f, 'b': g}}, ...)"
                )
            named[label] = item
    if not named:
        raise ValueError("compare needs at least one candidate")
    for label, value in named.items():
        if not (isinstance(value, str) or callable(value)):
            raise TypeError(f"candidate {label!r}: expected a callable or a candidate name, not {value!r}")
    names = [value for value in named.values() if isinstance(value, str)]
    if len(names) != len(set(names)):
        raise ValueError(f"a candidate is given twice: {names}")
    return named


def _calibrated(run: dict[str, Any]) -> dict[str, Any]:
    """The ceilings for this run's calibrate spec, measured by the calibrate job once per process."""
    spec = jobs.spec("calibrate", run)
    if spec not in _CEILINGS:
        with _caller_state_kept(run):
            _CEILINGS[spec] = jobs.run("calibrate", json.loads(spec))
    return _CEILINGS[spec]


@contextlib.contextmanager
def _caller_state_kept(run: dict[str, Any]) -> Iterator[None]:
    """The lock applied inside, the caller's torch numerics, random states and environment after."""
    import random

    import numpy as np
    import torch

    saved_env = {name: os.environ.get(name) for name in lock.STARTUP_VARIABLES}
    numerics = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_num_threads(),  # bench sets the shape's threads
    )
    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    os.environ.update(lock.job_env(run.get("lock")))
    try:
        yield
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = numerics[:2]
        torch.set_float32_matmul_precision(numerics[2])
        torch.use_deterministic_algorithms(numerics[3], warn_only=numerics[4])
        torch.set_num_threads(numerics[5])
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def _frame(
    benches: dict[str, Json],
    compares: dict[str, Json],
    labels: dict[str, str],
    reference: str | None,
    ceilings: Json | None,
) -> Any:
    """The report's summary table (report.data.summary_frame: the one flattening of the documents) as
    the API shows it: COLUMNS, the caller's labels, "reference" as the reference's verdict, and an ok
    candidate that was not compared (its reference was not ok) with the reason it was not."""
    from attnbench.report.data import summary_frame

    typed = [ShapeComparisons.from_json(c) for c in compares.values()]
    frame = summary_frame([ShapeResult.from_json(b) for b in benches.values()], typed, ceilings)
    not_compared = {
        (compare.shape, name): skip["reason"]
        for compare in typed
        for name, skip in compare.skipped.items()
        if skip["status"] == Status.OK
    }
    rows = zip(frame["shape"], frame["candidate"], frame["reason"])
    return frame.assign(
        reason=[not_compared.get((shape, name), reason) for shape, name, reason in rows],
        verdict=frame["verdict"].where(frame["candidate"] != reference, "reference"),
        candidate=frame["candidate"].map(lambda name: labels.get(name, name)),
        reference=frame["reference"].map(lambda name: labels.get(name, name), na_action="ignore"),
    )[COLUMNS]


def compare(
    candidates: Mapping[str, Callable[..., Any] | str] | Iterable[Callable[..., Any] | str],
    shapes: Iterable[Any],
    *,
    reference: str | None = "math",
    dtype: str | None = None,
    device: str = "auto",
    mode: str = "forward",
    timing: Mapping[str, Any] | None = None,
    stats: Mapping[str, Any] | None = None,
    lock_settings: Mapping[str, Any] | None = None,
    tolerance: Mapping[str, float] | None = None,
    threads: int | None = None,
    ceilings: bool | str | os.PathLike[str] = "auto",
) -> Any:
    """Measure every candidate on every shape and compare each with `reference`; a pandas DataFrame,
    one row per (shape, candidate), columns COLUMNS. Raw documents (samples, audit, timing record)
    are in `df.attrs["bench"]` and `df.attrs["compare"]`, by shape name. Each row's interval, p-value
    and verdict are its shape's comparison alone, at confidence 1 - alpha (the compare job's), not
    corrected across the shapes and candidates as the workflow's report corrects them.

    candidates: {label: callable or candidate name} (flash, efficient, cudnn, math, flex,
        "module:function"), or a list of names and callables (named by __name__). A callable is
        called as fn(q, k, v, causal=..., scale=...), q (batch, heads, seq, dim), k and v
        (batch, kv_heads, seq_kv, dim); it declines a shape by raising attnbench.Unsupported.
        One decorated with attnbench.kernel (factory form, bshd layout, a grid) is called as it
        declares, each configuration of its grid a row of its own: "label[K=V,...]" (docs/kernels.md).
    shapes: "b2_h8_s512_d64[_causal]" strings (attnbench.shape_syntax), dicts with the config's
        fields {batch, heads, seq, dim, causal, kv_heads, seq_kv, name} (named if unnamed), or Shapes.
    reference: a built-in candidate, a label of `candidates`, or None (no comparison; speedup empty).
        It is measured even when it is not among `candidates`.
    dtype: default bfloat16 on CUDA, float32 on the CPU. device: auto (CUDA when usable), cuda, cpu.
    mode: forward or forward_backward. timing, stats, lock_settings, tolerance, threads: as in the
        config (threads: torch's CPU threads while measuring; default host.WORKFLOW_THREADS, the
        workflow's, so that its numbers and a pipeline run's compare).
    ceilings: "auto" (calibrate once per process on CUDA; none on the CPU), True, False, or a path.

    Runs in this process, without crash isolation; see the module docstring for what else differs
    from the workflow.
    """

    named = _candidate_names(candidates)
    registered: list[str] = []
    run_names: dict[str, str] = {}  # the run's candidate name -> the caller's label
    try:
        for label, value in named.items():
            if isinstance(value, str):
                run_names[value] = label
            else:
                candidate_registry.register(label, value)
                registered.append(label)
                run_names[label] = label
        reference_name = None
        if reference is not None:
            by_label = {label: name for name, label in run_names.items()}
            reference_name = by_label.get(reference, reference)
            if reference_name not in run_names:
                run_names[reference_name] = reference_name
        shape_entries = [shape_entry(shape) for shape in shapes]
        if not shape_entries:
            raise ValueError("compare needs at least one shape")
        given: dict[str, Any] = {
            "device": device,
            "mode": mode,
            "candidates": list(run_names),
            "reference": reference_name or next(iter(run_names)),
            "shapes": shape_entries,
            "timing": dict(timing or {}),
            "stats": dict(stats or {}),
            "lock": dict(lock_settings or {}),
            "tolerance": dict(tolerance or {}),
            # The `cpu:` mechanism of the workflow: these apply only when the run is on the CPU.
            "cpu": {"dtype": dtype or CPU_DTYPE, "timing": {**CPU_TIMING, **(timing or {})}},
        }
        if dtype is not None:
            given["dtype"] = dtype
        # the workflow's threads unless told: OMP_NUM_THREADS or every core measured other numbers
        given["threads"] = host.WORKFLOW_THREADS if threads is None else threads
        run = run_config.resolve(given)
        measured_ceilings = _ceilings(run, ceilings)
        benches: dict[str, Json] = {}
        compares: dict[str, Json] = {}
        for name in run_config.shape_names(run):
            try:
                bench = _measure(run, name, measured_ceilings)
            except (KeyboardInterrupt, isolation.ContextLost) as exc:
                # In this process nothing isolates a crash: keep the shapes already measured.
                warnings.warn(
                    f"compare stopped at shape {name} ({type(exc).__name__}: {exc}); "
                    f"returning the {len(benches)} shapes measured before it",
                    stacklevel=2,
                )
                break
            benches[name] = bench
            if reference_name is not None:
                compare_spec = json.loads(jobs.spec("compare", run, name))
                compares[name] = jobs.compared(compare_spec, ShapeResult.from_json(bench))
    finally:
        for label in registered:
            candidate_registry.unregister(label)
    frame = _frame(benches, compares, run_names, reference_name, measured_ceilings)
    frame.attrs["bench"] = benches
    frame.attrs["compare"] = compares
    return frame


def _ceilings(run: dict[str, Any], ceilings: bool | str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ceilings document that bounds the results: calibrated here, read from a run's file, or none."""
    if ceilings == "auto":
        ceilings = run["device"] == "cuda"
    if ceilings is True:
        return _calibrated(run)
    if ceilings is False or ceilings is None:
        return None
    path = Path(ceilings)
    if not path.is_file():
        raise FileNotFoundError(f"ceilings: no file {path} (a run's results/env/ceilings.json)")
    return files.read_json(path)


def _measure(run: dict[str, Any], name: str, ceilings: dict[str, Any] | None) -> dict[str, Any]:
    """The benchmark job's spec, measured by bench.run_shape in this process, bounded by `ceilings`
    (not the workflow's file its spec names)."""
    from attnbench.bench import run_shape

    spec = json.loads(jobs.spec("benchmark", run, name)) | {"ceilings": None}
    with _caller_state_kept(run):
        return run_shape(spec, ceilings=ceilings)
