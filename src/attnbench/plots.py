"""The report's figures (PLOTS), as PNG bytes: latency, roofline, speedup, peak memory, and latency
against error.

Drawn from the summary table (report.summary_frame) and the measured ceilings; each figure says so
when it has nothing to draw, so a report always has every figure, and names the candidates it leaves
out for having nothing to draw (drawn_candidates).
"""

from __future__ import annotations

import itertools
import math
import re
import textwrap
from io import BytesIO
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from attnbench.formatting import num
from attnbench.results import Json, Status
from attnbench.stats import TOO_FEW_ROUNDS

PLOTS = ("latency", "roofline", "speedup", "memory", "accuracy")
# The shapes the accuracy figure draws, one panel each; summary.csv has every shape's numbers.
ACCURACY_PANELS = 12
# alt text and caption of each figure in the report
ALT = {
    "latency": "Median latency against sequence length per candidate, 95% CI error bars, log-log",
    "roofline": "Roofline: achieved TFLOP/s against arithmetic intensity, with the measured ceilings",
    "speedup": "Speedup against the reference per shape and candidate; * marks a verdict of faster or slower, corrected across the run",
    "memory": "Workspace per call in MB (beyond inputs and output) per shape and candidate, against the device's memory",
    "accuracy": "Per shape, median latency against the error relative to float64, the front of results no other beats on both joined",
}
MAX_FIG_WIDTH = 12.5  # inches at 110 dpi: about the HTML page's width, so text stays full size


def figures(frame: pd.DataFrame, ceilings: Json, growth: Json) -> dict[str, bytes]:
    """Every figure of PLOTS as PNG bytes; `growth` is memory.growth's fit per candidate."""
    return {
        "latency": _png(_latency_figure(frame)),
        "roofline": _png(_roofline_figure(frame, ceilings)),
        "speedup": _png(_speedup_figure(frame)),
        "memory": _png(_memory_figure(frame, growth)),
        "accuracy": _png(_accuracy_figure(frame)),
    }


def positive(value: Any) -> float | None:
    """A measured ceiling, or None when it is missing or not a positive number."""
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _png(fig: Figure) -> bytes:
    buffer = BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _label(text: Any) -> str:
    """Matplotlib reads `$...$` as math; a candidate named with dollars must print as typed."""
    return str(text).replace("$", r"\$")


