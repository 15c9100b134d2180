"""The regression ratchet: this run against a stored baseline, one verdict per (shape, candidate).

A baseline is promoted only by an explicit `attnbench baseline save`; nothing here ever replaces it
(a "best ever" baseline drifts towards lucky runs). Runs are compared with the product's own test
on raw samples, unpaired (two processes share no rounds), each interval and p-value corrected for
every comparison of the run (stats.adjust, Bonferroni), the verdict read from the corrected
interval: a regression's interval lies wholly below the resolution band. Two processes measuring the same kernel differ by up to ~1.7% on an H100
(docs/methodology.md, repro), so the test's resolution defaults to the 2% threshold: a regression
is a slowdown shown to exceed 2%, not one that merely might.

A candidate that failed in this run is `failed`, never a regression; results from a different GPU,
driver, torch, cuDNN or lock are `incomparable`, naming the fields.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from attnbench import __version__, files, stats
from attnbench.formatting import DASH, md, num, signed_pct

VERDICTS = ("regression", "improvement", "unchanged", "undecided", "new", "missing", "failed", "incomparable")
MARKER = "<!-- attnbench-ratchet -->"
DEFAULTS = {
    "alpha": stats.ALPHA,
    "threshold": 0.02,
    "resolution": 0.02,
    "strict": ["device", "gpu", "driver", "torch", "cuda", "cudnn", "lock"],
}
EXIT_OK, EXIT_REGRESSION, EXIT_UNUSABLE = 0, 1, 2

Json = dict[str, Any]


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
        bench = files.read_json(path, schemas / "bench.schema.yaml")
        shapes[bench["shape"]["name"]] = {
            "shape": bench["shape"],
            "config": {key: bench.get(key) for key in ("device", "dtype", "mode", "lock", "kernel_hashes")}
            | {"timing": {k: v for k, v in bench["timing"].items() if k != "clocks"}},
            "candidates": {
                name: {
                    key: entry.get(key) for key in ("status", "reason", "samples_ms", "median_ms", "ci95_ms")
                }
                for name, entry in bench["candidates"].items()
            },
        }
    return {
        "kind": "attnbench-baseline",
        "attnbench_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": str(results),
        "fingerprint": fingerprint,
        "shapes": shapes,
    }


# --- per shape ---------------------------------------------------------------------------------


def compare_shape(bench: Json, baseline: Json | None, config: Mapping[str, Any]) -> Json:
    """This shape's candidates against the baseline's; intervals and p-values uncorrected (the run
    corrects them, `verdict`)."""
    opts = settings(config)
    name = bench["shape"]["name"]
    before = (baseline or {}).get("shapes", {}).get(name)
    changed = None if before is None else shape_changes(before, bench)
    rows = []
    for candidate, now in bench["candidates"].items():
        then = (before or {}).get("candidates", {}).get(candidate)
        row: Json = {
            "shape": name,
            "candidate": candidate,
            "status": now["status"],
            "baseline_status": None if then is None else then["status"],
            "median_ms": now.get("median_ms"),
            "baseline_median_ms": None if then is None else then.get("median_ms"),
        }
        if now["status"] != "ok":
            unchanged = then is not None and then["status"] == now["status"] == "unsupported"
            row.update(kind="unchanged" if unchanged else "failed", reason=now.get("reason"))
        elif then is None or then["status"] != "ok":
            why = "not in the baseline" if then is None else f"baseline status {then['status']}"
            row.update(kind="new", reason=why)
        elif changed:
            row.update(kind="incomparable", reason=changed)
        else:
            outcome = stats.compare(
                then["samples_ms"],
                now["samples_ms"],
                paired=False,
                alpha=opts["alpha"],
                threshold=opts["threshold"],
                resolution=opts["resolution"],
            )
            row.update(kind="compared", reason=None, **outcome)
        rows.append(row)
    for candidate in sorted(set((before or {}).get("candidates", {})) - set(bench["candidates"])):
        rows.append(_missing(name, candidate, before["candidates"][candidate]["status"], "not in this run"))
    return {"shape": name, "in_baseline": before is not None, "entries": rows}


def shape_changes(before: Json, bench: Json) -> str | None:
    """What makes this shape's numbers incomparable with the baseline's under the same name: its
    sizes, dtype, mode, or the timing mode (a graph replay and a cold call measure different things)."""
    then = {**before["shape"], **{k: before["config"].get(k) for k in ("dtype", "mode")}}
    then["timing mode"] = (before["config"].get("timing") or {}).get("mode")
    now = {**bench["shape"], **{k: bench.get(k) for k in ("dtype", "mode")}}
    now["timing mode"] = (bench.get("timing") or {}).get("mode")
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


def environment_differences(baseline_fp: Json, current_fp: Json, strict: Iterable[str]) -> list[Json]:
    """Fields that can move timings, baseline against now; `strict` ones make results incomparable."""
    strict = set(strict)
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
            differences.append({"field": field, "baseline": then, "current": now, "strict": field in strict})
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
    differences = environment_differences(baseline["fingerprint"], fingerprint, opts["strict"])
    blocking = [d["field"] for d in differences if d["strict"]]
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
    if entry["kind"] != "compared":
        return entry["kind"]  # new, missing, failed, unchanged, or incomparable for a changed shape
    if blocking:
        entry["reason"] = "environment differs from the baseline: " + ", ".join(blocking)
        return "incomparable"
    found = entry.pop("adjusted_verdict")
    if found == stats.TOO_FEW_ROUNDS:
        entry["reason"] = f"{stats.TOO_FEW_ROUNDS} to compare (fewer than {stats.MIN_ROUNDS} on a side)"
        return "undecided"
    return {"faster": "improvement", "slower": "regression"}.get(found, "unchanged")


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
        },
        "settings": {k: opts[k] for k in ("alpha", "threshold", "resolution", "strict")},
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


def gate(document: Json) -> tuple[int, str]:
    """Exit code and a one-line reason: an unusable baseline is 2, then any regression is 1, then any
    failed benchmark or comparison with too few rounds to decide is 2 (a gate that cannot tell does
    not pass); a crash is never counted as a regression."""
    counts = document["counts"]
    if not document["baseline"]["usable"]:
        return EXIT_UNUSABLE, f"baseline unusable: {document['baseline']['reason']}"
    if counts["regression"]:
        return EXIT_REGRESSION, f"{counts['regression']} regression(s)"
    if counts["failed"]:
        return EXIT_UNUSABLE, f"{counts['failed']} benchmark(s) failed in this run"
    if counts.get("undecided"):
        return EXIT_UNUSABLE, f"{counts['undecided']} comparison(s) had too few rounds to decide"
    return EXIT_OK, "no regression"


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
    lines += ["", "| " + " | ".join(VERDICTS) + " |", "|" + " ---: |" * len(VERDICTS)]
    lines.append("| " + " | ".join(str(counts[v]) for v in VERDICTS) + " |")
    regressions = [e for e in document["entries"] if e["verdict"] == "regression"]
    if regressions:
        lines += ["", "### Regressions", "", *_table(sorted(regressions, key=lambda e: e["speedup"]))]
    if document["environment_differences"]:
        lines += [
            "",
            "### Environment differences",
            "",
            "| field | baseline | now | makes results incomparable |",
        ]
        lines.append("| --- | --- | --- | --- |")
        for d in document["environment_differences"]:
            lines.append(
                f"| {d['field']} | {md(d['baseline'])} | {md(d['current'])} | {'yes' if d['strict'] else 'no'} |"
            )
    failed = [e for e in document["entries"] if e["verdict"] == "failed"]
    if failed:
        lines += ["", "### Failed in this run (not counted as regressions)", ""]
        lines += [
            f"- {md(e['shape'])} / {md(e['candidate'])}: {md(e['status'])}: {md(e['reason'])}" for e in failed
        ]
    lines += ["", f"<details><summary>All {len(document['entries'])} results</summary>", ""]
    lines += _table(document["entries"])
    lines += ["", "</details>", ""]
    return "\n".join(lines)
