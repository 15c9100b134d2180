"""The run's report: a summary CSV, four plots, and the same findings as Markdown and one HTML page.

Nothing is measured or tested here: every number comes from the result files, and the run-wide
statistics (the Bonferroni correction of every comparison of the run, autotune) from autotune.json,
which the autotune step writes; the measurement quality the first screen states from
attnbench.quality, which the end of a run prints too. Every verdict is printed beside the interval it
was decided from: the corrected interval beside a corrected verdict. This
module builds each section's data once (headings, paragraphs, tables, plots); the Jinja2 templates
in templates/ only lay it out, as Markdown or as one self-contained HTML page.
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import jinja2
import pandas as pd

from attnbench import autotune, formatting, headline, memory, quality
from attnbench.candidates import JAGGED_BACKENDS, SDPA_BACKENDS
from attnbench.files import Json, atomic_write_bytes, atomic_write_text, read_json, schema_file, verified
from attnbench.formatting import BOUND_MARKS, DASH, interval, num, pct, pm, speedup_interval
from attnbench.plots import ALT, PLOTS, figures, positive
from attnbench.results import Status
from attnbench.stats import BLOCKS, MIN_ROUNDS, TOO_FEW_ROUNDS
from attnbench.workloads import PADDED, POOL, describe_mask

SHAPE_FIELDS = ("batch", "heads", "kv_heads", "seq", "seq_kv", "dim", "causal")
OUTPUT_KEYS = ("html", "md", "csv", *PLOTS)
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
    "rel_error",
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
FLAG = quality.FLAG


def build_report(
    bench_paths: list[str],
    compare_paths: list[str],
    fingerprint_path: str,
    ceilings_path: str,
    autotune_path: str,
    out: dict[str, str],
    *,
    schema_dir: str | Path | None,
    title: str,
) -> Json:
    """Validate every input against its schema (in `schema_dir`), write the outputs named in `out`, and
    return the headline the report leads with (the report job's document, which the run's end prints)."""
    missing = [key for key in OUTPUT_KEYS if key not in out]
    if missing:
        raise ValueError(f"build_report: `out` lacks the output paths {missing}")
    run = read_run(
        bench_paths, compare_paths, fingerprint_path, ceilings_path, autotune_path, schema_dir=schema_dir
    )
    atomic_write_text(out["csv"], run.frame.to_csv(index=False))
    images = figures(plot_frame(run.frame, run.analysis), run.ceilings, run.growth)
    for key, data in images.items():
        atomic_write_bytes(out[key], data)

    sections = document(run)
    md_dir = Path(out["md"]).resolve().parent
    links = {
        key: urllib.parse.quote(Path(os.path.relpath(Path(out[key]).resolve(), md_dir)).as_posix())
        for key in PLOTS
    }
    atomic_write_text(out["md"], render_markdown(title, sections, links))
    atomic_write_text(out["html"], render_html(title, sections, images))
    return run.summary


@dataclass
class Run:
    """The report's inputs, validated, and the summary table built from them."""

    benches: list[Json]
    compares: list[Json]
    fingerprint: Json
    ceilings: Json
    analysis: Json  # autotune.json
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
    schemas = None if schema_dir is None else Path(schema_dir)
    benches = [read_json(p, schema_file(schemas, "bench")) for p in bench_paths]
    compares = [read_json(p, schema_file(schemas, "compare")) for p in compare_paths]
    ceilings = read_json(ceilings_path, schema_file(schemas, "ceilings"))
    analysis = read_json(autotune_path, schema_file(schemas, "autotune"))
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


def provenance(benches: list[Json], fingerprint: Json) -> Json:
    """Which checkout measured which shapes: the bench files grouped by the commit, dirty flag and
    diff digest they record (provenance.git), in run order, each with its label; whether the report
    must say so (`several` checkouts, or one `elsewhere` than the fingerprint's, which the Environment
    section names); and the shapes whose files carry no content digest (`unverified`: written before
    digests, read with their numbers checked against each other only)."""
    groups: dict[str, Json] = {}
    for bench in benches:
        git = (bench.get("provenance") or {}).get("git")
        label = _git_commit(git) if git is not None else "not recorded (written before provenance)"
        groups.setdefault(label, {"label": label, "recorded": git is not None, "shapes": []})
        groups[label]["shapes"].append(bench["shape"]["name"])
    current = _git_commit(fingerprint["git"])
    recorded = [group for group in groups.values() if group["recorded"]]
    return {
        "groups": list(groups.values()),
        "current": current,
        "several": len(recorded) > 1,
        "elsewhere": any(group["label"] != current for group in recorded),
        "unverified": [bench["shape"]["name"] for bench in benches if not verified(bench)],
    }


# --------------------------------------------------------------------------------------- the table


def summary_frame(benches: list[Json], compares: list[Json], ceilings: Json, analysis: Json) -> pd.DataFrame:
    """One row per (shape, candidate): the bench numbers, ceiling fractions and the comparison with
    the reference (`_comparison`: corrected across the run in `analysis`, autotune.json)."""
    adjusted = {(c["shape"], c["candidate"]): c for c in analysis["reference"]["comparisons"]}
    comparisons = {
        (compare["shape"], comp["candidate"]): comp
        for compare in compares
        for comp in compare["comparisons"]
        if comp["baseline"] == compare["reference"]
    }
    references = {c["shape"]: c["reference"] for c in compares}
    winners = {s["shape"]: (s["fastest"] or {}).get("candidate") for s in analysis["shapes"]}
    copy_gbs = positive(ceilings["copy"].get("gbytes_per_s"))
    rows: list[Json] = []
    for bench in benches:
        shape = bench["shape"]
        matmul = positive(ceilings["matmul"].get(bench["dtype"], {}).get("tflops"))
        for name, cand in bench["candidates"].items():
            median = cand["median_ms"]
            lo, hi = cand["ci95_ms"] or (None, None)
            bandwidth = (
                bench["min_bytes"] / (median / 1e3) / 1e9 if median is not None and median > 0 else None
            )
            comparison = _comparison(
                comparisons.get((shape["name"], name)), adjusted.get((shape["name"], name)), bench
            )
            repeat = cand.get("deterministic") or {}
            ran = cand.get("ran") or {}
            footprint = cand.get("footprint") or {}
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
                    "workspace_mb": footprint.get("workspace_mb"),
                    "output_mb": footprint.get("output_mb"),
                    "inputs_mb": footprint.get("inputs_mb"),
                    "allocations": footprint.get("allocations"),
                    "reserved_growth_mb": footprint.get("reserved_growth_mb"),
                    "saved_mb": footprint.get("saved_mb"),
                    "backward_workspace_mb": (footprint.get("backward") or {}).get("workspace_mb"),
                    "projected_mb": footprint.get("projected_mb"),
                    "device_total_mb": (bench.get("memory") or {}).get("device_total_mb"),
                    "oom_risk": cand.get("oom_risk"),
                    "rel_error": cand["rel_error"],
                    "bitwise_repeatable": repeat.get("identical"),
                    # measured again without candidates caught after sampling (bench.remeasure_without_cheats)
                    "remeasured_without": ";".join(cand.get("remeasured") or []) or None,
                    "max_abs_diff": repeat.get("max_abs_diff"),
                    "kernels_per_call": ran.get("kernels_per_call"),
                    "streams": ran.get("streams"),
                    "device_share": ran.get("device_share"),
                    "kernels": ";".join(k["name"] for k in ran.get("kernels", [])) or None,
                    "reference": references.get(shape["name"]),
                    **comparison,
                    "fastest": winners.get(shape["name"]) == name,
                    # a factory kernel's prepare, then the first call: both outside the samples
                    "setup_ms": cand.get("setup_ms"),
                    "compile_ms": cand.get("compile_ms"),
                    "attention": describe_mask(shape),
                    "dim_v": shape.get("dim_v", shape["dim"]),
                    # only for the SDPA backends given the mask dense or padded (not nested tensors)
                    "dense_mask_work": _dense_mask_work(bench.get("pairs"), cand.get("layout", "bhsd"))
                    if name in SDPA_BACKENDS
                    else None,
                    "layout": cand.get("layout"),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def _comparison(comp: Json | None, corrected: Json | None, bench: Json) -> Json:
    """summary.csv's columns of one comparison with the reference: the compare file's speedup, effect
    sizes, p-value and rounds; the interval, its confidence, the adjusted p and the verdict from one
    object, the run-wide correction (autotune.json) where it has the comparison, else the compare
    file's own; and what an undecided comparison would need (quality.to_decide)."""
    if comp is None:
        return {key: None for key in COMPARISON_COLUMNS}
    source = corrected or comp
    lo, hi = source["speedup_ci"] or (None, None)
    need = quality.to_decide(comp, bench) or {}
    return {
        "speedup": comp["speedup"],
        "speedup_ci_lo": lo,
        "speedup_ci_hi": hi,
        "confidence": source["confidence"],
        "hedges_g": comp.get("hedges_g"),
        "cliffs_delta": comp.get("cliffs_delta"),
        "p_value": comp["p_value"],
        "p_adjusted": source.get("p_adjusted", comp["p_value"]),
        "verdict": source["verdict"],
        "rounds": comp["rounds"],
        "rounds_to_decide": comp.get("rounds_to_decide"),
        "seconds_to_decide": need.get("seconds"),
    }


