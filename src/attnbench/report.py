"""The run's report: a summary CSV, an autotune CSV, four plots, and the same findings as Markdown and
one HTML page.

Nothing is measured here; every number comes from the result files. The statistics computed here
are Holm's correction, because only the report sees every comparison of the run at once, and the
autotune comparisons of each shape's fastest candidate with the others (stats.compare on the bench
samples, with the settings the compare files record).
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
import os
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from attnbench.clocks import DISCARDED, reason_names
from attnbench.io import atomic_write_bytes, atomic_write_text, read_json
from attnbench.stats import compare as compare_samples
from attnbench.stats import holm, practically_different

Json = dict[str, Any]

SHAPE_FIELDS = ("batch", "heads", "kv_heads", "seq", "seq_kv", "dim", "causal")
PLOTS = ("latency", "roofline", "speedup", "memory")
OUTPUT_KEYS = ("html", "md", "csv", "autotune", *PLOTS)
MAX_FIG_WIDTH = 12.5  # inches at 110 dpi: about the HTML page's width, so text stays full size
COLUMNS = [
    "shape", *SHAPE_FIELDS, "dtype", "mode", "device", "timing_mode", "candidate", "status", "reason",
    "median_ms", "ci95_lo_ms", "ci95_hi_ms", "rel_ci", "target_rel_ci", "target_met", "n_samples",
    "tflops", "fraction_of_matmul_ceiling", "bandwidth_gbs", "fraction_of_copy_ceiling",
    "fraction_of_bound", "bound_limited_by", "intensity", "peak_mem_mb", "rel_error",
    "bitwise_repeatable", "max_abs_diff", "kernels_per_call", "streams", "device_share", "kernels",
    "reference", "speedup",
    "speedup_ci95_lo", "speedup_ci95_hi", "hedges_g", "cliffs_delta", "p_value", "p_holm",
    "significant_holm", "fastest",
]  # fmt: skip
AUTOTUNE_COLUMNS = [
    "shape",
    "fastest",
    "fastest_median_ms",
    "fastest_ci95_lo_ms",
    "fastest_ci95_hi_ms",
    "tied",
]
# the compare files' `method` keys that are stats.compare arguments: autotune reruns the same test
COMPARE_SETTINGS = ("alpha", "threshold", "resolution", "n_resamples", "confidence", "seed")
PLOT_ALT = {
    "latency": "Median latency against sequence length per candidate, 95% CI error bars, log-log",
    "roofline": "Roofline: achieved TFLOP/s against arithmetic intensity, with the measured ceilings",
    "speedup": "Speedup against the reference per shape and candidate; * marks Holm-significant",
    "memory": "Peak memory in MB per shape and candidate",
}
STATUS_COLOURS = {
    "ok": "#d9f2df", "unsupported": "#ececec", "incorrect": "#f9d0d0",
    "error": "#f9d0d0", "oom": "#fde5c4", "timeout": "#fde5c4", "untrusted": "#f9d0d0",
    "crashed": "#f9d0d0",
}  # fmt: skip
# NVML reasons that make a round unrepresentative (thermal, hardware); the power cap is normal load
SLOWDOWNS = frozenset(reason_names(DISCARDED))
FLAG = "⚠"


def build_report(
    bench_paths: list[str],
    compare_paths: list[str],
    fingerprint_path: str,
    ceilings_path: str,
    out: dict[str, str],
    *,
    schema_dir: str | Path,
    alpha: float = 0.05,
    title: str = "attnbench report",
) -> None:
    """Validate every input against its schema (in `schema_dir`), then write the outputs named in `out`."""
    schemas = Path(schema_dir)
    missing = [key for key in OUTPUT_KEYS if key not in out]
    if missing:
        raise ValueError(f"build_report: `out` lacks the output paths {missing}")
    benches = [read_json(p, schemas / "bench.schema.yaml") for p in bench_paths]
    compares = [read_json(p, schemas / "compare.schema.yaml") for p in compare_paths]
    fingerprint = read_json(fingerprint_path, schemas / "fingerprint.schema.yaml")
    ceilings = read_json(ceilings_path, schemas / "ceilings.schema.yaml")

    frame = summary_frame(benches, compares, ceilings, alpha=alpha)
    atomic_write_text(out["csv"], frame.to_csv(index=False))
    rivals = autotune_comparisons(frame, benches, compares, alpha=alpha)
    atomic_write_text(out["autotune"], autotune_frame(frame, rivals).to_csv(index=False))
    images = {
        "latency": _png(_latency_figure(frame)),
        "roofline": _png(_roofline_figure(frame, ceilings)),
        "speedup": _png(_speedup_figure(frame)),
        "memory": _png(_memory_figure(frame)),
    }
    for key, data in images.items():
        atomic_write_bytes(out[key], data)

    blocks = _document(frame, rivals, benches, compares, fingerprint, ceilings, alpha=alpha, title=title)
    md_dir = Path(out["md"]).resolve().parent
    links = {
        key: urllib.parse.quote(Path(os.path.relpath(Path(out[key]).resolve(), md_dir)).as_posix())
        for key in PLOTS
    }
    atomic_write_text(out["md"], _render_md(blocks, links))
    atomic_write_text(out["html"], _render_html(blocks, images, title))


# --------------------------------------------------------------------------------------- the table


def summary_frame(benches: list[Json], compares: list[Json], ceilings: Json, *, alpha: float) -> pd.DataFrame:
    """One row per (shape, candidate): the bench numbers, ceiling fractions and the comparison."""
    adjusted = _adjusted_comparisons(compares, alpha)
    references = {c["shape"]: c["reference"] for c in compares}
    copy_gbs = _positive(ceilings["copy"].get("gbytes_per_s"))
    rows: list[Json] = []
    for bench in benches:
        shape = bench["shape"]
        matmul = _positive(ceilings["matmul"].get(bench["dtype"], {}).get("tflops"))
        for name, cand in bench["candidates"].items():
            median = cand["median_ms"]
            lo, hi = cand["ci95_ms"] or (None, None)
            bandwidth = (
                bench["min_bytes"] / (median / 1e3) / 1e9 if median is not None and median > 0 else None
            )
            comparison = adjusted.get((shape["name"], name), {})
            sp_lo, sp_hi = comparison.get("speedup_ci95") or (None, None)
            repeat = cand.get("deterministic") or {}
            ran = cand.get("ran") or {}
            rows.append(
                {
                    "shape": shape["name"],
                    **{key: shape[key] for key in SHAPE_FIELDS},
                    "dtype": bench["dtype"],
                    "mode": bench["mode"],
                    "device": bench["device"],
                    # Which GPU: with one job per GPU, the shapes of a run can be spread over several.
                    "gpu_index": bench.get("device_info", {}).get("index"),
                    "gpu_uuid": bench.get("device_info", {}).get("uuid"),
                    "timing_mode": bench["timing"]["mode"],
                    "candidate": name,
                    "status": cand["status"],
                    "reason": cand["reason"],
                    "median_ms": median,
                    "ci95_lo_ms": lo,
                    "ci95_hi_ms": hi,
                    "rel_ci": cand["rel_ci"],
                    "target_rel_ci": bench["timing"]["target_rel_ci"],
                    "target_met": cand["target_met"],
                    "n_samples": len(cand["samples_ms"]),
                    "tflops": cand["tflops"],
                    "fraction_of_matmul_ceiling": _ratio(cand["tflops"], matmul),
                    "bandwidth_gbs": bandwidth,
                    "fraction_of_copy_ceiling": _ratio(bandwidth, copy_gbs),
                    "fraction_of_bound": cand.get("fraction_of_bound"),
                    "bound_limited_by": (bench.get("bound") or {}).get("limited_by"),
                    "intensity": bench["flops"] / bench["min_bytes"] if bench["min_bytes"] else None,
                    "peak_mem_mb": cand["peak_mem_mb"],
                    "rel_error": cand["rel_error"],
                    "bitwise_repeatable": repeat.get("identical"),
                    "max_abs_diff": repeat.get("max_abs_diff"),
                    "kernels_per_call": ran.get("kernels_per_call"),
                    "streams": ran.get("streams"),
                    "device_share": ran.get("device_share"),
                    "kernels": ";".join(k["name"] for k in ran.get("kernels", [])) or None,
                    "reference": references.get(shape["name"]),
                    "speedup": comparison.get("speedup"),
                    "speedup_ci95_lo": sp_lo,
                    "speedup_ci95_hi": sp_hi,
                    "hedges_g": comparison.get("hedges_g"),
                    "cliffs_delta": comparison.get("cliffs_delta"),
                    "p_value": comparison.get("p_value"),
                    "p_holm": comparison.get("p_holm"),
                    "significant_holm": comparison.get("significant_holm"),
                    "fastest": False,
                }
            )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    timed = frame[(frame["status"] == "ok") & frame["median_ms"].notna()]
    if not timed.empty:
        # Only correct candidates compete: a wrong answer computed quickly is not a result.
        winners = timed.astype({"median_ms": float}).groupby("shape", sort=False)["median_ms"].idxmin()
        frame.loc[winners.to_numpy(), "fastest"] = True
    return frame


def _adjusted_comparisons(compares: list[Json], alpha: float) -> dict[tuple[str, str], Json]:
    """Holm across every comparison of the run: per-shape tests alone would inflate false claims."""
    flat = [(compare, comp) for compare in compares for comp in compare["comparisons"]]
    adjusted = holm([comp["p_value"] for _, comp in flat])
    result: dict[tuple[str, str], Json] = {}
    for (compare, comp), p_holm in zip(flat, adjusted):
        threshold = compare.get("method", {}).get("threshold")
        practical = threshold is None or practically_different(comp["speedup"], threshold)
        if comp["baseline"] == compare["reference"]:
            result[(compare["shape"], comp["candidate"])] = {
                **comp,
                "p_holm": float(p_holm),
                "significant_holm": bool(p_holm < alpha and practical),
            }
    return result


def autotune_comparisons(
    frame: pd.DataFrame, benches: list[Json], compares: list[Json], *, alpha: float
) -> pd.DataFrame:
    """Every other correct candidate of a shape against the shape's fastest (`frame`'s "fastest").

    One row per comparison: speedup = fastest's median / candidate's median (at most 1), its CI,
    p and Holm's p across all the run's autotune comparisons. `tied` holds unless the candidate is
    significantly (Holm-adjusted p < alpha) AND practically slower: stats.compare's verdict "same",
    judged on the adjusted p. Each shape is compared with the settings its compare file records
    (stats.compare's defaults, and the report's alpha, where there is none).
    """
    samples = {
        (bench["shape"]["name"], name): cand["samples_ms"]
        for bench in benches
        for name, cand in bench["candidates"].items()
    }
    methods = {compare["shape"]: compare.get("method") or {} for compare in compares}
    timed = frame[(frame["status"] == "ok") & frame["median_ms"].notna()]
    winners = timed[timed["fastest"]].set_index("shape")["candidate"]
    rows: list[Json] = []
    for row in timed[~timed["fastest"]].itertuples(index=False):
        fastest = winners[row.shape]
        method = methods.get(row.shape, {})
        settings = {key: method[key] for key in COMPARE_SETTINGS if method.get(key) is not None}
        try:
            result = compare_samples(
                samples[(row.shape, fastest)],
                samples[(row.shape, row.candidate)],
                **{"alpha": alpha, **settings},
            )
        except ValueError as exc:  # name the shape and candidates, not just "baseline"
            raise ValueError(f"autotune, shape {row.shape}, {fastest} vs {row.candidate}: {exc}") from exc
        lo, hi = result["speedup_ci95"]
        rows.append({
            "shape": row.shape, "fastest": fastest, "candidate": row.candidate,
            "median_ms": row.median_ms, "ci95_lo_ms": row.ci95_lo_ms, "ci95_hi_ms": row.ci95_hi_ms,
            "speedup": result["speedup"], "speedup_ci95_lo": lo, "speedup_ci95_hi": hi,
            "p_value": result["p_value"], "practical": result["practical"],
        })  # fmt: skip
    columns = ["shape", "fastest", "candidate", "median_ms", "ci95_lo_ms", "ci95_hi_ms", "speedup",
               "speedup_ci95_lo", "speedup_ci95_hi", "p_value", "practical"]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns).astype({"median_ms": float, "practical": bool})
    table["p_holm"] = holm(table["p_value"].to_numpy(float))
    table["tied"] = ~((table["p_holm"] < alpha) & table["practical"])
    return table


def autotune_frame(frame: pd.DataFrame, rivals: pd.DataFrame) -> pd.DataFrame:
    """One row per shape: the fastest correct candidate, its median and CI, and the candidates tied
    with it (`rivals` from autotune_comparisons), fastest first, ";"-separated; empty when none."""
    winners = frame.loc[frame["fastest"], ["shape", "candidate", "median_ms", "ci95_lo_ms", "ci95_hi_ms"]]
    winners = winners.rename(columns={
        "candidate": "fastest", "median_ms": "fastest_median_ms",
        "ci95_lo_ms": "fastest_ci95_lo_ms", "ci95_hi_ms": "fastest_ci95_hi_ms",
    })  # fmt: skip
    tied = rivals[rivals["tied"]].sort_values("median_ms", kind="stable")
    names = tied.groupby("shape", sort=False)["candidate"].agg(lambda c: ";".join(map(str, c)))
    table = pd.DataFrame({"shape": list(dict.fromkeys(frame["shape"]))}).merge(
        winners, on="shape", how="left"
    )
    table["tied"] = [names.get(shape, "") for shape in table["shape"]]
    return table[AUTOTUNE_COLUMNS]


def _positive(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    return value / ceiling if value is not None and ceiling is not None else None


# ------------------------------------------------------------------------------------------ plots


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
    rows = frame[(frame["status"] == "ok") & frame[column].notna()]
    return rows.astype({column: float})


def _colours(frame: pd.DataFrame) -> dict[str, Any]:
    """One colour per candidate across all four plots."""
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


def _facet_fields(frame: pd.DataFrame) -> list[str]:
    """(dim, causal) always; any other setting that varies would mix lines too.

    Batch is a facet only when it varies at a fixed sequence length: sweeps usually keep
    batch x seq constant, and faceting by batch would leave one point per panel.
    """
    fields = ["dim", "causal"]
    fields += [f for f in ("dtype", "mode", "heads", "kv_heads") if frame[f].nunique() > 1]
    if (frame["seq_kv"] != frame["seq"]).any():
        fields.append("seq_kv")
    if (frame.groupby([*fields, "seq"])["batch"].nunique() > 1).any():
        fields.append("batch")
    return fields


def _batch_note(group: pd.DataFrame) -> str:
    if group["batch"].nunique() == 1:
        return f", batch={group['batch'].iloc[0]}"
    tokens = (group["batch"] * group["seq"]).unique()
    return f", batch x seq = {tokens[0]}" if len(tokens) == 1 else ", batch varies"


def _facet_title(fields: list[str], values: tuple[Any, ...]) -> str:
    parts = []
    for name, value in zip(fields, values):
        if name == "causal":
            parts.append("causal" if value else "non-causal")
        elif name in ("dtype", "mode"):
            parts.append(str(value))
        else:
            parts.append(f"{name}={value}")
    return ", ".join(parts)


def _latency_figure(frame: pd.DataFrame) -> Figure:
    data = _ok(frame, "median_ms")
    if data.empty:
        return _empty("Latency: no candidate has status ok with a timing")
    colours = _colours(frame)
    fields = _facet_fields(frame)
    facets = list(data.groupby(fields, sort=True))
    ncols = 2 if len(facets) == 4 else min(3, len(facets))
    nrows = math.ceil(len(facets) / ncols)
    fig = Figure(figsize=(min(MAX_FIG_WIDTH, 4.2 * ncols + 2.0), 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    markers = dict(zip(colours, itertools.cycle("osD^vP*X")))  # equal lines stay distinguishable
    handles: dict[str, Any] = {}
    for ax, (key, group) in zip(axes, facets):
        for name, rows in group.groupby("candidate", sort=False):
            rows = rows.sort_values("seq")
            median = rows["median_ms"].to_numpy(float)
            lower = median - rows["ci95_lo_ms"].to_numpy(float, na_value=np.nan)
            upper = rows["ci95_hi_ms"].to_numpy(float, na_value=np.nan) - median
            yerr = np.nan_to_num(np.vstack([lower, upper]).clip(min=0), nan=0.0)
            line = ax.errorbar(rows["seq"], median, yerr=yerr, marker=markers[name], capsize=3,
                               color=colours[name], label=_label(name))  # fmt: skip
            handles.setdefault(str(name), line)
        seqs = sorted(group["seq"].unique())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.set_xticks(seqs, [str(s) for s in seqs], rotation=45 if len(seqs) > 6 else 0)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("sequence length (queries)")
        ax.set_ylabel("median latency (ms)")
        title = _facet_title(fields, key if isinstance(key, tuple) else (key,))
        ax.set_title(title + ("" if "batch" in fields else _batch_note(group)), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(facets) :]:
        ax.set_axis_off()
    # below the panels: at the side it collides with the title when there is a single panel
    fig.legend(
        list(handles.values()), [_label(n) for n in handles], loc="outside lower center",
        ncols=min(len(handles), 5), title="candidate",
    )  # fmt: skip
    fig.suptitle("Latency vs sequence length (median, 95% CI; status ok only)")
    return fig


def _grouped_bars(frame: pd.DataFrame, column: str, ylabel: str, title: str) -> tuple[Figure, Any] | None:
    """Bars per shape (x) and candidate (colour); None when the column has no value to draw."""
    data = _ok(frame, column)
    if data.empty:
        return None
    colours = _colours(frame)
    shapes = list(dict.fromkeys(frame["shape"]))
    names = list(dict.fromkeys(data["candidate"]))
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
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, heights, width,
                      color=colours[name], label=_label(name))  # fmt: skip
        if labelled:
            ax.bar_label(bars, [_num(h) if np.isfinite(h) else "" for h in heights], padding=2,
                         fontsize=7, rotation=90 if bar_inches < 0.4 else 0)  # fmt: skip
    ax.margins(y=0.15)
    long_labels = len(shapes) > 4 or max(len(s) for s in shapes) > 10
    ax.set_xticks(x, [_label(s) for s in shapes], rotation=35 if long_labels else 0,
                  ha="right" if long_labels else "center")  # fmt: skip
    ax.set_xlabel("shape")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
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
    data = frame[frame["status"].isin(["ok", "untrusted"]) & frame["tflops"].notna() & frame["intensity"].notna()]
    if data.empty:
        return _empty("Roofline: no candidate has status ok with a throughput")
    data = data.astype({"tflops": float, "intensity": float})
    colours = _colours(frame)
    fig = Figure(figsize=(9.0, 5.6), layout="constrained")
    ax = fig.add_subplot()
    for (name, status), group in data.groupby(["candidate", "status"], sort=False):
        untrusted = status == "untrusted"
        ax.scatter(group["intensity"], group["tflops"], color=colours[name], marker="x" if untrusted else "o",
                   s=40 if untrusted else 28, label=_label(name) + (" (untrusted)" if untrusted else ""))  # fmt: skip
    lo, hi = data["intensity"].min() / 2, data["intensity"].max() * 2
    x = np.geomspace(lo, hi, 200)
    read = _positive((ceilings.get("read") or {}).get("gbytes_per_s"))
    notes = []
    for dtype in dict.fromkeys(frame["dtype"]):
        tflops = _positive(ceilings["matmul"].get(dtype, {}).get("tflops"))
        if tflops is None:
            notes.append(f"no {dtype} matmul ceiling measured")
            continue
        roof = np.minimum(tflops, x * read / 1e3) if read else np.full_like(x, tflops)
        ax.plot(x, roof, color="black", linestyle="--", linewidth=1.2,
                label=f"measured {dtype} roof ({tflops:.3g} TFLOP/s" + (f", read {read:.3g} GB/s)" if read else ")"))  # fmt: skip
    if read is None:
        notes.append("no read bandwidth measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte of min_bytes)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title("Roofline" + (f" ({'; '.join(notes)})" if notes else ""))
    ax.grid(True, which="both", alpha=0.3)
    _legend_below(fig, ax)
    return fig


def _memory_figure(frame: pd.DataFrame) -> Figure:
    drawn = _grouped_bars(frame, "peak_mem_mb", "peak memory (MB)", "Peak memory per call, inputs included")
    if drawn is None:
        cpu_only = (frame["device"] == "cpu").all()
        return _empty(
            "Peak memory: none recorded (CPU runs do not measure it)"
            if cpu_only
            else "Peak memory: no candidate has status ok with a recorded peak"
        )
    fig, ax = drawn
    _legend_below(fig, ax)
    return fig


def _speedup_figure(frame: pd.DataFrame) -> Figure:
    if not frame["speedup"].notna().any():
        return _empty("Speedup: no comparisons against a reference in this run")
    shapes = list(dict.fromkeys(frame["shape"]))
    always_reference = set(frame["reference"].dropna()) if frame["reference"].nunique() == 1 else set()
    names = [n for n in dict.fromkeys(frame["candidate"]) if n not in always_reference]
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
                star = "*" if row["significant_holm"] else ""
                text[i][j] = f"{speedup[i, j]:.2f}×{star}"
            elif row["reference"] == name:
                text[i][j] = "ref"
            else:
                text[i][j] = "—" if row["status"] == "ok" else str(row["status"])
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
            ax.text(j, i, _label(text[i][j]), ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(len(names)), [_label(n) for n in names], rotation=30, ha="right")
    ax.set_yticks(range(len(shapes)), [_label(s) for s in shapes])
    ax.set_xlabel("candidate")
    ax.set_ylabel("shape")
    references = ", ".join(sorted(str(r) for r in frame["reference"].dropna().unique()))
    ax.set_title(_label(f"Speedup vs reference ({references}); >1 is faster; * Holm-significant"))
    bar = fig.colorbar(image, ax=ax, label="speedup (log scale)")
    ticks = np.arange(math.ceil(-bound), math.floor(bound) + 1)
    ticks = ticks if len(ticks) >= 3 else np.linspace(-bound, bound, 5)
    bar.set_ticks(ticks, labels=[f"{2.0**t:.3g}×" for t in ticks])
    return fig


# -------------------------------------------------------------------------------------- documents


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str
    css: str = ""


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)
    status_col: int | None = None
    text_cols: set[int] = field(default_factory=set)  # free text (reasons, settings): may wrap anywhere
    highlight: list[bool] = field(default_factory=list)
    flagged: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells a reader must not miss


@dataclass
class Plot:
    key: str


Block = Union[Heading, Para, Table, Plot]


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    value = float(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:#.{digits}g}"  # '#' keeps trailing zeros: 1.00 beside 0.996, not 1


def _pct(value: Any) -> str:
    return "—" if value is None or pd.isna(value) else f"{100 * float(value):.1f}%"


def _pm(value: Any, digits: int = 1) -> str:
    """A relative half-width as ±percent; sub-0.1% values keep a second decimal instead of ±0.0%."""
    value = float(value)
    return f"±{100 * value:.{digits if value >= 1e-3 else max(digits, 2)}f}%"


def _missed(target_met: Any) -> bool:
    """False, not merely falsy: None (no timing) and NaN (no value in the frame) are not misses."""
    return target_met is not None and not pd.isna(target_met) and not target_met


def _precision(rel_ci: Any, target: Any, target_met: Any) -> str:
    if rel_ci is None or pd.isna(rel_ci):
        return "—"
    text = _pm(rel_ci)
    if not _missed(target_met):
        return text
    goal = "—" if target is None or pd.isna(target) else _pm(target)
    if text == goal:  # 1.04% against 1%: rounding must not make a miss look like a hit
        text = _pm(rel_ci, 2)
    return f"{text} ({FLAG} target {goal} missed)"


def _interval(centre: Any, lo: Any, hi: Any, suffix: str = "") -> str:
    if centre is None or pd.isna(centre):
        return "—"
    if lo is None or pd.isna(lo) or hi is None or pd.isna(hi):
        return f"{_num(centre)}{suffix}"
    return f"{_num(centre)}{suffix} [{_num(lo)}, {_num(hi)}]"


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as dotted keys, so any lock or clock layout prints without special cases."""
    if isinstance(value, dict):
        items: list[tuple[str, str]] = []
        for key, sub in value.items():
            items += _flatten(sub, f"{prefix}.{key}" if prefix else str(key))
        return items
    return [(prefix, json.dumps(value) if not isinstance(value, str) else value)]


