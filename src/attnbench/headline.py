"""The run's answer in a few lines: per shape the fastest correct candidate and how much faster than
the reference it is, how many shapes each candidate wins or ties, what failed, and what cannot run.

The report leads with it and the command line prints it at the end of a run, so the analysis lives
here once, on the result files alone; rendering (attnbench.report, `terminal`) only formats it. The fastest
candidate and its ties are autotune's (autotune.json, or autotune.analyse when the step has not run),
the speedups the compare files', their intervals and verdicts corrected across the run (autotune's
stats.adjust) where known, else the compare file's own: each from the same object, so a verdict
never contradicts the interval beside it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from attnbench import quality
from attnbench.documents import Analysis, ShapeChoice, ShapeComparisons, ShapeResult
from attnbench.formatting import DASH, clip, interval, speedup_interval
from attnbench.results import FAILURES, Json, Status
from attnbench.stats import TOO_FEW_ROUNDS
from attnbench.usercode import BUILTIN, CandidateName

MAX_TERMINAL_FAILURES = 20
SIGNIFICANT_MARK = "*"  # significantly faster or slower than the reference (corrected where known)
# A shape's fastest approximate result, beside its fastest exact one (docs/kernels.md, tolerance)
APPROXIMATE_LINE = (
    "faster with approximations: {candidate} {median_ms:.4g} ms (declared tolerance {declared:g})"
)


def summarize(
    benches: list[ShapeResult], compares: list[ShapeComparisons], autotune: Analysis | None
) -> Json:
    """The headline of a run as a JSON-able dict (see the module docstring).

    `autotune` is autotune.json's document; without it the ties are computed here by
    autotune.analyse, so a run interrupted before that step still gets a headline.
    """
    from attnbench import autotune as autotune_step  # scipy: not for printing a stored headline

    if autotune is None and benches:
        autotune = Analysis.from_json(autotune_step.analyse(benches, compares))
    chosen = {} if autotune is None else autotune.shapes
    corrected = {} if autotune is None else autotune.corrected
    references = {c.shape: c.reference for c in compares}
    against_reference = {
        (compare.shape, name): comp for compare in compares for name, comp in compare.with_reference().items()
    }

    def comparison(shape: str, candidate: str) -> Json:
        """The candidate against the shape's reference: speedup, interval, verdict (corrected where
        known), the interval and the verdict from one object."""
        if candidate == references.get(shape):
            return {**_NO_COMPARISON, "speedup": 1.0, "significant": False, "verdict": "reference"}
        comp = against_reference.get((shape, candidate))
        if comp is None:
            return _NO_COMPARISON
        source = corrected.get((shape, candidate)) or comp
        return {
            "speedup": comp.speedup,
            "ci": None if source.speedup_ci is None else list(source.speedup_ci),
            "confidence": source.confidence,
            "significant": source.verdict in ("faster", "slower"),
            "verdict": source.verdict,
        }

    shapes, rows = [], []
    for bench in benches:
        name = bench.name
        fastest, tied = _fastest_and_ties(bench, chosen.get(name))
        head = _NO_COMPARISON if fastest is None else comparison(name, fastest)
        approximate = _fastest_approximate(bench, fastest)
        shapes.append(
            {
                "shape": name,
                "fastest": fastest,
                **head,
                "versus": _versus_builtin(chosen.get(name), fastest),
                "fraction_of_bound": None if fastest is None else bench.candidates[fastest].fraction_of_bound,
                "tied": tied,
                "approximate": approximate,
            }
        )
        cells = {}
        for candidate, result in bench.candidates.items():
            cells[candidate] = {
                "status": result.status,
                "reason": result.reason,
                "median_ms": result.median_ms,
                "rel_error": result.rel_error,
                "declared_tolerance": result.declared_tolerance,  # an approximate result: said so
                "fastest": candidate == fastest,
                "tied": candidate in tied,
                **(comparison(name, candidate) if result.status == Status.OK else _NO_COMPARISON),
            }
        rows.append({"shape": name, "reference": references.get(name), "cells": cells})

    unavailable = _unavailable(benches)
    return {
        "reference": _one_reference(references.values()),
        "family": None if autotune is None else autotune.family,
        "shapes": shapes,
        "candidates": _tally(benches, shapes),
        "failures": [
            {"shape": bench.name, "candidate": name, "status": c.status, "reason": c.reason}
            for bench in benches
            for name, c in bench.candidates.items()
            if c.status in FAILURES
        ],
        "unavailable": unavailable,
        "recommendations": [
            {
                "family": family.family,
                "configurations": len(family.configurations),
                **(family.recommendation or {"reason": family.reason}),
            }
            for family in (() if autotune is None else autotune.families)
        ],
        "matrix": {
            "candidates": [c for c in _candidate_names(benches) if c not in unavailable],
            "rows": rows,
        },
    }


_NO_COMPARISON: Json = {"speedup": None, "ci": None, "confidence": None, "significant": None, "verdict": None}


def _fastest_and_ties(bench: ShapeResult, chosen: ShapeChoice | None) -> tuple[str | None, list[str]]:
    """Autotune's pick for the shape, or autotune.fastest when autotune.json does not cover it."""
    if chosen is None:
        from attnbench import autotune as autotune_step

        return autotune_step.fastest(bench), []
    return None if chosen.fastest is None else chosen.fastest.candidate, [r.candidate for r in chosen.ties()]