COMPARISON_COLUMNS = COLUMNS[COLUMNS.index("speedup") : COLUMNS.index("fastest")]


def plot_frame(frame: pd.DataFrame, analysis: Json) -> pd.DataFrame:
    """The summary table as the plots draw it: a kernel with configurations (autotune.json) is one
    candidate, "kernel (fastest configuration)", on each shape the row of its fastest configuration
    there (of its first configuration where none ran ok), so that 40 configurations do not make 40
    legend entries and heatmap columns. summary.csv keeps every row."""
    families = _families(analysis)
    if not families:
        return frame
    keep = pd.Series(True, index=frame.index)
    names = frame["candidate"].copy()
    for family in families:
        members = frame["candidate"].isin(family["configurations"])
        chosen = {s["shape"]: (s["fastest"] or {}).get("candidate") for s in family["shapes"]}
        for shape, rows in frame[members].groupby("shape", sort=False):
            pick = chosen.get(shape) or rows["candidate"].iloc[0]
            keep[rows.index] = rows["candidate"] == pick
        names[members] = f"{family['family']} (fastest configuration)"
    return frame.assign(candidate=names)[keep].reset_index(drop=True)


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    return value / ceiling if value is not None and ceiling is not None else None


# --------------------------------------------------------------------------------------- sections


@dataclass
class Heading:
    kind: ClassVar[str] = "heading"
    level: int
    text: str


@dataclass
class Para:
    kind: ClassVar[str] = "para"
    text: str
    css: str = ""


@dataclass
class Table:
    kind: ClassVar[str] = "table"
    headers: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)
    status_col: int | None = None
    text_cols: set[int] = field(default_factory=set)  # free text (reasons, settings): may wrap anywhere
    highlight: list[bool] = field(default_factory=list)
    flagged: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells a reader must not miss
    cell_css: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, column): extra CSS classes


@dataclass
class Plot:
    kind: ClassVar[str] = "plot"
    key: str

    @property
    def alt(self) -> str:
        return ALT[self.key]


@dataclass
class Details:
    """Long text a reader may want but should not have to scroll past (a library's whole message, a
    traceback): collapsed in HTML, a code block under its summary in Markdown."""

    kind: ClassVar[str] = "details"
    summary: str
    text: str

    @property
    def fence(self) -> str:
        """A Markdown code fence longer than any run of backticks in the text."""
        longest = max((len(run) for run in re.findall(r"`+", self.text)), default=0)
        return "`" * max(3, longest + 1)


Block = Heading | Para | Table | Plot | Details


@dataclass
class Section:
    """One `##` section of the report: its title and what it shows, in order."""

    title: str
    blocks: list[Block]


def _missed(target_met: Any) -> bool:
    """False, not merely falsy: None (no timing) and NaN (no value in the frame) are not misses."""
    return target_met is not None and not pd.isna(target_met) and not target_met


def _precision(rel_ci: Any, target: Any, target_met: Any) -> str:
    if rel_ci is None or pd.isna(rel_ci):
        return DASH
    text = pm(rel_ci)
    if not _missed(target_met):
        return text
    goal = DASH if target is None or pd.isna(target) else pm(target)
    if text == goal:  # 1.04% against 1%: rounding must not make a miss look like a hit
        text = pm(rel_ci, 2)
    return f"{text} ({FLAG} target {goal} missed)"


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
    return ", ".join(f"{k}={v}" for k, v in pairs) if pairs else DASH


def _distinct(values: Any) -> str:
    return ", ".join(str(v) for v in dict.fromkeys(values)) or DASH


def document(run: Run) -> list[Section]:
    """The report once, as sections; the Markdown and HTML templates only differ in syntax."""
    frame, benches, summary = run.frame, run.benches, run.summary
    unavailable = set(summary["unavailable"])
    family_of = _family_of(run.analysis)
    return [
        _headline_section(frame, benches, summary, family_of, run.compares),
        _matrix_section(summary, run.analysis),
        _plots_section(run.analysis),
        _results_section(frame[~frame["candidate"].isin(unavailable)], run.analysis.get("family")),
        _memory_section(frame, run.growth),
        _autotune_section(frame, run.analysis),
        _not_ok_section(frame[~frame["candidate"].isin(unavailable)], benches),
        _conditions_section(benches),
        _ran_section(frame),
        _run_summary(frame, benches, run.fingerprint),
        _fingerprint_section(run.fingerprint),
        *_provenance_section(run.provenance),
        _ceilings_section(run.ceilings, benches),
        _method_section(benches, run.compares, run.analysis),
    ]


# the overview first: the speedup heatmap answers "which is fastest where" at a glance
PLOT_ORDER = ("speedup", "latency", "roofline", "memory")


def _plots_section(analysis: Json) -> Section:
    plots: list[Block] = [Plot(key) for key in PLOT_ORDER]
    families = [f["family"] for f in _families(analysis)]
    if not families:
        return Section("Plots", plots)
    note = Para(
        f"Each kernel with configurations ({', '.join(families)}) is drawn as one candidate, "
        '"(fastest configuration)": on each shape its fastest configuration there.'
    )
    return Section("Plots", [note, *plots])