def _settings(value: Any) -> str:
    pairs = _flatten(value)
    return ", ".join(f"{k}={v}" for k, v in pairs) if pairs else "—"


def _distinct(values: Any) -> str:
    return ", ".join(str(v) for v in dict.fromkeys(values)) or "—"


def _document(
    frame: pd.DataFrame,
    rivals: pd.DataFrame,
    benches: list[Json],
    compares: list[Json],
    fingerprint: Json,
    ceilings: Json,
    *,
    alpha: float,
    title: str,
) -> list[Block]:
    """The report once, as blocks; the Markdown and HTML renderers only differ in syntax."""
    blocks: list[Block] = [Heading(1, title)]
    blocks += _run_summary(frame, benches, fingerprint)
    blocks += _fingerprint_section(fingerprint)
    blocks += _ceilings_section(ceilings, benches)
    blocks += _results_section(frame)
    blocks += _autotune_section(frame, rivals, alpha)
    blocks += _conditions_section(benches)
    blocks += _not_ok_section(frame)
    blocks += _ran_section(frame)
    blocks.append(Heading(2, "Plots"))
    blocks += [Plot(key) for key in PLOTS]
    blocks += _method_section(benches, compares, alpha)
    return blocks


def _device(frame: pd.DataFrame, fingerprint: Json) -> str:
    """The device, and when `device: auto` found no usable GPU, that the run fell back and why."""
    device = _distinct(frame["device"])
    if fingerprint.get("requested_device") == "auto" and fingerprint.get("device") == "cpu":
        return f"{device} (device: auto fell back to the CPU: {fingerprint.get('gpu_reason')})"
    return device


