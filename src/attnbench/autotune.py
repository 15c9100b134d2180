"""The run-wide statistics: every comparison with the reference corrected across the run, autotune,
configurations.

Only this step sees every comparison of the run at once, so it corrects across all of them
(per-shape tests alone would inflate false claims): stats.adjust, Bonferroni on the interval and the
p-value alike, so each adjusted verdict agrees with the adjusted interval printed beside it. Autotune
then names each shape's fastest correct candidate and compares it with every other correct candidate
by stats.compare on the bench samples, with the settings the shape's compare file records, corrected
across the run's autotune comparisons. For every kernel with a grid of configurations (two or more in
the run; candidates named `module:function[K=V,...]`, usercode.CandidateName), it does the same within the
family: each shape's fastest configuration and those tied with it (corrected across the run's
configuration comparisons), and one configuration to use on every shape, the minimax choice
(configurations).
The report only renders what this module writes (autotune.json, autotune.csv).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.documents import Analysis, CandidateResult, ShapeChoice, ShapeComparisons, ShapeResult
from attnbench.files import atomic_write_text, read_bench, read_comparisons
from attnbench.results import Json, Status
from attnbench.settings import ALPHA
from attnbench.stats import TOO_FEW_ROUNDS, adjust
from attnbench.stats import compare as compare_samples
from attnbench.usercode import CandidateName

# autotune.csv: the first six columns, one row per shape, are as they always were; the rest are
# filled only on the configuration rows (csv_frame), which runs without configurations never have.
CSV_COLUMNS = [
    "shape",
    "fastest",
    "fastest_median_ms",
    "fastest_ci95_lo_ms",
    "fastest_ci95_hi_ms",
    "tied",
    "family",
    "recommended",
    "slowdown",
    "slowdown_ci_lo",
    "slowdown_ci_hi",
]
# the `shape` of a family's run-wide row in autotune.csv: no shape name can be it (names are
# [A-Za-z0-9_.-]+, bench.schema.yaml)
ALL_SHAPES = "(all shapes)"
# the compare files' `method` keys that are stats.compare arguments: autotune reruns the same test
COMPARE_SETTINGS = ("alpha", "threshold", "resolution")
# a configuration of the family that is not in a shape's bench file at all
ABSENT = "absent"
# a configuration ok only by its kernel's declared tolerance: ranked apart, not among the exact ones
APPROXIMATE = "ok (approximate)"
WORST_CI_METHOD = (
    "[max over the shapes of the lower bounds, max over the shapes of the upper bounds] of the "
    "per-shape confidence intervals of the slowdown (the configuration against the shape's fastest "
    "configuration: the inverted bounds of the speedup's interval, corrected across the run's "
    "configuration comparisons, 1 exactly where it is the fastest); it covers the true worst "
    "slowdown whenever every shape's interval covers that shape's slowdown, which the correction "
    "makes hold together with probability at least 1 - alpha (Bonferroni)"
)

Cache = dict[tuple[str, str, str], Json]


def build(
    bench_paths: list[str],
    compare_paths: list[str],
    csv_path: str,
    *,
    schema_dir: str | Path | None,
    settings: Mapping[str, Any] | None = None,
) -> Json:
    """Validate the inputs, write autotune.csv and return autotune.json's document (the autotune job
    writes it, stamped and checked, as every job does its output).

    `settings` is the config's `stats` section; only its alpha is used here.
    """
    schemas = None if schema_dir is None else Path(schema_dir)
    benches = [read_bench(p, schemas) for p in bench_paths]
    compares = [read_comparisons(p, schemas) for p in compare_paths]
    document = analyse(benches, compares, alpha=(settings or {}).get("alpha", ALPHA))
    atomic_write_text(csv_path, csv_frame(document).to_csv(index=False))
    return document


def analyse(benches: list[ShapeResult], compares: list[ShapeComparisons], *, alpha: float = ALPHA) -> Json:
    """The document autotune.json holds (without its schema version)."""
    winners = {bench.name: fastest(bench) for bench in benches}
    in_run = family_size(benches, compares, winners)
    cache: Cache = {}  # stats.compare's results by (shape, fastest, candidate): each pair is tested once
    rivals = rival_comparisons(benches, compares, winners, alpha, in_run, cache=cache)
    shapes = []
    for bench in benches:
        name, winner = bench.name, winners[bench.name]
        shapes.append(
            {
                "shape": name,
                "fastest": _summary(bench, winner),
                "rivals": [
                    {k: v for k, v in r.items() if k != "shape"} for r in rivals if r["shape"] == name
                ],
            }
        )
    return {
        "alpha": alpha,
        "family": in_run,
        "reference": reference_comparisons(compares, alpha, in_run),
        "n_autotune_comparisons": len(rivals),
        "shapes": shapes,
        "configurations": configurations(benches, compares, alpha, in_run, cache=cache),
    }


def family_size(
    benches: list[ShapeResult], compares: list[ShapeComparisons], winners: Mapping[str, str | None]
) -> int:
    """How many distinct comparisons the run makes: with the reference (the compare files), with each
    shape's fastest, and within each kernel's configurations; a pair counted once however many of
    these make it. Every run-wide interval is corrected for all of them, so one pair shows one
    verdict wherever it appears (the headline's speedup over the reference and its ties)."""
    pairs = {
        (compare.shape, frozenset((comp.baseline, comp.candidate)))
        for compare in compares
        for comp in compare.comparisons
    }
    kernels = [set(names) for names in families(benches).values()]
    for bench in benches:
        shape = bench.name
        leaders = [(winners.get(shape), None)] + [(fastest(bench, names), names) for names in kernels]
        for best, among in leaders:
            pairs |= {
                (shape, frozenset((best, name)))
                for name, cand in bench.candidates.items()
                if best is not None and name != best and _timed(cand) and (among is None or name in among)
            }
    return max(1, len(pairs))


def reference_comparisons(compares: list[ShapeComparisons], alpha: float, in_run: int) -> Json:
    """Every comparison in the compare files corrected for the `in_run` comparisons of the run (stats.adjust, each
    with its shape's threshold and resolution); one entry per comparison with the reference: its
    corrected interval, p-value and verdict."""
    flat = [(compare, comp) for compare in compares for comp in compare.comparisons]
    methods = [{**comp.to_json(), **_band(compare.method)} for compare, comp in flat]
    entries = []
    for (compare, comp), adjusted in zip(flat, adjust(methods, alpha=alpha, family=in_run)):
        if comp.baseline == compare.reference:
            entries.append(
                {
                    "shape": compare.shape,
                    "candidate": comp.candidate,
                    "p_value": comp.p_value,
                    **_adjusted(adjusted),
                }
            )
    return {"n_comparisons": len(flat), "comparisons": entries}


def _band(method: Mapping[str, Any]) -> Json:
    """A compare file's threshold and resolution, where it records them (stats.adjust's keys)."""
    return {k: v for k, v in method.items() if k in ("threshold", "resolution") and v is not None}


def _adjusted(outcome: Json) -> Json:
    """What a run-wide entry shows of stats.decide's corrected outcome."""
    return {
        "speedup_ci": outcome["speedup_ci"],
        "confidence": outcome["confidence"],
        "p_adjusted": outcome["p_value"],
        "verdict": outcome["verdict"],
    }


def fastest(bench: ShapeResult, among: set[str] | None = None) -> str | None:
    """The candidate with the lowest median among those with status ok within the run dtype's
    tolerance (the first on a tie); a wrong answer computed quickly is not a result, and an
    approximate one is ranked apart, so only exact correct candidates compete. `among`: only these
    candidates (a family's configurations)."""
    timed = {
        n: c.median_ms for n, c in bench.candidates.items() if _timed(c) and (among is None or n in among)
    }
    return min(timed, key=timed.__getitem__) if timed else None


def rival_comparisons(
    benches: list[ShapeResult],
    compares: list[ShapeComparisons],
    winners: Mapping[str, str | None],
    alpha: float,
    in_run: int,
    *,
    cache: Cache | None = None,
) -> list[Json]:
    """Every other correct candidate of a shape against the shape's fastest (`winners`).

    One entry per comparison: the speedup of the candidate over the fastest (at most about 1), its
    interval, p and verdict corrected across all the run's autotune comparisons (stats.adjust).
    `tied` holds when the corrected verdict is "same": a tied candidate's interval meets the practical
    band; a slower one's lies below the resolution band; one with too few rounds is neither. Each shape is compared with the
    settings its compare file records (stats.compare's defaults, and `alpha`, where there is none).
    """
    settings = shape_settings(compares, alpha)
    cache = {} if cache is None else cache
    rows: list[Json] = []
    for bench in benches:
        shape, best = bench.name, winners[bench.name]
        for name, cand in bench.candidates.items():
            if name == best or not _timed(cand):
                continue
            rows.append(_compared(bench, best, name, settings.get(shape, {"alpha": alpha}), cache))
    return _ties(rows, alpha, in_run)


def shape_settings(compares: list[ShapeComparisons], alpha: float) -> dict[str, Json]:
    """stats.compare's arguments per shape: what its compare file's `method` records, and `alpha`."""
    methods = {compare.shape: compare.method for compare in compares}
    return {
        shape: {"alpha": alpha, **{k: method[k] for k in COMPARE_SETTINGS if method.get(k) is not None}}
        for shape, method in methods.items()
    }


def _compared(bench: ShapeResult, best: str, name: str, settings: Json, cache: Cache) -> Json:
    """`name` against `best` on one shape (stats.compare on the bench samples, once per pair)."""
    shape = bench.name
    key = (shape, best, name)
    if key not in cache:
        try:
            cache[key] = compare_samples(
                list(bench.candidates[best].samples_ms), list(bench.candidates[name].samples_ms), **settings
            )
        except ValueError as exc:  # name the shape and candidates, not just "baseline"
            raise ValueError(f"autotune, shape {shape}, {best} vs {name}: {exc}") from exc
    result, cand = cache[key], bench.candidates[name]
    return {
        "shape": shape,
        "candidate": name,
        "median_ms": cand.median_ms,
        "ci95_ms": cand.document["ci95_ms"],
        "speedup": result["speedup"],
        "p_value": result["p_value"],
        "rounds": result["rounds"],
        "estimate": result["estimate"],
        **_band(settings),
    }


def _ties(rows: list[Json], alpha: float, in_run: int) -> list[Json]:
    """`rows` corrected for the `in_run` comparisons of the run (stats.adjust); `tied` when the
    corrected verdict is "same" (not when it is slower, nor with too few rounds to tell). The estimate and band each row carried for the correction are not part of the document.
    """
    for row, adjusted in zip(rows, adjust(rows, alpha=alpha, family=in_run)):
        for key in ("estimate", "threshold", "resolution"):
            row.pop(key, None)
        row.update(_adjusted(adjusted))
        row["tied"] = adjusted["verdict"] == "same"  # too few rounds: neither tied nor slower, undecided
    return rows


# ---------------------------------------------------------------------------------- configurations


def families(benches: list[ShapeResult]) -> dict[str, list[str]]:
    """Kernel -> its configurations in the run, in the order the bench files first list them, for
    every kernel with at least two (a kernel measured in one configuration has nothing to choose)."""
    found: dict[str, dict[str, None]] = {}
    for bench in benches:
        for name in bench.candidates:
            parsed = CandidateName.parse(name, strict=False)  # brackets that are no configuration: none
            if parsed.configuration:
                found.setdefault(parsed.family, {})[name] = None
    return {family: list(names) for family, names in found.items() if len(names) >= 2}


def configurations(
    benches: list[ShapeResult],
    compares: list[ShapeComparisons],
    alpha: float,
    in_run: int,
    *,
    cache: Cache | None = None,
) -> Json:
    """Per kernel with configurations: per shape its fastest configuration and the configurations
    tied with it, and the one configuration recommended for every shape (`recommend`).

    The ties are autotune's rule within the family: each other ok configuration against the shape's
    fastest configuration by stats.compare with the shape's settings, corrected across every
    configuration comparison of the run (all kernels, all shapes), tied unless slower after the
    correction. Where the family's fastest is the shape's fastest candidate, the comparisons are
    autotune's own (`cache`), estimated once; only their correction is the configurations' own.
    """
    cache = {} if cache is None else cache
    settings = shape_settings(compares, alpha)
    found = families(benches)
    per_family: dict[str, list[Json]] = {}
    rows: list[Json] = []  # every configuration comparison of the run, for one correction
    for family, names in found.items():
        members = set(names)
        entries = []
        for bench in benches:
            shape, best = bench.name, fastest(bench, members)
            compared = [
                _compared(bench, best, name, settings.get(shape, {"alpha": alpha}), cache)
                for name, cand in bench.candidates.items()
                if name in members and name != best and _timed(cand)
            ]
            rows += compared
            entries.append(
                {
                    "shape": shape,
                    "fastest": _summary(bench, best),
                    "rivals": compared,
                    "not_ok": [
                        {"candidate": name, "status": _status(bench, name)}
                        for name in names
                        if not _timed(bench.candidates.get(name))
                    ],
                }
            )
        per_family[family] = entries
    _ties(rows, alpha, in_run)
    out = []
    for family, entries in per_family.items():
        for entry in entries:
            for row in entry["rivals"]:
                del row["shape"]
        ranking = rank(found[family], entries)
        out.append(
            {
                "family": family,
                "configurations": found[family],
                "shapes": entries,
                "ranking": ranking,
                **recommend(found[family], entries, ranking),
            }
        )
    return {"n_comparisons": len(rows), "worst_ci_method": WORST_CI_METHOD, "families": out}


def slowdowns(entry: Json) -> dict[str, Json]:
    """One shape of a family: every ok configuration's slowdown against the shape's fastest
    configuration (the inverse of the comparison's speedup), its corrected interval and whether it
    is tied (the fastest itself: 1 exactly, tied)."""
    best = entry["fastest"]
    if best is None:
        return {}
    found = {
        best["candidate"]: {"slowdown": 1.0, "slowdown_ci": [1.0, 1.0], "tied": True, "undecided": False}
    }
    for row in entry["rivals"]:
        lo, hi = row["speedup_ci"] or (None, None)
        found[row["candidate"]] = {
            # too few rounds for an estimate: the medians' ratio ranks it, with no interval
            "slowdown": _inverse(row["speedup"]) or row["median_ms"] / best["median_ms"],
            # the interval is symmetric in logs: through 1/x it is the slowdown's own
            "slowdown_ci": None if lo is None else [_inverse(hi), _inverse(lo)],
            "tied": row["tied"],
            "undecided": row["verdict"] == TOO_FEW_ROUNDS,
        }
    return found


def rank(names: list[str], entries: list[Json]) -> list[Json]:
    """Every configuration of a family by its worst slowdown over the shapes where the family ran
    (some configuration ok): first those that ran ok on all of them (`everywhere`), smallest worst
    slowdown first (then the smallest geometric-mean slowdown, then run order), then the others."""
    counted = [e for e in entries if e["fastest"] is not None]
    per_shape = {e["shape"]: slowdowns(e) for e in counted}
    ranked = []
    for order, name in enumerate(names):
        ran = [(e["shape"], per_shape[e["shape"]][name]) for e in counted if name in per_shape[e["shape"]]]
        missing = [
            {"shape": e["shape"], "status": next(x["status"] for x in e["not_ok"] if x["candidate"] == name)}
            for e in counted
            if name not in per_shape[e["shape"]]
        ]
        worst_shape, worst = max(ran, key=lambda item: item[1]["slowdown"], default=(None, None))
        cis = [s["slowdown_ci"] for _, s in ran]
        known = bool(cis) and all(ci is not None for ci in cis)
        ranked.append(
            (
                bool(missing) or not ran,
                math.inf if worst is None else worst["slowdown"],
                _geomean([s["slowdown"] for _, s in ran]),
                order,
                {
                    "candidate": name,
                    "everywhere": bool(ran) and not missing,
                    "shapes_ok": len(ran),
                    "worst_slowdown": None if worst is None else worst["slowdown"],
                    "worst_slowdown_ci": (
                        [max(ci[0] for ci in cis), max(ci[1] for ci in cis)] if known else None
                    ),
                    "worst_shape": worst_shape,
                    "geomean_slowdown": _geomean([s["slowdown"] for _, s in ran]) if ran else None,
                    "tied_shapes": [shape for shape, s in ran if s["tied"]],
                    "not_ok": missing,
                },
            )
        )
    return [item[-1] for item in sorted(ranked, key=lambda item: item[:4])]


def recommend(names: list[str], entries: list[Json], ranking: list[Json]) -> Json:
    """The minimax choice: among the configurations that ran ok on every shape where the family ran,
    the one whose worst slowdown against each shape's fastest configuration is smallest.

    Returns {"recommendation": {...} or None, "reason": why none, or None}. A configuration that is
    not ok on a shape where another one is cannot be recommended for all shapes; `among` says whether
    the choice was among all configurations or only those that ran everywhere.
    """
    counted = [e["shape"] for e in entries if e["fastest"] is not None]
    if not counted:
        return {
            "recommendation": None,
            "reason": "no configuration ran ok within the dtype's tolerance on any shape",
        }
    eligible = [r for r in ranking if r["everywhere"]]
    if not eligible:
        return {
            "recommendation": None,
            "reason": "no configuration ran ok within the dtype's tolerance on every shape where one of this "
            "kernel did",
        }
    best = eligible[0]
    per_shape = {e["shape"]: slowdowns(e)[best["candidate"]] for e in entries if e["fastest"] is not None}
    return {
        "recommendation": {
            "candidate": best["candidate"],
            "among": "all" if len(eligible) == len(names) else "ran_everywhere",
            "n_eligible": len(eligible),
            "n_configurations": len(names),
            "worst_slowdown": best["worst_slowdown"],
            "worst_slowdown_ci": best["worst_slowdown_ci"],
            "worst_shape": best["worst_shape"],
            "tied_shapes": best["tied_shapes"],
            "slower_shapes": [
                shape for shape in counted if not (per_shape[shape]["tied"] or per_shape[shape]["undecided"])
            ],
            "per_shape": [{"shape": shape, **per_shape[shape]} for shape in counted],
            "shapes_without_ok": [e["shape"] for e in entries if e["fastest"] is None],
        },
        "reason": None,
    }


def _summary(bench: ShapeResult, name: str | None) -> Json | None:
    if name is None:
        return None
    best = bench.candidates[name]
    return {
        "candidate": name,
        "median_ms": best.median_ms,
        "ci95_ms": best.document["ci95_ms"],
    }


def _status(bench: ShapeResult, name: str) -> str:
    """Why a configuration is not ranked on a shape: its status, APPROXIMATE, or ABSENT."""
    cand = bench.candidates.get(name)
    if cand is None:
        return ABSENT
    return APPROXIMATE if cand.status == Status.OK and not cand.exact else str(cand.status)


def _inverse(value: float | None) -> float | None:
    return None if value is None or value <= 0 else 1.0 / value


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.inf


# ---------------------------------------------------------------------------------------- the csv


def csv_frame(document: Json) -> pd.DataFrame:
    """autotune.csv.

    One row per shape first, as always: the fastest candidate with its median and CI, and the
    candidates tied with it, fastest first, ";"-separated (empty when none); the other columns empty.
    Then per kernel with configurations (`family`): one row per shape with its fastest configuration,
    median, CI and tied configurations, the configuration recommended for every shape and its
    slowdown on this shape [95% CI] (1 where it is the fastest); and one row whose shape is
    "(all shapes)" with the recommendation and its worst slowdown [95% CI] (empty when none).
    """
    analysis = Analysis.from_json(document)
    rows = []
    for shape in analysis.shapes.values():
        rows.append([shape.shape, *_pick_cells(shape), *[None] * 5])
    for family in analysis.families:
        recommended = family.recommendation or {}
        on_shape = {s["shape"]: s for s in recommended.get("per_shape", [])}
        for shape in family.shapes:
            slow = on_shape.get(shape.shape, {})
            s_lo, s_hi = slow.get("slowdown_ci") or (None, None)
            rows.append([shape.shape, *_pick_cells(shape), family.family, recommended.get("candidate"),
                         slow.get("slowdown"), s_lo, s_hi])  # fmt: skip
        w_lo, w_hi = recommended.get("worst_slowdown_ci") or (None, None)
        rows.append([ALL_SHAPES, None, None, None, None, None, family.family, recommended.get("candidate"),
                     recommended.get("worst_slowdown"), w_lo, w_hi])  # fmt: skip
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def _pick_cells(shape: ShapeChoice) -> list[Any]:
    """A shape's fastest, its median and CI, and the candidates tied with it (";"-separated)."""
    best = shape.fastest
    lo, hi = (None, None) if best is None or best.ci95_ms is None else best.ci95_ms
    tied = ";".join(r.candidate for r in shape.ties())
    return [None, None, lo, hi, tied] if best is None else [best.candidate, best.median_ms, lo, hi, tied]


def _timed(candidate: CandidateResult | None) -> bool:
    """Ranked: ok within the run dtype's tolerance, with a median. An approximate result (ok only by
    its declared tolerance) is ranked apart (headline.summarize), never mixed with the exact ones."""
    return candidate is not None and candidate.exact and candidate.median_ms is not None