def _to_decide(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(shape, candidate) -> what a comparison with too few rounds would need, in words
    (quality.to_decide_text), from summary.csv's columns."""
    few = frame[frame["verdict"] == TOO_FEW_ROUNDS]
    return {
        (row.shape, row.candidate): quality.to_decide_text(
            None
            if formatting.missing(row.rounds_to_decide)
            else {
                "rounds": int(row.rounds_to_decide),
                "seconds": None
                if formatting.missing(row.seconds_to_decide)
                else float(row.seconds_to_decide),
            }
        )
        for row in few.itertuples(index=False)
    }


def _speedup(speedup: Any, ci: Any, significant: Any, verdict: Any, need: str | None = None) -> str:
    """headline.speedup_text, and for a comparison with too few rounds what would decide it (`need`)."""
    text = headline.speedup_text(speedup, ci, not pd.isna(significant) and bool(significant), verdict)
    return f"{text} ({need})" if verdict == TOO_FEW_ROUNDS and need else text


def _summary_intervals(summary: Json, matrix: bool = False) -> str:
    """`_intervals` of the headline's shapes (or of every cell of its matrix)."""
    entries = (
        [c for row in summary["matrix"]["rows"] for c in row["cells"].values()]
        if matrix
        else summary["shapes"]
    )
    return _intervals(
        [e["confidence"] for e in entries if e.get("confidence") is not None], summary.get("family")
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _headline_section(
    frame: pd.DataFrame,
    benches: list[Json],
    summary: Json,
    family_of: dict[str, str] | None = None,
    compares: list[Json] | None = None,
) -> Section:
    """The answer first: per shape the fastest correct candidate and its speedup, each candidate's
    wins and ties, then what failed or cannot run here, in a line each. A kernel's many
    configurations (`family_of`: configuration -> kernel) are collapsed where they would be a long
    list: tied configurations are counted, those never fastest or tied are one row of the tallies."""
    family_of = family_of or {}
    reference = summary["reference"] or "the reference"
    shown = [name for name in summary["candidates"] if name not in summary["unavailable"]]
    context = (
        f"{_plural(len(summary['shapes']), 'shape')} × {_plural(len(shown), 'candidate')} on "
        f"{_distinct(frame['device'])} ({_distinct(frame['dtype'])}, {_distinct(frame['mode'])}). "
        f"Per shape, the fastest candidate whose output matched the float64 reference, and its speedup "
        f"over {reference} with its interval ({_summary_intervals(summary)}); "
        f"{headline.SIGNIFICANT_MARK} marks a verdict of faster or slower: the interval clears the "
        "resolution band and the speedup reaches the practical threshold (Method). Tied: candidates "
        "that are not measurably slower than the fastest."
    )
    decide = _to_decide(frame)
    rows = [
        [
            str(s["shape"]),
            DASH if s["fastest"] is None else str(s["fastest"]),
            "nothing timed ok"
            if s["fastest"] is None
            else _speedup(
                s["speedup"], s["ci"], s["significant"], s["verdict"], decide.get((s["shape"], s["fastest"]))
            ),
            _names(s["tied"], family_of) or DASH,
        ]
        for s in summary["shapes"]
    ]
    winners = Table(
        ["shape", "fastest", f"speedup vs {reference} [interval]", "tied with the fastest"],
        rows,
        numeric={2},
        highlight=[False] * len(rows),
    )
    tallies = _tallies(summary["candidates"], shown, family_of)
    blocks: list[Block] = [
        Para(context),
        _measurement_summary(quality.summarize(benches, compares)),
        winners,
        Table(
            ["candidate", "fastest on", "tied on", "ok", "unsupported", "failed"],
            tallies,
            numeric={1, 2, 3, 4, 5},
        ),
    ]
    for family, members in _groups(list(summary["unavailable"]), family_of):
        if family is not None and len(members) > COLLAPSE_ABOVE:
            # a grid's configurations that never fit this device: one line, each reason once
            reasons = Counter(summary["unavailable"][name] for name in members)
            listed = "; ".join(f"{reason} ({n})" for reason, n in reasons.most_common())
            blocks.append(
                Para(
                    f"Unsupported on every shape, left out below: {len(members)} configurations of {family}: {listed}"
                )
            )
            members = members[:1]  # the library's message once
        else:
            for name in members:
                blocks.append(
                    Para(
                        f"Unsupported on every shape, left out below: {name}: {summary['unavailable'][name]}"
                    )
                )
        for name in members:
            detail = _first(benches, name, "reason_detail")
            if detail:
                blocks.append(Details(f"{name}: the library's message", detail))
    failures = summary["failures"]
    if failures:
        kinds = Counter((f["candidate"], f["status"]) for f in failures)
        listed = "; ".join(f"{c} {s} on {_plural(n, 'shape')}" for (c, s), n in kinds.items())
        blocks.append(
            Para(
                f"{FLAG} {_plural(len(failures), 'result')} failed: {listed} (reasons under "
                '"Candidates that did not produce a valid result").',
                css="warning",
            )
        )
    return Section("Headline", blocks)


# More configurations of one kernel than this in a list of names print as one entry, their count.
COLLAPSE_ABOVE = 3
# Tied configurations named in a kernel's table of configurations; the rest are counted.
NAMED_TIES = 5


def _family_of(analysis: Json) -> dict[str, str]:
    """Configuration -> its kernel, for the kernels autotune.json analyses as configurations."""
    return {name: f["family"] for f in _families(analysis) for name in f["configurations"]}


def _families(analysis: Json) -> list[Json]:
    """autotune.json's kernels with configurations (none in files written before them)."""
    return list((analysis.get("configurations") or {}).get("families", []))


def _groups(names: list[str], family_of: dict[str, str]) -> list[tuple[str | None, list[str]]]:
    """`names` in order, the configurations of one kernel gathered at the first one's place:
    (kernel, its configurations) or (None, [a name that is no configuration])."""
    groups: dict[Any, tuple[str | None, list[str]]] = {}
    for name in names:
        family = family_of.get(name)
        key: Any = ("family", family) if family is not None else ("name", name)
        groups.setdefault(key, (family, []))[1].append(name)
    return list(groups.values())


def _names(names: list[str], family_of: dict[str, str]) -> str:
    """Names joined by commas; more than COLLAPSE_ABOVE configurations of one kernel print as
    "N configurations of kernel"."""
    parts: list[str] = []
    for family, members in _groups(names, family_of):
        if family is not None and len(members) > COLLAPSE_ABOVE:
            parts.append(f"{len(members)} configurations of {family}")
        else:
            parts += members
    return ", ".join(parts)


def _tallies(tally: Json, shown: list[str], family_of: dict[str, str]) -> list[list[str]]:
    """The headline's rows of wins and ties per candidate. Configurations that were never the
    fastest nor tied with it, when a kernel has more than COLLAPSE_ABOVE of them, are one row whose
    counts are summed over them (results, not shapes)."""
    keys = ("wins", "ties", "ok", "unsupported", "failed")
    idle = [n for n in shown if n in family_of and not (tally[n]["wins"] or tally[n]["ties"])]
    collapsed = {
        family: members
        for family, members in _groups(idle, family_of)
        if family is not None and len(members) > COLLAPSE_ABOVE
    }
    rows, done = [], set()
    for name in shown:
        family = family_of.get(name)
        if family in collapsed and name in collapsed[family]:
            if family not in done:
                done.add(family)
                members = collapsed[family]
                rows.append(
                    [f"{family}: {len(members)} other configurations, never fastest nor tied (results summed)",
                     "0", "0", *(str(sum(tally[m][k] for m in members)) for k in keys[2:])]
                )  # fmt: skip
            continue
        rows.append([name, *(str(tally[name][key]) for key in keys)])
    return rows


def _first(
    benches: list[Json], candidate: str, key: str, status: str | None = None, reason: Any = None
) -> str:
    """The first text under `key` (reason_detail, traceback) of a candidate's results, optionally of
    one (status, reason) group only; empty when no file has it."""
    for bench in benches:
        result = bench["candidates"].get(candidate)
        if result is None or (
            status is not None and (result["status"], result["reason"]) != (status, reason)
        ):
            continue
        if result.get(key):
            return str(result[key])
    return ""


def _matrix_section(summary: Json, analysis: Json | None = None) -> Section:
    """Shapes x candidates: every ok candidate's speedup over the reference, a status otherwise. A
    kernel with configurations is one column: on each shape its fastest configuration (autotune.json)
    and that one's speedup, so that 40 configurations do not make 40 columns."""
    matrix = summary["matrix"]
    families = {f["family"]: f for f in _families(analysis or {})}
    family_of = {name: f for f, entry in families.items() for name in entry["configurations"]}
    columns = _groups(list(matrix["candidates"]), family_of)
    rows: list[list[str]] = []
    css: dict[tuple[int, int], str] = {}
    for r, row in enumerate(matrix["rows"]):
        line = [str(row["shape"])]
        for c, (family, members) in enumerate(columns, start=1):
            if family is None:
                name = members[0]
                prefix = ""
            else:
                chosen = {s["shape"]: s["fastest"] for s in families[family]["shapes"]}.get(row["shape"])
                name = None if chosen is None else chosen["candidate"]
                prefix = "" if name is None else f"{_configuration(name, family)}: "
            cell = None if name is None else row["cells"].get(name)
            if cell is None:
                line.append(_none_ok(row["cells"], members) if family is not None else DASH)
            elif cell["status"] != Status.OK:
                line.append(str(cell["status"]))
                css[(r, c)] = f"status status-{cell['status']}"
            elif cell["verdict"] == "reference":
                line.append(f"{prefix}reference")
            else:
                line.append(
                    prefix
                    + headline.speedup_text(cell["speedup"], cell["ci"], cell["significant"], cell["verdict"])
                )
            if cell is not None and cell["fastest"]:
                css[(r, c)] = "fastest"
        rows.append(line)
    intro = (
        f"Speedup of each candidate over {summary['reference'] or 'the reference'} per shape "
        f"[interval] ({_summary_intervals(summary, matrix=True)}); {headline.SIGNIFICANT_MARK} a verdict "
        "of faster or slower, bold the shape's fastest. A status instead of a number: the "
        "candidate did not produce a valid result (see below)."
    )
    if any(family is not None for family, _ in columns):
        intro += (
            " A kernel with configurations is one column: on each shape its fastest configuration and "
            "that configuration's speedup (every configuration under Results per shape; the one to use "
            "on every shape under Autotune)."
        )
    headers = [
        "shape",
        *(members[0] if f is None else f"{f} (fastest configuration)" for f, members in columns),
    ]
    single = {c for c, (family, _) in enumerate(columns, start=1) if family is None}
    table = Table(headers, rows, numeric=single, text_cols=set(range(1, len(headers))) - single, cell_css=css)
    return Section("Speedup per shape and candidate", [Para(intro), table])


def _configuration(name: str, family: str) -> str:
    """A configuration's name without its kernel's, `[BLOCK_M=128,num_warps=8]`, where the kernel is
    named already (a column's or a table's heading)."""
    return name[len(family) :] if name.startswith(family) and len(name) > len(family) else name


def _none_ok(cells: Json, members: list[str]) -> str:
    """A kernel with no ok configuration on a shape: how many were in which status."""
    statuses = Counter(cells[name]["status"] for name in members if name in cells)
    if not statuses:
        return DASH
    return "none ok: " + ", ".join(f"{status} ×{n}" for status, n in statuses.most_common())


def _device(frame: pd.DataFrame, fingerprint: Json) -> str:
    """The device, and when `device: auto` found no usable GPU, that the run fell back and why."""
    device = _distinct(frame["device"])
    if fingerprint.get("requested_device") == "auto" and fingerprint.get("device") == "cpu":
        return f"{device} (device: auto fell back to the CPU: {fingerprint.get('gpu_reason')})"
    return device


def _run_summary(frame: pd.DataFrame, benches: list[Json], fingerprint: Json) -> Section:
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
        ["results by status", ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())) or DASH],
    ]
    return Section("Run summary", [Table(["", "value"], rows)])


