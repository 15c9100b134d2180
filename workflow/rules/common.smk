import os
from pathlib import Path

from attnbench import config as run_config
from attnbench import jobs

RUN = run_config.effective(config, overrides=workflow.config_settings.config)
SHAPES = run_config.shape_names(RUN)
JOB_ENV = run_config.job_env(RUN)
# `python -m attnbench`, holding a Ctrl-C until the job can end cleanly: a param that reruns
# nothing (attnbench.jobs.Launcher)
ATTNBENCH = jobs.launcher()
# Relative to the working directory: no job's params or command line depends on where the checkout
# is, so a finished run copied to another path plans no job.
SCHEMAS = Path(os.path.relpath(Path(workflow.basedir) / "workflow" / "schemas"))
# calibrate's output; every benchmark job reads it to bound its results (src/attnbench/audit.py)
CEILINGS = jobs.output("calibrate")

REPORT_OUTPUTS = {key: jobs.REPORT_FILES[key] for key in ("html", "md", "csv")}
BASELINE = RUN.get("baseline")
RATCHET_OUTPUTS = (
    {
        "verdict": "results/ratchet/verdict.json",
        "comment": "results/ratchet/comment.md",
    }
    if BASELINE
    else {}
)


wildcard_constraints:
    name="[A-Za-z0-9_.-]+",