def _versus_builtin(choice: ShapeChoice | None, fastest: str | None) -> Json | None:
    """The fastest against the best other built-in (the fastest built-in rival that ran ok): "how much
    faster than what PyTorch already has", where the reference is often the naive `math` ("26x"). From
    autotune's comparison of that rival with the fastest, corrected across the run, turned around. None
    without a built-in rival (or before autotune ran on the shape)."""
    if choice is None or fastest is None:
        return None
    builtins = [
        r
        for r in choice.rivals
        if r.candidate != fastest and CandidateName.parse(r.candidate).family in BUILTIN
    ]
    if not builtins:
        return None
    best = min(builtins, key=lambda r: r.median_ms)
    rival = best.comparison
    lo, hi = rival.speedup_ci or (None, None)
    turned = {"faster": "slower", "slower": "faster"}
    return {
        "baseline": best.candidate,
        "speedup": None if not rival.speedup else 1.0 / rival.speedup,
        "ci": None if not (lo and hi) else [1.0 / hi, 1.0 / lo],
        "confidence": rival.confidence,
        "significant": rival.verdict in turned,
        "verdict": turned.get(rival.verdict, rival.verdict),
    }


def _fastest_approximate(bench: ShapeResult, fastest: str | None) -> Json | None:
    """The fastest approximate result (ok only by its declared tolerance) of a shape, where it beats
    the fastest exact one: the headline names it apart ("faster with approximations")."""
    approximate = [
        c
        for c in bench.candidates.values()
        if c.status == Status.OK and c.declared_tolerance is not None and c.median_ms is not None
    ]
    if not approximate:
        return None
    best = min(approximate, key=lambda c: c.median_ms)
    exact = None if fastest is None else bench.candidates[fastest].median_ms
    if exact is not None and best.median_ms >= exact:
        return None
    return {"candidate": best.name, "median_ms": best.median_ms, "declared": best.declared_tolerance}


def _one_reference(references: Iterable[str]) -> str | None:
    names = list(dict.fromkeys(references))
    return names[0] if len(names) == 1 else (", ".join(names) or None)


def _candidate_names(benches: list[ShapeResult]) -> list[str]:
    """Every candidate of the run, in the order the bench files first list them."""
    return list(dict.fromkeys(name for bench in benches for name in bench.candidates))


def _tally(benches: list[ShapeResult], shapes: list[Json]) -> Json:
    tally = {
        name: {"wins": 0, "ties": 0, "ok": 0, "unsupported": 0, "failed": 0}
        for name in _candidate_names(benches)
    }
    for shape in shapes:
        if shape["fastest"] is not None:
            tally[shape["fastest"]]["wins"] += 1
        for name in shape["tied"]:
            tally[name]["ties"] += 1
    for bench in benches:
        for name, result in bench.candidates.items():
            status = result.status
            if status in (Status.OK, Status.UNSUPPORTED):
                tally[name][status] += 1
            elif status in FAILURES:
                tally[name]["failed"] += 1
    return tally


def _unavailable(benches: list[ShapeResult]) -> dict[str, str]:
    """Candidates unsupported on every shape for one same reason: they cannot run here at all
    (e.g. a CUDA-only backend on the CPU), one line each instead of one row per shape."""
    reasons: dict[str, set[str | None]] = {}
    for bench in benches:
        for name, result in bench.candidates.items():
            reasons.setdefault(name, set()).add(
                result.reason if result.status == Status.UNSUPPORTED else _RAN
            )
    return {
        name: str(next(iter(found)))
        for name, found in reasons.items()
        if len(found) == 1 and _RAN not in found and None not in found
    }