def _gpus_used(benches: list[Json]) -> list[list[str]]:
    """A row naming the GPUs when there were GPUs: which index and UUID ran how many shapes."""
    gpus = [b.get("device_info", {}) for b in benches]
    named = [f"{g['index']} ({g['uuid']})" for g in gpus if g.get("uuid")]
    return [["GPUs (index as nvidia-smi shows it)", _counts(named)]] if named else []


def _counts(values: Any) -> str:
    counts = Counter(values)
    return ", ".join(f"{v}: {n} shape{'s' if n != 1 else ''}" for v, n in counts.items()) or DASH


def _measurement_summary(summary: Json) -> Para:
    """One line up front, so that an imprecise or throttled run is not read as a clean one
    (quality.summarize's counts, which the end of a run prints too)."""
    text = quality.text(summary)
    text = f"Measurement: {text[0].upper()}{text[1:]} (see Measurement conditions)."
    return Para(f"{FLAG} {text}" if summary["warn"] else text, css="warning" if summary["warn"] else "")


def _fingerprint_section(fp: Json) -> Section:
    gpu = fp["gpu"]
    labels = {
        "name": "GPU",
        "uuid": "GPU UUID",
        "driver_version": "driver",
        "compute_capability": "compute capability",
        "sm_count": "SMs",
        "memory_total_mb": "GPU memory (MB)",
    }
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
        ["CUDA", str(torch["cuda"] or DASH)],
        ["cuDNN", str(torch["cudnn"] or DASH)],
        ["Triton", str(torch["triton"] or DASH)],
        ["git commit", _git_commit(fp["git"])],
        ["lock", _settings(fp["lock"])],
        ["environment variables", _settings(fp["env_vars"])],
        ["fingerprint taken", fp["created"]],
    ]
    return Section("Environment", [Table(["", "value"], rows, text_cols={1})])


def _git_commit(git: Json) -> str:
    if git["commit"] is None:
        return f"unknown: {git.get('reason') or 'not recorded'}"
    if not git["dirty"]:
        return git["commit"]
    diff = git.get("diff_digest")
    return f"{git['commit']} (dirty{f', diff {diff[:19]}' if diff else ''})"


def _provenance_section(provenance: Json) -> list[Section]:
    """Where the results came from, when that is not simply the fingerprint's checkout: which shapes
    each checkout measured, and the result files read without a digest. Nothing otherwise."""
    blocks: list[Block] = []
    if provenance.get("several") or provenance.get("elsewhere"):
        groups = provenance["groups"]
        blocks += [
            Para(
                f"The shapes were measured at {_plural(len(groups), 'checkout')}; the Environment above is "
                f"the fingerprint's, taken at {provenance['current']}."
            ),
            Table(
                ["measured at", "shapes"],
                [[group["label"], ", ".join(group["shapes"])] for group in groups],
                text_cols={0, 1},
            ),
        ]
    if provenance.get("unverified"):
        names = provenance["unverified"]
        blocks.append(
            Para(
                f"{FLAG} {_plural(len(names), 'result file')} {'carries' if len(names) == 1 else 'carry'} no content digest (written by an attnbench "
                f"older than digests; their medians and intervals were checked against their samples, but an "
                f"edit cannot be told): {', '.join(names)}. Measure them again to verify them.",
                css="warning",
            )
        )
    return [Section("Provenance", blocks)] if blocks else []


def _ceilings_section(ceilings: Json, benches: list[Json]) -> Section:
    measured_on = ceilings.get("device_name") or ceilings["device"]
    rows = [
        [
            f"matmul {dtype}",
            f"{num(entry['tflops'])} TFLOP/s",
            num(entry["size"]),
            num(entry["median_ms"]),
            str(entry["method"]),
        ]
        for dtype, entry in ceilings["matmul"].items()
    ]
    for name in ("copy", "read", "write"):
        if entry := ceilings.get(name):  # read and write: absent from files written before them
            rows.append(
                [
                    name,
                    f"{num(entry['gbytes_per_s'])} GB/s",
                    f"{num(entry['bytes'])} bytes",
                    num(entry["median_ms"]),
                    str(entry["method"]),
                ]
            )
    when = f" at {ceilings['measured_at']}" if ceilings.get("measured_at") else ""
    said = f"Measured on {measured_on}{when}."
    if ceilings.get("reused"):
        said += (
            " Reused by this run: measured earlier on this device with the same driver, software,"
            " attnbench and settings (calibrate: {reuse: false} in the config measures them again)."
        )
    blocks: list[Block] = [
        Para(said),
        Table(["ceiling", "value", "size", "median ms", "method"], rows, numeric={1, 2, 3}),
    ]
    bench_devices = {b.get("device_info", {}).get("name") for b in benches} - {None}
    if ceilings.get("device_name") and bench_devices and ceilings["device_name"] not in bench_devices:
        blocks.append(
            Para(
                f"Warning: the ceilings were measured on {ceilings['device_name']}, the benchmarks ran "
                f"on {', '.join(sorted(bench_devices))}; the fractions of ceiling compare different "
                "devices.",
                css="warning",
            )
        )
    return Section("Measured ceilings", blocks)


