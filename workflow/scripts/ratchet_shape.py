"""Adapter: one shape of this run against the baseline (rule ratchet_shape)."""

import sys
from pathlib import Path

from attnbench import files, ratchet

sys.stderr = open(snakemake.log[0], "w")

schemas = Path(snakemake.params.schema_dir)
bench = files.read_bench(snakemake.input.bench, schemas)
try:
    baseline, error = ratchet.load_baseline(snakemake.input.baseline, schemas)[0], None
except files.ResultFileError as exc:  # the run's verdict reports an unusable baseline; no shape fails
    baseline, error = None, str(exc)
document = ratchet.compare_shape(bench, baseline, snakemake.params.settings) | {"baseline_error": error}
files.write_json(snakemake.output[0], document, schemas / "ratchet.schema.yaml")