def _run_summary(frame: pd.DataFrame, benches: list[Json], fingerprint: Json) -> list[Block]:
    statuses = Counter(frame["status"])
    device_names = [b.get("device_info", {}).get("name") for b in benches]
    rows = [
        ["device", _device(frame, fingerprint)],
        ["device name", _distinct(n for n in device_names if n)],
        *_gpus_used(benches),
        ["dtype", _distinct(frame["dtype"])],
        ["mode", _distinct(frame["mode"])],
        ["timing mode", _counts(b["timing"]["mode"] for b in benches)],
        ["shapes", str(frame["shape"].nunique())],
        ["candidates", str(frame["candidate"].nunique())],
        ["results by status", ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())) or "—"],
    ]
    return [Heading(2, "Run summary"), Table(["", "value"], rows), _measurement_summary(frame, benches)]


def _gpus_used(benches: list[Json]) -> list[list[str]]:
    """A row naming the GPUs when there were GPUs: which index and UUID ran how many shapes."""
    gpus = [b.get("device_info", {}) for b in benches]
    named = [f"{g['index']} ({g['uuid']})" for g in gpus if g.get("uuid")]
    return [["GPUs (index as nvidia-smi shows it)", _counts(named)]] if named else []


def _counts(values: Any) -> str:
    counts = Counter(values)
    return ", ".join(f"{v}: {n} shape{'s' if n != 1 else ''}" for v, n in counts.items()) or "—"


