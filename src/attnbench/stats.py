"""Statistics that turn latency samples into claims: one inference per comparison, effect sizes.

One procedure per comparison
----------------------------
All candidates of a shape are timed in interleaved rounds, so ``samples_ms[i]`` of every candidate
comes from round ``i``. The comparison estimates the log speedup ``log(b / c)`` (baseline over
candidate: above 0 means the candidate is faster) and everything printed about it follows from that
one estimate, its standard error and its degrees of freedom (`Estimate`):

* Paired (equal sample counts): the per-round log ratios ``log(b_i / c_i)``, averaged in blocks.
  Drift common to a round (clocks, temperature, power) cancels in the ratio, and the log makes a 10%
  slowdown and a 10% speedup symmetric. From ``2 * BLOCKS`` rounds on, the rounds are cut into
  ``block_length(n)``-round blocks (10 to 19 of them, an even number of rounds each, so the
  alternating order A B / B A cancels inside a block): the batch-means method, whose block means are
  nearly independent and nearly normal even when single rounds are neither. Below that each round is
  its own block. The estimate is the mean of the block means, with ``blocks - 1`` degrees of freedom.
* Unpaired (different counts, or runs that share no rounds): each side's block means of log
  latencies; the difference of their means, Welch's standard error and the Welch-Satterthwaite
  degrees of freedom.
* The point is ``exp(estimate)``: the geometric mean of the per-round speedups (paired).
* The interval is the t interval ``exp(estimate ± t(1 - alpha/2, df) * se)``: the confidence is
  ``1 - alpha``, not a separate setting, so it is the interval the test inverts.
* The null hypothesis is "the two differ by at most ``resolution``" (default 0.5%), not "they are
  identical": two copies of the same kernel timed side by side differ systematically by a few
  tenths of a percent (where their buffers sit in memory, which CUDA graph instance replays them),
  and with thousands of precise samples a plain test would call that significant every time. The
  p-value is that of the two one-sided t-tests against ±log(1 + resolution), so ``p < alpha``
  exactly when the interval lies outside the band [1/(1 + resolution), 1 + resolution]:
  ``significant``.
* ``practical``: the point reaches the practical ``threshold`` (default 2%) in either direction.
  ``verdict`` is ``faster`` or ``slower`` when the comparison is significant and practical, ``same``
  otherwise; a "same" interval always meets the practical band, a "faster" one never meets the
  resolution band. The resolution may not exceed the threshold (else "same" could sit beside an
  interval wholly outside the practical band).
* Fewer than ``MIN_ROUNDS`` rounds give no estimate: the verdict is ``too few rounds``, with no
  interval and no p-value, and `rounds_to_decide` says how many would do.

A run-wide family of comparisons (autotune's ties, the headline, the ratchet) is corrected with
Bonferroni (`adjust`): each interval at confidence ``1 - alpha / m`` and each p-value times ``m``,
so the adjusted p is below alpha exactly when the adjusted interval leaves the resolution band. Holm's
step-down rejects a little more often, but its compatible intervals (Strassburger & Bretz, Stat. Med.
2008) collapse onto the band's edge for every rejected comparison: no interval worth printing.

Conventions: samples are latencies, so positive Hedges' g, positive Cliff's delta and a speedup
above 1 all mean the candidate is faster than the baseline. A median's interval (the sampling's stop
rule, the per-candidate "± CI" column) is a circular block bootstrap with a fixed seed, so
re-running the report on the same bench files gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from attnbench.documents import ShapeResult
from attnbench.results import Status
from attnbench.settings import ALPHA, RESOLUTION, THRESHOLD

TEST_PAIRED = "t_test_on_block_means_of_log_ratios"
TEST_UNPAIRED = "welch_t_test_on_block_means_of_log_latencies"
# Resamples are drawn in chunks of at most this many indices, so 10,000 resamples of a long run
# never build a multi-GB index array.
_CHUNK_ELEMENTS = 4_000_000
BLOCKS = 10
# Fewest rounds (paired) or samples per side (unpaired) an interval is computed from: two degrees of
# freedom; the simulation in tests/test_stats_simulation.py shows the coverage from there on.
MIN_ROUNDS = 3
TOO_FEW_ROUNDS = "too few rounds"


def _as_1d(samples: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(samples, dtype=float).ravel()
    if x.size == 0:
        raise ValueError(f"{name}: no samples")
    return x


def _as_latencies(samples: ArrayLike, name: str) -> np.ndarray:
    """Ratios and logs of latencies are meaningless for zero, negative or non-finite values. Rounds
    run along the last axis (one row per simulated run where there are more)."""
    x = np.asarray(samples, dtype=float)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name}: no samples")
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
    """Rounds per block: from 2 * BLOCKS rounds on, the series is cut into 10 to 19 blocks of an even
    number of rounds; below that each round is a block of its own.

    A fixed number of blocks (the batch-means method of simulation output analysis) keeps the
    test and the intervals honest however slowly the drift decorrelates, where a block length
    that grows like n^(1/3) lets false positives rise with strongly autocorrelated timings (see
    tests/test_stats.py). Below 2 * BLOCKS rounds, blocks would leave too few degrees of freedom
    (5 rounds in blocks of 2: one), so single rounds serve, as nearly independent as the ratio
    makes them.
    """
    if n < 2 * BLOCKS:
        return 1
    return 2 * (n // (2 * BLOCKS))


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


def _block_means(x: np.ndarray, block: int) -> np.ndarray:
    """Means of consecutive blocks along the last axis; a trailing partial block is dropped so every
    block weighs alike."""
    whole = x.shape[-1] // block * block
    return x[..., :whole].reshape(*x.shape[:-1], -1, block).mean(axis=-1)


Number = Any  # a float, or an array of them for many runs at once (the simulation's)


@dataclass(frozen=True)
class Estimate:
    """The log speedup (baseline over candidate) with its standard error and degrees of freedom: the
    one estimate from which a comparison's point, interval, p-value and verdict all follow. Fields
    are floats for one comparison, arrays for many runs of one (tests/test_stats_simulation.py)."""

    log_speedup: Number
    se: Number
    df: Number
    rounds: int
    test: str

    def interval(self, confidence: float) -> tuple[Number, Number]:
        """The speedup's two-sided t interval at `confidence` (in speedup units, not logs)."""
        from scipy import special  # here: printing a stored headline needs no scipy

        half = special.stdtrit(self.df, 0.5 + confidence / 2.0) * self.se
        return np.exp(self.log_speedup - half), np.exp(self.log_speedup + half)

    def p_beyond(self, resolution: float) -> Number:
        """Two-sided p of H0: |log speedup| <= log(1 + resolution), by the two one-sided t-tests the
        interval inverts: p < 1 - confidence exactly when that interval lies outside the band."""
        from scipy import special

        excess = np.abs(self.log_speedup) - math.log1p(resolution)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = 2.0 * special.stdtr(self.df, -excess / self.se)
        # no spread: the point either clears the band (p = 0) or not (1)
        return np.minimum(1.0, np.where(self.se > 0, p, np.where(excess > 0, 0.0, 1.0)))


