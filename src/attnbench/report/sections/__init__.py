"""The report's sections, in the order a reader needs them: the answer first, how it was measured
last. Each module turns the facts of report.data into one section's headings, prose and tables."""

from __future__ import annotations

from attnbench.report.data import Run
from attnbench.report.model import Section
from attnbench.report.sections.autotune import autotune_section
from attnbench.report.sections.conditions import conditions_section, ran_section
from attnbench.report.sections.environment import (
    ceilings_section,
    fingerprint_section,
    provenance_section,
    run_summary,
)
from attnbench.report.sections.failures import not_ok_section
from attnbench.report.sections.memory import memory_section
from attnbench.report.sections.method import method_section
from attnbench.report.sections.overview import headline_section, matrix_section, plots_section
from attnbench.report.sections.results import results_section


def document(run: Run) -> list[Section]:
    """The report once, as sections; the Markdown and HTML templates only differ in syntax."""
    frame, benches, summary = run.frame, run.benches, run.summary
    available = frame[~frame["candidate"].isin(set(summary["unavailable"]))]
    answer = [
        headline_section(frame, benches, summary, run.analysis.family_of(), run.compares),
        matrix_section(summary, run.analysis),
        plots_section(run.analysis),
    ]
    failures = not_ok_section(available, benches)
    detail = [
        results_section(available, run.analysis.family),
        memory_section(frame, run.growth),
        autotune_section(frame, run.analysis),
        failures,
        conditions_section(benches),
        ran_section(frame),
        run_summary(frame, benches, run.fingerprint),
        fingerprint_section(run.fingerprint),
        *provenance_section(run.provenance),
        ceilings_section(run.ceilings, benches),
        method_section(benches, run.compares, run.analysis),
    ]
    for section in detail:  # behind the answer, collapsed; what failed stays open
        section.collapsed = section is not failures
    return answer + detail
