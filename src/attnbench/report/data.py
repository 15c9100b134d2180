"""The report's facts: the result files read and validated, flattened into the summary table
(summary.csv, one row per shape and candidate) and the few run-wide facts the sections state.

The numbers the report prints are read or derived here, from the result files alone; the section
modules put them into words (counting and listing them at most).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench import headline, memory, quality
from attnbench.documents import (
    Analysis,
    CandidateResult,
    Comparison,
    ShapeChoice,
    ShapeComparisons,
    ShapeResult,
)
from attnbench.files import read_bench, read_comparisons, read_json, schema_file
from attnbench.plots import positive
from attnbench.results import Json, Status
from attnbench.workloads import describe_mask

SHAPE_FIELDS = ("batch", "heads", "kv_heads", "seq", "seq_kv", "dim", "causal")
COLUMNS = [
    "shape",
    "batch",
    "heads",
    "kv_heads",
    "seq",
    "seq_kv",
    "dim",
    "causal",
    "dtype",
    "mode",
    "device",
    "gpu_index",
    "gpu_uuid",
    "timing_mode",
    "candidate",
    "status",
    "reason",
    "median_ms",
    "ci95_lo_ms",
    "ci95_hi_ms",
    "rel_ci",
    "target_rel_ci",
    "target_met",
    "n_samples",
    "tflops",
    "fraction_of_matmul_ceiling",
    "bandwidth_gbs",
    "fraction_of_copy_ceiling",
    "fraction_of_bound",
    "bound_limited_by",
    "intensity",
    "peak_mem_mb",
    "workspace_mb",
    "output_mb",
    "inputs_mb",
    "allocations",
    "reserved_growth_mb",
    "saved_mb",
    "backward_workspace_mb",
    "projected_mb",
    "device_total_mb",
    "oom_risk",
    "rel_error",  # of the worst output: ||got - want|| / ||want|| against float64
    # the accuracy metrics (bench's, on the first input set), each at its worst over the outputs
    "max_abs_error",
    "worst_row_error",
    "worst_row",  # where: the output, row, head and batch
    "cosine",
    "outside_fraction",  # elements beyond the dtype's atol + rtol bound
    "error_vs_reference",  # rel_error over the shape's reference's on the same inputs (its yardstick)
    "declared_tolerance",  # ok only by it: an approximate result, ranked apart (never "fastest")
    "pareto_front",  # on its shape, no other ok result is both faster and more accurate
    "bitwise_repeatable",
    "remeasured_without",  # measured again without these candidates, caught after sampling
    "max_abs_diff",
    "kernels_per_call",
    "streams",
    "device_share",
    "kernels",
    "reference",
    # the comparison with the reference: the speedup, and its interval at `confidence`, adjusted p and
    # verdict corrected across the run (autotune.json; the compare file's own where it has none)
    "speedup",
    "speedup_ci_lo",
    "speedup_ci_hi",
    "confidence",
    "hedges_g",
    "cliffs_delta",
    "p_value",  # the compare file's, uncorrected
    "significant",  # the compare file's: its interval lies outside the resolution band, uncorrected
    "p_adjusted",
    "verdict",
    "rounds",
    "rounds_to_decide",  # the compare file's: about how many rounds in all would decide it
    "seconds_to_decide",  # about how many seconds more sampling those rounds take on the shape
    "fastest",
    "setup_ms",
    "compile_ms",
    "attention",  # the shape's mask and sequence structure in words (workloads.describe_mask)
    "dim_v",
    "dense_mask_work",  # SDPA given a dense attn_mask or a padded batch: its pairs over those the mask lets through
    "layout",  # how the candidate got q, k, v: bhsd, bshd, thd (SDPA: nested tensors), paged, padded, pool
]


@dataclass
class Run:
    """The report's inputs, validated, and the summary table built from them."""

    benches: list[ShapeResult]
    compares: list[ShapeComparisons]
    fingerprint: Json
    ceilings: Json
    analysis: Analysis  # autotune.json
    frame: pd.DataFrame
    summary: Json  # headline.summarize: the answer the report leads with
    growth: Json  # memory.growth: per candidate, the exponent of its workspace against seq
    provenance: Json = field(default_factory=dict)  # `provenance`: which checkout measured which shapes