def _results_section(frame: pd.DataFrame, family: int | None = None) -> Section:
    """Per shape, every candidate's numbers; secondary columns (matmul share, peak memory, effect
    sizes, what ran) are in summary.csv, so that each table fits a laptop's window."""
    blocks: list[Block] = [
        Para(
            "± is the half-width of the median's 95% confidence interval over the median. Sampling "
            "stops once every candidate of the shape is within the run's target "
            f"({_distinct(pm(t) for t in frame['target_rel_ci'].dropna())}); a result marked "
            '"target missed" ran out of time or rounds first, so its median is less precise than '
            "asked for and small differences involving it deserve caution. Error: the output's "
            "relative error against the float64 reference. Workspace: what one call allocated beyond "
            "the inputs and its output (its peak above what was allocated before it), and the "
            "allocations it made, output included (allocations inside a timed call cost time). "
            f"Speedup: over the reference, with its interval ({_confidence(frame, family)}); "
            f"{headline.SIGNIFICANT_MARK}: a verdict of faster or slower; p: the p-value with the same "
            "correction. Every other column is in summary.csv."
        ),
    ]
    decide = _to_decide(frame)
    for shape, rows in frame.groupby("shape", sort=False):
        first = rows.iloc[0]
        dims = ", ".join(f"{f}={first[f]}" for f in SHAPE_FIELDS if f != "causal")
        reference = first["reference"]
        blocks.append(Heading(3, f"{shape} ({dims}, {first['attention']})"))
        blocks += _how_given(rows) + _remeasured(rows)
        body = []
        flagged: set[tuple[int, int]] = set()
        for r, row in enumerate(rows.itertuples(index=False)):
            if _missed(row.target_met):
                flagged.add((r, 3))
            if row.candidate == reference:
                speedup, p_adjusted = "reference", DASH
            else:
                lo, hi = row.speedup_ci_lo, row.speedup_ci_hi
                speedup = _speedup(
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
                    str(row.status),
                    interval(row.median_ms, row.ci95_lo_ms, row.ci95_hi_ms),
                    _precision(row.rel_ci, row.target_rel_ci, row.target_met),
                    _throughput(row.tflops, row.bandwidth_gbs),
                    _bound(row.fraction_of_bound, row.bound_limited_by),
                    num(row.rel_error, 2),
                    _workspace(row.workspace_mb, row.allocations),
                    speedup,
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
            "error",
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


def _confidence(frame: pd.DataFrame, family: int | None) -> str:
    """`_intervals` of the summary table's comparisons."""
    return _intervals(frame["confidence"].dropna(), family)


def _intervals(confidences: Any, family: int | None) -> str:
    """How sure the printed intervals are, `99.8% intervals, corrected for the run's 24 comparisons`,
    the levels as the documents record them (quality.level: never rounded up to 100%)."""
    levels = sorted(set(confidences))
    if not levels:
        return "no intervals"
    text = quality.level(levels[0]) + (f" to {quality.level(levels[-1])}" if len(levels) > 1 else "")
    corrected = f", corrected for the run's {family} comparisons" if family and family > 1 else ""
    return f"{text} intervals{corrected}"


def _workspace(workspace_mb: Any, allocations: Any) -> str:
    """`36.0 (12)`: the call's workspace in MB and its allocations; a dash where not measured."""
    if formatting.missing(workspace_mb):
        return DASH
    return (
        f"{num(workspace_mb)} ({int(allocations)})"
        if not formatting.missing(allocations)
        else num(workspace_mb)
    )


def _memory_section(frame: pd.DataFrame, growth: Json) -> Section:
    """How each candidate's workspace grows with the sequence length, and the shapes at risk of
    running out of memory: the plot draws the same workspaces against the device's memory."""
    rows = [
        [
            name,
            DASH if fit["exponent"] is None else f"seq^{fit['exponent']:.2f}",
            str(fit["points"]),
            fit["reading"],
        ]
        for name, fit in growth.items()
    ]
    intro = (
        "Workspace per (batch, head) against the sequence length, fitted on a log-log scale over the "
        "shapes where the candidate ran ok: an exponent near 2 means the call materialises a seq × seq "
        "score matrix, near 1 or below that it streams. The workspace excludes the inputs, the output "
        "and whatever the job held before the call (the float64 reference included); summary.csv has "
        "each call's output, allocations, reserved-memory growth, for forward_backward the activations "
        "saved for the backward and the backward's own workspace, and the projected total."
    )
    blocks: list[Block] = [Para(intro)]
    if rows:
        blocks.append(Table(["candidate", "workspace grows as", "shapes", "reading"], rows, numeric={2}))
    else:
        blocks.append(Para("No candidate recorded a workspace (results written before it was measured)."))
    at_risk = frame[frame["oom_risk"].astype("boolean").fillna(False)]
    if not at_risk.empty:
        listed = ", ".join(
            f"{r.candidate} on {r.shape} ({num(r.projected_mb)} MB)" for r in at_risk.itertuples()
        )
        blocks.append(
            Para(f"{FLAG} Out-of-memory risk (inputs and the call's own peak above 85% of the device's "
                 f"memory, or above what was free): {listed}.", css="warning")
        )  # fmt: skip
    return Section("Memory", blocks)


def _autotune_section(frame: pd.DataFrame, analysis: Json) -> Section:
    """One table: per shape the candidate to pick and those no measurably worse choice than it; then,
    per kernel with configurations, its table of configurations and the one to use on every shape."""
    intro = (
        "Per shape, the fastest candidate is the one with the lowest median among those with status "
        "ok. Every other ok candidate was compared with it by the same test and settings as the "
        "comparisons with the reference (speedup of the candidate over the fastest, so below 1 is "
        f"slower), and corrected with the rest of the run ({_correction(analysis)}). A candidate is "
        "tied with the fastest unless its corrected verdict is slower: its interval lies below the "
        "resolution band and it is slower by at least the practical threshold. As far as these "
        "measurements can tell, a tied candidate is as good a choice."
    )
    headers = [
        "shape",
        "fastest",
        "median ms [95% CI]",
        "tied: slower by, speedup vs the fastest [interval], p (adjusted)",
        "significantly slower",
    ]
    family_of = _family_of(analysis)
    shapes = {s["shape"]: s for s in analysis["shapes"]}
    rows = []
    for shape in dict.fromkeys(frame["shape"]):
        best, compared = shapes[shape]["fastest"], shapes[shape]["rivals"]
        if best is None:
            rows.append([str(shape), DASH, "no candidate has status ok", DASH, DASH])
            continue
        ties = {t["candidate"]: t for t in autotune.ties(shapes[shape])}
        parts = []
        for family, members in _groups(list(ties), family_of):
            if family is not None and len(members) > COLLAPSE_ABOVE:
                parts.append(f"{len(members)} configurations of {family} (see below)")
                continue
            parts += [_tie(ties[name]) for name in members]
        # neither tied nor slower: too few rounds to tell, said in the ties' column without a number
        parts += [_tie(r) for r in compared if r["verdict"] == TOO_FEW_ROUNDS]
        slower = [r["candidate"] for r in compared if r["verdict"] == "slower"]
        rows.append(
            [str(shape), best["candidate"], _ci_interval(best["median_ms"], best["ci95_ms"]), "; ".join(parts) or "none",
             _names(slower, family_of) or "none"]
        )  # fmt: skip
    blocks: list[Block] = [Para(intro), Table(headers, rows, numeric={2}, text_cols={3, 4})]
    return Section("Autotune", blocks + _configuration_blocks(analysis))


def _tie(rival: Json) -> str:
    """A candidate tied with the fastest: how much slower, its speedup over the fastest with the
    corrected interval, and the adjusted p; too few rounds say so instead of numbers."""
    if rival["verdict"] == TOO_FEW_ROUNDS:
        return f"{rival['candidate']}: {TOO_FEW_ROUNDS} ({_plural(rival['rounds'], 'round')})"
    return (
        f"{rival['candidate']}: {_slower(rival['speedup'])}, "
        f"{speedup_interval(rival['speedup'], *(rival['speedup_ci'] or (None, None)))}, p {num(rival['p_adjusted'], 2)}"
    )


def _corrected(analysis: Json) -> list[Json]:
    """Every corrected comparison of autotune.json: with the reference, autotune's, the configurations'."""
    entries = list(analysis["reference"]["comparisons"])
    entries += [r for s in analysis["shapes"] for r in s["rivals"]]
    return entries + [r for f in _families(analysis) for s in f["shapes"] for r in s["rivals"]]


def _correction(analysis: Json) -> str:
    """The run-wide correction in words: `Bonferroni for the run's 24 comparisons: intervals at
    99.8%, p-values times 24`, the level as the entries of autotune.json record it."""
    family = analysis.get("family") or 1
    levels = sorted({e["confidence"] for e in _corrected(analysis) if e.get("confidence") is not None})
    if not levels:
        return f"Bonferroni for the run's {_plural(family, 'comparison')}"
    level = "; ".join(quality.level(c) for c in levels)
    return f"Bonferroni for the run's {_plural(family, 'comparison')}: intervals at {level}, p-values times {family}"


def _configuration_blocks(analysis: Json) -> list[Block]:
    """Per kernel with configurations: per shape its fastest configuration and the configurations
    tied with it, the configuration recommended for every shape, and the runners-up."""
    families = _families(analysis)
    if not families:
        return []
    blocks: list[Block] = [
        Heading(3, "Kernel configurations"),
        Para(
            "For each kernel measured in several configurations, per shape: its "
            "fastest configuration (lowest median among its configurations with status ok) and the "
            "configurations tied with it, by the rule above within the kernel (its "
            f"{analysis['configurations']['n_comparisons']} configuration comparisons corrected with the "
            f"rest of the run: {_correction(analysis)}), "
            f"counted and the first {NAMED_TIES}, fastest first, named. One "
            "configuration is recommended for every shape: among those that ran ok on every shape where "
            "the kernel ran, the one whose worst slowdown against a shape's fastest configuration is "
            "smallest (minimax). Slowdown = the inverse of the configuration's speedup over the shape's "
            "fastest configuration: its time over the fastest's, the geometric mean over the rounds (the "
            "medians' ratio where there were too few rounds; 1.0× is the fastest itself). The worst slowdown's interval is [the largest lower bound, the largest "
            "upper bound] of the per-shape corrected intervals: it covers the true worst slowdown "
            "whenever every shape's interval covers its own, which the correction makes hold together "
            f"with probability at least {quality.level(1 - analysis['alpha'])} (Bonferroni), usually more. Every "
            "configuration's numbers are under Results per shape and in autotune.json."
        ),
    ]
    for family in families:
        blocks += _family_blocks(family)
    return blocks


def _family_blocks(family: Json) -> list[Block]:
    name, configs = family["family"], family["configurations"]
    rec = family["recommendation"]
    on_shape = {s["shape"]: s for s in (rec or {}).get("per_shape", [])}
    counted = [s for s in family["shapes"] if s["fastest"] is not None]
    rows = []
    for shape in family["shapes"]:
        best = shape["fastest"]
        statuses = Counter(x["status"] for x in shape["not_ok"])
        not_ok = (
            f"{sum(statuses.values())}: " + ", ".join(f"{st} ×{n}" for st, n in statuses.most_common())
            if statuses
            else "none"
        )
        if best is None:
            rows.append(
                [
                    shape["shape"],
                    DASH,
                    "no configuration has status ok",
                    DASH,
                    *([DASH] if rec else []),
                    not_ok,
                ]
            )
            continue
        tied = autotune.ties(shape)
        named = ", ".join(_configuration(t["candidate"], name) for t in tied[:NAMED_TIES])
        more = f" and {len(tied) - NAMED_TIES} more" if len(tied) > NAMED_TIES else ""
        cells = [
            shape["shape"],
            _configuration(best["candidate"], name),
            _ci_interval(best["median_ms"], best["ci95_ms"]),
            f"{len(tied)}: {named}{more}" if tied else "none",
        ]
        if rec:
            cells.append(_recommended_on(on_shape[shape["shape"]], rec["candidate"] == best["candidate"]))
        rows.append([*cells, not_ok])
    headers = ["shape", "fastest configuration", "median ms [95% CI]", "tied with it"]
    if rec:
        headers.append(f"recommended {_configuration(rec['candidate'], name)}: slowdown [interval]")
    headers.append("not ok")
    blocks: list[Block] = [
        Heading(4, f"{name} ({_plural(len(configs), 'configuration')}, "
                   f"{len(counted)} of {_plural(len(family['shapes']), 'shape')} with one ok)"),
        Table(headers, rows, numeric={2}, text_cols={1, 3} | ({4} if rec else set())),
        Para(_recommendation_text(family)),
    ]  # fmt: skip
    ranked = [r for r in family["ranking"] if r["everywhere"]]
    if len(ranked) > 1:
        top = ranked[:NAMED_TIES]
        blocks += [
            Para(f"The {_plural(len(top), 'configuration')} with the smallest worst slowdown, of the "
                 f"{len(ranked)} that ran ok on every shape (all in autotune.json, ranking):"),
            Table(
                ["configuration", "worst slowdown [interval]", "on", "fastest or tied on"],
                [[_configuration(r["candidate"], name),
                  _ci_interval(r["worst_slowdown"], r["worst_slowdown_ci"], "×", (1.0,)),
                  str(r["worst_shape"]), f"{len(r['tied_shapes'])} of {len(counted)}"] for r in top],
                numeric={1, 3},
                text_cols={0},
            ),
        ]  # fmt: skip
    return blocks


def _recommended_on(slow: Json, fastest: bool) -> str:
    """The recommended configuration on one shape: fastest there, or its slowdown [CI] and whether tied."""
    if fastest:
        return "fastest"
    text = f"{_ci_interval(slow['slowdown'], slow['slowdown_ci'], '×', BOUND_MARKS)}"
    return f"{text}, tied" if slow["tied"] else text


def _recommendation_text(family: Json) -> str:
    """The family's recommendation in one paragraph: what, its worst slowdown with the CI and where,
    where it is tied with the fastest, and which configurations could not be considered."""
    name, rec = family["family"], family["recommendation"]
    excluded = [r for r in family["ranking"] if not r["everywhere"]]

    def where(r: Json) -> str:
        statuses = Counter(x["status"] for x in r["not_ok"])
        if len(r["not_ok"]) == 1:
            return f"{r['not_ok'][0]['status']} on {r['not_ok'][0]['shape']}"
        return ", ".join(f"{st} on {_plural(n, 'shape')}" for st, n in statuses.most_common())

    listed = "; ".join(f"{_configuration(r['candidate'], name)} ({where(r)})" for r in excluded[:NAMED_TIES])
    if len(excluded) > NAMED_TIES:
        listed += f"; and {len(excluded) - NAMED_TIES} more"
    if rec is None:
        text = f"{FLAG} No configuration of {name} can be recommended for every shape: {family['reason']}."
        return text + (
            f" Not ok somewhere: {listed}."
            if excluded and any(r["shapes_ok"] for r in family["ranking"])
            else ""
        )
    shapes = len(rec["per_shape"])
    text = f"Recommended for every shape: {rec['candidate']}. "
    if rec["worst_slowdown"] <= 1.0:
        text += f"It is the fastest configuration on {'every shape' if shapes > 1 else 'the shape'}"
    else:
        worst = _ci_interval(rec["worst_slowdown"], rec["worst_slowdown_ci"], "×", (1.0,))
        tied = rec["tied_shapes"]
        text += (
            f"Its worst slowdown against a shape's fastest configuration is {worst} "
            f"({_slower(1 / rec['worst_slowdown'])} slower), on {rec['worst_shape']}; "
            + (
                f"it is the fastest or tied with it on {', '.join(tied)} ({len(tied)} of {shapes} shapes)"
                if tied
                else "it is significantly slower than the fastest on every shape"
            )
        )
    if rec["among"] == "all":
        text += f". Chosen among all {rec['n_configurations']} configurations."
    else:
        text += (
            f". Chosen among the {rec['n_eligible']} of {rec['n_configurations']} configurations that ran ok "
            f"on every shape where the kernel ran; the others cannot be recommended for all shapes: {listed}."
        )
    if rec["shapes_without_ok"]:
        text += f" No configuration ran ok on {', '.join(rec['shapes_without_ok'])}: left out of the choice."
    return text


def _ci_interval(centre: Any, ci: list[float] | None, suffix: str = "", marks: tuple[float, ...] = ()) -> str:
    """formatting.interval for a [lo, hi] pair as the result files hold it (None when unknown)."""
    lo, hi = ci or (None, None)
    return interval(centre, lo, hi, suffix, marks)


def _slower(speedup: Any) -> str:
    """How much longer a candidate takes than the fastest, from speedup = fastest / candidate."""
    if speedup is None or pd.isna(speedup) or speedup <= 0:
        return DASH
    return f"{100 * (1 / float(speedup) - 1):.1f}%"


def _host_text(host: Json | None) -> str:
    """Threads used, CPUs, and the load average before and after: other work on the host slows a
    CPU run without any clock to show it."""
    if not host:
        return DASH
    threads = f"{DASH} threads" if host.get("threads") is None else _plural(host["threads"], "thread")
    loads = [DASH if host.get(k) is None else f"{host[k]:.2f}" for k in ("load_before", "load_after")]
    text = f"{threads} of {_plural(host['cpus'], 'CPU')}, load {loads[0]} → {loads[1]}"
    return f"{FLAG} busy: {host.get('why') or 'no reason recorded'}; {text}" if host.get("busy") else text


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


def _conditions_section(benches: list[Json]) -> Section:
    """How each shape was timed: a median is only as good as the conditions it was taken under.

    The GPU clock columns appear only when some shape's clock was read, the host column only when
    the bench files record the host (older files do not), so a CPU run's table fits the page.
    """
    monitored = any(b["timing"]["clocks"]["source"] is not None for b in benches)
    with_host = any(b.get("host") for b in benches)
    # Two tables, so that each fits a 1400 px window: how each shape was sampled, then what the
    # GPU's clock and the host did meanwhile.
    sampled: list[dict[str, tuple[str, bool]]] = []
    around: list[dict[str, tuple[str, bool]]] = []
    for bench in benches:
        timing, clocks, warmup = bench["timing"], bench["timing"]["clocks"], bench["timing"]["warmup"]
        issues = quality.shape_issues(bench)
        discarded = "n/a" if clocks["source"] is None else str(clocks["discarded_rounds"])
        if clocks["source"] is not None and not timing.get("discard_throttled", True):
            discarded += " (discarding off)"
        settled = "yes" if warmup["settled"] else "no"
        missed = any(c["target_met"] is False for c in bench["candidates"].values())
        shape = (str(bench["shape"]["name"]), False)
        # header -> (cell, flagged)
        sampled.append({
            "shape": shape,
            "timing mode": (_mode_text(bench), False),
            "why this mode": (str(timing["mode_reason"]), False),
            "warm-up": (f"{warmup['rounds']} rounds, {warmup['seconds']:.1f} s, settled: {settled}",
                        not warmup["settled"]),
            "rounds kept / run": (f"{timing['rounds_kept']} / {timing['rounds_run']}", False),
            "stop reason": (str(timing["stop_reason"]), missed),
            "checks": (f"{FLAG} " + "; ".join(issues) if issues else "ok", bool(issues)),
        })  # fmt: skip
        cells = {"shape": shape}
        if monitored:
            cells |= {
                "mean SM clock (min–max)": (_clock_text(bench), False),
                "throttled rounds (events)": (_throttle_text(clocks), bool(quality.kept_slowdowns(timing))),
                "discarded rounds": (discarded, clocks["discarded_rounds"] > 0),
            }
        if with_host:
            host = bench.get("host") or {}
            cells["host"] = (_host_text(bench.get("host")), bool(host.get("busy")))
        around.append(cells)
    intro = "One row per shape. " + (
        "Throttled rounds are rounds whose NVML clock-event reasons include the power cap or a "
        "thermal or hardware slowdown (events count rounds per reason); rounds taken during a thermal "
        "or hardware slowdown are discarded whole, so kept rounds stay paired. "
        if monitored
        else "No GPU clock was read, so there are no clock or throttling columns. "
    )
    intro += f"{FLAG} marks a missed CI target, a warm-up that did not settle" + (
        ", discarded rounds" if monitored else ""
    )
    if with_host:
        intro += (
            ", or a busy host; host: the threads torch used, the host's CPUs and its load average "
            "before and after the shape"
        )
    tables = [_flagged_table(sampled)]
    if monitored or with_host:
        tables.append(_flagged_table(around))
    return Section("Measurement conditions", [Para(intro + "."), *tables])


def _flagged_table(rows: list[dict[str, tuple[str, bool]]]) -> Table:
    """A table from rows of header -> (cell, flagged)."""
    headers = list(rows[0]) if rows else ["shape"]
    return Table(
        headers,
        [[text for text, _ in row.values()] for row in rows],
        numeric={headers.index(h) for h in ("rounds kept / run", "discarded rounds") if h in headers},
        text_cols={
            headers.index(h) for h in ("why this mode", "stop reason", "checks", "host") if h in headers
        },
        flagged={(r, c) for r, row in enumerate(rows) for c, (_, bad) in enumerate(row.values()) if bad},
    )


def _not_ok_section(frame: pd.DataFrame, benches: list[Json]) -> Section:
    """One row per distinct (candidate, status, reason), the library's whole text and the traceback
    collapsed below. Candidates that cannot run here at all are in the headline, not repeated."""
    bad = frame[frame["status"] != Status.OK]
    title = "Candidates that did not produce a valid result"
    if bad.empty:
        return Section(title, [Para("Every other candidate ran and matched the reference on every shape.")])
    # A kernel that rejects twenty shapes with the same message is one finding, not twenty rows to read.
    groups = bad.groupby(["candidate", "status", bad["reason"].fillna("")], sort=False)["shape"]
    rows, details = [], []
    for (candidate, status, reason), shapes in groups:
        rows.append([str(candidate), str(status), str(reason or "no reason recorded"), ", ".join(shapes)])
        for key, what in (("reason_detail", "the library's message"), ("traceback", "traceback")):
            text = _first(benches, str(candidate), key, str(status), reason or None)
            if text:
                details.append(Details(f"{candidate}, {status}: {what}", text))
    headers = ["candidate", "status", "reason", "shapes"]
    return Section(title, [Table(headers, rows, status_col=1, text_cols={2}), *details])


def _throughput(tflops: Any, gbytes_per_s: Any) -> str:
    """TFLOP/s and, for the memory-bound (decode), GB/s of the bytes a call must move."""
    return DASH if pd.isna(tflops) else f"{num(tflops)} ({num(gbytes_per_s)})"


def _remeasured(rows: pd.DataFrame) -> list[Para]:
    """Which candidates were measured again without others caught after sampling, and why."""
    again = rows[rows["remeasured_without"].notna()]
    said = [
        f"{', '.join(group['candidate'])}: measured again without {without.replace(';', ', ')}, caught after"
        " sampling (work that was not what it claimed can slow the candidates timed beside it)."
        for without, group in again.groupby("remeasured_without", sort=False)
    ]
    return [Para(" ".join(said))] if said else []


def _how_given(rows: pd.DataFrame) -> list[Para]:
    """What SDPA and flex were given for this shape's mask or cache, and the work SDPA wastes, per way
    it was given: only the built-ins that took it (a decline says why in its own words)."""
    given = {
        "bhsd": "this mask as a dense attn_mask",
        PADDED: "the requests as a padded batch with a key-padding mask (each request's cache padded to the longest)",
    }
    said = []
    took = rows[rows["status"] != Status.UNSUPPORTED]
    dense = took[took["dense_mask_work"].notna()]
    for layout, group in dense.groupby(dense["layout"].fillna("bhsd"), sort=False):  # none: older files
        said.append(
            f"SDPA ({', '.join(group['candidate'])}) is given {given.get(layout, layout)}: a backend that takes"
            f" it computes every query-key pair, {num(group['dense_mask_work'].iloc[0])}× the pairs the mask"
            " lets through (padded and masked-out work, which TFLOP/s does not count)."
        )
    jagged = took[(took["layout"] == "thd") & took["candidate"].isin(JAGGED_BACKENDS)]["candidate"]
    if len(jagged):
        said.append(f"{', '.join(jagged)}: given nested (jagged) tensors, the documents' own pairs only.")
    flex = set(took[took["candidate"] == "flex"]["layout"])
    if PADDED in flex:
        said.append(
            "flex: given the requests as a padded batch, with a BlockMask that skips each cache's padding."
        )
    if POOL in flex:
        said.append(
            "flex: given the pool of pages, read through PyTorch's PagedAttention (the page table in its BlockMask)."
        )
    return [Para(" ".join(said))] if said else []


def _dense_mask_work(pairs: Json | None, layout: str) -> float | None:
    """The pairs an SDPA backend computes over the attended ones: all of them for a dense attn_mask, the
    padded batch's for a decode batch (None for an unmasked shape and for nested tensors)."""
    if not pairs or not pairs["attended"]:
        return None
    if layout == PADDED:
        return pairs["padded"] / pairs["attended"] if pairs.get("padded") else None
    if layout != "bhsd" or not pairs["sdpa_dense_mask"]:
        return None
    return pairs["dense"] / pairs["attended"]


def _bound(fraction: Any, limited_by: Any) -> str:
    """The share of the shape's attainable bound, and which roof binds it."""
    return DASH if pd.isna(fraction) else f"{pct(fraction)} ({limited_by})"


def _span(values: pd.Series, fmt: Any) -> str:
    values = values.dropna()
    if values.empty:
        return DASH
    lo, hi = fmt(values.min()), fmt(values.max())
    return lo if lo == hi else f"{lo}–{hi}"


def _ran_section(frame: pd.DataFrame) -> Section:
    """Per candidate over the shapes it was timed on: what one call ran, as the profiler saw it."""
    timed = frame[frame["kernels_per_call"].notna()]
    blocks: list[Block] = [
        Para(
            "One call of each timed candidate under torch.profiler, after a warm call: kernels per call "
            "(on the CPU, top-level operators), CUDA streams, and the share of the measured median the "
            "device spent in kernels (the rest is launch and gap overhead). Bitwise: two calls on the "
            "same inputs gave identical outputs (else the largest difference). Before timing, outside "
            "the samples: setup, a factory kernel's prepare (run once), and the first call, compilation "
            "included. Ranges span the shapes."
        ),
    ]
    if timed.empty:
        return Section("What ran", [*blocks, Para("No candidate was timed.")])
    rows = []
    for name, group in timed.groupby("candidate", sort=False):
        repeatable = group["bitwise_repeatable"].dropna()
        bitwise = (
            DASH
            if repeatable.empty
            else "yes"
            if repeatable.all()
            else f"no (max diff {num(group['max_abs_diff'].max())})"
        )
        kernels = Counter(k for names in group["kernels"].dropna() for k in str(names).split(";"))
        rows.append(
            [
                str(name),
                str(len(group)),
                _span(group["kernels_per_call"], lambda v: f"{int(v)}"),
                _span(group["streams"], lambda v: f"{int(v)}"),
                _span(group["device_share"], pct),
                bitwise,
                _before_timing(group),
                ", ".join(k for k, _ in kernels.most_common(4)),
            ]
        )
    headers = [
        "candidate",
        "shapes",
        "kernels per call",
        "streams",
        "device time share",
        "bitwise",
        "before timing (ms)",
        "kernels",
    ]
    return Section("What ran", [*blocks, Table(headers, rows, numeric={1, 2, 3, 4}, text_cols={6, 7})])


def _before_timing(group: pd.DataFrame) -> str:
    """`setup 12 + first call 340`: a factory kernel's prepare and the first call (ms, ranges over the
    shapes); the first call alone for a plain kernel; a dash where neither was recorded."""
    setup = _span(group["setup_ms"], num)
    first = _span(group["compile_ms"], num)
    if setup == DASH:
        return DASH if first == DASH else f"first call {first}"
    return f"setup {setup} + first call {first}"


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
        + (f"; order: {order}" if order else "")
        + "). "
    )
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
    )
    min_rounds = _recorded(timing, "min_rounds")
    limits = [f"{v} s" for v in [_recorded(timing, "max_time_s", lambda v: f"{v:g}")] if v]
    limits += [f"{v} rounds" for v in [_recorded(timing, "max_rounds")] if v]
    text += (
        "Before sampling, a warm-up ran rounds in batches until every candidate's timing and the SM "
        "clock had settled, within a time limit; a warm-up that hit the limit is flagged. Sampling "
        "then stopped adaptively"
        + (f", checking from {min_rounds} kept rounds on," if min_rounds else "")
        + " as soon as the 95% confidence interval of every candidate's median was within "
        f"{_distinct(pm(t['target_rel_ci']) for t in timing)} of it"
        + (
            f", or at {' or '.join(limits)} per shape with the target missed, which the results tables mark"
            if limits
            else ""
        )
        + ". "
    )
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
        )
    else:
        reasons = _distinct(b["timing"]["clocks"].get("reason") or "not recorded" for b in benches)
        text += f"No GPU clock was read ({reasons}), so no round was discarded for throttling."
    return text.rstrip()


