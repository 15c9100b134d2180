"""Benchmark attention kernels: `attnbench run` measures shapes and candidates given on the command
line or in a small YAML file through the Snakemake workflow, and prints the headline and the report's
path. In Python (a notebook): `attnbench.compare({"mine": fn, "flash": "flash"}, shapes=[...])`
returns a pandas DataFrame.

The other commands are internal: the workflow's jobs (fingerprint, calibrate, benchmark, compare, and
the warm worker that serves them) run through here so each rule can set their environment first,
lease a GPU before CUDA starts, and hand the work to a warm worker (attnbench.worker); a benchmark job
supervises the process that measures its shape (attnbench.isolation). `baseline save` and `gate` are
the ratchet's two explicit steps; `replay` measures a shape in its own process alone, to debug a
crashed candidate."""

from __future__ import annotations

import argparse
import faulthandler
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnbench import __version__, files, host, isolation, jobs, lease, worker
from attnbench.shape_syntax import SHAPE_SYNTAX, ShapeError

SCHEMAS = "workflow/schemas"
INTERNAL = "internal, run by the workflow: "


def _run_parser(commands: Any) -> None:
    from attnbench import quick

    run = commands.add_parser(
        "run",
        help="benchmark shapes and candidates through the workflow; print the headline and the report's path",
        description=quick.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Arguments after `--` go to snakemake (e.g. -- --forceall to measure again, -- -n for a dry run).",
    )
    run.add_argument(
        "file", nargs="?", metavar="FILE.yaml", help="config keys (candidates, shapes, ...); flags override it"
    )
    run.add_argument(
        "--shape", dest="shapes", action="append", metavar="SHAPE", help=f"repeatable: {SHAPE_SYNTAX}"
    )
    run.add_argument(
        "--candidates",
        action="append",
        metavar="A,B",
        help="comma-separated: flash, efficient, cudnn, math, flex, or module:function (from this directory)",
    )
    run.add_argument("--reference", help="the candidate the others are compared with (default math; always run)")
    run.add_argument("--dtype", choices=["float16", "bfloat16", "float32"])
    run.add_argument("--device", choices=["auto", "cuda", "cpu"])
    run.add_argument("--mode", choices=["forward", "forward_backward"])
    run.add_argument("--max-time-s", type=float, help="per shape: seconds of sampling at most (timing.max_time_s)")
    run.add_argument(
        "--workdir", help=f"where the config and results go (default: {quick.RUNS_DIR}/<hash of the config>)"
    )
    run.add_argument("--gpus", type=int, default=1, help="GPUs (and cores) Snakemake may use at once (default 1)")
    run.add_argument(
        "--fail-on-failed",
        action="store_true",
        help="exit 1 when a candidate failed (error, incorrect, oom, timeout, crashed, untrusted)",
    )


def _parser(for_job: bool = False) -> argparse.ArgumentParser:
    """`for_job`: for one of the workflow's jobs (or the worker), without `run`, whose options import
    attnbench.quick and the config module (60 ms): a job's start is part of every edit-and-rerun."""
    parser = argparse.ArgumentParser(
        prog="attnbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"attnbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if not for_job:
        _run_parser(commands)
    for job in jobs.JOBS.values():
        sub = commands.add_parser(job.command, help=INTERNAL + job.help)
        sub.add_argument("--spec", required=True, help="JSON job specification (the rule's params)")
        sub.add_argument("--out", required=True)
        sub.add_argument(
            "--schemas", help="directory of the JSON schemas the output and inputs must match (else unchecked)"
        )
    baseline = commands.add_parser("baseline", help="promote a finished run to a baseline")
    save = baseline.add_subparsers(dest="action", required=True).add_parser(
        "save", help="write a portable baseline (raw samples, fingerprint, settings) from RESULTS_DIR"
    )
    save.add_argument("results_dir", metavar="RESULTS_DIR")
    save.add_argument("out", metavar="OUT.json")
    save.add_argument("--schemas", default=SCHEMAS, help="directory of the JSON schemas")
    serve = commands.add_parser("worker", help=INTERNAL + "serve benchmark jobs on one GPU (started by the jobs)")
    where = serve.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", type=Path, help="serve every job that connects here")
    where.add_argument("--fd", type=int, help="serve the one job on this inherited socket (a job's child)")
    replay = commands.add_parser(
        "replay",
        help="debugging: measure a shape in this process and print each candidate's status (a crash's crash.replay)",
    )
    replay.add_argument("--spec", required=True, help="JSON job specification")
    gate = commands.add_parser(
        "gate",
        help="exit 1 on a regression; 2 when it could not judge (the baseline unusable or its environment "
        "different, a result missing, incomparable, failed or undecided, nothing compared); else 0",
    )
    gate.add_argument("verdict", metavar="VERDICT.json")
    gate.add_argument("--schemas", default=SCHEMAS, help="directory of the JSON schemas")
    gate.add_argument(
        "--allow-missing",
        action="store_true",
        help="pass although results of the baseline are missing from this run or their shape changed "
        "(as ratchet.allow_missing in the config)",
    )
    gate.add_argument(
        "--allow-env-change",
        action="append",
        default=[],
        type=_environment_field,
        metavar="FIELD",
        help="repeatable: this environment field may differ from the baseline's; the comparisons made "
        "across it count (as ratchet.allow_env_change): a field of the comment's environment table "
        "(device, gpu, driver, torch, cuda, cudnn, triton, lock, power_limit_w)",
    )
    return parser


def _environment_field(name: str) -> str:
    from attnbench import ratchet  # here, not at the top: numpy, and only when the flag is given

    if name not in ratchet.ENVIRONMENT_FIELDS:
        raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(ratchet.ENVIRONMENT_FIELDS)}")
    return name


