"""The regression ratchet: this run against a stored baseline, one verdict per (shape, candidate).

A baseline is promoted only by an explicit `attnbench baseline save`; nothing here ever replaces it
(a "best ever" baseline drifts towards lucky runs). Runs are compared with the product's own test
on raw samples, unpaired (two processes share no rounds), each interval and p-value corrected for
every comparison of the run (stats.adjust, Bonferroni), the verdict read from the corrected
interval: a regression's interval lies wholly below the resolution band. Two processes measuring the same kernel differ by more than interleaved rounds' resolution
(docs/methodology.md, repro), so the test's resolution defaults to the 2% threshold: a regression
is a slowdown shown to exceed 2%, not one that merely might.

A candidate that failed in this run is `failed`, never a regression; results from a different GPU,
driver, torch, cuDNN or lock are `incomparable`, naming the fields.

Nothing the gate could not judge passes it: an incomparable, missing, failed or undecided result, a
baseline environment that differs, or a run that compared nothing exits 2 unless the user names what
may differ (`allow_missing`, `allow_env_change`, in the config's ratchet section or on the gate's
command line). A baseline carries a digest of its own content, checked whenever it is read, and each
median must be its samples' median: a baseline edited by hand is refused, naming what is wrong.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from attnbench import __version__, files, stats
from attnbench.documents import CandidateResult, ShapeResult
from attnbench.formatting import DASH, md, num, signed_pct
from attnbench.results import Json, Status, median_problem
from attnbench.settings import ALPHA

# What a baseline keeps of each candidate's result: what a comparison with it reads.
BASELINE_FIELDS = ("status", "reason", "samples_ms", "median_ms", "ci95_ms", "rel_error", "tolerance")
# Errors below this fraction of the tolerance they were checked against are too small to gate on.
ACCURACY_FLOOR = 0.1
VERDICTS = ("regression", "improvement", "unchanged", "undecided", "new", "missing", "failed", "incomparable")
MARKER = "<!-- attnbench-ratchet -->"
DEFAULTS = {
    "alpha": ALPHA,
    "threshold": 0.02,
    "resolution": 0.02,
    # An error more than this many times the baseline's, and above ACCURACY_FLOOR of its tolerance,
    # is an accuracy regression (a kernel that got faster by computing less carefully).
    "accuracy_factor": 2.0,
    "strict": ["device", "gpu", "driver", "torch", "cuda", "cudnn", "lock"],
    # What the gate lets pass although it could not judge it (also `attnbench gate --allow-...`):
    "allow_missing": False,  # results of the baseline not in this run, or measured on a changed shape
    "allow_env_change": [],  # environment fields that may differ: their comparisons count
}
# The fields environment_differences compares, as the comment's table and the gate's flags name them.
ENVIRONMENT_FIELDS = ("device", "gpu", "driver", "torch", "cuda", "cudnn", "triton", "lock", "power_limit_w")
EXIT_OK, EXIT_REGRESSION, EXIT_UNUSABLE = 0, 1, 2
NO_DIGEST = "unverified (no digest)"
NOT_COMPARED_LISTED = 20  # the comment's list of missing and changed results; the table has them all


def settings(section: Mapping[str, Any] | None) -> Json:
    return {**DEFAULTS, **(section or {})}


# --- the baseline file -------------------------------------------------------------------------


def save_baseline(results_dir: str | Path, schema_dir: str | Path) -> Json:
    """A portable baseline from a finished run: raw samples, fingerprint, and the settings per shape."""
    results = Path(results_dir)
    schemas = Path(schema_dir)
    fingerprint = files.read_json(results / "env" / "fingerprint.json", schemas / "fingerprint.schema.yaml")
    benches = sorted((results / "bench").glob("*.json"))
    if not benches:
        raise files.ResultFileError(f"{results / 'bench'}: no benchmark results to save as a baseline")
    shapes = {}
    for path in benches:
        bench = files.read_bench(path, schemas)
        shapes[bench.name] = {
            "shape": bench.shape,
            "config": {
                key: bench.document.get(key) for key in ("device", "dtype", "mode", "lock", "kernel_hashes")
            }
            | {"timing": {k: v for k, v in bench.timing.items() if k != "clocks"}},
            "candidates": {
                name: {key: result.document.get(key) for key in BASELINE_FIELDS}
                for name, result in bench.candidates.items()
            },
        }
    document = {
        "kind": "attnbench-baseline",
        "attnbench_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": str(results),
        "fingerprint": files.jsonable(fingerprint),
        "shapes": files.jsonable(shapes),
    }
    for field, why in _disagreements(document):  # a result that disagrees with itself is not promoted
        raise files.ResultFileError(
            f"{results / 'bench'}: {field}: {why}: not saved as a baseline; measure the shape again"
        )
    document["digest"] = content_digest(document)
    return document


def content_digest(baseline: Json) -> str:
    """sha256 of what a comparison reads from a baseline: every shape's sizes and settings, each
    candidate's status, samples, median and interval, and the environment fingerprint, as canonical
    JSON. Not a signature (anyone can recompute it): it tells a baseline edited or damaged after
    `baseline save` from the one saved."""
    try:
        return files.canonical_digest({key: baseline.get(key) for key in ("fingerprint", "shapes")})
    except ValueError as exc:  # NaN or infinity: not a number JSON has, so not one `baseline save` wrote
        raise files.ResultFileError(f"a number that JSON does not have: {exc}") from exc


def _median_problem(result: Json) -> tuple[str, str] | None:
    """What makes one candidate's stored result disagree with itself, as (field, why), or None: a
    baseline's result with status ok must keep its samples (the comparison is made from them)."""
    if result.get("status") == Status.OK and not result.get("samples_ms"):
        return "samples_ms", "none, for a result with status ok"
    return median_problem(result)