_RAN = "\0ran"  # a marker no reason can equal: the candidate was not unsupported on some shape


def failed(summary: Json) -> list[Json]:
    """The run's failures (shape, candidate, status, reason): a non-empty list means a non-zero exit."""
    return list(summary["failures"])


def load(results: Path = Path("results")) -> Json:
    """`summarize` over whatever result files exist under `results` (bench/, compare/,
    report/autotune.json): a partial or interrupted run gets a headline of what it has. The report
    job's report/headline.json is that summary already, when it covers the same shapes and is newer
    than every result: read, not recomputed (scipy's import and the analysis cost the end of every
    run 2 s)."""
    results = Path(results)
    bench_paths = sorted((results / "bench").glob("*.json"))
    compare_paths = sorted((results / "compare").glob("*.json"))
    stored = results / "report" / "headline.json"
    autotune_path = results / "report" / "autotune.json"
    if stored.is_file() and stored.stat().st_mtime >= _newest(bench_paths + compare_paths + [autotune_path]):
        summary = _read(stored)
        if {s["shape"] for s in summary["shapes"]} == {p.stem for p in bench_paths}:
            return summary
    benches = [ShapeResult.from_json(_read(p)) for p in bench_paths]
    shapes = {b.name for b in benches}
    compares = [c for c in (ShapeComparisons.from_json(_read(p)) for p in compare_paths) if c.shape in shapes]
    autotune = Analysis.from_json(_read(autotune_path)) if autotune_path.is_file() else None
    if autotune is not None and (
        set(autotune.shapes) != shapes
        or autotune_path.stat().st_mtime < max((p.stat().st_mtime for p in bench_paths), default=0)
    ):
        autotune = None  # another set of shapes, or older than a shape measured since: recompute, never mix
    return summarize(_run_order(benches, autotune), compares, autotune)


def _newest(paths: list[Path]) -> float:
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def _read(path: Path) -> Json:
    return json.loads(path.read_text(encoding="utf-8"))


def _run_order(benches: list[ShapeResult], autotune: Analysis | None) -> list[ShapeResult]:
    """The shapes in the config's order, which autotune.json keeps; without it, in the order the
    bench files were written."""
    if autotune is not None:
        order = {shape: i for i, shape in enumerate(autotune.shapes)}
        return sorted(benches, key=lambda b: order[b.name])
    return sorted(benches, key=lambda b: b.created or "")


def speedup_text(
    speedup: Any, ci: list[float] | None, significant: bool | None, verdict: str | None = None
) -> str:
    """`2.31× [2.25, 2.38] *`: the speedup, its interval, and the mark when it is significant; a
    comparison with too few rounds says so instead of a number."""
    if verdict == TOO_FEW_ROUNDS:
        return TOO_FEW_ROUNDS
    lo, hi = ci or (None, None)
    text = speedup_interval(speedup, lo, hi)
    return f"{text} {SIGNIFICANT_MARK}" if significant else text


def versus_text(shape: Json, reference: str | None, *, bound: bool = True, need: str | None = None) -> str:
    """`1.31× [1.25, 1.38] * vs cudnn, 62% of bound`: the fastest against the best other built-in,
    or against the reference where no other built-in ran ok; then how close it is to the bound
    (`bound`; the report gives it a column). `need`: what would decide a comparison of too few rounds
    against the reference (the report's)."""
    versus = shape.get("versus")
    if versus is not None:
        text = speedup_text(versus["speedup"], versus["ci"], versus["significant"], versus["verdict"])
        text += f" vs {versus['baseline']}"
    else:
        text = speedup_text(shape["speedup"], shape["ci"], shape["significant"], shape["verdict"])
        if shape["verdict"] == TOO_FEW_ROUNDS and need:
            text += f" ({need})"
        text += f" vs {reference or 'the reference'} (the reference)"
    if bound and shape.get("fraction_of_bound") is not None:
        text += f", {shape['fraction_of_bound']:.0%} of bound"
    return text


