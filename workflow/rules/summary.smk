# What the run says at its end (src/attnbench/terminal.py): the answer per shape, the failures and the
# report's path; with fail_on_failed_candidates a failure ends the run with exit 1. A run that stops
# early (a failed job, Ctrl-C) says what finished and how to resume.
from snakemake.exceptions import WorkflowError

from attnbench import terminal


onsuccess:
    failing = terminal.finished(
        Path("results"),
        Path(REPORT_OUTPUTS["html"]),
        fail_on_failed=RUN["fail_on_failed_candidates"],
    )
    if failing:
        raise WorkflowError(failing)


onerror:
    terminal.stopped(Path("results"), SHAPES, log)