def _ok(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Plots show correct candidates only, so that no figure suggests a wrong kernel is a result."""
    rows = frame[(frame["status"] == Status.OK) & frame[column].notna()]
    return rows.astype({column: float})


def _colours(frame: pd.DataFrame) -> dict[str, Any]:
    """One colour per candidate across all the plots."""
    names = list(dict.fromkeys(frame["candidate"]))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _empty(message: str, size: tuple[float, float] = (7.0, 2.5)) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, wrap=True)
    ax.set_axis_off()
    return fig


def _plain_log_ticks(axis: Any) -> None:
    """Log axes label only powers of ten, often none inside one decade: label 1-2-5 instead."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_locator(NullLocator())


# What the shapes of one line share: they differ only in sequence length (and batch, _batch_families).
LINE_FIELDS = ("dim", "attention", "heads", "kv_heads", "dtype", "mode")
OTHER_SHAPES = "other shapes"
PANEL_TITLE_CHARS = 45  # a 10 pt title over a panel about 4 inches wide


class Drawn(NamedTuple):
    names: list[str]  # the candidates a figure draws, in the frame's order
    note: str  # which were left out and why; empty when none was


def drawn_candidates(
    frame: pd.DataFrame,
    columns: str | tuple[str, ...],
    what: str,
    statuses: tuple[Status, ...] = (Status.OK,),
) -> Drawn:
    """The candidates with a number to draw (`what`) on some shape: a backend that ran nowhere here
    (a CUDA one on the CPU) would fill a legend or half a heatmap with nothing but its status. The
    note gives those left out their statuses, or says they had no `what`."""
    usable = frame[frame["status"].isin(statuses)]
    has_value = usable[list((columns,) if isinstance(columns, str) else columns)].notna().all(axis=1)
    drawn = set(usable.loc[has_value, "candidate"])
    why: dict[str, list[str]] = {}
    for name, rows in frame[~frame["candidate"].isin(drawn)].groupby("candidate", sort=False):
        reason = f"no {what}" if rows["status"].isin(statuses).any() else " or ".join(rows["status"].unique())
        why.setdefault(reason, []).append(str(name))
    reasons = [f"{', '.join(names)} ({reason})" for reason, names in why.items()]
    kept = [n for n in dict.fromkeys(frame["candidate"]) if n in drawn]
    return Drawn(kept, "not shown: " + "; ".join(reasons) if reasons else "")


def _titled(title: str, note: str, width_inches: float, fontsize: float = 12.0) -> str:
    """The title, and the note of the candidates left out on lines of its own, wrapped to the width:
    a longer line is cut at the figure's edge."""
    chars = int(width_inches * 72 / (0.6 * fontsize))
    return "\n".join(line for text in (title, _label(note)) if text for line in _wrapped(text, chars))


def _wrapped(text: str, chars: int) -> list[str]:
    """Lines of at most `chars`, broken after a semicolon where one is near."""
    lines: list[str] = []
    for part in re.split(r"(?<=;) ", text):
        if lines and len(lines[-1]) + 1 + len(part) <= chars:
            lines[-1] += " " + part
        else:
            lines += textwrap.wrap(part, chars)
    return lines


def latency_families(frame: pd.DataFrame) -> dict[str, list[str]]:
    """The latency figure's panels, title -> shapes: one per family of shapes that differ only in
    sequence length (seq == seq_kv), drawn as a line per candidate, then OTHER_SHAPES, those no line
    holds (decode, packed documents, a family of one) drawn as points, rather than a panel of one point
    each."""
    shapes = frame.drop_duplicates("shape").set_index("shape")
    swept = shapes[shapes["seq"] == shapes["seq_kv"]]
    lines = [
        (key, batch, list(members.sort_values("seq").index))
        for key, group in swept.groupby(list(LINE_FIELDS), sort=True, dropna=False)
        for batch, members in _batch_families(group)
        if len(members) > 1
    ]
    varying = {f for i, f in enumerate(LINE_FIELDS) if len({key[i] for key, _, _ in lines}) > 1}
    panels = {_line_title(key, varying) + batch: names for key, batch, names in lines}
    on_lines = {name for names in panels.values() for name in names}
    others = [name for name in shapes.index if name not in on_lines]
    return panels | ({OTHER_SHAPES: others} if others else {})


def _batch_families(group: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Sweeps keep batch or batch x seq fixed: one family where each sequence length comes once, else
    one per budget or per batch, whichever puts more shapes on lines; a line has one point per seq."""
    if group["seq"].is_unique:
        return [(_batch_note(group), group)]
    splits = [
        [(f", batch x seq = {tokens}", g) for tokens, g in group.groupby(group["batch"] * group["seq"])],
        [(f", batch={batch}", g) for batch, g in group.groupby("batch")],
    ]
    best = max(splits, key=lambda split: sum(len(g) for _, g in split if g["seq"].is_unique and len(g) > 1))
    return [(note, g) for note, g in best if g["seq"].is_unique]


def _batch_note(group: pd.DataFrame) -> str:
    if group["batch"].nunique() == 1:
        return f", batch={group['batch'].iloc[0]}"
    tokens = (group["batch"] * group["seq"]).unique()
    return f", batch x seq = {tokens[0]}" if len(tokens) == 1 else ", batch varies"


def _line_title(key: tuple[Any, ...], varying: set[str]) -> str:
    """dim and attention pattern always, any other field of LINE_FIELDS where the lines differ in it."""
    parts = []
    for name, value in zip(LINE_FIELDS, key):
        if name in ("dim", "attention") or name in varying:
            parts.append(str(value) if name in ("attention", "dtype", "mode") else f"{name}={value}")
    return ", ".join(parts)


def _latency_figure(frame: pd.DataFrame) -> Figure:
    """A panel per family of latency_families, lines over seq, then the other shapes as points."""
    data = _ok(frame, "median_ms")
    if data.empty:
        return _empty("Latency: no candidate has status ok with a timing")
    drawn = drawn_candidates(frame, "median_ms", "timing")
    colours = _colours(frame)
    markers = dict(zip(colours, itertools.cycle("osD^vP*X")))  # equal lines stay distinguishable
    panels = latency_families(data)
    others = panels.pop(OTHER_SHAPES, [])
    ncols = max(1, 2 if len(panels) == 4 else min(3, len(panels)))
    heights = [3.6] * math.ceil(len(panels) / ncols) + ([4.2] if others else [])
    width = min(MAX_FIG_WIDTH, max(4.2 * ncols + 2.0, 0.7 * len(others) + 3.0))
    fig = Figure(figsize=(width, sum(heights) + 1.0), layout="constrained")
    grid = fig.add_gridspec(len(heights), ncols, height_ratios=heights)
    handles: dict[str, Any] = {}
    for index, (title, shapes) in enumerate(panels.items()):
        ax = fig.add_subplot(grid[index // ncols, index % ncols])
        for name, rows in data[data["shape"].isin(shapes)].groupby("candidate", sort=False):
            rows = rows.sort_values("seq")
            handles.setdefault(str(name), _latency_bars(ax, rows["seq"], rows, colours[name], markers[name]))
        seqs = sorted(data.loc[data["shape"].isin(shapes), "seq"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(seqs, [str(s) for s in seqs], rotation=45 if len(seqs) > 6 else 0)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("sequence length (queries)")
        ax.set_title(_label(textwrap.fill(title, PANEL_TITLE_CHARS)), fontsize=10)
    if others:
        _other_shapes_panel(fig.add_subplot(grid[-1, :]), data, others, colours, markers, handles)
    for ax in fig.axes:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.set_ylabel("median latency (ms)")
        ax.grid(True, which="major", alpha=0.3)
    _legend_below_panels(
        fig, fig.axes, len(fig.axes), {n: handles[n] for n in drawn.names}, title="candidate"
    )
    fig.suptitle(_titled("Latency vs sequence length (median, 95% CI; status ok only)", drawn.note, width))
    return fig


def _latency_bars(ax: Any, x: Any, rows: pd.DataFrame, colour: Any, marker: str, **style: Any) -> Any:
    """Median latency at `x` with its 95% CI as error bars."""
    median = rows["median_ms"].to_numpy(float)
    lower = median - rows["ci95_lo_ms"].to_numpy(float, na_value=np.nan)
    upper = rows["ci95_hi_ms"].to_numpy(float, na_value=np.nan) - median
    yerr = np.nan_to_num(np.vstack([lower, upper]).clip(min=0), nan=0.0)
    return ax.errorbar(x, median, yerr=yerr, marker=marker, capsize=3, color=colour, **style)


def _other_shapes_panel(
    ax: Any,
    data: pd.DataFrame,
    shapes: list[str],
    colours: dict[str, Any],
    markers: dict[str, str],
    handles: dict[str, Any],
) -> None:
    """The shapes without a line, one column each, the candidates side by side within it."""
    position = {shape: i for i, shape in enumerate(shapes)}
    rows_drawn = data[data["shape"].isin(shapes)]
    names = list(dict.fromkeys(rows_drawn["candidate"]))
    step = min(0.15, 0.7 / len(names))
    for i, (name, rows) in enumerate(rows_drawn.groupby("candidate", sort=False)):
        x = rows["shape"].map(position) + (i - (len(names) - 1) / 2) * step
        point = _latency_bars(ax, x, rows, colours[name], markers[name], linestyle="none")
        handles.setdefault(str(name), point)
    crowded = len(shapes) > 12
    ax.set_xticks(
        range(len(shapes)),
        [_label(s) for s in shapes],
        rotation=90 if crowded else 30,
        ha="center" if crowded else "right",
        rotation_mode="default" if crowded else "anchor",
    )
    ax.set_xlim(-0.5, len(shapes) - 0.5)
    ax.set_xlabel("shape")
    ax.set_title(OTHER_SHAPES, fontsize=10)


def _legend_columns(labels: list[str], width_inches: float, fontsize: float = 10.0) -> int:
    """As many columns (at most 5) as the widest names fit side by side: no name is cut."""
    widths = sorted((len(label) * 0.6 * fontsize / 72 + 0.8 for label in labels), reverse=True)
    return max(1, sum(1 for total in itertools.accumulate(widths[:5]) if total <= width_inches))


def _legend_below_panels(fig: Figure, axes: Any, used: int, handles: dict[str, Any], **legend: Any) -> None:
    """The panels left over switched off, and one legend for all below them: at the side it collides
    with the title when there is a single panel."""
    for ax in axes[used:]:
        ax.set_axis_off()
    labels = [_label(n) for n in handles]
    fig.legend(
        list(handles.values()),
        labels,
        loc="outside lower center",
        ncols=_legend_columns(labels, fig.get_figwidth()),
        **legend,
    )


def _grouped_bars(
    frame: pd.DataFrame, column: str, ylabel: str, title: str, what: str
) -> tuple[Figure, Any] | None:
    """Bars per shape (x) and candidate (colour); None when the column has no value to draw."""
    data = _ok(frame, column)
    if data.empty:
        return None
    colours = _colours(frame)
    shapes = list(dict.fromkeys(frame["shape"]))
    names, note = drawn_candidates(frame, column, what)
    table = data.pivot_table(index="shape", columns="candidate", values=column, aggfunc="first")
    table = table.reindex(index=shapes, columns=names)
    width = 0.8 / len(names)
    x = np.arange(len(shapes))
    # Wider than a page's ~12 inches, the browser would shrink the figure and its text with it.
    fig_width = min(MAX_FIG_WIDTH, max(7.0, 0.45 * len(shapes) * len(names) + 3.5))
    fig = Figure(figsize=(fig_width, 4.8), layout="constrained")
    ax = fig.add_subplot()
    labelled = len(shapes) * len(names) <= 40  # beyond that the numbers would overlap
    bar_inches = (fig_width - 3.5) / len(shapes) * width
    for i, name in enumerate(names):
        heights = table[name].to_numpy(float)
        bars = ax.bar(
            x + (i - (len(names) - 1) / 2) * width, heights, width, color=colours[name], label=_label(name)
        )
        if labelled:
            ax.bar_label(
                bars,
                [num(h) if np.isfinite(h) else "" for h in heights],
                padding=2,
                fontsize=7,
                rotation=90 if bar_inches < 0.4 else 0,
            )
    ax.margins(y=0.15)
    long_labels = len(shapes) > 4 or max(len(s) for s in shapes) > 10
    ax.set_xticks(
        x,
        [_label(s) for s in shapes],
        rotation=35 if long_labels else 0,
        ha="right" if long_labels else "center",
    )
    ax.set_xlabel("shape")
    ax.set_ylabel(ylabel)
    ax.set_title(_titled(title, note, fig_width))
    ax.grid(True, axis="y", alpha=0.3)
    values = table.to_numpy(float)
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size and finite.max() / finite.min() > 50:
        ax.set_yscale("log")  # a few huge shapes would flatten the rest to nothing
        _plain_log_ticks(ax.yaxis)
    return fig, ax


def _legend_below(fig: Figure, ax: Any) -> None:
    """Below the plot, in columns: at the side a long ceiling label would squeeze the bars."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 4), fontsize=9)


def _roofline_figure(frame: pd.DataFrame, ceilings: Json) -> Figure:
    """Achieved TFLOP/s against flops per byte of min_bytes, under the measured roofs: the matmul
    ceiling of each dtype and read bandwidth x intensity. Untrusted results are drawn as crosses:
    they are the ones above a roof."""
    data = frame[
        frame["status"].isin([Status.OK, Status.UNTRUSTED])
        & frame["tflops"].notna()
        & frame["intensity"].notna()
    ]
    if data.empty:
        return _empty("Roofline: no candidate has status ok with a throughput")
    data = data.astype({"tflops": float, "intensity": float})
    note = drawn_candidates(frame, ("tflops", "intensity"), "throughput", (Status.OK, Status.UNTRUSTED)).note
    colours = _colours(frame)
    fig = Figure(figsize=(9.0, 5.6), layout="constrained")
    ax = fig.add_subplot()
    for (name, status), group in data.groupby(["candidate", "status"], sort=False):
        untrusted = status == Status.UNTRUSTED
        ax.scatter(
            group["intensity"],
            group["tflops"],
            color=colours[name],
            marker="x" if untrusted else "o",
            s=40 if untrusted else 28,
            label=_label(name) + (" (untrusted)" if untrusted else ""),
        )
    lo, hi = data["intensity"].min() / 2, data["intensity"].max() * 2
    x = np.geomspace(lo, hi, 200)
    read = positive((ceilings.get("read") or {}).get("gbytes_per_s"))
    notes = []
    for dtype in dict.fromkeys(frame["dtype"]):
        tflops = positive(ceilings["matmul"].get(dtype, {}).get("tflops"))
        if tflops is None:
            notes.append(f"no {dtype} matmul ceiling measured")
            continue
        roof = np.minimum(tflops, x * read / 1e3) if read else np.full_like(x, tflops)
        ax.plot(
            x,
            roof,
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"measured {dtype} roof ({tflops:.3g} TFLOP/s"
            + (f", read {read:.3g} GB/s)" if read else ")"),
        )
    if read is None:
        notes.append("no read bandwidth measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte of min_bytes)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(_titled("Roofline" + (f" ({'; '.join(notes)})" if notes else ""), note, fig.get_figwidth()))
    ax.grid(True, which="both", alpha=0.3)
    _legend_below(fig, ax)
    return fig


def _memory_figure(frame: pd.DataFrame, growth: Json) -> Figure:
    """Each call's workspace (beyond its inputs and output) on a log scale, the device's memory drawn
    above it, and each candidate's growth exponent in the legend."""
    drawn = _grouped_bars(
        frame.assign(workspace_mb=frame["workspace_mb"].where(frame["workspace_mb"] > 0)),
        "workspace_mb",
        "workspace per call (MB, log scale)",
        "Workspace per call, beyond the inputs and the output",
        "workspace",
    )
    if drawn is None:
        return _empty("Workspace: none recorded (results written before it was measured)")
    fig, ax = drawn
    ax.set_yscale("log")
    total = frame["device_total_mb"].dropna()
    if not total.empty:
        ax.axhline(total.max(), color="black", linestyle="--", linewidth=1)
        ax.annotate(f"device memory {total.max() / 1024:.0f} GiB", (0, total.max()), xycoords=("axes fraction", "data"),
                    xytext=(4, -12), textcoords="offset points", fontsize=8)  # fmt: skip
    exponents = {_label(name): fit["exponent"] for name, fit in growth.items() if fit["exponent"] is not None}
    for handle in ax.get_legend_handles_labels()[0]:
        if (label := handle.get_label()) in exponents:
            handle.set_label(f"{label} (∝ seq^{exponents[label]:.1f})")
    _legend_below(fig, ax)
    return fig


def _accuracy_figure(frame: pd.DataFrame) -> Figure:
    """Per shape (the first ACCURACY_PANELS), each ok result's median latency against its error (on a
    log scale); the results on the shape's front (report.data.pareto_front) joined, approximate ones
    (ok only by their declared tolerance) drawn hollow."""
    data = _ok(_ok(frame, "median_ms"), "rel_error")
    data = data[data["rel_error"] > 0]
    if data.empty:
        return _empty("Accuracy: no candidate has status ok with a timing and an error")
    errors = pd.to_numeric(frame["rel_error"], errors="coerce")
    drawn = drawn_candidates(
        frame.assign(rel_error=errors.where(errors > 0)), ("median_ms", "rel_error"), "error above zero"
    )
    colours = _colours(frame)
    shapes = list(dict.fromkeys(data["shape"]))
    shown = shapes[:ACCURACY_PANELS]
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig = Figure(figsize=(min(MAX_FIG_WIDTH, 4.2 * ncols + 2.0), 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    handles: dict[str, Any] = {}
    for ax, shape in zip(axes, shown):
        rows = data[data["shape"] == shape]
        for row in rows.itertuples(index=False):
            approximate = pd.notna(row.declared_tolerance)
            point = ax.scatter(
                row.median_ms,
                row.rel_error,
                edgecolors=colours[row.candidate],
                facecolors="none" if approximate else colours[row.candidate],
                s=40,
                label=_label(row.candidate),
            )
            handles.setdefault(str(row.candidate), point)
        front = rows[rows["pareto_front"].eq(True)].sort_values("median_ms")
        ax.step(front["median_ms"], front["rel_error"], where="post", color="grey", linewidth=1, zorder=0)
        ax.set_yscale("log")  # errors span decades (an fp8 kernel beside exact ones); times rarely do
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel("median latency (ms)")
        ax.set_ylabel("error vs float64")
        ax.set_title(_label(shape), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    _legend_below_panels(fig, axes, len(shown), handles)
    more = f"; first {len(shown)} of {len(shapes)} shapes" if len(shapes) > len(shown) else ""
    title = f"Latency against error (status ok; hollow: approximate; line: the front{more})"
    fig.suptitle(_titled(title, drawn.note, fig.get_figwidth()))
    return fig


def _speedup_figure(frame: pd.DataFrame) -> Figure:
    if not frame["speedup"].notna().any():
        return _empty("Speedup: no comparisons against a reference in this run")
    shapes = list(dict.fromkeys(frame["shape"]))
    always_reference = set(frame["reference"].dropna()) if frame["reference"].nunique() == 1 else set()
    names, note = drawn_candidates(frame[~frame["candidate"].isin(always_reference)], "speedup", "speedup")
    cells = frame.set_index(["shape", "candidate"])
    speedup = np.full((len(shapes), len(names)), np.nan)
    text = [["" for _ in names] for _ in shapes]
    for i, shape in enumerate(shapes):
        for j, name in enumerate(names):
            if (shape, name) not in cells.index:
                text[i][j] = "absent"
                continue
            row = cells.loc[(shape, name)]
            if pd.notna(row["speedup"]):
                speedup[i, j] = float(row["speedup"])
                star = "*" if row["verdict"] in ("faster", "slower") else ""
                text[i][j] = f"{speedup[i, j]:.2f}×{star}"
            elif row["reference"] == name:
                text[i][j] = "ref"
            elif row["verdict"] == TOO_FEW_ROUNDS:
                text[i][j] = "few rounds"
            else:
                text[i][j] = "—" if row["status"] == Status.OK else str(row["status"])
    log2 = np.log2(speedup)
    bound = max(0.25, float(np.nanmax(np.abs(log2))))
    norm = Normalize(-bound, bound)
    cmap = colormaps["RdBu"].with_extremes(bad="#f2f2f2")
    width = min(MAX_FIG_WIDTH, max(6.0, 1.3 * len(names) + 3.0))
    fig = Figure(figsize=(width, max(3.0, 0.55 * len(shapes) + 2.2)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(log2), cmap=cmap, norm=norm, aspect="auto")
    for i in range(len(shapes)):
        for j in range(len(names)):
            dark = np.isfinite(log2[i, j]) and abs(norm(log2[i, j]) - 0.5) > 0.3
            ax.text(
                j,
                i,
                _label(text[i][j]),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(len(names)), [_label(n) for n in names], rotation=30, ha="right")
    ax.set_yticks(range(len(shapes)), [_label(s) for s in shapes])
    ax.set_xlabel("candidate")
    ax.set_ylabel("shape")
    references = ", ".join(sorted(str(r) for r in frame["reference"].dropna().unique()))
    title = _label(f"Speedup vs reference ({references}); >1 is faster; * faster or slower (corrected)")
    ax.set_title(_titled(title, note, width))
    bar = fig.colorbar(image, ax=ax, label="speedup (log scale)")
    ticks = np.arange(math.ceil(-bound), math.floor(bound) + 1)
    ticks = ticks if len(ticks) >= 3 else np.linspace(-bound, bound, 5)
    bar.set_ticks(ticks, labels=[f"{2.0**t:.3g}×" for t in ticks])
    return fig