def process_started_at() -> float | None:
    """Unix time this process was created, to the clock tick (10 ms) on Linux; else psutil's, which
    adds the boot time in whole seconds (up to 1 s off); None where it cannot tell."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])  # starttime: ticks since boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    import psutil

    try:
        return float(psutil.Process().create_time())
    except psutil.Error:
        return None


class _Stderr(logging.Handler):
    """Writes to sys.stderr as it is when a record is emitted: in a worker serving a job, that is the
    job's stream (worker._logs_to), so the job's log shows what its shape did."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


class _Format(logging.Formatter):
    """A job's own lines as `attnbench COMMAND: ...`, the measurement's as `[attnbench HH:MM:SS] ...`."""

    def format(self, record: logging.LogRecord) -> str:
        prefix, _, command = record.name.rpartition(".")
        if prefix == "attnbench.job":
            return f"attnbench {command}: {record.getMessage()}"
        return f"[attnbench {time.strftime('%H:%M:%S', time.localtime(record.created))}] {record.getMessage()}"


def configure_logging() -> None:
    """The `attnbench` loggers to stderr at INFO; once per process."""
    root = logging.getLogger("attnbench")
    if not any(isinstance(handler, _Stderr) for handler in root.handlers):
        handler = _Stderr()
        handler.setFormatter(_Format())
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def _log(command: str) -> Callable[[str], None]:
    return logging.getLogger(f"attnbench.job.{command}").info


