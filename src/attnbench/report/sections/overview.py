"""The report's first screen: the answer (Headline), every speedup at a glance (the matrix), the plots."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from attnbench import headline, quality
from attnbench.documents import Analysis, ShapeComparisons, ShapeResult
from attnbench.formatting import DASH
from attnbench.report.data import first_text
from attnbench.report.model import Block, Details, Para, Plot, Section, Table
from attnbench.report.render import prose
from attnbench.report.words import (
    COLLAPSE_ABOVE,
    by_kernel,
    configuration,
    distinct,
    intervals,
    join_names,
    plural,
    to_decide,
)
from attnbench.results import Json, Status

# the overview first: the speedup heatmap answers "which is fastest where" at a glance
PLOT_ORDER = ("speedup", "latency", "accuracy", "roofline", "memory")


def headline_section(
    frame: pd.DataFrame,
    benches: list[ShapeResult],
    summary: Json,
    family_of: dict[str, str] | None = None,
    compares: list[ShapeComparisons] | None = None,
) -> Section:
    """The answer first: per shape the fastest correct candidate and its speedup, each candidate's
    wins and ties, then what failed or cannot run here, in a line each. A kernel's many
    configurations (`family_of`: configuration -> kernel) are collapsed where they would be a long
    list: tied configurations are counted, those never fastest or tied are one row of the tallies."""
    family_of = family_of or {}
    reference = summary["reference"] or "the reference"
    shown = [name for name in summary["candidates"] if name not in summary["unavailable"]]
    context = prose(
        "headline_context",
        shapes=len(summary["shapes"]),
        candidates=len(shown),
        devices=distinct(frame["device"]),
        dtypes=distinct(frame["dtype"]),
        modes=distinct(frame["mode"]),
        reference=reference,
        intervals=_summary_intervals(summary),
        mark=headline.SIGNIFICANT_MARK,
    )
    decide = to_decide(frame)
    rows = [
        [
            str(s["shape"]),
            DASH if s["fastest"] is None else str(s["fastest"]),
            (
                "nothing timed ok within the dtype's tolerance"
                if s["fastest"] is None
                else headline.versus_text(
                    s, reference, bound=False, need=decide.get((s["shape"], s["fastest"]))
                )
            ),
            DASH if s.get("fraction_of_bound") is None else f"{s['fraction_of_bound']:.0%}",
            join_names(s["tied"], family_of) or DASH,
        ]
        for s in summary["shapes"]
    ]
    headers = [
        "shape",
        "fastest",
        "speedup vs the best other built-in [interval]",
        "% of the attainable bound",
        "tied with the fastest",
    ]
    if any(s.get("approximate") for s in summary["shapes"]):  # ranked apart, in a column of its own
        headers.append("faster with approximations")
        for row, s in zip(rows, summary["shapes"]):
            row.append(DASH if not s.get("approximate") else _approximate(s["approximate"]))
    winners = Table(headers, rows, numeric={2, 3}, highlight=[False] * len(rows))
    blocks: list[Block] = [
        Para(context),
        measurement_summary(quality.summarize(benches, compares)),
        winners,
        Table(
            ["candidate", "fastest on", "tied on", "ok", "unsupported", "failed"],
            _tallies(summary["candidates"], shown, family_of),
            numeric={1, 2, 3, 4, 5},
        ),
    ]
    unavailable = summary["unavailable"]
    for family, members in by_kernel(list(unavailable), family_of):
        if family is not None and len(members) > COLLAPSE_ABOVE:
            # a grid's configurations that never fit this device: one line, each reason once
            reasons = Counter(unavailable[name] for name in members)
            listed = "; ".join(f"{reason} ({n})" for reason, n in reasons.most_common())
            what = f"{len(members)} configurations of {family}"
            blocks.append(Para(prose("unsupported", what=what, why=listed)))
            members = members[:1]  # the library's message once
        else:
            blocks += [Para(prose("unsupported", what=name, why=unavailable[name])) for name in members]
        for name in members:
            detail = first_text(benches, name, "reason_detail")
            if detail:
                blocks.append(Details(f"{name}: the library's message", detail))
    failures = summary["failures"]
    if failures:
        kinds = Counter((f["candidate"], f["status"]) for f in failures)
        listed = "; ".join(f"{c} {s} on {plural(n, 'shape')}" for (c, s), n in kinds.items())
        blocks.append(Para(prose("failed", failed=len(failures), listed=listed), css="warning"))
    return Section("Headline", blocks)


def _approximate(found: Json) -> str:
    """A shape's fastest approximate result: `sage 0.412 ms (declared 0.03)`."""
    return f"{found['candidate']} {found['median_ms']:.4g} ms (declared {found['declared']:g})"


def measurement_summary(summary: Json) -> Para:
    """One line up front, so that an imprecise or throttled run is not read as a clean one
    (quality.summarize's counts, which the end of a run prints too)."""
    text = prose("measurement", text=quality.text(summary), warn=summary["warn"])
    return Para(text, css="warning" if summary["warn"] else "")


