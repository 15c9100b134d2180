"""Adapter: one shape of this run against the baseline (rule ratchet_shape)."""

import sys
from pathlib import Path

from attnbench import io, ratchet

sys.stderr = open(snakemake.log[0], "w")

schemas = Path(snakemake.params.schema_dir)
bench = io.read_json(snakemake.input.bench, schemas / "bench.schema.yaml")
try:
    baseline, error = io.read_json(snakemake.input.baseline, schemas / "baseline.schema.yaml"), None
except io.ResultFileError as exc:  # the run's verdict reports an unusable baseline; no shape fails
    baseline, error = None, str(exc)
document = ratchet.compare_shape(bench, baseline, snakemake.params.settings) | {"baseline_error": error}
io.write_json(snakemake.output[0], document, schemas / "ratchet.schema.yaml")
