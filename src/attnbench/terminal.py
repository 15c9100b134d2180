"""What a run says in the terminal, where Snakemake shows it: after each shape, one line per
candidate (printed by the shape's compare job, which has both its measurements and its
comparisons), and at the end the answer (attnbench.headline), the failures and the report's path,
or, when the run stopped early, what finished and how to resume.

Imported by the Snakefile and by every job's process: it must stay cheap to import.

Why: the result files and the report hold everything, but a kernel engineer watching a run wants to
see statuses and medians as they come, and a run whose candidate failed everywhere must not end in
silence with exit 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from attnbench import files
from attnbench.formatting import clip, interval

LINE_WIDTH = 160  # a candidate's line: its numbers and the start of its reason (the report has the rest)

# Set by `attnbench run` for the workflow it starts: it prints the headline itself, with the report's
# absolute path, so the workflow's end only decides the exit.
HEADLINE_VARIABLE = "ATTNBENCH_RUN_PRINTS_HEADLINE"


def candidate_lines(bench: dict[str, Any], compare: dict[str, Any]) -> list[str]:
    """The shape's name, then one line per candidate: status, median and the half-width of its 95% CI,
    and its speedup over the reference with that CI and the shape's own verdict (the run's end marks
    significance after Holm's correction across all shapes), or why it has no numbers."""
    by_candidate = {c["candidate"]: c for c in compare.get("comparisons", [])}
    lines = [f"{compare['shape']} (reference {compare['reference']}):"]
    if compare.get("reason"):  # the reference itself has no result: nothing was compared
        lines.append(clip(f"  no speedups: {compare['reason']}"))
    width = max(map(len, bench["candidates"]), default=0)
    for name, entry in bench["candidates"].items():
        text = f"{entry['status']:<11}"
        if entry.get("median_ms") is not None:
            text += f" {entry['median_ms']:.4g} ms ±{entry['rel_ci']:.1%}"
        if name == compare["reference"]:
            text += "  reference"
        elif (versus := by_candidate.get(name)) is not None:
            speedup = interval(versus["speedup"], *versus["speedup_ci95"], suffix="×", mark=1.0)
            text += f"  {speedup} {versus['verdict']}"
        if entry.get("reason"):
            text += f"  {entry['reason']}"
        lines.append(clip(f"  {name:<{width}}  {text}", LINE_WIDTH))
    return lines


def print_shape(bench_path: str | Path, compare: dict[str, Any]) -> None:
    """What a compare job prints where Snakemake shows it, right after its shape was measured."""
    print("\n".join(candidate_lines(files.read_json(bench_path), compare)), flush=True)


def finished(results: Path, report: Path, *, fail_on_failed: bool) -> str | None:
    """Print the answer at the end of a successful run; the reason to exit non-zero, if any."""
    from attnbench import headline  # pandas and scipy: not at the Snakefile's parse

    summary = headline.load(results)
    if not os.environ.get(HEADLINE_VARIABLE):
        print(headline.terminal(summary, report if report.exists() else None), flush=True)
    failures = headline.failed(summary)
    if failures and fail_on_failed:
        return f"{len(failures)} candidate result(s) failed (listed above) and fail_on_failed_candidates is on"
    return None


def stopped(results: Path, shapes: list[str]) -> None:
    """One line when a run ends early (a failed job or Ctrl-C): what finished, and how to resume."""
    done = [name for name in shapes if (results / "bench" / f"{name}.json").exists()]
    print(
        f"attnbench: stopped with {len(done)} of {len(shapes)} shapes measured; their results are kept"
        f" under {results.resolve() / 'bench'}. Run the same command again to measure the rest (after a"
        " hard kill, unlock first: snakemake --unlock, or attnbench run with the same arguments and -- --unlock).",
        flush=True,
    )
