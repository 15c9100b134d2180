"""Issue 30's property: over many simulated runs, no verdict, `significant`, autotune `tied`, headline
mark or ratchet verdict contradicts the interval shown beside it, however few the rounds."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import shape_result

from attnbench import autotune, headline, ratchet, stats
from attnbench.documents import Analysis, ShapeComparisons

RESOLUTION, THRESHOLD = stats.RESOLUTION, stats.THRESHOLD
CANDIDATES = ("math", "flash", "efficient", "mine")


def _bench(name: str, rng: np.random.Generator, rounds: int) -> dict:
    """A shape whose candidates share `rounds` interleaved rounds (drift common to a round), each
    slower or faster than the reference by a random factor, some within the practical band."""
    drift = np.exp(np.cumsum(rng.normal(0.0, 0.01, rounds)))
    candidates = {}
    for candidate in CANDIDATES:
        factor = rng.choice([1.0, 1.0, 1.01, 1.03, 0.97, 0.5, 2.0, 4.0]) * rng.lognormal(0.0, 0.01)
        noise = rng.uniform(0.002, 0.15)
        samples = (drift * factor * rng.lognormal(0.0, noise, rounds)).tolist()
        candidates[candidate] = {
            "status": "ok",
            "reason": None,
            "samples_ms": samples,
            "median_ms": float(np.median(samples)),
            "ci95_ms": list(stats.bootstrap_ci(samples, n_resamples=200)),
            "rel_error": 1e-3,
        }
    return {"shape": {"name": name}, "candidates": candidates}


def _outside(ci: list[float]) -> bool:
    lo, hi = ci
    return lo > 1 + RESOLUTION or hi < 1 / (1 + RESOLUTION)


def _meets_practical_band(ci: list[float]) -> bool:
    lo, hi = ci
    return lo <= 1 + THRESHOLD and hi >= 1 / (1 + THRESHOLD)


def _agrees(verdict: str, speedup: float | None, ci: list[float] | None) -> bool:
    """A verdict and the interval printed beside it say the same thing."""
    if verdict == stats.TOO_FEW_ROUNDS:
        return ci is None and speedup is None
    if verdict == "same":
        return _meets_practical_band(ci)
    lo, hi = ci
    return _outside(ci) and (lo > 1 if verdict == "faster" else hi < 1) and lo <= speedup <= hi


@pytest.mark.parametrize("seed", range(40))
def test_no_printed_verdict_contradicts_its_interval(seed):
    rng = np.random.default_rng(seed)
    benches = [
        shape_result(_bench(f"s{i}", rng, int(rng.choice([1, 2, 3, 4, 5, 8, 12, 25, 60])))) for i in range(3)
    ]
    compares = [{**stats.compare_shape(b, "math"), "schema": 3} for b in benches]
    typed = [ShapeComparisons.from_json(compare) for compare in compares]
    for compare in compares:
        for comp in compare["comparisons"]:
            assert _agrees(comp["verdict"], comp["speedup"], comp["speedup_ci"]), comp
            if comp["p_value"] is not None:
                assert comp["significant"] is _outside(comp["speedup_ci"]) is (comp["p_value"] < stats.ALPHA)

    analysis = autotune.analyse(benches, typed)
    for entry in analysis["reference"]["comparisons"]:
        comp = next(
            c
            for x in compares
            if x["shape"] == entry["shape"]
            for c in x["comparisons"]
            if c["candidate"] == entry["candidate"]
        )
        assert _agrees(entry["verdict"], comp["speedup"], entry["speedup_ci"]), entry
        assert entry["confidence"] == pytest.approx(1 - stats.ALPHA / analysis["family"])
    for shape in analysis["shapes"]:
        for rival in shape["rivals"]:
            assert _agrees(rival["verdict"], rival["speedup"], rival["speedup_ci"]), rival
            assert rival["tied"] is (rival["verdict"] == "same")
            if rival["tied"] and rival["speedup_ci"] is not None:
                assert _meets_practical_band(rival["speedup_ci"])

    summary = headline.summarize(benches, typed, Analysis.from_json(analysis))
    for shape in summary["shapes"]:
        if shape["verdict"] in (None, "reference"):
            continue
        assert _agrees(shape["verdict"], shape["speedup"], shape["ci"]), shape
        assert shape["significant"] is (shape["verdict"] in ("faster", "slower"))
        if shape["verdict"] == "faster":  # the reference cannot be tied with a fastest shown faster than it
            assert "math" not in shape["tied"]
    for row in summary["matrix"]["rows"]:
        for cell in row["cells"].values():
            if cell["verdict"] not in (None, "reference"):
                assert _agrees(cell["verdict"], cell["speedup"], cell["ci"]), cell


@pytest.mark.parametrize("seed", range(20))
def test_the_ratchets_verdict_agrees_with_its_corrected_interval(seed):
    rng = np.random.default_rng(1000 + seed)
    baseline = [shape_result(_bench(f"s{i}", rng, int(rng.choice([2, 3, 6, 30])))) for i in range(2)]
    now = [shape_result(_bench(f"s{i}", rng, int(rng.choice([2, 3, 6, 30])))) for i in range(2)]
    stored = {
        "kind": "attnbench-baseline",
        "created": "2026-12-07T00:00:00+00:00",
        "fingerprint": {"device": "cpu", "torch": {"version": "x"}},
        "shapes": {
            b.name: {
                "shape": dict(b.shape),
                "config": {"dtype": b.dtype, "mode": b.mode, "timing": {"mode": b.timing["mode"]}},
                "candidates": b.to_json()["candidates"],
            }
            for b in baseline
        },
    }
    settings = ratchet.settings(None)
    docs = [ratchet.compare_shape(b, stored, settings) for b in now]
    document = ratchet.verdict(docs, stored, None, stored["fingerprint"], settings, "baseline.json")
    for entry in document["entries"]:
        if entry["kind"] != "compared":
            continue
        ci = entry["speedup_ci"]
        if entry["verdict"] == "undecided":
            assert ci is None
            continue
        lo, hi = ci
        band = 1 + settings["resolution"]
        if entry["verdict"] == "regression":
            assert hi < 1 / band and 1 / entry["speedup"] - 1 >= settings["threshold"]
        elif entry["verdict"] == "improvement":
            assert lo > band and entry["speedup"] - 1 >= settings["threshold"]
        else:
            assert lo <= 1 + settings["threshold"] and hi >= 1 / (1 + settings["threshold"])
