"""Does a comparison's interval cover, and how often does it call a difference? attnbench's own
procedure (attnbench.stats: estimate, then the interval and the p-value of that one estimate) on
simulated interleaved rounds, 3 to 100 rounds, true speedups 1.00 to 8.

    python benchmarks/stats_simulation.py [--trials 10000] [--json OUT.json]

Each simulated run times a baseline and a candidate in alternating order (A B, then B A), one
sample each per round, like attnbench.timing. Latency = true time x exp(common + own), where
`common` moves both candidates of a round (clocks, temperature, power) and `own` is each sample's
own noise (1% lognormal unless the process says otherwise). The candidate's true time is the
baseline's / speedup. Processes:

  ar1_drift     common: AR(1) per slot, phi 0.99, innovations 2% (a wandering clock)
  lognormal     own: 1% lognormal x (1 + 5% x lognormal(0, 1)): a long right tail
  outliers      own: as ar1_drift's, and 2% of samples 1.5x to 3x slower (a preemption)
  step          common: a 10% step at a random slot (a clock or power state change)
  trend         common: a straight 10% rise over the run, whatever its length (warming up)
  own_ar1       own: AR(1) per candidate, phi 0.5, 1%: correlation the ratio does not cancel
                (a known limit: below 2 x stats.BLOCKS rounds each round is its own block)

Per cell: coverage of the 95% interval (it contains the true speedup), the rate at which it lies
outside the resolution band (significant: at speedup 1 a false positive, the A/A rate; above, the
power) and the rate of verdicts faster / slower. tests/test_stats_simulation.py asserts the targets
on a smaller seeded run; docs/methodology.md holds the table this prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from attnbench import stats

ROUNDS = (3, 5, 10, 30, 100)
SPEEDUPS = (1.0, 1.01, 1.02, 1.05, 2.0, 8.0)
OWN_SD = 0.01
Noise = tuple[np.ndarray, np.ndarray]  # log noise of the baseline and of the candidate, (trials, rounds)


def _slots(trials: int, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Which time slot each side's sample of each round takes: A B in even rounds, B A in odd ones."""
    index = np.arange(rounds)
    first = 2 * index + (index % 2)
    second = 2 * index + 1 - (index % 2)
    return np.broadcast_to(first, (trials, rounds)), np.broadcast_to(second, (trials, rounds))


def _ar1(rng: np.random.Generator, trials: int, steps: int, phi: float, sd: float) -> np.ndarray:
    x = np.empty((trials, steps))
    x[:, 0] = rng.normal(0.0, sd / np.sqrt(1.0 - phi**2), trials)
    shocks = rng.normal(0.0, sd, (trials, steps))
    for i in range(1, steps):
        x[:, i] = phi * x[:, i - 1] + shocks[:, i]
    return x


def _with_common(rng: np.random.Generator, common: np.ndarray, own: Noise | None = None) -> Noise:
    trials, rounds = common.shape[0], common.shape[1] // 2
    a, b = _slots(trials, rounds)
    rows = np.arange(trials)[:, None]
    own_b, own_c = own or (
        rng.normal(0.0, OWN_SD, (trials, rounds)),
        rng.normal(0.0, OWN_SD, (trials, rounds)),
    )
    return common[rows, a] + own_b, common[rows, b] + own_c


def ar1_drift(rng: np.random.Generator, trials: int, rounds: int) -> Noise:
    return _with_common(rng, _ar1(rng, trials, 2 * rounds, 0.99, 0.02))


def lognormal(rng: np.random.Generator, trials: int, rounds: int) -> Noise:
    def own() -> np.ndarray:
        tail = np.log1p(0.05 * rng.lognormal(0.0, 1.0, (trials, rounds)))
        return rng.normal(0.0, OWN_SD, (trials, rounds)) + tail

    return _with_common(rng, np.zeros((trials, 2 * rounds)), (own(), own()))


def outliers(rng: np.random.Generator, trials: int, rounds: int) -> Noise:
    b, c = ar1_drift(rng, trials, rounds)
    for side in (b, c):
        hit = rng.random(side.shape) < 0.02
        side += np.where(hit, np.log(rng.uniform(1.5, 3.0, side.shape)), 0.0)
    return b, c


