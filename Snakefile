import sys
from pathlib import Path

from snakemake.utils import min_version, validate

from attnbench import config as run_config
from attnbench import faults

min_version("9.0")

# Before Snakemake loads config.yaml: a file beyond attnbench's bounds (size, a value's length, values
# counted through YAML aliases) is refused in milliseconds instead of expanding (attnbench.configfile).
run_config.check_files(["config.yaml", *workflow.config_settings.configfiles])
# A disk too full for the run stops here, with attnbench's line alone (Snakemake's own log cannot be
# written on it), not in Snakemake's lock or metadata.
if full := faults.free_space_problem("."):
    print(full, file=sys.stderr)
    raise SystemExit(1)


configfile: "config.yaml"


# attnbench's check first: it lists every problem, with suggestions, and no schema dump.
# Snakemake's validate then fills the defaults.
run_config.validate(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/env.smk"
include: "workflow/rules/benchmark.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/autotune.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/ratchet.smk"
include: "workflow/rules/summary.smk"


rule all:
    default_target: True
    input:
        REPORT_OUTPUTS.values(),
        RATCHET_OUTPUTS.values(),
        RESULTS,
    message:
        "Done"
