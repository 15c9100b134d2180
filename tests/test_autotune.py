"""Autotune across kernel configurations: per-shape fastest configuration and its ties, the minimax
recommendation with its CI, autotune.json (schema) and autotune.csv, and a run of 40 configurations x
3 shapes. The report's rendering of it is in test_report.py."""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fixtures_report import (
    SCHEMAS,
    SHAPES,
    autotune_out,
    configuration,
    configuration_candidates,
    run_autotune,
    write_run,
)
from helpers import shape_result

from attnbench import autotune
from attnbench.documents import ShapeComparisons, ShapeResult
from attnbench.files import ResultFileError, read_json, validate
from attnbench.stats import TOO_FEW_ROUNDS, adjust, compare

KERNEL = "kern:attn"
SETTINGS = {"alpha": 0.05, "threshold": 0.02, "resolution": 0.005}


def name(block_m: int, kernel: str = KERNEL) -> str:
    return f"{kernel}[BLOCK_M={block_m}]"


def bench(
    shape: str, medians: dict[str, Any], *, rounds: int = 60, noise: float = 0.004, seed: int = 0
) -> ShapeResult:
    """A bench document (the fields autotune reads): paired rounds with a common drift, each candidate
    at its median; a status string instead of a median makes a candidate that did not run ok."""
    rng = np.random.default_rng(seed)
    drift = np.exp(np.cumsum(rng.normal(0.0, 0.002, rounds)))
    candidates = {}
    for candidate, median in medians.items():
        if isinstance(median, str):
            candidates[candidate] = {"status": median, "reason": "declined", "samples_ms": [], "median_ms": None,
                                     "ci95_ms": None}  # fmt: skip
            continue
        samples = median * drift * rng.lognormal(0.0, noise, rounds)
        med = float(np.median(samples))
        candidates[candidate] = {"status": "ok", "reason": None, "samples_ms": samples.tolist(), "median_ms": med,
                                 "ci95_ms": [med * 0.995, med * 1.005]}  # fmt: skip
    return shape_result({"shape": {"name": shape}, "candidates": candidates})


def compare_doc(shape: str, settings: dict[str, Any] | None = None) -> ShapeComparisons:
    """A compare document with no comparisons: autotune reads its `method` (the test's settings)."""
    return ShapeComparisons.from_json(
        {"shape": shape, "reference": "math", "method": settings or SETTINGS, "comparisons": []}
    )


def analyse(benches: list[ShapeResult]) -> dict[str, Any]:
    return autotune.analyse(benches, [compare_doc(b.name) for b in benches])


def family(document: dict[str, Any], kernel: str = KERNEL) -> dict[str, Any]:
    (found,) = [f for f in document["configurations"]["families"] if f["family"] == kernel]
    return found


def valid(document: dict[str, Any]) -> None:
    validate(
        {"schema": 3, **json.loads(json.dumps(document))}, SCHEMAS / "autotune.schema.yaml", source="test"
    )


# ------------------------------------------------------------------------------------------ families


def test_families_group_configurations_of_one_kernel() -> None:
    benches = [
        bench(
            "a",
            {"math": 2.0, name(64): 1.0, name(128): 1.0, "solo:k[X=1]": 1.0, "plain:k": 1.0, "odd[x]": 1.0},
        ),
        bench("b", {name(256): 1.0, "solo:k[X=1]": 1.0}),
    ]
    # a kernel measured in one configuration has nothing to choose; brackets without K=V are no configuration
    assert autotune.families(benches) == {KERNEL: [name(64), name(128), name(256)]}
    document = analyse(benches)
    valid(document)
    assert [f["family"] for f in document["configurations"]["families"]] == [KERNEL]
    # a run without configurations: an empty section, and the autotune of candidates unchanged
    plain = analyse([bench("a", {"math": 2.0, "flash": 1.0})])
    assert plain["configurations"] == {
        "n_comparisons": 0,
        "worst_ci_method": autotune.WORST_CI_METHOD,
        "families": [],
    }


