"""Tests for attnbench.stats: each estimator against an independent reference, plus edge cases."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats
from helpers import shape_result

from attnbench import SCHEMA_VERSION, stats
from attnbench.files import jsonable, validate
from attnbench.stats import (
    TEST_PAIRED,
    TEST_UNPAIRED,
    TOO_FEW_ROUNDS,
    adjust,
    block_length,
    bootstrap_ci,
    cliffs_delta,
    compare,
    compare_shape,
    decide,
    hedges_g,
)

COMPARE_SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "compare.schema.yaml"


# --- bootstrap_ci -------------------------------------------------------------------------------


def test_bootstrap_ci_matches_scipy_percentile_bootstrap():
    # sigma 0.1 is typical latency noise; much wider data leaves gaps between the median's possible
    # values that exceed 1%, and two independently seeded bootstraps may then land on neighbours.
    x = np.random.default_rng(123).lognormal(mean=0.0, sigma=0.1, size=50)
    lo, hi = bootstrap_ci(x, np.median, n_resamples=10_000, confidence=0.95, seed=7)
    ref = scipy.stats.bootstrap(
        (x,),
        np.median,
        method="percentile",
        confidence_level=0.95,
        n_resamples=10_000,
        rng=np.random.default_rng(99),
    ).confidence_interval
    assert lo == pytest.approx(ref.low, rel=0.01)
    assert hi == pytest.approx(ref.high, rel=0.01)
    assert lo < np.median(x) < hi


def test_bootstrap_ci_is_seeded_and_accepts_other_statistics():
    x = np.random.default_rng(1).lognormal(size=30)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    lo, hi = bootstrap_ci(x, np.mean, n_resamples=2_000, confidence=0.9)
    assert lo < x.mean() < hi
    assert isinstance(lo, float) and isinstance(hi, float)


def test_bootstrap_ci_degenerate_inputs():
    assert bootstrap_ci([2.5]) == (2.5, 2.5)
    assert bootstrap_ci([1.25] * 20) == (1.25, 1.25)
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], confidence=1.0)


# --- hedges_g -----------------------------------------------------------------------------------


def _hedges_g_reference(b: list[float], c: list[float]) -> float:
    n_b, n_c = len(b), len(c)
    s_pooled = math.sqrt(
        ((n_b - 1) * statistics.variance(b) + (n_c - 1) * statistics.variance(c)) / (n_b + n_c - 2)
    )
    d = (statistics.fmean(b) - statistics.fmean(c)) / s_pooled
    return d * (1 - 3 / (4 * (n_b + n_c) - 9))


@pytest.mark.parametrize("n_b,n_c", [(2, 3), (12, 12), (40, 25)])
def test_hedges_g_matches_direct_formula(n_b, n_c):
    rng = np.random.default_rng(n_b * 100 + n_c)
    b = rng.normal(1.0, 0.1, n_b).tolist()
    c = rng.normal(0.9, 0.1, n_c).tolist()
    assert hedges_g(b, c) == pytest.approx(_hedges_g_reference(b, c), rel=1e-12)


def test_hedges_g_sign_positive_when_candidate_faster():
    rng = np.random.default_rng(0)
    slow = rng.normal(2.0, 0.05, 30)
    fast = rng.normal(1.0, 0.05, 30)
    assert hedges_g(slow, fast) > 0  # baseline slow, candidate fast
    assert hedges_g(fast, slow) < 0
    assert hedges_g(slow, fast) == pytest.approx(-hedges_g(fast, slow))


def test_hedges_g_degenerate_inputs():
    assert math.isnan(hedges_g([1.0], [2.0]))  # n_b + n_c < 3
    assert math.isnan(hedges_g([1.0], [1.0]))
    assert hedges_g([1.0] * 5, [1.0] * 5) == 0.0  # no spread, no difference
    assert math.isnan(hedges_g([1.0] * 5, [2.0] * 5))  # no spread but different means
    # a single sample on one side is fine as long as the other side has spread
    assert hedges_g([1.0], [0.5, 0.7]) == pytest.approx(_hedges_g_reference_single(1.0, [0.5, 0.7]))


def _hedges_g_reference_single(b: float, c: list[float]) -> float:
    s_pooled = math.sqrt((len(c) - 1) * statistics.variance(c) / (1 + len(c) - 2))
    return (b - statistics.fmean(c)) / s_pooled * (1 - 3 / (4 * (1 + len(c)) - 9))


# --- cliffs_delta -------------------------------------------------------------------------------


def _cliffs_delta_reference(b: list[float], c: list[float]) -> float:
    total = 0
    for x in b:
        for y in c:
            total += (x > y) - (x < y)
    return total / (len(b) * len(c))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cliffs_delta_matches_double_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    b = np.round(rng.normal(1.0, 0.1, 37), 1).tolist()  # rounding makes many ties
    c = np.round(rng.normal(0.98, 0.1, 23), 1).tolist()
    assert len(set(b) & set(c)) > 0
    assert cliffs_delta(b, c) == pytest.approx(_cliffs_delta_reference(b, c), abs=1e-15)


def test_cliffs_delta_sign_and_bounds():
    assert cliffs_delta([2.0, 3.0], [1.0, 1.5]) == 1.0  # candidate always faster
    assert cliffs_delta([1.0, 1.5], [2.0, 3.0]) == -1.0
    assert cliffs_delta([1.0] * 4, [1.0] * 7) == 0.0  # constant and equal
    assert cliffs_delta([1.0], [0.5]) == 1.0  # n = 1
    with pytest.raises(ValueError):
        cliffs_delta([], [1.0])


# --- the run-wide correction ---------------------------------------------------------------------


def test_adjust_widens_the_interval_and_scales_the_p_value_alike():
    rng = np.random.default_rng(4)
    base = rng.lognormal(0.0, 0.03, 40)
    comparisons = [compare(base, base / s * rng.lognormal(0.0, 0.03, 40)) for s in (1.0, 1.03, 1.5)]
    adjusted = adjust(comparisons, alpha=0.05)
    for raw, fixed in zip(comparisons, adjusted):
        assert fixed["confidence"] == pytest.approx(1 - 0.05 / 3)
        assert fixed["p_value"] == pytest.approx(min(1.0, 3 * raw["p_value"]))
        assert (
            fixed["speedup_ci"][0] <= raw["speedup_ci"][0] and fixed["speedup_ci"][1] >= raw["speedup_ci"][1]
        )
        lo, hi = fixed["speedup_ci"]
        outside = lo > 1 + stats.RESOLUTION or hi < 1 / (1 + stats.RESOLUTION)
        assert fixed["significant"] is outside is (fixed["p_value"] < 0.05)
    assert adjusted[2]["verdict"] == "faster"
    assert adjust(comparisons, family=1) == [
        {
            k: c[k]
            for k in ("speedup", "speedup_ci", "confidence", "p_value", "significant", "practical", "verdict")
        }
        for c in comparisons
    ]


def test_adjust_keeps_too_few_rounds_and_each_comparisons_band():
    few = compare([1.0, 1.1], [2.0, 2.2])
    clear = {
        **compare([1.0, 1.01, 0.99, 1.0], [0.97, 0.98, 0.96, 0.97]),
        "threshold": 0.05,
        "resolution": 0.01,
    }
    first, second = adjust([few, clear], family=1)
    assert first["verdict"] == TOO_FEW_ROUNDS and first["speedup_ci"] is None
    assert second["practical"] is False and second["verdict"] == "same"  # 3% is under its 5% threshold


def test_a_resolution_above_the_threshold_is_refused():
    with pytest.raises(ValueError, match="exceeds the practical threshold"):
        decide(None, threshold=0.01, resolution=0.02)


# --- compare ------------------------------------------------------------------------------------


def _rounds(rng: np.random.Generator, n: int, scale: float, noise: float, drift: np.ndarray):
    return scale * drift * rng.lognormal(0.0, noise, n)


def test_compare_detects_ten_percent_slowdown():
    rng = np.random.default_rng(42)
    n = 40
    drift = 1.0 + 0.05 * np.sin(np.linspace(0, 3, n))  # slow drift shared by both in a round
    base = _rounds(rng, n, 1.0, 0.01, drift)
    cand = _rounds(rng, n, 1.1, 0.01, drift)
    out = compare(base, cand)
    assert out["test"] == TEST_PAIRED
    assert out["significant"] is True and out["practical"] is True and out["verdict"] == "slower"
    assert out["speedup"] == pytest.approx(1 / 1.1, rel=0.01)
    lo, hi = out["speedup_ci"]
    assert lo <= 1 / 1.1 <= hi
    assert lo <= out["speedup"] <= hi
    assert out["hedges_g"] < 0 and out["cliffs_delta"] < 0  # candidate slower
    assert out["p_value"] < 1e-6
    # plain Python types only, so the result is JSON-serialisable as is
    json.dumps(out, allow_nan=False)
    assert all(type(v) in (float, bool, str, list, int, dict, type(None)) for v in out.values())


def test_compare_false_positive_rate_in_aa_trials():
    n_trials, n = 200, 30
    hits_plain = verdicts = 0
    for trial in range(n_trials):
        rng = np.random.default_rng(1000 + trial)
        drift = np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))  # random-walk clock drift per round
        base = _rounds(rng, n, 1.0, 0.03, drift)
        cand = _rounds(rng, n, 1.0, 0.03, drift)
        hits_plain += compare(base, cand, resolution=0.0)["significant"]
        verdicts += compare(base, cand)["verdict"] != "same"
    assert hits_plain / n_trials <= 0.08  # the test itself is calibrated
    assert verdicts <= hits_plain


def test_compare_one_percent_is_below_practical_threshold():
    rng = np.random.default_rng(5)
    n = 40
    base = _rounds(rng, n, 1.0, 0.0005, np.ones(n))
    cand = _rounds(rng, n, 1.01, 0.0005, np.ones(n))
    out = compare(base, cand)
    assert out["significant"] is True  # statistically clear ...
    assert out["practical"] is False and out["verdict"] == "same"  # ... but below the 2% threshold
    assert compare(base, cand, threshold=0.005)["verdict"] == "slower"


def test_compare_unpaired_when_lengths_differ():
    rng = np.random.default_rng(9)
    out = compare(rng.lognormal(0.0, 0.02, 30), rng.lognormal(-0.2, 0.02, 25))
    assert out["test"] == TEST_UNPAIRED
    assert out["significant"] is True and out["speedup"] > 1 and out["verdict"] == "faster"


def test_compare_degenerate_inputs():
    same = compare([1.0] * 10, [1.0] * 10)
    assert same["p_value"] == 1.0 and same["significant"] is False
    assert same["speedup"] == 1.0 and same["speedup_ci"] == [1.0, 1.0]
    assert same["hedges_g"] == 0.0 and same["cliffs_delta"] == 0.0

    constant_diff = compare([2.0] * 10, [1.0] * 10)
    assert compare([1.002] * 10, [1.0] * 10)["significant"] is False  # inside the resolution
    assert constant_diff["speedup"] == 2.0 and constant_diff["speedup_ci"] == [2.0, 2.0]
    assert math.isnan(constant_diff["hedges_g"]) and constant_diff["cliffs_delta"] == 1.0
    assert constant_diff["significant"] is True and constant_diff["p_value"] == 0.0


@pytest.mark.parametrize("rounds", [1, 2])
def test_below_the_fewest_rounds_there_is_no_interval_and_the_verdict_says_so(rounds):
    """Issue 30: two rounds once gave `0.850x [0.704, 1.06] slower`; now no guess is printed."""
    out = compare([2.0, 2.1][:rounds], [1.0, 1.2][:rounds])
    assert out["verdict"] == TOO_FEW_ROUNDS
    assert out["speedup"] is None and out["speedup_ci"] is None and out["p_value"] is None
    assert out["significant"] is False and out["rounds"] == rounds
    assert out["rounds_to_decide"] == stats.MIN_ROUNDS
    assert math.isnan(out["hedges_g"]) or rounds == 2
    unpaired = compare([2.0, 2.1, 1.9, 2.0], [1.0, 1.1], paired=False)
    assert unpaired["verdict"] == TOO_FEW_ROUNDS  # a side with fewer than MIN_ROUNDS samples


def test_the_verdict_and_p_value_follow_from_the_interval_printed_beside_them():
    """The two contradictions of issue 30, rebuilt: a wide interval and a 'slower' verdict cannot
    meet, nor an interval below the practical band and 'same'."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(3, 60))
        base = rng.lognormal(0.0, rng.uniform(0.005, 0.2), n)
        cand = base * rng.uniform(0.6, 1.5) * rng.lognormal(0.0, rng.uniform(0.005, 0.2), n)
        out = compare(base, cand)
        lo, hi = out["speedup_ci"]
        outside = lo > 1 + stats.RESOLUTION or hi < 1 / (1 + stats.RESOLUTION)
        assert out["significant"] is outside is (out["p_value"] < stats.ALPHA)
        assert lo <= out["speedup"] <= hi
        if out["verdict"] == "same":
            assert lo <= 1 + stats.THRESHOLD and hi >= 1 / (1 + stats.THRESHOLD)  # meets the band
        else:
            assert outside and (out["verdict"] == "faster") is (lo > 1)