def confidence_text(summary: Json) -> str:
    """How sure the headline's intervals are: `99.8% intervals, corrected for the run's 24 comparisons`."""
    shown = [s.get("versus") or s for s in summary["shapes"]]  # what each shape's line prints
    levels = {s["confidence"] for s in shown if s.get("ci") is not None}
    if not levels:
        return "no intervals"
    level = (
        quality.level(min(levels))
        if len(levels) == 1
        else f"{quality.level(min(levels))} to {quality.level(max(levels))}"
    )
    family = summary.get("family")
    corrected = f", corrected for the run's {family} comparisons" if family and family > 1 else ""
    return f"{level} intervals{corrected}"


def _family_sizes(summary: Json) -> Counter[str]:
    """How many configurations each kernel has in the run (1 for a kernel without a grid)."""
    return Counter(CandidateName.parse(name).family for name in summary["candidates"])


def terminal(summary: Json, report: Path | None = None) -> str:
    """A short plain-text headline for the end of a run (at most about 100 columns)."""
    if not summary["shapes"]:
        return "no shape measured yet" + (f"\nreport: {report}" if report is not None else "")
    lines = [f"fastest correct candidate per shape (speedup vs the best other built-in [interval]; "
             f"{SIGNIFICANT_MARK} significant;", f"  {confidence_text(summary)}; % of the attainable bound):"]  # fmt: skip
    width = max((len(s["shape"]) for s in summary["shapes"]), default=0)
    fastest_width = max((len(s["fastest"] or "") for s in summary["shapes"]), default=0)
    for shape in summary["shapes"]:
        if shape["fastest"] is None:
            lines.append(f"  {shape['shape']:<{width}}  {DASH} nothing timed ok within the dtype's tolerance")
        else:
            ties = f"  (tied: {', '.join(shape['tied'])})" if shape["tied"] else ""
            lines.append(
                f"  {shape['shape']:<{width}}  {shape['fastest']:<{fastest_width}}  {versus_text(shape, summary['reference'])}{ties}"
            )
        if approximate := shape.get("approximate"):  # ranked apart, never mixed with the exact results
            lines.append(clip(f"  {'':<{width}}  {APPROXIMATE_LINE.format(**approximate)}"))
    shown: dict[str, Json] = {}
    sizes = _family_sizes(summary)
    for name, t in summary["candidates"].items():  # a kernel's configurations on one line
        if name not in summary["unavailable"]:
            family = CandidateName.parse(name).family
            key = f"{family} ({sizes[family]} configurations)" if sizes[family] > 1 else name
            total = shown.setdefault(key, {"wins": 0, "ties": 0, "failed": 0})
            for field in total:
                total[field] += t[field]
    lines.append("candidates: shapes won, tied, failed")
    width = max(map(len, shown), default=0)
    lines += [
        clip(f"  {name:<{width}}  {t['wins']} won, {t['ties']} tied, {t['failed']} failed")
        for name, t in shown.items()
    ]
    for rec in summary.get("recommendations", []):
        if "candidate" not in rec:
            lines.append(
                clip(f"one configuration of {rec['family']} for every shape: none ({rec['reason']})")
            )
            continue
        lo, hi = rec["worst_slowdown_ci"] or (None, None)
        lines.append(clip(f"one configuration of {rec['family']} for every shape:"))
        lines.append(
            clip(
                f"  {rec['candidate'][len(rec['family']) :]}  at worst {interval(rec['worst_slowdown'], lo, hi, '×')}"
                f" the fastest's time (on {rec['worst_shape']})"
            )
        )
    failures = summary["failures"]
    if failures:
        # One finding per candidate, status and reason, with the shapes it hit: a kernel that crashes
        # on every shape is one entry whose reason is readable, not a screen of clipped copies.
        groups: dict[tuple[str, str, str], list[str]] = {}
        for f in failures:
            groups.setdefault((f["candidate"], f["status"], f["reason"] or "no reason recorded"), []).append(
                f["shape"]
            )
        lines.append(f"failures ({len(failures)} results):")
        for (candidate, status, reason), shapes in list(groups.items())[:MAX_TERMINAL_FAILURES]:
            where = shapes[0] if len(shapes) == 1 else f"{len(shapes)} shapes ({', '.join(shapes)})"
            lines += [clip(f"  {candidate}  {status} on {where}"), clip(f"    {reason}")]
        if len(groups) > MAX_TERMINAL_FAILURES:
            lines.append(f"  and {len(groups) - MAX_TERMINAL_FAILURES} more")
    for name, reason in summary["unavailable"].items():
        lines.append(clip(f"unavailable here: {name}: {reason}"))
    if report is not None:
        lines.append(f"report: {report}")
    return "\n".join(lines)
