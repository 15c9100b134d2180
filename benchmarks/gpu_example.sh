#!/usr/bin/env bash
# Run the default pipeline on this machine's GPU and copy the evidence to docs/examples/<name>/:
# the report, summary, fingerprint, ceilings and plots, the terminal output with the wall time, and
# where the pipeline's time went (benchmarks/duty.py).
#   bash benchmarks/gpu_example.sh h200
# From a clean checkout with snakemake importable; --keep-going so that a shape whose job fails
# leaves the others measured (the terminal output then names it).
set -euo pipefail
name=${1:?usage: gpu_example.sh NAME}
dest=docs/examples/$name
mkdir -p "$dest/plots"
rm -rf results
start=$(date +%s)
snakemake --cores 1 --resources gpu=1 --keep-going 2>&1 | tee "$dest/terminal.txt"
echo "wall time: $(( $(date +%s) - start )) s" | tee -a "$dest/terminal.txt"
cp results/report/report.md results/report/summary.csv results/env/fingerprint.json \
   results/env/ceilings.json "$dest"/
cp results/report/plots/*.png "$dest/plots/"
python3 benchmarks/duty.py . --json "$dest/duty.json" > "$dest/duty.txt"
echo "copied the report, summary, fingerprint, ceilings, plots, terminal output and duty to $dest"
