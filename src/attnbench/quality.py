"""How far a run's measurements can be trusted, from its result files alone: CI targets missed,
throttled or discarded rounds, warm-ups that did not settle, a busy host, comparisons with too few
rounds. The report's first screen says it (report.sections.overview.measurement_summary), and so does the end of a
run in the terminal (terminal.quality_line), from the same `summarize`; per shape, `shape_issues`
(the report's Measurement conditions, the terminal's line after a shape with too few rounds).

Nothing here imports pandas or scipy: the end of a run reads the bench files and prints a line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from attnbench.clocks import DISCARDED, reason_names
from attnbench.documents import Comparison, ShapeComparisons, ShapeResult
from attnbench.formatting import pm
from attnbench.results import Json
from attnbench.stats import TOO_FEW_ROUNDS

# NVML reasons that make a round unrepresentative (thermal, hardware); the power cap is normal load
SLOWDOWNS = frozenset(reason_names(DISCARDED))
FLAG = "⚠"  # marks what a reader must not miss, in the report and the terminal


def kept_slowdowns(timing: Mapping[str, Any]) -> dict[str, int]:
    """Thermal or hardware slowdowns left in the samples: only when discarding was switched off."""
    if timing.get("discard_throttled", True):
        return {}
    return {k: v for k, v in timing["clocks"]["events"].items() if k in SLOWDOWNS and v}


def shape_issues(bench: ShapeResult) -> list[str]:
    """What a reader must know before trusting a shape's numbers; empty when nothing went wrong."""
    timing = bench.timing
    met = [c.target_met for c in bench.candidates.values() if c.target_met is not None]
    issues = []
    if not all(met):
        issues.append(
            f"CI target {pm(timing['target_rel_ci'])} missed by {met.count(False)} of {len(met)} results"
        )
    if not timing["warmup"]["settled"]:
        issues.append("warm-up not settled")
    if timing["clocks"]["discarded_rounds"]:
        issues.append(f"{timing['clocks']['discarded_rounds']} rounds discarded for slowdowns")
    if kept_slowdowns(timing):
        issues.append("slowdowns kept in the samples (discard_throttled off)")
    if bench.host.get("busy"):
        issues.append("host busy (see host)")
    return issues


def too_few_rounds(compares: Iterable[ShapeComparisons]) -> list[Comparison]:
    """The comparisons of the compare files whose verdict is "too few rounds"."""
    return [comp for compare in compares for comp in compare.comparisons if comp.verdict == TOO_FEW_ROUNDS]


def summarize(benches: list[ShapeResult], compares: list[ShapeComparisons] | None = None) -> Json:
    """The run's measurement quality as counts (see the module docstring); `warn` when something in
    it should make a reader cautious. `compares`: the compare files, for the comparisons with too
    few rounds (None: not counted)."""
    timed = [
        (c.target_met, b.timing["target_rel_ci"])
        for b in benches
        for c in b.candidates.values()
        if c.target_met is not None
    ]
    clocks = [b.timing["clocks"] for b in benches]
    monitored = [c for c in clocks if c["source"] is not None]
    summary = {
        "shapes": len(benches),
        "timed": len(timed),
        "missed": sum(not met for met, _ in timed),
        "targets": list(dict.fromkeys(target for _, target in timed)),
        "monitored": len(monitored),
        "cpu": bool(benches) and all(b.device == "cpu" for b in benches),
        "throttled": sum(c["throttled_rounds"] > 0 for c in monitored),
        "discarded": sum(c["discarded_rounds"] for c in monitored),
        "slowdowns_kept": sum(bool(kept_slowdowns(b.timing)) for b in benches),
        "unsettled": sum(not b.timing["warmup"]["settled"] for b in benches),
        "busy": sum(bool(b.host.get("busy")) for b in benches),
        "too_few_rounds": None if compares is None else len(too_few_rounds(compares)),
    }
    summary["warn"] = bool(
        summary["missed"]
        or summary["discarded"]
        or summary["slowdowns_kept"]
        or summary["unsettled"]
        or summary["busy"]
        or summary["too_few_rounds"]
    )
    return summary


