"""The jobs the workflow runs through `python -m attnbench`: for each command, where its output goes,
how its spec is built from the run's config, the function that computes its document, and the schema
that document must match.

Why one registry: the rules build every spec here (a spec is the rule's params, so it decides when a
job reruns), the command line names the commands from here, and the job process and the warm worker
both run a command through `run`, so a command that is not here is an error, never a benchmark.

A spec holds no path that depends on where the checkout is: a finished run copied to another path
plans no job. Schemas reach a job one way, as a directory relative to its working directory
(`--schemas`), in which each job's output schema and the schemas of the files it reads are named.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnbench import SCHEMA_VERSION, __version__, files, lock
from attnbench.documents import ShapeResult
from attnbench.usercode import CandidateName

if TYPE_CHECKING:  # the config module (jsonschema, snakemake) is not a job's to import
    from attnbench.config import RunConfig

Running = Callable[[str | None], None]
Spec = dict[str, Any]


@dataclass(frozen=True)
class Job:
    """A job and what the processes that run it (attnbench.cli, attnbench.worker) do for it: they
    ask the job, never its name."""

    command: str
    help: str
    output: str  # relative to the working directory; {name} is the shape
    schema: str  # the output's schema, a name in the schema directory
    gpu: bool  # leases a GPU when its spec's device is cuda
    build_spec: Callable[[RunConfig, str | None], Spec]
    run: Callable[[Spec, Path | None, Running | None], dict[str, Any]]
    # Measures with this job's threads (host.job_threads), not those of the job that started the
    # warm worker.
    own_threads: bool = False
    # Calls user code: measured in a supervised process (attnbench.isolation) under a watchdog, and a
    # warm worker retires after a candidate ended in a RETIRING status (its CUDA context may be poisoned).
    runs_user_code: bool = False
    # Shown once the document is written (a failure to show it does not fail the job).
    after_writing: Callable[[Spec, dict[str, Any]], None] | None = None

    def remake(self) -> str:
        """What running the same command again does for a missing output of this job."""
        return "measure the shape again" if self.runs_user_code else f"make it again ({self.command})"


@dataclass(frozen=True)
class Launcher:
    """How a rule starts a job (`{params.attnbench}`). Not a str on purpose: Snakemake compares only
    params of built-in types when it decides what to rerun, so how a job is started never reruns a
    finished shape, on this machine or on one whose `env` differs."""

    command: str

    def __str__(self) -> str:
        return self.command


# Repeated SIGINTs closer than this are one interrupt (coalesce_interrupts)
INTERRUPT_WINDOW_S = 2.0


@functools.cache
def launcher() -> Launcher:
    """`python -m attnbench`, with Ctrl-C held (blocked, so pending, not lost) until `cli.main` lets it
    in. A Ctrl-C that lands while the interpreter starts would otherwise end the job in Python's own
    start-up (a "Fatal Python error" and a KeyboardInterrupt traceback in the job's log, which the run
    prints as a failed job's log); held, it ends the job with one line. GNU env has --block-signal
    since coreutils 8.31; where it does not, the job starts plainly. Decided where the workflow is
    parsed, which on a cluster is the node that runs the job."""
    try:
        held = subprocess.run(["env", "--block-signal=INT", "true"], capture_output=True).returncode == 0
    except OSError:
        held = False
    return Launcher(("env --block-signal=INT " if held else "") + "python -m attnbench")


def coalesce_interrupts(window_s: float = INTERRUPT_WINDOW_S) -> None:
    """In the process that runs the workflow (Snakemake's), one SIGINT raises KeyboardInterrupt and
    those that follow within `window_s` of it are the same interrupt. `timeout -s INT` signals
    Snakemake, then its whole process group, Snakemake again: the second KeyboardInterrupt landed inside
    Snakemake's own shutdown and printed its tracebacks ("Cannot close a running event loop"). A
    Ctrl-C pressed again later still interrupts. Only the main thread may set a handler."""
    import signal
    import threading
    import time

    last = [float("-inf")]

    def interrupt(signum: int, frame: Any) -> None:
        now, before = time.monotonic(), last[0]
        last[0] = now
        if now - before >= window_s:
            raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, interrupt)


def output_schema(command: str, schemas: str | Path | None) -> Path | None:
    """The schema the document of the job `command` must match; None (no validation) without a directory."""
    return files.schema_file(None if schemas is None else Path(schemas), get(command).schema)


def _fingerprint_spec(run: RunConfig, name: str | None) -> Spec:
    return {
        "device": run["device"],
        "requested_device": run["requested_device"],
        "lock": lock.resolve(run.get("lock")),
    }


# config calibrate.reuse: ceilings measured earlier on the same device, driver, software and settings
# are reused (attnbench.calibrate); false measures them again.
CALIBRATE_REUSE = True


def _calibrate_spec(run: RunConfig, name: str | None) -> Spec:
    settings = dict(run.get("calibrate") or {})
    dtypes = settings.pop("dtypes", None) or [run["dtype"]]
    measure_again = not settings.pop("reuse", CALIBRATE_REUSE)
    spec = {
        "device": run["device"],
        "dtypes": dtypes,
        "settings": settings,
        "lock": lock.resolve(run.get("lock")),
    }
    if measure_again:  # absent otherwise: the job's parameters stay those of earlier runs
        spec["reuse"] = False
    if run.get("threads"):  # as for the benchmarks: the ceilings bound results taken with these threads
        spec["threads"] = run["threads"]
    return spec


def _benchmark_spec(run: RunConfig, name: str | None) -> Spec:
    """Everything that determines one shape's result, every default applied (benchspec.BenchSpec).
    The calibrate job's output bounds every result; it is named from its constant, not from the rule's
    input (params that read input are not compared when Snakemake decides what to rerun)."""
    from attnbench.benchspec import BenchSpec
    from attnbench.settings import TimingSettings
    from attnbench.workloads import Shape

    shape = run["shapes_by_name"][name]
    return BenchSpec(
        shape=Shape.from_config(shape),
        device=run["device"],
        dtype=run["dtype"],
        direction=shape.get("mode", run["mode"]),
        candidates=tuple(run["candidates"]),
        timing=TimingSettings.from_config(run.get("timing")),
        lock=lock.resolve(run.get("lock")),
        tolerance=(run.get("tolerance") or {}).get(run["dtype"]),
        kernel_hashes=run["kernel_hashes"],
        ceilings=JOBS["calibrate"].output,
        # Unless set, the job's OMP_NUM_THREADS (attnbench.host) and no sanitizer.
        threads=run.get("threads"),
        sanitize_crashes=bool(run.get("sanitize_crashes")),
        tolerances=declared_tolerances(run),
    ).to_json()


def declared_tolerances(run: RunConfig) -> dict[str, float]:
    """The config's declared tolerances of the run's candidates: a kernel's for each of its
    configurations, unless a configuration has its own."""
    given = run.get("tolerances") or {}
    found = {}
    for name in run["candidates"]:
        value = given.get(name, given.get(CandidateName.parse(name, strict=False).family))
        if value is not None:
            found[name] = value
    return found


def _compare_spec(run: RunConfig, name: str | None) -> Spec:
    return {
        "bench": output("benchmark", name),
        "reference": run["reference"],
        "stats": stats_settings(run),
        # the run-wide steps' specs name the version of the documents they write, so files of an
        # older schema are written again instead of failing the next step that reads them
        "schema": SCHEMA_VERSION,
    }


def _shape_outputs(run: RunConfig) -> dict[str, list[str]]:
    """Every shape's bench and compare file, in the config's order (the report's order)."""
    names = [shape["name"] for shape in run["shapes"]]
    return {
        "bench": [output("benchmark", n) for n in names],
        "compare": [output("compare", n) for n in names],
    }


def _autotune_spec(run: RunConfig, name: str | None) -> Spec:
    return {
        **_shape_outputs(run),
        "stats": stats_settings(run),
        "csv": AUTOTUNE_CSV,
        "schema": SCHEMA_VERSION,
    }


def _report_spec(run: RunConfig, name: str | None) -> Spec:
    return {
        **_shape_outputs(run),
        "fingerprint": JOBS["fingerprint"].output,
        "ceilings": JOBS["calibrate"].output,
        "autotune": JOBS["autotune"].output,
        "title": report_title(run),
        "outputs": REPORT_FILES,
        "schema": SCHEMA_VERSION,
    }


def _fingerprint(spec: Spec, schemas: Path | None, running: Running | None) -> dict[str, Any]:
    from attnbench import env

    return env.fingerprint(
        spec["device"], lock.apply(spec["lock"]), requested_device=spec.get("requested_device")
    )


def _calibrate(spec: Spec, schemas: Path | None, running: Running | None) -> dict[str, Any]:
    from attnbench.calibrate import ceilings

    return ceilings(spec)


def _benchmark(spec: Spec, schemas: Path | None, running: Running | None) -> dict[str, Any]:
    """One shape in a process that may run many: compiled state reset before, allocator cache emptied
    after (not after a failure: the worker retires then, and a lost CUDA context would fail again)."""
    import torch

    from attnbench.bench import run_shape

    # A spec of another attnbench, or made by hand, is refused naming its field before anything runs.
    files.validate(spec, files.schema_file(schemas, "benchspec"), source="the benchmark job's spec")
    torch._dynamo.reset()
    document = run_shape(spec, running)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return document


def compared(spec: Spec, bench: ShapeResult) -> dict[str, Any]:
    """The compare job's document for the benchmark `bench` (the Python API's too)."""
    from attnbench.stats import compare_shape

    return compare_shape(bench, spec["reference"], **spec["stats"])


def _compare(spec: Spec, schemas: Path | None, running: Running | None) -> dict[str, Any]:
    return compared(spec, files.read_bench(spec["bench"], schemas))


def _autotune(spec: Spec, schemas: Path | None, running: Running | None) -> dict[str, Any]:
    from attnbench import autotune

    return autotune.build(
        spec["bench"], spec["compare"], spec["csv"], schema_dir=schemas, settings=spec["stats"]
    )


def _print_shape(spec: Spec, document: dict[str, Any]) -> None:
    from attnbench import terminal

    terminal.print_shape(spec["bench"], document)


def _report(spec: Spec, schemas: Path | None, running: Running | None) -> dict[str, Any]:
    from attnbench.report import build_report

    inputs = (spec["bench"], spec["compare"], spec["fingerprint"], spec["ceilings"], spec["autotune"])
    return build_report(*inputs, spec["outputs"], schema_dir=schemas, title=spec["title"])


JOBS: dict[str, Job] = {
    job.command: job
    for job in (
        Job(
            "fingerprint",
            "record the environment (results/env/fingerprint.json)",
            "results/env/fingerprint.json",
            "fingerprint",
            True,
            _fingerprint_spec,
            _fingerprint,
        ),
        Job(
            "calibrate",
            "measure matmul and copy ceilings (results/env/ceilings.json)",
            "results/env/ceilings.json",
            "ceilings",
            True,
            _calibrate_spec,
            _calibrate,
            own_threads=True,
        ),
        Job(
            "benchmark",
            "measure every candidate of one shape (results/bench/NAME.json)",
            "results/bench/{name}.json",
            "bench",
            True,
            _benchmark_spec,
            _benchmark,
            own_threads=True,
            runs_user_code=True,
        ),
        Job(
            "compare",
            "compare one shape's candidates with the reference (results/compare/NAME.json)",
            "results/compare/{name}.json",
            "compare",
            False,
            _compare_spec,
            _compare,
            after_writing=_print_shape,
        ),
        # The run-wide steps run in the warm worker too: as Snakemake scripts they paid for a Python
        # with snakemake, scipy, pandas and matplotlib each time, a third of an edit loop (docs/scale.md).
        Job(
            "autotune",
            "rank each shape's candidates and correct every comparison across the run (results/report/autotune.json, .csv)",
            "results/report/autotune.json",
            "autotune",
            False,
            _autotune_spec,
            _autotune,
        ),
        Job(
            "report",
            "write the report, its tables and plots (results/report/headline.json: the answer it leads with)",
            "results/report/headline.json",
            "headline",
            False,
            _report_spec,
            _report,
        ),
    )
}

AUTOTUNE_CSV = "results/report/autotune.csv"
# The report's files besides its job's output, by the key build_report knows them by.
REPORT_FILES = {
    "html": "results/report/report.html",
    "md": "results/report/report.md",
    "csv": "results/report/summary.csv",
    "latency": "results/report/plots/latency.png",
    "roofline": "results/report/plots/roofline.png",
    "speedup": "results/report/plots/speedup.png",
    "memory": "results/report/plots/memory.png",
    "accuracy": "results/report/plots/accuracy.png",
}


# The steps that run as Snakemake scripts (ratchet) have no process of their own, but their settings
# are specs too (a change reruns them): built here as well, defaults applied.


# The `stats:` keys the comparison reads; the others are accepted from older configs and unused.
STATS_KEYS = ("alpha", "threshold", "resolution")


def stats_settings(run: RunConfig) -> Spec:
    """The `stats:` section's comparison settings as given; stats.compare's signature holds each
    default once."""
    return {key: value for key, value in (run.get("stats") or {}).items() if key in STATS_KEYS}


def ratchet_settings(run: RunConfig) -> Spec:
    from attnbench import ratchet

    return ratchet.settings(run.get("ratchet"))


# The report's title unless the config's report.title says otherwise. Here, not in attnbench.report:
# the Snakefile reads it at parse time, and importing the report's package (scipy, matplotlib) would
# slow every parse (docs/scale.md).
REPORT_TITLE = "attnbench report"


def report_title(run: RunConfig) -> str:
    return (run.get("report") or {}).get("title", REPORT_TITLE)


class UnknownJob(RuntimeError):
    """A command that is not a job: an error, never run as another job."""


def get(command: str) -> Job:
    try:
        return JOBS[command]
    except KeyError:
        raise UnknownJob(f"unknown job {command!r}: use one of {list(JOBS)}") from None


def output(command: str, name: str | None = None) -> str:
    """The job's output path, for one shape where the job has one per shape."""
    path = get(command).output
    return path.format(name=name) if name is not None else path


def spec(command: str, run: RunConfig, name: str | None = None) -> str:
    """The job's spec as the rule's params: JSON with sorted keys, so equal specs are equal strings."""
    return json.dumps(get(command).build_spec(run, name), sort_keys=True)


def run(
    command: str, spec: Spec, schemas: str | Path | None = None, running: Running | None = None
) -> dict[str, Any]:
    """One job's document, computed in this process (a job's own, or a worker's); `running` hears
    whose checks start (bench.run_shape). A result it reads that is refused or unreadable (files.
    read_json) is moved aside, and the error says so: the same command then makes it again."""
    try:
        return get(command).run(spec, None if schemas is None else Path(schemas), running)
    except files.ResultFileError as exc:
        made_by = producer(exc.path)
        if made_by is None:  # not a result of the workflow's (a baseline, a scratch file): left alone
            raise
        aside = files.set_aside(exc.path)
        where = f"moved aside to {aside}" if aside else "missing"
        raise files.ResultFileError(
            f"{exc}; {where}: run the same command again to {made_by.remake()}", exc.path
        ) from exc


def producer(path: str | None) -> Job | None:
    """The job whose output `path` is, as a spec names it (relative to the working directory), or None."""
    for job in JOBS.values():
        pattern = re.escape(job.output).replace(re.escape("{name}"), r"[A-Za-z0-9_.-]+")
        if path is not None and re.fullmatch(pattern, path):
            return job
    return None


def spec_digest(spec: Spec) -> str:
    """The "sha256:" digest of the spec's canonical JSON: the settings a document was made with."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def provenance(spec: Spec) -> dict[str, Any]:
    """What made a job's document, taken when the job starts: the commit of the working directory's
    checkout, whether tracked files differed from it and the digest of that difference (env.git_state),
    the digest of the job's spec as its rule gave it, and attnbench's version and source digest."""
    from attnbench import env

    return {
        "git": env.git_state("."),
        "spec_digest": spec_digest(spec),
        "attnbench": {"version": __version__, "source_digest": files.source_digest()},
    }
