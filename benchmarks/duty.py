"""Where a finished run's time went, and how much of it measured (issue 21: "GPU time goes to measuring").

    python benchmarks/duty.py RUN_DIR [--json OUT.json]

Reads what the run left; runs nothing and needs only the standard library:
  RUN_DIR/results/bench/*.json       per shape: timing.warmup.seconds, timing.elapsed_s, audit_s,
                                     candidates.*.compile_ms / setup_ms / samples_ms, and process
                                     {started_at, finished_at, worker.connected_at} (attnbench.cli)
  RUN_DIR/results/{env,compare,report}/*.json  the other attnbench jobs' process records
  RUN_DIR/.snakemake/metadata/       Snakemake's record per output file (base64 of its path):
                                     rule, job_hash, starttime, endtime
  RUN_DIR/.snakemake/log/            the newest log that finished jobs: which jobs belong to that
                                     invocation (its `Finished jobid: N (Rule: R)` lines) and
                                     Snakemake's `Elapsed time`

What Snakemake 9's file persistence records (snakemake/persistence): `starttime` is the mtime of the
job's `.snakemake/incomplete/` marker, written just before the job is spawned; `endtime` is the
output file's mtime, i.e. when the job finished writing it (attnbench writes atomically: the data's
last write). A job's wall time here is endtime - starttime; the job's process exit and Snakemake's
bookkeeping after the write fall between jobs. `process.started_at` is the job process's creation
(/proc, to the 10 ms clock tick), `connected_at` when the warm worker answered the job, `finished_at`
just before the job wrote its document.

Phases of a benchmark job, in order (m = measured, d = derived):
  launch    m  starttime -> process.started_at: Snakemake spawning the shell and the job's process
  start-up  m  process.started_at -> process.worker.connected_at: interpreter, attnbench imports,
               GPU lease, connecting to the warm worker (starting it, import torch included, when none
               was warm: worker column "new"; such a worker answers before it imports torch, which
               then falls in other), waiting for its turn
  reference m  stages.reference_s: the inputs and the float64 reference
  build     m  sum over candidates of build_ms: declaration, inputs in the candidate's layout, a
               built-in's masks (SDPA's dense mask, flex's BlockMask)
  compile   m  sum over candidates of compile_ms (first call, compilation included) + setup_ms
               (a factory's setup); each timed with perf_counter around the call
  verify    m  sum over candidates of verify_ms: the float64 check, the determinism call, the memory
               measurement
  other     d  wall minus every other phase: the request to the worker, the timing's set-up (a CUDA
               graph's capture), declined candidates, the document's return to the job; also any
               phase above that is not recorded (files written before build_ms and verify_ms existed)
  warm-up   m  timing.warmup.seconds
  sampling  m  timing.elapsed_s: the sampled rounds, with the stopping rule's bootstrap checks (and
               the final 10,000-resample bootstrap when the rule stopped on max_time_s / max_rounds)
  audit     m  audit_s: profiling, the roofline bound, a second float64 reference and re-verification
  writing   m  process.finished_at -> endtime: the document's serialisation and write (and its schema
               check where the job measured the shape itself; a warm worker checks it before answering)
Also per shape: timed = sum over candidates of samples_ms x calls_per_sample, the time inside the
timed units of the kept rounds (measured; warm-up samples are not stored).

The measurement duty = sum over shapes of (warm-up + sampling) / pipeline wall time, where the
pipeline wall time is the first job's starttime to the last job's endtime of that invocation.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PHASES = (
    "launch",
    "start_up",
    "reference",
    "build",
    "compile",
    "verify",
    "other",
    "warm_up",
    "sampling",
    "audit",
    "writing",
)
LABELS = {
    "launch": "launch",
    "start_up": "start-up",
    "reference": "reference",
    "build": "build",
    "compile": "compile",
    "verify": "verify",
    "other": "other",
    "warm_up": "warm-up",
    "sampling": "sampling",
    "audit": "audit",
    "writing": "writing",
}
MEASURING = ("warm_up", "sampling")
DEFINITIONS = {
    "launch": ("measured", "Snakemake starttime (incomplete marker) -> process.started_at"),
    "start_up": ("measured", "process.started_at -> process.worker.connected_at"),
    "reference": ("measured", "stages.reference_s: the inputs and the float64 reference"),
    "build": ("measured", "sum of candidates' build_ms: inputs in their layout, masks"),
    "compile": ("measured", "sum of candidates' compile_ms + setup_ms"),
    "verify": ("measured", "sum of candidates' verify_ms: float64 check, determinism, memory"),
    "other": ("derived", "job wall time minus every other phase (the worker's request, timing set-up, ...)"),
    "warm_up": ("measured", "timing.warmup.seconds"),
    "sampling": ("measured", "timing.elapsed_s"),
    "audit": ("measured", "audit_s"),
    "writing": ("measured", "process.finished_at -> Snakemake endtime (the output's mtime)"),
}
# Clocks differ in resolution (the process's creation to the 10 ms tick, file mtimes to the kernel's
# coarse clock): a difference this small below zero is zero, a larger one is reported.
SLACK_S = 0.05
NOT_RECORDED = "not recorded"
# Where an attnbench job's document is, and its rule, when Snakemake left no metadata.
DOCUMENT_RULES = {
    "results/env/fingerprint.json": "env_fingerprint",
    "results/env/ceilings.json": "calibrate",
    "results/report/autotune.json": "autotune",
    "results/report/headline.json": "report",
}
LOG_TIME = re.compile(r"^\[(\w{3} \w{3} +\d{1,2} \d\d:\d\d:\d\d \d{4})\]$")
LOG_FINISHED = re.compile(r"^Finished jobid: \d+ \(Rule: ([^)]+)\)")
LOG_ELAPSED = re.compile(r"^Elapsed time: (?:(\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)")


class DutyError(Exception):
    """The run directory holds nothing this script can read."""


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --- Snakemake's records ----------------------------------------------------------------------


def metadata_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Output path (relative to the run directory) -> its Snakemake metadata record. A long path's
    record is split into folders whose names start with '@' (snakemake/persistence/file.py)."""
    root = run_dir / ".snakemake" / "metadata"
    records = {}
    if not root.is_dir():
        return records
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        encoded = "".join(part.lstrip("@") for part in path.relative_to(root).parts)
        try:
            key = base64.urlsafe_b64decode(encoded).decode()
        except (binascii.Error, ValueError):
            continue
        record = read_json(path)
        if record is None or record.get("incomplete"):
            continue
        if number(record.get("starttime")) is None or number(record.get("endtime")) is None:
            continue
        if Path(key).is_absolute():
            try:
                key = str(Path(key).relative_to(run_dir.resolve()))
            except ValueError:
                pass
        records[key] = record
    return records