def text(summary: Mapping[str, Any], *, knobs: bool = False) -> str:
    """`summarize`'s counts in words, clauses joined by "; ", starting in lower case:
    `1 of 12 timed results missed their ±1.0% CI target; no throttled rounds`. `knobs`: each problem
    followed by the setting (or action) that fixes it, as the end of a run in the terminal says it."""
    shapes = summary["shapes"]
    section = "cpu.timing" if summary["cpu"] else "timing"  # the cpu: section replaces timing on the CPU

    def fix(clause: str, knob: str) -> str:
        return f"{clause} ({knob})" if knobs else clause

    target = ", ".join(pm(t) for t in summary["targets"]) or "—"
    if not summary["timed"]:
        parts = ["no candidate produced timings"]
    elif summary["missed"]:
        parts = [
            fix(
                f"{summary['missed']} of {summary['timed']} timed results missed their {target} CI target",
                f"raise {section}.max_time_s, or loosen {section}.target_rel_ci",
            )
        ]
    else:
        parts = [f"all {summary['timed']} timed results met their {target} CI target"]
    if not summary["monitored"]:
        parts.append("GPU clocks not monitored" + (" (cpu)" if summary["cpu"] else ""))
    elif not summary["throttled"]:
        parts.append("no throttled rounds")
    else:
        detail = (
            [f"{summary['discarded']} rounds discarded for thermal or hardware slowdowns"]
            if summary["discarded"]
            else []
        )
        detail += (
            [f"slowdowns kept in the samples on {summary['slowdowns_kept']} shapes"]
            if summary["slowdowns_kept"]
            else []
        )
        parts.append(
            fix(
                f"throttled rounds on {summary['throttled']} of {shapes} shapes"
                f" ({'; '.join(detail) if detail else 'power cap only, rounds kept'})",
                "cool the GPU or lock its clocks (nvidia-smi -lgc); keep timing.discard_throttled on",
            )
        )
    if summary["unsettled"]:
        parts.append(
            fix(
                f"warm-up did not settle on {summary['unsettled']} of {shapes} shapes",
                f"raise {section}.warmup_max_s",
            )
        )
    if summary["busy"]:
        parts.append(
            fix(
                f"the host was busy with other work during {summary['busy']} of {shapes} shapes",
                "stop the other work, then rerun with --forcerun benchmark",
            )
        )
    if summary.get("too_few_rounds"):
        n = summary["too_few_rounds"]
        parts.append(
            fix(
                f"{n} comparison{'' if n == 1 else 's'} with too few rounds for an interval",
                f"raise {section}.min_rounds or {section}.max_time_s",
            )
        )
    return "; ".join(parts)


def seconds_per_round(bench: ShapeResult) -> float | None:
    """Seconds of sampling per kept round of a shape (rounds discarded for throttling included in the
    cost), None where the bench file does not record the sampling time."""
    timing = bench.timing
    elapsed, kept = timing.get("elapsed_s"), timing.get("rounds_kept")
    if elapsed is None or not kept:
        return None
    return float(elapsed) / kept


def to_decide(comparison: Comparison, bench: ShapeResult | None) -> Json | None:
    """What an undecided comparison would need: `rounds` in all (the compare file's rounds_to_decide),
    `more` rounds than it has, and about how many `seconds` more sampling that is on its shape
    (None where the bench file does not tell). None when the comparison is decided."""
    rounds = comparison.rounds_to_decide
    if rounds is None or comparison.rounds is None:
        return None
    more = max(0, rounds - comparison.rounds)
    per_round = None if bench is None else seconds_per_round(bench)
    return {
        "rounds": rounds,
        "more": more,
        "seconds": None if per_round is None else more * per_round,
        "interval_only": comparison.verdict == TOO_FEW_ROUNDS,  # fewer rounds than an interval needs
    }


def to_decide_text(need: Mapping[str, Any] | None) -> str:
    """`about 40 rounds would decide, ~3.1 s more sampling`: `to_decide` in words ("" for None)."""
    if need is None:
        return ""
    text = (
        f"at least {need['rounds']} rounds would give an interval"
        if need.get("interval_only")
        else f"about {need['rounds']} rounds would decide"
    )
    if need["seconds"] is not None:
        text += f", ~{seconds(need['seconds'])} s more sampling"
    return text


def level(confidence: float) -> str:
    """A confidence as a percentage with 3 significant digits, more where 3 would round it to 100%:
    `95%`, `99.8%`, `99.975%`."""
    for digits in range(3, 9):
        text = f"{100 * confidence:.{digits}g}"
        if float(text) < 100:
            return f"{text}%"
    return f"{100 * confidence}%"


def seconds(value: float) -> str:
    """`0.42`, `3.1`, `1,250`: two significant digits below 10 s, whole seconds from there."""
    return f"{value:.2g}" if value < 10 else f"{value:,.0f}"
