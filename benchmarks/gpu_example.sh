#!/usr/bin/env bash
# Run the default pipeline on this machine's GPU and copy the evidence to docs/examples/<name>/.
#   bash benchmarks/gpu_example.sh h100
# The exact command recorded in docs/examples/<name>/COMMAND.md is the one below.
set -euo pipefail
name=${1:?usage: gpu_example.sh NAME}
dest=docs/examples/$name
snakemake --cores 1 --resources gpu=1
mkdir -p "$dest"
cp results/report/report.md results/report/summary.csv results/env/fingerprint.json \
   results/env/ceilings.json "$dest"/
mkdir -p "$dest/plots" && cp results/report/plots/*.png "$dest/plots/"
echo "copied the report, summary, fingerprint and ceilings to $dest"