def _measurement_summary(frame: pd.DataFrame, benches: list[Json]) -> Para:
    """One line up front, so that an imprecise or throttled run is not read as a clean one."""
    timed = frame[frame["target_met"].notna()]
    missed = sum(_missed(v) for v in timed["target_met"])
    target = _distinct(_pm(t) for t in timed["target_rel_ci"])
    if timed.empty:
        parts = ["no candidate produced timings"]
    elif missed:
        parts = [f"{missed} of {len(timed)} timed results missed their {target} CI target"]
    else:
        parts = [f"all {len(timed)} timed results met their {target} CI target"]
    clocks = [b["timing"]["clocks"] for b in benches]
    monitored = [c for c in clocks if c["source"] is not None]
    throttled = sum(c["throttled_rounds"] > 0 for c in monitored)
    discarded = sum(c["discarded_rounds"] for c in monitored)
    slowed_kept = sum(bool(_kept_slowdowns(b["timing"])) for b in benches)
    if not monitored:
        cpu = all(b["device"] == "cpu" for b in benches)
        parts.append("GPU clocks not monitored" + (" (cpu)" if cpu else ""))
    elif not throttled:
        parts.append("no throttled rounds")
    else:
        detail = [f"{discarded} rounds discarded for thermal or hardware slowdowns"] if discarded else []
        detail += [f"slowdowns kept in the samples on {slowed_kept} shapes"] if slowed_kept else []
        parts.append(f"throttled rounds on {throttled} of {len(benches)} shapes"
                     f" ({'; '.join(detail) if detail else 'power cap only, rounds kept'})")  # fmt: skip
    unsettled = sum(not b["timing"]["warmup"]["settled"] for b in benches)
    if unsettled:
        parts.append(f"warm-up did not settle on {unsettled} of {len(benches)} shapes")
    text = "; ".join(parts)
    text = f"Measurement: {text[0].upper()}{text[1:]} (see Measurement conditions)."
    warn = bool(missed or discarded or slowed_kept or unsettled)
    return Para(f"{FLAG} {text}" if warn else text, css="warning" if warn else "")