def _disagreements(baseline: Json) -> Iterable[tuple[str, str]]:
    """('shapes/SHAPE/candidates/CANDIDATE/FIELD', why) for each stored result that disagrees with itself."""
    for shape, entry in baseline["shapes"].items():
        for candidate, result in entry["candidates"].items():
            problem = _median_problem(result)
            if problem:
                yield f"shapes/{shape}/candidates/{candidate}/{problem[0]}", problem[1]


def check_baseline(baseline: Json, source: str) -> str | None:
    """Refuse (files.ResultFileError) a baseline whose numbers do not hold together: each median must
    be its samples' median (named by shape, candidate and field), and a recorded digest must be the
    content's. A baseline saved before digests is accepted: the answer is then a warning line naming
    it unverified; None for a verified one."""
    again = "save the baseline again from the run's results (attnbench baseline save)"
    for field, why in _disagreements(baseline):
        raise files.ResultFileError(f"{source}: field '{field}': {why}: edited after it was saved; {again}")
    try:
        found = content_digest(baseline)
    except files.ResultFileError as exc:
        raise files.ResultFileError(f"{source}: {exc}; {again}") from exc
    recorded = baseline.get("digest")
    if recorded is None:
        return (
            f"{source}: {NO_DIGEST}: saved by an attnbench older than digests; its medians agree with "
            f"its samples, but edits to them cannot be told; {again} to add one"
        )
    if recorded != found:
        raise files.ResultFileError(
            f"{source}: field 'digest': {recorded} is not the digest of the content ({found}): samples, "
            "medians, statuses, shape settings or the fingerprint were edited after `attnbench baseline "
            f"save`; {again} (to compare across an environment change, allow it: `attnbench gate "
            "--allow-env-change FIELD` or ratchet.allow_env_change, never an edited fingerprint)"
        )
    return None


