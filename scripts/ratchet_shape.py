"""Adapter: one shape of this run against the baseline (rule ratchet_shape)."""

import sys

from attnbench import io, ratchet

sys.stderr = open(snakemake.log[0], "w")

bench = io.read_json(snakemake.input.bench, snakemake.params.bench_schema)
try:
    baseline, error = io.read_json(snakemake.input.baseline, snakemake.params.baseline_schema), None
except io.ResultFileError as exc:  # the run's verdict reports an unusable baseline; no shape fails
    baseline, error = None, str(exc)
document = ratchet.compare_shape(bench, baseline, snakemake.params.settings) | {"baseline_error": error}
io.write_json(snakemake.output[0], document, snakemake.params.schema)