def jobs_from_metadata(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per job: its rule, outputs, start (earliest starttime) and end (latest endtime).
    Outputs of one job share rule and job_hash; starttimes more than 1 s apart are separate jobs."""
    groups: dict[tuple[str, Any], list[tuple[str, dict[str, Any]]]] = {}
    for key, record in records.items():
        groups.setdefault((record.get("rule") or "?", record.get("job_hash")), []).append((key, record))
    jobs = []
    for (rule, _), members in groups.items():
        members.sort(key=lambda item: item[1]["starttime"])
        current: dict[str, Any] | None = None
        for key, record in members:
            if current is None or record["starttime"] - current["start"] > 1.0:
                current = {
                    "rule": rule,
                    "outputs": [],
                    "start": record["starttime"],
                    "end": record["endtime"],
                }
                jobs.append(current)
            current["outputs"].append(key)
            current["end"] = max(current["end"], record["endtime"])
    jobs.sort(key=lambda job: job["start"])
    return jobs


def read_log(path: Path) -> dict[str, Any]:
    finished: Counter[str] = Counter()
    times, elapsed = [], None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if match := LOG_TIME.match(line):
            try:
                times.append(dt.datetime.strptime(" ".join(match[1].split()), "%a %b %d %H:%M:%S %Y"))
            except ValueError:
                pass
        elif match := LOG_FINISHED.match(line):
            finished[match[1]] += 1
        elif match := LOG_ELAPSED.match(line):
            days, hours, minutes, seconds = match.groups()
            elapsed = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    span = (times[-1] - times[0]).total_seconds() if len(times) >= 2 else None
    return {"path": str(path), "finished": dict(finished), "elapsed_s": elapsed, "span_s": span}


def newest_log(run_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    """The newest Snakemake log in which jobs finished (a later no-op rerun's log finishes none)."""
    logs = sorted(
        (run_dir / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.name, reverse=True
    )
    for index, path in enumerate(logs):
        log = read_log(path)
        if log["finished"]:
            if index:
                notes.append(f"the {index} newer log(s) finished no job; using {path.name}")
            return log
    notes.append("no Snakemake log with finished jobs: every job with a metadata record is counted")
    return None


def select_invocation(
    jobs: list[dict[str, Any]], log: dict[str, Any] | None, notes: list[str]
) -> tuple[list[dict[str, Any]], dict[str, int], list[str]]:
    """The jobs of the log's invocation: per rule, the newest as many as the log says finished.
    Returns them, the jobs of earlier invocations per rule, and the log's rules without outputs."""
    if log is None:
        return jobs, {}, []
    chosen, earlier = [], Counter()
    for rule in sorted({job["rule"] for job in jobs}):
        of_rule = sorted(
            (job for job in jobs if job["rule"] == rule), key=lambda job: job["start"], reverse=True
        )
        wanted = log["finished"].get(rule, 0)
        chosen += of_rule[:wanted]
        if len(of_rule) > wanted:
            earlier[rule] = len(of_rule) - wanted
        if len(of_rule) < wanted:
            notes.append(f"the log finished {wanted} {rule} job(s), {len(of_rule)} have metadata records")
    outputless = sorted(rule for rule in log["finished"] if not any(job["rule"] == rule for job in jobs))
    chosen.sort(key=lambda job: job["start"])
    if earlier:
        notes.append(
            "jobs of earlier invocations are not counted: "
            + ", ".join(f"{rule} {n}" for rule, n in sorted(earlier.items()))
        )
    if chosen and log["span_s"] is not None:
        span = max(job["end"] for job in chosen) - chosen[0]["start"]
        if abs(span - log["span_s"]) > 3.0:
            notes.append(
                f"the chosen jobs span {span:.1f} s, the log's first to last job line {log['span_s']:.0f} s:"
                " the records may mix invocations"
            )
    return chosen, dict(earlier), outputless


def jobs_from_documents(run_dir: Path) -> list[dict[str, Any]]:
    """Without Snakemake metadata: attnbench's jobs from their documents' process records alone."""
    jobs = []
    for path in sorted((run_dir / "results").glob("*/*.json")):
        key = str(path.relative_to(run_dir))
        rule = DOCUMENT_RULES.get(key) or {"bench": "benchmark", "compare": "compare"}.get(path.parent.name)
        process = (read_json(path) or {}).get("process") or {}
        start, end = number(process.get("started_at")), number(process.get("finished_at"))
        if rule and start is not None and end is not None:
            jobs.append({"rule": rule, "outputs": [key], "start": start, "end": end, "from_process": True})
    jobs.sort(key=lambda job: job["start"])
    return jobs


# --- one job's phases -------------------------------------------------------------------------


def clamp(value: float, what: str, notes: list[str]) -> float:
    """A phase that comes out below zero by more than the clocks' resolution is noted, and counted as 0."""
    if value < -SLACK_S:
        notes.append(f"{what} is {value:.3f} s: the records disagree; counted as 0")
    return max(value, 0.0)


def process_phases(
    job: dict[str, Any], document: dict[str, Any] | None, notes: list[str], where: str = ""
) -> dict[str, Any]:
    """launch, start-up and writing of an attnbench job from its process record; None where absent.
    `where` prefixes the notes (a shape's notes are printed under its name)."""
    process = (document or {}).get("process") or {}
    started, finished = number(process.get("started_at")), number(process.get("finished_at"))
    worker = process.get("worker") if isinstance(process.get("worker"), dict) else None
    connected = number((worker or {}).get("connected_at"))
    from_snakemake = not job.get("from_process")
    phases: dict[str, float | None] = {"launch": None, "start_up": None, "writing": None}
    if started is not None and from_snakemake:
        phases["launch"] = clamp(started - job["start"], f"{where}launch", notes)
    if started is not None and connected is not None:
        phases["start_up"] = clamp(connected - started, f"{where}start-up", notes)
    if finished is not None and from_snakemake:
        phases["writing"] = clamp(job["end"] - finished, f"{where}writing", notes)
    if worker is None:
        how = "child" if process else None
    else:
        before = worker.get("jobs_before")
        how = "new" if before == 0 else f"warm ({before} before)" if isinstance(before, int) else "warm"
    return {"phases": phases, "worker": how, "has_process": bool(process)}


def bench_phases(document: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    notes: list[str] = []
    wall = job["end"] - job["start"]
    recorded = process_phases(job, document, notes)
    phases: dict[str, float | None] = dict.fromkeys(PHASES)
    phases.update(recorded["phases"])
    if job.get("from_process"):
        notes.append(
            "no Snakemake record: wall is process.started_at -> finished_at (launch and writing outside it)"
        )
    candidates = document.get("candidates") or {}
    compile_s = [
        (number(entry.get("compile_ms")) or 0.0) + (number(entry.get("setup_ms")) or 0.0)
        for entry in candidates.values()
        if number(entry.get("compile_ms")) is not None or number(entry.get("setup_ms")) is not None
    ]
    timed_statuses = ("ok", "untrusted")
    if compile_s or not any(entry.get("status") in timed_statuses for entry in candidates.values()):
        phases["compile"] = sum(compile_s) / 1e3
    unrecorded = [
        name
        for name, entry in candidates.items()
        if entry.get("status") in ("incorrect", "error", "timeout", "oom") and entry.get("compile_ms") is None
    ]
    if unrecorded:
        statuses = "/".join(sorted({candidates[name]["status"] for name in unrecorded}))
        notes.append(
            f"compile_ms not recorded for {', '.join(unrecorded)} ({statuses}): a first call made is in other"
        )
    for phase in ("build", "verify"):
        spent = [number(entry.get(f"{phase}_ms")) for entry in candidates.values()]
        if any(value is not None for value in spent):
            phases[phase] = sum(value or 0.0 for value in spent) / 1e3
        elif not any(entry.get("status") in timed_statuses for entry in candidates.values()):
            phases[phase] = 0.0  # nothing was built: every candidate declined
    timing = document.get("timing") or {}
    phases["warm_up"] = number((timing.get("warmup") or {}).get("seconds"))
    phases["sampling"] = number(timing.get("elapsed_s"))
    phases["audit"] = number(document.get("audit_s"))
    phases["reference"] = number((document.get("stages") or {}).get("reference_s"))
    known = sum(value for name, value in phases.items() if name != "other" and value is not None)
    phases["other"] = clamp(wall - known, "other (wall minus the other phases)", notes)
    missing = [LABELS[name] for name, value in phases.items() if value is None]
    if missing:
        notes.append(f"{', '.join(missing)} not recorded: in other")
    timed = 0.0
    for entry in candidates.values():
        samples = entry.get("samples_ms") or []
        timed += sum(number(x) or 0.0 for x in samples) * (number(entry.get("calls_per_sample")) or 1) / 1e3
    return {
        "job": {
            "start": job["start"],
            "end": job["end"],
            "wall_s": wall,
            "wall_source": "process record" if job.get("from_process") else "Snakemake metadata",
        },
        "phases": phases,
        "kinds": {
            name: NOT_RECORDED if value is None else DEFINITIONS[name][0] for name, value in phases.items()
        },
        "other_includes": missing,
        "timed_s": timed,
        "rounds_run": timing.get("rounds_run"),
        "stop_reason": timing.get("stop_reason"),
        "timing_mode": timing.get("mode"),
        "worker": recorded["worker"],
        "notes": notes,
    }


# --- the run ----------------------------------------------------------------------------------


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -float("inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def max_concurrent(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(stop, -1) for _, stop in intervals])
    running = best = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


def per_shape_overhead(shapes: dict[str, dict[str, Any]], jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """What each shape costs beyond its warm-up and sampling: its benchmark job's wall time less those,
    plus its compare job's wall time; and the same less the compile phase (first calls, torch.compile,
    a factory's setup), the issue's "shapes without a compile". Median and maximum over the shapes;
    a shape that cannot be counted is named in `left_out` with why."""
    compare = {
        Path(output).stem: job["end"] - job["start"]
        for job in jobs
        if job["rule"] == "compare"
        for output in job["outputs"]
    }
    rows: dict[str, dict[str, float | None]] = {}
    left_out: dict[str, str] = {}
    for name, shape in shapes.items():
        phases = shape["phases"]
        if phases["warm_up"] is None or phases["sampling"] is None:
            left_out[name] = "warm-up or sampling not recorded"
            continue
        if name not in compare:
            left_out[name] = "no compare job in this invocation"
            continue
        total = shape["job"]["wall_s"] - phases["warm_up"] - phases["sampling"] + compare[name]
        less = None if phases["compile"] is None else total - phases["compile"]
        rows[name] = {"total_s": total, "compare_s": compare[name], "less_compile_s": less}

    def spread(key: str) -> dict[str, Any]:
        values = sorted(v for row in rows.values() if (v := row[key]) is not None)
        if not values:
            return {"median_s": None, "max_s": None, "under_1s": 0, "shapes": 0}
        median = statistics.median(values)
        return {
            "median_s": median,
            "max_s": values[-1],
            "under_1s": sum(v < 1.0 for v in values),
            "shapes": len(values),
        }

    return {
        "shapes": rows,
        "counted": len(rows),
        "left_out": left_out,
        "total": spread("total_s"),
        "less_compile": spread("less_compile_s"),
        "definition": "benchmark job wall - warm-up - sampling + the shape's compare job wall; less_compile"
        " also less the compile phase (shapes that recorded it)",
    }


def analyse(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    notes: list[str] = []
    bench_dir = run_dir / "results" / "bench"
    if not bench_dir.is_dir():
        raise DutyError(f"{bench_dir} does not exist: not a finished attnbench run directory")
    jobs = jobs_from_metadata(metadata_records(run_dir))
    log = None
    if jobs:
        log = newest_log(run_dir, notes)
        jobs, earlier, outputless = select_invocation(jobs, log, notes)
    else:
        notes.append(
            "no Snakemake metadata: jobs from attnbench's process records only (launch, writing and the"
            " time between jobs are not recorded)"
        )
        jobs, earlier, outputless = jobs_from_documents(run_dir), {}, []
    if not jobs:
        raise DutyError(f"no job records in {run_dir}")
    by_output = {output: job for job in jobs for output in job["outputs"]}

    shapes: dict[str, dict[str, Any]] = {}
    other_bench = []
    for path in sorted(bench_dir.glob("*.json")):
        key = str(path.relative_to(run_dir))
        document = read_json(path)
        if document is None:
            notes.append(f"{key} is unreadable")
            continue
        job = by_output.get(key)
        if job is None:
            other_bench.append(path.stem)
            continue
        shapes[(document.get("shape") or {}).get("name") or path.stem] = bench_phases(document, job)
    if other_bench:
        notes.append(f"benchmark results not from this invocation, not counted: {', '.join(other_bench)}")
    shapes = dict(sorted(shapes.items(), key=lambda item: item[1]["job"]["start"]))

    totals: dict[str, float | None] = {}
    for name in PHASES:
        values = [shape["phases"][name] for shape in shapes.values()]
        known = [v for v in values if v is not None]
        totals[name] = sum(known) if known else None
    incomplete_totals = [
        LABELS[name] for name in PHASES if any(shape["phases"][name] is None for shape in shapes.values())
    ]
    if incomplete_totals and shapes:
        notes.append(f"totals of {', '.join(incomplete_totals)} leave out the jobs that did not record them")

    other_jobs: dict[str, dict[str, Any]] = {}
    for job in jobs:
        if job["rule"] == "benchmark":
            continue
        line = other_jobs.setdefault(
            job["rule"],
            {
                "jobs": 0,
                "wall_s": 0.0,
                "launch_s": 0.0,
                "start_up_s": 0.0,
                "work_s": 0.0,
                "writing_s": 0.0,
                "recorded_jobs": 0,
            },
        )
        line["jobs"] += 1
        wall = job["end"] - job["start"]
        line["wall_s"] += wall
        document = read_json(run_dir / job["outputs"][0]) if job["outputs"][0].endswith(".json") else None
        recorded = (
            process_phases(job, document, notes, f"{job['outputs'][0]}: ")
            if document and document.get("process")
            else None
        )
        if recorded and all(
            recorded["phases"][name] is not None for name in ("start_up", "writing", "launch")
        ):
            line["recorded_jobs"] += 1
            phases = recorded["phases"]
            line["launch_s"] += phases["launch"]
            line["start_up_s"] += phases["start_up"]
            line["writing_s"] += phases["writing"]
            line["work_s"] += max(wall - phases["launch"] - phases["start_up"] - phases["writing"], 0.0)
    for rule, line in other_jobs.items():
        if line["recorded_jobs"] < line["jobs"]:
            if line["recorded_jobs"]:
                notes.append(
                    f"{rule}: only {line['recorded_jobs']} of {line['jobs']} jobs record their process"
                )
            else:
                line.update(launch_s=None, start_up_s=None, work_s=None, writing_s=None)
        del line["recorded_jobs"]

    overhead = per_shape_overhead(shapes, jobs)

    intervals = [(job["start"], job["end"]) for job in jobs]
    start, end = min(s for s, _ in intervals), max(e for _, e in intervals)
    wall = end - start
    busy = union_length(intervals)
    measuring = sum(totals[name] or 0.0 for name in MEASURING)
    timed = sum(shape["timed_s"] for shape in shapes.values())
    bench_wall = sum(shape["job"]["wall_s"] for shape in shapes.values())
    pipeline = {
        "wall_s": wall,
        "start": start,
        "end": end,
        "source": "Snakemake metadata: first job's starttime to last job's endtime"
        if not jobs[0].get("from_process")
        else "process records: first job's started_at to last job's finished_at",
        "snakemake_elapsed_s": (log or {}).get("elapsed_s"),
        "log": (log or {}).get("path"),
        "jobs": dict(Counter(job["rule"] for job in jobs)),
        "jobs_without_outputs": outputless,
        "earlier_invocations": earlier,
        "jobs_busy_s": busy,
        "between_jobs_s": wall - busy,
        "max_concurrent_jobs": max_concurrent(intervals),
        "benchmark_jobs_s": bench_wall,
        "other_jobs_s": sum(line["wall_s"] for line in other_jobs.values()),
    }
    if pipeline["max_concurrent_jobs"] > 1:
        notes.append(
            f"up to {pipeline['max_concurrent_jobs']} jobs ran at once: phase totals and the duty add"
            " time across them and can exceed the wall time"
        )
    return {
        "tool": "benchmarks/duty.py",
        "run_dir": str(run_dir),
        "definitions": {
            name: {"label": LABELS[name], "kind": kind, "source": source}
            for name, (kind, source) in DEFINITIONS.items()
        },
        "shapes": shapes,
        "totals": {"phases": totals, "wall_s": bench_wall, "timed_s": timed},
        "other_jobs": other_jobs,
        "pipeline": pipeline,
        "duty": {
            "value": measuring / wall if wall > 0 else None,
            "measuring_s": measuring,
            "wall_s": wall,
            "definition": "sum over shapes of (warm-up + sampling) / pipeline wall time",
        },
        "per_shape_overhead": overhead,
        "timed_fraction": {
            "value": timed / wall if wall > 0 else None,
            "timed_s": timed,
            "definition": "sum over shapes of the kept samples (samples_ms x calls_per_sample) / pipeline wall time",
        },
        "notes": notes,
    }


# --- text -------------------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    return NOT_RECORDED if value is None else f"{value:.3f}"


def share(value: float | None, whole: float) -> str:
    return "" if value is None or whole <= 0 else f"{value / whole:.1%}"


def table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Aligned columns: the first `left` columns flush left, the others right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def render(result: dict[str, Any]) -> str:
    pipeline, duty, totals = result["pipeline"], result["duty"], result["totals"]
    wall = pipeline["wall_s"]
    out = [f"attnbench duty: {result['run_dir']}"]
    if pipeline["log"]:
        elapsed = pipeline["snakemake_elapsed_s"]
        out.append(
            f"Snakemake log {Path(pipeline['log']).name}: {sum(pipeline['jobs'].values())} jobs with outputs"
            + (f", Elapsed time {elapsed:.3f} s" if elapsed is not None else "")
        )
    marks = {"measured": "m", "derived": "d"}
    header = (
        ["shape", "wall m"]
        + [f"{LABELS[n]} {marks[DEFINITIONS[n][0]]}" for n in PHASES]
        + ["timed m", "worker"]
    )
    rows = []
    for name, shape in result["shapes"].items():
        rows.append(
            [name, seconds(shape["job"]["wall_s"])]
            + [seconds(shape["phases"][n]) for n in PHASES]
            + [seconds(shape["timed_s"]), shape["worker"] or NOT_RECORDED]
        )
    rows.append(
        ["total", seconds(totals["wall_s"])]
        + [seconds(totals["phases"][n]) for n in PHASES]
        + [seconds(totals["timed_s"]), ""]
    )
    rows.append(
        ["share of pipeline wall", share(totals["wall_s"], wall)]
        + [share(totals["phases"][n], wall) for n in PHASES]
        + [share(totals["timed_s"], wall), ""]
    )
    out += [
        "",
        "Benchmark jobs, seconds (m measured, d derived: wall minus the other phases)",
        *table(header, rows),
    ]

    header = ["job", "jobs", "wall m", "launch m", "start-up m", "work d", "writing m", "share of wall"]
    rows = []
    for rule, line in sorted(result["other_jobs"].items(), key=lambda item: -item[1]["wall_s"]):
        rows.append(
            [
                rule,
                str(line["jobs"]),
                seconds(line["wall_s"]),
                seconds(line["launch_s"]),
                seconds(line["start_up_s"]),
                seconds(line["work_s"]),
                seconds(line["writing_s"]),
                share(line["wall_s"], wall),
            ]
        )
    out += ["", "Other jobs, seconds (work: wall minus launch, start-up and writing)", *table(header, rows)]

    rows = [
        ["pipeline wall time (first job start -> last job end)", seconds(wall), "100.0%", "m"],
        [
            "  benchmark jobs",
            seconds(pipeline["benchmark_jobs_s"]),
            share(pipeline["benchmark_jobs_s"], wall),
            "m",
        ],
        ["  other jobs", seconds(pipeline["other_jobs_s"]), share(pipeline["other_jobs_s"], wall), "m"],
        [
            "  between jobs (process exits, Snakemake scheduling)",
            seconds(pipeline["between_jobs_s"]),
            share(pipeline["between_jobs_s"], wall),
            "d",
        ],
    ]
    if pipeline["snakemake_elapsed_s"] is not None:
        rows.append(
            [
                "Snakemake's Elapsed time (whole invocation, parse and DAG included)",
                seconds(pipeline["snakemake_elapsed_s"]),
                share(pipeline["snakemake_elapsed_s"], wall),
                "m",
            ]
        )
    rows += [
        [
            "warm-up + sampling, all shapes",
            seconds(duty["measuring_s"]),
            share(duty["measuring_s"], wall),
            "m",
        ],
        ["timed samples, all shapes", seconds(totals["timed_s"]), share(totals["timed_s"], wall), "m"],
    ]
    out += ["", "Run", *table(["", "seconds", "of wall", "m/d"], rows)]
    value = duty["value"]
    out += [
        "",
        f"measurement duty = (warm-up + sampling) / pipeline wall = {duty['measuring_s']:.3f} s / {wall:.3f} s"
        f" = {'n/a' if value is None else f'{value:.1%}'}",
        f"timed fraction = kept samples / pipeline wall = {totals['timed_s']:.3f} s / {wall:.3f} s"
        f" = {share(totals['timed_s'], wall) or 'n/a'}",
    ]
    overhead = result["per_shape_overhead"]
    for key, label in (("total", "all of it"), ("less_compile", "less the compile phase")):
        line = overhead[key]
        if line["shapes"]:
            out.append(
                f"per-shape overhead (benchmark job beyond warm-up and sampling, plus its compare job), {label}:"
                f" median {line['median_s']:.3f} s, max {line['max_s']:.3f} s,"
                f" under 1 s for {line['under_1s']} of {line['shapes']} shapes"
            )
    for name, why in overhead["left_out"].items():
        out.append(f"  not in the per-shape overhead: {name} ({why})")
    notes = list(result["notes"])
    for name, shape in result["shapes"].items():
        notes += [f"{name}: {note}" for note in shape["notes"]]
    if notes:
        out += ["", "Notes:", *(f"- {note}" for note in notes)]
    out += ["", "Phases (docstring of benchmarks/duty.py has the detail):"]
    out += [f"  {LABELS[name]:9s} {kind[0]}  {source}" for name, (kind, source) in DEFINITIONS.items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a finished run's working directory")
    parser.add_argument("--json", metavar="OUT.json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    try:
        result = analyse(args.run_dir)
    except DutyError as exc:
        print(f"duty: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
