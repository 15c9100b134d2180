import os
from pathlib import Path

from attnbench import config as run_config
from attnbench import env as run_env
from attnbench import jobs

RUN = run_config.resolve(config, overrides=workflow.config_settings.config)
SHAPES = run_config.shape_names(RUN)
JOB_ENV = run_config.job_env(RUN)
# `python -m attnbench`, holding a Ctrl-C until the job can end cleanly: a param that reruns
# nothing (attnbench.jobs.Launcher)
ATTNBENCH = jobs.launcher()
# One Ctrl-C, or `timeout -s INT` (which signals Snakemake twice), is one interrupt: no traceback
# from a second one inside Snakemake's shutdown
jobs.coalesce_interrupts()
# Relative to the working directory: no job's params or command line depends on where the checkout
# is, so a finished run copied to another path plans no job.
SCHEMAS = Path(os.path.relpath(Path(workflow.basedir) / "schemas"))


def job_shell(command, out="{output}", env=True):
    """The shell line of a job run through `python -m attnbench` (attnbench.jobs: the command names the
    job, the spec its settings); `env` puts the lock's start-up variables before it (GPU jobs)."""
    line = f"{{params.attnbench}} {command} --spec {{params.spec:q}} --out {out} --schemas {{params.schemas:q}} 2> {{log}}"
    return ("{params.env} " if env else "") + line


# calibrate's output; every benchmark job reads it to bound its results (src/attnbench/audit.py)
CEILINGS = jobs.output("calibrate")
# The commit checked out here, and a digest of the edits to tracked files: the fingerprint's param, so
# a commit or an edit records the environment again (and rewrites the report), never a measurement.
GIT_STATE = run_env.git_key(".")
# Every shape's results and the fingerprint: targets of `all`, so that one deleted (or moved aside by
# a step that refused it, attnbench.jobs.run) is made again by the same command. As intermediate
# files only, Snakemake would leave them missing while the report made from them is present.
RESULTS = [
    *(jobs.output(command, name) for command in ("benchmark", "compare") for name in SHAPES),
    jobs.output("fingerprint"),
]

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