def _fingerprint_section(fp: Json) -> list[Block]:
    gpu = fp["gpu"]
    labels = {
        "name": "GPU", "uuid": "GPU UUID", "driver_version": "driver",
        "compute_capability": "compute capability", "sm_count": "SMs",
        "memory_total_mb": "GPU memory (MB)",
    }  # fmt: skip
    rows: list[list[str]] = []
    if gpu is None:
        rows.append(["GPU", f"none: {fp['gpu_reason'] or 'no reason given'}"])
    else:
        rows += [[labels.get(k, f"GPU {k}"), v] for k, v in _flatten(gpu)]
    torch = fp["torch"]
    rows += [
        ["CPU", f"{fp['cpu']['model']} ({fp['cpu']['logical_cores']} logical cores)"],
        ["host", f"{fp['host']['hostname']}, {fp['host']['os']}, kernel {fp['host']['kernel']}"],
        ["Python", fp["python"]],
        ["torch", str(torch["version"])],
        ["CUDA", str(torch["cuda"] or "—")],
        ["cuDNN", str(torch["cudnn"] or "—")],
        ["Triton", str(torch["triton"] or "—")],
        ["git commit", _git_commit(fp["git"])],
        ["lock", _settings(fp["lock"])],
        ["environment variables", _settings(fp["env_vars"])],
        ["fingerprint taken", fp["created"]],
    ]
    return [Heading(2, "Environment"), Table(["", "value"], rows, text_cols={1})]


def _git_commit(git: Json) -> str:
    if git["commit"] is None:
        return f"unknown: {git.get('reason') or 'not recorded'}"
    return f"{git['commit']}{' (dirty)' if git['dirty'] else ''}"


def _ceilings_section(ceilings: Json, benches: list[Json]) -> list[Block]:
    measured_on = ceilings.get("device_name") or ceilings["device"]
    rows = [
        [f"matmul {dtype}", f"{_num(entry['tflops'])} TFLOP/s", _num(entry["size"]),
         _num(entry["median_ms"]), str(entry["method"])]
        for dtype, entry in ceilings["matmul"].items()
    ]  # fmt: skip
    for name in ("copy", "read", "write"):
        if entry := ceilings.get(name):  # read and write: absent from files written before them
            rows.append([name, f"{_num(entry['gbytes_per_s'])} GB/s", f"{_num(entry['bytes'])} bytes",
                         _num(entry["median_ms"]), str(entry["method"])])  # fmt: skip
    blocks: list[Block] = [
        Heading(2, "Measured ceilings"),
        Para(f"Measured on {measured_on}."),
        Table(["ceiling", "value", "size", "median ms", "method"], rows, numeric={1, 2, 3}),
    ]
    bench_devices = {b.get("device_info", {}).get("name") for b in benches} - {None}
    if ceilings.get("device_name") and bench_devices and ceilings["device_name"] not in bench_devices:
        blocks.append(Para(
            f"Warning: the ceilings were measured on {ceilings['device_name']}, the benchmarks ran "
            f"on {', '.join(sorted(bench_devices))}; the fractions of ceiling compare different "
            "devices.", css="warning",
        ))  # fmt: skip
    return blocks


def _results_section(frame: pd.DataFrame) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, "Results per shape"),
        Para(
            "± is the half-width of the median's 95% confidence interval over the median. Sampling "
            "stops once every candidate of the shape is within the run's target "
            f"({_distinct(_pm(t) for t in frame['target_rel_ci'].dropna())}); a result marked "
            '"target missed" ran out of time or rounds first, so its median is less precise than '
            "asked for and small differences involving it deserve caution."
        ),
    ]
    for shape, rows in frame.groupby("shape", sort=False):
        first = rows.iloc[0]
        dims = ", ".join(f"{f}={first[f]}" for f in SHAPE_FIELDS if f != "causal")
        reference = first["reference"]
        blocks.append(Heading(3, f"{shape} ({dims}, {'causal' if first['causal'] else 'non-causal'})"))
        body = []
        flagged: set[tuple[int, int]] = set()
        for r, row in enumerate(rows.itertuples(index=False)):
            if _missed(row.target_met):
                flagged.add((r, 3))
            if row.candidate == reference:
                speedup, p_holm, significant = "reference", "—", "—"
            else:
                speedup = _interval(row.speedup, row.speedup_ci95_lo, row.speedup_ci95_hi, "×")
                p_holm = _num(row.p_holm, 2)
                significant = (
                    "—" if pd.isna(row.significant_holm) else ("yes" if row.significant_holm else "no")
                )
            body.append([
                f"{row.candidate} (fastest)" if row.fastest else str(row.candidate),
                str(row.status),
                _interval(row.median_ms, row.ci95_lo_ms, row.ci95_hi_ms),
                _precision(row.rel_ci, row.target_rel_ci, row.target_met),
                _num(row.tflops),
                _pct(row.fraction_of_matmul_ceiling),
                _bound(row.fraction_of_bound, row.bound_limited_by),
                speedup, p_holm, significant,
                _num(row.peak_mem_mb),
            ])  # fmt: skip
        headers = [
            "candidate", "status", "median ms [95% CI]", "± (95% CI)", "TFLOP/s", "% of matmul ceiling",
            "% of bound", f"speedup vs {reference or 'reference'} [95% CI]", "p (Holm)",
            "significant", "peak MB",
        ]  # fmt: skip
        blocks.append(Table(headers, body, numeric={2, 3, 4, 5, 6, 7, 8, 10}, status_col=1,
                            highlight=list(rows["fastest"]), flagged=flagged))  # fmt: skip
    return blocks


