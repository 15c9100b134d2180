"""Statistics that turn latency samples into claims: confidence intervals, effect sizes, tests.

Significance test
-----------------
All candidates of a shape are timed in interleaved rounds, so ``samples_ms[i]`` of every candidate
comes from round ``i``. When baseline and candidate have the same number of samples (n >= 2) they
are paired by round and compared with a two-sided Wilcoxon signed-rank test on the per-round log
ratios ``log(b_i / c_i)``: slow clock or thermal drift hits both candidates of a round alike and
cancels in the ratio, and the log makes a 10% slowdown and a 10% speedup symmetric. When the counts
differ the pairing is lost and a two-sided Mann-Whitney U test is used instead. Fewer than two
samples on either side gives p = 1.0: there is nothing to test.

A difference is ``significant`` when p < alpha (default alpha = 0.05, per shape, before the
report's Holm correction across the run) AND the speedup is at least the practical threshold
(default 2%) in either direction: with thousands of samples a 0.3% difference is "significant"
but not worth acting on.

Conventions: samples are latencies, so positive Hedges' g, positive Cliff's delta and a speedup
above 1 all mean the candidate is faster than the baseline. Bootstraps use a fixed seed so that
re-running the report on the same bench files gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as _scipy_stats

TEST_PAIRED = "wilcoxon_signed_rank_log_ratio"
TEST_UNPAIRED = "mann_whitney_u"
TEST_NONE = "none (n < 2)"


def _as_1d(samples: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(samples, dtype=float).ravel()
    if x.size == 0:
        raise ValueError(f"{name}: no samples")
    return x


def _as_latencies(samples: ArrayLike, name: str) -> np.ndarray:
    """Ratios and logs of latencies are meaningless for zero, negative or non-finite values."""
    x = _as_1d(samples, name)
    bad = x[~(np.isfinite(x) & (x > 0))]
    if bad.size:
        raise ValueError(f"{name}: latencies must be finite and > 0, got {bad[:3].tolist()}")
    return x


def _check_confidence(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}")


def _quantile_ci(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_ci(
    samples: ArrayLike,
    statistic: Callable[..., Any] = np.median,
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI: makes no normality assumption, and latency tails are skewed.

    ``statistic`` must accept ``axis=`` so that all resamples are evaluated in one vectorised call.
    One sample or constant samples give ``(x, x)``: resampling cannot show any spread.
    """
    x = _as_1d(samples, "samples")
    _check_confidence(confidence, n_resamples)
    if x.size == 1 or np.all(x == x[0]):
        value = float(statistic(x))
        return value, value
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    return _quantile_ci(np.asarray(statistic(x[idx], axis=1), dtype=float), confidence)


def hedges_g(baseline: ArrayLike, candidate: ArrayLike) -> float:
    """Small-sample-corrected standardised mean difference; positive means the candidate is faster.

    NaN when undefined (fewer than 3 samples in all, or zero spread with different means) so that
    a reader never mistakes "cannot say" for "no effect"; zero spread with equal means is 0.0.
    """
    b = _as_1d(baseline, "baseline")
    c = _as_1d(candidate, "candidate")
    n_b, n_c = b.size, c.size
    if n_b + n_c < 3:
        return float("nan")
    mean_b, mean_c = float(b.mean()), float(c.mean())
    # Sums of squares equal (n-1) * var(ddof=1) but stay defined for a single sample.
    ss = float(np.sum((b - mean_b) ** 2) + np.sum((c - mean_c) ** 2))
    s_pooled = math.sqrt(ss / (n_b + n_c - 2))
    if s_pooled == 0.0:
        return 0.0 if mean_b == mean_c else float("nan")
    correction = 1.0 - 3.0 / (4.0 * (n_b + n_c) - 9.0)
    return (mean_b - mean_c) / s_pooled * correction