def step(rng: np.random.Generator, trials: int, rounds: int) -> Noise:
    at = rng.integers(0, 2 * rounds, (trials, 1))
    return _with_common(rng, np.where(np.arange(2 * rounds) >= at, np.log(1.1), 0.0))


def trend(rng: np.random.Generator, trials: int, rounds: int) -> Noise:
    rise = np.log(1.1) * np.arange(2 * rounds) / (2 * rounds - 1)
    return _with_common(rng, np.broadcast_to(rise, (trials, 2 * rounds)))


def own_ar1(rng: np.random.Generator, trials: int, rounds: int) -> Noise:
    own = (_ar1(rng, trials, rounds, 0.5, OWN_SD), _ar1(rng, trials, rounds, 0.5, OWN_SD))
    return _with_common(rng, np.zeros((trials, 2 * rounds)), own)


PROCESSES: dict[str, Callable[[np.random.Generator, int, int], Noise]] = {
    "ar1_drift": ar1_drift,
    "lognormal": lognormal,
    "outliers": outliers,
    "step": step,
    "trend": trend,
    "own_ar1": own_ar1,
}
KNOWN_LIMITS = ("own_ar1",)


def cell(noise: Noise, speedup: float, alpha: float = stats.ALPHA) -> dict[str, float]:
    """One (process, rounds, speedup) cell through the product's estimate, interval and p-value."""
    base, cand = noise
    est = stats.estimate(np.exp(base), np.exp(cand) / speedup, paired=True)
    assert est is not None, "every simulated run has at least stats.MIN_ROUNDS rounds"
    lo, hi = est.interval(1.0 - alpha)
    significant = est.p_beyond(stats.RESOLUTION) < alpha
    plain = est.p_beyond(0.0) < alpha  # the ordinary test (resolution 0), for its exact level
    point = np.exp(est.log_speedup)
    practical = np.maximum(point, 1.0 / point) - 1.0 >= stats.THRESHOLD
    return {
        "coverage": float(np.mean((lo <= speedup) & (speedup <= hi))),
        "significant": float(np.mean(significant)),
        "significant_plain": float(np.mean(plain)),
        "faster": float(np.mean(significant & practical & (point > 1.0))),
        "slower": float(np.mean(significant & practical & (point < 1.0))),
    }


def simulate(trials: int, seed: int = 0, processes: tuple[str, ...] = tuple(PROCESSES)) -> list[dict]:
    rows = []
    for p_index, name in enumerate(processes):
        for rounds in ROUNDS:
            rng = np.random.default_rng([seed, p_index, rounds])
            noise = PROCESSES[name](rng, trials, rounds)
            for speedup in SPEEDUPS:
                rows.append({"process": name, "rounds": rounds, "speedup": speedup, **cell(noise, speedup)})
    return rows


def table(rows: list[dict], trials: int) -> str:
    lines = [
        f"attnbench.stats on simulated paired rounds, {trials} runs per cell, alpha {stats.ALPHA}, "
        f"resolution {stats.RESOLUTION}, threshold {stats.THRESHOLD}",
        "coverage of the 95% interval (%) over the six true speedups; significant (%): the interval outside",
        "the resolution band, at speedup 1.00 a false positive (A/A), and A/A with resolution 0 (the plain",
        "t-test); then the power at speedups 1.01, 1.02, 1.05, 2 and 8",
        "",
        "| process | rounds | coverage min-max | A/A significant | A/A, resolution 0 | 1.01 | 1.02 | 1.05 | 2 | 8 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["process"] for r in rows):
        for rounds in ROUNDS:
            cells = {r["speedup"]: r for r in rows if r["process"] == name and r["rounds"] == rounds}
            cover = [c["coverage"] for c in cells.values()]
            power = " | ".join(f"{100 * cells[s]['significant']:.1f}" for s in SPEEDUPS[1:])
            mark = " (known limit)" if name in KNOWN_LIMITS else ""
            lines.append(
                f"| {name}{mark} | {rounds} | {100 * min(cover):.1f}-{100 * max(cover):.1f} | "
                f"{100 * cells[1.0]['significant']:.2f} | {100 * cells[1.0]['significant_plain']:.2f} | {power} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = simulate(args.trials, args.seed)
    print(table(rows, args.trials))
    if args.json:
        args.json.write_text(
            json.dumps({"trials": args.trials, "seed": args.seed, "cells": rows}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