def _autotune_section(frame: pd.DataFrame, rivals: pd.DataFrame, alpha: float) -> list[Block]:
    """Per shape, the candidate to pick and those no measurably worse choice than it."""
    intro = (
        "Per shape, the fastest candidate is the one with the lowest median among those with status "
        "ok. Every other ok candidate was compared with it by the same test and settings as the "
        "comparisons with the reference (speedup = the fastest's median over the candidate's, so "
        "below 1 is slower). A candidate is tied with the fastest unless it is slower both "
        f"significantly (Holm-adjusted p below {alpha}, Holm across the {len(rivals)} autotune "
        "comparisons of the run) and by at least the practical threshold: as far as these "
        "measurements can tell, a tied candidate is as good a choice. Candidates that are "
        "significantly slower are not listed."
    )
    blocks: list[Block] = [Heading(2, "Autotune"), Para(intro)]
    headers = ["candidate", "role", "median ms [95% CI]", "slower than the fastest",
               "speedup vs the fastest [95% CI]", "p (Holm)"]  # fmt: skip
    for shape, rows in frame.groupby("shape", sort=False):
        blocks.append(Heading(3, str(shape)))
        winner = rows[rows["fastest"]]
        if winner.empty:
            blocks.append(Para("No candidate has status ok: there is nothing to choose from."))
            continue
        best = winner.iloc[0]
        median = _interval(best["median_ms"], best["ci95_lo_ms"], best["ci95_hi_ms"])
        body = [[str(best["candidate"]), "fastest", median, "—", "—", "—"]]
        compared = rivals[rivals["shape"] == shape]
        ties = compared[compared["tied"]].sort_values("median_ms", kind="stable")
        body += [
            [str(t.candidate), "tied", _interval(t.median_ms, t.ci95_lo_ms, t.ci95_hi_ms),
             _slower(t.speedup), _interval(t.speedup, t.speedup_ci95_lo, t.speedup_ci95_hi, "×"),
             _num(t.p_holm, 2)]
            for t in ties.itertuples(index=False)
        ]  # fmt: skip
        blocks.append(Table(headers, body, numeric={2, 3, 4, 5}, highlight=[True]))
        slower = len(compared) - len(ties)
        others = f"{slower} other candidate{'s' if slower != 1 else ''} with status ok"
        verb = "are" if slower != 1 else "is"
        if compared.empty:
            blocks.append(Para(f"{best['candidate']} is the only candidate with status ok."))
        elif slower:
            lead = f"No candidate is tied with {best['candidate']}: the " if ties.empty else "The "
            blocks.append(Para(f"{lead}{others} {verb} significantly and practically slower."))
    return blocks


def _slower(speedup: Any) -> str:
    """How much longer a candidate takes than the fastest, from speedup = fastest / candidate."""
    if speedup is None or pd.isna(speedup) or speedup <= 0:
        return "—"
    return f"{100 * (1 / float(speedup) - 1):.1f}%"


def _kept_slowdowns(timing: Json) -> dict[str, int]:
    """Thermal or hardware slowdowns left in the samples: only when discarding was switched off."""
    if timing.get("discard_throttled", True):
        return {}
    return {k: v for k, v in timing["clocks"]["events"].items() if k in SLOWDOWNS and v}


def _shape_issues(bench: Json) -> list[str]:
    """What a reader must know before trusting a shape's numbers; empty when nothing went wrong."""
    timing = bench["timing"]
    met = [c["target_met"] for c in bench["candidates"].values() if c["target_met"] is not None]
    issues = []
    if not all(met):
        issues.append(
            f"CI target {_pm(timing['target_rel_ci'])} missed by {met.count(False)} of {len(met)} results"
        )
    if not timing["warmup"]["settled"]:
        issues.append("warm-up not settled")
    if timing["clocks"]["discarded_rounds"]:
        issues.append(f"{timing['clocks']['discarded_rounds']} rounds discarded for slowdowns")
    if _kept_slowdowns(timing):
        issues.append("slowdowns kept in the samples (discard_throttled off)")
    return issues


def _mode_text(bench: Json) -> str:
    mode = str(bench["timing"]["mode"])
    ks = sorted({c["calls_per_sample"] for c in bench["candidates"].values() if c.get("calls_per_sample")})
    if mode != "graph" or not ks:
        return mode
    span = str(ks[0]) if len(ks) == 1 else f"{ks[0]}–{ks[-1]}"
    return f"graph ({span} calls per sample)"


def _clock_text(bench: Json) -> str:
    clocks = bench["timing"]["clocks"]
    if clocks["source"] is None:
        return "n/a (cpu)" if bench["device"] == "cpu" else f"n/a ({clocks.get('reason') or 'not read'})"
    if clocks["mean_sm_mhz"] is None:
        return "n/a (no reading)"
    text = f"{clocks['mean_sm_mhz']:,.0f} MHz"
    lo, hi = clocks.get("min_sm_mhz"), clocks.get("max_sm_mhz")
    return text + (f" ({lo:,}–{hi:,})" if lo is not None and hi is not None and lo != hi else "")


def _throttle_text(clocks: Json) -> str:
    if clocks["source"] is None:
        return "n/a"
    events = ", ".join(f"{name}: {n}" for name, n in sorted(clocks["events"].items()) if n)
    return f"{clocks['throttled_rounds']}" + (f" ({events})" if events else "")


