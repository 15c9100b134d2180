"""Results per shape: every candidate's numbers on each shape, and what the built-ins were given."""

from __future__ import annotations

from typing import Any

import pandas as pd

from attnbench import formatting, headline
from attnbench.candidates import JAGGED_BACKENDS
from attnbench.formatting import DASH, interval, num, pct, pm
from attnbench.report.data import SHAPE_FIELDS
from attnbench.report.model import Block, Heading, Para, Section, Table
from attnbench.report.render import prose
from attnbench.report.words import FLAG, distinct, intervals, speedup, to_decide
from attnbench.results import Status
from attnbench.workloads import PADDED, POOL


def results_section(frame: pd.DataFrame, family: int | None = None) -> Section:
    """Per shape, every candidate's numbers; secondary columns (matmul share, peak memory, effect
    sizes, what ran) are in summary.csv, so that each table fits a laptop's window."""
    intro = prose(
        "results",
        targets=distinct(pm(t) for t in frame["target_rel_ci"].dropna()),
        intervals=intervals(frame["confidence"].dropna(), family),
        mark=headline.SIGNIFICANT_MARK,
    )
    blocks: list[Block] = [Para(intro)]
    decide = to_decide(frame)
    for shape, rows in frame.groupby("shape", sort=False):
        first = rows.iloc[0]
        dims = ", ".join(f"{f}={first[f]}" for f in SHAPE_FIELDS if f != "causal")
        reference = first["reference"]
        blocks.append(Heading(3, f"{shape} ({dims}, {first['attention']})"))
        blocks += how_given(rows) + _remeasured(rows)
        body = []
        flagged: set[tuple[int, int]] = set()
        for r, row in enumerate(rows.itertuples(index=False)):
            if _missed(row.target_met):
                flagged.add((r, 3))
            if row.candidate == reference:
                said, p_adjusted = "reference", DASH
            else:
                lo, hi = row.speedup_ci_lo, row.speedup_ci_hi
                said = speedup(
                    row.speedup,
                    None if formatting.missing(lo) else [lo, hi],
                    row.verdict in ("faster", "slower"),
                    row.verdict,
                    decide.get((row.shape, row.candidate)),
                )
                p_adjusted = num(row.p_adjusted, 2)
            body.append(
                [
                    f"{row.candidate} (fastest)" if row.fastest else str(row.candidate),
                    _status(row.status, row.declared_tolerance),
                    interval(row.median_ms, row.ci95_lo_ms, row.ci95_hi_ms),
                    _precision(row.rel_ci, row.target_rel_ci, row.target_met),
                    _throughput(row.tflops, row.bandwidth_gbs),
                    _bound(row.fraction_of_bound, row.bound_limited_by),
                    _error(row.rel_error, None if row.candidate == reference else row.error_vs_reference),
                    _workspace(row.workspace_mb, row.allocations),
                    said,
                    p_adjusted,
                ]
            )
        headers = [
            "candidate",
            "status",
            "median ms [95% CI]",
            "± (95% CI)",
            "TFLOP/s (GB/s)",
            "% of bound",
            "error (× the reference's)",
            "workspace MB (allocs)",
            f"speedup vs {reference or 'reference'} [interval]",
            "p (adjusted)",
        ]
        blocks.append(
            Table(
                headers,
                body,
                numeric={2, 3, 4, 5, 6, 7, 8, 9},
                status_col=1,
                highlight=list(rows["fastest"]),
                flagged=flagged,
            )
        )
    return Section("Results per shape", blocks)


def _missed(target_met: Any) -> bool:
    """False, not merely falsy: None (no timing) and NaN (no value in the frame) are not misses."""
    return target_met is not None and not pd.isna(target_met) and not target_met


def _precision(rel_ci: Any, target: Any, target_met: Any) -> str:
    """`±0.8%`, and a missed target flagged beside it (never rounded into looking met)."""
    if rel_ci is None or pd.isna(rel_ci):
        return DASH
    text = pm(rel_ci)
    if not _missed(target_met):
        return text
    goal = DASH if target is None or pd.isna(target) else pm(target)
    if text == goal:  # 1.04% against 1%: rounding must not make a miss look like a hit
        text = pm(rel_ci, 2)
    return f"{text} ({FLAG} target {goal} missed)"


def _throughput(tflops: Any, gbytes_per_s: Any) -> str:
    """TFLOP/s and, for the memory-bound (decode), GB/s of the bytes a call must move."""
    return DASH if pd.isna(tflops) else f"{num(tflops)} ({num(gbytes_per_s)})"


def _status(status: Any, declared_tolerance: Any) -> str:
    """The status, and for an approximate result the tolerance it declared: never read as exact."""
    if formatting.missing(declared_tolerance):
        return str(status)
    return f"{status} (approximate, declared {declared_tolerance:g})"


def _error(rel_error: Any, versus_reference: Any) -> str:
    """The norm-wise error, and beside it how many times the reference's on the same inputs it is."""
    text = num(rel_error, 2)
    return text if formatting.missing(versus_reference) else f"{text} ({num(versus_reference, 2)}×)"


def _bound(fraction: Any, limited_by: Any) -> str:
    """The share of the shape's attainable bound, and which roof binds it."""
    return DASH if pd.isna(fraction) else f"{pct(fraction)} ({limited_by})"


def _workspace(workspace_mb: Any, allocations: Any) -> str:
    """`36.0 (12)`: the call's workspace in MB and its allocations; a dash where not measured."""
    if formatting.missing(workspace_mb):
        return DASH
    return (
        f"{num(workspace_mb)} ({int(allocations)})"
        if not formatting.missing(allocations)
        else num(workspace_mb)
    )


def _remeasured(rows: pd.DataFrame) -> list[Para]:
    """Which candidates were measured again without others caught after sampling, and why."""
    again = rows[rows["remeasured_without"].notna()]
    said = [
        prose("remeasured", candidates=", ".join(group["candidate"]), without=without.replace(";", ", "))
        for without, group in again.groupby("remeasured_without", sort=False)
    ]
    return [Para(" ".join(said))] if said else []


def how_given(rows: pd.DataFrame) -> list[Para]:
    """What SDPA and flex were given for this shape's mask or cache, and the work SDPA wastes, per way
    it was given: only the built-ins that took it (a decline says why in its own words)."""
    took = rows[rows["status"] != Status.UNSUPPORTED]
    dense = took[took["dense_mask_work"].notna()]
    said = [
        prose(
            "given_dense",
            candidates=", ".join(group["candidate"]),
            layout=layout,
            padded=PADDED,
            work=num(group["dense_mask_work"].iloc[0]),
        )
        for layout, group in dense.groupby(dense["layout"].fillna("bhsd"), sort=False)  # none: older files
    ]
    jagged = took[(took["layout"] == "thd") & took["candidate"].isin(JAGGED_BACKENDS)]["candidate"]
    if len(jagged):
        said.append(prose("given_jagged", candidates=", ".join(jagged)))
    flex = set(took[took["candidate"] == "flex"]["layout"])
    said += [prose("given_flex", layout=layout, padded=PADDED) for layout in (PADDED, POOL) if layout in flex]
    return [Para(" ".join(said))] if said else []
