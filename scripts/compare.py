"""Adapter: compare one shape's candidates against the reference (rule compare)."""

import sys

from attnbench import io
from attnbench.stats import compare_shape

sys.stderr = open(snakemake.log[0], "w")

bench = io.read_json(snakemake.input.bench, snakemake.params.bench_schema)
document = compare_shape(bench, snakemake.params.reference, **snakemake.params.stats)
io.write_json(snakemake.output[0], document, snakemake.params.schema)