def test_rounds_to_decide_forecasts_the_rounds_that_narrow_the_interval_enough():
    rng = np.random.default_rng(8)
    base = rng.lognormal(0.0, 0.05, 6)
    cand = base / 1.04 * rng.lognormal(0.0, 0.05, 6)
    out = compare(base, cand)
    assert out["verdict"] == "same" and out["rounds_to_decide"] > 6
    more = rng.lognormal(0.0, 0.05, out["rounds_to_decide"] * 2)
    decided = compare(more, more / 1.04 * rng.lognormal(0.0, 0.05, more.size))
    assert decided["rounds_to_decide"] is None and decided["verdict"] == "faster"


@pytest.mark.parametrize("bad", [[1.0, 0.0], [1.0, -2.0], [1.0, float("nan")], []])
def test_compare_rejects_non_latencies(bad):
    with pytest.raises(ValueError, match="candidate"):
        compare([1.0, 1.1], bad)


# --- compare_shape ------------------------------------------------------------------------------


def _candidate(status: str, samples: list[float] | None = None, reason: str | None = None):
    samples = samples or []
    return {
        "status": status,
        "reason": reason,
        "samples_ms": samples,
        "median_ms": float(np.median(samples)) if samples else None,
        "ci95_ms": None,
        "tflops": None,
        "peak_mem_mb": None,
        "rel_error": None,
    }