def _conditions_section(benches: list[Json]) -> list[Block]:
    """How each shape was timed: a median is only as good as the conditions it was taken under."""
    rows: list[list[str]] = []
    flagged: set[tuple[int, int]] = set()
    for r, bench in enumerate(benches):
        timing, clocks, warmup = bench["timing"], bench["timing"]["clocks"], bench["timing"]["warmup"]
        issues = _shape_issues(bench)
        discarded = "n/a" if clocks["source"] is None else str(clocks["discarded_rounds"])
        if clocks["source"] is not None and not timing.get("discard_throttled", True):
            discarded += " (discarding off)"
        settled = "yes" if warmup["settled"] else "no"
        rows.append([
            str(bench["shape"]["name"]),
            _mode_text(bench),
            str(timing["mode_reason"]),
            f"{warmup['rounds']} rounds, {warmup['seconds']:.1f} s, settled: {settled}",
            f"{timing['rounds_kept']} / {timing['rounds_run']}",
            str(timing["stop_reason"]),
            _clock_text(bench),
            _throttle_text(clocks),
            discarded,
            f"{FLAG} " + "; ".join(issues) if issues else "ok",
        ])  # fmt: skip
        missed = any(c["target_met"] is False for c in bench["candidates"].values())
        checks = {3: not warmup["settled"], 5: missed, 7: bool(_kept_slowdowns(timing)),
                  8: clocks["discarded_rounds"] > 0, 9: bool(issues)}  # fmt: skip
        flagged |= {(r, col) for col, bad in checks.items() if bad}
    headers = [
        "shape", "timing mode", "why this mode", "warm-up", "rounds kept / run", "stop reason",
        "mean SM clock (min–max)", "throttled rounds (events)", "discarded rounds", "checks",
    ]  # fmt: skip
    intro = (
        "One row per shape. Throttled rounds are rounds whose NVML clock-event reasons include the "
        "power cap or a thermal or hardware slowdown (events count rounds per reason); rounds taken "
        "during a thermal or hardware slowdown are discarded whole, so kept rounds stay paired. "
        f"{FLAG} marks a missed CI target, a warm-up that did not settle, or discarded rounds."
    )
    return [
        Heading(2, "Measurement conditions"),
        Para(intro),
        Table(headers, rows, numeric={4, 8}, text_cols={2, 5}, flagged=flagged),
    ]


def _not_ok_section(frame: pd.DataFrame) -> list[Block]:
    bad = frame[frame["status"] != "ok"]
    blocks: list[Block] = [Heading(2, "Candidates that did not produce a valid result")]
    if bad.empty:
        return [*blocks, Para("Every candidate ran and matched the reference on every shape.")]
    # One row per distinct (candidate, status, reason): a kernel that rejects twenty shapes with
    # the same message is one finding, not twenty rows to read.
    reasons = bad.assign(reason=bad["reason"].fillna("no reason recorded"))
    groups = reasons.groupby(["candidate", "status", "reason"], sort=False)["shape"]
    rows = [[str(c), str(s), str(r), ", ".join(shapes)] for (c, s, r), shapes in groups]
    headers = ["candidate", "status", "reason", "shapes"]
    return [*blocks, Table(headers, rows, status_col=1, text_cols={2})]


def _bound(fraction: Any, limited_by: Any) -> str:
    """The share of the shape's attainable bound, and which roof binds it."""
    return "—" if pd.isna(fraction) else f"{_pct(fraction)} ({limited_by})"


def _span(values: pd.Series, fmt: Any) -> str:
    values = values.dropna()
    if values.empty:
        return "—"
    lo, hi = fmt(values.min()), fmt(values.max())
    return lo if lo == hi else f"{lo}–{hi}"


def _ran_section(frame: pd.DataFrame) -> list[Block]:
    """Per candidate over the shapes it was timed on: what one call ran, as the profiler saw it."""
    timed = frame[frame["kernels_per_call"].notna()]
    blocks: list[Block] = [
        Heading(2, "What ran"),
        Para(
            "One call of each timed candidate under torch.profiler, after a warm call: kernels per call "
            "(on the CPU, top-level operators), CUDA streams, and the share of the measured median the "
            "device spent in kernels (the rest is launch and gap overhead). Bitwise: two calls on the "
            "same inputs gave identical outputs (else the largest difference). Ranges span the shapes."
        ),
    ]
    if timed.empty:
        return [*blocks, Para("No candidate was timed.")]
    rows = []
    for name, group in timed.groupby("candidate", sort=False):
        repeatable = group["bitwise_repeatable"].dropna()
        bitwise = (
            "—" if repeatable.empty else "yes" if repeatable.all()
            else f"no (max diff {_num(group['max_abs_diff'].max())})"
        )  # fmt: skip
        kernels = Counter(k for names in group["kernels"].dropna() for k in str(names).split(";"))
        rows.append([
            str(name), str(len(group)), _span(group["kernels_per_call"], lambda v: f"{int(v)}"),
            _span(group["streams"], lambda v: f"{int(v)}"), _span(group["device_share"], _pct), bitwise,
            ", ".join(k for k, _ in kernels.most_common(4)),
        ])  # fmt: skip
    headers = ["candidate", "shapes", "kernels per call", "streams", "device time share", "bitwise", "kernels"]
    return [*blocks, Table(headers, rows, numeric={1, 2, 3, 4}, text_cols={6})]


def _recorded(timing: list[Json], key: str, fmt: Any = str) -> str | None:
    """The distinct values of an optional timing setting, None when no file recorded it."""
    values = [fmt(t[key]) for t in timing if t.get(key) is not None]
    return _distinct(values) if values else None


def _timing_text(benches: list[Json]) -> str:
    """How samples were taken, with the run's settings: a reader cannot judge a median without it."""
    timing = [b["timing"] for b in benches]
    if not timing:
        return "This run has no bench results."
    order = _recorded(timing, "order")
    text = (
        "Samples were taken in interleaved rounds: every round times each candidate of a shape once, "
        "in an order that alternates direction from one round to the next, so slow drift (clocks, "
        "temperature, other load) falls on all candidates alike and no candidate always runs after "
        f"the same one (timer: {_distinct(t['method'] for t in timing)}"
        + (f"; order: {order}" if order else "") + "). "
    )  # fmt: skip
    requested = _recorded(timing, "requested_mode")
    graph_below = _recorded(timing, "graph_below_ms", lambda v: f"{v:g}")
    auto = graph_below is not None and any(t.get("requested_mode") == "auto" for t in timing)
    text += (
        "Each shape was timed in one mode, listed with the reason for it under Measurement "
        "conditions: cold (the L2 cache flushed before every call), warm (no flush) or graph (a CUDA "
        "graph replaying k calls, each sample its time over k, for kernels too short to time one "
        f"launch at a time) ({_counts(t['mode'] for t in timing)}"
        + (f"; requested: {requested}" if requested else "")
        + (f"; auto picks graph when the fastest candidate is under {graph_below} ms" if auto else "")
        + "). "
    )  # fmt: skip
    min_rounds = _recorded(timing, "min_rounds")
    limits = [f"{v} s" for v in [_recorded(timing, "max_time_s", lambda v: f"{v:g}")] if v]
    limits += [f"{v} rounds" for v in [_recorded(timing, "max_rounds")] if v]
    text += (
        "Before sampling, a warm-up ran rounds in batches until every candidate's timing and the SM "
        "clock had settled, within a time limit; a warm-up that hit the limit is flagged. Sampling "
        "then stopped adaptively"
        + (f", checking from {min_rounds} kept rounds on," if min_rounds else "")
        + " as soon as the 95% confidence interval of every candidate's median was within "
        f"{_distinct(_pm(t['target_rel_ci']) for t in timing)} of it"
        + (f", or at {' or '.join(limits)} per shape with the target missed, which the results "
           "tables mark" if limits else "")
        + ". "
    )  # fmt: skip
    monitored = [b for b in benches if b["timing"]["clocks"]["source"] is not None]
    if monitored:
        kept = [str(b["shape"]["name"]) for b in monitored if not b["timing"].get("discard_throttled", True)]
        text += (
            "The SM clock and the NVML clock-event reasons were read after every round; rounds "
            "taken during a thermal or hardware slowdown were discarded whole, so the candidates "
            "stay paired by round, while rounds at the power cap were counted and kept (sustained "
            "load runs at the power cap; it is the speed users get)"
            + (f"; discarding was switched off for {', '.join(kept)}" if kept else "")
            + ". "
        )  # fmt: skip
    else:
        reasons = _distinct(b["timing"]["clocks"].get("reason") or "not recorded" for b in benches)
        text += f"No GPU clock was read ({reasons}), so no round was discarded for throttling."
    return text.rstrip()