def _spread(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the block means and its squared standard error, along the last axis."""
    return blocks.mean(axis=-1), blocks.var(axis=-1, ddof=1) / blocks.shape[-1]


def estimate(baseline: ArrayLike, candidate: ArrayLike, paired: bool) -> Estimate | None:
    """The log speedup from block means along the last axis (see the module docstring), or None with
    fewer than MIN_ROUNDS rounds (paired) or samples on either side (unpaired): too few to estimate
    a spread the interval can trust."""
    b, c = np.log(_as_latencies(baseline, "baseline")), np.log(_as_latencies(candidate, "candidate"))
    n_b, n_c = b.shape[-1], c.shape[-1]
    if min(n_b, n_c) < MIN_ROUNDS:
        return None
    if paired:
        blocks = _block_means(b - c, block_length(n_b))
        mean, var = _spread(blocks)
        return Estimate(mean, np.sqrt(var), blocks.shape[-1] - 1, n_b, TEST_PAIRED)
    blocks_b, blocks_c = _block_means(b, block_length(n_b)), _block_means(c, block_length(n_c))
    (mean_b, var_b), (mean_c, var_c) = _spread(blocks_b), _spread(blocks_c)
    k_b, k_c = blocks_b.shape[-1], blocks_c.shape[-1]
    var = var_b + var_c
    # Welch-Satterthwaite; with no spread on either side the pooled count stands in (se is 0 anyway)
    parts = var_b**2 / (k_b - 1) + var_c**2 / (k_c - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(parts > 0, var**2 / parts, k_b + k_c - 2.0)
    return Estimate(mean_b - mean_c, np.sqrt(var), df, min(n_b, n_c), TEST_UNPAIRED)


def practically_different(speedup: float, threshold: float) -> bool:
    """A difference counts only when it reaches the practical threshold, in either direction."""
    return speedup > 0 and max(speedup, 1.0 / speedup) - 1.0 >= threshold


def decide(
    est: Estimate | None,
    *,
    alpha: float = ALPHA,
    threshold: float = THRESHOLD,
    resolution: float = RESOLUTION,
    family: int = 1,
) -> dict[str, Any]:
    """Point, interval, p-value and verdict of one comparison, all from `est`.

    The interval has confidence 1 - alpha / family and the p-value is min(1, family * p): Bonferroni
    over a family of `family` comparisons, the one correction that adjusts an interval and a p-value
    alike (module docstring). `significant` is "the interval lies outside the resolution band"
    (equivalently p < alpha); the verdict is faster or slower when it is significant and the point
    reaches the practical threshold, "same" otherwise, and TOO_FEW_ROUNDS when there is no estimate.
    """
    if resolution > threshold:
        raise ValueError(f"resolution {resolution} exceeds the practical threshold {threshold}")
    confidence = 1.0 - alpha / family
    if est is None:
        return {
            "speedup": None,
            "speedup_ci": None,
            "confidence": confidence,
            "p_value": None,
            "significant": False,
            "practical": False,
            "verdict": TOO_FEW_ROUNDS,
        }
    speedup = math.exp(float(est.log_speedup))
    lo, hi = (float(end) for end in est.interval(confidence))
    p_value = min(1.0, family * float(est.p_beyond(resolution)))
    significant = lo > 1.0 + resolution or hi < 1.0 / (1.0 + resolution)
    practical = practically_different(speedup, threshold)
    verdict = ("faster" if speedup > 1.0 else "slower") if significant and practical else "same"
    return {
        "speedup": speedup,
        "speedup_ci": [lo, hi],
        "confidence": confidence,
        "p_value": p_value,
        "significant": significant,
        "practical": practical,
        "verdict": verdict,
    }


def rounds_to_decide(
    est: Estimate | None,
    rounds: int,
    *,
    alpha: float = ALPHA,
    threshold: float = THRESHOLD,
    resolution: float = RESOLUTION,
) -> int | None:
    """About how many rounds in all would let the interval leave the resolution band or fit inside the
    practical one, at the spread measured so far; MIN_ROUNDS when there is no estimate yet, None
    when the comparison is decided already. A forecast from the sample spread, not a promise."""
    if est is None:
        return MIN_ROUNDS
    outcome = decide(est, alpha=alpha, threshold=threshold, resolution=resolution)
    lo, hi = outcome["speedup_ci"]
    inside = 1.0 / (1.0 + threshold) <= lo and hi <= 1.0 + threshold
    se, point = float(est.se), abs(float(est.log_speedup))
    if outcome["significant"] or inside or se == 0:
        return None
    # the half-width that would decide it: to the resolution band's edge, or inside the practical band
    gap = max(point - math.log1p(resolution), math.log1p(threshold) - point)
    if gap <= 0:
        return None  # the point sits where neither can happen: more rounds move the point, not the width
    z = float(NormalDist().inv_cdf(1.0 - alpha / 2.0))
    return max(rounds + 1, math.ceil(rounds * (se * z / gap) ** 2))


def compare(
    baseline: ArrayLike,
    candidate: ArrayLike,
    *,
    alpha: float = ALPHA,
    threshold: float = THRESHOLD,
    resolution: float = RESOLUTION,
    paired: bool | None = None,
) -> dict[str, Any]:
    """Compare two latency sample sets (ms); see the module docstring for the test and its alpha.

    ``paired=None`` treats equal-length inputs as paired by timing round; samples from different
    runs share no rounds and must say ``paired=False``. Values are plain Python types;
    ``hedges_g`` may be NaN (see :func:`hedges_g`), which ``files.jsonable`` writes as null.
    ``estimate`` carries what a run-wide correction needs to widen the interval (`adjust`).
    """
    b = _as_latencies(baseline, "baseline").ravel()
    c = _as_latencies(candidate, "candidate").ravel()
    if paired is None:
        paired = b.size == c.size
    elif paired and b.size != c.size:
        raise ValueError(f"paired samples need equal counts, got {b.size} and {c.size}")
    est = estimate(b, c, paired)
    rounds = int(min(b.size, c.size))
    outcome = decide(est, alpha=alpha, threshold=threshold, resolution=resolution)
    return {
        **outcome,
        "hedges_g": float(hedges_g(b, c)),
        "cliffs_delta": cliffs_delta(b, c),
        "rounds": rounds,
        "rounds_to_decide": rounds_to_decide(
            est, rounds, alpha=alpha, threshold=threshold, resolution=resolution
        ),
        "estimate": (
            None
            if est is None
            else {"log_speedup": float(est.log_speedup), "se": float(est.se), "df": float(est.df)}
        ),
        "test": TEST_PAIRED if paired else TEST_UNPAIRED,
    }


def adjust(
    comparisons: list[Mapping[str, Any]], *, alpha: float = ALPHA, family: int | None = None
) -> list[dict[str, Any]]:
    """`decide` again for each comparison of a run-wide family of `family` comparisons (default: these):
    its interval, p-value, significance and verdict with the Bonferroni correction, from the
    `estimate` each carries (stats.compare's). Each comparison keeps its own threshold and
    resolution where it records them (`threshold`, `resolution` keys), else the defaults."""
    family = max(1, len(comparisons) if family is None else family)
    adjusted = []
    for comp in comparisons:
        raw = comp.get("estimate")
        est = None if raw is None else Estimate(raw["log_speedup"], raw["se"], raw["df"], comp["rounds"], "")
        adjusted.append(
            decide(
                est,
                alpha=alpha,
                threshold=comp.get("threshold", THRESHOLD),
                resolution=comp.get("resolution", RESOLUTION),
                family=family,
            )
        )
    return adjusted


def compare_shape(
    bench: ShapeResult,
    reference: str,
    *,
    alpha: float = ALPHA,
    threshold: float = THRESHOLD,
    resolution: float = RESOLUTION,
) -> dict[str, Any]:
    """Compare every ok candidate of one bench result with the reference.

    Returns the compare document without its "schema" key (the writer stamps it). Every other
    candidate ends up in exactly one of "comparisons" or "skipped", so nothing vanishes silently.
    ``method["test"]`` names the tests actually used (None when nothing was compared).
    """
    ref = bench.candidates.get(reference)
    ref_status = "missing" if ref is None else str(ref.status)
    reason: str | None = None
    if ref is None:
        reason = f"reference {reference} is missing from the bench result"
    elif ref_status != Status.OK:
        reason = f"reference {reference} is {ref_status}: {ref.reason}"

    comparisons: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    tests: set[str] = set()
    for name, result in bench.candidates.items():
        if name == reference:
            continue
        if result.status != Status.OK:
            skipped.append({"candidate": name, "status": result.status, "reason": result.reason})
        elif ref is None or ref_status != Status.OK:
            skipped.append(
                {
                    "candidate": name,
                    "status": Status.OK,
                    "reason": f"reference {reference} is {ref_status}",
                }
            )
        else:
            try:
                outcome = compare(
                    list(ref.samples_ms),
                    list(result.samples_ms),
                    alpha=alpha,
                    threshold=threshold,
                    resolution=resolution,
                )
            except ValueError as exc:  # name the shape and candidate, not just "baseline"
                raise ValueError(f"shape {bench.name}, {reference} vs {name}: {exc}") from exc
            tests.add(outcome.pop("test"))
            comparisons.append({"baseline": reference, "candidate": name, **outcome})

    method = {
        "test": " + ".join(sorted(tests)) if tests else None,
        "alpha": alpha,
        "threshold": threshold,
        "resolution": resolution,
        "min_rounds": MIN_ROUNDS,
        "pairing": "rounds",
    }
    return {
        "shape": bench.name,
        "reference": reference,
        "method": method,
        "reason": reason,
        "comparisons": comparisons,
        "skipped": skipped,
    }


__all__ = [
    "Estimate",
    "adjust",
    "block_length",
    "bootstrap_ci",
    "cliffs_delta",
    "compare",
    "compare_shape",
    "decide",
    "estimate",
    "hedges_g",
    "rounds_to_decide",
]