def read_run(
    bench_paths: list[str],
    compare_paths: list[str],
    fingerprint_path: str,
    ceilings_path: str,
    autotune_path: str,
    *,
    schema_dir: str | Path | None,
) -> Run:
    """The run's result files, each validated against its schema in `schema_dir` (None: the package's)."""
    schemas = None if schema_dir is None else Path(schema_dir)
    benches = [read_bench(p, schemas) for p in bench_paths]
    compares = [read_comparisons(p, schemas) for p in compare_paths]
    ceilings = read_json(ceilings_path, schema_file(schemas, "ceilings"))
    analysis = Analysis.from_json(read_json(autotune_path, schema_file(schemas, "autotune")))
    fingerprint = read_json(fingerprint_path, schema_file(schemas, "fingerprint"))
    return Run(
        benches=benches,
        compares=compares,
        fingerprint=fingerprint,
        ceilings=ceilings,
        analysis=analysis,
        frame=summary_frame(benches, compares, ceilings, analysis),
        summary=headline.summarize(benches, compares, analysis),
        growth=memory.growth(benches),
        provenance=provenance(benches, fingerprint),
    )


def provenance(benches: list[ShapeResult], fingerprint: Json) -> Json:
    """Which checkout measured which shapes: the bench files grouped by the commit, dirty flag and
    diff digest they record (provenance.git), in run order, each with its label; whether the report
    must say so (`several` checkouts, or one `elsewhere` than the fingerprint's, which the Environment
    section names); and the shapes whose files carry no content digest (`unverified`: written before
    digests, read with their numbers checked against each other only)."""
    groups: dict[str, Json] = {}
    for bench in benches:
        git = (bench.provenance or {}).get("git")
        label = git_commit(git) if git is not None else "not recorded (written before provenance)"
        groups.setdefault(label, {"label": label, "recorded": git is not None, "shapes": []})
        groups[label]["shapes"].append(bench.name)
    current = git_commit(fingerprint["git"])
    recorded = [group for group in groups.values() if group["recorded"]]
    return {
        "groups": list(groups.values()),
        "current": current,
        "several": len(recorded) > 1,
        "elsewhere": any(group["label"] != current for group in recorded),
        "unverified": [bench.name for bench in benches if not bench.verified],
    }


def git_commit(git: Json) -> str:
    """A checkout as the report names it: the commit, whether dirty and the diff's digest."""
    if git["commit"] is None:
        return f"unknown: {git.get('reason') or 'not recorded'}"
    if not git["dirty"]:
        return git["commit"]
    diff = git.get("diff_digest")
    return f"{git['commit']} (dirty{f', diff {diff[:19]}' if diff else ''})"