def load_baseline(path: str | Path, schema_dir: str | Path) -> tuple[Json, str | None]:
    """The baseline at `path`, checked against its schema and itself (check_baseline), and the
    warning line for one saved without a digest (else None)."""
    baseline = files.read_json(path, Path(schema_dir) / "baseline.schema.yaml")
    return baseline, check_baseline(baseline, str(path))


# --- per shape ---------------------------------------------------------------------------------


def compare_shape(bench: ShapeResult, baseline: Json | None, config: Mapping[str, Any]) -> Json:
    """This shape's candidates against the baseline's; intervals and p-values uncorrected (the run
    corrects them, `verdict`)."""
    opts = settings(config)
    name = bench.name
    before = (baseline or {}).get("shapes", {}).get(name)
    changed = None if before is None else shape_changes(before, bench)
    rows = []
    for candidate, now in bench.candidates.items():
        then = (before or {}).get("candidates", {}).get(candidate)
        row: Json = {
            "shape": name,
            "candidate": candidate,
            "status": now.status,
            "baseline_status": None if then is None else then["status"],
            "median_ms": now.median_ms,
            "baseline_median_ms": None if then is None else then.get("median_ms"),
        }
        if now.status != Status.OK:
            unchanged = then is not None and then["status"] == now.status == Status.UNSUPPORTED
            row.update(kind="unchanged" if unchanged else "failed", reason=now.reason)
        elif then is None or then["status"] != Status.OK:
            why = "not in the baseline" if then is None else f"baseline status {then['status']}"
            row.update(kind="new", reason=why)
        elif changed:
            row.update(kind="incomparable", reason=changed)
        elif worse := accuracy_regression(then, now, opts["accuracy_factor"]):
            row.update(kind="less accurate", reason=worse)
        else:
            outcome = stats.compare(
                then["samples_ms"],
                list(now.samples_ms),
                paired=False,
                alpha=opts["alpha"],
                threshold=opts["threshold"],
                resolution=opts["resolution"],
            )
            row.update(kind="compared", reason=None, **outcome)
        rows.append(row)
    for candidate in sorted(set((before or {}).get("candidates", {})) - set(bench.candidates)):
        rows.append(_missing(name, candidate, before["candidates"][candidate]["status"], "not in this run"))
    return {"shape": name, "in_baseline": before is not None, "entries": rows}


def accuracy_regression(then: Json, now: CandidateResult, factor: float) -> str | None:
    """Why the candidate's error rose beyond the baseline's, or None: more than `factor` times it and
    above ACCURACY_FLOOR of the tolerance it was checked against (below that, a change in the last
    bits of a float32 error is no regression). Baselines saved before errors were kept: None."""
    before, error = then.get("rel_error"), now.rel_error
    if before is None or error is None:
        return None
    floor = ACCURACY_FLOOR * (now.document.get("tolerance") or 0.0)
    if error > factor * before and error > floor:
        times = f" ({error / before:.1f}x, limit {factor:g}x)" if before else ""
        return f"error rose from {before:.3g} to {error:.3g}{times}"
    return None


def shape_changes(before: Json, bench: ShapeResult) -> str | None:
    """What makes this shape's numbers incomparable with the baseline's under the same name: its
    sizes, dtype, mode, or the timing mode (a graph replay and a cold call measure different things)."""
    then = {**before["shape"], **{k: before["config"].get(k) for k in ("dtype", "mode")}}
    then["timing mode"] = (before["config"].get("timing") or {}).get("mode")
    now = {**bench.shape, "dtype": bench.dtype, "mode": bench.mode, "timing mode": bench.timing.get("mode")}
    moved = [f"{key} {then.get(key)} -> {now.get(key)}" for key in now if then.get(key) != now.get(key)]
    return "shape changed since the baseline: " + ", ".join(moved) if moved else None


def _missing(shape: str, candidate: str, status: str | None, reason: str) -> Json:
    return {
        "shape": shape,
        "candidate": candidate,
        "status": None,
        "baseline_status": status,
        "median_ms": None,
        "baseline_median_ms": None,
        "kind": "missing",
        "reason": reason,
    }


