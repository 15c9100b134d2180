"""Adapter: Holm across the run and the autotune comparisons, autotune.json and .csv (rule autotune)."""

import sys

from attnbench import autotune

sys.stderr = open(snakemake.log[0], "w")

autotune.build(
    list(snakemake.input.bench),
    list(snakemake.input.compare),
    dict(snakemake.output.items()),
    schema_dir=snakemake.params.schema_dir,
    settings=snakemake.params.stats,
)