def summary_frame(
    benches: list[ShapeResult],
    compares: list[ShapeComparisons],
    ceilings: Json | None = None,
    analysis: Analysis | None = None,
) -> pd.DataFrame:
    """One row per (shape, candidate): the bench numbers, ceiling fractions and the comparison with
    the reference (`_comparison`: corrected across the run in `analysis`, autotune.json). The one
    flattening of the documents: the report's summary.csv, and the Python API's frame (without
    ceilings or a run-wide analysis: no fractions, each comparison its shape's own)."""
    ceilings = ceilings or {"matmul": {}, "copy": {}}
    adjusted = {} if analysis is None else analysis.corrected
    comparisons = {
        (compare.shape, name): comp for compare in compares for name, comp in compare.with_reference().items()
    }
    references = {c.shape: c.reference for c in compares}
    winners = {} if analysis is None else {name: _picked(s) for name, s in analysis.shapes.items()}
    copy_gbs = positive(ceilings["copy"].get("gbytes_per_s"))
    rows: list[Json] = []
    for bench in benches:
        shape = bench.shape
        matmul = positive(ceilings["matmul"].get(bench.dtype, {}).get("tflops"))
        for name, cand in bench.candidates.items():
            median = cand.median_ms
            lo, hi = cand.ci95_ms or (None, None)
            bandwidth = bench.min_bytes / (median / 1e3) / 1e9 if median is not None and median > 0 else None
            comparison = _comparison(
                comparisons.get((bench.name, name)), adjusted.get((bench.name, name)), bench
            )
            repeat, ran, footprint = cand.deterministic, cand.ran, cand.footprint
            rows.append(
                {
                    "shape": bench.name,
                    **{key: shape[key] for key in SHAPE_FIELDS},
                    "dtype": bench.dtype,
                    "mode": bench.mode,
                    "device": bench.device,
                    # Which GPU: with one job per GPU, the shapes of a run can be spread over several.
                    "gpu_index": bench.device_info.get("index"),
                    "gpu_uuid": bench.device_info.get("uuid"),
                    "timing_mode": bench.timing["mode"],
                    "candidate": name,
                    "status": cand.status,
                    "reason": cand.reason,
                    "median_ms": median,
                    "ci95_lo_ms": lo,
                    "ci95_hi_ms": hi,
                    "rel_ci": cand.rel_ci,
                    "target_rel_ci": bench.timing["target_rel_ci"],
                    "target_met": cand.target_met,
                    "n_samples": len(cand.samples_ms),
                    "tflops": cand.tflops,
                    "fraction_of_matmul_ceiling": _ratio(cand.tflops, matmul),
                    "bandwidth_gbs": bandwidth,
                    "fraction_of_copy_ceiling": _ratio(bandwidth, copy_gbs),
                    "fraction_of_bound": cand.fraction_of_bound,
                    "bound_limited_by": None if bench.bound is None else bench.bound.limited_by,
                    "intensity": bench.flops / bench.min_bytes if bench.min_bytes else None,
                    "peak_mem_mb": cand.peak_mem_mb,
                    "workspace_mb": footprint.get("workspace_mb"),
                    "output_mb": footprint.get("output_mb"),
                    "inputs_mb": footprint.get("inputs_mb"),
                    "allocations": footprint.get("allocations"),
                    "reserved_growth_mb": footprint.get("reserved_growth_mb"),
                    "saved_mb": footprint.get("saved_mb"),
                    "backward_workspace_mb": (footprint.get("backward") or {}).get("workspace_mb"),
                    "projected_mb": footprint.get("projected_mb"),
                    "device_total_mb": bench.device_total_mb,
                    "oom_risk": cand.oom_risk,
                    "rel_error": cand.rel_error,
                    **_accuracy(cand),
                    "declared_tolerance": cand.declared_tolerance,
                    "error_vs_reference": _error_ratio(
                        cand, bench.candidates.get(references.get(bench.name, ""))
                    ),
                    "bitwise_repeatable": repeat.get("identical"),
                    # measured again without candidates caught after sampling (bench.remeasure_without_cheats)
                    "remeasured_without": ";".join(cand.remeasured) or None,
                    "max_abs_diff": repeat.get("max_abs_diff"),
                    "kernels_per_call": ran.get("kernels_per_call"),
                    "streams": ran.get("streams"),
                    "device_share": ran.get("device_share"),
                    "kernels": ";".join(k["name"] for k in ran.get("kernels", [])) or None,
                    "reference": references.get(bench.name),
                    **comparison,
                    "fastest": winners.get(bench.name) == name,
                    # a factory kernel's prepare, then the first call: both outside the samples
                    "setup_ms": cand.setup_ms,
                    "compile_ms": cand.compile_ms,
                    "attention": describe_mask(shape),
                    "dim_v": shape.get("dim_v", shape["dim"]),
                    "dense_mask_work": cand.dense_mask_work,
                    "layout": cand.layout,
                }
            )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.assign(pareto_front=pareto_front(frame))


def pareto_front(frame: pd.DataFrame) -> pd.Series:
    """Per row, whether its result is on its shape's front of time against error: ok, with a median
    and an error, and no other such result on the shape both at least as fast and more accurate, or
    faster and as accurate (None where the row has no such result)."""
    on_front = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    timed = frame[(frame["status"] == Status.OK) & frame["median_ms"].notna() & frame["rel_error"].notna()]
    for _, rows in timed.groupby("shape", sort=False):
        time, error = rows["median_ms"].to_numpy(float), rows["rel_error"].to_numpy(float)
        for index, t, e in zip(rows.index, time, error):
            dominated = ((time <= t) & (error < e)) | ((time < t) & (error <= e))
            on_front[index] = not dominated.any()
    return on_front