# --- the run's verdict -------------------------------------------------------------------------


def environment_differences(
    baseline_fp: Json, current_fp: Json, strict: Iterable[str], allowed: Iterable[str] = ()
) -> list[Json]:
    """Fields that can move timings, baseline against now; `strict` ones make results incomparable
    unless `allowed` names them (then compared, and reported as allowed)."""
    strict, allowed = set(strict), set(allowed)
    fields = {
        "device": lambda fp: fp.get("device"),
        "gpu": lambda fp: (fp.get("gpu") or {}).get("name") or (fp.get("cpu") or {}).get("model"),
        "driver": lambda fp: (fp.get("gpu") or {}).get("driver_version"),
        "torch": lambda fp: fp["torch"].get("version"),
        "cuda": lambda fp: fp["torch"].get("cuda"),
        "cudnn": lambda fp: fp["torch"].get("cudnn"),
        "triton": lambda fp: fp["torch"].get("triton"),
        "lock": lambda fp: {k: v for k, v in (fp.get("lock") or {}).items() if k != "env"},
        "power_limit_w": lambda fp: (fp.get("gpu") or {}).get("power_limit_w"),
    }
    differences = []
    for field, read in fields.items():
        then, now = read(baseline_fp), read(current_fp)
        if then != now:
            differences.append(
                {
                    "field": field,
                    "baseline": then,
                    "current": now,
                    "strict": field in strict,
                    "allowed": field in allowed,
                }
            )
    return differences


def verdict(
    shape_docs: list[Json],
    baseline: Json | None,
    baseline_error: str | None,
    fingerprint: Json,
    config: Mapping[str, Any],
    baseline_path: str,
) -> Json:
    """One verdict per (shape, candidate), each interval and p-value corrected for every comparison
    of the run (stats.adjust), the verdict read from that corrected interval."""
    opts = settings(config)
    if baseline is None:
        return _document([], opts, baseline_path, None, [], usable=False, reason=baseline_error)
    try:
        check_baseline(baseline, baseline_path)
    except files.ResultFileError as exc:
        return _document([], opts, baseline_path, None, [], usable=False, reason=str(exc))
    differences = environment_differences(
        baseline["fingerprint"], fingerprint, opts["strict"], opts["allow_env_change"]
    )
    blocking = [d["field"] for d in differences if d["strict"] and not d["allowed"]]
    entries = [dict(entry) for doc in shape_docs for entry in doc["entries"]]
    shapes_now = {doc["shape"] for doc in shape_docs}
    for name in sorted(set(baseline["shapes"]) - shapes_now):
        for candidate, then in baseline["shapes"][name]["candidates"].items():
            entries.append(_missing(name, candidate, then["status"], "shape not in this run"))
    tested = [e for e in entries if e["kind"] == "compared"]
    band = {"threshold": opts["threshold"], "resolution": opts["resolution"]}
    for entry, adjusted in zip(tested, stats.adjust([{**e, **band} for e in tested], alpha=opts["alpha"])):
        entry.update(
            speedup_ci=adjusted["speedup_ci"],
            confidence=adjusted["confidence"],
            p_adjusted=adjusted["p_value"],
            adjusted_verdict=adjusted["verdict"],
        )
    for entry in entries:
        entry["verdict"] = _classify(entry, opts, blocking)
    return _document(entries, opts, baseline_path, baseline, differences, usable=True, reason=None)


