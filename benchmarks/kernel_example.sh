#!/usr/bin/env bash
# The H200 evidence for the kernel contract (issue 15): the Triton example's grid through the
# workflow, its GPU tests, and the edit loop, copied to docs/examples/<name>/.
#   bash benchmarks/kernel_example.sh h200-kernel
# The GPU tests come last: they compile the kernel for many dtypes, head dims and alignments.
# Run from a clean checkout on the GPU machine with snakemake and triton importable. About 10 min of
# GPU time: the sweep (3 shapes x 39 candidates, 36 of them Triton configurations compiled once each
# in their setup) and the edit loop.
set -euo pipefail
name=${1:?usage: kernel_example.sh NAME}
dest=docs/examples/$name
mkdir -p "$dest/plots"
rm -rf results
start=$(date +%s)
snakemake --cores 1 --resources gpu=1 --configfile examples/triton_flash.yaml 2>&1 | tee "$dest/terminal.txt"
echo "wall time: $(( $(date +%s) - start )) s" | tee -a "$dest/terminal.txt"
cp results/report/report.md results/report/summary.csv results/report/autotune.csv \
   results/report/autotune.json results/env/fingerprint.json results/env/ceilings.json "$dest"/
cp results/report/plots/*.png "$dest/plots/"
python3 benchmarks/edit_loop.py --device cuda --repeats 5 --out "$dest/edit_loop.json" 2>&1 | tee "$dest/edit_loop.txt"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_triton_example.py tests/test_contract.py \
  2>&1 | tail -5 | tee "$dest/pytest-gpu.txt"
echo "copied the report, autotune, summary, fingerprint, ceilings, GPU tests and edit loop to $dest"
