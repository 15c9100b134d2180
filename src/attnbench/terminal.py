"""What a run says in the terminal, where Snakemake shows it: after each shape, one line per
candidate (printed by the shape's compare job, which has both its measurements and its
comparisons), and at the end the answer (attnbench.headline), the failures, the measurement's
quality in one line (as the report's first screen states it, attnbench.quality) and the report's
path, or, when the run stopped early, what finished and how to resume.

Imported by the Snakefile and by every job's process: it must stay cheap to import.

Why: the result files and the report hold everything, but a kernel engineer watching a run wants to
see statuses and medians as they come, and a run whose candidate failed everywhere must not end in
silence with exit 0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from attnbench import faults, files
from attnbench.documents import CandidateResult, ShapeComparisons, ShapeResult
from attnbench.formatting import clip, speedup_interval
from attnbench.results import Status

LINE_WIDTH = 160  # a shape's measurement line (shape_line); candidate lines keep their reason whole

# Set by `attnbench run` for the workflow it starts: it prints the headline itself, with the report's
# absolute path, so the workflow's end only decides the exit.
HEADLINE_VARIABLE = "ATTNBENCH_RUN_PRINTS_HEADLINE"
# Set in Snakemake's process by the live view (attnbench.live), inherited by every job: the compare job
# then leaves its shape's lines to the live view, which prints them with the progress.
LIVE_VARIABLE = "ATTNBENCH_LIVE_VIEW"


def candidate_lines(
    bench: ShapeResult, compare: ShapeComparisons, *, said: dict[str, str] | None = None
) -> list[str]:
    """The shape's name with the reference's median, then one line per other candidate: status,
    median and the half-width of its 95% CI, and its speedup over the reference with the shape's own
    interval and verdict (those of this comparison alone, at 1 - alpha; the run's end prints them
    corrected across the run), or why it has no numbers, in full (never cut before its fix). An
    undecided comparison says about how many rounds would decide it, and how many seconds of sampling
    that is; a shape with a comparison of too few rounds ends with a line on how it was measured
    (quality.shape_issues). `said`: a candidate's reason for being unsupported here, already shown
    (the live view's memory across shapes): the same reason is not repeated; it gains those shown."""
    from attnbench import quality  # numpy: imported by the compare job anyway, not at the Snakefile's parse
    from attnbench.stats import TOO_FEW_ROUNDS

    comparisons = compare.comparisons
    by_candidate = {c.candidate: c for c in comparisons}
    levels = sorted({c.confidence for c in comparisons if c.speedup_ci is not None})
    said_levels = (
        f"; {'/'.join(quality.level(c) for c in levels)} intervals, this shape alone" if levels else ""
    )
    reference = bench.candidates.get(compare.reference)
    measured = f" {_median(reference)}" if reference is not None and reference.median_ms is not None else ""
    lines = [f"{compare.shape} (reference {compare.reference}{measured}{said_levels}):"]
    if compare.reason:  # the reference itself has no result: nothing was compared
        lines.append(f"  no speedups: {' '.join(compare.reason.splitlines())}")
    shown = {
        name: entry for name, entry in bench.candidates.items() if name != compare.reference or not measured
    }
    if said is not None:
        shown = {
            name: entry
            for name, entry in shown.items()
            if entry.status != Status.UNSUPPORTED or said.get(name) != entry.reason
        }
        said.update(
            {name: entry.reason for name, entry in shown.items() if entry.status == Status.UNSUPPORTED}
        )
    width = max(map(len, shown), default=0)
    for name, entry in shown.items():
        text = f"{entry.status:<11}"
        if entry.median_ms is not None:
            text += f" {_median(entry)}"
        if entry.declared_tolerance is not None:  # ranked apart: never read as an exact result
            text += f"  approximate (declared tolerance {entry.declared_tolerance:g})"
        if name == compare.reference:
            text += "  reference"
        elif (versus := by_candidate.get(name)) is not None:
            need = quality.to_decide_text(quality.to_decide(versus, bench))
            if versus.verdict == TOO_FEW_ROUNDS:
                rounds = f"{versus.rounds} round{'' if versus.rounds == 1 else 's'}"
                text += f"  {TOO_FEW_ROUNDS} ({rounds}" + (f"; {need})" if need else ")")
            else:
                lo, hi = versus.speedup_ci or (None, None)
                text += f"  {speedup_interval(versus.speedup, lo, hi)} {versus.verdict}"
                if versus.verdict == "same" and need:
                    text += f" ({need})"
        if entry.reason:
            text += f"  {entry.reason}"
        lines.append(" ".join(f"  {name:<{width}}  {text}".splitlines()))
    if any(c.verdict == TOO_FEW_ROUNDS for c in comparisons):
        lines.append(clip(f"  {shape_line(bench)}", LINE_WIDTH))
    return lines


def _median(entry: CandidateResult) -> str:
    return f"{entry.median_ms:.4g} ms ±{entry.rel_ci:.1%}"


def shape_line(bench: ShapeResult) -> str:
    """How a shape was sampled, for a shape whose rounds did not suffice: rounds kept and run, the
    seconds, why sampling stopped, and what the report's Measurement conditions flag for it."""
    from attnbench import quality

    timing = bench.timing
    text = f"measurement: {timing['rounds_kept']} of {timing['rounds_run']} rounds kept"
    if timing.get("elapsed_s") is not None:
        text += f" in {quality.seconds(timing['elapsed_s'])} s"
    text += f", stopped: {timing['stop_reason']}"
    issues = quality.shape_issues(bench)
    return f"{quality.FLAG} {text}; {'; '.join(issues)}" if issues else text


def print_shape(bench_path: str | Path, compare: dict[str, Any]) -> None:
    """What a compare job prints where Snakemake shows it, right after its shape was measured; nothing
    under the live view (attnbench.live), which prints the shape's lines itself with the progress."""
    if os.environ.get(LIVE_VARIABLE):
        return
    bench = files.read_bench(bench_path, None)
    print("\n".join(candidate_lines(bench, ShapeComparisons.from_json(compare))), flush=True)


def finished(results: Path, report: Path, *, fail_on_failed: bool) -> str | None:
    """Print the answer at the end of a successful run; the reason to exit non-zero, if any."""
    from attnbench import headline  # pandas and scipy: not at the Snakefile's parse

    summary = headline.load(results)
    if not os.environ.get(HEADLINE_VARIABLE):
        print(answer(summary, results, report if report.exists() else None), flush=True)
    failures = headline.failed(summary)
    if failures and fail_on_failed:
        return (
            f"{len(failures)} candidate result(s) failed (listed above) and fail_on_failed_candidates is on"
        )
    return None


def answer(summary: dict[str, Any], results: Path, report: Path | None) -> str:
    """What the end of a run prints: the headline (headline.terminal), then in one line the
    measurement quality the report's first screen states (`quality_line`), then the report's path."""
    from attnbench import headline

    lines = [headline.terminal(summary)]
    if summary["shapes"] and (line := quality_line(results)):
        lines.append(line)
    if report is not None:
        lines.append(f"report: {report}")
    return "\n".join(lines)


def quality_line(results: Path) -> str | None:
    """The run's measurement quality in one line, as the report's first screen says it (quality.text
    on the bench and compare files under `results`): CI targets missed, throttled or discarded
    rounds, warm-ups not settled, a busy host, comparisons with too few rounds, each with the setting
    that fixes it. None without bench files."""
    from attnbench import quality

    benches = [ShapeResult.from_json(_read(p)) for p in sorted((Path(results) / "bench").glob("*.json"))]
    if not benches:
        return None
    shapes = {b.name for b in benches}
    compares = [
        c
        for c in (
            ShapeComparisons.from_json(_read(p)) for p in sorted((Path(results) / "compare").glob("*.json"))
        )
        if c.shape in shapes
    ]
    summary = quality.summarize(benches, compares)
    text = f"measurement: {quality.text(summary, knobs=True)}"
    return f"{quality.FLAG} {text}" if summary["warn"] else text


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def stopped(results: Path, shapes: list[str], log: str | list[str] | None = None) -> None:
    """One line when a run ends early (a failed job or Ctrl-C): what finished, and how to resume;
    before it, when Snakemake's `log` (its log file, or the list of them) shows a fault from outside
    attnbench (a full disk, a deleted input, a failed metadata record), attnbench's line for it, and
    the outputs left without a record removed (attnbench.faults)."""
    logs = [log] if isinstance(log, str) else log or []  # Snakemake 9 passes its log files as a list
    text = "".join(
        Path(path).read_text(encoding="utf-8", errors="replace") for path in logs if Path(path).is_file()
    )
    if said := faults.cause(text):
        print(said, flush=True)
    for output in faults.remove_unrecorded(results.parent):
        print(f"attnbench: removed {output}: made by a job whose metadata record failed", flush=True)
    done = [name for name in shapes if (results / "bench" / f"{name}.json").exists()]
    kept = f"kept in {results.resolve() / 'bench'}"
    said = (
        f"stopped with {len(done)} of {len(shapes)} shapes measured ({kept}); run the same command to continue"
        if len(done) < len(shapes)
        else f"stopped after all {len(shapes)} shapes were measured ({kept}); run the same command to finish"
    )
    print(f"attnbench: {said} (after a hard kill, unlock first: snakemake --unlock)", flush=True)
