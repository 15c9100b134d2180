"""Adapter: the run's verdict against the baseline and the pull-request comment (rule ratchet)."""

import sys
from pathlib import Path

from attnbench import files, ratchet

sys.stderr = open(snakemake.log[0], "w")

schemas = Path(snakemake.params.schema_dir)
shapes = [files.read_json(path, schemas / "ratchet.schema.yaml") for path in snakemake.input.shapes]
try:
    baseline, warning = ratchet.load_baseline(snakemake.input.baseline, schemas)
    error = None
    if warning:  # saved before digests: accepted, and the comment says it is unverified
        print(f"attnbench ratchet: warning: {warning}", file=sys.stderr)
except files.ResultFileError as exc:
    baseline, error = None, str(exc)
fingerprint = files.read_json(snakemake.input.fingerprint, schemas / "fingerprint.schema.yaml")
document = ratchet.verdict(
    shapes, baseline, error, fingerprint, snakemake.params.settings, str(snakemake.input.baseline)
)
files.write_json(snakemake.output.verdict, document, schemas / "verdict.schema.yaml")
files.atomic_write_text(snakemake.output.comment, ratchet.comment(document))