def _classify(entry: Json, opts: Json, blocking: list[str]) -> str:
    """The entry's verdict. One compared across a strict environment difference is `incomparable`,
    naming the fields (blocked_by), and keeps the verdict its corrected interval gives
    (compared_verdict): `attnbench gate --allow-env-change FIELD` reads that one."""
    if entry["kind"] == "less accurate":  # an accuracy regression: whatever its time did
        read = "regression"
    elif entry["kind"] != "compared":
        return entry["kind"]  # new, missing, failed, unchanged, or incomparable for a changed shape
    elif (found := entry.pop("adjusted_verdict")) == stats.TOO_FEW_ROUNDS:
        entry["reason"] = f"{stats.TOO_FEW_ROUNDS} to compare (fewer than {stats.MIN_ROUNDS} on a side)"
        read = "undecided"
    else:
        read = {"faster": "improvement", "slower": "regression"}.get(found, "unchanged")
    if blocking:
        entry["reason"] = "environment differs from the baseline: " + ", ".join(blocking)
        entry.update(blocked_by=list(blocking), compared_verdict=read)
        return "incomparable"
    return read


def _document(
    entries: list[Json],
    opts: Json,
    path: str,
    baseline: Json | None,
    differences: list[Json],
    *,
    usable: bool,
    reason: str | None,
) -> Json:
    counts = Counter(e["verdict"] for e in entries)
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "baseline": {
            "path": path,
            "usable": usable,
            "reason": reason,
            "created": None if baseline is None else baseline.get("created"),
            "gpu": None if baseline is None else environment_name(baseline["fingerprint"]),
            # verified: the recorded digest is the content's (verdict checked it); else saved without one
            "digest": None if baseline is None else content_digest(baseline),
            "verified": baseline is not None and "digest" in baseline,
        },
        "settings": {
            k: opts[k]
            for k in (
                "alpha",
                "threshold",
                "resolution",
                "accuracy_factor",
                "strict",
                "allow_missing",
                "allow_env_change",
            )
        },
        "test": stats.TEST_UNPAIRED,
        "environment_differences": differences,
        "counts": {name: counts.get(name, 0) for name in VERDICTS},
        "entries": entries,
    }


def environment_name(fp: Json) -> str:
    gpu = fp.get("gpu") or {}
    if gpu.get("name"):
        return f"{gpu['name']} (driver {gpu.get('driver_version')}, torch {fp['torch'].get('version')})"
    return f"{(fp.get('cpu') or {}).get('model', 'cpu')} (torch {fp['torch'].get('version')})"