# ---------------------------------------------------------------------------------------------- ties


def test_ties_among_configurations_use_autotunes_rule() -> None:
    """Equal configurations are tied with the fastest; 10% slower ones are not; the fastest of the
    kernel is found among its configurations even where another candidate is faster."""
    medians = {
        "math": 5.0,
        "flash": 0.5,
        name(64): 1.0,
        name(128): 1.001,
        name(256): 1.10,
        name(512): "error",
    }
    benches = [bench(s, medians, seed=i) for i, s in enumerate(["s1", "s2"])]
    document = analyse(benches)
    valid(document)
    found = family(document)
    for shape in found["shapes"]:
        assert shape["fastest"]["candidate"] in (name(64), name(128))
        tied = {r["candidate"] for r in shape["rivals"] if r["tied"]}
        assert tied == {name(64), name(128)} - {shape["fastest"]["candidate"]}
        slower = [r for r in shape["rivals"] if not r["tied"]]
        assert [r["candidate"] for r in slower] == [name(256)]
        assert slower[0]["speedup"] == pytest.approx(1 / 1.1, rel=0.01) and slower[0]["p_adjusted"] < 0.05
        assert slower[0]["verdict"] == "slower" and slower[0]["speedup_ci"][1] < 1 / 1.005
        assert shape["not_ok"] == [{"candidate": name(512), "status": "error"}]
    # the same numbers by hand: stats.compare with the shape's settings, corrected (stats.adjust) for
    # the run's 12 comparisons: flash against math and each configuration, and within the kernel
    assert document["family"] == 12
    pairs = []
    for b, shape in zip(benches, found["shapes"]):
        best = b.candidates[shape["fastest"]["candidate"]].samples_ms
        for row in shape["rivals"]:
            result = compare(best, b.candidates[row["candidate"]].samples_ms, **SETTINGS)
            assert (row["speedup"], row["p_value"], row["rounds"]) == (
                result["speedup"], result["p_value"], result["rounds"],
            )  # fmt: skip
            pairs.append((row, result))
    assert document["configurations"]["n_comparisons"] == len(pairs) == 4
    for (row, _), corrected in zip(pairs, adjust([r for _, r in pairs], family=12)):
        assert row["speedup_ci"] == pytest.approx(corrected["speedup_ci"])
        assert (row["p_adjusted"], row["verdict"]) == (
            pytest.approx(corrected["p_value"]),
            corrected["verdict"],
        )
        assert row["confidence"] == pytest.approx(1 - 0.05 / 12) and row["tied"] == (row["verdict"] == "same")


def _estimate(speedup: float, p_value: float, df: float = 14.0) -> dict[str, float]:
    """A stats.compare estimate whose uncorrected p-value (against the 0.5% resolution band) is `p_value`."""
    from scipy import special

    excess = abs(math.log(speedup)) - math.log1p(0.005)
    return {"log_speedup": math.log(speedup), "se": excess / -special.stdtrit(df, p_value / 2), "df": df}


