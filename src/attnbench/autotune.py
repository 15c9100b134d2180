"""The run-wide statistics: Holm across every comparison with the reference, and autotune.

Only this step sees every comparison of the run at once, so it applies Holm's correction across all
of them (per-shape tests alone would inflate false claims). Autotune then names each shape's fastest
correct candidate and compares it with every other correct candidate by stats.compare on the bench
samples, with the settings the shape's compare file records, Holm across the run's autotune
comparisons. The report only renders what this module writes (autotune.json, autotune.csv).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.files import atomic_write_text, read_json, write_json
from attnbench.stats import ALPHA, holm, practically_different
from attnbench.stats import compare as compare_samples

Json = dict[str, Any]

CSV_COLUMNS = ["shape", "fastest", "fastest_median_ms", "fastest_ci95_lo_ms", "fastest_ci95_hi_ms", "tied"]
# the compare files' `method` keys that are stats.compare arguments: autotune reruns the same test
COMPARE_SETTINGS = ("alpha", "threshold", "resolution", "n_resamples", "confidence", "seed")


def build(
    bench_paths: list[str],
    compare_paths: list[str],
    out: Mapping[str, str],
    *,
    schema_dir: str | Path,
    settings: Mapping[str, Any] | None = None,
) -> Json:
    """Validate the inputs, then write autotune.json (`out["json"]`) and autotune.csv (`out["csv"]`).

    `settings` is the config's `stats` section; only its alpha is used here.
    """
    schemas = Path(schema_dir)
    benches = [read_json(p, schemas / "bench.schema.yaml") for p in bench_paths]
    compares = [read_json(p, schemas / "compare.schema.yaml") for p in compare_paths]
    document = analyse(benches, compares, alpha=(settings or {}).get("alpha", ALPHA))
    write_json(out["json"], document, schemas / "autotune.schema.yaml")
    atomic_write_text(out["csv"], csv_frame(document).to_csv(index=False))
    return document


def analyse(benches: list[Json], compares: list[Json], *, alpha: float = ALPHA) -> Json:
    """The document autotune.json holds (without its schema version)."""
    winners = {bench["shape"]["name"]: fastest(bench) for bench in benches}
    rivals = rival_comparisons(benches, compares, winners, alpha)
    shapes = []
    for bench in benches:
        name, winner = bench["shape"]["name"], winners[bench["shape"]["name"]]
        best = None if winner is None else bench["candidates"][winner]
        summary = None if best is None else {k: best[k] for k in ("median_ms", "ci95_ms")}
        shapes.append(
            {
                "shape": name,
                "fastest": None if summary is None else {"candidate": winner, **summary},
                "rivals": [
                    {k: v for k, v in r.items() if k != "shape"} for r in rivals if r["shape"] == name
                ],
            }
        )
    return {
        "alpha": alpha,
        "reference": reference_comparisons(compares, alpha),
        "n_autotune_comparisons": len(rivals),
        "shapes": shapes,
    }


def reference_comparisons(compares: list[Json], alpha: float) -> Json:
    """Holm across every comparison in the compare files; one entry per comparison with the reference.

    significant_holm: the Holm-adjusted p is below alpha and the practical threshold is met.
    """
    flat = [(compare, comp) for compare in compares for comp in compare["comparisons"]]
    adjusted = holm([comp["p_value"] for _, comp in flat])
    entries = []
    for (compare, comp), p_holm in zip(flat, adjusted):
        threshold = compare.get("method", {}).get("threshold")
        practical = threshold is None or practically_different(comp["speedup"], threshold)
        if comp["baseline"] == compare["reference"]:
            entries.append(
                {
                    "shape": compare["shape"],
                    "candidate": comp["candidate"],
                    "p_value": comp["p_value"],
                    "p_holm": float(p_holm),
                    "significant_holm": bool(p_holm < alpha and practical),
                }
            )
    return {"n_comparisons": len(flat), "comparisons": entries}


def fastest(bench: Json) -> str | None:
    """The candidate with the lowest median among those with status ok (the first on a tie); a wrong
    answer computed quickly is not a result, so only correct candidates compete."""
    timed = {n: c["median_ms"] for n, c in bench["candidates"].items() if _timed(c)}
    return min(timed, key=timed.__getitem__) if timed else None


def rival_comparisons(
    benches: list[Json], compares: list[Json], winners: Mapping[str, str | None], alpha: float
) -> list[Json]:
    """Every other correct candidate of a shape against the shape's fastest (`winners`).

    One entry per comparison: speedup = fastest's median / candidate's median (at most 1), its CI,
    p and Holm's p across all the run's autotune comparisons. `tied` holds unless the candidate is
    significantly (Holm-adjusted p < alpha) AND practically slower: stats.compare's verdict "same",
    judged on the adjusted p. Each shape is compared with the settings its compare file records
    (stats.compare's defaults, and `alpha`, where there is none).
    """
    methods = {compare["shape"]: compare.get("method") or {} for compare in compares}
    rows: list[Json] = []
    for bench in benches:
        shape, best = bench["shape"]["name"], winners[bench["shape"]["name"]]
        method = methods.get(shape, {})
        settings = {"alpha": alpha, **{k: method[k] for k in COMPARE_SETTINGS if method.get(k) is not None}}
        for name, cand in bench["candidates"].items():
            if name == best or not _timed(cand):
                continue
            try:
                result = compare_samples(
                    bench["candidates"][best]["samples_ms"], cand["samples_ms"], **settings
                )
            except ValueError as exc:  # name the shape and candidates, not just "baseline"
                raise ValueError(f"autotune, shape {shape}, {best} vs {name}: {exc}") from exc
            rows.append(
                {
                    "shape": shape,
                    "candidate": name,
                    "median_ms": cand["median_ms"],
                    "ci95_ms": cand["ci95_ms"],
                    "speedup": result["speedup"],
                    "speedup_ci95": result["speedup_ci95"],
                    "p_value": result["p_value"],
                    "practical": bool(result["practical"]),
                }
            )
    for row, p_holm in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = float(p_holm)
        row["tied"] = not (p_holm < alpha and row["practical"])
    return rows


def csv_frame(document: Json) -> pd.DataFrame:
    """autotune.csv: one row per shape, the fastest candidate with its median and CI, and the
    candidates tied with it, fastest first, ";"-separated (empty when none)."""
    rows = []
    for shape in document["shapes"]:
        best = shape["fastest"] or {}
        lo, hi = best.get("ci95_ms") or (None, None)
        names = ";".join(r["candidate"] for r in ties(shape))
        rows.append([shape["shape"], best.get("candidate"), best.get("median_ms"), lo, hi, names])
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def ties(shape: Json) -> list[Json]:
    """The rivals of one shape of autotune.json tied with its fastest, fastest first."""
    return sorted((r for r in shape["rivals"] if r["tied"]), key=lambda r: r["median_ms"])


def _timed(candidate: Json) -> bool:
    return candidate["status"] == "ok" and candidate["median_ms"] is not None
