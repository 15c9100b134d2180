"""Statistics that turn latency samples into claims: confidence intervals, effect sizes, tests.

Significance test
-----------------
All candidates of a shape are timed in interleaved rounds, so ``samples_ms[i]`` of every candidate
comes from round ``i``. Timing series are autocorrelated (clocks, temperature and power drift over
seconds), so neither the test nor the intervals treat rounds as independent draws:

* The rounds are cut into ``block_length(n)``-round blocks (10 to 19 of them, an even number of
  rounds each, so the alternating order A B / B A cancels inside a block): the batch-means method.
  Block means of autocorrelated data are nearly independent and nearly normal even when single
  rounds are neither.
* Paired (equal sample counts, n >= 2): a one-sample t-test on the block means of the per-round
  log ratios ``log(b_i / c_i)``. Drift common to a round cancels in the ratio, and the log makes a
  10% slowdown and a 10% speedup symmetric. (A rank test on ten blocks could never reach the
  p-values that Holm's correction needs over a run of dozens of comparisons.)
* Unpaired (different counts, or runs that share no rounds): Welch's t-test on the block means of each side's log latencies.
* Intervals (a median's CI, the speedup's CI) come from a circular block bootstrap with the same
  block length; paired rounds are resampled jointly.

The null hypothesis is "the two differ by at most ``resolution``" (default 0.5%), not "they are
identical": two copies of the same kernel timed side by side differ systematically by a few tenths
of a percent (where their buffers sit in memory, which CUDA graph instance replays them), and with
thousands of precise samples a plain test would call that significant every time. The interval
null is tested as two one-sided t-tests against ±log(1 + resolution); resolution 0 gives the
ordinary two-sided test.

``significant`` is that test alone: p < alpha (default 0.05, per shape; the autotune step applies Holm
across the run). ``practical`` says whether the speedup reaches the practical threshold (default
2%) in either direction, and ``verdict`` combines both: ``faster`` or ``slower`` only when the
difference is significant AND practical, else ``same``.

Conventions: samples are latencies, so positive Hedges' g, positive Cliff's delta and a speedup
above 1 all mean the candidate is faster than the baseline. Bootstraps use a fixed seed so that
re-running the report on the same bench files gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as _scipy_stats

TEST_PAIRED = "t_test_on_block_means_of_log_ratios"
TEST_UNPAIRED = "welch_t_test_on_block_means_of_log_latencies"
# Resamples are drawn in chunks of at most this many indices, so 10,000 resamples of a long run
# never build a multi-GB index array.
_CHUNK_ELEMENTS = 4_000_000
BLOCKS = 10
# Differences this small are below what interleaved timing can attribute to a kernel: two copies of
# one kernel measured side by side differ systematically by up to ~0.4% on an H100 (placement of
# their buffers, graph instances; docs/validation). The test asks whether a difference exceeds it.
RESOLUTION = 0.005
# The significance level wherever a run does not set stats.alpha: compare, autotune and the ratchet.
ALPHA = 0.05
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


def block_length(n: int) -> int:
    """Rounds per block: the series is cut into 10 to 19 blocks of an even number of rounds.

    A fixed number of blocks (the batch-means method of simulation output analysis) keeps the
    test and the intervals honest however slowly the drift decorrelates, where a block length
    that grows like n^(1/3) lets false positives rise with strongly autocorrelated timings (see
    tests/test_stats.py). Fewer than 4 rounds cannot form two blocks of two: one round per block.
    """
    if n < 4:
        return 1
    return max(2, 2 * (n // (2 * BLOCKS)))


def _block_resamples(n: int, block: int, n_resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Circular block bootstrap indices, (chunk, n) at a time: whole blocks of consecutive rounds
    are drawn, so the autocorrelation inside a block survives in the resample."""
    n_blocks = math.ceil(n / block)
    per_chunk = max(1, _CHUNK_ELEMENTS // (n_blocks * block))
    offsets = np.arange(block)
    for done in range(0, n_resamples, per_chunk):
        size = min(per_chunk, n_resamples - done)
        starts = rng.integers(0, n, size=(size, n_blocks, 1))
        yield ((starts + offsets) % n).reshape(size, n_blocks * block)[:, :n]


def bootstrap_ci(
    samples: ArrayLike,
    statistic: Callable[..., Any] = np.median,
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    block: int | None = None,
) -> tuple[float, float]:
    """Percentile circular-block-bootstrap CI: no normality assumption (latency tails are skewed)
    and no independence assumption (consecutive rounds are correlated).

    ``block`` defaults to ``block_length(n)``; ``block=1`` is the ordinary iid bootstrap.
    ``statistic`` must accept ``axis=`` so that all resamples are evaluated in one vectorised call.
    One sample or constant samples give ``(x, x)``: resampling cannot show any spread.
    """
    x = _as_1d(samples, "samples")
    _check_confidence(confidence, n_resamples)
    if x.size == 1 or np.all(x == x[0]):
        value = float(statistic(x))
        return value, value
    rng = np.random.default_rng(seed)
    size = block_length(x.size) if block is None else block
    values = [statistic(x[idx], axis=1) for idx in _block_resamples(x.size, size, n_resamples, rng)]
    return _quantile_ci(np.concatenate(values).astype(float), confidence)


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


def _block_means(x: np.ndarray, block: int) -> np.ndarray:
    """Means of consecutive blocks; a trailing partial block is dropped so every block weighs alike."""
    whole = x.size // block * block
    return x[:whole].reshape(-1, block).mean(axis=1)


def _interval_null_p(blocks: np.ndarray, margin: float, test: Callable[..., Any], difference: float) -> float:
    """Two-sided p of H0: |mean| <= margin (a minimum-effect test; margin 0 is the ordinary test).

    `test(values, alternative)` is a one-sample or two-sample t-test on the shifted blocks. Zero
    spread makes scipy answer NaN: then `difference` either clears the margin (p = 0) or not (1).
    """
    above = float(test(blocks - margin, "greater").pvalue)
    below = float(test(blocks + margin, "less").pvalue)
    if math.isnan(above) or math.isnan(below):
        return 0.0 if abs(difference) > margin else 1.0
    return min(1.0, 2.0 * min(above, below))


def _p_value(b: np.ndarray, c: np.ndarray, paired: bool, resolution: float) -> tuple[float, str]:
    if b.size < 2 or c.size < 2:
        return 1.0, TEST_NONE
    margin = math.log1p(resolution)
    if paired:
        blocks = _block_means(np.log(b) - np.log(c), block_length(b.size))

        def one_sample(x: np.ndarray, alternative: str) -> Any:
            return _scipy_stats.ttest_1samp(x, 0.0, alternative=alternative)

        return _interval_null_p(blocks, margin, one_sample, float(blocks.mean())), TEST_PAIRED
    blocks_c = _block_means(np.log(c), block_length(c.size))

    def welch(x: np.ndarray, alternative: str) -> Any:
        return _scipy_stats.ttest_ind(x, blocks_c, equal_var=False, alternative=alternative)

    blocks_b = _block_means(np.log(b), block_length(b.size))
    difference = float(blocks_b.mean() - blocks_c.mean())
    return _interval_null_p(blocks_b, margin, welch, difference), TEST_UNPAIRED


def _resampled_medians(x: np.ndarray, rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    draws = _block_resamples(x.size, block_length(x.size), n_resamples, rng)
    return np.concatenate([np.median(x[idx], axis=1) for idx in draws])


def _speedup_ci(
    b: np.ndarray, c: np.ndarray, paired: bool, n_resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Block-bootstrap the ratio of medians; paired rounds are resampled jointly so drift stays shared."""
    rng = np.random.default_rng(seed)
    if not paired:
        ratios = _resampled_medians(b, rng, n_resamples) / _resampled_medians(c, rng, n_resamples)
        return _quantile_ci(ratios, confidence)
    draws = _block_resamples(b.size, block_length(b.size), n_resamples, rng)
    ratios = np.concatenate([np.median(b[idx], axis=1) / np.median(c[idx], axis=1) for idx in draws])
    return _quantile_ci(ratios, confidence)


def practically_different(speedup: float, threshold: float) -> bool:
    """A difference counts only when it reaches the practical threshold, in either direction."""
    return speedup > 0 and max(speedup, 1.0 / speedup) - 1.0 >= threshold


def compare(
    baseline: ArrayLike,
    candidate: ArrayLike,
    *,
    alpha: float = ALPHA,
    threshold: float = 0.02,
    resolution: float = RESOLUTION,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    paired: bool | None = None,
) -> dict[str, Any]:
    """Compare two latency sample sets (ms); see the module docstring for the test and its alpha.

    ``paired=None`` treats equal-length inputs as paired by timing round; samples from different
    runs share no rounds and must say ``paired=False``. Values are plain Python types;
    ``hedges_g`` may be NaN (see :func:`hedges_g`), which ``files.jsonable`` writes as null.
    """
    b = _as_latencies(baseline, "baseline")
    c = _as_latencies(candidate, "candidate")
    _check_confidence(confidence, n_resamples)
    if paired is None:
        paired = b.size == c.size
    elif paired and b.size != c.size:
        raise ValueError(f"paired samples need equal counts, got {b.size} and {c.size}")
    speedup = float(np.median(b) / np.median(c))
    lo, hi = _speedup_ci(b, c, paired, n_resamples, confidence, seed)
    p_value, test = _p_value(b, c, paired, resolution)
    significant = p_value < alpha
    practical = practically_different(speedup, threshold)
    verdict = ("faster" if speedup > 1.0 else "slower") if significant and practical else "same"
    return {
        "speedup": speedup,
        "speedup_ci95": [lo, hi],
        "hedges_g": float(hedges_g(b, c)),
        "cliffs_delta": cliffs_delta(b, c),
        "p_value": p_value,
        "significant": bool(significant),
        "practical": bool(practical),
        "verdict": verdict,
        "test": test,
    }


def compare_shape(
    bench: Mapping[str, Any],
    reference: str,
    *,
    alpha: float = ALPHA,
    threshold: float = 0.02,
    resolution: float = RESOLUTION,
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
                    resolution=resolution,
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
        "resolution": resolution,
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
    "block_length",
    "bootstrap_ci",
    "cliffs_delta",
    "compare",
    "compare_shape",
    "holm",
    "hedges_g",
]