def _bench(reference_status: str = "ok") -> Any:
    rng = np.random.default_rng(11)
    n = 20
    ref_samples = rng.lognormal(0.0, 0.01, n).tolist() if reference_status == "ok" else []
    return shape_result(
        {
            "schema": SCHEMA_VERSION,
            "shape": {
                "name": "b1_h8_s1024_d64",
                "batch": 1,
                "heads": 8,
                "kv_heads": 8,
                "seq": 1024,
                "seq_kv": 1024,
                "dim": 64,
                "causal": False,
            },
            "device": "cpu",
            "candidates": {
                "sdpa_math": _candidate(
                    reference_status,
                    ref_samples,
                    None if reference_status == "ok" else "kernel crashed",
                ),
                "flash": _candidate("ok", rng.lognormal(-0.3, 0.01, n).tolist()),
                "xformers": _candidate("unsupported", reason="head dim 64 not built"),
                "naive": _candidate("incorrect", [1.0, 1.1], reason="rel_error 0.3 > 0.01"),
            },
        }
    )


def _validate(doc: dict) -> None:
    validate(jsonable({"schema": SCHEMA_VERSION, **doc}), COMPARE_SCHEMA, source="test")


def test_compare_shape_compares_ok_candidates_and_skips_the_rest():
    doc = compare_shape(_bench(), "sdpa_math")
    assert "schema" not in doc
    assert doc["shape"] == "b1_h8_s1024_d64" and doc["reference"] == "sdpa_math"
    assert doc["reason"] is None
    assert doc["method"]["test"] == TEST_PAIRED
    assert doc["method"]["pairing"] == "rounds" and doc["method"]["min_rounds"] == stats.MIN_ROUNDS
    assert [c["candidate"] for c in doc["comparisons"]] == ["flash"]
    flash = doc["comparisons"][0]
    assert flash["baseline"] == "sdpa_math"
    assert flash["speedup"] == pytest.approx(math.exp(0.3), rel=0.02)
    assert flash["significant"] is True
    assert "test" not in flash
    assert doc["skipped"] == [
        {"candidate": "xformers", "status": "unsupported", "reason": "head dim 64 not built"},
        {"candidate": "naive", "status": "incorrect", "reason": "rel_error 0.3 > 0.01"},
    ]
    _validate(doc)
    json.dumps(jsonable(doc), allow_nan=False)