def gate(
    document: Json, *, allow_missing: bool = False, allow_env_change: Iterable[str] = ()
) -> tuple[int, str]:
    """Exit code and a one-line reason. An unusable baseline is 2; then any regression is 1; then 2
    for whatever the gate could not judge: a strict environment difference, a result incomparable
    (its shape changed) or missing, a failed benchmark (a crash is never counted as a regression), a
    comparison with too few rounds, or a run that compared nothing. `allow_missing` and
    `allow_env_change` (joined with those in the verdict's settings, from the config's ratchet
    section) let what they name pass: allowed environment fields' comparisons are then read. A new
    result (a shape or candidate the baseline lacks) passes, counted in the line: a change that adds
    one has nothing to compare it with until the baseline is saved again."""
    base = document["baseline"]
    if not base["usable"]:
        return EXIT_UNUSABLE, f"baseline unusable: {base['reason']}"
    opts = document["settings"]
    allow_missing = allow_missing or bool(opts.get("allow_missing"))
    allowed = set(allow_env_change) | set(opts.get("allow_env_change") or ())
    entries = [(entry, _judged(entry, allowed)) for entry in document["entries"]]
    found = Counter(verdict for _, verdict in entries)
    differences = document["environment_differences"]
    blocking = [d for d in differences if d["strict"] and not d.get("allowed") and d["field"] not in allowed]
    # incomparable: a shape changed under its name (kind), or compared across the environment (verdict)
    changed = [e["shape"] for e, v in entries if v == "incomparable" and e.get("kind") == "incomparable"]
    unjudged = sum(v == "incomparable" and e.get("kind") != "incomparable" for e, v in entries)
    compared = sum(
        e.get("kind") == "compared" and v in ("regression", "improvement", "unchanged") for e, v in entries
    )
    problems = []
    if blocking:
        flags = " ".join(f"--allow-env-change {d['field']}" for d in blocking)
        left = f", {unjudged} result(s) not compared" if unjudged else ""
        problems.append(
            f"the environment differs from the baseline's: {', '.join(map(_difference, blocking))}{left} "
            f"(allow with {flags})"
        )
    elif unjudged:  # a verdict written before compared_verdict was kept: run the ratchet again
        problems.append(f"{unjudged} result(s) not compared: the environment differs from the baseline's")
    if changed and not allow_missing:
        problems.append(
            f"{len(changed)} result(s) incomparable: shape {', '.join(sorted(set(changed)))} changed since "
            "the baseline (allow with --allow-missing)"
        )
    if found["missing"] and not allow_missing:
        problems.append(
            f"{found['missing']} result(s) of the baseline missing from this run (allow with --allow-missing)"
        )
    if found["failed"]:
        problems.append(f"{found['failed']} benchmark(s) failed in this run")
    if found["undecided"]:
        problems.append(f"{found['undecided']} comparison(s) had too few rounds to decide")
    if not problems and not compared:
        problems.append(f"nothing was compared with the baseline ({_tally(found)})")
    if found["regression"]:
        return EXIT_REGRESSION, f"{found['regression']} regression(s)" + "".join(f"; {p}" for p in problems)
    if problems:
        return EXIT_UNUSABLE, "; ".join(problems)
    notes = [f"{found['new']} new, not in the baseline"] if found["new"] else []
    if found["missing"]:
        notes.append(f"{found['missing']} missing, allowed")
    if changed:
        notes.append(f"shape {', '.join(sorted(set(changed)))} changed, allowed")
    for d in differences:
        if d["strict"]:
            notes.append(f"{_difference(d)}, allowed")
        else:
            notes.append(f"{_difference(d)}, reported only (not in ratchet.strict)")
    if not base.get("verified", True):
        notes.append(f"baseline {NO_DIGEST}")
    return EXIT_OK, "; ".join(["no regression", *notes])


def _judged(entry: Json, allowed: set[str]) -> str:
    """The entry's verdict once the environment fields in `allowed` may differ."""
    blocked = entry.get("blocked_by")
    if entry["verdict"] == "incomparable" and blocked and set(blocked) <= allowed:
        return entry.get("compared_verdict") or "incomparable"
    return entry["verdict"]


def _difference(d: Json) -> str:
    """An environment difference in a few words: `torch 2.10.0 -> 2.11.0`, or the field alone."""
    then, now = d["baseline"], d["current"]
    if any(isinstance(v, (dict, list)) or len(str(v)) > 40 for v in (then, now)):
        return f"{d['field']} changed"
    return f"{d['field']} {then} -> {now}"


def _tally(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts.get(v)) or "no results"


# --- the pull-request comment ------------------------------------------------------------------


def _change(entry: Json) -> str:
    """The change in time, now against the baseline (1 / speedup - 1), with its corrected interval."""
    if entry.get("speedup") is None or entry.get("speedup_ci") is None:
        return DASH
    lo, hi = entry["speedup_ci"]
    return f"{signed_pct(1 / entry['speedup'] - 1)} [{signed_pct(1 / hi - 1)}, {signed_pct(1 / lo - 1)}]"