def _isolated(
    job: jobs.Job, spec: dict[str, Any], in_worker: bool, schemas: str | None, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A job that runs user code is never run in this process: a candidate that crashes the process
    measuring the shape, or hangs it past the watchdog (which this process keeps: attnbench.worker.
    Watchdog), costs only its own result (attnbench.isolation). The limits it kept are in the document
    (`watchdog`)."""
    in_child = functools.partial(worker.run_child, job.command, log=log)

    def measure(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        if in_worker:
            return worker.run(job.command, spec, lease.lease_dir(), log=log, schemas=schemas)
        return in_child(spec, schemas=schemas), None

    limits = isolation.limits(spec)
    if limits is not None:
        log(f"watchdog: {round(limits.limit_s):d} s at most for the shape ({limits.explain('request')})")
    document, served_by = isolation.supervise(spec, measure, in_child, log=log)
    if limits is not None:
        document["watchdog"] = limits.record()
    return document, served_by


def _job(args: argparse.Namespace) -> int:
    """One of the workflow's jobs: lease, run (in a warm worker where one serves), stamp, write."""
    job = jobs.get(args.command)
    spec = json.loads(args.spec)
    log = _log(job.command)
    # Before the job changes its spec (threads): the commit, spec and source it was made from.
    made_from = jobs.provenance(spec)
    # Held until this process exits: the GPU is this job's alone while it runs.
    want_gpu = job.gpu and spec.get("device") == "cuda"
    placement = lease.for_job(f"{job.command} {args.out}", want_gpu=want_gpu, log=log)
    served_by = None
    in_worker = worker.enabled(os.environ, placement.source)
    if job.own_threads:
        spec.setdefault("threads", host.job_threads(None))
    if job.runs_user_code:
        document, served_by = _isolated(job, spec, in_worker, args.schemas, log)
    elif in_worker:
        document, served_by = worker.run(job.command, spec, lease.lease_dir(), log=log, schemas=args.schemas)
    else:
        document = jobs.run(job.command, spec, args.schemas)
    # From the process's creation (interpreter start and imports included) to now: what one
    # process per job costs against one long-lived worker (docs/scale.md).
    process = {"started_at": process_started_at(), "finished_at": time.time(), "worker": served_by}
    document |= {"placement": placement.record(), "process": process, "provenance": made_from}
    # A warm worker validated its document (worker.run); this process checks one it made or
    # changed itself, and spares the import of jsonschema otherwise (part of every job's start).
    checked = served_by is not None and not (job.runs_user_code and isolation.rewritten(document))
    files.write_json(args.out, document, None if checked else jobs.output_schema(job.command, args.schemas))
    if job.after_writing is not None:
        try:  # the result is written: a failure to show it must not fail the job
            job.after_writing(spec, document)
        except Exception as exc:
            log(f"could not show what it wrote: {type(exc).__name__}: {exc}")
    return 0


def _run(args: argparse.Namespace, passed_on: list[str]) -> int:
    from attnbench import quick

    try:
        return quick.run(args, passed_on)
    except (quick.QuickRunError, ShapeError) as exc:
        print(f"attnbench run: {exc}", file=sys.stderr)
        return 2


def _save_baseline(args: argparse.Namespace) -> int:
    from attnbench.ratchet import save_baseline

    schemas = Path(args.schemas)
    document = save_baseline(args.results_dir, schemas)
    files.write_json(args.out, document, schemas / "baseline.schema.yaml")
    print(f"saved {len(document['shapes'])} shapes to {args.out} ({document['digest']})")
    return 0


def _gate(args: argparse.Namespace) -> int:
    """Exit 2, not 1, when the verdict cannot be read: 1 means a regression."""
    from attnbench.ratchet import gate

    try:
        verdict = files.read_json(args.verdict, Path(args.schemas) / "verdict.schema.yaml")
        code, why = gate(verdict, allow_missing=args.allow_missing, allow_env_change=args.allow_env_change)
    except (RuntimeError, files.ResultFileError) as exc:
        _log(args.command)(f"error: {exc}")
        return 2
    print(f"attnbench gate: {why} (exit {code})")
    return code


def _serve(args: argparse.Namespace) -> int:
    # A candidate that kills the process leaves its Python traceback in the log (the job's, for a child).
    faulthandler.enable()
    if args.fd is not None:
        worker.serve_child(args.fd)
    else:
        worker.serve(args.socket, float(os.environ.get(worker.IDLE_VARIABLE) or worker.IDLE_S))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from attnbench.bench import run_shape

    for name, entry in run_shape(json.loads(args.spec))["candidates"].items():
        print(f"{name}: {entry['status']} {entry['reason'] or ''}".rstrip())
    return 0


# The commands besides the workflow's jobs (attnbench.jobs), each a function of the parsed arguments.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "baseline": _save_baseline,
    "gate": _gate,
    "worker": _serve,
    "replay": _replay,
}


def main(argv: list[str] | None = None) -> int:
    try:
        # A job starts with Ctrl-C held (jobs.launcher); one pressed meanwhile arrives here, in our code.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    except KeyboardInterrupt:
        configure_logging()
        _log("start")("interrupted (Ctrl-C) while starting; this job wrote nothing")
        return 130
    argv = list(sys.argv[1:] if argv is None else argv)
    # `attnbench run ... -- ARGS`: ARGS go to snakemake untouched.
    passed_on = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = _parser(for_job=bool(argv) and (argv[0] in jobs.JOBS or argv[0] == "worker")).parse_args(argv)
    if passed_on and args.command != "run":
        _parser().error("arguments after -- are only for `attnbench run`")
    configure_logging()
    if args.command == "run":  # a Snakemake run of its own: it reports its own Ctrl-C and errors
        return _run(args, passed_on)
    try:
        return COMMANDS.get(args.command, _job)(args)
    except KeyboardInterrupt:
        # Ctrl-C reaches every job of the run: one line, no traceback; the run's own line says what finished.
        _log(args.command)("interrupted (Ctrl-C); this job wrote nothing")
        return 130
    except (RuntimeError, files.ResultFileError) as exc:
        _log(args.command)(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
