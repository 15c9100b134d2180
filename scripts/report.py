"""Adapter: build the HTML and Markdown report, the summary table and the plots (rule report)."""

import sys

from attnbench.report import build_report

sys.stderr = open(snakemake.log[0], "w")

build_report(
    list(snakemake.input.bench),
    list(snakemake.input.compare),
    snakemake.input.fingerprint,
    snakemake.input.ceilings,
    snakemake.input.autotune,
    dict(snakemake.output.items()),
    schema_dir=snakemake.params.schema_dir,
    title=snakemake.params.title,
)
