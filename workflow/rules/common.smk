import json
from pathlib import Path

from attnbench import config as run_config

RUN = run_config.effective(config)
SHAPES = run_config.shape_names(RUN)
JOB_ENV = run_config.job_env(RUN)
SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"
# calibrate's output; every benchmark job reads it to bound its results (src/attnbench/audit.py)
CEILINGS = "results/env/ceilings.json"

REPORT_OUTPUTS = {
    "html": "results/report/report.html",
    "md": "results/report/report.md",
    "csv": "results/report/summary.csv",
}
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


def schema(name):
    return str(SCHEMAS / f"{name}.schema.yaml")
