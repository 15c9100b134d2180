"""The run's report: a summary CSV, the plots, and the same findings as Markdown and one HTML page.

Nothing is measured or tested here: every number comes from the result files, and the run-wide
statistics (the Bonferroni correction of every comparison of the run, autotune) from autotune.json,
which the autotune step writes; the measurement quality the first screen states from
attnbench.quality, which the end of a run prints too. Every verdict is printed beside the interval it
was decided from: the corrected interval beside a corrected verdict.

The package reads the facts once (`data`: the result files and the summary table), says them as a
document (`model`) section by section (`sections`, their prose in templates/partials/), and writes it
(`render`: the CSV, the plots, Markdown and HTML through the templates in templates/). This module
hands on the names the rest of attnbench, the benchmarks and the tests use.
"""

from __future__ import annotations

from pathlib import Path

from attnbench.report.data import COLUMNS, Run, plot_frame, provenance, read_run, summary_frame
from attnbench.report.model import Heading, Para, Section, Table
from attnbench.report.render import OUTPUT_KEYS, write
from attnbench.report.sections import document
from attnbench.results import Json

__all__ = [
    "COLUMNS",
    "OUTPUT_KEYS",
    "Heading",
    "Para",
    "Run",
    "Section",
    "Table",
    "build_report",
    "document",
    "plot_frame",
    "provenance",
    "read_run",
    "summary_frame",
]


def build_report(
    bench_paths: list[str],
    compare_paths: list[str],
    fingerprint_path: str,
    ceilings_path: str,
    autotune_path: str,
    out: dict[str, str],
    *,
    schema_dir: str | Path | None,
    title: str,
) -> Json:
    """Validate every input against its schema (in `schema_dir`), write the outputs named in `out`, and
    return the headline the report leads with (the report job's document, which the run's end prints)."""
    missing = [key for key in OUTPUT_KEYS if key not in out]
    if missing:
        raise ValueError(f"build_report: `out` lacks the output paths {missing}")
    run = read_run(
        bench_paths, compare_paths, fingerprint_path, ceilings_path, autotune_path, schema_dir=schema_dir
    )
    write(run, document(run), out, title)
    return run.summary