def _comparison(comp: Comparison | None, corrected: Comparison | None, bench: ShapeResult) -> Json:
    """summary.csv's columns of one comparison with the reference: the compare file's speedup, effect
    sizes, p-value and rounds; the interval, its confidence, the adjusted p and the verdict from one
    object, the run-wide correction (autotune.json) where it has the comparison, else the compare
    file's own; and what an undecided comparison would need (quality.to_decide)."""
    if comp is None:
        return {key: None for key in COMPARISON_COLUMNS}
    source = corrected or comp
    lo, hi = source.speedup_ci or (None, None)
    need = quality.to_decide(comp, bench) or {}
    return {
        "speedup": comp.speedup,
        "speedup_ci_lo": lo,
        "speedup_ci_hi": hi,
        "confidence": source.confidence,
        "hedges_g": comp.hedges_g,
        "cliffs_delta": comp.cliffs_delta,
        "p_value": comp.p_value,
        "significant": comp.significant,
        "p_adjusted": source.p_adjusted,
        "verdict": source.verdict,
        "rounds": comp.rounds,
        "rounds_to_decide": comp.rounds_to_decide,
        "seconds_to_decide": need.get("seconds"),
    }


COMPARISON_COLUMNS = COLUMNS[COLUMNS.index("speedup") : COLUMNS.index("fastest")]


def plot_frame(frame: pd.DataFrame, analysis: Analysis) -> pd.DataFrame:
    """The summary table as the plots draw it: a kernel with configurations (autotune.json) is one
    candidate, "kernel (fastest configuration)", on each shape the row of its fastest configuration
    there (of its first configuration where none ran ok), so that 40 configurations do not make 40
    legend entries and heatmap columns. summary.csv keeps every row."""
    if not analysis.families:
        return frame
    keep = pd.Series(True, index=frame.index)
    names = frame["candidate"].copy()
    for family in analysis.families:
        members = frame["candidate"].isin(family.configurations)
        chosen = {s.shape: _picked(s) for s in family.shapes}
        for shape, rows in frame[members].groupby("shape", sort=False):
            pick = chosen.get(shape) or rows["candidate"].iloc[0]
            keep[rows.index] = rows["candidate"] == pick
        names[members] = f"{family.family} (fastest configuration)"
    return frame.assign(candidate=names)[keep].reset_index(drop=True)


def _accuracy(cand: CandidateResult) -> Json:
    """A candidate's accuracy columns: each metric at its worst over its outputs (the largest errors,
    the smallest cosine), the worst row named with its output; empty cells where it was not checked."""
    outputs = cand.accuracy.items()
    if not outputs:
        return dict.fromkeys(ACCURACY_COLUMNS)
    worst_name, worst = max(outputs, key=lambda item: item[1]["worst_row_error"])
    return {
        "max_abs_error": max(m["max_abs_error"] for _, m in outputs),
        "worst_row_error": worst["worst_row_error"],
        "worst_row": None if worst["worst_row"] is None else f"{worst_name}: {worst['worst_row']}",
        "cosine": min(m["cosine"] for _, m in outputs),
        "outside_fraction": max(m["outside_fraction"] for _, m in outputs),
    }


ACCURACY_COLUMNS = COLUMNS[COLUMNS.index("max_abs_error") : COLUMNS.index("error_vs_reference")]


def _error_ratio(cand: CandidateResult, reference: CandidateResult | None) -> float | None:
    """The candidate's norm-wise error over the reference's on the same inputs (1 for the reference)."""
    if reference is None or reference.status != Status.OK or cand.rel_error is None or not reference.rel_error:
        return None
    return cand.rel_error / reference.rel_error


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    return value / ceiling if value is not None and ceiling is not None else None


def _picked(choice: ShapeChoice) -> str | None:
    return None if choice.fastest is None else choice.fastest.candidate


def first_text(
    benches: list[ShapeResult], candidate: str, key: str, status: str | None = None, reason: Any = None
) -> str:
    """The first text under `key` (reason_detail, traceback) of a candidate's results, optionally of
    one (status, reason) group only; empty when no file has it."""
    for bench in benches:
        result = bench.candidates.get(candidate)
        if result is None or (status is not None and (result.status, result.reason) != (status, reason)):
            continue
        if result.text(key):
            return result.text(key)
    return ""