def _table(entries: list[Json]) -> list[str]:
    lines = [
        "| shape | candidate | verdict | time change [corrected interval] | Hedges' g | p (corrected) | now ms | baseline ms | note |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for e in entries:
        lines.append(
            f"| {md(e['shape'])} | {md(e['candidate'])} | {e['verdict']} | {_change(e)} | "
            f"{num(e.get('hedges_g'), 2)} | {num(e.get('p_adjusted'), 2)} | "
            f"{num(e['median_ms'], 4)} | {num(e['baseline_median_ms'], 4)} | {md(e.get('reason') or '')} |"
        )
    return lines


def comment(document: Json) -> str:
    """The PR comment: counts, regressions with their CIs and effect sizes, environment differences,
    and every result in a collapsed table. Starts with MARKER so CI can find and update it."""
    counts = document["counts"]
    base = document["baseline"]
    lines = [MARKER, ""]
    code, why = gate(document)
    lines.append(f"## attnbench ratchet: {why} (gate exit {code})")
    lines.append("")
    if not base["usable"]:
        lines.append(f"The baseline {md(base['path'])} could not be used: {md(base['reason'])}")
        return "\n".join(lines) + "\n"
    s = document["settings"]
    compared = counts["regression"] + counts["improvement"] + counts["unchanged"] + counts["undecided"]
    lines.append(
        f"Against the baseline of {md(base['created'])} on {md(base['gpu'])}. A regression is a slowdown of "
        f"at least {s['threshold']:.0%} whose interval (Welch's t on block means, corrected for all "
        f"{compared} comparisons at α = {s['alpha']}) lies wholly beyond a change of {s['resolution']:.0%}."
    )
    if base.get("verified", True):
        lines += ["", f"Baseline digest `{base.get('digest')}`: verified."]
    else:
        lines += [
            "",
            f"Baseline {NO_DIGEST}: saved by an older attnbench; its medians agree with its samples, but "
            "edits to them cannot be told. Save it again (`attnbench baseline save`) to add one.",
        ]
    lines += ["", "| " + " | ".join(VERDICTS) + " |", "|" + " ---: |" * len(VERDICTS)]
    lines.append("| " + " | ".join(str(counts[v]) for v in VERDICTS) + " |")
    regressions = [e for e in document["entries"] if e["verdict"] == "regression"]
    if regressions:
        # slowest first; an accuracy regression (no speedup) after the slowdowns
        slowest = sorted(regressions, key=lambda e: (e.get("speedup") is None, e.get("speedup") or 0.0))
        lines += ["", "### Regressions", "", *_table(slowest)]
    if document["environment_differences"]:
        lines += [
            "",
            "### Environment differences",
            "",
            "| field | baseline | now | makes results incomparable |",
        ]
        lines.append("| --- | --- | --- | --- |")
        for d in document["environment_differences"]:
            strict = "no (allowed: compared)" if d.get("allowed") else "yes" if d["strict"] else "no"
            lines.append(f"| {d['field']} | {md(d['baseline'])} | {md(d['current'])} | {strict} |")
    failed = [e for e in document["entries"] if e["verdict"] == "failed"]
    if failed:
        lines += ["", "### Failed in this run (not counted as regressions)", ""]
        lines += [
            f"- {md(e['shape'])} / {md(e['candidate'])}: {md(e['status'])}: {md(e['reason'])}" for e in failed
        ]
    unjudged = [
        e
        for e in document["entries"]
        if e["verdict"] == "missing" or (e["verdict"] == "incomparable" and not e.get("blocked_by"))
    ]
    if unjudged:
        allowed = " (allowed: ratchet.allow_missing)" if s.get("allow_missing") else ""
        lines += ["", f"### Not compared: missing or changed since the baseline{allowed}", ""]
        lines += [
            f"- {md(e['shape'])} / {md(e['candidate'])}: {e['verdict']}: {md(e.get('reason') or '')}"
            for e in unjudged[:NOT_COMPARED_LISTED]
        ]
        if len(unjudged) > NOT_COMPARED_LISTED:
            lines.append(f"- and {len(unjudged) - NOT_COMPARED_LISTED} more (all results below)")
    lines += ["", f"<details><summary>All {len(document['entries'])} results</summary>", ""]
    lines += _table(document["entries"])
    lines += ["", "</details>", ""]
    return "\n".join(lines)