def test_compare_shape_reference_not_ok():
    doc = compare_shape(_bench("error"), "sdpa_math")
    assert doc["comparisons"] == []
    assert "sdpa_math" in doc["reason"] and "error" in doc["reason"] and "kernel crashed" in doc["reason"]
    assert doc["method"]["test"] is None
    assert {s["candidate"]: s["status"] for s in doc["skipped"]} == {
        "flash": "ok",
        "xformers": "unsupported",
        "naive": "incorrect",
    }
    flash = next(s for s in doc["skipped"] if s["candidate"] == "flash")
    assert flash["reason"] == "reference sdpa_math is error"
    _validate(doc)


def test_compare_shape_reference_missing():
    doc = compare_shape(_bench(), "cudnn")
    assert doc["comparisons"] == [] and "cudnn" in doc["reason"] and "missing" in doc["reason"]
    assert len(doc["skipped"]) == 4
    _validate(doc)


# --- autocorrelation and resolution -------------------------------------------------------------


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    x = np.empty(n)
    x[0] = rng.normal(0.0, sd / math.sqrt(1.0 - phi**2))
    for i in range(1, n):
        x[i] = phi * x[i - 1] + rng.normal(0.0, sd)
    return x


def _aa_rates(phi: float, n: int, trials: int = 500) -> tuple[float, float]:
    """A/A false-positive rates of the product's test (resolution 0) and of a Wilcoxon signed-rank
    test that treats every round as independent, on drifting, autocorrelated timings."""
    ours = naive = 0
    for trial in range(trials):
        rng = np.random.default_rng(trial)
        shared = _ar1(rng, n, 0.99, 0.02)  # clock and thermal drift: both candidates of a round
        a = np.exp(shared + _ar1(rng, n, phi, 0.01))
        b = np.exp(shared + _ar1(rng, n, phi, 0.01))
        ours += compare(a, b, resolution=0.0)["significant"]
        naive += scipy.stats.wilcoxon(np.log(a) - np.log(b)).pvalue < 0.05
    return ours / trials, naive / trials