def cliffs_delta(baseline: ArrayLike, candidate: ArrayLike) -> float:
    """P(b > c) - P(b < c): a rank effect size that ignores outliers' magnitude.

    Positive means the candidate is faster. Counting through ``searchsorted`` on the sorted
    candidate costs O((n + m) log m) instead of comparing all n * m pairs.
    """
    b = _as_1d(baseline, "baseline")
    c = np.sort(_as_1d(candidate, "candidate"))
    below = np.searchsorted(c, b, side="left")  # c < b_i
    above = c.size - np.searchsorted(c, b, side="right")  # c > b_i
    return float((below.sum() - above.sum()) / (b.size * c.size))


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values in input order: controls the family-wise error rate
    across many shapes and candidates without assuming the tests are independent."""
    p = np.asarray(p_values, dtype=float).ravel()
    if p.size == 0:
        return np.empty(0, dtype=float)
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must be in [0, 1], got {p.tolist()!r}")
    order = np.argsort(p, kind="stable")
    scaled = (p.size - np.arange(p.size)) * p[order]
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted = np.empty_like(adjusted_sorted)
    adjusted[order] = adjusted_sorted
    return adjusted


def _p_value(b: np.ndarray, c: np.ndarray, paired: bool) -> tuple[float, str]:
    if b.size < 2 or c.size < 2:
        return 1.0, TEST_NONE
    if paired:
        log_ratios = np.log(b) - np.log(c)
        if np.all(log_ratios == 0.0):
            return 1.0, TEST_PAIRED  # scipy divides by zero here; no difference at all is p = 1
        return float(_scipy_stats.wilcoxon(log_ratios).pvalue), TEST_PAIRED
    result = _scipy_stats.mannwhitneyu(b, c, alternative="two-sided")
    return float(result.pvalue), TEST_UNPAIRED


def _speedup_ci(
    b: np.ndarray, c: np.ndarray, paired: bool, n_resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Bootstrap the ratio of medians; paired rounds are resampled jointly so drift stays shared."""
    rng = np.random.default_rng(seed)
    idx_b = rng.integers(0, b.size, size=(n_resamples, b.size))
    idx_c = idx_b if paired else rng.integers(0, c.size, size=(n_resamples, c.size))
    ratios = np.median(b[idx_b], axis=1) / np.median(c[idx_c], axis=1)
    return _quantile_ci(ratios, confidence)


def practically_different(speedup: float, threshold: float) -> bool:
    """A difference counts only when it reaches the practical threshold, in either direction."""
    return speedup > 0 and max(speedup, 1.0 / speedup) - 1.0 >= threshold


def compare(
    baseline: ArrayLike,
    candidate: ArrayLike,
    *,
    alpha: float = 0.05,
    threshold: float = 0.02,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare two latency sample sets (ms); see the module docstring for the test and its alpha.

    Equal-length inputs are treated as paired by timing round. Values are plain Python types;
    ``hedges_g`` may be NaN (see :func:`hedges_g`), which ``io.jsonable`` writes as null.
    """
    b = _as_latencies(baseline, "baseline")
    c = _as_latencies(candidate, "candidate")
    _check_confidence(confidence, n_resamples)
    paired = b.size == c.size
    speedup = float(np.median(b) / np.median(c))
    lo, hi = _speedup_ci(b, c, paired, n_resamples, confidence, seed)
    p_value, test = _p_value(b, c, paired)
    practical = practically_different(speedup, threshold)
    return {
        "speedup": speedup,
        "speedup_ci95": [lo, hi],
        "hedges_g": float(hedges_g(b, c)),
        "cliffs_delta": cliffs_delta(b, c),
        "p_value": p_value,
        "significant": bool(p_value < alpha and practical),
        "test": test,
    }


def compare_shape(
    bench: Mapping[str, Any],
    reference: str,
    *,
    alpha: float = 0.05,
    threshold: float = 0.02,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare every ok candidate of one bench result with the reference.

    Returns the compare document without its "schema" key (the writer stamps it). Every other
    candidate ends up in exactly one of "comparisons" or "skipped", so nothing vanishes silently.
    ``method["test"]`` names the tests actually used (None when nothing was compared).
    """
    candidates: Mapping[str, Mapping[str, Any]] = bench["candidates"]
    ref = candidates.get(reference)
    ref_status = "missing" if ref is None else str(ref["status"])
    reason: str | None = None
    if ref is None:
        reason = f"reference {reference} is missing from the bench result"
    elif ref_status != "ok":
        reason = f"reference {reference} is {ref_status}: {ref.get('reason')}"

    comparisons: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    tests: set[str] = set()
    for name, result in candidates.items():
        if name == reference:
            continue
        status = result["status"]
        if status != "ok":
            skipped.append({"candidate": name, "status": status, "reason": result.get("reason")})
        elif ref is None or ref_status != "ok":
            skipped.append(
                {
                    "candidate": name,
                    "status": "ok",
                    "reason": f"reference {reference} is {ref_status}",
                }
            )
        else:
            try:
                outcome = compare(
                    ref["samples_ms"],
                    result["samples_ms"],
                    alpha=alpha,
                    threshold=threshold,
                    n_resamples=n_resamples,
                    confidence=confidence,
                    seed=seed,
                )
            except ValueError as exc:  # name the shape and candidate, not just "baseline"
                raise ValueError(f"shape {bench['shape']['name']}, {reference} vs {name}: {exc}") from exc
            tests.add(outcome.pop("test"))
            comparisons.append({"baseline": reference, "candidate": name, **outcome})

    method = {
        "test": " + ".join(sorted(tests)) if tests else None,
        "alpha": alpha,
        "threshold": threshold,
        "n_resamples": n_resamples,
        "confidence": confidence,
        "seed": seed,
        "pairing": "rounds",
    }
    return {
        "shape": bench["shape"]["name"],
        "reference": reference,
        "method": method,
        "reason": reason,
        "comparisons": comparisons,
        "skipped": skipped,
    }


__all__ = [
    "bootstrap_ci",
    "cliffs_delta",
    "compare",
    "compare_shape",
    "holm",
    "hedges_g",
]