def test_configuration_ties_are_corrected_across_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four configuration comparisons, 10% slower at p = 0.02: significant alone, tied after the
    correction for the run's 4 comparisons (p = 0.08, the interval meets the resolution band); slower
    at p = 0.01 (0.04 corrected)."""
    calls = []

    def fake(baseline: Any, candidate: Any, **settings: Any) -> dict[str, Any]:
        calls.append(settings)
        return {"speedup": 0.9, "p_value": p_value, "rounds": 30, "estimate": _estimate(0.9, p_value)}

    monkeypatch.setattr(autotune, "compare_samples", fake)
    medians = {name(64): 1.0, name(128): 1.1, name(256): 1.1}
    benches = [bench(s, medians, seed=i) for i, s in enumerate(["s1", "s2"])]
    p_value = 0.02
    document = analyse(benches)
    found = family(document)
    # the kernel's fastest is the shapes' fastest: its comparisons are autotune's own, tested once
    assert len(calls) == 4 and calls[0] == SETTINGS and document["family"] == 4
    rivals = [r for s in found["shapes"] for r in s["rivals"]]
    assert all(
        r["tied"] and r["p_adjusted"] == pytest.approx(0.08) and r["verdict"] == "same" for r in rivals
    )
    assert all(r["speedup_ci"][1] > 1 / 1.005 for r in rivals)  # the corrected interval agrees: tied
    p_value = 0.01
    rivals = [r for s in family(analyse(benches))["shapes"] for r in s["rivals"]]
    assert not any(r["tied"] for r in rivals)
    assert all(r["verdict"] == "slower" and r["speedup_ci"][1] < 1 / 1.005 for r in rivals)


def test_too_few_rounds_are_neither_tied_nor_slower_and_have_no_interval() -> None:
    """Two rounds: no estimate, so no interval and no p-value; "too few rounds" is neither "slower"
    nor a tie (a tie is a claim the interval must back), and the slowdown falls back on the medians'
    ratio; the recommendation does not count the shape as one where it is slower."""
    document = analyse([bench("s1", {name(64): 1.0, name(128): 1.5}, rounds=2)])
    valid(document)
    (rival,) = family(document)["shapes"][0]["rivals"]
    assert rival["verdict"] == TOO_FEW_ROUNDS and not rival["tied"] and rival["rounds"] == 2
    assert rival["speedup"] is None and rival["speedup_ci"] is None and rival["p_adjusted"] is None
    fastest = family(document)["shapes"][0]["fastest"]
    assert fastest["candidate"] == name(64)
    ranking = {r["candidate"]: r for r in family(document)["ranking"]}
    assert ranking[name(128)]["worst_slowdown"] == pytest.approx(rival["median_ms"] / fastest["median_ms"])
    assert ranking[name(128)]["worst_slowdown_ci"] is None
    recommendation = family(document)["recommendation"]
    assert recommendation["candidate"] == name(64) and recommendation["slower_shapes"] == []


def test_comparisons_are_not_repeated_when_the_kernels_fastest_is_not_the_shapes() -> None:
    calls: list[tuple[float, float]] = []
    original = autotune.compare_samples

    def counting(baseline: Any, candidate: Any, **settings: Any) -> dict[str, Any]:
        calls.append((baseline[0], candidate[0]))
        return original(baseline, candidate, **settings)

    benches = [bench("s1", {"flash": 0.5, name(64): 1.0, name(128): 1.2})]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(autotune, "compare_samples", counting)
        document = analyse(benches)
    # flash vs both configurations (autotune), then 64 vs 128 (the kernel): three, none twice
    assert len(calls) == len(set(calls)) == 3
    assert document["n_autotune_comparisons"] == 2 and document["configurations"]["n_comparisons"] == 1


# ------------------------------------------------------------------------------------ recommendation


def test_minimax_recommendation_and_its_interval() -> None:
    """64 wins two shapes but is 30% slower on the third; 128 is 5% behind everywhere: 128 is the
    configuration whose worst slowdown is smallest."""
    per_shape = {
        "s1": {name(64): 1.00, name(128): 1.05, name(256): 1.50},
        "s2": {name(64): 1.00, name(128): 1.05, name(256): 1.20},
        "s3": {name(64): 1.30, name(128): 1.05, name(256): 1.00},
    }
    benches = [bench(s, m, seed=i) for i, (s, m) in enumerate(per_shape.items())]
    document = analyse(benches)
    valid(document)
    found = family(document)
    rec = found["recommendation"]
    assert found["reason"] is None
    assert rec["candidate"] == name(128) and rec["among"] == "all" and rec["n_eligible"] == 3
    # its slowdown on each shape: the inverse of stats.compare's speedup and of its CI's bounds
    slow = {s["shape"]: s for s in rec["per_shape"]}
    for shape in found["shapes"]:
        if shape["fastest"]["candidate"] == name(128):
            assert slow[shape["shape"]] == {"shape": shape["shape"], "slowdown": 1.0, "slowdown_ci": [1.0, 1.0],
                                            "tied": True}  # fmt: skip
            continue
        (row,) = [r for r in shape["rivals"] if r["candidate"] == name(128)]
        assert slow[shape["shape"]]["slowdown"] == pytest.approx(1 / row["speedup"])
        assert slow[shape["shape"]]["slowdown_ci"] == pytest.approx(
            [1 / row["speedup_ci"][1], 1 / row["speedup_ci"][0]]
        )
    worst = max(rec["per_shape"], key=lambda s: s["slowdown"])
    assert rec["worst_shape"] == worst["shape"] and rec["worst_slowdown"] == worst["slowdown"]
    assert rec["worst_slowdown"] == pytest.approx(1.05, rel=0.01)
    # the worst ratio's interval: [max of the lower bounds, max of the upper bounds] over the shapes
    assert rec["worst_slowdown_ci"] == [
        max(s["slowdown_ci"][0] for s in rec["per_shape"]),
        max(s["slowdown_ci"][1] for s in rec["per_shape"]),
    ]
    assert rec["worst_slowdown_ci"][0] <= rec["worst_slowdown"] <= rec["worst_slowdown_ci"][1]
    # 5% slower, significantly: tied nowhere
    assert rec["tied_shapes"] == [] and rec["slower_shapes"] == ["s1", "s2", "s3"]
    # the ranking: everyone ran everywhere, smallest worst slowdown first
    ranking = found["ranking"]
    assert [r["candidate"] for r in ranking] == [name(128), name(64), name(256)]
    assert [r["worst_shape"] for r in ranking] == [rec["worst_shape"], "s3", "s1"]
    assert ranking[1]["worst_slowdown"] == pytest.approx(1.30, rel=0.01)
    assert ranking[1]["tied_shapes"] == ["s1", "s2"]  # the fastest counts as tied with itself


def test_recommendation_names_the_shapes_where_it_is_tied() -> None:
    per_shape = {
        "s1": {name(64): 1.000, name(128): 1.003},  # within the practical threshold: tied
        "s2": {name(64): 1.000, name(128): 1.080},
        "s3": {name(64): 1.020, name(128): 1.000},
    }
    found = family(analyse([bench(s, m, seed=i) for i, (s, m) in enumerate(per_shape.items())]))
    rec = found["recommendation"]
    assert rec["candidate"] == name(64)  # worst 2% (s3) against 8% (s2)
    assert rec["worst_shape"] == "s3"
    assert (
        "s1" in rec["tied_shapes"] and "s2" in rec["tied_shapes"]
    )  # the fastest on s1 or tied, fastest on s2


def test_a_configuration_that_fails_on_one_shape_is_not_recommended() -> None:
    """256 is the fastest wherever it runs but errors on s3: recommended among those that ran everywhere."""
    per_shape = {
        "s1": {name(64): 1.10, name(128): 1.05, name(256): 1.00},
        "s2": {name(64): 1.10, name(128): 1.05, name(256): 1.00},
        "s3": {name(64): 1.00, name(128): 1.05, name(256): "error"},
    }
    found = family(analyse([bench(s, m, seed=i) for i, (s, m) in enumerate(per_shape.items())]))
    rec = found["recommendation"]
    assert rec["candidate"] == name(128) and rec["among"] == "ran_everywhere"
    assert (rec["n_eligible"], rec["n_configurations"]) == (2, 3)
    excluded = found["ranking"][-1]
    assert excluded["candidate"] == name(256) and not excluded["everywhere"]
    assert excluded["not_ok"] == [{"shape": "s3", "status": "error"}]
    assert excluded["shapes_ok"] == 2 and excluded["worst_slowdown"] == 1.0  # the fastest where it ran
    s3 = found["shapes"][2]
    assert s3["fastest"]["candidate"] == name(64)
    assert s3["not_ok"] == [{"candidate": name(256), "status": "error"}]


def test_no_configuration_ran_everywhere() -> None:
    per_shape = {
        "s1": {name(64): 1.0, name(128): "unsupported"},
        "s2": {name(64): "error", name(128): 1.0},
    }
    found = family(analyse([bench(s, m, seed=i) for i, (s, m) in enumerate(per_shape.items())]))
    assert found["recommendation"] is None
    assert (
        found["reason"]
        == "no configuration ran ok within the dtype's tolerance on every shape where one of this kernel did"
    )
    assert [r["everywhere"] for r in found["ranking"]] == [False, False]
    # a configuration missing from a shape's bench file did not run there either
    absent = family(analyse([bench("s1", {name(64): 1.0, name(128): 1.1}), bench("s2", {name(128): 1.0})]))
    assert absent["recommendation"]["candidate"] == name(128)
    assert absent["shapes"][1]["not_ok"] == [{"candidate": name(64), "status": "absent"}]
    assert absent["ranking"][-1]["not_ok"] == [{"shape": "s2", "status": "absent"}]


def test_no_configuration_ran_anywhere() -> None:
    benches = [bench(s, {"flash": 1.0, name(64): "error", name(128): "oom"}) for s in ("s1", "s2")]
    document = analyse(benches)
    valid(document)
    found = family(document)
    assert found["recommendation"] is None and found["reason"] == "no configuration ran ok within the dtype's tolerance on any shape"
    assert [s["fastest"] for s in found["shapes"]] == [None, None]
    assert not any(r["everywhere"] for r in found["ranking"])


def test_shapes_where_no_configuration_ran_are_left_out() -> None:
    benches = [
        bench("s1", {name(64): 1.0, name(128): 1.1}),
        bench("s2", {"flash": 1.0, name(64): "unsupported", name(128): "unsupported"}),
    ]
    rec = family(analyse(benches))["recommendation"]
    assert rec["candidate"] == name(64) and rec["among"] == "all"
    assert rec["shapes_without_ok"] == ["s2"] and [s["shape"] for s in rec["per_shape"]] == ["s1"]


# ---------------------------------------------------------------------------------- files, schema


def test_autotune_json_and_csv(tmp_path: Path) -> None:
    run = write_run(tmp_path, shape_candidates=configuration_candidates())
    out = autotune_out(run)
    document = run_autotune(run)
    stored = read_json(out["json"], SCHEMAS / "autotune.schema.yaml")  # written and read back valid
    assert stored["configurations"] == json.loads(json.dumps(document["configurations"]))
    found = family(stored)
    rec = found["recommendation"]
    assert rec["candidate"] == configuration(128, 8) and rec["among"] == "ran_everywhere"
    assert [r["candidate"] for r in found["ranking"] if not r["everywhere"]] == [
        configuration(128, 4),
        configuration(256, 8),
    ]

    frame = pd.read_csv(out["csv"], keep_default_na=False)
    assert list(frame.columns) == autotune.CSV_COLUMNS
    assert autotune.CSV_COLUMNS[:6] == ["shape", "fastest", "fastest_median_ms", "fastest_ci95_lo_ms",
                                        "fastest_ci95_hi_ms", "tied"]  # fmt: skip
    shapes = [s[0] for s in SHAPES]
    # first, one row per shape as always, the configuration columns empty
    plain = frame.iloc[: len(shapes)]
    assert (
        plain["shape"].tolist() == shapes
        and (plain["family"] == "").all()
        and (plain["recommended"] == "").all()
    )
    # then the kernel's rows: per shape its fastest configuration and ties, and the recommendation's slowdown
    rows = frame[frame["family"] == KERNEL]
    assert rows["shape"].tolist() == [*shapes, autotune.ALL_SHAPES]
    assert (rows["recommended"] == configuration(128, 8)).all()
    for row, shape in zip(rows.iloc[:-1].itertuples(index=False), found["shapes"]):
        assert row.fastest == shape["fastest"]["candidate"]
        assert float(row.fastest_median_ms) == pytest.approx(shape["fastest"]["median_ms"])
        tied = sorted((r for r in shape["rivals"] if r["tied"]), key=lambda r: r["median_ms"])  # fastest first
        assert row.tied == ";".join(r["candidate"] for r in tied)
        slow = next(s for s in rec["per_shape"] if s["shape"] == row.shape)
        assert [
            float(row.slowdown),
            float(row.slowdown_ci_lo),
            float(row.slowdown_ci_hi),
        ] == pytest.approx([slow["slowdown"], *slow["slowdown_ci"]])
    overall = rows.iloc[-1]
    assert overall["fastest"] == "" and overall["tied"] == ""
    assert [
        float(overall["slowdown"]),
        float(overall["slowdown_ci_lo"]),
        float(overall["slowdown_ci_hi"]),
    ] == (pytest.approx([rec["worst_slowdown"], *rec["worst_slowdown_ci"]]))


def test_autotune_json_without_configurations_stays_readable(tmp_path: Path) -> None:
    """autotune.json files written before configurations lack the section: still valid."""
    run = write_run(tmp_path, shapes=SHAPES[:1])
    out = autotune_out(run)
    run_autotune(run)
    document = json.loads(Path(out["json"]).read_text())
    del document["configurations"], document["content_digest"]  # written before either
    Path(out["json"]).write_text(json.dumps(document))
    assert "configurations" not in read_json(out["json"], SCHEMAS / "autotune.schema.yaml")
    assert autotune.csv_frame(document)["shape"].tolist() == [SHAPES[0][0]]
    document["configurations"] = {"n_comparisons": 0, "families": []}  # a section must be whole
    Path(out["json"]).write_text(json.dumps(document))
    with pytest.raises(ResultFileError, match="configurations"):
        read_json(out["json"], SCHEMAS / "autotune.schema.yaml")


# ------------------------------------------------------------------------------------------- scale


def test_forty_configurations_on_three_shapes(tmp_path: Path) -> None:
    """40 configurations x 3 shapes (one of them failing on one shape), 100 paired rounds each: both
    autotunes, every interval, in seconds."""
    grid = list(itertools.product([32, 64, 128, 256, 512], [2, 4, 8, 16], [2, 3]))
    names = [f"{KERNEL}[BLOCK_M={m},num_warps={w},num_stages={s}]" for m, w, s in grid]
    assert len(names) == 40
    rng = np.random.default_rng(7)
    speed = {n: 1.0 + abs(rng.normal(0.0, 0.08)) for n in names}
    benches = []
    for i, shape in enumerate(["s1", "s2", "s3"]):
        medians: dict[str, Any] = {"math": 4.0, "flash": 0.9}
        medians |= {n: speed[n] * (1.0 + rng.normal(0.0, 0.01)) for n in names}
        if i == 1:
            medians[names[0]] = "error"
        benches.append(bench(shape, medians, rounds=100, seed=i))
    began = time.perf_counter()
    document = analyse(benches)
    elapsed = time.perf_counter() - began
    valid(document)
    found = family(document)
    assert document["n_autotune_comparisons"] == 3 * 41 - 1  # all but each shape's fastest, one failure
    assert document["configurations"]["n_comparisons"] == 3 * 39 - 1
    assert len(found["ranking"]) == 40 and sum(r["everywhere"] for r in found["ranking"]) == 39
    rec = found["recommendation"]
    assert rec["among"] == "ran_everywhere" and rec["candidate"] != names[0]
    eligible = [r for r in found["ranking"] if r["everywhere"]]
    assert rec["worst_slowdown"] == min(r["worst_slowdown"] for r in eligible)
    frame = autotune.csv_frame(document)
    assert len(frame) == 3 + 3 + 1
    # 240 comparisons of 100 rounds, each one t interval, no resampling: well under a second
    assert elapsed < 30, elapsed