def test_block_test_holds_its_alpha_on_autocorrelated_rounds_where_a_per_round_test_does_not():
    ours, naive = _aa_rates(phi=0.5, n=400)
    assert ours <= 0.075  # 5% plus 2.5 standard errors of a rate over 500 trials
    assert naive >= 0.15


def test_block_length_gives_ten_to_nineteen_even_blocks_from_twenty_rounds():
    assert [block_length(n) for n in (3, 5, 19)] == [1, 1, 1]  # below 20: each round its own block
    for n in (20, 39, 50, 199, 400, 5000):
        size = block_length(n)
        assert size % 2 == 0 and 10 <= n // size < 20


def test_bootstrap_ci_widens_for_autocorrelated_samples():
    x = np.exp(_ar1(np.random.default_rng(3), 400, 0.9, 0.01))
    iid = bootstrap_ci(x, block=1, n_resamples=2000)
    blocks = bootstrap_ci(x, n_resamples=2000)
    assert blocks[1] - blocks[0] > 1.5 * (iid[1] - iid[0])


def test_resolution_sets_the_smallest_difference_the_test_can_call():
    rng = np.random.default_rng(11)
    base = rng.lognormal(0.0, 0.001, 200)
    slightly = base * 1.002 * rng.lognormal(0.0, 0.001, 200)
    clearly = base * 1.02 * rng.lognormal(0.0, 0.001, 200)
    assert compare(base, slightly, resolution=0.0)["significant"] is True
    assert compare(base, slightly)["significant"] is False  # 0.2% is inside the default 0.5%
    assert compare(base, clearly)["significant"] is True
