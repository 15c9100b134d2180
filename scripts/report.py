"""Adapter: build the HTML and Markdown report, the summary table and the plots (rule report)."""

import sys

from attnbench.report import build_report

sys.stderr = open(snakemake.log[0], "w")

build_report(
    list(snakemake.input.bench),
    list(snakemake.input.compare),
    snakemake.input.fingerprint,
    snakemake.input.ceilings,
    dict(snakemake.output.items()),
    schema_dir=snakemake.params.schema_dir,
    alpha=snakemake.params.alpha,
    title=snakemake.params.title,
)