def _method_section(benches: list[Json], compares: list[Json], analysis: Json) -> Section:
    """How samples were taken, and how a comparison becomes a speedup, an interval, a p-value and a
    verdict (stats.py's module docstring), with the settings the compare files record."""
    settings: dict[str, list[Any]] = {}
    for compare in compares:
        for key, value in compare.get("method", {}).items():
            # compare files name only the tests they used, "a + b"; the run used their union
            parts = value.split(" + ") if key == "test" and isinstance(value, str) else [value]
            settings.setdefault(key, []).extend(v for v in parts if v is not None)

    def setting(key: str, missing: str) -> str:
        return _distinct(settings.pop(key, [])) if settings.get(key) else missing

    if compares:
        tests = setting("test", "no test")
        alpha = setting("alpha", "unrecorded")
        resolution = setting("resolution", "an unrecorded")
        threshold = setting("threshold", "an unrecorded")
        min_rounds = setting("min_rounds", str(MIN_ROUNDS))
        settings.pop("pairing", None)
        text = (
            f"Each candidate was compared with the reference by one estimate ({tests}), from which its "
            "speedup, interval, p-value and verdict all follow. The candidates of a shape are timed in "
            "the same rounds, so each round gives a log ratio, log(reference time / candidate time), in "
            "which drift common to the round cancels. From "
            f"{2 * BLOCKS} rounds on, the ratios are averaged in blocks of consecutive rounds (10 to 19 "
            "blocks of an even number of rounds, so that the alternating order cancels inside each; "
            "below that each round is its own block); the estimate is the mean of the block means, "
            "with its standard error and the blocks − 1 degrees of freedom"
            + (
                " (samples that share no rounds were compared unpaired: each side's block means of log "
                "latencies, Welch's standard error and degrees of freedom)"
                if "welch" in tests
                else ""
            )
            + ". The speedup is exp(mean), the geometric mean of the "
            "per-round speedups; its interval is the t interval exp(mean ± t(1 − α/2, df) × se), at "
            f"confidence 1 − α (α = {alpha}). The p-value is that interval's inversion against the "
            f"resolution band: the null hypothesis is a difference of at most {resolution} (what "
            "interleaved timing can attribute to a kernel), not no difference at all, so p < α exactly "
            "when the interval lies wholly outside [1/(1 + resolution), 1 + resolution]: significant. "
            "The verdict is faster or slower when the comparison is significant and the speedup "
            f"reaches the practical threshold of {threshold} (max(speedup, 1/speedup) − 1 at least "
            "that), same otherwise, so a verdict never contradicts the interval beside it. With fewer "
            f"than {min_rounds} rounds there is no interval and no p-value: the verdict is "
            f'"{TOO_FEW_ROUNDS}", with about how many rounds would decide'
        )
        other = {k: _distinct(v) for k, v in settings.items() if v}
        text += (f" (other settings: {_settings(other)})" if other else "") + ". "
    else:
        text = "This run has no comparison files. "
    configurations = (analysis.get("configurations") or {}).get("n_comparisons")
    if not _corrected(analysis):
        text += "The run made no comparison, so there was nothing to correct across it. "
    else:
        text += (
            f"Across the run, the comparisons with the reference ({analysis['reference']['n_comparisons']} "
            f"in the compare files), those of each shape's fastest with the other ok candidates "
            f"({analysis['n_autotune_comparisons']})"
            + (f" and those within each kernel's configurations ({configurations})" if configurations else "")
            + f", a pair counted once, are corrected as one family ({_correction(analysis)}, capped at "
            "1), so that a corrected verdict agrees with the corrected interval printed beside it, and the "
            "corrected intervals all cover their true speedups together with probability at least "
            f"{quality.level(1 - analysis['alpha'])}. The "
            "headline, the speedup matrix, the results tables and Autotune print the corrected intervals "
            "and verdicts; the compare files (results/compare) and the lines printed after each shape "
            "hold each comparison's own, at 1 − α. "
        )
    text += (
        "Latency, throughput and memory plots show candidates with status ok only; a candidate that "
        "returned a wrong answer is never the fastest."
    )
    return Section("Method", [Para(_timing_text(benches)), Para(text)])


# -------------------------------------------------------------------------------------- rendering


@cache
def _templates() -> jinja2.Environment:
    """The package's templates: HTML autoescaped, Markdown escaped by the `md` filter."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("attnbench", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = formatting.md
    return env


def render_markdown(title: str, sections: list[Section], links: dict[str, str]) -> str:
    """The report as Markdown; plots are links (`links`: plot key -> URL relative to the file)."""
    template = _templates().get_template("report.md.j2")
    return template.render(title=title, sections=sections, links=links)


def render_html(title: str, sections: list[Section], images: dict[str, bytes]) -> str:
    """The report as one self-contained page: CSS inlined, plots as base64 PNG data URLs."""
    encoded = {key: base64.b64encode(data).decode("ascii") for key, data in images.items()}
    template = _templates().get_template("report.html.j2")
    return template.render(title=title, sections=sections, images=encoded)