def _summary_intervals(summary: Json, matrix: bool = False) -> str:
    """`intervals` of the headline's shapes (or of every cell of its matrix)."""
    entries = (
        [c for row in summary["matrix"]["rows"] for c in row["cells"].values()]
        if matrix
        else summary["shapes"]
    )
    return intervals(
        [e["confidence"] for e in entries if e.get("confidence") is not None], summary.get("family")
    )


def _tallies(tally: Json, shown: list[str], family_of: dict[str, str]) -> list[list[str]]:
    """The headline's rows of wins and ties per candidate. Configurations that were never the
    fastest nor tied with it, when a kernel has more than COLLAPSE_ABOVE of them, are one row whose
    counts are summed over them (results, not shapes)."""
    keys = ("wins", "ties", "ok", "unsupported", "failed")
    idle = [n for n in shown if n in family_of and not (tally[n]["wins"] or tally[n]["ties"])]
    collapsed = {
        family: members
        for family, members in by_kernel(idle, family_of)
        if family is not None and len(members) > COLLAPSE_ABOVE
    }
    rows, done = [], set()
    for name in shown:
        family = family_of.get(name)
        if family in collapsed and name in collapsed[family]:
            if family not in done:
                done.add(family)
                members = collapsed[family]
                label = (
                    f"{family}: {len(members)} other configurations, never fastest nor tied (results summed)"
                )
                rows.append([label, "0", "0", *(str(sum(tally[m][k] for m in members)) for k in keys[2:])])
            continue
        rows.append([name, *(str(tally[name][key]) for key in keys)])
    return rows


def matrix_section(summary: Json, analysis: Analysis | None = None) -> Section:
    """Shapes x candidates: every ok candidate's speedup over the reference, a status otherwise. A
    kernel with configurations is one column: on each shape its fastest configuration (autotune.json)
    and that one's speedup, so that 40 configurations do not make 40 columns."""
    matrix = summary["matrix"]
    kernels = {f.family: f for f in (() if analysis is None else analysis.families)}
    family_of = {} if analysis is None else analysis.family_of()
    columns = by_kernel(list(matrix["candidates"]), family_of)
    rows: list[list[str]] = []
    css: dict[tuple[int, int], str] = {}
    for r, row in enumerate(matrix["rows"]):
        line = [str(row["shape"])]
        for c, (family, members) in enumerate(columns, start=1):
            if family is None:
                name = members[0]
                prefix = ""
            else:
                chosen = {s.shape: s.fastest for s in kernels[family].shapes}.get(row["shape"])
                name = None if chosen is None else chosen.candidate
                prefix = "" if name is None else f"{configuration(name, family)}: "
            cell = None if name is None else row["cells"].get(name)
            if cell is None:
                line.append(_none_ok(row["cells"], members) if family is not None else DASH)
            elif cell["status"] != Status.OK:
                line.append(str(cell["status"]))
                css[(r, c)] = f"status status-{cell['status']}"
            elif cell["verdict"] == "reference":
                line.append(f"{prefix}reference")
            else:
                said = headline.speedup_text(
                    cell["speedup"], cell["ci"], cell["significant"], cell["verdict"]
                )
                if cell.get("declared_tolerance") is not None:  # headline files written before it lack it
                    said += f" (approximate, declared {cell['declared_tolerance']:g})"
                line.append(prefix + said)
            if cell is not None and cell["fastest"]:
                css[(r, c)] = "fastest"
        rows.append(line)
    intro = prose(
        "matrix",
        reference=summary["reference"] or "the reference",
        intervals=_summary_intervals(summary, matrix=True),
        mark=headline.SIGNIFICANT_MARK,
        kernels=any(family is not None for family, _ in columns),
    )
    headers = [
        "shape",
        *(members[0] if f is None else f"{f} (fastest configuration)" for f, members in columns),
    ]
    single = {c for c, (family, _) in enumerate(columns, start=1) if family is None}
    table = Table(headers, rows, numeric=single, text_cols=set(range(1, len(headers))) - single, cell_css=css)
    return Section("Speedup per shape and candidate", [Para(intro), table])


def _none_ok(cells: Json, members: list[str]) -> str:
    """A kernel with no ok configuration on a shape: how many were in which status."""
    statuses = Counter(cells[name]["status"] for name in members if name in cells)
    if not statuses:
        return DASH
    return "none ok: " + ", ".join(f"{status} ×{n}" for status, n in statuses.most_common())


def plots_section(analysis: Analysis) -> Section:
    """The plots, and a note where a kernel's configurations are drawn as one candidate."""
    plots: list[Block] = [Plot(key) for key in PLOT_ORDER]
    kernels = [f.family for f in analysis.families]
    if not kernels:
        return Section("Plots", plots)
    return Section("Plots", [Para(prose("plots", kernels=kernels)), *plots])