def _method_section(benches: list[Json], compares: list[Json], alpha: float) -> list[Block]:
    n_comparisons = sum(len(c["comparisons"]) for c in compares)
    text = ""
    settings: dict[str, list[Any]] = {}
    for compare in compares:
        for key, value in compare.get("method", {}).items():
            # compare files name only the tests they used, "a + b"; the run used their union
            parts = value.split(" + ") if key == "test" and isinstance(value, str) else [value]
            settings.setdefault(key, []).extend(v for v in parts if v is not None)

    def setting(key: str, missing: str) -> str:
        return _distinct(settings.pop(key, [])) if settings.get(key) else missing

    if compares:
        resolution = setting("resolution", "")
        text += (
            f"Each candidate was compared with the reference by {setting('test', 'no test')} "
            f"at alpha {setting('alpha', 'unrecorded')}"
            + (f"; the test's null hypothesis is a difference of at most {resolution} (the "
               "resolution of interleaved timing), so a small p says the difference exceeds that, "
               "not merely that it is not zero" if resolution else "")
            + f". The practical threshold was {setting('threshold', 'none')} (a difference counts "
            "only when max(speedup, 1/speedup) − 1 reaches it), and the confidence intervals use "
            f"{setting('n_resamples', 'an unrecorded number of')} bootstrap resamples"
        )  # fmt: skip
        other = {k: _distinct(v) for k, v in settings.items() if v}
        text += (f" (other settings: {_settings(other)})" if other else "") + ". "
    else:
        text += "This run has no comparison files. "
    text += (
        f"The p-values are Holm-corrected across all {n_comparisons} comparisons of the run; a "
        f"comparison is significant when its Holm-adjusted p is below {alpha} and the practical "
        "threshold is met. Latency, throughput and memory plots show candidates with status ok "
        "only; a candidate that returned a wrong answer is never the fastest."
    )
    return [Heading(2, "Method"), Para(_timing_text(benches)), Para(text)]


# -------------------------------------------------------------------------------------- renderers

_MD_SPECIAL = set("\\`*_[]<>&|#")


def _md(text: Any) -> str:
    """Backslash-escape what Markdown would read as markup (CommonMark escapes any punctuation)."""
    escaped = "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in str(text))
    return " ".join(escaped.splitlines())  # a line break would end the table row


def _render_md(blocks: list[Block], links: dict[str, str]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + _md(block.text), ""]
        elif isinstance(block, Para):
            lines += [_md(block.text), ""]
        elif isinstance(block, Plot):
            lines += [f"![{_md(PLOT_ALT[block.key])}]({links[block.key]})", ""]
        else:
            align = ["---:" if i in block.numeric else "---" for i in range(len(block.headers))]
            lines.append("| " + " | ".join(_md(h) for h in block.headers) + " |")
            lines.append("| " + " | ".join(align) + " |")
            lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in block.rows]
            lines.append("")
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1f2328; line-height: 1.45; max-width: 1500px; margin: 1.5em auto; padding: 0 1.5em; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.5em; font-size: 1.05em; }
p { max-width: 80em; }
.scroll { overflow-x: auto; margin: .5em 0 1.2em; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border: 1px solid #c8ccd1; padding: .3em .6em; vertical-align: top; text-align: left; }
th { background: #f0f2f4; vertical-align: bottom; }
td { overflow-wrap: break-word; }
td.text { overflow-wrap: anywhere; white-space: pre-wrap; min-width: 16em; max-width: 60em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num, td.status { white-space: nowrap; }
tr.fastest td { font-weight: 600; }
td.flag { background: #fff4d6; box-shadow: inset 3px 0 0 #d4a72c; }
p.warning { background: #fff4d6; border-left: 4px solid #d4a72c; padding: .5em .8em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #e1e4e8; }
figcaption { color: #57606a; font-size: .9em; }
"""


def _render_html(blocks: list[Block], images: dict[str, bytes], title: str) -> str:
    esc = html.escape
    status_css = "\n".join(f"td.status-{s} {{ background: {c}; }}" for s, c in STATUS_COLOURS.items())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}{status_css}\n</style>",
        "</head><body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            css = f' class="{esc(block.css)}"' if block.css else ""
            parts.append(f"<p{css}>{esc(block.text)}</p>")
        elif isinstance(block, Plot):
            data = base64.b64encode(images[block.key]).decode("ascii")
            alt = esc(PLOT_ALT[block.key])
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
                         f"<figcaption>{alt}</figcaption></figure>")  # fmt: skip
        else:
            parts.append(_table_html(block))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _table_html(table: Table) -> str:
    esc = html.escape

    def cell(tag: str, i: int, text: str, r: int = -1) -> str:
        classes = []
        if i in table.numeric:
            classes.append("num")
        if tag == "td" and i == table.status_col:
            classes += ["status", *([f"status-{text}"] if text in STATUS_COLOURS else [])]
        if tag == "td" and i in table.text_cols:
            classes.append("text")
        if tag == "td" and (r, i) in table.flagged:
            classes.append("flag")
        attr = f' class="{" ".join(classes)}"' if classes else ""
        return f"<{tag}{attr}>{esc(text)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(table.headers))
    body = []
    for r, row in enumerate(table.rows):
        fastest = r < len(table.highlight) and table.highlight[r]
        cls = ' class="fastest"' if fastest else ""
        body.append(f"<tr{cls}>" + "".join(cell("td", i, c, r) for i, c in enumerate(row)) + "</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table></div>")  # fmt: skip
